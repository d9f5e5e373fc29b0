//! Names derived from the specs, each computed in one place: the rules names must follow,
//! [`TenantSlug`] (a slug that can only be valid), tenant collection names
//! (`t_<ident>_<template>`) and Azure resource names, so that the validator (which checks
//! lengths), the emitters, the engine and the services agree. Pure functions.
//!
//! Not here: secret variable names ([`crate::secret`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::types::{Platform, Tenant};

/// A tenant's slug, valid by construction ([`slug_problem`] found nothing): lowercase
/// letters, digits and single `-`, 2–20 characters, not reserved. Safe in collection names,
/// Kong consumer names, Azure resource names and SQL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantSlug(String);

impl TenantSlug {
    /// The slug, or why `s` is not one.
    pub fn parse(s: &str) -> Result<TenantSlug, String> {
        match slug_problem(s) {
            None => Ok(TenantSlug(s.to_string())),
            Some(problem) => Err(format!("tenant slug `{s}` {problem}")),
        }
    }

    /// The slug.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The slug with `-` turned into `_`: the tenant's part of a collection name.
    pub fn ident(&self) -> String {
        tenant_ident(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantSlug {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TenantSlug::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::ops::Deref for TenantSlug {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for TenantSlug {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for TenantSlug {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for TenantSlug {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for TenantSlug {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for TenantSlug {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<TenantSlug> for String {
    fn eq(&self, other: &TenantSlug) -> bool {
        *self == other.0
    }
}

impl PartialEq<TenantSlug> for &str {
    fn eq(&self, other: &TenantSlug) -> bool {
        *self == other.0
    }
}

/// The prefix of every tenant-scoped PocketBase collection: the tenant namespace.
pub const TENANT_COLLECTION_PREFIX: &str = "t_";

/// What separates the tenant's ident from the template name in a collection name.
pub const TENANT_COLLECTION_SEPARATOR: &str = "_";

/// A slug's part of a collection name: `-` turned into `_` (slugs have no `_`, so this is
/// reversible: see [`tenant_of_collection`]).
pub fn tenant_ident(slug: &str) -> String {
    slug.replace('-', "_")
}

/// The collection of template `template` for the tenant whose ident is `ident`:
/// `t_<ident>_<template>`. `ident` may also be a placeholder the services fill in.
pub fn tenant_collection(ident: &str, template: &str) -> String {
    format!("{TENANT_COLLECTION_PREFIX}{ident}{TENANT_COLLECTION_SEPARATOR}{template}")
}

/// The tenant slug a collection named `name` belongs to, given the tenant templates' names;
/// `None` for a collection outside the tenant namespace.
pub fn tenant_of_collection(name: &str, templates: &[String]) -> Option<String> {
    let rest = name.strip_prefix(TENANT_COLLECTION_PREFIX)?;
    templates.iter().find_map(|t| {
        let ident = rest
            .strip_suffix(t.as_str())?
            .strip_suffix(TENANT_COLLECTION_SEPARATOR)?;
        (!ident.is_empty()).then(|| ident.replace('_', "-"))
    })
}

/// Longest tenant slug.
pub const MAX_SLUG: usize = 20;

/// Slugs no tenant may take: they collide with platform names in Kong, Azure or SQL.
pub const RESERVED_SLUGS: &[&str] = &[
    "admin", "api", "default", "global", "health", "internal", "kombify", "kong", "platform",
    "public", "root", "shared", "sso", "system", "www",
];

/// Why a slug is not valid, or `None` when it is.
pub fn slug_problem(slug: &str) -> Option<String> {
    if slug.len() < 2 || slug.len() > MAX_SLUG {
        return Some(format!("must be 2 to {MAX_SLUG} characters long"));
    }
    if !slug
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("may only contain lowercase letters, digits and `-`".to_string());
    }
    if !slug.as_bytes()[0].is_ascii_lowercase() {
        return Some("must start with a lowercase letter".to_string());
    }
    if slug.ends_with('-') {
        return Some("must not end with `-`".to_string());
    }
    if slug.contains("--") {
        return Some("must not contain `--`".to_string());
    }
    if RESERVED_SLUGS.contains(&slug) {
        return Some("is reserved by the platform".to_string());
    }
    None
}

/// Why a name (plan, flag, service, route, environment) is not valid, or `None`.
pub fn name_problem(name: &str, max: usize) -> Option<String> {
    if name.is_empty() || name.len() > max {
        return Some(format!("must be 1 to {max} characters long"));
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return Some("must start with a lowercase letter".to_string());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("may only contain lowercase letters, digits and `-`".to_string());
    }
    if name.ends_with('-') || name.contains("--") {
        return Some("must not end with `-` or contain `--`".to_string());
    }
    None
}

/// Why a PocketBase identifier (collection template or field name) is not valid, or `None`.
pub fn ident_problem(name: &str, max: usize) -> Option<String> {
    if name.is_empty() || name.len() > max {
        return Some(format!("must be 1 to {max} characters long"));
    }
    let body = name.strip_prefix('_').unwrap_or(name);
    if !body.as_bytes().first().is_some_and(u8::is_ascii_alphabetic) {
        return Some("must start with a letter (after an optional `_`)".to_string());
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Some("may only contain letters, digits and `_`".to_string());
    }
    None
}

fn base(p: &Platform) -> String {
    let prefix = p.azure.as_ref().map_or("kfy", |a| a.name_prefix.as_str());
    format!("{prefix}-{}", p.name)
}

/// Container App of a platform service (or Kong): `kfy-prod-kong`. At most 32 characters.
pub fn container_app(p: &Platform, service: &str) -> String {
    format!("{}-{service}", base(p))
}

/// Container App of a dedicated tenant: `kfy-prod-t-acme`. At most 32 characters.
pub fn tenant_app(p: &Platform, t: &Tenant) -> String {
    format!("{}-t-{}", base(p), t.slug)
}

/// Longest Container App name Azure accepts.
pub const MAX_CONTAINER_APP: usize = 32;

/// The Container Apps environment.
pub fn container_env(p: &Platform) -> String {
    format!("{}-cae", base(p))
}

/// The Log Analytics workspace.
pub fn log_analytics(p: &Platform) -> String {
    format!("{}-logs", base(p))
}

/// The Key Vault (3 to 24 characters).
pub fn key_vault(p: &Platform) -> String {
    format!("{}-kv", base(p))
}

/// The storage account (3 to 24 lowercase letters and digits).
pub fn storage_account(p: &Platform) -> String {
    format!("{}st", base(p)).replace('-', "")
}

/// The PostgreSQL flexible server.
pub fn postgres_server(p: &Platform) -> String {
    format!("{}-pg", base(p))
}

/// The PostgreSQL firewall rule letting in the IPv4 block `cidr` (`postgres.allowedCidrs`):
/// `kombiform-allow-203-0-113-0-28` (firewall rule names allow letters, digits, `-`, `_`, `.`).
pub fn postgres_firewall_rule(cidr: &str) -> String {
    format!("kombiform-allow-{}", cidr.replace(['.', '/'], "-"))
}

/// PocketBase's Azure Files share and the Container Apps environment storage that mounts it.
pub const POCKETBASE_SHARE: &str = "pocketbase";

/// The PostgreSQL login role of a platform service (`sso` → `kombify_sso`): the only role
/// the service logs in as, with only the grants it needs (`kombiform_emit::sql::roles`).
pub fn postgres_role(service: &str) -> String {
    format!("kombify_{}", service.replace('-', "_"))
}

/// The Azure Cache for Redis.
pub fn redis(p: &Platform) -> String {
    format!("{}-redis", base(p))
}

/// The Front Door profile.
pub fn front_door(p: &Platform) -> String {
    format!("{}-fd", base(p))
}

/// The managed identity Container Apps use to read Key Vault.
pub fn identity(p: &Platform) -> String {
    format!("{}-id", base(p))
}

/// The action group alert rules notify.
pub fn action_group(p: &Platform) -> String {
    format!("{}-oncall", base(p))
}

/// A metric alert rule, by its short name (`kong-5xx`, `kong-unhealthy`, `postgres-cpu`).
pub fn alert_rule(p: &Platform, which: &str) -> String {
    format!("{}-{which}", base(p))
}

/// The Front Door endpoint (its host name gets a hash suffix from Azure).
pub fn front_door_endpoint(p: &Platform) -> String {
    format!("{}-api", base(p))
}

/// A Front Door custom domain resource, from the host name (`api.kombify.io` → `api-kombify-io`).
pub fn front_door_custom_domain(host: &str) -> String {
    host.replace('.', "-")
}

/// Blob container holding kombiform state (in [`storage_account`]).
pub const STATE_CONTAINER: &str = "kombiform-state";

/// Blob container holding PocketBase backups (in [`storage_account`]).
pub const BACKUP_CONTAINER: &str = "pocketbase-backups";

#[cfg(test)]
mod tests {
    #[test]
    fn slugs_are_valid_by_construction() {
        assert!(super::TenantSlug::parse("acme-labs").is_ok());
        let err = super::TenantSlug::parse("Acme_Corp").unwrap_err();
        assert!(err.contains("lowercase"), "{err}");
        let json: Result<super::TenantSlug, _> = serde_json::from_str("\"admin\"");
        assert!(json.is_err());
    }

    #[test]
    fn tenant_collections_round_trip() {
        let slug = super::TenantSlug::parse("stark-lab").unwrap();
        let name = super::tenant_collection(&slug.ident(), "lab_notes");
        assert_eq!(name, "t_stark_lab_lab_notes");
        let templates = vec!["users".to_string(), "lab_notes".to_string()];
        assert_eq!(
            super::tenant_of_collection(&name, &templates).as_deref(),
            Some("stark-lab")
        );
        assert_eq!(
            super::tenant_of_collection("_sso_mappings", &templates),
            None
        );
        assert_eq!(super::tenant_of_collection("t__users", &templates), None);
    }

    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slug_problem("acme"), None);
        assert_eq!(slug_problem("stark-lab"), None);
        assert!(slug_problem("Acme").is_some());
        assert!(slug_problem("a_b").is_some());
        assert!(slug_problem("1abc").is_some());
        assert!(slug_problem("abc-").is_some());
        assert!(slug_problem("a--b").is_some());
        assert!(slug_problem("admin").is_some());
        assert!(slug_problem("x'; drop table tenants;--").is_some());
        assert!(slug_problem(&"a".repeat(21)).is_some());
    }

    #[test]
    fn idents() {
        assert_eq!(ident_problem("_sso_mappings", 40), None);
        assert_eq!(ident_problem("nodes", 40), None);
        assert!(ident_problem("no-des", 40).is_some());
        assert!(ident_problem("_", 40).is_some());
    }
}
