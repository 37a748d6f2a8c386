// Storage of the Functions host, the durable Azure Storage provider (blobs, queues, tables) and
// the Flex Consumption deployment package. Shared keys are off: every client uses Entra ID.
// A raw resource rather than AVM: the security properties below are what our template tests and
// checkov read, and they cannot see inside a registry module.

@minLength(3)
@maxLength(24)
@description('Storage account name: 3-24 lowercase letters and digits, globally unique.')
param name string

@minLength(1)
@description('Region of the account.')
param location string

@description('Tags applied to the account.')
param tags object = {}

@minLength(3)
@maxLength(63)
@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Reachable only through private endpoints (public network access off).')
param vnetEnabled bool = false

resource storageAccount 'Microsoft.Storage/storageAccounts@2024-01-01' = {
  // checkov:skip=CKV_AZURE_35: without vnetEnabled the app reaches storage over its public endpoint (Flex Consumption has no fixed outbound addresses); shared keys are off, so every request needs an Entra ID token and a data role. With vnetEnabled the default action is Deny.
  // checkov:skip=CKV_AZURE_206: the account holds host leases, durable work items and the deployment package of a starter app; locally redundant is the cheapest choice, switch sku to Standard_ZRS or Standard_GZRS where the region offers it.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    dnsEndpointType: 'Standard'
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
    }
  }

  resource blobService 'blobServices' = {
    name: 'default'
    properties: {
      deleteRetentionPolicy: {
        enabled: true
        days: 7
      }
    }

    resource deploymentContainer 'containers' = {
      name: deploymentContainerName
      properties: {
        publicAccess: 'None'
      }
    }
  }
}

@description('Storage account name (AzureWebJobsStorage__accountName).')
output name string = storageAccount.name

@description('Storage account resource id.')
output id string = storageAccount.id

@description('Primary blob endpoint, with a trailing slash.')
output blobEndpoint string = storageAccount.properties.primaryEndpoints.blob
