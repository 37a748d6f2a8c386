// Azure Managed Redis (Microsoft.Cache/redisEnterprise) holding the agents' response streams.
// TLS only on port 10000, access keys off: clients authenticate with Entra ID tokens (scope
// https://redis.azure.com/.default) as a user named by their object id, which needs an access
// policy assignment on the database. Raw resources: there are no checkov checks for this type,
// so our template tests read these properties directly.

@minLength(1)
@maxLength(60)
@description('Name of the cache: letters, digits and single hyphens.')
param name string

@minLength(1)
@description('Region of the cache.')
param location string

@description('Tags applied to the cache.')
param tags object = {}

@allowed([
  'Balanced_B0'
  'Balanced_B1'
  'Balanced_B3'
  'Balanced_B5'
  'Balanced_B10'
  'MemoryOptimized_M10'
  'ComputeOptimized_X3'
])
@description('Azure Managed Redis SKU.')
param skuName string = 'Balanced_B0'

@allowed([
  'OSSCluster'
  'EnterpriseCluster'
  'NoCluster'
])
@description('Clustering policy of the database. OSSCluster needs a cluster-aware client; EnterpriseCluster and NoCluster present one endpoint to a standalone client.')
param clusteringPolicy string = 'OSSCluster'

@allowed([
  'Enabled'
  'Disabled'
])
@description('High availability (a replica per shard).')
param highAvailability string = 'Enabled'

@allowed([
  'Enabled'
  'Disabled'
])
@description('Public network access; Disabled when the cache is reached through a private endpoint.')
param publicNetworkAccess string = 'Enabled'

@minLength(36)
@maxLength(36)
@description('Object (principal) id of the app identity: gets the default data access policy.')
param appPrincipalId string

@description('Object id of the deploying user for local debugging; empty: none.')
param userPrincipalId string = ''

resource redisCluster 'Microsoft.Cache/redisEnterprise@2025-07-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
  }
  properties: {
    minimumTlsVersion: '1.2'
    highAvailability: highAvailability
    publicNetworkAccess: publicNetworkAccess
  }
}

resource database 'Microsoft.Cache/redisEnterprise/databases@2025-07-01' = {
  parent: redisCluster
  name: 'default'
  properties: {
    clientProtocol: 'Encrypted'
    port: 10000
    clusteringPolicy: clusteringPolicy
    accessKeysAuthentication: 'Disabled'
    // Every stream carries a TTL: under memory pressure the least recently used (finished) streams
    // go first instead of writes failing.
    evictionPolicy: 'VolatileLRU'
  }
}

// Assignment names allow letters and digits only, hence uniqueString rather than guid.
resource appAccessPolicy 'Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments@2025-07-01' = {
  parent: database
  name: uniqueString(database.id, appPrincipalId)
  properties: {
    accessPolicyName: 'default'
    user: {
      objectId: appPrincipalId
    }
  }
}

// Serialized after the app's assignment: the database takes one assignment change at a time.
resource userAccessPolicy 'Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments@2025-07-01' = if (!empty(userPrincipalId)) {
  parent: database
  name: uniqueString(database.id, userPrincipalId)
  properties: {
    accessPolicyName: 'default'
    user: {
      objectId: userPrincipalId
    }
  }
  dependsOn: [
    appAccessPolicy
  ]
}

@description('Resource id of the cache (for its private endpoint).')
output id string = redisCluster.id

@description('Host name of the cache (VALKEY_HOST).')
output hostName string = redisCluster.properties.hostName

// Only the OSS cluster policy exposes the cluster topology; the other two present one endpoint
// that a standalone client talks to.
@description('VALKEY_CLUSTER for the app: true only for the OSS cluster policy.')
output valkeyCluster string = (clusteringPolicy == 'OSSCluster') ? 'true' : 'false'
