//! Secrets at run time: the one rule that turns a [`SecretRef`] into the environment variable
//! that holds its value, the one resolver, and [`Secret`], a value whose `Debug` is redacted.
//!
//! The rule: `{env: NAME}` reads `NAME`; `{keyVault: name}` reads `KV_<NAME>` (uppercased,
//! `-` → `_`), which is how Container Apps hands a Key Vault reference to an app and how a
//! developer sets it locally. A variable that is set is its value, even when empty (a local
//! PostgreSQL with trust authentication has an empty password); a consumer that cannot work
//! with an empty value says so with [`Secret::non_empty`]. The same rule holds for the CLI and
//! the services.
//!
//! Pure: the caller passes the variable lookup (the process environment in the binaries).
//! Not here: secret references in the specs (`SecretRef`, in `types`), or Key Vault itself.

use crate::SecretRef;

/// A secret value: its `Debug` is redacted, so it cannot leak into logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The comma-separated values (trimmed, empty ones dropped): how a rotation lists the old
    /// and the new secret in one variable, e.g. `whsec_new,whsec_old`.
    pub fn list(&self) -> Vec<Secret> {
        self.0
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .collect()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why a secret could not be used (names the variable, never the value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretError {
    /// The reference, described (`env:NAME`, `keyVault:name`).
    pub reference: String,
    /// The environment variable that was read.
    pub variable: String,
    /// The variable was set but empty, for a secret that cannot be empty.
    pub empty: bool,
}

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (reference, variable) = (&self.reference, &self.variable);
        if self.empty {
            write!(
                f,
                "secret {reference} is empty: set environment variable {variable} to its value"
            )
        } else {
            write!(
                f,
                "secret {reference} is not set: set environment variable {variable} to its value"
            )
        }
    }
}

impl std::error::Error for SecretError {}

/// The environment variable a reference reads (see the module documentation).
pub fn variable(reference: &SecretRef) -> String {
    match reference {
        SecretRef::Env(name) => name.clone(),
        SecretRef::KeyVault(name) => format!("KV_{}", name.to_ascii_uppercase().replace('-', "_")),
    }
}

/// The password of a service's PostgreSQL role ([`crate::naming::postgres_role`]), referenced
/// like the administrator password: `{keyVault: pg-kombify-sso-password}` when that one is in
/// Key Vault (read as `KV_PG_KOMBIFY_SSO_PASSWORD`), else `{env: PG_KOMBIFY_SSO_PASSWORD}`.
/// The same variable either way, so apply (which sets the role's password) and the service
/// (which logs in with it) read one value.
pub fn postgres_role_password(admin: &SecretRef, role: &str) -> SecretRef {
    let dashed = format!("pg-{}-password", role.replace('_', "-"));
    match admin {
        SecretRef::KeyVault(_) => SecretRef::KeyVault(dashed),
        SecretRef::Env(_) => SecretRef::Env(dashed.to_ascii_uppercase().replace('-', "_")),
    }
}

/// Resolves a reference with `lookup` (the process environment, in the binaries). A variable
/// that is set is the value, even when empty; an unset one is an error naming it.
pub fn resolve(
    reference: &SecretRef,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Secret, SecretError> {
    let variable = variable(reference);
    match lookup(&variable) {
        Some(v) => Ok(Secret(v)),
        None => Err(SecretError {
            reference: reference.describe(),
            variable,
            empty: false,
        }),
    }
}

/// Resolves a reference whose value cannot be empty (tokens, signing keys, passwords of
/// systems that always have one): an empty variable is an error naming it.
pub fn resolve_non_empty(
    reference: &SecretRef,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Secret, SecretError> {
    let secret = resolve(reference, lookup)?;
    if secret.is_empty() {
        return Err(SecretError {
            reference: reference.describe(),
            variable: variable(reference),
            empty: true,
        });
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_string())
        }
    }

    #[test]
    fn variables_follow_one_rule() {
        assert_eq!(variable(&SecretRef::Env("PGPASSWORD".into())), "PGPASSWORD");
        assert_eq!(
            variable(&SecretRef::KeyVault("sso-internal-token".into())),
            "KV_SSO_INTERNAL_TOKEN"
        );
    }

    #[test]
    fn role_passwords_read_one_variable_on_azure_and_locally() {
        let kv = postgres_role_password(&SecretRef::KeyVault("pg-admin".into()), "kombify_sso");
        let env = postgres_role_password(&SecretRef::Env("PGPASSWORD".into()), "kombify_sso");
        assert_eq!(kv, SecretRef::KeyVault("pg-kombify-sso-password".into()));
        assert_eq!(variable(&kv), "KV_PG_KOMBIFY_SSO_PASSWORD");
        assert_eq!(variable(&env), "PG_KOMBIFY_SSO_PASSWORD");
    }

    #[test]
    fn empty_is_a_value_unless_it_cannot_be() {
        let env = [("PGPASSWORD", ""), ("KV_TOKEN", "t0k")];
        let pg = SecretRef::Env("PGPASSWORD".into());
        assert_eq!(resolve(&pg, lookup(&env)).map(|s| s.is_empty()), Ok(true));
        let err = resolve_non_empty(&pg, lookup(&env)).unwrap_err();
        assert!(err.empty);
        assert!(err.to_string().contains("PGPASSWORD"), "{err}");
        let token = SecretRef::KeyVault("token".into());
        assert_eq!(
            resolve_non_empty(&token, lookup(&env)).map(|s| s.expose().to_string()),
            Ok("t0k".to_string())
        );
        let missing = SecretRef::Env("NOPE".into());
        let err = resolve(&missing, lookup(&env)).unwrap_err();
        assert!(!err.empty);
        assert!(err.to_string().contains("is not set"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_value() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
