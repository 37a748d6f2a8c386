// Azure OpenAI account with one chat model deployment. Local (key) auth is off: the app calls it
// with its identity, which holds Cognitive Services OpenAI User on the account. Raw resources:
// disableLocalAuth is checked by our template tests and by checkov.

@minLength(2)
@maxLength(64)
@description('Name of the account; also its custom subdomain.')
param name string

@minLength(1)
@description('Region of the account (one that offers the model).')
param location string

@description('Tags applied to the account.')
param tags object = {}

@minLength(1)
@description('Chat model name.')
param modelName string

@minLength(1)
@description('Chat model version.')
param modelVersion string

@minLength(2)
@maxLength(64)
@description('Deployment name (AZURE_OPENAI_DEPLOYMENT).')
param deploymentName string

@allowed([
  'GlobalStandard'
  'DataZoneStandard'
  'Standard'
])
@description('Deployment type.')
param deploymentSku string = 'GlobalStandard'

@minValue(1)
@maxValue(1000)
@description('Capacity in thousands of tokens per minute.')
param deploymentCapacity int = 10

@minLength(36)
@maxLength(36)
@description('Object id of the app identity.')
param appPrincipalId string

@description('Object id of the deploying user for local debugging; empty: none.')
param userPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
@description('Kind of principal userPrincipalId names.')
param userPrincipalType string = 'User'

// Cognitive Services OpenAI User: call deployments, nothing else.
var openAiUserRoleId = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  // checkov:skip=CKV_AZURE_238: the account calls no other service, so an identity of its own would hold no role; callers authenticate with their own identities.
  // checkov:skip=CKV_AZURE_134: Flex Consumption has no fixed outbound addresses to allow-list; keys are disabled, so every call needs an Entra ID token and the OpenAI User role.
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  properties: {
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
    }
  }
}

resource chatDeployment 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {
  parent: account
  name: deploymentName
  sku: {
    name: deploymentSku
    capacity: deploymentCapacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: modelName
      version: modelVersion
    }
    versionUpgradeOption: 'OnceCurrentVersionExpired'
  }
}

resource appOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, appPrincipalId, openAiUserRoleId)
  scope: account
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUserRoleId)
  }
}

resource userOpenAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(account.id, userPrincipalId, openAiUserRoleId)
  scope: account
  properties: {
    principalId: userPrincipalId
    principalType: userPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAiUserRoleId)
  }
}

@description('Endpoint of the account (AZURE_OPENAI_ENDPOINT).')
output endpoint string = account.properties.endpoint

@description('Name of the chat deployment (AZURE_OPENAI_DEPLOYMENT).')
output deploymentName string = chatDeployment.name
