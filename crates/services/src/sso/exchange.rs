//! The SSO exchange: a Zitadel access token → tenant → PocketBase user (found through
//! `_sso_mappings`, or created within the tenant's user quota) → a short-lived PocketBase token.
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
use super::pocketbase::{Created, Mapping, User};
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
    let (mapping, quota) = match sso
        .pb
        .find_mapping(mappings, issuer, &token.subject)
        .await?
    {
        Some(m) => ((m), (tenant.max_users, tenant.used_users)),
        None => first_login(sso, raw_token, &token, &tenant).await?,
    };
    if mapping.tenant != tenant.slug {
        return Err(SsoError::TenantForbidden(
            "mapping belongs to another tenant",
        ));
    }
    let Some((pb_token, user)) = sso
        .pb
        .impersonate(
            &mapping.collection,
            &mapping.user_id,
            sso.config.token_ttl_seconds,
        )
        .await?
    else {
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

/// Creates the user, its mapping and its seat (see the module doc); returns the mapping and
/// the quota after it.
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
    if let Some(m) = sso
        .pb
        .find_mapping(mappings, issuer, &token.subject)
        .await?
    {
        let q = db::quota(&tx, &tenant.slug).await?;
        return Ok((m, q));
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
        let audit = Audit {
            actor: &token.subject,
            action: "sso.user.create",
            target: &tenant.slug,
            result: "denied",
            details: json!({"reason": "quota_exceeded"}),
        };
        if let Err(e) = db::insert_audit(&client, &audit).await {
            tracing::error!(error = %format!("{e:#}"), "writing an audit row failed");
        }
        return Err(SsoError::QuotaExceeded);
    };
    let collection = users_collection(&sso.config.pocketbase.users_collection, &tenant.slug);
    let (user_id, created) = match sso
        .pb
        .create_user(&collection, &email, &token.subject, &name)
        .await?
    {
        Created::New(u) => (u.id, true),
        Created::SubjectTaken => match sso
            .pb
            .find_user_by_subject(&collection, &token.subject)
            .await?
        {
            Some(u) => (u.id, false),
            None => {
                return Err(SsoError::Internal(anyhow!(
                    "user with subject exists but cannot be found"
                )))
            }
        },
        Created::EmailTaken => return Err(SsoError::EmailTaken),
    };
    let mapping = Mapping {
        tenant: tenant.slug.clone(),
        collection: collection.clone(),
        user_id: user_id.clone(),
    };
    let written = async {
        if !sso
            .pb
            .create_mapping(mappings, issuer, &token.subject, &token.org_id, &mapping)
            .await?
        {
            anyhow::bail!("the subject was mapped by another writer");
        }
        db::upsert_sso_user(
            &tx,
            issuer,
            &token.subject,
            &tenant.slug,
            &token.org_id,
            &user_id,
        )
        .await?;
        let audit = Audit {
            actor: &token.subject,
            action: "sso.user.create",
            target: &tenant.slug,
            result: "success",
            details: json!({"user": user_id, "collection": collection, "adopted": !created}),
        };
        db::insert_audit(&tx, &audit).await?;
        tx.commit().await.context("committing the first login")?;
        Ok(())
    }
    .await;
    if let Err(e) = written {
        if created {
            if let Err(d) = sso.pb.delete_user(&collection, &user_id).await {
                tracing::error!(error = %format!("{d:#}"), "could not delete the user of a failed first login");
            }
        }
        return Err(SsoError::Unavailable(e));
    }
    Ok((mapping, quota))
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
