//! The PostgreSQL login roles of the platform services, as data: one role per service
//! ([`kombiform_model::naming::postgres_role`]) with only the grants it needs ([`ROLES`]).
//! The administrator login is for `kombiform apply` only.
//!
//! `003_roles.sql` is rendered from this list ([`script`]), and the PostgreSQL target and
//! provider build `postgres.role.<name>` from the same list, so the script and the deploy
//! engine grant the same things. Passwords never appear here: apply sets them from the
//! role's secret ([`kombiform_model::secret::postgres_role_password`]) as a SCRAM verifier;
//! the script leaves them to `psql`'s `\password`.
//!
//! Not here: connecting, or which services a platform runs (`Platform::service`).

use std::fmt::Write as _;

use super::quote::{quote_ident, quote_literal};
use super::SCHEMA;
use kombiform_model::naming;
use kombiform_model::services::{HEALTH_SERVICE, SSO_SERVICE};
use kombiform_model::Platform;

/// What a grant is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    /// The platform database.
    Database,
    /// Schema [`SCHEMA`].
    Schema,
    /// A table of [`SCHEMA`].
    Table(&'static str),
    /// A sequence of [`SCHEMA`].
    Sequence(&'static str),
}

/// Privileges on one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The object.
    pub on: On,
    /// Privileges, as `GRANT` spells them.
    pub privileges: &'static [&'static str],
}

/// One service's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleDef {
    /// The platform service (`sso`).
    pub service: &'static str,
    /// What it grants.
    pub grants: &'static [Grant],
}

const fn grant(on: On, privileges: &'static [&'static str]) -> Grant {
    Grant { on, privileges }
}

/// Every service role. `kombify-sso`: its tables (tenants and quotas read and updated by
/// exchanges and Stripe webhooks, flags written by the Admin sync, SSO users, webhook
/// events) and only INSERT on the audit log; `kombify-health`: CONNECT, for `SELECT 1`.
pub const ROLES: &[RoleDef] = &[
    RoleDef {
        service: HEALTH_SERVICE,
        grants: &[grant(On::Database, &["CONNECT"])],
    },
    RoleDef {
        service: SSO_SERVICE,
        grants: &[
            grant(On::Database, &["CONNECT"]),
            grant(On::Schema, &["USAGE"]),
            grant(On::Table("plans"), &["SELECT"]),
            grant(On::Table("tenants"), &["SELECT", "UPDATE"]),
            grant(On::Table("quotas"), &["SELECT", "UPDATE"]),
            grant(On::Table("flags"), &["SELECT", "INSERT", "UPDATE"]),
            grant(
                On::Table("flag_plan_overrides"),
                &["SELECT", "INSERT", "DELETE"],
            ),
            grant(
                On::Table("flag_tenant_overrides"),
                &["SELECT", "INSERT", "DELETE"],
            ),
            grant(On::Table("webhook_events"), &["INSERT"]),
            grant(On::Table("audit_log"), &["INSERT"]),
            grant(On::Sequence("audit_log_id_seq"), &["USAGE"]),
            grant(On::Table("sso_users"), &["SELECT", "INSERT", "UPDATE"]),
        ],
    },
];

/// Every role name any platform can have (the roles kombiform owns on a server).
pub fn all_names() -> Vec<String> {
    ROLES
        .iter()
        .map(|r| naming::postgres_role(r.service))
        .collect()
}

/// The roles of the services `p` runs, with their names.
pub fn of_platform(p: &Platform) -> Vec<(String, &'static RoleDef)> {
    ROLES
        .iter()
        .filter(|r| p.service(r.service).is_some())
        .map(|r| (naming::postgres_role(r.service), r))
        .collect()
}

impl On {
    /// `ON DATABASE`, `ON SCHEMA kombify`, `ON TABLE kombify.tenants`: how the role resource
    /// names it (the database is the one connected to, so it is not named).
    pub fn describe(&self) -> String {
        match self {
            On::Database => "DATABASE".to_string(),
            On::Schema => format!("SCHEMA {SCHEMA}"),
            On::Table(t) => format!("TABLE {SCHEMA}.{t}"),
            On::Sequence(s) => format!("SEQUENCE {SCHEMA}.{s}"),
        }
    }

    /// The object as `GRANT ... ON` takes it, `database` being the platform database's name.
    pub fn sql(&self, database: &str) -> Result<String, super::quote::QuoteError> {
        Ok(match self {
            On::Database => format!("DATABASE {}", quote_ident(database)?),
            other => other.describe(),
        })
    }
}

impl RoleDef {
    /// The privileges as the role resource lists them, sorted: `SELECT ON TABLE
    /// kombify.tenants`, `CONNECT ON DATABASE`.
    pub fn privileges(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .grants
            .iter()
            .flat_map(|g| {
                g.privileges
                    .iter()
                    .map(move |p| format!("{p} ON {}", g.on.describe()))
            })
            .collect();
        out.sort();
        out
    }

    /// The tables it grants on.
    pub fn tables(&self) -> Vec<&'static str> {
        self.grants
            .iter()
            .filter_map(|g| match g.on {
                On::Table(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    /// `GRANT ... TO role;` statements, one per object.
    pub fn grant_sql(
        &self,
        role: &str,
        database: &str,
    ) -> Result<String, super::quote::QuoteError> {
        let role = quote_ident(role)?;
        let mut s = String::new();
        for g in self.grants {
            let _ = writeln!(
                s,
                "GRANT {} ON {} TO {role};",
                g.privileges.join(", "),
                g.on.sql(database)?
            );
        }
        Ok(s)
    }
}

/// `REVOKE` of everything `role` may hold on the platform's objects (before granting again,
/// or dropping it).
pub fn revoke_all_sql(role: &str, database: &str) -> Result<String, super::quote::QuoteError> {
    let role = quote_ident(role)?;
    let db = quote_ident(database)?;
    Ok(format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA {SCHEMA} FROM {role};\n\
         REVOKE ALL ON ALL SEQUENCES IN SCHEMA {SCHEMA} FROM {role};\n\
         REVOKE ALL ON SCHEMA {SCHEMA} FROM {role};\n\
         REVOKE ALL ON DATABASE {db} FROM {role};\n"
    ))
}

/// `<env>/sql/003_roles.sql`: the service roles and their grants, idempotent, without
/// passwords (set each with `\password ROLE` in psql, which sends only a SCRAM verifier).
pub fn script(p: &Platform) -> String {
    let db = &p.postgres.platform_database;
    let mut s = String::from(
        "-- kombify platform database: the login roles of the platform services (generated by kombiform).\n\
         -- Do not edit: change kombiform and run `kombiform build`.\n\
         --\n\
         -- One role per service with only what it needs; the administrator login is for `kombiform\n\
         -- apply` only. Idempotent: roles are created when missing, their grants revoked and given\n\
         -- again. No passwords here: `kombiform apply` sets them from each role's secret; by hand,\n\
         -- set each with psql's \\password ROLE (it sends only a SCRAM verifier).\n\
         BEGIN;\n",
    );
    for (name, role) in of_platform(p) {
        let (Ok(lit), Ok(grants), Ok(revoke)) = (
            quote_literal(&name),
            role.grant_sql(&name, db),
            revoke_all_sql(&name, db),
        ) else {
            let _ = writeln!(s, "-- {}: not a valid role or database name", role.service);
            continue;
        };
        let ident = quote_ident(&name).unwrap_or_default();
        let _ = write!(
            s,
            "\n-- kombify-{}\n\
             DO $do$ BEGIN\n    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {lit}) THEN\n        \
             CREATE ROLE {ident} LOGIN;\n    END IF;\nEND $do$;\n\
             ALTER ROLE {ident} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;\n\
             {revoke}{grants}",
            role.service
        );
    }
    s.push_str("\nCOMMIT;\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sso_inserts_into_the_audit_log_and_health_only_connects() {
        let sso = ROLES.iter().find(|r| r.service == SSO_SERVICE).unwrap();
        let p = sso.privileges();
        assert!(p.contains(&"INSERT ON TABLE kombify.audit_log".to_string()));
        assert!(!p
            .iter()
            .any(|x| x.ends_with("kombify.audit_log") && !x.starts_with("INSERT")));
        assert!(!p
            .iter()
            .any(|x| x.starts_with("DELETE ON TABLE kombify.tenants")));
        let health = ROLES.iter().find(|r| r.service == HEALTH_SERVICE).unwrap();
        assert_eq!(health.privileges(), ["CONNECT ON DATABASE"]);
        for t in sso.tables() {
            assert!(super::super::schema::table(t).is_some(), "{t}");
        }
    }
}
