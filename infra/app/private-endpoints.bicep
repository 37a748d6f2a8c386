// Private endpoints, with their private DNS zones linked to the network, for the storage account
// (blob, queue, table: the Functions host and the durable Azure Storage provider use all three)
// and for Azure Managed Redis. Public clients keep the same host names; inside the network they
// resolve to the private addresses.

@minLength(1)
@maxLength(60)
@description('Prefix of the private endpoint names.')
param namePrefix string

@minLength(1)
@description('Region of the private endpoints.')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@minLength(1)
@description('Resource id of the virtual network the DNS zones are linked to.')
param virtualNetworkId string

@minLength(1)
@description('Resource id of the subnet the private endpoints are placed in.')
param subnetId string

@minLength(1)
@description('Resource id of the storage account.')
param storageAccountId string

@minLength(1)
@description('Resource id of the Azure Managed Redis cache.')
param redisId string

var storageServices = [
  'blob'
  'queue'
  'table'
]

resource storageDnsZones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for service in storageServices: {
  name: 'privatelink.${service}.${environment().suffixes.storage}'
  location: 'global'
  tags: tags
}]

resource storageDnsZoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (service, i) in storageServices: {
  parent: storageDnsZones[i]
  name: 'link-${service}'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: virtualNetworkId
    }
  }
}]

resource storageEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [for (service, i) in storageServices: {
  name: '${namePrefix}-st-${service}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'storage-${service}'
        properties: {
          privateLinkServiceId: storageAccountId
          groupIds: [
            service
          ]
        }
      }
    ]
  }
}]

resource storageDnsZoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (service, i) in storageServices: {
  parent: storageEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: service
        properties: {
          privateDnsZoneId: storageDnsZones[i].id
        }
      }
    ]
  }
}]

resource redisDnsZone 'Microsoft.Network/privateDnsZones@2020-06-01' = {
  name: 'privatelink.redis.azure.net'
  location: 'global'
  tags: tags
}

resource redisDnsZoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = {
  parent: redisDnsZone
  name: 'link-redis'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: virtualNetworkId
    }
  }
}

resource redisEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: '${namePrefix}-redis'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'redis'
        properties: {
          privateLinkServiceId: redisId
          groupIds: [
            'redisEnterprise'
          ]
        }
      }
    ]
  }
}

resource redisDnsZoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: redisEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'redis'
        properties: {
          privateDnsZoneId: redisDnsZone.id
        }
      }
    ]
  }
}
