//! The Bicep emitter: an Azure environment's infrastructure as readable, deployable Bicep,
//! rendered from the Azure inventory (`crate::azure`): the same resources, bodies and
//! dependencies the ARM provider applies.
//!
//! For every environment whose Platform has `azure`, it writes `<env>/bicep/main.bicep` (the
//! platform: Log Analytics, identity, Key Vault and its role assignment, storage, Container
//! Apps environment and apps, PostgreSQL, Redis, Front Door, alerts, one `resource` each) and
//! the dedicated tenant instances in stable hash buckets (`<env>/bicep/tenants/bucket-NNN.bicep`,
//! a loop over the bucket's tenants), each bucket a deployment of its own so that no deployment
//! outgrows ARM's limits (800 resources, 4 MB) at any tenant count.
//!
//! What the inventory knows only at deployment becomes a Bicep expression: another resource's
//! id or property (`identity.properties.principalId`), the workspace's shared key
//! (`logs.listKeys().primarySharedKey`). Secrets stay references: Key Vault secrets for
//! Container Apps (`keyVaultUrl` + identity); the PostgreSQL password and environment-variable
//! secrets are `@secure()` parameters without a default, supplied by whoever deploys.
//!
//! What it is not: it deploys nothing (the ARM provider does, resource by resource). The
//! resource group and the Key Vault secrets' values are not in these files: the group is the
//! deployment's scope, secret values never touch a file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::Files;
use crate::azure::{self, ArmResource, Family, Inventory, SecretSource, Value};
use kombiform_model::{Env, Tenant};

#[cfg(test)]
use crate::azure::build::bicep_ident;

/// Api-versions pinned per resource type (the newest stable versions in `ref/arm.md`, §2;
/// types it does not list are marked).
#[derive(Clone, Copy, Debug)]
pub struct ApiVersions {
    /// `Microsoft.Resources/resourceGroups`.
    pub resource_groups: &'static str,
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
    /// (field name, api-version) pairs, by field name.
    pub fn entries(&self) -> [(&'static str, &'static str); 12] {
        [
            ("resource_groups", self.resource_groups),
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
    resource_groups: "2025-04-01",
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

/// Adds the Bicep files of one environment (none when it has no `azure` section).
pub fn emit(env: Env<'_>, files: &mut Files) {
    let Some(inv) = azure::inventory(env) else {
        return;
    };
    let root = format!("{}/bicep", inv.env);
    files.insert(format!("{root}/main.bicep"), main(&inv));
    for f in &inv.families {
        files.insert(format!("{root}/{}", f.file), bucket(&inv, f));
    }
}

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

/// `main.bicep`: every resource of the main deployment.
fn main(inv: &Inventory) -> String {
    let declared: Vec<&ArmResource> = inv.resources.iter().filter(|r| r.in_bicep()).collect();
    let symbols: BTreeMap<&str, &str> = declared
        .iter()
        .map(|r| (r.address.as_str(), r.symbol.as_str()))
        .collect();
    let mut params = Params::default();
    for r in &declared {
        params.collect(&r.body, "");
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "// The Azure platform of environment `{}`.",
        escape(&inv.env)
    );
    out.push_str("// Generated by kombiform from the specs. Do not edit: change the specs and run `kombiform build`.\n");
    out.push_str("//\n// kombiform deploys these resources itself (`kombiform apply`, resource by resource, over\n// ARM); this file is the readable break-glass path, into an existing resource group:\n");
    let _ = writeln!(
        out,
        "//   az group create --name {} --location {}",
        escape(&inv.resource_group),
        escape(&inv.location)
    );
    let _ = writeln!(
        out,
        "//   az deployment group create --resource-group {} --template-file main.bicep{}",
        escape(&inv.resource_group),
        params.command_line(inv)
    );
    let secrets: Vec<&ArmResource> = inv
        .resources
        .iter()
        .filter(|r| r.type_ == "Microsoft.KeyVault/vaults/secrets")
        .collect();
    if !secrets.is_empty() {
        let _ = writeln!(
            out,
            "//\n// Secrets are never in these files. The Container Apps read these Key Vault secrets of\n// {} (`kombiform apply` generates the first {} and asks for the others):",
            escape(&inv.key_vault),
            secrets
                .iter()
                .filter(|r| r.kind == azure::Kind::GeneratedSecret)
                .count()
        );
        for s in &secrets {
            let how = match s.kind {
                azure::Kind::GeneratedSecret => "generated",
                _ => "provided by a person",
            };
            let _ = writeln!(out, "//   {} ({how})", escape(&s.name));
        }
    }
    if !inv.families.is_empty() {
        out.push_str("//\n// Dedicated tenant instances are not part of this deployment: each file in\n// tenants/ is deployed on its own, after this one, so that no deployment outgrows ARM's\n// limits however many tenants there are:\n");
        for f in &inv.families {
            let _ = writeln!(
                out,
                "//   az deployment group create --resource-group {} --template-file {}",
                escape(&inv.resource_group),
                escape(&f.file)
            );
        }
    }
    if inv.orphans > 0 {
        let _ = writeln!(
            out,
            "//\n// {} dedicated tenant(s) get no instance: the `kombistack` service, whose image\n// dedicated instances run, is missing or disabled.",
            inv.orphans
        );
    }
    preamble(&mut out, inv, &params);
    let ctx = Ctx {
        inv,
        symbols: &symbols,
        row: None,
    };
    for r in &declared {
        out.push('\n');
        resource(&mut out, &ctx, r, None);
    }
    out.push('\n');
    let outputs = [
        (
            "kongFqdn",
            "azure.containerapp.",
            "properties.configuration.ingress.fqdn",
        ),
        (
            "postgresFqdn",
            "azure.postgres.",
            "properties.fullyQualifiedDomainName",
        ),
        ("redisHostName", "azure.redis.", "properties.hostName"),
        (
            "frontDoorHostName",
            "azure.frontdoor-endpoint.",
            "properties.hostName",
        ),
    ];
    for (name, prefix, path) in outputs {
        if let Some(r) = declared.iter().find(|r| r.address.starts_with(prefix)) {
            let _ = writeln!(out, "output {name} string = {}.{path}", r.symbol);
        }
    }
    out
}

/// One tenant bucket: the bucket's tenants as rows, the instances as a loop over them.
fn bucket(inv: &Inventory, f: &Family) -> String {
    let mut symbols: BTreeMap<&str, &str> = BTreeMap::new();
    let existing: Vec<&ArmResource> = f.existing.iter().filter_map(|a| inv.get(a)).collect();
    for r in &existing {
        symbols.insert(&r.address, &r.symbol);
    }
    let mut params = Params::default();
    params.collect(&f.template.body, "");
    let (index, count) = f.bucket;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "// Dedicated KombiStack instances of environment `{}`, bucket {index} of {count}.",
        escape(&inv.env)
    );
    out.push_str("// Generated by kombiform from the specs. Do not edit: change the specs and run `kombiform build`.\n//\n");
    let _ = writeln!(
        out,
        "// A tenant's bucket is the FNV-1a (64-bit) hash of its slug modulo {count}, so adding or\n// removing a tenant changes this one file; all buckets are rewritten only when their number\n// doubles (more than {TARGET_PER_BUCKET} tenants per bucket on average). Each bucket is deployed on its\n// own, after main.bicep (it uses the platform's environment, identity and Key Vault):"
    );
    let _ = writeln!(
        out,
        "//   az deployment group create --resource-group {} --template-file {}{}",
        escape(&inv.resource_group),
        escape(&f.file),
        params.command_line(inv)
    );
    preamble(&mut out, inv, &params);
    out.push_str("\n// The tenants of this bucket, sorted by slug.\nvar tenants = [\n");
    for row in &f.rows {
        let fields: Vec<String> = row
            .fields
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}: {}", quote(s)),
                other => format!("{k}: {other}"),
            })
            .collect();
        let _ = writeln!(out, "  {{ {} }}", fields.join(", "));
    }
    out.push_str("]\n");
    for r in &existing {
        let _ = writeln!(
            out,
            "\nresource {} '{}@{}' existing = {{\n  name: {}\n}}",
            r.symbol,
            r.type_,
            r.api_version,
            quote(&r.name)
        );
    }
    let ctx = Ctx {
        inv,
        symbols: &symbols,
        row: Some("t"),
    };
    out.push('\n');
    resource(&mut out, &ctx, &f.template, Some("tenants"));
    out
}

/// `targetScope`, the location parameter, the secure parameters and the tags.
fn preamble(out: &mut String, inv: &Inventory, params: &Params) {
    out.push_str("\ntargetScope = 'resourceGroup'\n\n@description('Azure region of every regional resource.')\n");
    let _ = writeln!(out, "param location string = {}", quote(&inv.location));
    for p in &params.list {
        let _ = writeln!(
            out,
            "\n@secure()\n@description({})\nparam {} string",
            quote(&p.description),
            p.ident
        );
    }
    out.push_str("\n// Tags on every resource.\nvar tags = {\n");
    for (k, v) in &inv.tags {
        let _ = writeln!(out, "  {}: {}", quote(k), quote(v));
    }
    out.push_str("}\n");
}

// ---------------------------------------------------------------------------------------
// Resources and values
// ---------------------------------------------------------------------------------------

struct Ctx<'a> {
    inv: &'a Inventory,
    /// Address → symbol of the resources this file declares.
    symbols: &'a BTreeMap<&'a str, &'a str>,
    /// The loop variable, in a family's file.
    row: Option<&'a str>,
}

impl Ctx<'_> {
    fn symbol(&self, address: &str) -> Option<&str> {
        self.symbols.get(address).copied()
    }
}

/// One `resource` declaration; `over` makes it a loop over that array.
fn resource(out: &mut String, ctx: &Ctx<'_>, r: &ArmResource, over: Option<&str>) {
    if let Some(c) = &r.comment {
        for line in wrap(c, 92) {
            let _ = writeln!(out, "// {line}");
        }
    }
    let _ = write!(
        out,
        "resource {} '{}@{}' = ",
        r.symbol, r.type_, r.api_version
    );
    let row = ctx.row.unwrap_or("t");
    match over {
        Some(array) => {
            let _ = writeln!(out, "[for {row} in {array}: {{");
        }
        None => out.push_str("{\n"),
    }
    if let Some(parent) = r.parent.as_deref().and_then(|p| ctx.symbol(p)) {
        let _ = writeln!(out, "  parent: {parent}");
    }
    if let Some(scope) = r.scope.as_deref().and_then(|p| ctx.symbol(p)) {
        let _ = writeln!(out, "  scope: {scope}");
    }
    match over {
        Some(_) => {
            let _ = writeln!(out, "  name: {row}.name");
        }
        None => {
            let _ = writeln!(out, "  name: {}", quote(&r.name));
        }
    }
    let implied = implied(r);
    let explicit: Vec<&str> = r
        .depends_on
        .iter()
        .filter(|d| !implied.contains(d.as_str()))
        .filter_map(|d| ctx.symbol(d))
        .collect();
    if !explicit.is_empty() {
        out.push_str("  dependsOn: [\n");
        for d in explicit {
            let _ = writeln!(out, "    {d}");
        }
        out.push_str("  ]\n");
    }
    if let Value::Object(pairs) = &r.body {
        for (k, v) in pairs {
            let _ = write!(out, "  {}: ", key(ctx, k));
            match (k.as_str(), v) {
                ("location", Value::Str(l)) if *l == ctx.inv.location => out.push_str("location"),
                ("tags", Value::Object(t)) if tags_equal(t, &ctx.inv.tags) => out.push_str("tags"),
                _ => value(out, ctx, v, 1),
            }
            out.push('\n');
        }
    }
    match over {
        Some(_) => out.push_str("}]\n"),
        None => out.push_str("}\n"),
    }
}

/// Dependencies Bicep sees by itself: references, parent and scope.
fn implied(r: &ArmResource) -> BTreeSet<&str> {
    let mut refs = Vec::new();
    r.body.refs(&mut refs);
    let mut set: BTreeSet<&str> = refs.iter().map(|t| t.address.as_str()).collect();
    set.extend(r.parent.as_deref());
    set.extend(r.scope.as_deref());
    set
}

fn tags_equal(pairs: &[(String, Value)], tags: &[(String, String)]) -> bool {
    pairs.len() == tags.len()
        && pairs
            .iter()
            .zip(tags)
            .all(|((k, v), (tk, tv))| k == tk && *v == Value::Str(tv.clone()))
}

/// An object key: bare when it is an identifier, `'${x.id}'` when it is the id of a resource
/// this file declares, else quoted.
fn key(ctx: &Ctx<'_>, k: &str) -> String {
    let bare = k
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if bare {
        return k.to_string();
    }
    let by_id = ctx
        .inv
        .resources
        .iter()
        .find(|r| r.id == k)
        .and_then(|r| ctx.symbol(&r.address));
    match by_id {
        Some(sym) => format!("'${{{sym}.id}}'"),
        None => quote(k),
    }
}

fn pad(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// A value at nesting `depth` (the caller wrote the indentation of its first line).
fn value(out: &mut String, ctx: &Ctx<'_>, v: &Value, depth: usize) {
    match v {
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Decimal(d) => {
            let _ = write!(out, "json({})", quote(d));
        }
        Value::Str(s) => out.push_str(&quote(s)),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push_str("[\n");
            for item in items {
                pad(out, depth + 1);
                match inline(ctx, item, depth + 1) {
                    Some(line) => out.push_str(&line),
                    None => value(out, ctx, item, depth + 1),
                }
                out.push('\n');
            }
            pad(out, depth);
            out.push(']');
        }
        Value::Object(pairs) if pairs.is_empty() => out.push_str("{}"),
        Value::Object(pairs) => {
            out.push_str("{\n");
            for (k, v) in pairs {
                pad(out, depth + 1);
                let _ = write!(out, "{}: ", key(ctx, k));
                value(out, ctx, v, depth + 1);
                out.push('\n');
            }
            pad(out, depth);
            out.push('}');
        }
        Value::Concat(parts) => {
            out.push('\'');
            for p in parts {
                match p {
                    Value::Str(s) => out.push_str(&escape(s)),
                    other => {
                        out.push_str("${");
                        value(out, ctx, other, depth);
                        out.push('}');
                    }
                }
            }
            out.push('\'');
        }
        Value::Id(t) => match ctx.symbol(&t.address) {
            Some(sym) => {
                let _ = write!(out, "{sym}.id");
            }
            None => out.push_str(&quote(&t.id)),
        },
        Value::Prop { of, path } => {
            let sym = ctx.symbol(&of.address).unwrap_or("unknownResource");
            let _ = write!(out, "{sym}.{path}");
        }
        Value::SharedKey(of) => {
            let sym = ctx.symbol(&of.address).unwrap_or("unknownResource");
            let _ = write!(out, "{sym}.listKeys().primarySharedKey");
        }
        Value::StorageKey(of) => {
            let sym = ctx.symbol(&of.address).unwrap_or("unknownResource");
            let _ = write!(out, "{sym}.listKeys().keys[0].value");
        }
        Value::Secret(s) => out.push_str(&param_ident(s)),
        Value::Row(field) => {
            let _ = write!(out, "{}.{field}", ctx.row.unwrap_or("t"));
        }
    }
}

/// An array item that is a small object of plain values, on one line
/// (`{ name: 'PORT', value: '8080' }`), when it fits in 100 columns.
fn inline(ctx: &Ctx<'_>, v: &Value, depth: usize) -> Option<String> {
    let Value::Object(pairs) = v else {
        return None;
    };
    let scalar = |v: &Value| !matches!(v, Value::Array(_) | Value::Object(_));
    if pairs.is_empty() || pairs.len() > 3 || !pairs.iter().all(|(_, v)| scalar(v)) {
        return None;
    }
    let mut parts = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        let mut s = String::new();
        value(&mut s, ctx, v, depth);
        parts.push(format!("{}: {s}", key(ctx, k)));
    }
    let line = format!("{{ {} }}", parts.join(", "));
    (depth * 2 + line.len() <= 100).then_some(line)
}

/// The parameter standing for a secret: `secretEnv_VAR` or `kvSecret_name`.
fn param_ident(s: &SecretSource) -> String {
    let safe = |x: &str| -> String {
        x.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    };
    match s {
        SecretSource::Env(var) => format!("secretEnv_{}", safe(var)),
        SecretSource::KeyVault(name) => format!("kvSecret_{}", safe(name)),
    }
}

/// `@secure()` parameters: the secrets a file's resources use, declared once each, without a
/// default, supplied by whoever deploys.
#[derive(Default)]
struct Params {
    list: Vec<Param>,
}

struct Param {
    ident: String,
    source: SecretSource,
    description: String,
}

impl Params {
    fn collect(&mut self, v: &Value, at: &str) {
        match v {
            Value::Object(pairs) => pairs
                .iter()
                .for_each(|(k, v)| self.collect(v, &azure::join(at, k))),
            Value::Array(items) | Value::Concat(items) => {
                items.iter().for_each(|v| self.collect(v, at));
            }
            Value::Secret(s) => {
                let ident = param_ident(s);
                if self.list.iter().any(|p| p.ident == ident) {
                    return;
                }
                let what = if at.ends_with("administratorLoginPassword") {
                    "The PostgreSQL administrator password"
                } else {
                    "A Container App secret"
                };
                let description = match s {
                    SecretSource::Env(var) => {
                        format!("{what}, from the environment variable {var} of whoever deploys")
                    }
                    SecretSource::KeyVault(name) => {
                        format!("{what}, from the Key Vault secret {name}")
                    }
                };
                self.list.push(Param {
                    ident,
                    source: s.clone(),
                    description,
                });
            }
            _ => {}
        }
    }

    /// ` --parameters x="$VAR"` for each parameter, for the deployment command in comments.
    fn command_line(&self, inv: &Inventory) -> String {
        let mut s = String::new();
        for p in &self.list {
            let value = match &p.source {
                SecretSource::Env(var) => format!("\"${}\"", escape(var)),
                SecretSource::KeyVault(name) => format!(
                    "\"$(az keyvault secret show --vault-name {} --name {} --query value -o tsv)\"",
                    escape(&inv.key_vault),
                    escape(name)
                ),
            };
            let _ = write!(s, " --parameters {}={value}", p.ident);
        }
        s
    }
}

/// Words of `text` in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&escape_comment(word));
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Comment text on one line: control characters dropped.
fn escape_comment(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
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
pub(crate) fn bucket_width(count: usize) -> usize {
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
        assert_eq!(bicep_ident("app", "kombi-sim"), "appKombiSim");
        assert_eq!(bicep_ident("", "kombi-sim"), "kombiSim");
        assert_eq!(
            bicep_ident("database", "kombify_admin"),
            "databaseKombifyAdmin"
        );
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
