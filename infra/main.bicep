// Durable AI agents on Azure Functions (Flex Consumption) with resumable streaming through
// Azure Managed Redis. Every connection uses Microsoft Entra ID through one user-assigned
// identity: no storage keys, no Redis access keys, no Azure OpenAI keys.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; it seeds a short hash used in every resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource. It must offer Flex Consumption, Azure Managed Redis and, when enabled, the Durable Task Scheduler.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Name of the resource group to create; empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('Object id of the user or service principal running azd. It gets Redis, storage (and task hub) data access for local debugging against the cloud resources. Empty: nobody but the app.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
@description('Kind of principal principalId names (azd sets AZURE_PRINCIPAL_TYPE).')
param principalType string = 'User'

@description('Put the Function App in a virtual network and reach storage and Redis through private endpoints only.')
param vnetEnabled bool = false

@allowed([
  'Balanced_B0'
  'Balanced_B1'
  'Balanced_B3'
  'Balanced_B5'
  'Balanced_B10'
  'MemoryOptimized_M10'
  'ComputeOptimized_X3'
])
@description('Azure Managed Redis SKU. Balanced_B0 is the smallest; streams are short-lived buffers, so memory needs are small.')
param redisSkuName string = 'Balanced_B0'

@allowed([
  'OSSCluster'
  'EnterpriseCluster'
  'NoCluster'
])
@description('Redis clustering policy; it also sets VALKEY_CLUSTER (OSSCluster: cluster-aware client; EnterpriseCluster or NoCluster: standalone client). It cannot be changed after creation without deleting the database.')
param redisClusteringPolicy string = 'OSSCluster'

@allowed([
  'Enabled'
  'Disabled'
])
@description('Redis high availability (a replica per shard). Disabled halves the cache cost and drops the SLA: for development only.')
param redisHighAvailability string = 'Enabled'

@description('Deploy an Azure OpenAI account with one chat model deployment. Off: the app runs its offline scripted model.')
param openAiEnabled bool = true

@description('Region of the Azure OpenAI account when the model is not offered in location; empty: location.')
param openAiLocation string = ''

@minLength(1)
@description('Chat model to deploy (check the model and version are still offered in your region).')
param openAiModelName string = 'gpt-5-mini'

@minLength(1)
@description('Version of the chat model.')
param openAiModelVersion string = '2025-08-07'

@minLength(2)
@maxLength(64)
@description('Name of the model deployment, as the app sees it (AZURE_OPENAI_DEPLOYMENT).')
param openAiDeploymentName string = 'chat'

@allowed([
  'GlobalStandard'
  'DataZoneStandard'
  'Standard'
])
@description('Deployment type of the chat model.')
param openAiDeploymentSku string = 'GlobalStandard'

@minValue(1)
@maxValue(1000)
@description('Capacity of the chat deployment in thousands of tokens per minute.')
param openAiDeploymentCapacity int = 10

@description('Deploy a Durable Task Scheduler and task hub as the durable backend (host.json must then use the azureManaged provider, see docs/deploy.md).')
param durableTaskSchedulerEnabled bool = false

@allowed([
  'Consumption'
  'Dedicated'
])
@description('Durable Task Scheduler SKU, when enabled.')
param durableTaskSchedulerSku string = 'Consumption'

@minLength(3)
@maxLength(45)
@description('Durable task hub name (TASKHUB_NAME): letters and digits, starting with a letter (Azure Storage provider rule).')
param taskHubName string = 'agentshub'

@allowed([
  '3.12'
  '3.13'
])
@description('Python version of the Function App. 3.13 runs on azure-functions 1.25, the last release that installs there and that Agent Framework accepts (see docs/testing.md).')
param pythonVersion string = '3.12'

@allowed([
  512
  2048
  4096
])
@description('Memory of each Flex Consumption instance in MB.')
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
@description('Upper bound of Flex Consumption scale-out.')
param maximumInstanceCount int = 100

// Python apps get an HTTP concurrency of 1 per instance by default on Flex Consumption: one open
// stream would hold a whole instance. A stream mostly waits (bench/bench_scale.py: one process
// follows 1,000 streams at a model's pace), and an instance bills its memory while it executes
// anything, so streams share instances. 100 matches the Functions host's default cap on concurrent
// HTTP executions in consumption plans (host.json extensions.http.maxConcurrentRequests); see the
// README's Cost section for how to choose.
@minValue(1)
@maxValue(1000)
@description('HTTP requests (open streams included) one Flex Consumption instance serves at once (functionAppConfig.scaleAndConcurrency.triggers.http.perInstanceConcurrency).')
param httpPerInstanceConcurrency int = 100

@minValue(30)
@maxValue(220)
@description('A stream response ends itself after this many seconds with a retry hint (the Azure front end cuts HTTP responses at about 230 s).')
param streamMaxDurationSeconds int = 200

@minValue(1)
@maxValue(120)
@description('Seconds between SSE keep-alive comments while a stream is idle.')
param streamHeartbeatSeconds int = 15

@minValue(60)
@maxValue(86400)
@description('How long a stream token (the stream_url handed to browsers) is valid, in seconds.')
param streamTokenTtlSeconds int = 3600

@minValue(3600)
@maxValue(2592000)
@description('How long one stream-token signing key (kept in Redis) signs new tokens before the next one takes over.')
param streamTokenRotationSeconds int = 86400

@description('Whether clients may send a message with role "system" (it steers the agent above its instructions); off unless every caller is trusted.')
param allowSystemRoleMessages bool = false

@minValue(60)
@maxValue(604800)
@description('How long a Valkey stream lives after its last write, in seconds.')
param valkeyStreamTtlSeconds int = 3600

@minValue(100)
@maxValue(1000000)
@description('Approximate cap on entries per Valkey stream.')
param valkeyStreamMaxlen int = 10000

@minValue(100)
@maxValue(60000)
@description('How long the live feed blocking read waits per call, in milliseconds.')
param valkeyReadBlockMs int = 5000

@minValue(5)
@maxValue(3600)
@description('A reader gives up with an error event after this many seconds without a new entry.')
param valkeyReadIdleTimeoutSeconds int = 120

@minValue(1)
@maxValue(600)
@description('A reader of one turn asks the turn\'s committed outcome after this many seconds without an entry of it.')
param valkeyReadReconcileSeconds int = 10

@minValue(100)
@maxValue(60000)
@description('Timeout of each non-blocking Valkey request, in milliseconds.')
param valkeyRequestTimeoutMs int = 1000

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentStorageContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

// The one identity of the app: storage, App Insights ingestion, Redis, Azure OpenAI and the task
// hub all authorize it through Entra ID. AVM fits here: nothing in it needs checking.
module apiIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'apiIdentity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring './app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage './app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentStorageContainerName
    vnetEnabled: vnetEnabled
  }
}

module redis './app/redis.bicep' = {
  name: 'redis'
  scope: rg
  params: {
    name: '${abbrs.cacheRedisEnterprise}${resourceToken}'
    location: location
    tags: tags
    skuName: redisSkuName
    clusteringPolicy: redisClusteringPolicy
    highAvailability: redisHighAvailability
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    appPrincipalId: apiIdentity.outputs.principalId
    userPrincipalId: principalId
  }
}

module openAi './app/openai.bicep' = if (openAiEnabled) {
  name: 'openai'
  scope: rg
  params: {
    name: '${abbrs.cognitiveServicesAccounts}${resourceToken}'
    location: !empty(openAiLocation) ? openAiLocation : location
    tags: tags
    modelName: openAiModelName
    modelVersion: openAiModelVersion
    deploymentName: openAiDeploymentName
    deploymentSku: openAiDeploymentSku
    deploymentCapacity: openAiDeploymentCapacity
    appPrincipalId: apiIdentity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

module durableTaskScheduler './app/durable-task-scheduler.bicep' = if (durableTaskSchedulerEnabled) {
  name: 'durableTaskScheduler'
  scope: rg
  params: {
    name: '${abbrs.durableTaskSchedulers}${resourceToken}'
    location: location
    tags: tags
    skuName: durableTaskSchedulerSku
    taskHubName: taskHubName
    appPrincipalId: apiIdentity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

module vnet './app/vnet.bicep' = if (vnetEnabled) {
  name: 'vnet'
  scope: rg
  params: {
    name: '${abbrs.networkVirtualNetworks}${resourceToken}'
    networkSecurityGroupName: '${abbrs.networkNetworkSecurityGroups}${resourceToken}'
    location: location
    tags: tags
  }
}

module privateEndpoints './app/private-endpoints.bicep' = if (vnetEnabled) {
  name: 'privateEndpoints'
  scope: rg
  params: {
    namePrefix: '${abbrs.networkPrivateEndpoints}${resourceToken}'
    location: location
    tags: tags
    virtualNetworkId: vnetEnabled ? vnet.outputs.id : ''
    subnetId: vnetEnabled ? vnet.outputs.privateEndpointSubnetId : ''
    storageAccountId: storage.outputs.id
    redisId: redis.outputs.id
  }
}

module api './app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: apiIdentity.outputs.resourceId
    identityClientId: apiIdentity.outputs.clientId
    identityPrincipalId: apiIdentity.outputs.principalId
    storageAccountName: storage.outputs.name
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentStorageContainerName
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    virtualNetworkSubnetId: vnetEnabled ? vnet.outputs.appSubnetId : ''
    valkeyHost: redis.outputs.hostName
    valkeyCluster: redis.outputs.valkeyCluster
    valkeyStreamTtlSeconds: valkeyStreamTtlSeconds
    valkeyStreamMaxlen: valkeyStreamMaxlen
    valkeyReadBlockMs: valkeyReadBlockMs
    valkeyReadIdleTimeoutSeconds: valkeyReadIdleTimeoutSeconds
    valkeyReadReconcileSeconds: valkeyReadReconcileSeconds
    valkeyRequestTimeoutMs: valkeyRequestTimeoutMs
    taskHubName: taskHubName
    streamMaxDurationSeconds: streamMaxDurationSeconds
    streamHeartbeatSeconds: streamHeartbeatSeconds
    streamTokenTtlSeconds: streamTokenTtlSeconds
    streamTokenRotationSeconds: streamTokenRotationSeconds
    allowSystemRoleMessages: allowSystemRoleMessages
    openAiEndpoint: openAiEnabled ? openAi.outputs.endpoint : ''
    openAiDeploymentName: openAiEnabled ? openAi.outputs.deploymentName : ''
    durableTaskSchedulerEndpoint: durableTaskSchedulerEnabled ? durableTaskScheduler.outputs.endpoint : ''
  }
  // The app starts on deployment: its identity must already hold its data roles, and with a VNet
  // storage must already be reachable through its private endpoints.
  dependsOn: [
    rbac
    privateEndpoints
  ]
}

module rbac './app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appPrincipalId: apiIdentity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.applicationInsightsConnectionString
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
// For running the app locally against the cloud cache as the deploying user (VALKEY_USERNAME is
// then that user's object id, AZURE_PRINCIPAL_ID).
output VALKEY_HOST string = redis.outputs.hostName
output VALKEY_PORT string = '10000'
output VALKEY_TLS string = 'true'
output VALKEY_CLUSTER string = redis.outputs.valkeyCluster
output VALKEY_AUTH string = 'entra'
output TASKHUB_NAME string = taskHubName
output AZURE_OPENAI_ENDPOINT string = openAiEnabled ? openAi.outputs.endpoint : ''
output AZURE_OPENAI_DEPLOYMENT string = openAiEnabled ? openAi.outputs.deploymentName : ''
output DURABLE_TASK_SCHEDULER_ENDPOINT string = durableTaskSchedulerEnabled ? durableTaskScheduler.outputs.endpoint : ''
