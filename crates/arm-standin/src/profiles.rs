//! How each resource type behaves, as data taken from recorded ARM traffic and ARM's
//! documentation (`shared/ref/arm.md`): which api-versions a namespace accepts, how PUT and
//! DELETE complete (synchronously, `Azure-AsyncOperation`, `Location`, `provisioningState`),
//! how long they take, what ARM rewrites in answers and which properties it never returns.

/// How a PUT completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PutStyle {
    /// 201 on create, 200 on replace, final at once (resource groups, identities, vaults).
    Sync,
    /// 200 even on create, final at once (Log Analytics workspaces).
    Sync200,
    /// 201/200 with `Azure-AsyncOperation` and `provisioningState: InProgress` (Container
    /// Apps, Front Door).
    AsyncOperation,
    /// Create: 202 with `Location` and no body, invisible until done, the last poll answers
    /// the resource; replace: 200 at once (storage accounts).
    LocationCreate,
    /// 202 with both `Azure-AsyncOperation` and `Location`, a small operation body
    /// (PostgreSQL flexible servers and their children).
    Both,
    /// 201/200 with a non-terminal `provisioningState` and no header (Redis).
    Provisioning,
}

/// How a DELETE completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeleteStyle {
    /// 200 at once.
    Sync,
    /// 202 with `Location`; polls answer 202, then `final_status` (200 for resource groups,
    /// 204 for Container Apps).
    Location { final_status: u16 },
    /// 202 with `Azure-AsyncOperation` and `Location`.
    AsyncOperation,
}

/// What ARM does to ids in answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdCase {
    /// As the caller wrote it.
    AsSent,
    /// The type segments in lower case (`…/Microsoft.App/containerapps/…`).
    LowerTypes,
    /// All of it in lower case (Log Analytics).
    Lower,
}

/// Where a type's operation URLs live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpUrls {
    /// `/subscriptions/{s}/operationresults/{id}` (resource groups).
    Subscription,
    /// `/subscriptions/{s}/providers/{ns}/locations/{loc}/{status}/{id}` and `…/{result}/{id}`,
    /// with extra query parameters on the status URL.
    Regional {
        status: &'static str,
        status_query: &'static str,
        result: &'static str,
        result_query: &'static str,
    },
    /// `/subscriptions/{s}/resourcegroups/{rg}/providers/{ns}/operationresults/{id}` (CDN).
    Group,
}

/// One resource type's behaviour.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Profile {
    /// The type as ARM spells it in answers.
    pub(crate) type_name: &'static str,
    pub(crate) put: PutStyle,
    pub(crate) delete: DeleteStyle,
    pub(crate) urls: OpUrls,
    /// `Retry-After` of its long-running answers, seconds.
    pub(crate) retry_after: u64,
    /// How long a create or replace takes, seconds (scaled by `--time-scale`).
    pub(crate) put_secs: u64,
    /// How long a delete takes, seconds (scaled).
    pub(crate) delete_secs: u64,
    /// The `provisioningState` while a PUT runs.
    pub(crate) running_state: &'static str,
    /// Whether answers carry the location's display name (`East US`).
    pub(crate) display_location: bool,
    pub(crate) id_case: IdCase,
    /// Tracked resources need a `location`.
    pub(crate) tracked: bool,
    /// Write-only properties, never in answers: dotted paths, `[]` for every array item.
    pub(crate) write_only: &'static [&'static str],
}

const GENERIC: Profile = Profile {
    type_name: "",
    put: PutStyle::Sync,
    delete: DeleteStyle::Sync,
    urls: OpUrls::Regional {
        status: "operationStatuses",
        status_query: "",
        result: "operationResults",
        result_query: "",
    },
    retry_after: 10,
    put_secs: 0,
    delete_secs: 0,
    running_state: "Accepted",
    display_location: false,
    id_case: IdCase::AsSent,
    tracked: false,
    write_only: &[],
};

const APP_URLS: OpUrls = OpUrls::Regional {
    status: "containerappOperationStatuses",
    status_query: "azureAsyncOperation=true",
    result: "containerappOperationResults",
    result_query: "",
};

const POSTGRES_URLS: OpUrls = OpUrls::Regional {
    status: "azureAsyncOperation",
    status_query: "",
    result: "operationResults",
    result_query: "",
};

const POSTGRES_CHILD: Profile = Profile {
    type_name: "",
    put: PutStyle::Both,
    delete: DeleteStyle::AsyncOperation,
    urls: POSTGRES_URLS,
    retry_after: 10,
    put_secs: 20,
    delete_secs: 20,
    running_state: "InProgress",
    ..GENERIC
};

const CDN: Profile = Profile {
    type_name: "",
    put: PutStyle::AsyncOperation,
    delete: DeleteStyle::AsyncOperation,
    urls: OpUrls::Group,
    retry_after: 10,
    put_secs: 30,
    delete_secs: 30,
    running_state: "Creating",
    ..GENERIC
};

/// Every profile: lower-case full type → behaviour.
const PROFILES: &[(&str, Profile)] = &[
    (
        "microsoft.resources/resourcegroups",
        Profile {
            type_name: "Microsoft.Resources/resourceGroups",
            delete: DeleteStyle::Location { final_status: 200 },
            urls: OpUrls::Subscription,
            retry_after: 15,
            delete_secs: 30,
            tracked: true,
            ..GENERIC
        },
    ),
    (
        "microsoft.app/containerapps",
        Profile {
            type_name: "Microsoft.App/containerApps",
            put: PutStyle::AsyncOperation,
            delete: DeleteStyle::Location { final_status: 204 },
            urls: APP_URLS,
            retry_after: 5,
            put_secs: 60,
            delete_secs: 20,
            running_state: "InProgress",
            display_location: true,
            id_case: IdCase::LowerTypes,
            tracked: true,
            write_only: &["properties.configuration.secrets[].value"],
        },
    ),
    (
        "microsoft.app/managedenvironments",
        Profile {
            type_name: "Microsoft.App/managedEnvironments",
            put: PutStyle::AsyncOperation,
            delete: DeleteStyle::Location { final_status: 204 },
            urls: OpUrls::Regional {
                status: "managedEnvironmentOperationStatuses",
                status_query: "azureAsyncOperation=true",
                result: "managedEnvironmentOperationResults",
                result_query: "",
            },
            retry_after: 5,
            put_secs: 120,
            delete_secs: 60,
            running_state: "InProgress",
            display_location: true,
            id_case: IdCase::LowerTypes,
            tracked: true,
            write_only: &["properties.appLogsConfiguration.logAnalyticsConfiguration.sharedKey"],
        },
    ),
    (
        "microsoft.storage/storageaccounts",
        Profile {
            type_name: "Microsoft.Storage/storageAccounts",
            put: PutStyle::LocationCreate,
            urls: OpUrls::Regional {
                status: "asyncoperations",
                status_query: "monitor=true",
                result: "asyncoperations",
                result_query: "monitor=true",
            },
            retry_after: 17,
            put_secs: 30,
            tracked: true,
            ..GENERIC
        },
    ),
    (
        "microsoft.storage/storageaccounts/blobservices",
        Profile {
            type_name: "Microsoft.Storage/storageAccounts/blobServices",
            ..GENERIC
        },
    ),
    (
        "microsoft.storage/storageaccounts/blobservices/containers",
        Profile {
            type_name: "Microsoft.Storage/storageAccounts/blobServices/containers",
            ..GENERIC
        },
    ),
    (
        "microsoft.storage/storageaccounts/managementpolicies",
        Profile {
            type_name: "Microsoft.Storage/storageAccounts/managementPolicies",
            ..GENERIC
        },
    ),
    (
        "microsoft.operationalinsights/workspaces",
        Profile {
            type_name: "Microsoft.OperationalInsights/workspaces",
            put: PutStyle::Sync200,
            id_case: IdCase::Lower,
            tracked: true,
            ..GENERIC
        },
    ),
    (
        "microsoft.dbforpostgresql/flexibleservers",
        Profile {
            type_name: "Microsoft.DBforPostgreSQL/flexibleServers",
            put_secs: 300,
            delete_secs: 60,
            tracked: true,
            write_only: &["properties.administratorLoginPassword"],
            ..POSTGRES_CHILD
        },
    ),
    (
        "microsoft.dbforpostgresql/flexibleservers/databases",
        Profile {
            type_name: "Microsoft.DBforPostgreSQL/flexibleServers/databases",
            ..POSTGRES_CHILD
        },
    ),
    (
        "microsoft.dbforpostgresql/flexibleservers/firewallrules",
        Profile {
            type_name: "Microsoft.DBforPostgreSQL/flexibleServers/firewallRules",
            ..POSTGRES_CHILD
        },
    ),
    (
        "microsoft.dbforpostgresql/flexibleservers/configurations",
        Profile {
            type_name: "Microsoft.DBforPostgreSQL/flexibleServers/configurations",
            ..POSTGRES_CHILD
        },
    ),
    (
        "microsoft.keyvault/vaults",
        Profile {
            type_name: "Microsoft.KeyVault/vaults",
            tracked: true,
            ..GENERIC
        },
    ),
    (
        "microsoft.keyvault/vaults/secrets",
        Profile {
            type_name: "Microsoft.KeyVault/vaults/secrets",
            write_only: &["properties.value"],
            ..GENERIC
        },
    ),
    (
        "microsoft.cache/redis",
        Profile {
            type_name: "Microsoft.Cache/Redis",
            put: PutStyle::Provisioning,
            delete: DeleteStyle::Location { final_status: 200 },
            retry_after: 15,
            put_secs: 300,
            delete_secs: 60,
            running_state: "Creating",
            tracked: true,
            ..GENERIC
        },
    ),
    (
        "microsoft.cdn/profiles",
        Profile {
            type_name: "Microsoft.Cdn/profiles",
            display_location: true,
            tracked: true,
            ..CDN
        },
    ),
    (
        "microsoft.cdn/profiles/afdendpoints",
        Profile {
            type_name: "Microsoft.Cdn/profiles/afdEndpoints",
            display_location: true,
            tracked: true,
            ..CDN
        },
    ),
    (
        "microsoft.cdn/profiles/afdendpoints/routes",
        Profile {
            type_name: "Microsoft.Cdn/profiles/afdEndpoints/routes",
            ..CDN
        },
    ),
    (
        "microsoft.cdn/profiles/origingroups",
        Profile {
            type_name: "Microsoft.Cdn/profiles/originGroups",
            ..CDN
        },
    ),
    (
        "microsoft.cdn/profiles/origingroups/origins",
        Profile {
            type_name: "Microsoft.Cdn/profiles/originGroups/origins",
            ..CDN
        },
    ),
    (
        "microsoft.cdn/profiles/customdomains",
        Profile {
            type_name: "Microsoft.Cdn/profiles/customDomains",
            ..CDN
        },
    ),
    (
        "microsoft.managedidentity/userassignedidentities",
        Profile {
            type_name: "Microsoft.ManagedIdentity/userAssignedIdentities",
            tracked: true,
            ..GENERIC
        },
    ),
    (
        "microsoft.authorization/roleassignments",
        Profile {
            type_name: "Microsoft.Authorization/roleAssignments",
            ..GENERIC
        },
    ),
    (
        "microsoft.insights/actiongroups",
        Profile {
            type_name: "Microsoft.Insights/actionGroups",
            tracked: true,
            ..GENERIC
        },
    ),
    (
        "microsoft.insights/metricalerts",
        Profile {
            type_name: "Microsoft.Insights/metricAlerts",
            tracked: true,
            ..GENERIC
        },
    ),
];

/// The api-versions each namespace accepts: what the generated Bicep and the recordings use,
/// and the versions before them.
const API_VERSIONS: &[(&str, &[&str])] = &[
    (
        "microsoft.resources",
        &[
            "2025-04-01",
            "2025-03-01",
            "2024-11-01",
            "2024-03-01",
            "2022-09-01",
            "2021-04-01",
            "2021-01-01",
        ],
    ),
    (
        "microsoft.app",
        &[
            "2025-10-02-preview",
            "2025-07-01",
            "2025-01-01",
            "2024-03-01",
            "2023-05-01",
            "2022-10-01",
            "2022-06-01-preview",
            "2022-03-01",
        ],
    ),
    (
        "microsoft.authorization",
        &["2022-04-01", "2020-04-01-preview"],
    ),
    (
        "microsoft.cache",
        &[
            "2025-08-01-preview",
            "2024-11-01",
            "2024-03-01",
            "2023-08-01",
        ],
    ),
    (
        "microsoft.cdn",
        &[
            "2025-09-01-preview",
            "2025-06-01",
            "2025-04-15",
            "2024-09-01",
        ],
    ),
    (
        "microsoft.dbforpostgresql",
        &[
            "2026-01-01-preview",
            "2025-08-01",
            "2024-08-01",
            "2020-02-14-preview",
        ],
    ),
    (
        "microsoft.insights",
        &["2023-01-01", "2022-06-01", "2018-03-01"],
    ),
    (
        "microsoft.keyvault",
        &[
            "2026-04-01",
            "2026-02-01",
            "2025-05-01",
            "2024-11-01",
            "2023-07-01",
        ],
    ),
    ("microsoft.managedidentity", &["2024-11-30", "2023-01-31"]),
    (
        "microsoft.operationalinsights",
        &["2026-03-01", "2025-07-01", "2025-02-01", "2022-10-01"],
    ),
    (
        "microsoft.storage",
        &[
            "2026-09-01",
            "2026-06-01",
            "2026-04-01",
            "2025-08-01",
            "2025-06-01",
            "2025-01-01",
            "2022-09-01",
        ],
    ),
];

/// The behaviour of a type (its lower-case full type); unknown types of a known namespace
/// behave like plain synchronous resources.
pub(crate) fn profile(type_key: &str) -> Profile {
    PROFILES
        .iter()
        .find(|(key, _)| *key == type_key)
        .map(|(_, p)| *p)
        .unwrap_or(GENERIC)
}

/// The lower-case full types this stand-in has profiles for, in one namespace.
pub(crate) fn types_of(namespace: &str) -> impl Iterator<Item = &'static str> + '_ {
    let prefix = format!("{}/", namespace.to_ascii_lowercase());
    PROFILES
        .iter()
        .map(|(_, p)| p.type_name)
        .filter(move |name| name.to_ascii_lowercase().starts_with(&prefix))
}

/// The api-versions a namespace accepts; None for a namespace this stand-in does not know.
pub(crate) fn api_versions(namespace: &str) -> Option<&'static [&'static str]> {
    let namespace = namespace.to_ascii_lowercase();
    API_VERSIONS
        .iter()
        .find(|(ns, _)| *ns == namespace)
        .map(|(_, versions)| *versions)
}

/// The display name ARM answers for a location (`eastus` → `East US`); unknown names as they
/// are.
pub(crate) fn display_location(location: &str) -> String {
    const NAMES: &[(&str, &str)] = &[
        ("global", "Global"),
        ("eastus", "East US"),
        ("eastus2", "East US 2"),
        ("westus", "West US"),
        ("westus2", "West US 2"),
        ("westus3", "West US 3"),
        ("centralus", "Central US"),
        ("canadacentral", "Canada Central"),
        ("northeurope", "North Europe"),
        ("westeurope", "West Europe"),
        ("germanywestcentral", "Germany West Central"),
        ("swedencentral", "Sweden Central"),
        ("switzerlandnorth", "Switzerland North"),
        ("francecentral", "France Central"),
        ("uksouth", "UK South"),
        ("southeastasia", "Southeast Asia"),
    ];
    let key: String = location
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    NAMES
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, display)| (*display).to_owned())
        .unwrap_or_else(|| location.to_owned())
}

/// A location in its canonical short form (`East US` → `eastus`), for comparisons.
pub(crate) fn normal_location(location: &str) -> String {
    location
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_types_have_their_recorded_styles() {
        assert_eq!(
            profile("microsoft.storage/storageaccounts").put,
            PutStyle::LocationCreate
        );
        assert_eq!(
            profile("microsoft.app/containerapps").put,
            PutStyle::AsyncOperation
        );
        assert_eq!(
            profile("microsoft.app/containerapps").delete,
            DeleteStyle::Location { final_status: 204 }
        );
        assert_eq!(
            profile("microsoft.operationalinsights/workspaces").put,
            PutStyle::Sync200
        );
        assert_eq!(
            profile("microsoft.resources/resourcegroups").delete,
            DeleteStyle::Location { final_status: 200 }
        );
        assert_eq!(profile("microsoft.unknown/things").put, PutStyle::Sync);
    }

    #[test]
    fn locations_get_display_names() {
        assert_eq!(display_location("eastus"), "East US");
        assert_eq!(display_location("West Europe"), "West Europe");
        assert_eq!(display_location("mars"), "mars");
        assert_eq!(normal_location("East US"), "eastus");
    }

    #[test]
    fn every_profiled_namespace_has_api_versions() {
        for (key, _) in PROFILES {
            let ns = key.split('/').next().unwrap();
            assert!(api_versions(ns).is_some(), "{ns}");
        }
    }
}
