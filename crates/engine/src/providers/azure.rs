//! The Azure provider: the Azure inventory applied over ARM, resource by resource.
//!
//! `read` lists what lives in the environment's resource group with few requests: one GET of
//! the group, one list per top-level type, then one list per parent for nested types (Key
//! Vault secrets' metadata, databases, Front Door children). Each live resource is projected
//! onto the paths kombiform sets and normalised for what ARM rewrites (id and enum case,
//! location display names, defaults and read-only fields dropped; write-only values are never
//! compared), so that after an apply the next plan is empty. `apply` PUTs one resource's body
//! (the inventory's, from the plan), resolving what only exists at deployment: another
//! resource's property (read once and cached), the workspace's shared key, secrets.
//!
//! ARM's quirks: writes to one PostgreSQL server (the server and its children) go one at a
//! time and `ServerIsBusy` is retried; a Front Door route waits for its origins (a graph
//! dependency) and its refusal while an origin settles is retried; a Key Vault name held by a
//! soft-deleted vault is recovered (`createMode: recover`), not failed; a role assignment for
//! an identity the directory does not know yet (`PrincipalNotFound`) is retried until it
//! replicates. Secrets: kombiform generates the ones the platform can (random, written
//! straight into Key Vault, kept in memory for the rest of the run only) and takes the others
//! from `KV_*` variables; no secret value is ever read back, logged or returned.
//!
//! Not here: what the resources are (`kombiform_emit::azure`), ARM's protocol
//! (`kombiform_azure`), ordering and parallelism (`crate::apply`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value as Json};

use super::{Client, LiveRead, Registration, Transient};
use kombiform_azure::{Arm, ArmError, ArmOptions};
use kombiform_emit::azure::{self as inv, ArmResource, Inventory, Kind, SecretSource, Value};
use kombiform_emit::targets::azure::{self as target, flatten, pure_json};
use kombiform_model::secret::{self, Secret};
use kombiform_model::{Env, SecretRef};
use kombiform_plan::{Action, Change, Resource};

/// The Azure provider's registration.
pub const REGISTRATION: Registration = Registration {
    target: &target::Azure,
    connect: connect_env,
    available: super::always,
};

/// How long a role assignment waits for a new identity to replicate, at most.
const PRINCIPAL_WAIT: Duration = Duration::from_secs(600);

fn connect_env(env: Env<'_>) -> Result<Box<dyn Client>> {
    let inventory = inv::inventory(env)
        .with_context(|| format!("environment `{}` has no azure section", env.name()))?;
    let arm = Arm::new(
        kombiform_azure::ArmConfig::from_env().context("configuring the ARM client")?,
        ArmOptions::default(),
    )
    .context("creating the ARM client")?;
    Ok(Box::new(Azure::new(
        inventory,
        arm,
        crate::ops::env_lookup,
    )?))
}

/// A missing secret a person must provide before everything can be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingSecret {
    /// The inventory address (`azure.kv-secret.stripe-webhook-secret`).
    pub address: String,
    /// The Key Vault secret's name.
    pub name: String,
    /// The vault.
    pub vault: String,
}

impl MissingSecret {
    /// The command that sets it.
    pub fn command(&self) -> String {
        format!(
            "az keyvault secret set --vault-name {} --name {} --value \"$VALUE\"   (or export {} for the apply)",
            self.vault,
            self.name,
            secret::variable(&SecretRef::KeyVault(self.name.clone()))
        )
    }
}

/// The Azure client.
pub struct Azure {
    runtime: tokio::runtime::Runtime,
    arm: Arm,
    inventory: Inventory,
    /// Every resource of the inventory, families expanded.
    all: Vec<ArmResource>,
    /// Ids by address.
    ids: HashMap<String, String>,
    /// Resources as ARM last answered them, by lower-case id.
    live: Mutex<HashMap<String, Json>>,
    /// Secrets generated or set during this run, by Key Vault name (never logged).
    secrets: Mutex<HashMap<String, Secret>>,
    /// One lock per PostgreSQL server: its writes go one at a time.
    servers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Reads a secret's variable (`KV_*`, or an `env:` secret).
    lookup: fn(&str) -> Option<String>,
}

impl std::fmt::Debug for Azure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Azure")
            .field("env", &self.inventory.env)
            .finish_non_exhaustive()
    }
}

impl Azure {
    /// A client applying `inventory` through `arm`; secrets' variables read with `lookup`.
    pub fn new(
        inventory: Inventory,
        arm: Arm,
        lookup: fn(&str) -> Option<String>,
    ) -> Result<Azure> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the Azure provider's runtime")?;
        let all = inventory.all();
        let ids = all
            .iter()
            .map(|r| (r.address.clone(), r.id.clone()))
            .collect();
        Ok(Azure {
            runtime,
            arm,
            inventory,
            all,
            ids,
            live: Mutex::new(HashMap::new()),
            secrets: Mutex::new(HashMap::new()),
            servers: Mutex::new(HashMap::new()),
            lookup,
        })
    }

    /// The ARM client (its request counts).
    pub fn arm(&self) -> &Arm {
        &self.arm
    }

    /// The provided secrets a plan's changes would create but whose value nobody gave
    /// (no `KV_*` variable): a person must set them first.
    pub fn missing_secrets(&self, changes: &[Change]) -> Vec<MissingSecret> {
        changes
            .iter()
            .filter(|c| c.action == Action::Create)
            .filter_map(|c| {
                let r = c.desired.as_ref()?;
                if target::kind_of(r) != Some(Kind::ProvidedSecret) {
                    return None;
                }
                let name = c.address.rsplit('.').next()?.to_string();
                let var = secret::variable(&SecretRef::KeyVault(name.clone()));
                (self.lookup)(&var).is_none().then(|| MissingSecret {
                    address: c.address.clone(),
                    name,
                    vault: self.inventory.key_vault.clone(),
                })
            })
            .collect()
    }

    fn remember(&self, body: &Json) {
        if let Some(id) = body.get("id").and_then(Json::as_str) {
            if let Ok(mut live) = self.live.lock() {
                live.insert(id.to_ascii_lowercase(), body.clone());
            }
        }
    }

    fn cached(&self, id: &str) -> Option<Json> {
        self.live
            .lock()
            .ok()
            .and_then(|l| l.get(&id.to_ascii_lowercase()).cloned())
    }

    // -------------------------------------------------------------------------------------
    // Read
    // -------------------------------------------------------------------------------------

    async fn read_all(&self) -> Result<Vec<Json>> {
        let group = self.inventory.group_id();
        let Some(rg) = self
            .arm
            .get(&group, kombiform_emit::bicep::API.resource_groups)
            .await
            .with_context(|| format!("reading resource group {}", self.inventory.resource_group))?
        else {
            return Ok(Vec::new());
        };
        let mut found = vec![rg];
        let mut seen: BTreeSet<String> = BTreeSet::new();
        seen.insert(group.to_ascii_lowercase());
        // Level by level: top-level types, then children of what exists.
        for level in self.levels() {
            let mut requests: BTreeMap<String, (String, String, bool)> = BTreeMap::new();
            for r in level {
                let parent_id = self.parent_id(r);
                if !seen.contains(&parent_id.to_ascii_lowercase()) {
                    continue;
                }
                if r.name == "default" {
                    requests.insert(
                        r.id.to_ascii_lowercase(),
                        (r.id.clone(), r.api_version.clone(), false),
                    );
                    continue;
                }
                let collection = match (&r.parent, &r.scope) {
                    (None, None) => format!("{group}/providers/{}", r.type_),
                    _ => {
                        r.id.rsplit_once('/')
                            .map(|x| x.0.to_string())
                            .unwrap_or_default()
                    }
                };
                requests.entry(collection.to_ascii_lowercase()).or_insert((
                    collection,
                    r.api_version.clone(),
                    true,
                ));
            }
            let mut tasks = tokio::task::JoinSet::new();
            for (_, (path, api, list)) in requests {
                let arm = self.arm.clone();
                tasks.spawn(async move {
                    if list {
                        arm.list(&path, &api).await
                    } else {
                        arm.get(&path, &api).await.map(|v| v.into_iter().collect())
                    }
                });
            }
            while let Some(joined) = tasks.join_next().await {
                let items = joined
                    .context("a read task failed")?
                    .map_err(anyhow::Error::new)
                    .context("reading live Azure resources")?;
                for item in &items {
                    seen.insert(id_of(item).to_ascii_lowercase());
                }
                found.extend(items);
            }
        }
        Ok(found)
    }

    /// The id of the resource `r` lives under (its group, parent or scope).
    fn parent_id(&self, r: &ArmResource) -> String {
        match r.parent.as_ref().or(r.scope.as_ref()) {
            None => self.inventory.group_id(),
            Some(p) => self.ids.get(p).cloned().unwrap_or_default(),
        }
    }

    /// The inventory's resources by depth below the group (the group itself left out).
    fn levels(&self) -> Vec<Vec<&ArmResource>> {
        let mut depth: HashMap<&str, usize> = HashMap::new();
        let mut levels: Vec<Vec<&ArmResource>> = Vec::new();
        // Parents come before their children in the inventory.
        for r in self.all.iter().filter(|r| r.kind != Kind::ResourceGroup) {
            let d = match r.parent.as_ref().or(r.scope.as_ref()) {
                None => 0,
                Some(p) => depth.get(p.as_str()).map_or(0, |d| d + 1),
            };
            depth.insert(&r.address, d);
            if levels.len() <= d {
                levels.resize_with(d + 1, Vec::new);
            }
            levels[d].push(r);
        }
        levels
    }

    /// The plan resource of a live body.
    fn live_resource(&self, body: &Json, desired: Option<&ArmResource>) -> Option<Resource> {
        let id = id_of(body);
        let (address, type_, api, data_bearing, kind, tenant) = match desired {
            Some(r) => (
                r.address.clone(),
                r.type_.clone(),
                r.api_version.clone(),
                r.data_bearing,
                r.kind,
                r.tenant.clone(),
            ),
            None => {
                let type_ = type_of_id(&id)?;
                let full = inv::SHORT
                    .iter()
                    .find(|(t, _)| t.eq_ignore_ascii_case(&type_))?
                    .0;
                let name = id.rsplit('/').next().unwrap_or_default().to_string();
                let api = self
                    .all
                    .iter()
                    .find(|r| r.type_ == full)
                    .map(|r| r.api_version.clone())?;
                let prefix = format!("{}-t-", self.base());
                let tenant = (full == "Microsoft.App/containerApps")
                    .then(|| name.strip_prefix(&prefix).map(str::to_string))
                    .flatten();
                let kind = match full {
                    "Microsoft.KeyVault/vaults/secrets" => Kind::ProvidedSecret,
                    "Microsoft.Resources/resourceGroups" => Kind::ResourceGroup,
                    _ => Kind::Plain,
                };
                let data_bearing = tenant.is_some() || data_bearing_type(full);
                (
                    inv::address(full, &name),
                    full.to_string(),
                    api,
                    data_bearing,
                    kind,
                    tenant,
                )
            }
        };
        let attrs = match desired {
            Some(r) => flatten(&self.project(r, body)),
            None => Map::new(),
        };
        let mut out = Resource::new(address, attrs);
        out.data_bearing = data_bearing;
        out.meta.insert("id".into(), json!(id));
        out.meta.insert("type".into(), json!(type_));
        out.meta.insert("api_version".into(), json!(api));
        out.meta.insert(
            "kind".into(),
            serde_json::to_value(kind).unwrap_or(Json::Null),
        );
        if let Some(t) = tenant {
            out.meta.insert("tenant".into(), json!(t));
        }
        if let Some(r) = desired {
            out.depends_on = r.depends_on.clone();
        }
        Some(out)
    }

    fn base(&self) -> String {
        // Every platform name is `<prefix>-<env>-…`: the identity's name minus `-id`.
        let id = self
            .inventory
            .resources
            .iter()
            .find(|r| r.type_ == "Microsoft.ManagedIdentity/userAssignedIdentities")
            .map(|r| r.name.clone())
            .unwrap_or_default();
        id.trim_end_matches("-id").to_string()
    }

    /// A live body projected onto what `r` sets, in the desired form wherever they agree.
    fn project(&self, r: &ArmResource, body: &Json) -> Json {
        let want = pure_json(&r.body);
        let mut resolve = |v: &Value| -> Result<Option<Json>, ()> {
            Ok(match v {
                Value::Prop { of, path } => {
                    self.cached(&of.id).and_then(|b| at_path(&b, path).cloned())
                }
                _ => None,
            })
        };
        let want_live = r
            .body
            .to_json(&mut resolve)
            .ok()
            .flatten()
            .unwrap_or(Json::Null);
        project(&want, Some(&want_live), body, "")
    }

    // -------------------------------------------------------------------------------------
    // Apply
    // -------------------------------------------------------------------------------------

    async fn apply_change(&self, c: &Change) -> Result<()> {
        match c.action {
            Action::Delete => {
                let live = c
                    .live
                    .as_ref()
                    .context("a delete without its live resource")?;
                let (id, api) = id_api(live)?;
                self.arm
                    .delete_and_wait(&id, &api)
                    .await
                    .map_err(classify)
                    .with_context(|| format!("deleting {id}"))?;
                if let Ok(mut l) = self.live.lock() {
                    l.remove(&id.to_ascii_lowercase());
                }
                Ok(())
            }
            Action::Replace => {
                let live = c
                    .live
                    .as_ref()
                    .context("a replacement without its live resource")?;
                let (id, api) = id_api(live)?;
                self.arm
                    .delete_and_wait(&id, &api)
                    .await
                    .map_err(classify)?;
                self.put(c, false).await
            }
            Action::Create => self.put(c, false).await,
            Action::Update => self.put(c, true).await,
        }
    }

    async fn put(&self, c: &Change, exists: bool) -> Result<()> {
        let desired = c
            .desired
            .as_ref()
            .context("a change without its desired resource")?;
        let (id, api) = id_api(desired)?;
        let body: Value = serde_json::from_value(
            desired
                .meta
                .get("body")
                .cloned()
                .context("the plan carries no body")?,
        )
        .context("the plan's body is not an inventory body")?;
        let kind = target::kind_of(desired).unwrap_or(Kind::Plain);
        let secret_name = (kind != Kind::Plain && kind != Kind::ResourceGroup)
            .then(|| id.rsplit('/').next().unwrap_or_default().to_string());
        if let (Some(name), Kind::GeneratedSecret) = (&secret_name, kind) {
            let value = generate_secret();
            if let Ok(mut s) = self.secrets.lock() {
                s.insert(name.clone(), value);
            }
        }
        let json = self.resolve_body(&body, exists, &id).await?;
        let type_ = desired
            .meta
            .get("type")
            .and_then(Json::as_str)
            .unwrap_or_default();
        let server_lock = self.server_lock(&id);
        let _guard = match &server_lock {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        let result = if type_ == "Microsoft.Authorization/roleAssignments" {
            self.put_role_assignment(&id, &api, &json).await
        } else {
            self.arm.put_and_wait(&id, &api, &json).await
        };
        let put = match result {
            Err(e) if type_ == "Microsoft.KeyVault/vaults" && soft_deleted(&e) => {
                let mut recover = json.clone();
                if let Some(p) = recover.get_mut("properties").and_then(Json::as_object_mut) {
                    p.insert("createMode".into(), json!("recover"));
                }
                self.arm.put_and_wait(&id, &api, &recover).await
            }
            other => other,
        }
        .map_err(classify)
        .with_context(|| format!("writing {id}"))?;
        if secret_name.is_none() {
            self.remember(&put.resource);
        }
        Ok(())
    }

    /// Role assignments: the directory may not know a new identity yet.
    async fn put_role_assignment(
        &self,
        id: &str,
        api: &str,
        body: &Json,
    ) -> Result<kombiform_azure::Put, ArmError> {
        let start = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(250);
        loop {
            match self.arm.put_and_wait(id, api, body).await {
                Err(e)
                    if e.code() == Some("PrincipalNotFound")
                        && start.elapsed() < PRINCIPAL_WAIT =>
                {
                    tracing::debug!("role assignment {id}: principal not replicated yet, retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(15));
                }
                other => return other,
            }
        }
    }

    fn server_lock(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        let lower = id.to_ascii_lowercase();
        let marker = "/providers/microsoft.dbforpostgresql/flexibleservers/";
        let at = lower.find(marker)?;
        let rest = &lower[at + marker.len()..];
        let end = at + marker.len() + rest.find('/').unwrap_or(rest.len());
        let server = lower[..end].to_string();
        let mut map = self.servers.lock().ok()?;
        Some(map.entry(server).or_default().clone())
    }

    /// The body to send, every deployment-time value resolved.
    async fn resolve_body(&self, body: &Value, exists: bool, id: &str) -> Result<Json> {
        // Gather what needs a request first (properties of other resources, keys), then
        // resolve synchronously.
        let mut refs = Vec::new();
        collect_async(body, &mut refs);
        let mut answers: HashMap<String, Json> = HashMap::new();
        for v in refs {
            match v {
                Value::Prop { of, .. } if self.cached(&of.id).is_none() => {
                    let got = self
                        .arm
                        .get(&of.id, &of.api_version)
                        .await
                        .map_err(classify)?
                        .with_context(|| format!("{} does not exist yet", of.address))?;
                    self.remember(&got);
                }
                Value::StorageKey(of) => {
                    let keys = self
                        .arm
                        .post_and_wait(&format!("{}/listKeys", of.id), &of.api_version, None)
                        .await
                        .map_err(classify)
                        .with_context(|| format!("reading the access keys of {}", of.address))?;
                    if let Some(k) = keys.as_ref().and_then(|k| k.pointer("/keys/0/value")) {
                        answers.insert(of.id.to_ascii_lowercase(), k.clone());
                    }
                }
                Value::SharedKey(of) => {
                    let keys = self
                        .arm
                        .post_and_wait(&format!("{}/sharedKeys", of.id), &of.api_version, None)
                        .await
                        .map_err(classify)
                        .with_context(|| format!("reading the shared key of {}", of.address))?;
                    if let Some(k) = keys.as_ref().and_then(|k| k.get("primarySharedKey")) {
                        answers.insert(of.id.to_ascii_lowercase(), k.clone());
                    }
                }
                _ => {}
            }
        }
        let mut resolve = |v: &Value| -> Result<Option<Json>> {
            match v {
                Value::Prop { of, path } => {
                    let b = self
                        .cached(&of.id)
                        .with_context(|| format!("{} was not read", of.address))?;
                    let found = at_path(&b, path).cloned();
                    found
                        .map(Some)
                        .with_context(|| format!("{} has no {path}", of.address))
                }
                Value::SharedKey(of) => answers
                    .get(&of.id.to_ascii_lowercase())
                    .cloned()
                    .map(Some)
                    .with_context(|| format!("{} answered no shared key", of.address)),
                Value::StorageKey(of) => answers
                    .get(&of.id.to_ascii_lowercase())
                    .cloned()
                    .map(Some)
                    .with_context(|| format!("{} answered no access key", of.address)),
                Value::Secret(s) => self
                    .secret_value(s, exists, id)
                    .map(|s| s.map(|s| Json::String(s.expose().to_string()))),
                Value::Row(f) => anyhow::bail!("an unexpanded row field `{f}`"),
                _ => Ok(None),
            }
        };
        body.to_json(&mut resolve).map(|j| j.unwrap_or(Json::Null))
    }

    /// A secret's value: generated this run, or from its variable; on an update of a resource
    /// that exists, a Key Vault secret nobody gave is left out (ARM keeps the value it has).
    fn secret_value(&self, s: &SecretSource, exists: bool, id: &str) -> Result<Option<Secret>> {
        match s {
            SecretSource::KeyVault(name) => {
                if let Some(v) = self.secrets.lock().ok().and_then(|m| m.get(name).cloned()) {
                    return Ok(Some(v));
                }
                let var = secret::variable(&SecretRef::KeyVault(name.clone()));
                match (self.lookup)(&var) {
                    Some(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
                    _ if exists => Ok(None),
                    _ => anyhow::bail!(
                        "{id} needs the Key Vault secret {name}, which this run did not generate: set {var} to its value (kombiform never reads secrets back from Key Vault)"
                    ),
                }
            }
            SecretSource::Env(var) => match (self.lookup)(var) {
                Some(v) if !v.is_empty() => Ok(Some(Secret::new(v))),
                _ => anyhow::bail!("{id} needs a secret from the environment: set {var}"),
            },
        }
    }
}

impl Client for Azure {
    fn read(&self) -> Result<LiveRead> {
        let before = self.arm.counts().total();
        let bodies = self.runtime.block_on(self.read_all())?;
        for b in &bodies {
            self.remember(b);
        }
        let by_id: HashMap<String, &ArmResource> = self
            .all
            .iter()
            .map(|r| (r.id.to_ascii_lowercase(), r))
            .collect();
        let mut resources: BTreeMap<String, Resource> = BTreeMap::new();
        for b in &bodies {
            let desired = by_id.get(&id_of(b).to_ascii_lowercase()).copied();
            if let Some(r) = self.live_resource(b, desired) {
                resources.insert(r.address.clone(), r);
            }
        }
        Ok(LiveRead {
            resources: resources.into_values().collect(),
            requests: self.arm.counts().total() - before,
        })
    }

    fn missing_inputs(&self, changes: &[Change]) -> Vec<super::MissingInput> {
        self.missing_secrets(changes)
            .into_iter()
            .map(|m| super::MissingInput {
                what: format!("Key Vault secret {} of {}", m.name, m.vault),
                command: m.command(),
                address: m.address,
            })
            .collect()
    }

    fn apply(&self, changes: &[&Change]) -> Result<()> {
        for c in changes {
            self.runtime
                .block_on(self.apply_change(c))
                .with_context(|| format!("{} {}", c.action.as_str(), c.address))?;
        }
        Ok(())
    }
}

/// 32 random characters with upper, lower, digits and symbols (PostgreSQL's complexity rule
/// asks for three of the four kinds).
fn generate_secret() -> Secret {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_.~";
    let bytes = kombiform_sys::random_bytes::<32>();
    let mut s = String::with_capacity(36);
    s.push_str("Kf7-");
    for b in bytes {
        s.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
    }
    Secret::new(s)
}

/// A failure worth retrying becomes [`Transient`]: a busy server, an operation in progress, a
/// Front Door route whose origin is still settling.
fn classify(e: ArmError) -> anyhow::Error {
    let code = e.code().unwrap_or_default();
    let message = e.detail().map(|d| d.message.as_str()).unwrap_or_default();
    let retry = matches!(
        code,
        "ServerIsBusy"
            | "ServerBusy"
            | "AnotherOperationInProgress"
            | "Conflict"
            | "RetryableError"
    ) || message.contains("at least one enabled origin");
    if retry {
        return anyhow::Error::new(Transient {
            message: e.to_string(),
            retry_after: Some(Duration::from_millis(200)),
        });
    }
    anyhow::Error::new(e)
}

fn soft_deleted(e: &ArmError) -> bool {
    e.code() == Some("ConflictError")
        && e.detail()
            .is_some_and(|d| d.message.contains("deleted state"))
}

fn data_bearing_type(t: &str) -> bool {
    matches!(
        t,
        "Microsoft.DBforPostgreSQL/flexibleServers"
            | "Microsoft.DBforPostgreSQL/flexibleServers/databases"
            | "Microsoft.KeyVault/vaults"
            | "Microsoft.Storage/storageAccounts"
            | "Microsoft.Storage/storageAccounts/blobServices/containers"
            | "Microsoft.Storage/storageAccounts/fileServices/shares"
            | "Microsoft.Resources/resourceGroups"
    )
}

fn id_api(r: &Resource) -> Result<(String, String)> {
    let id = r
        .meta
        .get("id")
        .and_then(Json::as_str)
        .context("no ARM id in the plan")?;
    let api = r
        .meta
        .get("api_version")
        .and_then(Json::as_str)
        .context("no api-version in the plan")?;
    Ok((id.to_string(), api.to_string()))
}

fn id_of(body: &Json) -> String {
    body.get("id")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The full type of an ARM id (`…/providers/Microsoft.App/containerApps/x` →
/// `Microsoft.App/containerApps`; nested types joined).
fn type_of_id(id: &str) -> Option<String> {
    let segments: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
    let at = segments
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("providers"))?;
    let rest = segments.get(at + 1..)?;
    let ns = rest.first()?;
    let types: Vec<&str> = rest[1..].iter().step_by(2).copied().collect();
    if types.is_empty() {
        return None;
    }
    Some(format!("{ns}/{}", types.join("/")))
}

/// Values that need a request before a body can be resolved.
fn collect_async<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) | Value::Concat(items) => {
            items.iter().for_each(|i| collect_async(i, out))
        }
        Value::Object(pairs) => pairs.iter().for_each(|(_, v)| collect_async(v, out)),
        Value::Prop { .. } | Value::SharedKey(_) | Value::StorageKey(_) => out.push(v),
        _ => {}
    }
}

/// The value at a dotted path of a body.
fn at_path<'a>(body: &'a Json, path: &str) -> Option<&'a Json> {
    path.split('.').try_fold(body, |v, k| {
        v.as_object()?
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v)
    })
}

/// `have` projected onto the shape of `want`: where they agree (after normalising what ARM
/// rewrites), the desired form; where they differ, the live value. `want_live` is `want`
/// with references resolved against live resources (a placeholder matches the live value
/// of what it refers to).
fn project(want: &Json, want_live: Option<&Json>, have: &Json, key: &str) -> Json {
    match (want, have) {
        (Json::Object(w), Json::Object(h)) => {
            let mut out = Map::new();
            for (k, wv) in w {
                let Some(hv) = h
                    .iter()
                    .find(|(hk, _)| hk.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v)
                else {
                    continue;
                };
                let wl = want_live.and_then(|l| l.get(k));
                out.insert(k.clone(), project(wv, wl, hv, k));
            }
            Json::Object(out)
        }
        (Json::Array(w), Json::Array(h)) if w.len() == h.len() => Json::Array(
            w.iter()
                .zip(h)
                .enumerate()
                .map(|(i, (wv, hv))| {
                    let wl = want_live.and_then(|l| l.get(i));
                    project(wv, wl, hv, key)
                })
                .collect(),
        ),
        (Json::String(s), _) if is_placeholder(s) => match want_live {
            Some(l) if same(l, have, key) => want.clone(),
            _ => have.clone(),
        },
        _ if same(want, have, key) => want.clone(),
        _ => have.clone(),
    }
}

fn is_placeholder(s: &str) -> bool {
    s.contains("${azure.")
}

/// Equal after ARM's rewriting: strings without regard to case (ids, enums), locations
/// without spaces (`West Europe` is `westeurope`), numbers by value.
fn same(a: &Json, b: &Json, key: &str) -> bool {
    match (a, b) {
        (Json::String(x), Json::String(y)) if key == "location" => {
            let n = |s: &str| {
                s.chars()
                    .filter(|c| !c.is_whitespace())
                    .collect::<String>()
                    .to_ascii_lowercase()
            };
            n(x) == n(y)
        }
        (Json::String(x), Json::String(y)) => x.eq_ignore_ascii_case(y),
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_values_normalise_to_the_desired_form() {
        let want = json!({"location": "westeurope", "properties": {"sku": {"name": "PerGB2018"}, "principal": "${azure.identity.x.properties.principalId}"}});
        let want_live = json!({"location": "westeurope", "properties": {"sku": {"name": "PerGB2018"}, "principal": "p-1"}});
        let have = json!({"id": "/x", "location": "West Europe", "properties": {"sku": {"name": "pergb2018"}, "principal": "P-1", "customerId": "c"}});
        assert_eq!(project(&want, Some(&want_live), &have, ""), want);
        let drifted = json!({"location": "West Europe", "properties": {"sku": {"name": "Free"}, "principal": "other"}});
        let p = project(&want, Some(&want_live), &drifted, "");
        assert_eq!(p["properties"]["sku"]["name"], "Free");
        assert_eq!(p["properties"]["principal"], "other");
    }

    #[test]
    fn types_of_ids() {
        assert_eq!(
            type_of_id("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Cdn/profiles/p/originGroups/g/origins/o").as_deref(),
            Some("Microsoft.Cdn/profiles/originGroups/origins")
        );
        assert_eq!(
            type_of_id("/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v/providers/Microsoft.Authorization/roleAssignments/g").as_deref(),
            Some("Microsoft.Authorization/roleAssignments")
        );
    }

    #[test]
    fn generated_secrets_are_complex_and_fresh() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 36);
        assert!(format!("{a:?}").contains("redacted") || !format!("{a:?}").contains(a.expose()));
    }
}
