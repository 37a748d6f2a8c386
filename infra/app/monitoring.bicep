// Log Analytics + Application Insights. Ingestion is Entra-authenticated only (DisableLocalAuth):
// the app sends telemetry as its identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING) with the
// Monitoring Metrics Publisher role granted in rbac.bicep.

@minLength(4)
@maxLength(63)
@description('Name of the Log Analytics workspace.')
param logAnalyticsName string

@minLength(1)
@maxLength(255)
@description('Name of the Application Insights component.')
param applicationInsightsName string

@minLength(1)
@description('Region of both resources.')
param location string

@description('Tags applied to both resources.')
param tags object = {}

@minValue(30)
@maxValue(730)
@description('Days Log Analytics keeps data.')
param retentionInDays int = 30

// AVM fits the workspace: nothing in it needs checking here.
module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.7.0' = {
  name: 'logAnalytics'
  params: {
    name: logAnalyticsName
    location: location
    tags: tags
    dataRetention: retentionInDays
  }
}

// A raw resource rather than AVM: DisableLocalAuth is a security property that our template tests
// and checkov read, and the connection string is an output the app needs.
resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.outputs.resourceId
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

@description('Name of the Application Insights component.')
output applicationInsightsName string = applicationInsights.name

@description('Connection string of the Application Insights component (APPLICATIONINSIGHTS_CONNECTION_STRING).')
output applicationInsightsConnectionString string = applicationInsights.properties.ConnectionString
