//! The SSO exchange: a Zitadel access token → tenant → PocketBase user (found through
//! `_sso_mappings`, or created within the tenant's user quota) → a short-lived PocketBase token.
//!
//! The link between a Zitadel subject and a user record is the mapping alone: a first login
//! writes the mapping (superuser-only) with a fresh user id, then creates the user at that id.
//! A user record is never adopted because of what it holds (a `zitadelSub` is data in the
//! record, not proof): if another record already holds the subject, the login is refused as
//! a conflict for an operator to resolve. A mapping whose user is missing (a first login
//! interrupted between the two writes, or a user deleted by hand) gets its user created at
//! the id it names.
//!
//! Concurrency: a first login holds one PostgreSQL transaction with a per-subject advisory lock
//! (so one subject never gets two users) and the quota row lock taken by the seat reservation
//! (so the tenant never passes `max_users`); the seat is committed only with the user and its
//! mapping, and any failure rolls it back. Not here: HTTP parsing ([`super::routes`]).

use anyhow::{anyhow, Context};
use serde::Serialize;
use serde_json::json;

use super::db::{self, Audit, TenantLookup};
use super::error::SsoError;
use super::pocketbase::{new_user_id, Created, Mapping, User};
use super::token::AccessToken;
use super::Sso;
use kombiform_model::naming;

/// The exchange response body.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Exchanged {
    /// PocketBase auth token (non-refreshable, `tokenTtlSeconds`).
    pub token: String,
    /// The user.
    pub user: UserOut,
    /// The tenant.
    pub tenant: TenantOut,
    /// The tenant's user quota after this exchange.
    pub quota: QuotaOut,
}

/// `user` of the response.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct UserOut {
    /// Record id.
    pub id: String,
    /// E-mail.
    pub email: String,
    /// Collection name.
    pub collection: String,
}

/// `tenant` of the response.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TenantOut {
    /// Slug.
    pub slug: String,
    /// Plan.
    pub plan: String,
}

/// `quota` of the response.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct QuotaOut {
    /// `max_users`.
    pub max_users: i32,
    /// `used_users`.
    pub used_users: i32,
}

/// The tenant's users collection from the configured pattern (`t_{tenant}_users`), the
/// placeholder filled with the tenant's ident ([`naming::tenant_ident`]).
pub fn users_collection(pattern: &str, slug: &str) -> String {
    pattern.replace(
        kombiform_model::services::TENANT_PLACEHOLDER,
        &naming::tenant_ident(slug),
    )
}

/// Runs the exchange for a raw bearer token.
pub async fn exchange(sso: &Sso, raw_token: &str) -> Result<Exchanged, SsoError> {
    let token = sso
        .validator
        .validate(raw_token)
        .await
        .map_err(|r| SsoError::Unauthorized(r.0))?;
    let issuer = sso.config.zitadel.issuer.as_str();
    let Some(tenant) = sso.db.lookup(&token.org_id, issuer, &token.subject).await? else {
        return Err(SsoError::TenantForbidden("unknown organization"));
    };
    let deny = |action: &'static str| Audit {
        actor: &token.subject,
        action,
        target: &tenant.slug,
        result: "denied",
        details: json!({"org": token.org_id}),
    };
    if tenant.status != "active" {
        audit_quietly(sso, &deny("sso.exchange.suspended")).await;
        return Err(SsoError::TenantForbidden("tenant suspended"));
    }
    if tenant.user_disabled == Some(true) {
        audit_quietly(sso, &deny("sso.exchange.disabled")).await;
        return Err(SsoError::UserDisabled);
    }
    let mappings = &sso.config.pocketbase.sso_mappings_collection;
    let (mut mapping, mut quota) = match sso
        .pb
        .find_mapping(mappings, issuer, &token.subject)
        .await?
    {
        Some(m) => (m, (tenant.max_users, tenant.used_users)),
        None => first_login(sso, raw_token, &token, &tenant).await?,
    };
    if mapping.tenant != tenant.slug {
        return Err(SsoError::TenantForbidden(
            "mapping belongs to another tenant",
        ));
    }
    let mut session = impersonate(sso, &mapping).await?;
    if session.is_none() {
        // The mapping names a user that does not exist: create it there (module doc).
        (mapping, quota) = first_login(sso, raw_token, &token, &tenant).await?;
        session = impersonate(sso, &mapping).await?;
    }
    let Some((pb_token, user)) = session else {
        return Err(SsoError::Internal(anyhow!(
            "mapped user {}/{} does not exist",
            mapping.collection,
            mapping.user_id
        )));
    };
    let audit = Audit {
        actor: &token.subject,
        action: "sso.exchange",
        target: &tenant.slug,
        result: "success",
        details: json!({"user": user.id, "collection": user.collection}),
    };
    sso.db.record_login(issuer, &token.subject, &audit).await?;
    Ok(response(pb_token, user, &tenant, quota))
}

fn response(token: String, user: User, tenant: &TenantLookup, quota: (i32, i32)) -> Exchanged {
    Exchanged {
        token,
        user: UserOut {
            id: user.id,
            email: user.email,
            collection: user.collection,
        },
        tenant: TenantOut {
            slug: tenant.slug.clone(),
            plan: tenant.plan.clone(),
        },
        quota: QuotaOut {
            max_users: quota.0,
            used_users: quota.1,
        },
    }
}

/// A token for the mapped user and its record; `None` when the user does not exist.
async fn impersonate(sso: &Sso, m: &Mapping) -> Result<Option<(String, User)>, SsoError> {
    Ok(sso
        .pb
        .impersonate(&m.collection, &m.user_id, sso.config.token_ttl_seconds)
        .await?)
}

async fn audit_quietly(sso: &Sso, audit: &Audit<'_>) {
    if let Err(e) = sso.db.audit(audit).await {
        tracing::error!(error = %format!("{e:#}"), "writing an audit row failed");
    }
}

/// The e-mail address and display name from Zitadel's userinfo, for the same bearer token.
async fn userinfo(sso: &Sso, raw_token: &str, subject: &str) -> Result<(String, String), SsoError> {
    let url = format!(
        "{}/oidc/v1/userinfo",
        sso.config.zitadel.issuer.trim_end_matches('/')
    );
    let r = sso
        .http
        .get(&url)
        .bearer_auth(raw_token)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    match r.status().as_u16() {
        200 => {}
        401 | 403 => return Err(SsoError::Unauthorized("userinfo refused the token")),
        s => return Err(SsoError::Unavailable(anyhow!("GET {url} answered {s}"))),
    }
    let v: serde_json::Value = r.json().await.context("reading userinfo")?;
    if v.get("sub").and_then(|s| s.as_str()) != Some(subject) {
        return Err(SsoError::Unauthorized(
            "userinfo subject differs from the token's",
        ));
    }
    let email = v
        .get("email")
        .and_then(|e| e.as_str())
        .filter(|e| e.contains('@') && e.len() <= 254)
        .ok_or(SsoError::EmailRequired)?;
    let name = v
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    Ok((email.to_string(), name))
}

/// Creates the mapping, its user and its seat (see the module doc), or the missing user of an
/// existing mapping; returns the mapping and the quota after it.
async fn first_login(
    sso: &Sso,
    raw_token: &str,
    token: &AccessToken,
    tenant: &TenantLookup,
) -> Result<(Mapping, (i32, i32)), SsoError> {
    let issuer = sso.config.zitadel.issuer.as_str();
    let mappings = &sso.config.pocketbase.sso_mappings_collection;
    let (email, name) = userinfo(sso, raw_token, &token.subject).await?;
    let mut client = sso.db.client().await?;
    let tx = client
        .transaction()
        .await
        .context("starting a first-login transaction")?;
    db::lock_subject(&tx, issuer, &token.subject).await?;
    // A concurrent login of the same subject may have finished while this one waited.
    let existing = sso
        .pb
        .find_mapping(mappings, issuer, &token.subject)
        .await?;
    if let Some(m) = &existing {
        if m.tenant != tenant.slug {
            return Err(SsoError::TenantForbidden(
                "mapping belongs to another tenant",
            ));
        }
        if sso.pb.user_exists(&m.collection, &m.user_id).await? {
            let q = db::quota(&tx, &tenant.slug).await?;
            return Ok((m.clone(), q));
        }
    }
    let quota = if db::has_seat(&tx, issuer, &token.subject, &tenant.slug).await? {
        db::quota(&tx, &tenant.slug).await?
    } else if let Some(q) = db::reserve_seat(&tx, &tenant.slug).await? {
        q
    } else {
        // Rolled back, and the denial written on the SAME connection: taking a second one
        // while holding this one could exhaust the pool under a burst of first logins.
        tx.rollback()
            .await
            .context("rolling back a refused first login")?;
        deny_on(&client, token, tenant, "quota_exceeded").await;
        return Err(SsoError::QuotaExceeded);
    };
    // The mapping first: it is the link, and names the id the user is created with.
    let (mapping, written) = match existing {
        Some(m) => (m, None),
        None => {
            let m = Mapping {
                tenant: tenant.slug.clone(),
                collection: users_collection(&sso.config.pocketbase.users_collection, &tenant.slug),
                user_id: new_user_id(),
            };
            let Some(row) = sso
                .pb
                .create_mapping(mappings, issuer, &token.subject, &token.org_id, &m)
                .await?
            else {
                return Err(SsoError::Unavailable(anyhow!(
                    "the subject was mapped by another writer"
                )));
            };
            (m, Some(row))
        }
    };
    let created = sso
        .pb
        .create_user(
            &mapping.collection,
            &mapping.user_id,
            &email,
            &token.subject,
            &name,
        )
        .await;
    let refused = match created {
        Ok(Created::New(_)) => None,
        Ok(Created::SubjectTaken) => Some(SsoError::SubjectConflict),
        Ok(Created::EmailTaken) => Some(SsoError::EmailTaken),
        Err(e) => Some(SsoError::Unavailable(e)),
    };
    if let Some(err) = refused {
        forget_mapping(sso, written.as_deref()).await;
        if matches!(err, SsoError::SubjectConflict) {
            tx.rollback()
                .await
                .context("rolling back a refused first login")?;
            deny_on(&client, token, tenant, "subject_held_by_unlinked_user").await;
        }
        return Err(err);
    }
    let committed = async {
        db::upsert_sso_user(
            &tx,
            issuer,
            &token.subject,
            &tenant.slug,
            &token.org_id,
            &mapping.user_id,
        )
        .await?;
        let audit = Audit {
            actor: &token.subject,
            action: "sso.user.create",
            target: &tenant.slug,
            result: "success",
            details: json!({
                "user": mapping.user_id, "collection": mapping.collection,
                "recreated": written.is_none(),
            }),
        };
        db::insert_audit(&tx, &audit).await?;
        tx.commit().await.context("committing the first login")?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = committed {
        if let Err(d) = sso
            .pb
            .delete_user(&mapping.collection, &mapping.user_id)
            .await
        {
            tracing::error!(error = %format!("{d:#}"), "could not delete the user of a failed first login");
        }
        forget_mapping(sso, written.as_deref()).await;
        return Err(SsoError::Unavailable(e));
    }
    Ok((mapping, quota))
}

/// Deletes the mapping row a failed first login wrote, if it wrote one. Should that fail too,
/// the mapping stays and the next login creates its user (module doc).
async fn forget_mapping(sso: &Sso, row: Option<&str>) {
    let Some(row) = row else {
        return;
    };
    let mappings = &sso.config.pocketbase.sso_mappings_collection;
    if let Err(e) = sso.pb.delete_mapping(mappings, row).await {
        tracing::error!(error = %format!("{e:#}"), "could not delete the mapping of a failed first login");
    }
}

/// Writes the audit row of a refused first login on `client` (its transaction rolled back).
async fn deny_on(client: &db::Client, token: &AccessToken, tenant: &TenantLookup, reason: &str) {
    let audit = Audit {
        actor: &token.subject,
        action: "sso.user.create",
        target: &tenant.slug,
        result: "denied",
        details: json!({ "reason": reason }),
    };
    if let Err(e) = db::insert_audit(client, &audit).await {
        tracing::error!(error = %format!("{e:#}"), "writing an audit row failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collections_use_the_tenant_ident() {
        assert_eq!(
            users_collection("t_{tenant}_users", "stark-lab"),
            "t_stark_lab_users"
        );
        assert_eq!(naming::tenant_ident("acme"), "acme");
    }
}
