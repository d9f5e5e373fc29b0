//! Feature flags: the `apply` payload and the evaluation of a flag for a tenant (pure).
//!
//! Order: the tenant's override, else the plan's override, else `true` when the tenant falls in
//! the rollout percentage, else the default. The rollout bucket is stable per (flag, tenant):
//! `SHA-256("<flag>:<tenant>")`, first 4 bytes big-endian, mod 100; in the rollout when the
//! bucket is below the percentage. Not here: storage ([`super::db`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::input;

/// The most flags one apply may carry.
pub const MAX_FLAGS: usize = 1000;

/// `POST /api/internal/feature-flags/apply` body. Each listed flag is upserted and its plan and
/// tenant overrides are REPLACED by the listed ones; flags not listed are left alone.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlagsPayload {
    /// The flags.
    pub flags: Vec<FlagSpec>,
}

/// One flag.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlagSpec {
    /// Name: `^[a-z][a-z0-9-]{0,59}$`.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The value when nothing else applies.
    pub default: bool,
    /// Percentage (0..=100) of tenants that get `true` (before the default).
    #[serde(default)]
    pub rollout_percent: Option<u8>,
    /// Value per plan name.
    #[serde(default)]
    pub plans: BTreeMap<String, bool>,
    /// Value per tenant slug.
    #[serde(default)]
    pub tenants: BTreeMap<String, bool>,
}

/// Where a tenant's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// The tenant's override.
    Tenant,
    /// The plan's override.
    Plan,
    /// The rollout percentage.
    Rollout,
    /// The default.
    Default,
}

/// A flag with the overrides relevant to one tenant, as read from the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlagRow {
    /// Name.
    pub name: String,
    /// Default.
    pub default_enabled: bool,
    /// Rollout percentage.
    pub rollout_percent: Option<i16>,
    /// The tenant's plan's override.
    pub plan_override: Option<bool>,
    /// The tenant's override.
    pub tenant_override: Option<bool>,
}

/// Checks names, percentages and duplicates; the message is safe to show.
pub fn validate(payload: &FlagsPayload) -> Result<(), String> {
    if payload.flags.len() > MAX_FLAGS {
        return Err(format!("at most {MAX_FLAGS} flags per apply"));
    }
    let mut seen = std::collections::HashSet::new();
    for f in &payload.flags {
        if !valid_name(&f.name) {
            return Err(format!(
                "flag name {:?} must match ^[a-z][a-z0-9-]{{0,59}}$",
                f.name
            ));
        }
        if !seen.insert(f.name.as_str()) {
            return Err(format!("flag {:?} is listed twice", f.name));
        }
        if f.rollout_percent.is_some_and(|p| p > 100) {
            return Err(format!("flag {:?}: rolloutPercent must be 0..=100", f.name));
        }
        if !input::is_text(&f.description, 2000) {
            return Err(format!(
                "flag {:?}: description too long or with control characters",
                f.name
            ));
        }
        if let Some(plan) = f.plans.keys().find(|p| !input::is_name(p)) {
            return Err(format!("flag {:?}: {plan:?} is not a plan name", f.name));
        }
        if let Some(tenant) = f.tenants.keys().find(|t| !input::is_slug(t)) {
            return Err(format!(
                "flag {:?}: {tenant:?} is not a tenant slug",
                f.name
            ));
        }
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 60
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// The stable rollout bucket (0..100) of `tenant` for `flag`.
pub fn rollout_bucket(flag: &str, tenant: &str) -> u32 {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{flag}:{tenant}").as_bytes());
    let d = digest.as_ref();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % 100
}

/// The value of `flag` for `tenant`, and where it came from.
pub fn evaluate(flag: &FlagRow, tenant: &str) -> (bool, Source) {
    if let Some(v) = flag.tenant_override {
        return (v, Source::Tenant);
    }
    if let Some(v) = flag.plan_override {
        return (v, Source::Plan);
    }
    if let Some(p) = flag.rollout_percent {
        if rollout_bucket(&flag.name, tenant) < u32::try_from(p).unwrap_or(0) {
            return (true, Source::Rollout);
        }
    }
    (flag.default_enabled, Source::Default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tenant: Option<bool>, plan: Option<bool>, rollout: Option<i16>) -> FlagRow {
        FlagRow {
            name: "beta".into(),
            default_enabled: false,
            rollout_percent: rollout,
            plan_override: plan,
            tenant_override: tenant,
        }
    }

    #[test]
    fn order_is_tenant_then_plan_then_rollout_then_default() {
        assert_eq!(
            evaluate(&row(Some(false), Some(true), Some(100)), "acme"),
            (false, Source::Tenant)
        );
        assert_eq!(
            evaluate(&row(None, Some(true), Some(0)), "acme"),
            (true, Source::Plan)
        );
        assert_eq!(
            evaluate(&row(None, None, Some(100)), "acme"),
            (true, Source::Rollout)
        );
        assert_eq!(
            evaluate(&row(None, None, Some(0)), "acme"),
            (false, Source::Default)
        );
        assert_eq!(
            evaluate(&row(None, None, None), "acme"),
            (false, Source::Default)
        );
    }

    #[test]
    fn rollout_is_stable_and_roughly_proportional() {
        assert_eq!(
            rollout_bucket("beta", "acme"),
            rollout_bucket("beta", "acme")
        );
        let n = 10_000;
        let on = (0..n)
            .filter(|i| rollout_bucket("beta", &format!("t{i}")) < 30)
            .count();
        assert!(
            (2_800..=3_200).contains(&on),
            "{on} of {n} in a 30% rollout"
        );
    }

    #[test]
    fn payload_validation() {
        let spec = |name: &str, p: Option<u8>| FlagSpec {
            name: name.into(),
            description: String::new(),
            default: true,
            rollout_percent: p,
            plans: BTreeMap::new(),
            tenants: BTreeMap::new(),
        };
        assert!(validate(&FlagsPayload {
            flags: vec![spec("ok-flag", Some(100))]
        })
        .is_ok());
        assert!(validate(&FlagsPayload {
            flags: vec![spec("Bad", None)]
        })
        .is_err());
        assert!(validate(&FlagsPayload {
            flags: vec![spec("x", Some(101))]
        })
        .is_err());
        assert!(validate(&FlagsPayload {
            flags: vec![spec("x", None), spec("x", None)]
        })
        .is_err());
        // Values that could never be valid are refused before the database sees them.
        let with = |edit: &dyn Fn(&mut FlagSpec)| {
            let mut f = spec("x", None);
            edit(&mut f);
            validate(&FlagsPayload { flags: vec![f] })
        };
        assert!(with(&|f| f.description = "two\nlines".into()).is_ok());
        assert!(with(&|f| f.description = "nul\0".into()).is_err());
        assert!(with(&|f| {
            f.plans.insert("pro\0".into(), true);
        })
        .is_err());
        assert!(with(&|f| {
            f.plans.insert("pro".into(), true);
        })
        .is_ok());
        assert!(with(&|f| {
            f.tenants.insert("ac\u{1}me".into(), true);
        })
        .is_err());
        assert!(with(&|f| {
            f.tenants.insert("x".repeat(300), true);
        })
        .is_err());
        assert!(with(&|f| {
            f.tenants.insert("acme".into(), true);
        })
        .is_ok());
    }
}
