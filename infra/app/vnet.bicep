// Optional virtual network: one subnet delegated to Flex Consumption (Microsoft.App/environments)
// for the app's outbound traffic, one for the private endpoints of storage and Redis.

@minLength(2)
@maxLength(64)
@description('Name of the virtual network.')
param name string

@minLength(1)
@maxLength(80)
@description('Name of the network security group on both subnets.')
param networkSecurityGroupName string

@minLength(1)
@description('Region of the network.')
param location string

@description('Tags applied to the network.')
param tags object = {}

@minLength(9)
@description('Address space of the network.')
param addressPrefix string = '10.0.0.0/16'

@minLength(9)
@description('Address range of the app integration subnet.')
param appSubnetPrefix string = '10.0.1.0/24'

@minLength(9)
@description('Address range of the private endpoint subnet.')
param privateEndpointSubnetPrefix string = '10.0.2.0/24'

var appSubnetName = 'snet-app'
var privateEndpointSubnetName = 'snet-private-endpoints'

// No custom rules: the defaults allow traffic inside the network and outbound, and deny inbound
// from the internet; the subnets hold only the app's outbound side and private endpoints.
resource networkSecurityGroup 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: networkSecurityGroupName
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource virtualNetwork 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: appSubnetName
        properties: {
          addressPrefix: appSubnetPrefix
          networkSecurityGroup: {
            id: networkSecurityGroup.id
          }
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: privateEndpointSubnetName
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: {
            id: networkSecurityGroup.id
          }
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

@description('Resource id of the virtual network.')
output id string = virtualNetwork.id

@description('Resource id of the app integration subnet.')
output appSubnetId string = '${virtualNetwork.id}/subnets/${appSubnetName}'

@description('Resource id of the private endpoint subnet.')
output privateEndpointSubnetId string = '${virtualNetwork.id}/subnets/${privateEndpointSubnetName}'
