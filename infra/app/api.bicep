// The Function App: Flex Consumption (FC1) on Linux, Python 3.12 or 3.13, one user-assigned identity for
// everything. The app settings carry the names the code reads (see docs/configuration.md and
// local.settings.sample.json); connections are identity-based, no secret is stored.

@minLength(2)
@maxLength(60)
@description('Name of the Function App.')
param name string

@minLength(1)
@maxLength(60)
@description('Name of the Flex Consumption plan.')
param planName string

@minLength(1)
@description('Region of the plan and the app.')
param location string

@description('Tags applied to the plan and the app; the app also gets azd-service-name.')
param tags object = {}

@minLength(1)
@description('Resource id of the user-assigned identity.')
param identityId string

@minLength(36)
@maxLength(36)
@description('Client id of the identity (AZURE_CLIENT_ID, AzureWebJobsStorage__clientId).')
param identityClientId string

@minLength(36)
@maxLength(36)
@description('Object (principal) id of the identity: the Redis user name (VALKEY_USERNAME).')
param identityPrincipalId string

@minLength(3)
@maxLength(24)
@description('Storage account of the Functions host and the durable Azure Storage provider.')
param storageAccountName string

@minLength(1)
@description('Blob endpoint of that account, with a trailing slash.')
param storageBlobEndpoint string

@minLength(3)
@maxLength(63)
@description('Blob container of the deployment package.')
param deploymentContainerName string

@minLength(1)
@description('Application Insights connection string.')
param applicationInsightsConnectionString string

@allowed([
  '3.12'
  '3.13'
])
@description('Python version of the app; CI tests both (see docs/testing.md, Supported Python versions).')
param pythonVersion string = '3.12'

@allowed([
  512
  2048
  4096
])
@description('Memory of each instance in MB.')
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
@description('Upper bound of scale-out.')
param maximumInstanceCount int = 100

@minValue(1)
@maxValue(1000)
@description('HTTP requests (open streams included) one instance serves at once.')
param httpPerInstanceConcurrency int = 100

@description('Subnet (delegated to Microsoft.App/environments) for VNet integration; empty: none.')
param virtualNetworkSubnetId string = ''

@minLength(1)
@description('Host name of the Azure Managed Redis cache (VALKEY_HOST).')
param valkeyHost string

@allowed([
  'true'
  'false'
])
@description('VALKEY_CLUSTER: true for the OSS cluster policy.')
param valkeyCluster string

@minValue(60)
@description('VALKEY_STREAM_TTL_SECONDS.')
param valkeyStreamTtlSeconds int = 3600

@minValue(100)
@description('VALKEY_STREAM_MAXLEN.')
param valkeyStreamMaxlen int = 10000

@minValue(100)
@description('VALKEY_READ_BLOCK_MS.')
param valkeyReadBlockMs int = 5000

@minValue(5)
@description('VALKEY_READ_IDLE_TIMEOUT_SECONDS.')
param valkeyReadIdleTimeoutSeconds int = 120

@minValue(1)
@description('VALKEY_READ_RECONCILE_SECONDS.')
param valkeyReadReconcileSeconds int = 10

@minValue(100)
@description('VALKEY_REQUEST_TIMEOUT_MS.')
param valkeyRequestTimeoutMs int = 1000

@minLength(3)
@maxLength(45)
@description('Durable task hub name (TASKHUB_NAME, used by host.json as %TASKHUB_NAME%).')
param taskHubName string

@minValue(30)
@maxValue(220)
@description('STREAM_MAX_DURATION_SECONDS.')
param streamMaxDurationSeconds int = 200

@minValue(1)
@maxValue(120)
@description('STREAM_HEARTBEAT_SECONDS.')
param streamHeartbeatSeconds int = 15

@minValue(60)
@description('STREAM_TOKEN_TTL_SECONDS.')
param streamTokenTtlSeconds int = 3600

@minValue(3600)
@description('STREAM_TOKEN_ROTATION_SECONDS.')
param streamTokenRotationSeconds int = 86400

@description('ALLOW_SYSTEM_ROLE_MESSAGES.')
param allowSystemRoleMessages bool = false

@description('Azure OpenAI endpoint; empty: the app runs its offline scripted model.')
param openAiEndpoint string = ''

@description('Azure OpenAI chat deployment name.')
param openAiDeploymentName string = ''

@description('Durable Task Scheduler endpoint; empty: no scheduler connection setting.')
param durableTaskSchedulerEndpoint string = ''

// Identity-based connections everywhere: AzureWebJobsStorage__* for the host and the durable Azure
// Storage provider, an AAD authentication string for telemetry, Entra ID for Redis.
var baseAppSettings = [
  {
    name: 'AzureWebJobsStorage__accountName'
    value: storageAccountName
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: applicationInsightsConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identityClientId};Authorization=AAD'
  }
  // The worker configures the Azure Monitor OpenTelemetry distro (requirements.txt) once, with the
  // connection string and Entra ID settings above; the app never calls configure_azure_monitor (a
  // second pipeline). host.json puts the host in OpenTelemetry mode. (Checkov: at most 4 lines here.)
  {
    name: 'PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY'
    value: 'true'
  }
  // Streaming HTTP responses (azurefunctions-extensions-http-fastapi) need init indexing.
  {
    name: 'PYTHON_ENABLE_INIT_INDEXING'
    value: '1'
  }
  // DefaultAzureCredential picks the user-assigned identity by this id.
  {
    name: 'AZURE_CLIENT_ID'
    value: identityClientId
  }
  {
    name: 'VALKEY_HOST'
    value: valkeyHost
  }
  {
    name: 'VALKEY_PORT'
    value: '10000'
  }
  {
    name: 'VALKEY_TLS'
    value: 'true'
  }
  {
    name: 'VALKEY_CLUSTER'
    value: valkeyCluster
  }
  {
    name: 'VALKEY_AUTH'
    value: 'entra'
  }
  {
    name: 'VALKEY_USERNAME'
    value: identityPrincipalId
  }
  {
    name: 'VALKEY_STREAM_TTL_SECONDS'
    value: string(valkeyStreamTtlSeconds)
  }
  {
    name: 'VALKEY_STREAM_MAXLEN'
    value: string(valkeyStreamMaxlen)
  }
  {
    name: 'VALKEY_READ_BLOCK_MS'
    value: string(valkeyReadBlockMs)
  }
  {
    name: 'VALKEY_READ_IDLE_TIMEOUT_SECONDS'
    value: string(valkeyReadIdleTimeoutSeconds)
  }
  {
    name: 'VALKEY_READ_RECONCILE_SECONDS'
    value: string(valkeyReadReconcileSeconds)
  }
  {
    name: 'VALKEY_REQUEST_TIMEOUT_MS'
    value: string(valkeyRequestTimeoutMs)
  }
  {
    name: 'TASKHUB_NAME'
    value: taskHubName
  }
  {
    name: 'STREAM_MAX_DURATION_SECONDS'
    value: string(streamMaxDurationSeconds)
  }
  {
    name: 'STREAM_HEARTBEAT_SECONDS'
    value: string(streamHeartbeatSeconds)
  }
  {
    name: 'STREAM_TOKEN_TTL_SECONDS'
    value: string(streamTokenTtlSeconds)
  }
  {
    name: 'STREAM_TOKEN_ROTATION_SECONDS'
    value: string(streamTokenRotationSeconds)
  }
  {
    name: 'ALLOW_SYSTEM_ROLE_MESSAGES'
    value: allowSystemRoleMessages ? 'true' : 'false'
  }
]

var openAiAppSettings = empty(openAiEndpoint) ? [] : [
  {
    name: 'AZURE_OPENAI_ENDPOINT'
    value: openAiEndpoint
  }
  {
    name: 'AZURE_OPENAI_DEPLOYMENT'
    value: openAiDeploymentName
  }
]

var durableTaskSchedulerAppSettings = empty(durableTaskSchedulerEndpoint) ? [] : [
  {
    name: 'DURABLE_TASK_SCHEDULER_CONNECTION_STRING'
    value: 'Endpoint=${durableTaskSchedulerEndpoint};Authentication=ManagedIdentity;ClientID=${identityClientId}'
  }
]

// AVM fits the plan: FC1 on Linux is all it takes.
module flexPlan 'br/public:avm/res/web/serverfarm:0.1.1' = {
  name: 'flexPlan'
  params: {
    name: planName
    location: location
    tags: tags
    sku: {
      name: 'FC1'
      tier: 'FlexConsumption'
    }
    reserved: true
  }
}

// A raw resource rather than AVM: functionAppConfig (Flex Consumption) is read by our template
// tests, and checkov checks the TLS, HTTPS and identity settings.
resource functionApp 'Microsoft.Web/sites@2024-11-01' = {
  // checkov:skip=CKV_AZURE_222: the app is a public HTTP API over HTTPS only (httpsOnly); its agent routes need a function key, only /api/health and the chat page are anonymous.
  // checkov:skip=CKV_AZURE_17: clients authenticate with function keys, not TLS client certificates (browsers using EventSource cannot present one).
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero on demand; always-ready instances are a cost choice left to the user (functionAppConfig.scaleAndConcurrency.alwaysReady).
  // checkov:skip=CKV_AZURE_213: the App Service health check evicts unhealthy instances of always-on plans; Flex Consumption scales to zero, so GET /api/health (liveness and Valkey reachability) serves external probes instead.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: flexPlan.outputs.resourceId
    httpsOnly: true
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: concat(baseAppSettings, openAiAppSettings, durableTaskSchedulerAppSettings)
    }
    // Flex Consumption: the runtime lives here, not in FUNCTIONS_WORKER_RUNTIME (which this plan
    // rejects as an app setting); the package is pulled from blob storage with the identity.
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        // A stream holds its request open while it mostly waits: many share an instance.
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Top-level children with parent (not nested): pycep-parser keeps only the last of several nested
// children of one resource.
// azd deploys with Entra ID tokens: publishing with basic credentials stays off.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-11-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-11-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

@description('Name of the Function App.')
output name string = functionApp.name

@description('Base URL of the Function App.')
output uri string = 'https://${functionApp.properties.defaultHostName}'
