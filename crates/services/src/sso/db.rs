//! The SSO service's PostgreSQL access (schema `kombify`, via `search_path`): tenant lookup,
//! seat reservation, SSO users, audit rows, feature flags and webhook effects.
//!
//! Seats: a first login runs in ONE transaction that takes a per-subject advisory lock, then
//! reserves a seat with the row-locked `UPDATE quotas … WHERE used_users < max_users
//! RETURNING`, and commits only after the PocketBase user and mapping exist; rolling back (on
//! any failure) releases the seat.
//!
//! TLS: as `postgres.tls` says (`verify-full` against the bundled Azure roots on Azure, see
//! `kombiform_sys::tls::postgres`); a pooled connection that fails for a TLS reason says which.
//! Not here: PocketBase, HTTP.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use kombiform_sys::tls::postgres as pg_tls;
use tokio_postgres::NoTls;

use super::flags::{FlagRow, FlagsPayload};
use kombiform_model::secret::Secret;
use kombiform_model::services::PostgresConfig;
use kombiform_model::PostgresTls;

/// Connections in the pool.
pub const POOL_SIZE: usize = 16;

/// A pooled transaction handle.
pub type Client = deadpool_postgres::Object;

/// The tenant an exchange resolves to, with its quota and the subject's SSO user row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantLookup {
    /// Slug.
    pub slug: String,
    /// Plan name.
    pub plan: String,
    /// `active` or `suspended`.
    pub status: String,
    /// `max_users` (0 when no quota row).
    pub max_users: i32,
    /// `used_users`.
    pub used_users: i32,
    /// The subject's SSO user row in this tenant: disabled?
    pub user_disabled: Option<bool>,
}

/// An audit row.
#[derive(Clone, Debug)]
pub struct Audit<'a> {
    /// Who (Zitadel subject, `stripe`, `zitadel`, `internal`).
    pub actor: &'a str,
    /// What, e.g. `sso.exchange`.
    pub action: &'a str,
    /// On what (tenant slug).
    pub target: &'a str,
    /// `success`, `failure` or `denied`.
    pub result: &'a str,
    /// Extra JSON object (never a token).
    pub details: serde_json::Value,
}

/// The platform database.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    tls: PostgresTls,
}

/// Whether `s` is a plain lowercase SQL identifier.
fn plain_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

impl Db {
    /// A pool for `cfg` (no connection is made yet). Fails when the schema is not a plain
    /// identifier or the TLS configuration cannot be built (a CA bundle without certificates).
    pub fn new(cfg: &PostgresConfig, password: &Secret) -> Result<Db> {
        if !plain_identifier(&cfg.schema) {
            bail!("postgres schema {:?} is not a plain identifier", cfg.schema);
        }
        let mut pg = tokio_postgres::Config::new();
        pg.host(&cfg.host)
            .port(cfg.port)
            .dbname(&cfg.database)
            .user(&cfg.user)
            .password(password.expose())
            .options(format!("-c search_path={}", cfg.schema))
            .application_name("kombify-sso")
            .connect_timeout(Duration::from_secs(5))
            .ssl_mode(pg_tls::ssl_mode(&cfg.tls));
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match pg_tls::connector(&cfg.tls).context("TLS for PostgreSQL")? {
            None => Manager::from_config(pg, NoTls, manager_config),
            Some(tls) => Manager::from_config(pg, tls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .context("building the PostgreSQL pool")?;
        Ok(Db {
            pool,
            tls: cfg.tls.clone(),
        })
    }

    /// A pooled connection. A connection refused for a TLS reason (certificate not trusted,
    /// host name not in it, TLS missing on one side) fails with that reason.
    pub async fn client(&self) -> Result<Client> {
        self.pool
            .get()
            .await
            .map_err(|e| match pg_tls::explain(&e, &self.tls) {
                Some(tls) => anyhow::Error::new(tls),
                None => anyhow::Error::new(e),
            })
            .context("getting a PostgreSQL connection")
    }

    /// `SELECT 1` within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<()> {
        tokio::time::timeout(timeout, async {
            let c = self.client().await?;
            c.simple_query("SELECT 1").await.context("SELECT 1")?;
            Ok::<_, anyhow::Error>(())
        })
        .await
        .context("PostgreSQL did not answer in time")?
    }

    /// The tenant of Zitadel organization `org`, its user quota, and the (issuer, subject) SSO
    /// user row in it.
    pub async fn lookup(
        &self,
        org: &str,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<TenantLookup>> {
        let c = self.client().await?;
        let st = c.prepare_cached(
            "SELECT t.slug, t.plan, t.status, COALESCE(q.max_users, 0), COALESCE(q.used_users, 0), \
                    u.disabled_at IS NOT NULL, u.subject IS NOT NULL \
               FROM tenants t \
               LEFT JOIN quotas q ON q.tenant = t.slug \
               LEFT JOIN sso_users u ON u.issuer = $2 AND u.subject = $3 AND u.tenant = t.slug \
              WHERE t.zitadel_org_id = $1",
        ).await?;
        let row = c
            .query_opt(&st, &[&org, &issuer, &subject])
            .await
            .context("tenant lookup")?;
        Ok(row.map(|r| TenantLookup {
            slug: r.get(0),
            plan: r.get(1),
            status: r.get(2),
            max_users: r.get(3),
            used_users: r.get(4),
            user_disabled: if r.get::<_, bool>(6) {
                Some(r.get(5))
            } else {
                None
            },
        }))
    }

    /// Records a known user's login: `last_login_at` and the audit row, in one round trip.
    pub async fn record_login(&self, issuer: &str, subject: &str, audit: &Audit<'_>) -> Result<()> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "WITH a AS (INSERT INTO audit_log (actor, action, target, details, result) \
                        VALUES ($3, $4, $5, $6::text::jsonb, $7)) \
             UPDATE sso_users SET last_login_at = now() WHERE issuer = $1 AND subject = $2",
            )
            .await?;
        let details = audit.details.to_string();
        c.execute(
            &st,
            &[
                &issuer,
                &subject,
                &audit.actor,
                &audit.action,
                &audit.target,
                &details,
                &audit.result,
            ],
        )
        .await
        .context("recording a login")?;
        Ok(())
    }

    /// Writes an audit row on its own.
    pub async fn audit(&self, audit: &Audit<'_>) -> Result<()> {
        let c = self.client().await?;
        insert_audit(&c, audit).await
    }

    /// Upserts the payload's flags and replaces their overrides, in one transaction.
    pub async fn apply_flags(&self, payload: &FlagsPayload) -> Result<(), ApplyError> {
        let mut c = self.client().await.map_err(ApplyError::Db)?;
        let tx = c.transaction().await.map_err(sql)?;
        for f in &payload.flags {
            let rollout = f.rollout_percent.map(i16::from);
            tx.execute(
                // The sync owns the flag from now on: `synced_at` tells kombiform to keep it.
                "INSERT INTO flags (name, description, default_enabled, rollout_percent, synced_at) VALUES ($1, $2, $3, $4, now()) \
                 ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, \
                   default_enabled = EXCLUDED.default_enabled, rollout_percent = EXCLUDED.rollout_percent, \
                   synced_at = now(), updated_at = now()",
                &[&f.name, &f.description, &f.default, &rollout],
            ).await.map_err(sql)?;
            tx.execute(
                "DELETE FROM flag_plan_overrides WHERE flag = $1",
                &[&f.name],
            )
            .await
            .map_err(sql)?;
            tx.execute(
                "DELETE FROM flag_tenant_overrides WHERE flag = $1",
                &[&f.name],
            )
            .await
            .map_err(sql)?;
            for (plan, on) in &f.plans {
                tx.execute(
                    "INSERT INTO flag_plan_overrides (flag, plan, enabled) VALUES ($1, $2, $3)",
                    &[&f.name, plan, on],
                )
                .await
                .map_err(sql)?;
            }
            for (tenant, on) in &f.tenants {
                tx.execute(
                    "INSERT INTO flag_tenant_overrides (flag, tenant, enabled) VALUES ($1, $2, $3)",
                    &[&f.name, tenant, on],
                )
                .await
                .map_err(sql)?;
            }
        }
        let names: Vec<&str> = payload.flags.iter().map(|f| f.name.as_str()).collect();
        tx.execute(
            "INSERT INTO audit_log (actor, action, target, details, result) \
             VALUES ('internal', 'flags.apply', '', jsonb_build_object('flags', $1::text[]), 'success')",
            &[&names],
        ).await.map_err(sql)?;
        tx.commit().await.map_err(sql)
    }

    /// The tenant's plan and every flag with the overrides relevant to it; `None` for an
    /// unknown tenant.
    pub async fn flags_for(&self, tenant: &str) -> Result<Option<(String, Vec<FlagRow>)>> {
        let c = self.client().await?;
        let Some(t) = c
            .query_opt("SELECT plan FROM tenants WHERE slug = $1", &[&tenant])
            .await?
        else {
            return Ok(None);
        };
        let plan: String = t.get(0);
        let rows = c
            .query(
                "SELECT f.name, f.default_enabled, f.rollout_percent, p.enabled, o.enabled \
               FROM flags f \
               LEFT JOIN flag_plan_overrides p ON p.flag = f.name AND p.plan = $2 \
               LEFT JOIN flag_tenant_overrides o ON o.flag = f.name AND o.tenant = $1 \
              ORDER BY f.name",
                &[&tenant, &plan],
            )
            .await
            .context("reading flags")?;
        let flags = rows
            .iter()
            .map(|r| FlagRow {
                name: r.get(0),
                default_enabled: r.get(1),
                rollout_percent: r.get(2),
                plan_override: r.get(3),
                tenant_override: r.get(4),
            })
            .collect();
        Ok(Some((plan, flags)))
    }
}

/// Why a flags apply failed.
#[derive(Debug)]
pub enum ApplyError {
    /// The payload names an unknown plan or tenant, or breaks a table check (safe message).
    Invalid(&'static str),
    /// Anything else.
    Db(anyhow::Error),
}

fn sql(e: tokio_postgres::Error) -> ApplyError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => {
            ApplyError::Invalid("a flag names an unknown plan or tenant")
        }
        Some(c) if *c == SqlState::CHECK_VIOLATION => {
            ApplyError::Invalid("a flag breaks a constraint")
        }
        _ => ApplyError::Db(anyhow::Error::new(e).context("applying flags")),
    }
}

/// Takes the per-subject advisory lock for the rest of the transaction.
pub async fn lock_subject(tx: &impl GenericClient, issuer: &str, subject: &str) -> Result<()> {
    let key = format!("kombify-sso:{issuer}:{subject}");
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&key],
    )
    .await
    .context("locking the subject")?;
    Ok(())
}

/// Whether (issuer, subject) already holds a seat in `tenant` (an SSO user row).
pub async fn has_seat(
    tx: &impl GenericClient,
    issuer: &str,
    subject: &str,
    tenant: &str,
) -> Result<bool> {
    let r = tx
        .query_opt(
            "SELECT 1 FROM sso_users WHERE issuer = $1 AND subject = $2 AND tenant = $3",
            &[&issuer, &subject, &tenant],
        )
        .await
        .context("reading the SSO user")?;
    Ok(r.is_some())
}

/// Reserves one user seat; `(max_users, used_users)` after it, or `None` when full.
pub async fn reserve_seat(tx: &impl GenericClient, tenant: &str) -> Result<Option<(i32, i32)>> {
    let r = tx
        .query_opt(
            "UPDATE quotas SET used_users = used_users + 1, updated_at = now() \
          WHERE tenant = $1 AND used_users < max_users RETURNING max_users, used_users",
            &[&tenant],
        )
        .await
        .context("reserving a user seat")?;
    Ok(r.map(|r| (r.get(0), r.get(1))))
}

/// `(max_users, used_users)` of a tenant.
pub async fn quota(tx: &impl GenericClient, tenant: &str) -> Result<(i32, i32)> {
    let r = tx
        .query_opt(
            "SELECT max_users, used_users FROM quotas WHERE tenant = $1",
            &[&tenant],
        )
        .await
        .context("reading the quota")?;
    Ok(r.map_or((0, 0), |r| (r.get(0), r.get(1))))
}

/// Inserts (or re-points) the SSO user row of a first login.
pub async fn upsert_sso_user(
    tx: &impl GenericClient,
    issuer: &str,
    subject: &str,
    tenant: &str,
    org: &str,
    user_id: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO sso_users (issuer, subject, tenant, org_id, pocketbase_user_id, last_login_at) \
         VALUES ($1, $2, $3, $4, $5, now()) \
         ON CONFLICT (issuer, subject) DO UPDATE SET tenant = EXCLUDED.tenant, org_id = EXCLUDED.org_id, \
           pocketbase_user_id = EXCLUDED.pocketbase_user_id, last_login_at = now()",
        &[&issuer, &subject, &tenant, &org, &user_id],
    ).await.context("writing the SSO user")?;
    Ok(())
}

/// Records a webhook event; `false` when it was recorded before (a replay).
pub async fn record_event(
    tx: &impl GenericClient,
    provider: &str,
    id: &str,
    kind: &str,
) -> Result<bool> {
    let n = tx.execute(
        "INSERT INTO webhook_events (provider, event_id, event_type) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        &[&provider, &id, &kind],
    ).await.context("recording a webhook event")?;
    Ok(n == 1)
}

/// Moves the tenant with Stripe customer `customer` to the plan with Stripe price `price`,
/// setting its quota limits to the plan's (usage counters kept) and marking the plan as
/// billing's (`plan_billed_at`). The gateway's rate limits (`quotas.rate_limit_*`, what Kong
/// enforces) follow through the next `kombiform apply`, which plans them from this plan. Returns (tenant, old plan,
/// new plan), or `None` when the customer or the price is unknown.
pub async fn change_plan(
    tx: &impl GenericClient,
    customer: &str,
    price: &str,
) -> Result<Option<(String, String, String)>> {
    let Some(t) = tx
        .query_opt(
            "SELECT slug, plan FROM tenants WHERE stripe_customer_id = $1 FOR UPDATE",
            &[&customer],
        )
        .await?
    else {
        return Ok(None);
    };
    let Some(p) = tx
        .query_opt(
            "SELECT name FROM plans WHERE stripe_price_id = $1",
            &[&price],
        )
        .await?
    else {
        return Ok(None);
    };
    let (slug, old, new): (String, String, String) = (t.get(0), t.get(1), p.get(0));
    tx.execute(
        // Billing owns the plan from now on: `plan_billed_at` tells kombiform to keep it.
        "UPDATE tenants SET plan = $2, plan_billed_at = now(), updated_at = now() WHERE slug = $1",
        &[&slug, &new],
    )
    .await?;
    tx.execute(
        "UPDATE quotas q SET max_users = p.max_users, max_nodes = p.max_nodes, max_stacks = p.max_stacks, \
                max_simulations = p.max_simulations, updated_at = now() \
           FROM plans p WHERE p.name = $2 AND q.tenant = $1",
        &[&slug, &new],
    ).await.context("updating quota limits")?;
    Ok(Some((slug, old, new)))
}

/// Sets or clears `disabled_at` of every SSO user row of (issuer, subject); returns their tenants.
pub async fn set_disabled(
    tx: &impl GenericClient,
    issuer: &str,
    subject: &str,
    disabled: bool,
) -> Result<Vec<String>> {
    let rows = tx
        .query(
            "UPDATE sso_users SET disabled_at = CASE WHEN $3 THEN now() ELSE NULL END \
          WHERE issuer = $1 AND subject = $2 RETURNING tenant",
            &[&issuer, &subject, &disabled],
        )
        .await
        .context("updating the SSO user")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Inserts an audit row on `c` (a connection or a transaction).
pub async fn insert_audit(c: &impl GenericClient, audit: &Audit<'_>) -> Result<()> {
    let details = audit.details.to_string();
    c.execute(
        "INSERT INTO audit_log (actor, action, target, details, result) VALUES ($1, $2, $3, $4::text::jsonb, $5)",
        &[&audit.actor, &audit.action, &audit.target, &details, &audit.result],
    ).await.context("writing an audit row")?;
    Ok(())
}
