//! The Bicep emitter: an Azure environment's infrastructure as readable, deployable Bicep.
//!
//! For every environment whose Platform has `azure`, it writes `<env>/bicep/main.bicep`
//! (the platform: Log Analytics, identity, Key Vault, storage, Container Apps environment and
//! apps, PostgreSQL, Redis, Front Door, alerts), the modules it uses
//! (`<env>/bicep/modules/*.bicep`) and the dedicated tenant instances in stable hash buckets
//! (`<env>/bicep/tenants/bucket-NNN.bicep`), each bucket a deployment of its own so that no
//! deployment outgrows ARM's limits (800 resources, 4 MB) at any tenant count.
//!
//! Files are rendered from the minijinja templates in `templates/bicep/` (embedded in the
//! binary). This module prepares plain, pre-sorted data for them; templates do the layout.
//!
//! What it is not: it deploys nothing (the ARM apply does, resource by resource) and checks
//! nothing the validator already checked. Secrets stay references: Key Vault secret names for
//! Container Apps (`keyVaultUrl` + identity) and `getSecret` for the PostgreSQL password;
//! environment-variable secrets become `@secure()` parameters without a default.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Serialize;

use super::Files;
use kombiform_model::{
    naming, EnvValue, InstanceMode, Platform, Protocol, Scale, SecretRef, Service, Tenant,
};
use kombiform_model::{Access, Env};

/// Api-versions pinned per resource type (the newest stable versions in `ref/arm.md`, §2;
/// types it does not list are marked).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ApiVersions {
    /// `Microsoft.OperationalInsights/workspaces`.
    pub log_analytics: &'static str,
    /// `Microsoft.ManagedIdentity/userAssignedIdentities` (not in arm.md: the current GA version).
    pub identity: &'static str,
    /// `Microsoft.KeyVault/vaults`.
    pub key_vault: &'static str,
    /// `Microsoft.Authorization/roleAssignments` (not in arm.md: the current GA version).
    pub role_assignments: &'static str,
    /// `Microsoft.Storage/storageAccounts` and its children.
    pub storage: &'static str,
    /// `Microsoft.App/managedEnvironments` and `containerApps`.
    pub container_apps: &'static str,
    /// `Microsoft.DBforPostgreSQL/flexibleServers` and its children.
    pub postgres: &'static str,
    /// `Microsoft.Cache/redis`.
    pub redis: &'static str,
    /// `Microsoft.Cdn/profiles` and its children.
    pub front_door: &'static str,
    /// `Microsoft.Insights/actionGroups` (not in arm.md: the current GA version).
    pub action_groups: &'static str,
    /// `Microsoft.Insights/metricAlerts` (not in arm.md: the only GA version).
    pub metric_alerts: &'static str,
}

impl ApiVersions {
    /// (field name, api-version) pairs, as templates see them (`api.key_vault`).
    pub fn entries(&self) -> [(&'static str, &'static str); 11] {
        [
            ("log_analytics", self.log_analytics),
            ("identity", self.identity),
            ("key_vault", self.key_vault),
            ("role_assignments", self.role_assignments),
            ("storage", self.storage),
            ("container_apps", self.container_apps),
            ("postgres", self.postgres),
            ("redis", self.redis),
            ("front_door", self.front_door),
            ("action_groups", self.action_groups),
            ("metric_alerts", self.metric_alerts),
        ]
    }
}

/// The api-versions every generated file uses.
pub const API: ApiVersions = ApiVersions {
    log_analytics: "2026-03-01",
    identity: "2023-01-31",
    key_vault: "2026-04-01",
    role_assignments: "2022-04-01",
    storage: "2026-09-01",
    container_apps: "2025-07-01",
    postgres: "2025-08-01",
    redis: "2024-11-01",
    front_door: "2025-06-01",
    action_groups: "2023-01-01",
    metric_alerts: "2018-03-01",
};

/// Average tenants per bucket the bucket count aims at (it is a power of two).
pub const TARGET_PER_BUCKET: usize = 256;

/// Most tenants one bucket may hold: half of ARM's 800 resources per deployment.
pub const MAX_PER_BUCKET: usize = 400;

const TEMPLATES: &[(&str, &str)] = &[
    ("main.bicep", include_str!("../templates/bicep/main.bicep")),
    (
        "modules/log-analytics.bicep",
        include_str!("../templates/bicep/modules/log-analytics.bicep"),
    ),
    (
        "modules/identity.bicep",
        include_str!("../templates/bicep/modules/identity.bicep"),
    ),
    (
        "modules/key-vault.bicep",
        include_str!("../templates/bicep/modules/key-vault.bicep"),
    ),
    (
        "modules/storage.bicep",
        include_str!("../templates/bicep/modules/storage.bicep"),
    ),
    (
        "modules/container-env.bicep",
        include_str!("../templates/bicep/modules/container-env.bicep"),
    ),
    (
        "modules/container-app.bicep",
        include_str!("../templates/bicep/modules/container-app.bicep"),
    ),
    (
        "modules/postgres.bicep",
        include_str!("../templates/bicep/modules/postgres.bicep"),
    ),
    (
        "modules/redis.bicep",
        include_str!("../templates/bicep/modules/redis.bicep"),
    ),
    (
        "modules/front-door.bicep",
        include_str!("../templates/bicep/modules/front-door.bicep"),
    ),
    (
        "modules/monitoring.bicep",
        include_str!("../templates/bicep/modules/monitoring.bicep"),
    ),
    (
        "tenants/bucket.bicep",
        include_str!("../templates/bicep/tenants/bucket.bicep"),
    ),
];

/// Modules written for every Azure environment (the Front Door module only with Front Door).
const MODULES: &[&str] = &[
    "modules/log-analytics.bicep",
    "modules/identity.bicep",
    "modules/key-vault.bicep",
    "modules/storage.bicep",
    "modules/container-env.bicep",
    "modules/container-app.bicep",
    "modules/postgres.bicep",
    "modules/redis.bicep",
    "modules/monitoring.bicep",
];

/// Adds the Bicep files of one environment (none when it has no `azure` section).
pub fn emit(env: Env<'_>, files: &mut Files) {
    let p = env.platform;
    let Some(az) = p.azure.as_ref() else {
        return;
    };
    let root = format!("{}/bicep", p.name);
    let names = Names::of(p);
    let tags: Vec<Tag<'_>> = az
        .tags
        .iter()
        .map(|(key, value)| Tag { key, value })
        .collect();
    let mut params = SecureParams::default();
    let apps = platform_apps(p, &mut params);

    let dedicated: Vec<&Tenant> = env
        .tenants()
        .filter(|t| t.instance == InstanceMode::Dedicated)
        .collect();
    let kombistack = p.service("kombistack").filter(|s| s.enabled);
    let buckets = match kombistack {
        Some(_) => buckets(&dedicated),
        None => Vec::new(),
    };
    let width = bucket_width(buckets.len());
    let bucket_paths: Vec<(usize, String)> = buckets
        .iter()
        .enumerate()
        .filter(|(_, b)| !b.is_empty())
        .map(|(i, _)| (i, format!("tenants/bucket-{i:0width$}.bicep")))
        .collect();

    let fd = p.front_door.as_ref().map(|fd| front_door(p, fd, &apps));
    let pg = &p.postgres;
    let pg_password = match &pg.admin_password {
        SecretRef::KeyVault(name) => format!("vault.getSecret({})", quote(name)),
        SecretRef::Env(var) => params.add(var, "The PostgreSQL administrator password"),
    };
    let key_vault_secrets = key_vault_secrets(p, &apps);
    let kong_ident = apps.first().map_or("appKong", |a| a.ident.as_str());

    let main = minijinja::context! {
        env => p.name.as_str(),
        resource_group => az.resource_group.as_str(),
        location => az.location.as_str(),
        tenant_id => az.tenant_id.as_str(),
        tags => sv(&tags),
        names => sv(&names),
        log_retention_days => az.log_retention_days,
        blob_retention_days => p.backup.blob_retention_days.clamp(1, 365),
        pg => minijinja::context! {
            version => pg.version.as_str(),
            sku => pg.sku.as_str(),
            tier => pg.tier.as_str(),
            storage_gb => pg.storage_gb,
            backup_retention_days => pg.backup_retention_days,
            geo_redundant_backup => pg.geo_redundant_backup,
            high_availability => pg.high_availability,
            admin_user => pg.admin_user.as_str(),
            password => pg_password.as_str(),
        },
        redis => minijinja::context! {
            sku => p.redis.sku.as_str(),
            family => if p.redis.sku.eq_ignore_ascii_case("premium") { "P" } else { "C" },
            capacity => p.redis.capacity,
            non_ssl => !p.redis.ssl,
        },
        apps => sv(&apps),
        kong_ident => kong_ident,
        fd => sv(&fd),
        secure_params => sv(&params.list),
        key_vault_secrets => sv(&key_vault_secrets),
        orphans => if kombistack.is_none() { dedicated.len() } else { 0 },
        buckets => sv(&bucket_paths.iter().map(|(_, path)| path.as_str()).collect::<Vec<_>>()),
    };
    files.insert(format!("{root}/main.bicep"), render("main.bicep", &main));

    let firewall = firewall_rules(&pg.allowed_cidrs);
    let last_rule = firewall.last().map_or("allowAzure", |r| r.ident.as_str());
    let databases = databases(&pg.databases, last_rule);
    let module_ctx = minijinja::context! {
        firewall_rules => sv(&firewall),
        databases => sv(&databases),
        fd => sv(&fd),
        mon => sv(&monitoring(p)),
    };
    for module in MODULES {
        files.insert(format!("{root}/{module}"), render(module, &module_ctx));
    }
    if fd.is_some() {
        let module = "modules/front-door.bicep";
        files.insert(format!("{root}/{module}"), render(module, &module_ctx));
    }

    if let Some(service) = kombistack {
        let mut tenant_params = SecureParams::default();
        let mut app = service_app(p, service, &mut tenant_params);
        app.env.retain(|e| {
            !matches!(
                e.name.as_str(),
                "TENANT_SLUG" | "TENANT_ORG_ID" | "TENANT_STATUS"
            )
        });
        for (i, path) in &bucket_paths {
            let rows: Vec<TenantRow<'_>> = buckets[*i]
                .iter()
                .map(|t| TenantRow::of(p, t, &service.scale))
                .collect();
            let ctx = minijinja::context! {
                env => p.name.as_str(),
                resource_group => az.resource_group.as_str(),
                location => az.location.as_str(),
                index => i,
                count => buckets.len(),
                per_bucket => TARGET_PER_BUCKET,
                path => path.as_str(),
                tags => sv(&tags),
                names => sv(&names),
                secure_params => sv(&tenant_params.list),
                tenants => sv(&rows),
                app => sv(&app),
            };
            files.insert(
                format!("{root}/{path}"),
                render("tenants/bucket.bicep", &ctx),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build();
        match syntax {
            Ok(s) => env.set_syntax(s),
            Err(e) => panic!("bicep template syntax configuration: {e}"),
        }
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Every string a template prints must go through one of these filters: `q` (a quoted
        // literal), `esc` (inside a literal or a comment) or `raw` (an identifier or expression
        // built here). The formatter refuses anything else, so user text cannot slip into a
        // file unescaped.
        env.add_filter("q", |s: &str| Value::from_safe_string(quote(s)));
        env.add_filter("esc", |s: &str| Value::from_safe_string(escape(s)));
        env.add_filter("raw", |s: &str| Value::from_safe_string(s.to_string()));
        env.set_formatter(format_value);
        let api = API
            .entries()
            .into_iter()
            .map(|(k, v)| (k, Value::from_safe_string(v.to_string())));
        env.add_global("api", Value::from_pairs(api));
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                panic!("bicep template {name} does not parse: {e:#}");
            }
        }
        env
    })
}

/// Prints a value into a template: booleans as Bicep writes them, numbers as they are,
/// strings only when a filter made them safe.
fn format_value(
    out: &mut minijinja::Output<'_>,
    state: &mut minijinja::State<'_, '_>,
    value: &Value,
) -> Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    match value.kind() {
        ValueKind::Bool => {
            let text = if value.is_true() { "true" } else { "false" };
            out.write_str(text).map_err(minijinja::Error::from)
        }
        ValueKind::String if !value.is_safe() => Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("string {value:?} printed without `q`, `esc` or `raw`"),
        )),
        _ => minijinja::escape_formatter(out, state, value),
    }
}

/// Renders a template. A failure is a bug in a template (every value it uses is prepared
/// here and user text only ever passes through the quoting filters), so it panics.
fn render(name: &str, ctx: &Value) -> String {
    let env = templates();
    let result = env.get_template(name).and_then(|t| t.render(ctx));
    match result {
        Ok(s) => s,
        Err(e) => panic!("bicep template {name} failed to render: {e:#}"),
    }
}

fn sv<T: Serialize>(x: &T) -> Value {
    Value::from(minijinja::value::Serde(x))
}

/// A Bicep string literal: single quotes, with `\`, `'`, `$` and control characters escaped.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    out.push_str(&escape(s));
    out.push('\'');
    out
}

/// The inside of a Bicep string literal (see [`quote`]).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '$' => out.push_str("\\$"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:X}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// A Bicep identifier from a name: letters and digits kept, the rest dropped, each part after
/// a dropped character capitalised (`kombi-sim` → `kombiSim`), prefixed.
fn ident(prefix: &str, name: &str) -> String {
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
// Template data
// ---------------------------------------------------------------------------------------

#[derive(Serialize)]
struct Tag<'a> {
    key: &'a str,
    value: &'a str,
}

/// Every resource name, from `model::naming`.
#[derive(Serialize)]
struct Names {
    logs: String,
    identity: String,
    key_vault: String,
    storage: String,
    state_container: &'static str,
    backup_container: &'static str,
    container_env: String,
    postgres: String,
    redis: String,
    front_door: String,
    front_door_endpoint: String,
    action_group: String,
}

impl Names {
    fn of(p: &Platform) -> Names {
        Names {
            logs: naming::log_analytics(p),
            identity: naming::identity(p),
            key_vault: naming::key_vault(p),
            storage: naming::storage_account(p),
            state_container: naming::STATE_CONTAINER,
            backup_container: naming::BACKUP_CONTAINER,
            container_env: naming::container_env(p),
            postgres: naming::postgres_server(p),
            redis: naming::redis(p),
            front_door: naming::front_door(p),
            front_door_endpoint: naming::front_door_endpoint(p),
            action_group: naming::action_group(p),
        }
    }
}

/// `@secure()` parameters standing for secrets kept in environment variables of whoever
/// deploys (`SecretRef::Env`): declared without a default, supplied at deployment.
#[derive(Default)]
struct SecureParams {
    list: Vec<SecureParam>,
}

#[derive(Clone, Serialize)]
struct SecureParam {
    ident: String,
    env_var: String,
    description: String,
}

impl SecureParams {
    /// The parameter for environment variable `var` (declared once), as a Bicep expression.
    fn add(&mut self, var: &str, what: &str) -> String {
        let safe: String = var
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let ident = format!("secretEnv_{safe}");
        if !self.list.iter().any(|p| p.ident == ident) {
            self.list.push(SecureParam {
                ident: ident.clone(),
                env_var: var.to_string(),
                description: format!(
                    "{what}, from the environment variable {var} of whoever deploys"
                ),
            });
        }
        ident
    }
}

#[derive(Clone, Serialize)]
struct EnvVar {
    name: String,
    value: Option<String>,
    secret_ref: Option<String>,
}

#[derive(Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct KvSecret {
    /// Container App secret name (lowercase).
    name: String,
    /// Key Vault secret name.
    key_vault: String,
}

#[derive(Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct SuppliedSecret {
    name: String,
    param: String,
}

#[derive(Clone, Serialize)]
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

#[derive(Clone, Serialize)]
struct Probe {
    port: u16,
    scheme: &'static str,
    liveness: String,
    readiness: String,
    period: u32,
}

/// One Container App of the platform (Kong or a service).
#[derive(Clone, Serialize)]
struct App {
    /// Key for the deployment name (`kong`, service name).
    key: String,
    ident: String,
    name: String,
    comment: String,
    image: String,
    port: u16,
    external: bool,
    scale: ScaleData,
    probe: Probe,
    env: Vec<EnvVar>,
    key_vault_secrets: Vec<KvSecret>,
    supplied_secrets: Vec<SuppliedSecret>,
    depends_on: Vec<String>,
}

/// Collects env vars and the secrets they reference for one app.
#[derive(Default)]
struct AppEnv {
    env: Vec<EnvVar>,
    kv: BTreeSet<KvSecret>,
    supplied: BTreeSet<SuppliedSecret>,
}

impl AppEnv {
    fn plain(&mut self, name: &str, value: &str) {
        self.env.push(EnvVar {
            name: name.to_string(),
            value: Some(value.to_string()),
            secret_ref: None,
        });
    }

    fn secret(&mut self, name: &str, secret: &SecretRef, params: &mut SecureParams) {
        let app_secret = match secret {
            SecretRef::KeyVault(kv) => {
                let app_secret = kv.to_ascii_lowercase();
                self.kv.insert(KvSecret {
                    name: app_secret.clone(),
                    key_vault: kv.clone(),
                });
                app_secret
            }
            SecretRef::Env(var) => {
                let app_secret = format!("env-{}", var.to_ascii_lowercase().replace('_', "-"));
                let param = params.add(var, "A Container App secret");
                self.supplied.insert(SuppliedSecret {
                    name: app_secret.clone(),
                    param,
                });
                app_secret
            }
        };
        self.env.push(EnvVar {
            name: name.to_string(),
            value: None,
            secret_ref: Some(app_secret),
        });
    }
}

fn probe_period(p: &Platform) -> u32 {
    // Container Apps accept 1 to 240 seconds.
    p.monitoring.probe_period_seconds.clamp(1, 240)
}

/// Kong first, then every enabled service in model order (sorted by name).
fn platform_apps(p: &Platform, params: &mut SecureParams) -> Vec<App> {
    let mut apps = vec![kong_app(p, params)];
    for s in p.services.iter().filter(|s| s.enabled) {
        let mut app = service_app(p, s, params);
        app.depends_on = service_dependencies(p, s);
        apps.push(app);
    }
    apps
}

fn kong_app(p: &Platform, params: &mut SecureParams) -> App {
    let mut e = AppEnv::default();
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
        e.plain(name, value);
    }
    if let Some(license) = &p.kong.license {
        e.secret("KONG_LICENSE_DATA", license, params);
    }
    let mut vault_refs: Vec<&SecretRef> = Vec::new();
    vault_refs.extend(p.kong.session_secret.as_ref());
    vault_refs.extend(p.kong.upstream_mtls.as_ref().map(|m| &m.client_key));
    vault_refs.extend(p.redis.password.as_ref());
    for secret in vault_refs {
        let name = crate::kong::vault_env_var(secret);
        if !e.env.iter().any(|v| v.name == name) {
            e.secret(&name, secret, params);
        }
    }
    let mut depends_on = vec!["redis".to_string(), "postgres".to_string()];
    depends_on.sort();
    App {
        key: "kong".to_string(),
        ident: "appKong".to_string(),
        name: naming::container_app(p, "kong"),
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
        probe: Probe {
            port: 8100,
            scheme: "HTTP",
            liveness: "/status".to_string(),
            readiness: "/status/ready".to_string(),
            period: probe_period(p),
        },
        env: e.env,
        key_vault_secrets: e.kv.into_iter().collect(),
        supplied_secrets: e.supplied.into_iter().collect(),
        depends_on,
    }
}

fn service_app(p: &Platform, s: &Service, params: &mut SecureParams) -> App {
    let mut e = AppEnv::default();
    for (name, value) in &s.env {
        match value {
            EnvValue::Plain(v) => e.plain(name, v),
            EnvValue::Secret { secret } => e.secret(name, secret, params),
        }
    }
    App {
        key: s.name.clone(),
        ident: ident("app", &s.name),
        name: naming::container_app(p, &s.name),
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
        probe: Probe {
            port: s.port,
            scheme: match s.protocol {
                Protocol::Http => "HTTP",
                Protocol::Https => "HTTPS",
            },
            liveness: s.health_path.clone(),
            readiness: s.ready_path.clone(),
            period: probe_period(p),
        },
        env: e.env,
        key_vault_secrets: e.kv.into_iter().collect(),
        supplied_secrets: e.supplied.into_iter().collect(),
        depends_on: Vec::new(),
    }
}

/// Modules a service's app waits for: the services it depends on, and PostgreSQL for the
/// services that use it (as in the resource graph).
fn service_dependencies(p: &Platform, s: &Service) -> Vec<String> {
    let mut deps: BTreeSet<String> = s
        .depends_on
        .iter()
        .filter(|d| p.service(d).is_some_and(|d| d.enabled))
        .map(|d| ident("app", d))
        .collect();
    if matches!(s.name.as_str(), "sso" | "admin" | "health") {
        deps.insert("postgres".to_string());
    }
    deps.into_iter().collect()
}

/// The Key Vault secrets the platform's files name, sorted, for the deployment notes.
fn key_vault_secrets(p: &Platform, apps: &[App]) -> Vec<String> {
    let mut all: BTreeSet<String> = apps
        .iter()
        .flat_map(|a| a.key_vault_secrets.iter().map(|s| s.key_vault.clone()))
        .collect();
    if let SecretRef::KeyVault(n) = &p.postgres.admin_password {
        all.insert(n.clone());
    }
    all.into_iter().collect()
}

/// A PostgreSQL firewall rule for one block of `postgres.allowedCidrs`.
#[derive(Serialize)]
struct FirewallRule {
    ident: String,
    name: String,
    start: String,
    end: String,
    /// The resource this one waits for: the server answers ServerIsBusy to concurrent writes.
    after: String,
}

/// The firewall rules of `cidrs` (IPv4 blocks, checked by the spec), one after another after
/// the Azure services rule.
fn firewall_rules(cidrs: &[String]) -> Vec<FirewallRule> {
    let mut out: Vec<FirewallRule> = Vec::with_capacity(cidrs.len());
    for cidr in cidrs {
        let Some((start, end)) = kombiform_model::ipv4_cidr_range(cidr) else {
            continue;
        };
        let after = out
            .last()
            .map_or_else(|| "allowAzure".to_string(), |r| r.ident.clone());
        out.push(FirewallRule {
            ident: format!("allowClient{}", out.len()),
            name: naming::postgres_firewall_rule(cidr),
            start: start.to_string(),
            end: end.to_string(),
            after,
        });
    }
    out
}

#[derive(Serialize)]
struct Database {
    ident: String,
    name: String,
    /// The resource this one waits for (the last firewall rule, then the previous database).
    after: String,
}

/// The databases, one after another after `first_after` (the last firewall rule).
fn databases(names: &[String], first_after: &str) -> Vec<Database> {
    let mut out: Vec<Database> = Vec::with_capacity(names.len());
    let mut taken = BTreeSet::new();
    for name in names {
        let mut id = ident("database", name);
        if !taken.insert(id.clone()) {
            id = format!("{id}{}", out.len());
            taken.insert(id.clone());
        }
        let after = out
            .last()
            .map_or_else(|| first_after.to_string(), |d| d.ident.clone());
        out.push(Database {
            ident: id,
            name: name.clone(),
            after,
        });
    }
    out
}

#[derive(Clone, Serialize)]
struct Origin {
    name: String,
    ident: String,
    app_ident: String,
    probe_path: String,
    patterns: Vec<String>,
    after: Option<String>,
}

#[derive(Clone, Serialize)]
struct CustomDomain {
    name: String,
    host: String,
}

#[derive(Clone, Serialize)]
struct FrontDoorData {
    sku: String,
    custom_domain: Option<CustomDomain>,
    probe_interval: u32,
    origins: Vec<Origin>,
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

fn front_door(p: &Platform, fd: &kombiform_model::FrontDoor, apps: &[App]) -> FrontDoorData {
    let mut origins = vec![Origin {
        name: "kong".to_string(),
        ident: "kong".to_string(),
        app_ident: "appKong".to_string(),
        probe_path: kong_probe_path(p),
        patterns: vec!["/*".to_string()],
        after: None,
    }];
    for s in p
        .services
        .iter()
        .filter(|s| s.enabled && s.front_door_origin)
    {
        if s.name == "kong" || !apps.iter().any(|a| a.key == s.name) {
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
        let after = origins.last().map(|o| format!("{}Route", o.ident));
        origins.push(Origin {
            name: s.name.clone(),
            ident: ident("", &s.name),
            app_ident: ident("app", &s.name),
            probe_path: s.health_path.clone(),
            patterns: patterns.into_iter().collect(),
            after,
        });
    }
    FrontDoorData {
        sku: fd.sku.clone(),
        custom_domain: fd.custom_domain.as_ref().map(|host| CustomDomain {
            name: naming::front_door_custom_domain(host),
            host: host.clone(),
        }),
        // Front Door accepts 5 to 255 seconds.
        probe_interval: p.monitoring.probe_period_seconds.clamp(5, 255),
        origins,
    }
}

#[derive(Serialize)]
struct Email {
    name: String,
    address: String,
}

#[derive(Serialize)]
struct MonitoringData {
    short_name: String,
    emails: Vec<Email>,
    error_threshold: u32,
    kong_5xx: String,
    kong_5xx_description: String,
    kong_unhealthy: String,
    postgres_cpu: String,
}

fn monitoring(p: &Platform) -> MonitoringData {
    let prefix = p.azure.as_ref().map_or("kfy", |a| a.name_prefix.as_str());
    // Action group short names are at most 12 characters.
    let short_name: String = format!("{prefix}-{}", p.name).chars().take(12).collect();
    let m = &p.monitoring;
    MonitoringData {
        short_name,
        emails: m
            .alert_emails
            .iter()
            .enumerate()
            .map(|(i, address)| Email {
                name: format!("email-{i}"),
                address: address.clone(),
            })
            .collect(),
        error_threshold: m.error_rate_threshold,
        kong_5xx: naming::alert_rule(p, "kong-5xx"),
        kong_5xx_description: format!(
            "Kong answered more than {} 5xx responses in 5 minutes.",
            m.error_rate_threshold
        ),
        kong_unhealthy: naming::alert_rule(p, "kong-unhealthy"),
        postgres_cpu: naming::alert_rule(p, "postgres-cpu"),
    }
}

// ---------------------------------------------------------------------------------------
// Dedicated tenants in hash buckets
// ---------------------------------------------------------------------------------------

#[derive(Serialize)]
struct TenantRow<'a> {
    name: String,
    slug: &'a str,
    org_id: &'a str,
    status: &'static str,
    min_replicas: u32,
}

impl<'a> TenantRow<'a> {
    fn of(p: &Platform, t: &'a Tenant, scale: &Scale) -> TenantRow<'a> {
        TenantRow {
            name: naming::tenant_app(p, t),
            slug: &t.slug,
            org_id: &t.zitadel_org_id,
            status: t.status.as_str(),
            // A suspended tenant's instance keeps its data but runs no replica.
            min_replicas: match t.status {
                kombiform_model::TenantStatus::Active => scale.min_replicas,
                kombiform_model::TenantStatus::Suspended => 0,
            },
        }
    }
}

/// FNV-1a, 64 bit: a stable hash (the same on every platform and in every release).
pub fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Splits tenants (sorted by slug) into `B` buckets by `stable_hash(slug) % B`, `B` the
/// smallest power of two with at most [`TARGET_PER_BUCKET`] tenants per bucket on average,
/// doubled while any bucket holds more than [`MAX_PER_BUCKET`]. Buckets keep slug order.
pub fn buckets<'t>(tenants: &[&'t Tenant]) -> Vec<Vec<&'t Tenant>> {
    if tenants.is_empty() {
        return Vec::new();
    }
    let mut count = 1usize;
    while tenants.len() > count * TARGET_PER_BUCKET {
        count *= 2;
    }
    loop {
        let mut out: Vec<Vec<&Tenant>> = vec![Vec::new(); count];
        for t in tenants {
            // Lossless: the remainder is below `count`, a usize.
            let i = (stable_hash(&t.slug) % count as u64) as usize;
            out[i].push(*t);
        }
        // Slugs are distinct, so their 64-bit hashes separate long before `count` reaches 2^32.
        if out.iter().all(|b| b.len() <= MAX_PER_BUCKET) || count >= 1 << 32 {
            return out;
        }
        count *= 2;
    }
}

/// Digits of bucket numbers in file names: at least three, so names sort numerically.
fn bucket_width(count: usize) -> usize {
    count.saturating_sub(1).to_string().len().max(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_everything_bicep_would_interpret() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote("O'Reilly"), r"'O\'Reilly'");
        assert_eq!(quote("a\\b"), r"'a\\b'");
        assert_eq!(quote("${evil}"), r"'\${evil}'");
        assert_eq!(quote("l1\nl2\t"), r"'l1\nl2\t'");
        assert_eq!(quote("\u{7}"), r"'\u{7}'");
    }

    #[test]
    fn identifiers() {
        assert_eq!(ident("app", "kombi-sim"), "appKombiSim");
        assert_eq!(ident("app", "sso"), "appSso");
        assert_eq!(ident("", "kombi-sim"), "kombiSim");
        assert_eq!(ident("database", "kombify_admin"), "databaseKombifyAdmin");
    }

    #[test]
    fn stable_hash_is_fnv1a() {
        // Reference values of FNV-1a 64.
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn bucket_widths() {
        assert_eq!(bucket_width(1), 3);
        assert_eq!(bucket_width(64), 3);
        assert_eq!(bucket_width(1024), 4);
    }
}
