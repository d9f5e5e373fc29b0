//! Building the inventory from the model: one function per part of the platform (logs,
//! identity and vault, storage, Container Apps, PostgreSQL, Redis, Front Door, monitoring,
//! dedicated tenants), each adding resources with their bodies and dependencies.

use std::collections::BTreeSet;

use serde_json::{json, Map};
use sha2::{Digest, Sha256};

use super::{address, ArmResource, Family, Inventory, Kind, Row, SecretSource, Target, Value};
use crate::bicep::{self, API};
use kombiform_model::{
    naming, Access, Env, EnvValue, InstanceMode, Platform, Protocol, Scale, SecretRef, Service,
    Tenant, TenantStatus,
};

/// Built-in role "Key Vault Secrets User": read secret values, nothing else.
pub const ROLE_KEY_VAULT_SECRETS_USER: &str = "4633458b-17de-408a-b874-0445c86b69e6";

/// The inventory of `env`; None outside Azure.
pub fn inventory(env: Env<'_>) -> Option<Inventory> {
    let p = env.platform;
    let az = p.azure.as_ref()?;
    let mut b = Builder {
        p,
        inv: Inventory {
            env: p.name.clone(),
            subscription: az.subscription_id.clone(),
            resource_group: az.resource_group.clone(),
            location: az.location.clone(),
            tags: az
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            key_vault: naming::key_vault(p),
            resources: Vec::new(),
            families: Vec::new(),
            orphans: 0,
        },
    };
    b.resource_group();
    let logs = b.logs();
    let identity = b.identity();
    let vault = b.vault();
    let reader = b.role_assignment(&vault, &identity);
    let account = b.storage();
    let cae = b.container_env(&logs);
    let pb_storage = b.pocketbase_volume(&account, &cae);
    b.secrets(&vault);
    let pg = b.postgres();
    let redis = b.redis();
    let shared = Shared {
        cae,
        identity,
        vault,
        reader,
    };
    let apps = b.apps(&shared, &pg, &redis, pb_storage.as_ref());
    if let Some(fd) = &p.front_door {
        b.front_door(fd, &apps);
    }
    let kong = apps.first().map(|(_, t)| t.clone());
    if let Some(kong) = kong {
        b.monitoring(&kong, &pg);
    }
    b.tenants(env, &shared);
    let mut inv = b.inv;
    for r in &mut inv.resources {
        finish(r);
    }
    for f in &mut inv.families {
        finish(&mut f.template);
        for row in &mut f.rows {
            row.resource.depends_on.clone_from(&f.template.depends_on);
        }
    }
    Some(inv)
}

/// Adds what a resource's references, parent and scope imply to its dependencies.
fn finish(r: &mut ArmResource) {
    let mut deps: BTreeSet<String> = r.depends_on.iter().cloned().collect();
    let mut refs = Vec::new();
    r.body.refs(&mut refs);
    deps.extend(refs.into_iter().map(|t| t.address.clone()));
    deps.extend(r.parent.iter().cloned());
    deps.extend(r.scope.iter().cloned());
    deps.remove(&r.address);
    r.depends_on = deps.into_iter().collect();
}

/// What every Container App uses.
struct Shared {
    cae: Target,
    identity: Target,
    vault: Target,
    reader: Target,
}

struct Builder<'a> {
    p: &'a Platform,
    inv: Inventory,
}

fn target(r: &ArmResource) -> Target {
    Target {
        address: r.address.clone(),
        id: r.id.clone(),
        api_version: r.api_version.clone(),
    }
}

fn prop(of: &Target, path: &str) -> Value {
    Value::Prop {
        of: of.clone(),
        path: path.to_string(),
    }
}

impl Builder<'_> {
    fn group_address(&self) -> String {
        address(
            "Microsoft.Resources/resourceGroups",
            &self.inv.resource_group,
        )
    }

    fn new_resource(&self, type_: &str, api: &str, name: &str, symbol: &str) -> ArmResource {
        ArmResource {
            address: address(type_, name),
            symbol: symbol.to_string(),
            type_: type_.to_string(),
            api_version: api.to_string(),
            name: name.to_string(),
            parent: None,
            scope: None,
            id: String::new(),
            body: Value::Object(Vec::new()),
            depends_on: Vec::new(),
            kind: Kind::Plain,
            data_bearing: false,
            tenant: None,
            comment: None,
        }
    }

    /// A resource at the top of the resource group.
    fn top(&self, type_: &str, api: &str, name: &str, symbol: &str, body: Value) -> ArmResource {
        let mut r = self.new_resource(type_, api, name, symbol);
        r.id = format!("{}/providers/{type_}/{name}", self.inv.group_id());
        r.body = body;
        r.depends_on.push(self.group_address());
        r
    }

    /// A nested resource of `parent`.
    fn child(
        &self,
        parent: &Target,
        type_: &str,
        name: &str,
        symbol: &str,
        body: Value,
    ) -> ArmResource {
        let last = type_.rsplit('/').next().unwrap_or(type_);
        let mut r = self.new_resource(type_, &parent.api_version, name, symbol);
        r.id = format!("{}/{last}/{name}", parent.id);
        r.parent = Some(parent.address.clone());
        r.body = body;
        r
    }

    fn add(&mut self, r: ArmResource) -> Target {
        let t = target(&r);
        self.inv.resources.push(r);
        t
    }

    /// `location` and `tags` of a regional tracked resource, then `rest`.
    fn tracked(&self, rest: Vec<(&str, Value)>) -> Value {
        self.tracked_at(&self.inv.location.clone(), rest)
    }

    fn tracked_at(&self, location: &str, rest: Vec<(&str, Value)>) -> Value {
        let mut pairs = vec![
            ("location".to_string(), Value::s(location)),
            ("tags".to_string(), self.tags()),
        ];
        pairs.extend(rest.into_iter().map(|(k, v)| (k.to_string(), v)));
        Value::Object(pairs)
    }

    fn tags(&self) -> Value {
        Value::obj(self.inv.tags.iter().map(|(k, v)| (k.clone(), Value::s(v))))
    }

    fn resource_group(&mut self) {
        let name = self.inv.resource_group.clone();
        let mut r = self.new_resource(
            "Microsoft.Resources/resourceGroups",
            API.resource_groups,
            &name,
            "resourceGroup",
        );
        r.id = self.inv.group_id();
        r.body = self.tracked(Vec::new());
        r.kind = Kind::ResourceGroup;
        r.data_bearing = true;
        self.add(r);
    }

    fn logs(&mut self) -> Target {
        let az_retention = self.p.azure.as_ref().map_or(30, |a| a.log_retention_days);
        let body = self.tracked(vec![(
            "properties",
            Value::obj([
                ("sku", Value::obj([("name", Value::s("PerGB2018"))])),
                ("retentionInDays", Value::Int(az_retention.into())),
            ]),
        )]);
        let mut r = self.top(
            "Microsoft.OperationalInsights/workspaces",
            API.log_analytics,
            &naming::log_analytics(self.p),
            "logs",
            body,
        );
        r.comment = Some(
            "Log Analytics workspace: where the Container Apps environment sends logs.".into(),
        );
        self.add(r)
    }

    fn identity(&mut self) -> Target {
        let body = self.tracked(Vec::new());
        let mut r = self.top(
            "Microsoft.ManagedIdentity/userAssignedIdentities",
            API.identity,
            &naming::identity(self.p),
            "identity",
            body,
        );
        r.comment = Some("User-assigned managed identity: the Container Apps read Key Vault secrets as this identity.".into());
        self.add(r)
    }

    fn vault(&mut self) -> Target {
        let tenant = self.p.azure.as_ref().map_or("", |a| a.tenant_id.as_str());
        let body = self.tracked(vec![(
            "properties",
            Value::obj([
                ("tenantId", Value::s(tenant)),
                (
                    "sku",
                    Value::obj([("family", Value::s("A")), ("name", Value::s("standard"))]),
                ),
                ("enableRbacAuthorization", Value::Bool(true)),
                ("enabledForTemplateDeployment", Value::Bool(true)),
                ("enableSoftDelete", Value::Bool(true)),
                ("softDeleteRetentionInDays", Value::Int(90)),
                ("enablePurgeProtection", Value::Bool(true)),
            ]),
        )]);
        let mut r = self.top(
            "Microsoft.KeyVault/vaults",
            API.key_vault,
            &naming::key_vault(self.p),
            "vault",
            body,
        );
        r.data_bearing = true;
        r.comment = Some("Key Vault with RBAC authorization: every secret of the platform. kombiform generates the secrets it can (the PostgreSQL administrator password, internal tokens) and names the others.".into());
        self.add(r)
    }

    fn role_assignment(&mut self, vault: &Target, identity: &Target) -> Target {
        let role = format!(
            "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{ROLE_KEY_VAULT_SECRETS_USER}",
            self.inv.subscription
        );
        let name = stable_guid(&[&vault.id, &identity.id, &role]);
        let mut r = self.new_resource(
            "Microsoft.Authorization/roleAssignments",
            API.role_assignments,
            &name,
            "readSecrets",
        );
        r.address = address(
            "Microsoft.Authorization/roleAssignments",
            "key-vault-secrets-user",
        );
        r.id = format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/{name}",
            vault.id
        );
        r.scope = Some(vault.address.clone());
        r.body = Value::obj([(
            "properties",
            Value::obj([
                ("roleDefinitionId", Value::s(role)),
                ("principalId", prop(identity, "properties.principalId")),
                ("principalType", Value::s("ServicePrincipal")),
            ]),
        )]);
        r.comment = Some("Built-in role \"Key Vault Secrets User\" for the identity: read secret values, nothing else. The name is a GUID derived from the vault, the identity and the role.".into());
        self.add(r)
    }

    fn storage(&mut self) -> Target {
        let days = Value::Int(self.p.backup.blob_retention_days.clamp(1, 365).into());
        let body = self.tracked(vec![
            ("kind", Value::s("StorageV2")),
            ("sku", Value::obj([("name", Value::s("Standard_GRS"))])),
            (
                "properties",
                Value::obj([
                    ("accessTier", Value::s("Hot")),
                    ("minimumTlsVersion", Value::s("TLS1_2")),
                    ("supportsHttpsTrafficOnly", Value::Bool(true)),
                    ("allowBlobPublicAccess", Value::Bool(false)),
                ]),
            ),
        ]);
        let mut account = self.top(
            "Microsoft.Storage/storageAccounts",
            API.storage,
            &naming::storage_account(self.p),
            "storage",
            body,
        );
        account.data_bearing = true;
        account.comment = Some("Storage account for kombiform state and PocketBase backups: blob versioning, soft delete, and a lifecycle rule removing old versions after the retention period.".into());
        let account = self.add(account);
        let policy =
            |days: &Value| Value::obj([("enabled", Value::Bool(true)), ("days", days.clone())]);
        let blobs = self.child(
            &account,
            "Microsoft.Storage/storageAccounts/blobServices",
            "default",
            "blobs",
            Value::obj([(
                "properties",
                Value::obj([
                    ("isVersioningEnabled", Value::Bool(true)),
                    ("deleteRetentionPolicy", policy(&days)),
                    ("containerDeleteRetentionPolicy", policy(&days)),
                ]),
            )]),
        );
        let mut blobs = blobs;
        blobs.address = address(&blobs.type_, &account_name(&account));
        let blobs = self.add(blobs);
        for (name, symbol) in [
            (naming::STATE_CONTAINER, "stateContainer"),
            (naming::BACKUP_CONTAINER, "backupContainer"),
        ] {
            let mut c = self.child(
                &blobs,
                "Microsoft.Storage/storageAccounts/blobServices/containers",
                name,
                symbol,
                Value::obj([(
                    "properties",
                    Value::obj([("publicAccess", Value::s("None"))]),
                )]),
            );
            c.data_bearing = true;
            self.add(c);
        }
        let rule = Value::obj([
            ("enabled", Value::Bool(true)),
            ("name", Value::s("expire-old-versions")),
            ("type", Value::s("Lifecycle")),
            (
                "definition",
                Value::obj([
                    (
                        "actions",
                        Value::obj([(
                            "version",
                            Value::obj([(
                                "delete",
                                Value::obj([("daysAfterCreationGreaterThan", days.clone())]),
                            )]),
                        )]),
                    ),
                    (
                        "filters",
                        Value::obj([("blobTypes", Value::strs(["blockBlob"]))]),
                    ),
                ]),
            ),
        ]);
        let mut lifecycle = self.child(
            &account,
            "Microsoft.Storage/storageAccounts/managementPolicies",
            "default",
            "lifecycle",
            Value::obj([(
                "properties",
                Value::obj([("policy", Value::obj([("rules", Value::Array(vec![rule]))]))]),
            )]),
        );
        lifecycle.address = address(&lifecycle.type_, &account_name(&account));
        self.add(lifecycle);
        account
    }

    /// PocketBase's persistent volume, when a service hosts PocketBase
    /// ([`pocketbase_service`]): an Azure Files share in the platform's storage account (share
    /// soft delete for the blob retention days; the account is geo-redundant) and the Container
    /// Apps environment's storage pointing at it. The share holds `pb_data`, PocketBase's
    /// backups (`pb_data/backups`) included. Returns the environment storage.
    fn pocketbase_volume(&mut self, account: &Target, cae: &Target) -> Option<Target> {
        pocketbase_service(self.p)?;
        let days = Value::Int(self.p.backup.blob_retention_days.clamp(1, 365).into());
        let mut files = self.child(
            account,
            "Microsoft.Storage/storageAccounts/fileServices",
            "default",
            "files",
            Value::obj([(
                "properties",
                Value::obj([(
                    "shareDeleteRetentionPolicy",
                    Value::obj([("enabled", Value::Bool(true)), ("days", days)]),
                )]),
            )]),
        );
        files.address = address(&files.type_, &account_name(account));
        let files = self.add(files);
        let mut share = self.child(
            &files,
            "Microsoft.Storage/storageAccounts/fileServices/shares",
            naming::POCKETBASE_SHARE,
            "pocketbaseShare",
            Value::obj([(
                "properties",
                Value::obj([
                    ("shareQuota", Value::Int(POCKETBASE_SHARE_GIB)),
                    ("enabledProtocols", Value::s("SMB")),
                ]),
            )]),
        );
        share.data_bearing = true;
        share.comment = Some("PocketBase's data (pb_data: SQLite, uploaded files, and its backups in pb_data/backups), on the platform's geo-redundant storage account.".into());
        let share = self.add(share);
        let mut storage = self.child(
            cae,
            "Microsoft.App/managedEnvironments/storages",
            naming::POCKETBASE_SHARE,
            "pocketbaseStorage",
            Value::obj([(
                "properties",
                Value::obj([(
                    "azureFile",
                    Value::obj([
                        ("accountName", Value::s(account_name(account))),
                        ("accountKey", Value::StorageKey(account.clone())),
                        ("shareName", Value::s(naming::POCKETBASE_SHARE)),
                        ("accessMode", Value::s("ReadWrite")),
                    ]),
                )]),
            )]),
        );
        storage.depends_on.push(share.address.clone());
        storage.comment = Some("The Container Apps environment's mount of PocketBase's share (its account key is read at deployment, never written down).".into());
        Some(self.add(storage))
    }

    fn container_env(&mut self, logs: &Target) -> Target {
        let body = self.tracked(vec![(
            "properties",
            Value::obj([
                (
                    "appLogsConfiguration",
                    Value::obj([
                        ("destination", Value::s("log-analytics")),
                        (
                            "logAnalyticsConfiguration",
                            Value::obj([
                                ("customerId", prop(logs, "properties.customerId")),
                                ("sharedKey", Value::SharedKey(logs.clone())),
                            ]),
                        ),
                    ]),
                ),
                (
                    "workloadProfiles",
                    Value::Array(vec![Value::obj([
                        ("name", Value::s("Consumption")),
                        ("workloadProfileType", Value::s("Consumption")),
                    ])]),
                ),
            ]),
        )]);
        let mut r = self.top(
            "Microsoft.App/managedEnvironments",
            API.container_apps,
            &naming::container_env(self.p),
            "containerEnv",
            body,
        );
        r.comment = Some("Container Apps environment, sending application logs to the Log Analytics workspace (its shared key is read at deployment, never written down).".into());
        self.add(r)
    }

    /// The Key Vault secrets the platform names: generated or provided.
    fn secrets(&mut self, vault: &Target) {
        let generated = generated_secrets(self.p);
        for name in vault_secrets(self.p) {
            let kind = if generated.contains(&name) {
                Kind::GeneratedSecret
            } else {
                Kind::ProvidedSecret
            };
            let mut r = self.child(
                vault,
                "Microsoft.KeyVault/vaults/secrets",
                &name,
                &bicep_ident("secret", &name),
                Value::obj([(
                    "properties",
                    Value::obj([("value", Value::Secret(SecretSource::KeyVault(name.clone())))]),
                )]),
            );
            r.kind = kind;
            self.add(r);
        }
    }

    fn secret_value(&self, s: &SecretRef) -> Value {
        match s {
            SecretRef::KeyVault(n) => Value::Secret(SecretSource::KeyVault(n.clone())),
            SecretRef::Env(v) => Value::Secret(SecretSource::Env(v.clone())),
        }
    }

    fn postgres(&mut self) -> Target {
        let pg = &self.p.postgres;
        let body = self.tracked(vec![
            (
                "sku",
                Value::obj([("name", Value::s(&pg.sku)), ("tier", Value::s(&pg.tier))]),
            ),
            (
                "properties",
                Value::obj([
                    ("version", Value::s(&pg.version)),
                    ("administratorLogin", Value::s(&pg.admin_user)),
                    (
                        "administratorLoginPassword",
                        self.secret_value(&pg.admin_password),
                    ),
                    (
                        "storage",
                        Value::obj([
                            ("storageSizeGB", Value::Int(pg.storage_gb.into())),
                            ("autoGrow", Value::s("Enabled")),
                        ]),
                    ),
                    (
                        "backup",
                        Value::obj([
                            (
                                "backupRetentionDays",
                                Value::Int(pg.backup_retention_days.into()),
                            ),
                            (
                                "geoRedundantBackup",
                                Value::s(if pg.geo_redundant_backup {
                                    "Enabled"
                                } else {
                                    "Disabled"
                                }),
                            ),
                        ]),
                    ),
                    (
                        "highAvailability",
                        Value::obj([(
                            "mode",
                            Value::s(if pg.high_availability {
                                "ZoneRedundant"
                            } else {
                                "Disabled"
                            }),
                        )]),
                    ),
                ]),
            ),
        ]);
        let mut server = self.top(
            "Microsoft.DBforPostgreSQL/flexibleServers",
            API.postgres,
            &naming::postgres_server(self.p),
            "postgres",
            body,
        );
        server.data_bearing = true;
        server.comment = Some("PostgreSQL flexible server: the platform database. The administrator password is write-only: kombiform generates it into Key Vault on the first deployment.".into());
        if let SecretRef::KeyVault(n) = &pg.admin_password {
            server
                .depends_on
                .push(address("Microsoft.KeyVault/vaults/secrets", n));
        }
        let databases = pg.databases.clone();
        let allowed_cidrs = pg.allowed_cidrs.clone();
        let server = self.add(server);
        let mut fw = self.child(
            &server,
            "Microsoft.DBforPostgreSQL/flexibleServers/firewallRules",
            "AllowAllAzureServicesAndResourcesWithinAzureIps",
            "allowAzure",
            Value::obj([(
                "properties",
                Value::obj([
                    ("startIpAddress", Value::s("0.0.0.0")),
                    ("endIpAddress", Value::s("0.0.0.0")),
                ]),
            )]),
        );
        fw.comment = Some("Container Apps reach the server from Azure's address space (the 0.0.0.0 rule means \"Azure services\", not \"everyone\").".into());
        let mut after = self.add(fw).address;
        // The addresses `kombiform plan` and `apply` connect from outside Azure
        // (postgres.allowedCidrs: CI runners, operators), one write at a time.
        for (i, cidr) in allowed_cidrs.iter().enumerate() {
            let Some((start, end)) = kombiform_model::ipv4_cidr_range(cidr) else {
                continue;
            };
            let mut rule = self.child(
                &server,
                "Microsoft.DBforPostgreSQL/flexibleServers/firewallRules",
                &naming::postgres_firewall_rule(cidr),
                &format!("allowClient{i}"),
                Value::obj([(
                    "properties",
                    Value::obj([
                        ("startIpAddress", Value::s(start.to_string())),
                        ("endIpAddress", Value::s(end.to_string())),
                    ]),
                )]),
            );
            rule.depends_on.push(after);
            if i == 0 {
                rule.comment = Some("The addresses kombiform plan and apply connect from outside Azure (postgres.allowedCidrs), one write at a time: the server answers ServerIsBusy to concurrent writes.".into());
            }
            after = self.add(rule).address;
        }
        let mut taken = BTreeSet::new();
        for (i, db) in databases.iter().enumerate() {
            let mut symbol = bicep_ident("database", db);
            if !taken.insert(symbol.clone()) {
                symbol = format!("{symbol}{i}");
                taken.insert(symbol.clone());
            }
            let mut r = self.child(
                &server,
                "Microsoft.DBforPostgreSQL/flexibleServers/databases",
                db,
                &symbol,
                Value::obj([(
                    "properties",
                    Value::obj([
                        ("charset", Value::s("UTF8")),
                        ("collation", Value::s("en_US.utf8")),
                    ]),
                )]),
            );
            r.data_bearing = true;
            // One write at a time: the server answers ServerIsBusy to concurrent writes.
            r.depends_on.push(after);
            if i == 0 {
                r.comment = Some("Databases, one write at a time: the server answers ServerIsBusy to concurrent writes.".into());
            }
            after = self.add(r).address;
        }
        server
    }

    fn redis(&mut self) -> Target {
        let r = &self.p.redis;
        let family = if r.sku.eq_ignore_ascii_case("premium") {
            "P"
        } else {
            "C"
        };
        let body = self.tracked(vec![(
            "properties",
            Value::obj([
                (
                    "sku",
                    Value::obj([
                        ("name", Value::s(&r.sku)),
                        ("family", Value::s(family)),
                        ("capacity", Value::Int(r.capacity.into())),
                    ]),
                ),
                ("enableNonSslPort", Value::Bool(!r.ssl)),
                ("minimumTlsVersion", Value::s("1.2")),
            ]),
        )]);
        let mut cache = self.top(
            "Microsoft.Cache/redis",
            API.redis,
            &naming::redis(self.p),
            "redis",
            body,
        );
        cache.comment = Some(
            "Azure Cache for Redis: rate-limit counters and gateway sessions. TLS only.".into(),
        );
        self.add(cache)
    }

    /// Kong, then every enabled service: (service name, app).
    fn apps(
        &mut self,
        s: &Shared,
        pg: &Target,
        redis: &Target,
        pb_storage: Option<&Target>,
    ) -> Vec<(String, Target)> {
        let pocketbase = pocketbase_service(self.p).map(|x| x.name.clone());
        let mut out = Vec::new();
        let kong = kong_app(self.p);
        let mut r = self.app(s, &kong);
        r.depends_on
            .extend([redis.address.clone(), pg.address.clone()]);
        out.push(("kong".to_string(), self.add(r)));
        for svc in self.p.services.iter().filter(|x| x.enabled) {
            let mut spec = service_app(self.p, svc);
            let hosts_pocketbase = pocketbase.as_deref() == Some(svc.name.as_str());
            if hosts_pocketbase {
                // SQLite has one writer: exactly one replica, never scaled out.
                spec.scale.min = 1;
                spec.scale.max = 1;
                spec.comment
                    .push_str(" Hosts PocketBase: one replica on its persistent volume.");
            }
            let mut r = self.app(s, &spec);
            if let (true, Some(storage)) = (hosts_pocketbase, pb_storage) {
                mount_pocketbase(&mut r.body);
                r.depends_on.push(storage.address.clone());
            }
            for d in &svc.depends_on {
                if let Some((_, t)) = out.iter().find(|(n, _)| n == d) {
                    r.depends_on.push(t.address.clone());
                } else if self.p.service(d).is_some_and(|d| d.enabled) {
                    r.depends_on.push(address(
                        "Microsoft.App/containerApps",
                        &naming::container_app(self.p, d),
                    ));
                }
            }
            if matches!(svc.name.as_str(), "sso" | "admin" | "health") {
                r.depends_on.push(pg.address.clone());
            }
            out.push((svc.name.clone(), self.add(r)));
        }
        out
    }

    /// The app's resource (name, body and the secrets it needs).
    fn app(&self, s: &Shared, a: &AppSpec) -> ArmResource {
        let body = self.app_body_with(s, a, Value::Int(a.scale.min.into()), &[]);
        let mut r = self.top(
            "Microsoft.App/containerApps",
            API.container_apps,
            &a.name,
            &a.symbol,
            body,
        );
        r.comment = Some(a.comment.clone());
        r.depends_on.push(s.reader.address.clone());
        r.depends_on.extend(a.kv_secret_addresses());
        r
    }

    /// A Container App's body: `min` replicas, `extra_env` first (a tenant's identity).
    fn app_body_with(
        &self,
        s: &Shared,
        a: &AppSpec,
        min: Value,
        extra_env: &[(&str, Value)],
    ) -> Value {
        let mut secrets: Vec<Value> =
            a.kv.iter()
                .map(|(app_secret, kv)| {
                    Value::obj([
                        ("name", Value::s(app_secret)),
                        (
                            "keyVaultUrl",
                            Value::Concat(vec![
                                prop(&s.vault, "properties.vaultUri"),
                                Value::s(format!("secrets/{kv}")),
                            ]),
                        ),
                        ("identity", Value::Id(s.identity.clone())),
                    ])
                })
                .collect();
        secrets.extend(a.supplied.iter().map(|(app_secret, var)| {
            Value::obj([
                ("name", Value::s(app_secret)),
                ("value", Value::Secret(SecretSource::Env(var.clone()))),
            ])
        }));
        let mut env: Vec<Value> = extra_env
            .iter()
            .map(|(n, v)| Value::obj([("name", Value::s(*n)), ("value", v.clone())]))
            .collect();
        env.extend(a.env.iter().map(|e| match e {
            (name, EnvPart::Plain(v)) => {
                Value::obj([("name", Value::s(name)), ("value", Value::s(v))])
            }
            (name, EnvPart::Secret(r)) => {
                Value::obj([("name", Value::s(name)), ("secretRef", Value::s(r))])
            }
        }));
        let probe = |kind: &str, path: &str| {
            Value::obj([
                ("type", Value::s(kind)),
                (
                    "httpGet",
                    Value::obj([
                        ("path", Value::s(path)),
                        ("port", Value::Int(a.probe_port.into())),
                        ("scheme", Value::s(a.scheme)),
                    ]),
                ),
                ("periodSeconds", Value::Int(a.period.into())),
                ("failureThreshold", Value::Int(3)),
            ])
        };
        self.tracked(vec![
            (
                "identity",
                Value::obj([
                    ("type", Value::s("UserAssigned")),
                    (
                        "userAssignedIdentities",
                        Value::Object(vec![(s.identity.id.clone(), Value::Object(Vec::new()))]),
                    ),
                ]),
            ),
            (
                "properties",
                Value::obj([
                    ("managedEnvironmentId", Value::Id(s.cae.clone())),
                    (
                        "configuration",
                        Value::obj([
                            ("activeRevisionsMode", Value::s("Single")),
                            (
                                "ingress",
                                Value::obj([
                                    ("external", Value::Bool(a.external)),
                                    ("targetPort", Value::Int(a.port.into())),
                                    ("transport", Value::s("auto")),
                                    ("allowInsecure", Value::Bool(false)),
                                ]),
                            ),
                            ("secrets", Value::Array(secrets)),
                        ]),
                    ),
                    (
                        "template",
                        Value::obj([
                            (
                                "containers",
                                Value::Array(vec![Value::obj([
                                    ("name", Value::s("main")),
                                    ("image", Value::s(&a.image)),
                                    ("env", Value::Array(env)),
                                    (
                                        "resources",
                                        Value::obj([
                                            ("cpu", Value::Decimal(a.scale.cpu.clone())),
                                            ("memory", Value::s(&a.scale.memory)),
                                        ]),
                                    ),
                                    (
                                        "probes",
                                        Value::Array(vec![
                                            probe("Liveness", &a.liveness),
                                            probe("Readiness", &a.readiness),
                                        ]),
                                    ),
                                ])]),
                            ),
                            (
                                "scale",
                                Value::obj([
                                    ("minReplicas", min),
                                    ("maxReplicas", Value::Int(a.scale.max.into())),
                                ]),
                            ),
                        ]),
                    ),
                ]),
            ),
        ])
    }

    fn front_door(&mut self, fd: &kombiform_model::FrontDoor, apps: &[(String, Target)]) {
        let p = self.p;
        let profile = self.top(
            "Microsoft.Cdn/profiles",
            API.front_door,
            &naming::front_door(p),
            "frontDoor",
            self.tracked_at(
                "global",
                vec![("sku", Value::obj([("name", Value::s(&fd.sku))]))],
            ),
        );
        let mut profile = profile;
        profile.comment = Some("Azure Front Door in front of the platform: one endpoint; an origin group (with health probes), an origin and a route for Kong and for every service that is a Front Door origin.".into());
        let profile = self.add(profile);
        let endpoint = self.child(
            &profile,
            "Microsoft.Cdn/profiles/afdEndpoints",
            &naming::front_door_endpoint(p),
            "endpoint",
            self.tracked_at(
                "global",
                vec![(
                    "properties",
                    Value::obj([("enabledState", Value::s("Enabled"))]),
                )],
            ),
        );
        let endpoint = self.add(endpoint);
        let domain = fd.custom_domain.as_ref().map(|host| {
            let mut d = self.child(
                &profile,
                "Microsoft.Cdn/profiles/customDomains",
                &naming::front_door_custom_domain(host),
                "customDomain",
                Value::obj([(
                    "properties",
                    Value::obj([
                        ("hostName", Value::s(host)),
                        (
                            "tlsSettings",
                            Value::obj([
                                ("certificateType", Value::s("ManagedCertificate")),
                                ("minimumTlsVersion", Value::s("TLS12")),
                            ]),
                        ),
                    ]),
                )]),
            );
            d.comment = Some(
                "DNS validation of the custom domain is manual: add the TXT record Azure asks for."
                    .into(),
            );
            d
        });
        let domain = domain.map(|d| self.add(d));
        let probe_interval = p.monitoring.probe_period_seconds.clamp(5, 255);
        let mut previous: Option<String> = None;
        for o in origins(p, apps) {
            let Some((_, app)) = apps.iter().find(|(n, _)| *n == o.service) else {
                continue;
            };
            let ident = bicep_ident("", &o.name);
            let mut group = self.child(
                &profile,
                "Microsoft.Cdn/profiles/originGroups",
                &o.name,
                &format!("{ident}Group"),
                Value::obj([(
                    "properties",
                    Value::obj([
                        (
                            "loadBalancingSettings",
                            Value::obj([
                                ("sampleSize", Value::Int(4)),
                                ("successfulSamplesRequired", Value::Int(3)),
                                ("additionalLatencyInMilliseconds", Value::Int(50)),
                            ]),
                        ),
                        (
                            "healthProbeSettings",
                            Value::obj([
                                ("probePath", Value::s(&o.probe_path)),
                                ("probeRequestType", Value::s("GET")),
                                ("probeProtocol", Value::s("Https")),
                                ("probeIntervalInSeconds", Value::Int(probe_interval.into())),
                            ]),
                        ),
                    ]),
                )]),
            );
            group.comment = Some(format!("Origin `{}`.", o.name));
            let group = self.add(group);
            let fqdn = prop(app, "properties.configuration.ingress.fqdn");
            let origin = self.child(
                &group,
                "Microsoft.Cdn/profiles/originGroups/origins",
                &o.name,
                &format!("{ident}Origin"),
                Value::obj([(
                    "properties",
                    Value::obj([
                        ("hostName", fqdn.clone()),
                        ("originHostHeader", fqdn),
                        ("httpPort", Value::Int(80)),
                        ("httpsPort", Value::Int(443)),
                        ("priority", Value::Int(1)),
                        ("weight", Value::Int(1000)),
                        ("enabledState", Value::s("Enabled")),
                    ]),
                )]),
            );
            let origin = self.add(origin);
            let mut props = vec![(
                "originGroup",
                Value::obj([("id", Value::Id(group.clone()))]),
            )];
            if let Some(d) = &domain {
                props.push((
                    "customDomains",
                    Value::Array(vec![Value::obj([("id", Value::Id(d.clone()))])]),
                ));
            }
            props.extend([
                ("supportedProtocols", Value::strs(["Http", "Https"])),
                ("patternsToMatch", Value::strs(&o.patterns)),
                ("forwardingProtocol", Value::s("HttpsOnly")),
                ("linkToDefaultDomain", Value::s("Enabled")),
                ("httpsRedirect", Value::s("Enabled")),
            ]);
            let mut route = self.child(
                &endpoint,
                "Microsoft.Cdn/profiles/afdEndpoints/routes",
                &o.name,
                &format!("{ident}Route"),
                Value::obj([("properties", Value::obj(props))]),
            );
            route.comment = Some("A route is refused until its origin group has an enabled origin; routes of one endpoint are written one at a time.".into());
            route.depends_on.push(origin.address.clone());
            route.depends_on.extend(previous.take());
            previous = Some(self.add(route).address);
        }
    }

    fn monitoring(&mut self, kong: &Target, pg: &Target) {
        let p = self.p;
        let prefix = p.azure.as_ref().map_or("kfy", |a| a.name_prefix.as_str());
        // Action group short names are at most 12 characters.
        let short: String = format!("{prefix}-{}", p.name).chars().take(12).collect();
        let m = &p.monitoring;
        let emails = m
            .alert_emails
            .iter()
            .enumerate()
            .map(|(i, address)| {
                Value::obj([
                    ("name", Value::s(format!("email-{i}"))),
                    ("emailAddress", Value::s(address)),
                    ("useCommonAlertSchema", Value::Bool(true)),
                ])
            })
            .collect();
        let mut group = self.top(
            "Microsoft.Insights/actionGroups",
            API.action_groups,
            &naming::action_group(p),
            "actionGroup",
            self.tracked_at(
                "global",
                vec![(
                    "properties",
                    Value::obj([
                        ("groupShortName", Value::s(short)),
                        ("enabled", Value::Bool(true)),
                        ("emailReceivers", Value::Array(emails)),
                    ]),
                )],
            ),
        );
        group.comment = Some("Alerting: an action group that e-mails the on-call addresses, and metric alert rules for Kong 5xx responses, Kong replica restarts and PostgreSQL CPU.".into());
        let group = self.add(group);
        let alerts = [
            Alert {
                which: "kong-5xx",
                symbol: "kong5xx",
                description: format!(
                    "Kong answered more than {} 5xx responses in 5 minutes.",
                    m.error_rate_threshold
                ),
                severity: 1,
                scope: kong,
                frequency: "PT1M",
                window: "PT5M",
                criterion: "kong-5xx",
                namespace: "Microsoft.App/containerApps",
                metric: "Requests",
                dimensions: Some(("statusCodeCategory", "5xx")),
                threshold: i64::from(m.error_rate_threshold),
                aggregation: "Total",
            },
            Alert {
                which: "kong-unhealthy",
                symbol: "kongUnhealthy",
                description: "Kong replicas were restarted (failed liveness probes or crashes) in the last 5 minutes.".into(),
                severity: 2,
                scope: kong,
                frequency: "PT1M",
                window: "PT5M",
                criterion: "kong-restarts",
                namespace: "Microsoft.App/containerApps",
                metric: "RestartCount",
                dimensions: None,
                threshold: 0,
                aggregation: "Total",
            },
            Alert {
                which: "postgres-cpu",
                symbol: "postgresCpu",
                description: "PostgreSQL CPU above 80% for 15 minutes.".into(),
                severity: 2,
                scope: pg,
                frequency: "PT5M",
                window: "PT15M",
                criterion: "postgres-cpu",
                namespace: "Microsoft.DBforPostgreSQL/flexibleServers",
                metric: "cpu_percent",
                dimensions: None,
                threshold: 80,
                aggregation: "Average",
            },
        ];
        for a in alerts {
            let r = self.alert(&group, &a);
            self.add(r);
        }
    }

    fn alert(&self, group: &Target, a: &Alert<'_>) -> ArmResource {
        let mut criterion = vec![
            ("criterionType", Value::s("StaticThresholdCriterion")),
            ("name", Value::s(a.criterion)),
            ("metricNamespace", Value::s(a.namespace)),
            ("metricName", Value::s(a.metric)),
        ];
        if let Some((name, value)) = a.dimensions {
            criterion.push((
                "dimensions",
                Value::Array(vec![Value::obj([
                    ("name", Value::s(name)),
                    ("operator", Value::s("Include")),
                    ("values", Value::strs([value])),
                ])]),
            ));
        }
        criterion.extend([
            ("operator", Value::s("GreaterThan")),
            ("threshold", Value::Int(a.threshold)),
            ("timeAggregation", Value::s(a.aggregation)),
        ]);
        let body = self.tracked_at(
            "global",
            vec![(
                "properties",
                Value::obj([
                    ("description", Value::s(&a.description)),
                    ("severity", Value::Int(a.severity)),
                    ("enabled", Value::Bool(true)),
                    ("scopes", Value::Array(vec![Value::Id(a.scope.clone())])),
                    ("evaluationFrequency", Value::s(a.frequency)),
                    ("windowSize", Value::s(a.window)),
                    (
                        "criteria",
                        Value::obj([
                            (
                                "odata.type",
                                Value::s(
                                    "Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria",
                                ),
                            ),
                            ("allOf", Value::Array(vec![Value::obj(criterion)])),
                        ]),
                    ),
                    (
                        "actions",
                        Value::Array(vec![Value::obj([(
                            "actionGroupId",
                            Value::Id(group.clone()),
                        )])]),
                    ),
                ]),
            )],
        );
        self.top(
            "Microsoft.Insights/metricAlerts",
            API.metric_alerts,
            &naming::alert_rule(self.p, a.which),
            a.symbol,
            body,
        )
    }

    /// Dedicated tenants' instances, in hash buckets: one family per non-empty bucket.
    fn tenants(&mut self, env: Env<'_>, s: &Shared) {
        let p = self.p;
        let dedicated: Vec<&Tenant> = env
            .tenants()
            .filter(|t| t.instance == InstanceMode::Dedicated)
            .collect();
        let Some(service) = p.service("kombistack").filter(|s| s.enabled) else {
            self.inv.orphans = dedicated.len();
            return;
        };
        let buckets = bicep::buckets(&dedicated);
        let width = bicep::bucket_width(buckets.len());
        let mut spec = service_app(p, service);
        spec.env.retain(|(n, _)| {
            !matches!(
                n.as_str(),
                "TENANT_SLUG" | "TENANT_ORG_ID" | "TENANT_STATUS"
            )
        });
        spec.external = false;
        let tenant_env = [
            ("TENANT_SLUG", Value::Row("slug".into())),
            ("TENANT_ORG_ID", Value::Row("orgId".into())),
            ("TENANT_STATUS", Value::Row("status".into())),
        ];
        let body = self.app_body_with(s, &spec, Value::Row("minReplicas".into()), &tenant_env);
        let mut template = self.top(
            "Microsoft.App/containerApps",
            API.container_apps,
            "",
            "instances",
            body,
        );
        template.depends_on.push(s.reader.address.clone());
        template.depends_on.extend(spec.kv_secret_addresses());
        template.data_bearing = true;
        for (i, bucket) in buckets.iter().enumerate() {
            if bucket.is_empty() {
                continue;
            }
            let rows = bucket
                .iter()
                .map(|t| {
                    let name = naming::tenant_app(p, t);
                    let min = match t.status {
                        TenantStatus::Active => spec.scale.min,
                        // A suspended tenant's instance keeps its data but runs no replica.
                        TenantStatus::Suspended => 0,
                    };
                    let mut fields = Map::new();
                    fields.insert("name".into(), json!(name));
                    fields.insert("slug".into(), json!(t.slug.as_str()));
                    fields.insert("orgId".into(), json!(t.zitadel_org_id));
                    fields.insert("status".into(), json!(t.status.as_str()));
                    fields.insert("minReplicas".into(), json!(min));
                    let mut r = ArmResource {
                        body: Value::Object(Vec::new()),
                        ..template.clone()
                    };
                    r.name.clone_from(&name);
                    r.address = address(&r.type_, &name);
                    r.id = format!("{}/providers/{}/{name}", self.inv.group_id(), r.type_);
                    r.tenant = Some(t.slug.to_string());
                    r.comment = None;
                    Row {
                        fields,
                        resource: r,
                    }
                })
                .collect();
            self.inv.families.push(Family {
                file: format!("tenants/bucket-{i:0width$}.bicep"),
                bucket: (i, buckets.len()),
                template: template.clone(),
                rows,
                existing: vec![
                    s.cae.address.clone(),
                    s.identity.address.clone(),
                    s.vault.address.clone(),
                ],
            });
        }
    }
}

struct Alert<'a> {
    which: &'static str,
    symbol: &'static str,
    description: String,
    severity: i64,
    scope: &'a Target,
    frequency: &'static str,
    window: &'static str,
    criterion: &'static str,
    namespace: &'static str,
    metric: &'static str,
    dimensions: Option<(&'static str, &'static str)>,
    threshold: i64,
    aggregation: &'static str,
}

fn account_name(t: &Target) -> String {
    t.address.rsplit('.').next().unwrap_or_default().to_string()
}

/// A GUID from names: SHA-256 of the parts, as an RFC 4122 name-based UUID (version 5 bits).
/// Stable, so a role assignment has the same name in the Bicep and in every apply.
pub(crate) fn stable_guid(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.to_ascii_lowercase().as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = kombiform_model::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A Bicep identifier from a name: letters and digits kept, the rest dropped, each part after
/// a dropped character capitalised (`kombi-sim` → `kombiSim`), prefixed.
pub(crate) fn bicep_ident(prefix: &str, name: &str) -> String {
    let mut out = String::from(prefix);
    let mut upper = !prefix.is_empty();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if upper {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
            upper = false;
        } else {
            upper = true;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Apps
// ---------------------------------------------------------------------------------------

enum EnvPart {
    Plain(String),
    /// The app secret it reads.
    Secret(String),
}

struct ScaleData {
    min: u32,
    max: u32,
    cpu: String,
    memory: String,
}

impl ScaleData {
    fn of(s: &Scale) -> ScaleData {
        ScaleData {
            min: s.min_replicas,
            max: s.max_replicas.max(s.min_replicas).max(1),
            cpu: format!("{}", s.cpu),
            memory: s.memory.clone(),
        }
    }
}

/// One Container App of the platform, before it becomes a body.
struct AppSpec {
    name: String,
    symbol: String,
    comment: String,
    image: String,
    port: u16,
    external: bool,
    scale: ScaleData,
    probe_port: u16,
    scheme: &'static str,
    liveness: String,
    readiness: String,
    period: u32,
    env: Vec<(String, EnvPart)>,
    /// (app secret, Key Vault secret), sorted.
    kv: BTreeSet<(String, String)>,
    /// (app secret, environment variable), sorted.
    supplied: BTreeSet<(String, String)>,
}

impl AppSpec {
    fn secret(&mut self, name: &str, secret: &SecretRef) {
        let app_secret = match secret {
            SecretRef::KeyVault(kv) => {
                let s = kv.to_ascii_lowercase();
                self.kv.insert((s.clone(), kv.clone()));
                s
            }
            SecretRef::Env(var) => {
                let s = format!("env-{}", var.to_ascii_lowercase().replace('_', "-"));
                self.supplied.insert((s.clone(), var.clone()));
                s
            }
        };
        self.env
            .push((name.to_string(), EnvPart::Secret(app_secret)));
    }

    fn kv_secret_addresses(&self) -> Vec<String> {
        self.kv
            .iter()
            .map(|(_, kv)| address("Microsoft.KeyVault/vaults/secrets", kv))
            .collect()
    }
}

fn probe_period(p: &Platform) -> u32 {
    // Container Apps accept 1 to 240 seconds.
    p.monitoring.probe_period_seconds.clamp(1, 240)
}

fn kong_app(p: &Platform) -> AppSpec {
    let mut a = AppSpec {
        name: naming::container_app(p, "kong"),
        symbol: "appKong".into(),
        comment: format!(
            "Kong {} gateway, DB-less; the only app Front Door and the internet reach besides Front Door origins.",
            match p.kong.edition {
                kombiform_model::KongEdition::Oss => "OSS",
                kombiform_model::KongEdition::Enterprise => "Enterprise",
            }
        ),
        image: p.kong.image.clone(),
        port: 8000,
        external: true,
        scale: ScaleData::of(&p.kong.scale),
        probe_port: 8100,
        scheme: "HTTP",
        liveness: "/status".into(),
        readiness: "/status/ready".into(),
        period: probe_period(p),
        env: Vec::new(),
        kv: BTreeSet::new(),
        supplied: BTreeSet::new(),
    };
    for (name, value) in [
        ("KONG_DATABASE", "off"),
        ("KONG_PROXY_LISTEN", "0.0.0.0:8000"),
        ("KONG_STATUS_LISTEN", "0.0.0.0:8100"),
        // Only inside the container: the Admin API has no authentication.
        ("KONG_ADMIN_LISTEN", "127.0.0.1:8001"),
        ("KONG_PROXY_ACCESS_LOG", "/dev/stdout"),
        ("KONG_PROXY_ERROR_LOG", "/dev/stderr"),
        ("KONG_ADMIN_ACCESS_LOG", "/dev/stdout"),
        ("KONG_ADMIN_ERROR_LOG", "/dev/stderr"),
    ] {
        a.env.push((name.into(), EnvPart::Plain(value.into())));
    }
    if let Some(license) = &p.kong.license {
        a.secret("KONG_LICENSE_DATA", license);
    }
    let mut vault_refs: Vec<&SecretRef> = Vec::new();
    vault_refs.extend(p.kong.session_secret.as_ref());
    vault_refs.extend(p.kong.upstream_mtls.as_ref().map(|m| &m.client_key));
    vault_refs.extend(p.redis.password.as_ref());
    for secret in vault_refs {
        let name = crate::kong::vault_env_var(secret);
        if !a.env.iter().any(|(n, _)| *n == name) {
            a.secret(&name, secret);
        }
    }
    a
}

/// Size of PocketBase's file share, in GiB.
const POCKETBASE_SHARE_GIB: i64 = 100;

/// Where PocketBase's data directory is mounted in its container (`--dir /pb_data`).
const POCKETBASE_DATA_DIR: &str = "/pb_data";

/// The enabled service that hosts PocketBase: the one whose `host` is the host of
/// `pocketbase.url` (on Azure, the app PocketBase runs in).
fn pocketbase_service(p: &Platform) -> Option<&Service> {
    let url = p.pocketbase.url.as_str();
    let host = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', ':'])
        .next()?;
    p.services
        .iter()
        .filter(|s| s.enabled)
        .find(|s| s.host.as_deref() == Some(host))
}

/// Adds PocketBase's volume to a Container App body: the environment storage as volume
/// `pocketbase`, mounted at [`POCKETBASE_DATA_DIR`]. `nobrl`: SMB byte-range locks are not
/// what SQLite expects, and with one writer they are not needed.
fn mount_pocketbase(body: &mut Value) {
    let volume = Value::obj([
        ("name", Value::s(naming::POCKETBASE_SHARE)),
        ("storageType", Value::s("AzureFile")),
        ("storageName", Value::s(naming::POCKETBASE_SHARE)),
        ("mountOptions", Value::s("nobrl,mfsymlinks,cache=none")),
    ]);
    let mount = Value::obj([
        ("volumeName", Value::s(naming::POCKETBASE_SHARE)),
        ("mountPath", Value::s(POCKETBASE_DATA_DIR)),
    ]);
    let Some(template) = object_at(body, &["properties", "template"]) else {
        return;
    };
    if let Some((_, Value::Array(containers))) =
        template.iter_mut().find(|(k, _)| k == "containers")
    {
        if let Some(Value::Object(main)) = containers.first_mut() {
            main.push(("volumeMounts".into(), Value::Array(vec![mount])));
        }
    }
    template.push(("volumes".into(), Value::Array(vec![volume])));
}

/// The pairs of the object at `path` inside `v`.
fn object_at<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Vec<(String, Value)>> {
    let Value::Object(pairs) = v else {
        return None;
    };
    match path.split_first() {
        None => Some(pairs),
        Some((first, rest)) => {
            let (_, inner) = pairs.iter_mut().find(|(k, _)| k == first)?;
            object_at(inner, rest)
        }
    }
}

fn service_app(p: &Platform, s: &Service) -> AppSpec {
    let mut a = AppSpec {
        name: naming::container_app(p, &s.name),
        symbol: bicep_ident("app", &s.name),
        comment: format!(
            "Service `{}`{}.",
            s.name,
            if s.front_door_origin {
                ", also a Front Door origin"
            } else {
                ", reached through Kong"
            }
        ),
        image: s.image.clone(),
        port: s.port,
        external: s.front_door_origin,
        scale: ScaleData::of(&s.scale),
        probe_port: s.port,
        scheme: match s.protocol {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
        },
        liveness: s.health_path.clone(),
        readiness: s.ready_path.clone(),
        period: probe_period(p),
        env: Vec::new(),
        kv: BTreeSet::new(),
        supplied: BTreeSet::new(),
    };
    for (name, value) in &s.env {
        match value {
            EnvValue::Plain(v) => a.env.push((name.clone(), EnvPart::Plain(v.clone()))),
            EnvValue::Secret { secret } => a.secret(name, secret),
        }
    }
    a
}

struct OriginSpec {
    name: String,
    service: String,
    probe_path: String,
    patterns: Vec<String>,
}

/// Path Front Door probes Kong with: a public route path that is some service's health path
/// (so Kong answers 200 when the platform is up), else `/`.
fn kong_probe_path(p: &Platform) -> String {
    let health: BTreeSet<&str> = p
        .services
        .iter()
        .filter(|s| s.enabled)
        .map(|s| s.health_path.as_str())
        .collect();
    p.services
        .iter()
        .filter(|s| s.enabled)
        .flat_map(|s| s.routes.iter())
        .filter(|r| r.access == Access::Public)
        .flat_map(|r| r.paths.iter())
        .find(|path| health.contains(path.as_str()))
        .map_or_else(|| "/".to_string(), Clone::clone)
}

fn origins(p: &Platform, apps: &[(String, Target)]) -> Vec<OriginSpec> {
    let mut out = vec![OriginSpec {
        name: "kong".into(),
        service: "kong".into(),
        probe_path: kong_probe_path(p),
        patterns: vec!["/*".into()],
    }];
    for s in p
        .services
        .iter()
        .filter(|s| s.enabled && s.front_door_origin)
    {
        if s.name == "kong" || !apps.iter().any(|(n, _)| *n == s.name) {
            continue;
        }
        let mut patterns = BTreeSet::new();
        for path in s.routes.iter().flat_map(|r| r.paths.iter()) {
            let base = path.trim_end_matches('/');
            if base.is_empty() {
                continue;
            }
            patterns.insert(base.to_string());
            patterns.insert(format!("{base}/*"));
        }
        out.push(OriginSpec {
            name: s.name.clone(),
            service: s.name.clone(),
            probe_path: s.health_path.clone(),
            patterns: patterns.into_iter().collect(),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------

/// Every Key Vault secret the platform names, sorted.
fn vault_secrets(p: &Platform) -> BTreeSet<String> {
    let mut refs: Vec<&SecretRef> = vec![
        &p.postgres.admin_password,
        &p.pocketbase.superuser_password,
        &p.sso.internal_token,
        &p.webhooks.stripe_secret,
        &p.webhooks.zitadel_secret,
    ];
    refs.extend(p.kong.session_secret.as_ref());
    refs.extend(p.kong.license.as_ref());
    refs.extend(p.kong.upstream_mtls.as_ref().map(|m| &m.client_key));
    refs.extend(p.redis.password.as_ref());
    for s in p.services.iter().filter(|s| s.enabled) {
        for v in s.env.values() {
            if let EnvValue::Secret { secret } = v {
                refs.push(secret);
            }
        }
    }
    // The services' PostgreSQL role passwords: provided, because apply sets each role's
    // password from the same value the service reads (kombiform never reads Key Vault back).
    let roles: Vec<SecretRef> = crate::sql::roles::of_platform(p)
        .iter()
        .map(|(name, _)| {
            kombiform_model::secret::postgres_role_password(&p.postgres.admin_password, name)
        })
        .collect();
    refs.into_iter()
        .chain(&roles)
        .filter_map(|r| match r {
            SecretRef::KeyVault(n) => Some(n.clone()),
            SecretRef::Env(_) => None,
        })
        .collect()
}

/// The Key Vault secrets kombiform can make up itself: random values nobody outside the
/// platform needs to know (the PostgreSQL administrator password, internal tokens, Kong's
/// session secret).
fn generated_secrets(p: &Platform) -> BTreeSet<String> {
    let mut refs: Vec<&SecretRef> = vec![&p.postgres.admin_password, &p.sso.internal_token];
    refs.extend(p.kong.session_secret.as_ref());
    refs.into_iter()
        .filter_map(|r| match r {
            SecretRef::KeyVault(n) => Some(n.clone()),
            SecretRef::Env(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kombiform_test_support::example_model;

    #[test]
    fn guids_are_stable_and_well_formed() {
        let g = stable_guid(&["a", "b"]);
        assert_eq!(g, stable_guid(&["A", "B"]));
        assert_ne!(g, stable_guid(&["ab", ""]));
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "5");
    }

    #[test]
    fn pocketbase_has_one_writer_on_the_platforms_share() {
        let m = example_model();
        let inv = inventory(m.env("prod").unwrap()).unwrap();
        let all = inv.all();
        let find = |t: &str| all.iter().find(|r| r.type_ == t);
        let share = find("Microsoft.Storage/storageAccounts/fileServices/shares").unwrap();
        assert!(share.data_bearing);
        assert!(share
            .id
            .contains(&naming::storage_account(m.env("prod").unwrap().platform)));
        let storage = find("Microsoft.App/managedEnvironments/storages").unwrap();
        assert!(
            storage.depends_on.contains(&share.address),
            "{:?} {}",
            storage.depends_on,
            share.address
        );
        let app = all
            .iter()
            .find(|r| r.name == "kfy-prod-kombistack")
            .unwrap();
        let body = serde_json::to_string(&app.body).unwrap();
        assert!(body.contains("\"maxReplicas\",{\"int\":1}"), "{body}");
        assert!(
            body.contains("\"mountPath\",{\"str\":\"/pb_data\"}"),
            "{body}"
        );
        assert!(app.depends_on.contains(&storage.address));
        // Only the app that hosts PocketBase.
        let sim = all.iter().find(|r| r.name == "kfy-prod-kombisim").unwrap();
        assert!(!serde_json::to_string(&sim.body)
            .unwrap()
            .contains("volumeMounts"));
    }

    #[test]
    fn the_example_inventory() {
        let m = example_model();
        let inv = inventory(m.env("prod").unwrap()).unwrap();
        let all = inv.all();
        let addresses: Vec<&str> = all.iter().map(|r| r.address.as_str()).collect();
        for a in [
            "azure.resourcegroup.rg-kombify-prod",
            "azure.kv-secret.postgres-admin-password",
            "azure.kv-secret.stripe-webhook-secret",
            "azure.containerapp.kfy-prod-t-globex",
            "azure.frontdoor-route.health",
        ] {
            assert!(addresses.contains(&a), "{a}: {addresses:?}");
        }
        let pg = all
            .iter()
            .find(|r| r.address == "azure.postgres.kfy-prod-pg")
            .unwrap();
        assert_eq!(
            pg.write_only_paths(),
            vec!["properties.administratorLoginPassword"]
        );
        let kinds: Vec<(&str, Kind)> = all
            .iter()
            .filter(|r| r.type_ == "Microsoft.KeyVault/vaults/secrets")
            .map(|r| (r.name.as_str(), r.kind))
            .collect();
        assert!(kinds.contains(&("postgres-admin-password", Kind::GeneratedSecret)));
        assert!(kinds.contains(&("sso-internal-token", Kind::GeneratedSecret)));
        assert!(kinds.contains(&("stripe-webhook-secret", Kind::ProvidedSecret)));
        let route = all
            .iter()
            .find(|r| r.address == "azure.frontdoor-route.health")
            .unwrap();
        assert!(route
            .depends_on
            .contains(&"azure.frontdoor-origin.health".to_string()));
    }
}
