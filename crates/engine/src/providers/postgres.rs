//! The PostgreSQL provider's client: the platform database's schema (`kombify`) and the rows
//! the specs own, read and written over one connection.
//!
//! - [`Postgres::read`] reads the live state in bulk: three catalog queries and one `SELECT`
//!   per managed table, whatever the number of rows, normalised like the target's desired
//!   resources (`kombiform_emit::targets::postgres`).
//! - [`Client::apply`] applies all changes it is given in one transaction under the
//!   advisory lock [`kombiform_emit::sql::LOCK_KEY`]; every value goes through a query parameter.
//!
//! - [`Postgres::connect`] speaks TLS as the platform's `postgres.tls` says
//!   ([`kombiform_model::Platform::postgres_tls`]): on Azure `verify-full` against the bundled
//!   roots of Azure Database for PostgreSQL, never a fallback to plain text
//!   ([`kombiform_sys::tls::postgres`]).
//!
//! Not here: what the specs want or what needs consent (the pure target); the usage counters
//! (`kombify.quotas.used_*`) — they belong to the SSO service and are never read, compared or
//! written; the TLS rules themselves (`kombiform_sys::tls::postgres`).

mod apply;
mod read;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::ops::resolve_secret;

/// A secret that cannot be empty (a role's password), from the process environment.
fn resolve_secret_non_empty(r: &SecretRef) -> Result<Secret, kombiform_model::secret::SecretError> {
    kombiform_model::secret::resolve_non_empty(r, crate::ops::env_lookup)
}
use crate::providers::{AuditRecord, Client, LiveRead, MissingInput, Registration, Transient};

use kombiform_emit::targets::postgres::{self as target, NAME};
use kombiform_model::secret::Secret;
use kombiform_model::{Env, PostgresTls, SecretRef};
use kombiform_plan::{Action, Change};
use kombiform_sys::tls::postgres as pg_tls;

/// The PostgreSQL provider.
pub const REGISTRATION: Registration = Registration {
    target: &target::Postgres,
    connect: connect_env,
    available: super::always,
};

/// Connects to the platform database of `env` as its admin user, with the platform's TLS.
fn connect_env(env: Env<'_>) -> Result<Box<dyn Client>> {
    let p = env.platform;
    let client = Postgres::connect(ConnectParams {
        host: p.postgres.host.clone(),
        port: p.postgres.port,
        user: p.postgres.admin_user.clone(),
        password: resolve_secret(&p.postgres.admin_password)
            .ok()
            .map(|s| s.expose().to_string()),
        dbname: p.postgres.platform_database.clone(),
        tls: p.postgres_tls(),
        connect_timeout: Duration::from_secs(10),
    })
    .map_err(|e| {
        if !credentials_refused(&e) {
            return e;
        }
        // Name what to set: the variable the spec's reference reads (the one rule).
        let variable = kombiform_model::secret::variable(&p.postgres.admin_password);
        e.context(format!(
            "PostgreSQL refused the password of `{}`: set {variable} to it (set but empty, \
             `{variable}=`, is an empty password, for trust authentication)",
            p.postgres.admin_user
        ))
    })
    .with_context(|| {
        format!(
            "connecting to PostgreSQL at {}:{}",
            p.postgres.host, p.postgres.port
        )
    })?;
    let secrets = kombiform_emit::sql::roles::of_platform(p)
        .into_iter()
        .map(|(name, _)| {
            let r =
                kombiform_model::secret::postgres_role_password(&p.postgres.admin_password, &name);
            (name, r)
        })
        .collect();
    Ok(Box::new(client.with_role_secrets(secrets)))
}

/// Whether PostgreSQL refused the password (a wrong one, or none where one is needed).
fn credentials_refused(e: &anyhow::Error) -> bool {
    use postgres::error::SqlState;
    e.chain().any(|c| {
        c.downcast_ref::<postgres::Error>().is_some_and(|pe| {
            pe.code().is_some_and(|code| {
                *code == SqlState::INVALID_PASSWORD
                    || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            }) || pe.to_string().contains("password missing")
        })
    })
}

/// Where and as whom to connect. The password is a resolved secret: it is never printed
/// (`Debug` redacts it) and never part of an error.
#[derive(Clone)]
pub struct ConnectParams {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Login role.
    pub user: String,
    /// The password, if the server asks for one.
    pub password: Option<String>,
    /// The platform database.
    pub dbname: String,
    /// TLS: `verify-full` (against the bundled Azure roots or the spec's CA certificates)
    /// or `disable`.
    pub tls: PostgresTls,
    /// How long to wait for the connection.
    pub connect_timeout: Duration,
}

impl fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field(
                "password",
                &self.password.as_ref().map(|_| kombiform_plan::REDACTED),
            )
            .field("dbname", &self.dbname)
            .field("tls", &self.tls.mode)
            .finish()
    }
}

impl ConnectParams {
    /// `user@host:port/db`, for errors (no password).
    pub fn describe(&self) -> String {
        format!("{}@{}:{}/{}", self.user, self.host, self.port, self.dbname)
    }
}

/// A connection to the platform database.
pub struct Postgres {
    params: ConnectParams,
    /// Each service role's password secret, by role name; `None`: set no passwords (a
    /// server with trust authentication, in tests).
    role_secrets: Option<BTreeMap<String, SecretRef>>,
    client: Mutex<postgres::Client>,
    /// A batch whose COMMIT answer was lost: its transaction id and addresses.
    in_doubt: Mutex<Option<(i64, Vec<String>)>>,
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// Connects. Fails when the server is unreachable or refuses the login, and, under
    /// `verify-full`, when the server offers no TLS or its certificate is not trusted or does
    /// not name `host` (the error says which).
    pub fn connect(params: ConnectParams) -> Result<Postgres> {
        let client = open(&params)?;
        Ok(Postgres {
            params,
            role_secrets: None,
            client: Mutex::new(client),
            in_doubt: Mutex::new(None),
        })
    }

    /// Sets each service role's password from its secret (the one rule:
    /// [`kombiform_model::secret`]) when apply creates or updates the role.
    pub fn with_role_secrets(mut self, secrets: BTreeMap<String, SecretRef>) -> Postgres {
        self.role_secrets = Some(secrets);
        self
    }

    /// The password of role `name`, resolved now; an error names the variable to set.
    fn role_password(&self, name: &str) -> Result<Option<Secret>> {
        let Some(secrets) = &self.role_secrets else {
            return Ok(None);
        };
        let r = secrets
            .get(name)
            .with_context(|| format!("no password secret for role {name}"))?;
        resolve_secret_non_empty(r)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("the password of PostgreSQL role {name}: {e}"))
    }

    /// The transaction id of an earlier attempt of the batch `addresses` whose COMMIT answer
    /// was lost (taken: the caller remembers it again if still unsure).
    fn in_doubt_for(&self, addresses: &[String]) -> Option<i64> {
        let mut d = self.in_doubt.lock().unwrap_or_else(|p| p.into_inner());
        match d.take() {
            Some((xid, a)) if a == addresses => Some(xid),
            _ => None,
        }
    }

    fn remember_in_doubt(&self, xid: i64, addresses: Vec<String>) {
        *self.in_doubt.lock().unwrap_or_else(|p| p.into_inner()) = Some((xid, addresses));
    }

    /// The connection, opened again if the server closed it.
    fn client(&self) -> Result<MutexGuard<'_, postgres::Client>> {
        let mut guard = match self.client.lock() {
            Ok(g) => g,
            // A panic elsewhere while holding the lock: the client itself is still usable or
            // closed, which is checked next.
            Err(poisoned) => poisoned.into_inner(),
        };
        if guard.is_closed() {
            *guard = open(&self.params)?;
        }
        Ok(guard)
    }
}

fn open(params: &ConnectParams) -> Result<postgres::Client> {
    let mut config = postgres::Config::new();
    config
        .host(&params.host)
        .port(params.port)
        .user(&params.user)
        .dbname(&params.dbname)
        .application_name("kombiform")
        .connect_timeout(params.connect_timeout);
    if let Some(pw) = &params.password {
        config.password(pw);
    }
    config.ssl_mode(pg_tls::ssl_mode(&params.tls));
    let connector = pg_tls::connector(&params.tls)
        .with_context(|| format!("TLS for PostgreSQL {}", params.describe()))?;
    let connected = match connector {
        None => config.connect(postgres::NoTls),
        Some(tls) => config.connect(tls),
    };
    connected
        .map_err(|e| match pg_tls::explain(&e, &params.tls) {
            // Not transient: a certificate or a server setting does not change by retrying.
            Some(tls) => anyhow::Error::new(tls),
            None => read::transient_or(e),
        })
        .with_context(|| format!("connecting to PostgreSQL {}", params.describe()))
}

impl Client for Postgres {
    fn read(&self) -> Result<LiveRead> {
        let mut client = self.client()?;
        read::read(&mut client)
            .with_context(|| format!("reading PostgreSQL {}", self.params.describe()))
    }

    fn batched(&self) -> bool {
        true
    }

    fn apply(&self, changes: &[&Change]) -> Result<()> {
        let mut client = self.client()?;
        let addresses: Vec<String> = changes.iter().map(|c| c.address.clone()).collect();
        if let Some(xid) = self.in_doubt_for(&addresses) {
            // An earlier attempt of this batch lost the answer to its COMMIT: never run a
            // committed batch twice (its CREATE TABLE would fail, reporting as failed what
            // committed).
            match apply::committed(&mut client, xid) {
                Ok(Some(true)) => return Ok(()),
                Ok(Some(false)) => {}
                Ok(None) => {
                    self.remember_in_doubt(xid, addresses);
                    return Err(anyhow::Error::new(Transient {
                        message: format!("{NAME}: transaction {xid} is still committing"),
                        retry_after: None,
                    }));
                }
                Err(e) => {
                    self.remember_in_doubt(xid, addresses);
                    return Err(e);
                }
            }
        }
        let result = apply::apply(&mut client, changes, &|name| self.role_password(name));
        if let Some(doubt) = result
            .as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<apply::CommitInDoubt>())
        {
            let xid = doubt.xid;
            self.remember_in_doubt(xid, addresses);
            // Retried: the next attempt asks first whether it committed.
            return Err(anyhow::Error::new(Transient {
                message: format!(
                    "{NAME}: the connection was lost while transaction {xid} committed: {}",
                    result.err().map(|e| format!("{e:#}")).unwrap_or_default()
                ),
                retry_after: None,
            }));
        }
        result
    }

    fn missing_inputs(&self, changes: &[Change]) -> Vec<MissingInput> {
        changes
            .iter()
            .filter(|c| c.action != Action::Delete)
            .filter_map(|c| {
                let name = c.address.strip_prefix(&format!("{NAME}.role."))?;
                let r = self.role_secrets.as_ref()?.get(name)?;
                resolve_secret_non_empty(r).is_err().then(|| {
                    let variable = kombiform_model::secret::variable(r);
                    MissingInput {
                        address: c.address.clone(),
                        what: format!("the password of PostgreSQL role {name} ({})", r.describe()),
                        command: format!(
                            "set {variable} (the service logs in with the same value)"
                        ),
                    }
                })
            })
            .collect()
    }

    fn record_audit(&self, record: &AuditRecord) -> Result<()> {
        // The connection may still be held by an abandoned call (an interrupted apply whose
        // transaction is stuck): the audit row then goes over a connection of its own.
        match self.client.try_lock() {
            Ok(mut client) if !client.is_closed() => apply::record_audit(&mut client, record),
            _ => {
                let mut own = open(&self.params)?;
                apply::record_audit(&mut own, record)
            }
        }
    }
}
