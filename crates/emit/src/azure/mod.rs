//! The Azure inventory: every Azure resource of an environment, as data, built once from the
//! model ([`inventory`]). Each [`ArmResource`] has its ARM type, api-version, name, parent or
//! scope, id, body (`location`, `tags`, `sku`, `properties`…) and dependencies; values that
//! ARM only knows at deployment time (another resource's `principalId`, a workspace's shared
//! key) and secrets are symbolic [`Value`]s, never literals.
//!
//! Three consumers read the same inventory: the Bicep emitter renders it (`crate::bicep`), the
//! Azure target turns it into the graph's and the plan's `azure.*` resources
//! (`crate::targets::azure`), and the engine's ARM provider sends its bodies, resolving the
//! symbolic values at apply time. So what the Bicep declares and what the provider sends are
//! one thing.
//!
//! Not here: the Bicep text (`crate::bicep`), plan attributes (`crate::targets::azure`), or
//! any ARM request (`kombiform_engine::providers::azure`). Pure.

pub(crate) mod build;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

pub use build::{inventory, ROLE_KEY_VAULT_SECRETS_USER};

/// A value in a resource body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A decimal number, as written (`0.5`): Bicep has no decimals, so it renders `json('0.5')`.
    Decimal(String),
    /// A string.
    Str(String),
    /// An array.
    Array(Vec<Value>),
    /// An object, keys in the order they are rendered.
    Object(Vec<(String, Value)>),
    /// Strings and references joined (`'${vault.properties.vaultUri}secrets/x'`).
    Concat(Vec<Value>),
    /// Another resource's id (known before deployment).
    Id(Target),
    /// A property of another resource ARM sets at deployment (`properties.principalId`).
    Prop {
        /// The resource.
        of: Target,
        /// Dotted path in its body.
        path: String,
    },
    /// The primary shared key of a Log Analytics workspace (`listKeys()`): write-only.
    SharedKey(Target),
    /// The first access key of a storage account (`listKeys().keys[0].value`): write-only.
    StorageKey(Target),
    /// A secret's value: write-only, never in a file, a plan or state.
    Secret(SecretSource),
    /// A field of the current row of a resource family (a loop in Bicep).
    Row(String),
}

/// Another resource a value refers to: its address and what ARM needs to read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The address (`azure.identity.kfy-prod-id`).
    pub address: String,
    /// Its ARM id.
    pub id: String,
    /// The api-version to read it with.
    pub api_version: String,
}

/// Where a secret's value comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretSource {
    /// A Key Vault secret of the platform's vault (its name).
    KeyVault(String),
    /// An environment variable of whoever deploys.
    Env(String),
}

impl Value {
    /// A string.
    pub fn s(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    /// An object from pairs.
    pub fn obj<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// A string array.
    pub fn strs<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Value {
        Value::Array(items.into_iter().map(|s| Value::s(s.as_ref())).collect())
    }

    /// Whether ARM never returns this value (a secret or a key).
    pub fn write_only(&self) -> bool {
        matches!(
            self,
            Value::Secret(_) | Value::SharedKey(_) | Value::StorageKey(_)
        )
    }

    /// Every resource this value refers to.
    pub fn refs<'a>(&'a self, out: &mut Vec<&'a Target>) {
        match self {
            Value::Array(items) | Value::Concat(items) => {
                items.iter().for_each(|v| v.refs(out));
            }
            Value::Object(pairs) => pairs.iter().for_each(|(_, v)| v.refs(out)),
            Value::Id(t)
            | Value::SharedKey(t)
            | Value::StorageKey(t)
            | Value::Prop { of: t, .. } => out.push(t),
            _ => {}
        }
    }

    /// The value with `Row` fields replaced from `row`.
    pub fn with_row(&self, row: &Map<String, Json>) -> Value {
        match self {
            Value::Row(field) => match row.get(field) {
                Some(Json::String(s)) => Value::Str(s.clone()),
                Some(Json::Bool(b)) => Value::Bool(*b),
                Some(Json::Number(n)) => {
                    n.as_i64().map_or(Value::Decimal(n.to_string()), Value::Int)
                }
                _ => Value::Str(String::new()),
            },
            Value::Array(items) => Value::Array(items.iter().map(|v| v.with_row(row)).collect()),
            Value::Concat(items) => Value::Concat(items.iter().map(|v| v.with_row(row)).collect()),
            Value::Object(pairs) => Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.with_row(row)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// The value as JSON, each symbolic part answered by `resolve` (`None` leaves the key
    /// out of its object, or the item out of its array).
    pub fn to_json<E>(
        &self,
        resolve: &mut dyn FnMut(&Value) -> Result<Option<Json>, E>,
    ) -> Result<Option<Json>, E> {
        Ok(Some(match self {
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::from(*i),
            Value::Decimal(d) => match d.parse::<f64>().ok().and_then(serde_json::Number::from_f64)
            {
                Some(n) => Json::Number(n),
                None => Json::String(d.clone()),
            },
            Value::Str(s) => Json::String(s.clone()),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for v in items {
                    if let Some(j) = v.to_json(resolve)? {
                        out.push(j);
                    }
                }
                Json::Array(out)
            }
            Value::Object(pairs) => {
                let mut out = Map::new();
                for (k, v) in pairs {
                    if let Some(j) = v.to_json(resolve)? {
                        out.insert(k.clone(), j);
                    }
                }
                Json::Object(out)
            }
            Value::Concat(parts) => {
                let mut s = String::new();
                for p in parts {
                    match p.to_json(resolve)? {
                        Some(Json::String(t)) => s.push_str(&t),
                        Some(other) => s.push_str(&other.to_string()),
                        None => return Ok(None),
                    }
                }
                Json::String(s)
            }
            Value::Id(t) => Json::String(t.id.clone()),
            other => return resolve(other),
        }))
    }
}

/// What kind of thing an inventory resource is, beyond its ARM type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A resource like any other.
    Plain,
    /// The resource group everything lives in (not in the Bicep: it is the deployment's
    /// scope).
    ResourceGroup,
    /// A Key Vault secret kombiform generates (random) when it is missing: never read back,
    /// never rotated by a plan.
    GeneratedSecret,
    /// A Key Vault secret a person provides (`az keyvault secret set`, or `KV_*` in the
    /// environment of the apply).
    ProvidedSecret,
}

/// One Azure resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmResource {
    /// `azure.<short type>.<name>`.
    pub address: String,
    /// The Bicep symbol (`appKong`).
    pub symbol: String,
    /// The full ARM type (`Microsoft.App/containerApps`).
    pub type_: String,
    /// The api-version it is written and read with.
    pub api_version: String,
    /// Its own name (the last segment of its id).
    pub name: String,
    /// The address of its parent (nested resources: `Microsoft.Cdn/profiles/originGroups`).
    pub parent: Option<String>,
    /// The address of the resource it extends (role assignments on the vault).
    pub scope: Option<String>,
    /// The ARM id.
    pub id: String,
    /// The body ARM receives: `location`, `tags`, `sku`, `kind`, `identity`, `properties`.
    pub body: Value,
    /// Addresses it needs first (parents, references and ARM's hidden dependencies).
    pub depends_on: Vec<String>,
    /// What it is beyond its type.
    pub kind: Kind,
    /// Deleting it loses data (a database server, a vault, a tenant's instance).
    pub data_bearing: bool,
    /// The tenant it belongs to (dedicated instances).
    pub tenant: Option<String>,
    /// A comment for the Bicep.
    pub comment: Option<String>,
}

impl ArmResource {
    /// Dotted paths of the body whose values ARM never returns.
    pub fn write_only_paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect_write_only(&self.body, "", &mut out);
        out
    }

    /// Whether the Bicep declares it (the resource group is the deployment's scope; Key
    /// Vault secret values are never in a file).
    pub fn in_bicep(&self) -> bool {
        self.kind == Kind::Plain
    }
}

fn collect_write_only(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(pairs) => {
            for (k, v) in pairs {
                collect_write_only(v, &join(at, k), out);
            }
        }
        Value::Array(items) => {
            for v in items {
                collect_write_only(v, &format!("{at}[]"), out);
            }
        }
        v if v.write_only() && !out.iter().any(|p| p == at) => out.push(at.to_string()),
        _ => {}
    }
}

/// A dotted path joined: keys holding `.` or `/` are quoted (`identity.userAssignedIdentities["/subscriptions/…"]`).
pub fn join(at: &str, key: &str) -> String {
    let k = if key.contains(['.', '/', '[']) {
        format!("[{key:?}]")
    } else {
        key.to_string()
    };
    match (at.is_empty(), k.starts_with('[')) {
        (true, _) => k,
        (false, true) => format!("{at}{k}"),
        (false, false) => format!("{at}.{k}"),
    }
}

/// Resources deployed in a loop over rows (dedicated tenants' instances): one template, one
/// row of fields per instance. In Bicep a `for` loop in its own file; to the graph and the
/// provider, one resource per row ([`Family::members`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// The Bicep file (`tenants/bucket-003.bicep`), relative to the environment's `bicep/`.
    pub file: String,
    /// Bucket number and count, for the file's header.
    pub bucket: (usize, usize),
    /// The template: `name` and body use [`Value::Row`] fields.
    pub template: ArmResource,
    /// The rows: fields by name (`name`, `slug`…), plus the address and dependencies of the
    /// instance.
    pub rows: Vec<Row>,
    /// Resources of the main deployment the template refers to (declared `existing`).
    pub existing: Vec<String>,
}

/// One member of a [`Family`].
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Fields the template's [`Value::Row`]s read.
    pub fields: Map<String, Json>,
    /// The member's own resource (name, id, address, tenant), body from the template.
    pub resource: ArmResource,
}

impl Family {
    /// Every member as a resource of its own.
    pub fn members(&self) -> impl Iterator<Item = ArmResource> + '_ {
        self.rows.iter().map(|row| {
            let mut r = row.resource.clone();
            r.body = self.template.body.with_row(&row.fields);
            r
        })
    }
}

/// Every Azure resource of one environment.
#[derive(Clone, Debug, PartialEq)]
pub struct Inventory {
    /// The environment.
    pub env: String,
    /// Subscription id.
    pub subscription: String,
    /// Resource group name.
    pub resource_group: String,
    /// Region of every regional resource.
    pub location: String,
    /// Tags on every tracked resource.
    pub tags: Vec<(String, String)>,
    /// The vault kombiform keeps the platform's secrets in.
    pub key_vault: String,
    /// The resources of the main deployment (and the resource group, and vault secrets).
    pub resources: Vec<ArmResource>,
    /// Resources deployed in loops, one Bicep file each.
    pub families: Vec<Family>,
    /// Dedicated tenants without an instance (the `kombistack` service is off), for the Bicep.
    pub orphans: usize,
}

impl Inventory {
    /// Every resource, families expanded.
    pub fn all(&self) -> Vec<ArmResource> {
        let mut out = self.resources.clone();
        for f in &self.families {
            out.extend(f.members());
        }
        out
    }

    /// The resource at `address` (main deployment only).
    pub fn get(&self, address: &str) -> Option<&ArmResource> {
        self.resources.iter().find(|r| r.address == address)
    }

    /// The resource group's id.
    pub fn group_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.subscription, self.resource_group
        )
    }
}

/// The short type of an address (`Microsoft.App/containerApps` → `containerapp`).
pub fn short_type(type_: &str) -> Option<&'static str> {
    SHORT
        .iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(type_))
        .map(|(_, s)| *s)
}

/// The full type of a short one.
pub fn full_type(short: &str) -> Option<&'static str> {
    SHORT.iter().find(|(_, s)| *s == short).map(|(t, _)| *t)
}

/// ARM types and their address short names.
pub const SHORT: &[(&str, &str)] = &[
    ("Microsoft.Resources/resourceGroups", "resourcegroup"),
    ("Microsoft.OperationalInsights/workspaces", "loganalytics"),
    (
        "Microsoft.ManagedIdentity/userAssignedIdentities",
        "identity",
    ),
    ("Microsoft.KeyVault/vaults", "keyvault"),
    ("Microsoft.KeyVault/vaults/secrets", "kv-secret"),
    ("Microsoft.Authorization/roleAssignments", "role-assignment"),
    ("Microsoft.Storage/storageAccounts", "storage"),
    (
        "Microsoft.Storage/storageAccounts/blobServices",
        "storage-blobs",
    ),
    (
        "Microsoft.Storage/storageAccounts/blobServices/containers",
        "storage-container",
    ),
    (
        "Microsoft.Storage/storageAccounts/managementPolicies",
        "storage-policy",
    ),
    (
        "Microsoft.Storage/storageAccounts/fileServices",
        "storage-files",
    ),
    (
        "Microsoft.Storage/storageAccounts/fileServices/shares",
        "storage-share",
    ),
    (
        "Microsoft.App/managedEnvironments/storages",
        "containerenv-storage",
    ),
    ("Microsoft.App/managedEnvironments", "containerenv"),
    ("Microsoft.App/containerApps", "containerapp"),
    ("Microsoft.DBforPostgreSQL/flexibleServers", "postgres"),
    (
        "Microsoft.DBforPostgreSQL/flexibleServers/firewallRules",
        "postgres-firewall",
    ),
    (
        "Microsoft.DBforPostgreSQL/flexibleServers/databases",
        "postgres-database",
    ),
    ("Microsoft.Cache/redis", "redis"),
    ("Microsoft.Cdn/profiles", "frontdoor"),
    ("Microsoft.Cdn/profiles/afdEndpoints", "frontdoor-endpoint"),
    ("Microsoft.Cdn/profiles/customDomains", "frontdoor-domain"),
    (
        "Microsoft.Cdn/profiles/originGroups",
        "frontdoor-origingroup",
    ),
    (
        "Microsoft.Cdn/profiles/originGroups/origins",
        "frontdoor-origin",
    ),
    (
        "Microsoft.Cdn/profiles/afdEndpoints/routes",
        "frontdoor-route",
    ),
    ("Microsoft.Insights/actionGroups", "actiongroup"),
    ("Microsoft.Insights/metricAlerts", "alert"),
];

/// `azure.<short>.<name>`.
pub fn address(type_: &str, name: &str) -> String {
    let short = short_type(type_).unwrap_or("resource");
    format!("azure.{short}.{name}")
}

/// The body the ARM provider sends for `r` (PUT), its deployment-time values answered by
/// `resolve` (another resource's property, a key, a secret); a value answered `None` is left
/// out. The Bicep declares the same paths (a test holds them equal).
pub fn request_body<E>(
    r: &ArmResource,
    resolve: &mut dyn FnMut(&Value) -> Result<Option<Json>, E>,
) -> Result<Json, E> {
    Ok(r.body.to_json(resolve)?.unwrap_or(Json::Null))
}
