// Optional Durable Task Scheduler backend: a scheduler and one task hub, reached by the app with
// its identity (Durable Task Data Contributor on the scheduler). host.json has to switch to the
// azureManaged storage provider for the app to use it (see docs/deploy.md).

@minLength(3)
@maxLength(64)
@description('Name of the scheduler: letters, digits and hyphens.')
param name string

@minLength(1)
@description('Region of the scheduler.')
param location string

@description('Tags applied to the scheduler.')
param tags object = {}

@allowed([
  'Consumption'
  'Dedicated'
])
@description('Scheduler SKU: Consumption bills per action, Dedicated per capacity unit.')
param skuName string = 'Consumption'

@minLength(3)
@maxLength(45)
@description('Task hub name; the app reads it from TASKHUB_NAME.')
param taskHubName string

@minLength(36)
@maxLength(36)
@description('Object id of the app identity.')
param appPrincipalId string

@description('Object id of the deploying user (dashboard and local debugging); empty: none.')
param userPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
@description('Kind of principal userPrincipalId names.')
param userPrincipalType string = 'User'

var durableTaskDataContributorRoleId = '0ad04412-c4d5-4796-b79c-f76d14c8d402'

resource scheduler 'Microsoft.DurableTask/schedulers@2025-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    sku: (skuName == 'Dedicated') ? {
      name: skuName
      capacity: 1
    } : {
      name: skuName
    }
    // An empty list denies everything. Flex Consumption has no fixed outbound addresses, so the
    // list stays open and access is decided by Entra ID role assignments.
    ipAllowlist: [
      '0.0.0.0/0'
    ]
  }
}

resource taskHub 'Microsoft.DurableTask/schedulers/taskHubs@2025-11-01' = {
  parent: scheduler
  name: taskHubName
}

resource appDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(scheduler.id, appPrincipalId, durableTaskDataContributorRoleId)
  scope: scheduler
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataContributorRoleId)
  }
}

resource userDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(scheduler.id, userPrincipalId, durableTaskDataContributorRoleId)
  scope: scheduler
  properties: {
    principalId: userPrincipalId
    principalType: userPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataContributorRoleId)
  }
}

@description('Endpoint of the scheduler, for DURABLE_TASK_SCHEDULER_CONNECTION_STRING.')
output endpoint string = scheduler.properties.endpoint

@description('Name of the task hub.')
output taskHubName string = taskHub.name
