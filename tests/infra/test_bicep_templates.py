"""Static checks of the azd templates (azure.yaml, infra/): no Bicep CLI or Azure runs here.

Every Bicep file is parsed with pycep-parser and the parsed trees are read for the facts the
deployment depends on: Entra ID everywhere (no shared keys, no Redis access keys, no OpenAI keys),
TLS, the Redis access policy for the app identity, roles by their well-known definition ids, the
app settings named exactly as the code reads them, the outputs azd uses, decorated parameters,
and module calls that match the modules they call.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.bicep_tree import (
    INFRA,
    REPO_ROOT,
    bicep_files,
    decorator,
    merged_parts,
    only_resource,
    parse_bicep,
    render,
    resource_body,
    resource_condition,
    resources_of_type,
)

# Every setting name the code and the platform read, exactly as the shared setting names list them
# (one list: the Bicep app settings, the README and local.settings.sample.json use these names).
SETTINGS_THE_CODE_READS = (
    "VALKEY_HOST",
    "VALKEY_PORT",
    "VALKEY_TLS",
    "VALKEY_CLUSTER",
    "VALKEY_USERNAME",
    "VALKEY_PASSWORD",
    "VALKEY_AUTH",
    "VALKEY_URL",
    "VALKEY_STREAM_TTL_SECONDS",
    "VALKEY_STREAM_MAXLEN",
    "VALKEY_READ_BLOCK_MS",
    "VALKEY_READ_IDLE_TIMEOUT_SECONDS",
    "VALKEY_READ_RECONCILE_SECONDS",
    "VALKEY_REQUEST_TIMEOUT_MS",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_DEPLOYMENT",
    "AZURE_CLIENT_ID",
    "SCRIPTED_CHUNK_DELAY_MS",
    "TRIP_PLANNER_MAX_REVISIONS",
    "STREAM_MAX_DURATION_SECONDS",
    "STREAM_HEARTBEAT_SECONDS",
    "STREAM_TOKEN_TTL_SECONDS",
    "STREAM_TOKEN_ROTATION_SECONDS",
    "ALLOW_SYSTEM_ROLE_MESSAGES",
    "TASKHUB_NAME",
    "AzureWebJobsStorage",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "FUNCTIONS_WORKER_RUNTIME",
    "PYTHON_ENABLE_INIT_INDEXING",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
    "DURABLE_TASK_SCHEDULER_CONNECTION_STRING",
)

# Names that the Azure deployment leaves unset on purpose, and why.
LEFT_UNSET_IN_AZURE = {
    "VALKEY_PASSWORD": "Entra ID: the token is the password",
    "VALKEY_URL": "host and port settings instead of a URL that would carry credentials",
    "SCRIPTED_CHUNK_DELAY_MS": "demo-only pacing of the offline scripted model",
    "TRIP_PLANNER_MAX_REVISIONS": "the sample workflow's default (3) applies; an app setting changes it",
    "AzureWebJobsStorage": "identity-based AzureWebJobsStorage__* instead of a connection string",
    "FUNCTIONS_WORKER_RUNTIME": "Flex Consumption takes the runtime from functionAppConfig and rejects this setting",
}

# Settings that exist only when their optional resource is deployed, with the guard in api.bicep.
CONDITIONAL_SETTINGS = {
    "AZURE_OPENAI_ENDPOINT": "!empty(openAiEndpoint)",
    "AZURE_OPENAI_DEPLOYMENT": "!empty(openAiEndpoint)",
    "DURABLE_TASK_SCHEDULER_CONNECTION_STRING": "!empty(durableTaskSchedulerEndpoint)",
}

# Fixed values the app relies on in Azure.
FIXED_SETTING_VALUES = {
    "VALKEY_PORT": "10000",
    "VALKEY_TLS": "true",
    "VALKEY_AUTH": "entra",
    "PYTHON_ENABLE_INIT_INDEXING": "1",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true",
    "AzureWebJobsStorage__credential": "managedidentity",
}

# Built-in role definitions, by their well-known ids.
ROLE = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Cognitive Services OpenAI User": "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",
    "Durable Task Data Contributor": "0ad04412-c4d5-4796-b79c-f76d14c8d402",
}

AZD_OUTPUTS = (
    "AZURE_LOCATION",
    "AZURE_TENANT_ID",
    "AZURE_FUNCTION_NAME",
    "SERVICE_API_NAME",
    "SERVICE_API_URI",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
)

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _module_params(template: dict[str, Any], name: str) -> dict[str, Any]:
    return resource_body(template["modules"][name])["params"]


def _app_settings(templates: dict[str, dict[str, Any]]) -> dict[str, tuple[str, Any]]:
    """Every app setting of the Function App: name -> (condition, value expression)."""
    api = templates["app/api.bicep"]
    site = resource_body(only_resource(api, "Microsoft.Web/sites"))
    settings: dict[str, tuple[str, Any]] = {}
    for condition, entries in merged_parts(site["properties"]["siteConfig"]["appSettings"], api["variables"]):
        for entry in entries:
            assert set(entry) == {"name", "value"}, entry
            assert entry["name"] not in settings, f"app setting {entry['name']} is set twice"
            settings[entry["name"]] = (condition, entry["value"])
    return settings


def _role_assignments(templates: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every role assignment with its file, principal, scope, condition and resolved role ids."""
    found = []
    for file, template in templates.items():
        variables = template.get("variables", {})
        for name, resource in resources_of_type(template, "Microsoft.Authorization/roleAssignments").items():
            body = resource_body(resource)
            properties = body["properties"]
            role_expr = properties["roleDefinitionId"]["function"]
            assert role_expr["type"] == "subscription_resource_id", f"{file}:{name} builds its role id differently"
            assert role_expr["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
            role_ids = _resolve_role_ids(role_expr["parameters"]["resource_name_1"], resource, variables)
            found.append(
                {
                    "file": file,
                    "name": name,
                    "principal": render(properties["principalId"]),
                    "principal_type": render(properties["principalType"]),
                    "scope": render(body["scope"]),
                    "condition": resource_condition(resource),
                    "role_ids": role_ids,
                }
            )
    return found


def _resolve_role_ids(expr: Any, resource: dict[str, Any], variables: dict[str, Any]) -> list[str]:
    """Resolve a role id expression (literal, variable, object member, loop item) to GUIDs."""
    loop = resource["config"].get("loop_type")
    if loop and isinstance(expr, str) and expr == loop["detail"]["item_name"]:
        array = loop["detail"]["array_name"]
        items = variables[array]["value"] if isinstance(array, str) else array
        if isinstance(items, dict):  # `cond ? [] : someArray`: the non-empty branch
            operands = items["operator"]["operands"]
            items = next(branch for branch in (operands["true_value"], operands["false_value"]) if branch)
            items = variables[items]["value"] if isinstance(items, str) else items
        return [_resolve_one(item, variables) for item in items]
    return [_resolve_one(expr, variables)]


def _resolve_one(expr: Any, variables: dict[str, Any]) -> str:
    text = render(expr)
    if GUID.match(text):
        return text
    head, _, member = text.partition(".")
    value = variables[head]["value"]
    resolved = value[member] if member else value
    assert GUID.match(resolved), f"{text} does not resolve to a role definition id"
    return resolved


# --- parsing and general template hygiene -------------------------------------------------------


def test_pycep_parser_is_current_enough() -> None:
    major, minor = (int(part) for part in version("pycep-parser").split(".")[:2])
    assert (major, minor) >= (0, 7), "the structural tests need pycep-parser 0.7 or newer"


@pytest.mark.parametrize("path", bicep_files(), ids=lambda path: path.relative_to(INFRA).as_posix())
def test_every_bicep_file_parses(path: Path) -> None:
    template = parse_bicep(path)
    assert template.get("resources") or template.get("modules"), f"{path.name} declares nothing"


def test_infra_has_one_module_per_concern(templates: dict[str, dict[str, Any]]) -> None:
    assert set(templates) == {
        "main.bicep",
        "app/api.bicep",
        "app/durable-task-scheduler.bicep",
        "app/monitoring.bicep",
        "app/openai.bicep",
        "app/private-endpoints.bicep",
        "app/rbac.bicep",
        "app/redis.bicep",
        "app/storage.bicep",
        "app/vnet.bicep",
    }


def test_main_deploys_at_subscription_scope_into_its_resource_group(templates: dict[str, dict[str, Any]]) -> None:
    main = templates["main.bicep"]
    assert main["globals"]["scope"]["value"] == "subscription"
    only_resource(main, "Microsoft.Resources/resourceGroups")
    for name, module in main["modules"].items():
        assert resource_body(module)["scope"] == "rg", f"module {name} is not deployed into the resource group"


def test_every_parameter_has_a_description(templates: dict[str, dict[str, Any]]) -> None:
    missing = [
        f"{file}:{name}"
        for file, template in templates.items()
        for name, param in template.get("parameters", {}).items()
        if not decorator(param, "description")
    ]
    assert missing == []


def test_parameters_are_constrained(templates: dict[str, dict[str, Any]]) -> None:
    loose = []
    for file, template in templates.items():
        for name, param in template.get("parameters", {}).items():
            allowed = decorator(param, "allowed")
            if allowed is not None:
                if param["default"] is not None:
                    assert param["default"] in allowed, f"{file}:{name} defaults outside its @allowed"
                continue
            if param["type"] == "int" and decorator(param, "min_value") is None:
                loose.append(f"{file}:{name} (int without @minValue)")
            if param["type"] == "string" and param["default"] is None and decorator(param, "min_length") is None:
                loose.append(f"{file}:{name} (required string without @minLength)")
    assert loose == []


def test_choice_parameters_allow_exactly_the_supported_values(templates: dict[str, dict[str, Any]]) -> None:
    main = templates["main.bicep"]["parameters"]
    assert decorator(main["redisClusteringPolicy"], "allowed") == ["OSSCluster", "EnterpriseCluster", "NoCluster"]
    assert main["redisSkuName"]["default"] == "Balanced_B0", "the cache SKU defaults to the smallest one"
    assert decorator(main["redisSkuName"], "allowed")[0] == "Balanced_B0"
    assert decorator(main["redisHighAvailability"], "allowed") == ["Enabled", "Disabled"]
    assert decorator(main["principalType"], "allowed") == ["User", "ServicePrincipal"]
    assert decorator(main["durableTaskSchedulerSku"], "allowed") == ["Consumption", "Dedicated"]
    assert decorator(main["instanceMemoryMB"], "allowed") == [512, 2048, 4096]
    assert decorator(main["environmentName"], "min_length") == 1
    assert decorator(main["environmentName"], "max_length") == 64
    assert decorator(main["location"], "metadata") == {"azd": {"type": "location"}}
    assert decorator(main["taskHubName"], "max_length") == 45, "the Azure Storage provider caps hub names at 45"
    assert decorator(main["streamMaxDurationSeconds"], "max_value") < 230, "the front end cuts responses at ~230 s"
    # The optional parts default the way the issue asks: OpenAI on, scheduler and VNet off.
    assert main["openAiEnabled"]["default"] is True
    assert main["durableTaskSchedulerEnabled"]["default"] is False
    assert main["vnetEnabled"]["default"] is False


def test_modules_are_called_with_the_parameters_they_declare(templates: dict[str, dict[str, Any]]) -> None:
    for file, template in templates.items():
        for name, module in template.get("modules", {}).items():
            if module["type"] != "local":
                continue
            target = (INFRA / file).parent / module["detail"]["path"]
            assert target.is_file(), f"{file}:{name} calls a missing module {target}"
            declared = templates[target.resolve().relative_to(INFRA.resolve()).as_posix()]["parameters"]
            passed = set(resource_body(module).get("params", {}))
            assert passed <= set(declared), f"{file}:{name} passes undeclared {sorted(passed - set(declared))}"
            required = {param for param, spec in declared.items() if spec["default"] is None}
            assert required <= passed, f"{file}:{name} leaves out required {sorted(required - passed)}"


def test_registry_modules_are_pinned_azure_verified_modules(templates: dict[str, dict[str, Any]]) -> None:
    registry = [
        module["detail"]
        for template in templates.values()
        for module in template.get("modules", {}).values()
        if module["type"] != "local"
    ]
    assert registry, "at least the identity comes from an Azure Verified Module"
    for detail in registry:
        assert detail["alias"] == "public" and detail["path"].startswith("avm/res/"), detail["full"]
        assert re.fullmatch(r"\d+\.\d+\.\d+", detail["tag"]), f"{detail['full']} is not pinned to a version"


def test_resources_use_released_api_versions(templates: dict[str, dict[str, Any]]) -> None:
    previews = [
        f"{file}:{name} {res['type']}@{res['api_version']}"
        for file, template in templates.items()
        for name, res in template.get("resources", {}).items()
        if "preview" in res["api_version"]
    ]
    assert previews == []


def test_no_template_reads_or_emits_keys() -> None:
    for path in bicep_files():
        text = path.read_text()
        for marker in ("listKeys(", "listConnectionStrings(", "AccountKey=", "primaryKey", "@secure()"):
            assert marker not in text, f"{path.name} handles a secret ({marker})"


def test_every_checkov_suppression_says_why() -> None:
    suppressions = []
    for path in bicep_files():
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                suppressions.append(line.strip())
                assert re.fullmatch(r"// checkov:skip=CKV2?_AZURE_\d+: \S.{30,}", line.strip()), line
    assert suppressions, "the scan runs with inline, justified suppressions (see app/api.bicep)"


def test_resource_names_use_known_abbreviations() -> None:
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())
    used = set(re.findall(r"abbrs\.(\w+)", (INFRA / "main.bicep").read_text()))
    assert used and used <= set(abbreviations), f"unknown abbreviations {sorted(used - set(abbreviations))}"


# --- storage ---------------------------------------------------------------------------------------


def test_storage_accepts_only_entra_id_over_tls12(templates: dict[str, dict[str, Any]]) -> None:
    storage = templates["app/storage.bicep"]
    account = resource_body(only_resource(storage, "Microsoft.Storage/storageAccounts"))["properties"]
    assert account["allowSharedKeyAccess"] is False
    assert account["minimumTlsVersion"] == "TLS1_2"
    assert account["allowBlobPublicAccess"] is False
    assert account["supportsHttpsTrafficOnly"] is True
    assert account["defaultToOAuthAuthentication"] is True
    assert render(account["publicNetworkAccess"]) == "vnetEnabled ? Disabled : Enabled"
    container = resource_body(only_resource(storage, "Microsoft.Storage/storageAccounts/blobServices/containers"))
    assert container["name"] == "deploymentContainerName"
    assert container["properties"]["publicAccess"] == "None"


# --- function app ----------------------------------------------------------------------------------


def test_function_app_runs_the_chosen_python_on_flex_consumption(templates: dict[str, dict[str, Any]]) -> None:
    api = templates["app/api.bicep"]
    plan = resource_body(api["modules"]["flexPlan"])["params"]
    assert api["modules"]["flexPlan"]["detail"]["path"] == "avm/res/web/serverfarm"
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["reserved"] is True, "Flex Consumption runs on Linux"
    site = resource_body(only_resource(api, "Microsoft.Web/sites"))
    assert site["kind"] == "functionapp,linux"
    assert render(site["properties"]["serverFarmId"]) == "flexPlan.outputs.resourceId"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "pythonVersion"}
    assert set(config["scaleAndConcurrency"]) == {"instanceMemoryMB", "maximumInstanceCount", "triggers"}


def test_streams_share_an_instance_up_to_a_chosen_http_concurrency(templates: dict[str, dict[str, Any]]) -> None:
    # Python apps default to one HTTP request per Flex Consumption instance: every open stream would
    # hold (and bill) an instance of its own. The parameter reaches the site and azd's environment.
    site = resource_body(only_resource(templates["app/api.bicep"], "Microsoft.Web/sites"))
    triggers = site["properties"]["functionAppConfig"]["scaleAndConcurrency"]["triggers"]
    assert triggers == {"http": {"perInstanceConcurrency": "httpPerInstanceConcurrency"}}
    for file in ("main.bicep", "app/api.bicep"):
        param = templates[file]["parameters"]["httpPerInstanceConcurrency"]
        assert param["default"] == 100, file
        assert (decorator(param, "min_value"), decorator(param, "max_value")) == (1, 1000), file
    assert _module_params(templates["main.bicep"], "api")["httpPerInstanceConcurrency"] == "httpPerInstanceConcurrency"
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert mapped["httpPerInstanceConcurrency"] == {"value": "${HTTP_PER_INSTANCE_CONCURRENCY=100}"}


def test_python_version_is_a_parameter_that_defaults_to_312(templates: dict[str, dict[str, Any]]) -> None:
    main = templates["main.bicep"]
    for file in ("main.bicep", "app/api.bicep"):
        param = templates[file]["parameters"]["pythonVersion"]
        assert decorator(param, "allowed") == ["3.12", "3.13"], file
        assert param["default"] == "3.12", file
    assert _module_params(main, "api")["pythonVersion"] == "pythonVersion"
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert mapped["pythonVersion"] == {"value": "${APP_PYTHON_VERSION=3.12}"}


def test_every_python_version_infra_offers_is_one_ci_tests(templates: dict[str, dict[str, Any]]) -> None:
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    tested = set(re.findall(r"^PY\d+=\$\(python_for (3\.\d+)\)$", ci, re.MULTILINE))
    offered = set(decorator(templates["main.bicep"]["parameters"]["pythonVersion"], "allowed"))
    assert offered <= tested, f"infra offers Python {sorted(offered - tested)}, which CI does not test"


def test_function_app_uses_its_user_assigned_identity_for_the_package(templates: dict[str, dict[str, Any]]) -> None:
    api = templates["app/api.bicep"]
    site = resource_body(only_resource(api, "Microsoft.Web/sites"))
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == ["'${identityId}'"], (
        "keys that need quotes keep them in the parsed tree"
    )
    storage = site["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["value"] == "${storageBlobEndpoint}${deploymentContainerName}"
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }
    main_api = _module_params(templates["main.bicep"], "api")
    assert render(main_api["identityId"]) == "apiIdentity.outputs.resourceId"
    assert render(main_api["identityClientId"]) == "apiIdentity.outputs.clientId"
    assert render(main_api["identityPrincipalId"]) == "apiIdentity.outputs.principalId"
    assert main_api["deploymentContainerName"] == "deploymentStorageContainerName"
    assert (
        main_api["deploymentContainerName"]
        == _module_params(templates["main.bicep"], "storage")["deploymentContainerName"]
    ), "the app must pull its package from the container the storage module creates"


def test_function_app_is_https_only_and_tagged_for_azd(templates: dict[str, dict[str, Any]]) -> None:
    api = templates["app/api.bicep"]
    site = resource_body(only_resource(api, "Microsoft.Web/sites"))
    assert site["properties"]["httpsOnly"] is True
    assert site["properties"]["siteConfig"]["minTlsVersion"] == "1.2"
    assert site["properties"]["siteConfig"]["ftpsState"] == "Disabled"
    assert render(site["tags"]) == "union(tags, {'azd-service-name': api})"
    policies = resources_of_type(api, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert sorted(resource_body(policy)["name"] for policy in policies.values()) == ["ftp", "scm"]
    assert all(resource_body(policy)["properties"] == {"allow": False} for policy in policies.values())


def test_app_settings_are_exactly_the_names_the_code_reads(templates: dict[str, dict[str, Any]]) -> None:
    settings = _app_settings(templates)
    expected = set(SETTINGS_THE_CODE_READS) - set(LEFT_UNSET_IN_AZURE)
    assert set(settings) == expected, (
        f"missing {sorted(expected - set(settings))}, unexpected {sorted(set(settings) - expected)}"
    )
    for name, guard in CONDITIONAL_SETTINGS.items():
        assert settings[name][0] == guard, f"{name} is guarded by {settings[name][0]!r}"
    unconditional = expected - set(CONDITIONAL_SETTINGS)
    assert all(settings[name][0] == "" for name in unconditional)


def test_app_settings_carry_the_values_the_app_relies_on(templates: dict[str, dict[str, Any]]) -> None:
    settings = {name: render(value) for name, (_, value) in _app_settings(templates).items()}
    for name, value in FIXED_SETTING_VALUES.items():
        assert settings[name] == value, name
    # One identity: the credential picks it by client id, Redis knows it by object id.
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert settings["VALKEY_USERNAME"] == "identityPrincipalId"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    assert settings["AzureWebJobsStorage__accountName"] == "storageAccountName"
    assert settings["VALKEY_HOST"] == "valkeyHost"
    assert settings["VALKEY_CLUSTER"] == "valkeyCluster"
    assert settings["TASKHUB_NAME"] == "taskHubName"
    # Off unless the deployment says otherwise (azd: ALLOW_SYSTEM_ROLE_MESSAGES).
    assert settings["ALLOW_SYSTEM_ROLE_MESSAGES"] == "allowSystemRoleMessages ? true : false"
    assert templates["app/api.bicep"]["parameters"]["allowSystemRoleMessages"]["default"] is False
    assert settings["DURABLE_TASK_SCHEDULER_CONNECTION_STRING"] == (
        "Endpoint=${durableTaskSchedulerEndpoint};Authentication=ManagedIdentity;ClientID=${identityClientId}"
    )
    main_api = _module_params(templates["main.bicep"], "api")
    assert render(main_api["valkeyHost"]) == "redis.outputs.hostName"
    assert render(main_api["valkeyCluster"]) == "redis.outputs.valkeyCluster"
    assert render(main_api["allowSystemRoleMessages"]) == "allowSystemRoleMessages"
    assert render(main_api["applicationInsightsConnectionString"]) == (
        "monitoring.outputs.applicationInsightsConnectionString"
    )
    assert render(main_api["openAiEndpoint"]) == "openAiEnabled ? openAi.outputs.endpoint : "
    assert render(main_api["durableTaskSchedulerEndpoint"]) == (
        "durableTaskSchedulerEnabled ? durableTaskScheduler.outputs.endpoint : "
    )


def test_the_task_hub_is_the_same_for_the_app_and_the_scheduler(templates: dict[str, dict[str, Any]]) -> None:
    main = templates["main.bicep"]
    assert _module_params(main, "api")["taskHubName"] == "taskHubName"
    assert _module_params(main, "durableTaskScheduler")["taskHubName"] == "taskHubName"


def test_every_valkey_setting_in_the_buffer_is_known_here() -> None:
    read_by_buffer = set()
    for path in (REPO_ROOT / "valkey_buffer").glob("*.py"):
        read_by_buffer |= set(re.findall(r"\"(VALKEY_[A-Z_]+)\"", path.read_text()))
    assert read_by_buffer, "valkey_buffer reads its settings from VALKEY_* variables"
    assert read_by_buffer <= set(SETTINGS_THE_CODE_READS), sorted(read_by_buffer - set(SETTINGS_THE_CODE_READS))


def test_local_settings_sample_uses_the_same_names() -> None:
    sample = json.loads((REPO_ROOT / "local.settings.sample.json").read_text())["Values"]
    assert set(sample) <= set(SETTINGS_THE_CODE_READS), sorted(set(sample) - set(SETTINGS_THE_CODE_READS))


# --- Azure Managed Redis ---------------------------------------------------------------------------


def test_redis_is_tls_only_on_port_10000_with_access_keys_disabled(templates: dict[str, dict[str, Any]]) -> None:
    redis = templates["app/redis.bicep"]
    cluster = resource_body(only_resource(redis, "Microsoft.Cache/redisEnterprise"))
    assert cluster["properties"]["minimumTlsVersion"] == "1.2"
    assert cluster["sku"] == {"name": "skuName"}
    database = resource_body(only_resource(redis, "Microsoft.Cache/redisEnterprise/databases"))
    assert database["parent"] == "redisCluster"
    assert database["name"] == "default"
    assert database["properties"]["port"] == 10000
    assert database["properties"]["clientProtocol"] == "Encrypted"
    assert database["properties"]["accessKeysAuthentication"] == "Disabled"
    assert database["properties"]["clusteringPolicy"] == "clusteringPolicy"
    main_redis = _module_params(templates["main.bicep"], "redis")
    assert main_redis["skuName"] == "redisSkuName"
    assert main_redis["clusteringPolicy"] == "redisClusteringPolicy"
    assert render(main_redis["publicNetworkAccess"]) == "vnetEnabled ? Disabled : Enabled"


def test_redis_grants_the_default_access_policy_to_the_app_identity(templates: dict[str, dict[str, Any]]) -> None:
    redis = templates["app/redis.bicep"]
    assignments = resources_of_type(redis, "Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments")
    by_user = {render(resource_body(a)["properties"]["user"]["objectId"]): a for a in assignments.values()}
    assert set(by_user) == {"appPrincipalId", "userPrincipalId"}
    for assignment in by_user.values():
        body = resource_body(assignment)
        assert body["parent"] == "database"
        assert body["properties"]["accessPolicyName"] == "default"
        assert render(body["name"]).startswith("uniqueString("), "assignment names allow letters and digits only"
    assert resource_condition(by_user["appPrincipalId"]) is None
    assert resource_condition(by_user["userPrincipalId"]) == "!empty(userPrincipalId)"
    main_redis = _module_params(templates["main.bicep"], "redis")
    assert render(main_redis["appPrincipalId"]) == "apiIdentity.outputs.principalId"
    assert main_redis["userPrincipalId"] == "principalId"


@pytest.mark.parametrize(
    ("policy", "cluster_client"), [("OSSCluster", "true"), ("EnterpriseCluster", "false"), ("NoCluster", "false")]
)
def test_clustering_policy_sets_valkey_cluster(
    templates: dict[str, dict[str, Any]], policy: str, cluster_client: str
) -> None:
    output = templates["app/redis.bicep"]["outputs"]["valkeyCluster"]["value"]["operator"]
    assert output["type"] == "conditional"
    condition = output["operands"]["condition"]["operator"]
    assert condition["type"] == "equals" and condition["operands"]["operand_1"] == "clusteringPolicy"
    chosen = "true_value" if policy == condition["operands"]["operand_2"] else "false_value"
    assert output["operands"][chosen] == cluster_client


# --- monitoring ------------------------------------------------------------------------------------


def test_application_insights_takes_only_entra_authenticated_telemetry(templates: dict[str, dict[str, Any]]) -> None:
    monitoring = templates["app/monitoring.bicep"]
    insights = resource_body(only_resource(monitoring, "Microsoft.Insights/components"))["properties"]
    assert insights["DisableLocalAuth"] is True
    assert render(insights["WorkspaceResourceId"]) == "logAnalytics.outputs.resourceId"
    assert monitoring["modules"]["logAnalytics"]["detail"]["path"] == "avm/res/operational-insights/workspace"
    assert render(monitoring["outputs"]["applicationInsightsConnectionString"]["value"]) == (
        "applicationInsights.properties.ConnectionString"
    )


# --- roles -----------------------------------------------------------------------------------------


def test_app_identity_holds_exactly_its_data_roles(templates: dict[str, dict[str, Any]]) -> None:
    app_roles = {
        (assignment["file"], role_id, assignment["scope"])
        for assignment in _role_assignments(templates)
        if assignment["principal"] == "appPrincipalId"
        for role_id in assignment["role_ids"]
    }
    assert app_roles == {
        ("app/rbac.bicep", ROLE["Storage Blob Data Owner"], "storageAccount"),
        ("app/rbac.bicep", ROLE["Storage Queue Data Contributor"], "storageAccount"),
        ("app/rbac.bicep", ROLE["Storage Table Data Contributor"], "storageAccount"),
        ("app/rbac.bicep", ROLE["Monitoring Metrics Publisher"], "applicationInsights"),
        ("app/openai.bicep", ROLE["Cognitive Services OpenAI User"], "account"),
        ("app/durable-task-scheduler.bicep", ROLE["Durable Task Data Contributor"], "scheduler"),
    }


def test_role_assignments_name_their_principal_type_and_are_idempotent(templates: dict[str, dict[str, Any]]) -> None:
    assignments = _role_assignments(templates)
    assert assignments
    for assignment in assignments:
        if assignment["principal"] == "appPrincipalId":
            assert assignment["principal_type"] == "ServicePrincipal", assignment["name"]
            assert assignment["condition"] is None, assignment["name"]
        else:
            assert assignment["principal"] == "userPrincipalId", assignment["name"]
            assert assignment["principal_type"] == "userPrincipalType", assignment["name"]
    for file, template in templates.items():
        for name, resource in resources_of_type(template, "Microsoft.Authorization/roleAssignments").items():
            assert render(resource_body(resource)["name"]).startswith("guid("), f"{file}:{name}"


def test_deploying_user_gets_the_same_data_access_only_when_named(templates: dict[str, dict[str, Any]]) -> None:
    user_roles = {
        role_id
        for assignment in _role_assignments(templates)
        if assignment["principal"] == "userPrincipalId"
        for role_id in assignment["role_ids"]
    }
    assert user_roles == {
        ROLE["Storage Blob Data Owner"],
        ROLE["Storage Queue Data Contributor"],
        ROLE["Storage Table Data Contributor"],
        ROLE["Cognitive Services OpenAI User"],
        ROLE["Durable Task Data Contributor"],
    }
    rbac = templates["app/rbac.bicep"]
    assert render(rbac["variables"]["userStorageRoleIds"]["value"]) == "empty(userPrincipalId) ? [] : storageRoleIds"
    main = templates["main.bicep"]
    for module in ("rbac", "openAi", "durableTaskScheduler"):
        assert _module_params(main, module)["userPrincipalId"] == "principalId", module
        assert _module_params(main, module)["userPrincipalType"] == "principalType", module


# --- optional parts ----------------------------------------------------------------------------------


def test_azure_openai_has_local_auth_off_and_one_chat_deployment(templates: dict[str, dict[str, Any]]) -> None:
    openai = templates["app/openai.bicep"]
    account = resource_body(only_resource(openai, "Microsoft.CognitiveServices/accounts"))
    assert account["kind"] == "OpenAI"
    assert account["properties"]["disableLocalAuth"] is True
    assert account["properties"]["customSubDomainName"] == "name", "Entra ID tokens need a custom subdomain"
    deployment = resource_body(only_resource(openai, "Microsoft.CognitiveServices/accounts/deployments"))
    assert deployment["sku"] == {"name": "deploymentSku", "capacity": "deploymentCapacity"}
    assert deployment["properties"]["model"] == {"format": "OpenAI", "name": "modelName", "version": "modelVersion"}
    main = templates["main.bicep"]
    assert resource_condition(main["modules"]["openAi"]) == "openAiEnabled"
    params = _module_params(main, "openAi")
    assert (params["modelName"], params["modelVersion"], params["deploymentCapacity"]) == (
        "openAiModelName",
        "openAiModelVersion",
        "openAiDeploymentCapacity",
    )


def test_durable_task_scheduler_is_optional_with_one_task_hub(templates: dict[str, dict[str, Any]]) -> None:
    dts = templates["app/durable-task-scheduler.bicep"]
    scheduler = resource_body(only_resource(dts, "Microsoft.DurableTask/schedulers"))
    assert scheduler["properties"]["ipAllowlist"], "an empty allow list denies every caller"
    hub = resource_body(only_resource(dts, "Microsoft.DurableTask/schedulers/taskHubs"))
    assert (hub["parent"], hub["name"]) == ("scheduler", "taskHubName")
    assert render(dts["outputs"]["endpoint"]["value"]) == "scheduler.properties.endpoint"
    assert resource_condition(templates["main.bicep"]["modules"]["durableTaskScheduler"]) == (
        "durableTaskSchedulerEnabled"
    )


def test_vnet_option_integrates_the_app_and_adds_private_endpoints(templates: dict[str, dict[str, Any]]) -> None:
    main = templates["main.bicep"]
    assert resource_condition(main["modules"]["vnet"]) == "vnetEnabled"
    assert resource_condition(main["modules"]["privateEndpoints"]) == "vnetEnabled"
    assert render(_module_params(main, "api")["virtualNetworkSubnetId"]) == "vnetEnabled ? vnet.outputs.appSubnetId : "
    vnet = resource_body(only_resource(templates["app/vnet.bicep"], "Microsoft.Network/virtualNetworks"))
    delegations = [
        delegation["properties"]["serviceName"]
        for subnet in vnet["properties"]["subnets"]
        for delegation in subnet["properties"].get("delegations", [])
    ]
    assert delegations == ["Microsoft.App/environments"], "Flex Consumption integrates through this delegation"
    endpoints = templates["app/private-endpoints.bicep"]
    groups = []
    for resource in resources_of_type(endpoints, "Microsoft.Network/privateEndpoints").values():
        connection = resource_body(resource)["properties"]["privateLinkServiceConnections"][0]["properties"]
        groups.append((render(connection["privateLinkServiceId"]), connection["groupIds"]))
    assert ("storageAccountId", ["service"]) in groups
    assert ("redisId", ["redisEnterprise"]) in groups
    assert endpoints["variables"]["storageServices"]["value"] == ["blob", "queue", "table"]
    zones = {
        render(resource_body(z)["name"])
        for z in resources_of_type(endpoints, "Microsoft.Network/privateDnsZones").values()
    }
    assert zones == {"privatelink.${service}.${environment().suffixes.storage}", "privatelink.redis.azure.net"}


# --- outputs, parameters file, azure.yaml, CI --------------------------------------------------------


def test_main_outputs_what_azd_uses(templates: dict[str, dict[str, Any]]) -> None:
    outputs = templates["main.bicep"]["outputs"]
    assert set(AZD_OUTPUTS) <= set(outputs)
    assert render(outputs["AZURE_TENANT_ID"]["value"]) == "tenant().tenantId"
    assert render(outputs["SERVICE_API_NAME"]["value"]) == "api.outputs.name"
    assert render(outputs["AZURE_FUNCTION_NAME"]["value"]) == "api.outputs.name"
    assert render(outputs["SERVICE_API_URI"]["value"]) == "api.outputs.uri"
    # The connection string itself, not the component's name.
    assert render(outputs["APPLICATIONINSIGHTS_CONNECTION_STRING"]["value"]) == (
        "monitoring.outputs.applicationInsightsConnectionString"
    )
    assert templates["app/api.bicep"]["outputs"]["uri"]["value"] == "https://${functionApp.properties.defaultHostName}"


def test_parameters_file_maps_azd_environment_variables(templates: dict[str, dict[str, Any]]) -> None:
    declared = templates["main.bicep"]["parameters"]
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(mapped) <= set(declared), f"unknown parameters {sorted(set(mapped) - set(declared))}"
    required = {name for name, spec in declared.items() if spec["default"] is None}
    assert required <= set(mapped)
    assert mapped["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert mapped["location"]["value"] == "${AZURE_LOCATION}"
    assert mapped["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    for name, entry in mapped.items():
        assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*(=[^}]*)?\}", entry["value"]), f"{name}: {entry['value']}"
        default = entry["value"].partition("=")[2].rstrip("}")
        allowed = decorator(declared[name], "allowed")
        if "=" in entry["value"] and allowed:
            assert default in [str(value) for value in allowed], f"{name} defaults to {default}"


def test_the_docs_give_the_azd_commands_and_every_azd_variable() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "## Deploy to Azure" in readme
    readme_section = readme.split("## Deploy to Azure", 1)[1].split("\n## ", 1)[0]
    for command in ("azd auth login", "azd up", "azd down --purge"):
        assert command in readme_section, command
    # The parameters live in docs/deploy.md, which the README's deploy section links to.
    assert "(docs/deploy.md)" in readme_section
    section = (REPO_ROOT / "docs" / "deploy.md").read_text()
    for command in ("azd auth login", "azd up", "azd down --purge"):
        assert command in section, command
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    variables = {re.match(r"\$\{([A-Z0-9_]+)", entry["value"]).group(1) for entry in mapped.values()}
    automatic = {
        "AZURE_ENV_NAME",
        "AZURE_LOCATION",
        "AZURE_PRINCIPAL_ID",
        "AZURE_PRINCIPAL_TYPE",
        "AZURE_RESOURCE_GROUP",
    }
    undocumented = sorted(name for name in variables - automatic if name not in section)
    assert undocumented == []


def test_azure_yaml_deploys_the_repository_root_as_the_api_function() -> None:
    manifest = yaml.safe_load((REPO_ROOT / "azure.yaml").read_text())
    assert manifest["services"] == {"api": {"project": ".", "language": "python", "host": "function"}}
    assert (REPO_ROOT / "requirements.txt").is_file(), "the deployed project installs requirements.txt"


def test_funcignore_keeps_development_files_out_of_the_package() -> None:
    patterns = {
        line.strip()
        for line in (REPO_ROOT / ".funcignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"tests/", "bench/", "infra/", "devhost/", ".venv/", ".venv-checkov/", "local.settings.json"} <= patterns
    # What the app needs at run time: its entry point, host.json, its requirements, the packages
    # function_app.py imports from the repository, and the pages it serves.
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(ast.parse((REPO_ROOT / "function_app.py").read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    local_packages = {f"{name}/" for name in imported if (REPO_ROOT / name).is_dir()}
    assert "valkey_buffer/" in local_packages
    pages = {"static/chat.html", "static/workflow.html"}
    for shipped in {"function_app.py", "host.json", "requirements.txt"} | pages | local_packages:
        assert not any(fnmatch.fnmatch(shipped, pattern) or shipped.startswith(pattern) for pattern in patterns), (
            f"{shipped} would be left out of the deployment package"
        )


def test_ci_runs_checkov_from_its_own_virtual_environment() -> None:
    pins = [line for line in (REPO_ROOT / "requirements-checkov.txt").read_text().splitlines() if line.strip()]
    assert [line for line in pins if not line.startswith("#")] and all(
        re.fullmatch(r"checkov==\d+\.\d+\.\d+", line) for line in pins if not line.startswith("#")
    )
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert ".venv-checkov/bin/pip install" in ci and "-r requirements-checkov.txt" in ci
    scan = re.search(r"^\s*\.venv-checkov/bin/checkov .*$", ci, re.MULTILINE)
    assert scan, "CI runs checkov"
    for flag in ("--framework bicep", "--skip-download", "-d infra"):
        assert flag in scan.group(0)
    assert ci.index(scan.group(0)) < ci.rindex("-m pytest"), "the scan runs before the tests"
