//! Test environment for `kombify-sso`: a real PostgreSQL (schema + local data applied) and a
//! real PocketBase (local collections imported), a fake Zitadel (an axum server on loopback
//! serving a JWKS of RSA keys made with `openssl`, tokens signed with `ring` through the
//! service's own `jose` module, and a userinfo endpoint, counting JWKS fetches), and the service
//! itself in-process on a free port. Shared by the SSO tests and the
//! load benchmark (`benches/sso_load.rs` includes it by path).
//!
//! Not a mock of PostgreSQL or PocketBase: only Zitadel is faked.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use kombiform_model::services::SsoConfig;
use kombiform_services::jose::{self, SigningKey};
use kombiform_services::server::Limits;
use kombiform_services::sso::{self, Sso};

use kombiform_test_support::pocketbase::{PocketBase, SUPERUSER_EMAIL, SUPERUSER_PASSWORD};
use kombiform_test_support::postgres::Postgres;

/// The project id the test tokens carry in `aud` (generated/local/services/sso.json).
pub(crate) const AUDIENCE: &str = "100000000000000001";
/// The org claim name.
pub(crate) const ORG_CLAIM: &str = "urn:zitadel:iam:user:resourceowner:id";
/// acme's Zitadel org (generated/local/sql/002_data.sql).
pub(crate) const ACME_ORG: &str = "284715550000000001";
/// The internal token of the test service.
pub(crate) const INTERNAL_TOKEN: &str = "test-internal-token-0123456789";
/// Stripe secrets: old and new, as during a rotation.
pub(crate) const STRIPE_SECRETS: [&str; 2] = ["whsec_old_secret", "whsec_new_secret"];
/// Zitadel signing key.
pub(crate) const ZITADEL_SECRET: &str = "zitadelsigningkey0123456789abcdefghij";

/// An RSA key pair made with openssl, signing with ring.
pub(crate) struct RsaKey {
    /// Key id.
    pub kid: String,
    /// The private key.
    pub signer: SigningKey,
    /// Public key, PEM.
    pub public_pem: Vec<u8>,
    /// The JWK of the public key.
    pub jwk: Value,
}

/// A file of the example fixture's generated output (`local/sql/001_schema.sql`), built
/// in-process from the fixture specs, never read from the working tree's `generated/`.
pub(crate) fn generated(path: &str) -> Result<String> {
    static FILES: std::sync::OnceLock<kombiform_emit::Files> = std::sync::OnceLock::new();
    let files =
        FILES.get_or_init(|| kombiform_emit::build(&kombiform_test_support::example_model()));
    files
        .get(path)
        .cloned()
        .with_context(|| format!("the example fixture generates no {path}"))
}

fn openssl(args: &[&str], dir: &Path) -> Result<Vec<u8>> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (install it: apt-get install openssl)")?;
    if !out.status.success() {
        bail!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

impl RsaKey {
    /// A fresh 2048-bit key (`openssl genrsa`, converted to PKCS#8 DER for ring).
    pub(crate) fn generate(kid: &str) -> Result<RsaKey> {
        let dir = tempfile::tempdir()?;
        openssl(&["genrsa", "-out", "k.pem", "2048"], dir.path())?;
        let der = openssl(
            &[
                "pkcs8", "-topk8", "-nocrypt", "-in", "k.pem", "-outform", "DER",
            ],
            dir.path(),
        )?;
        let public_pem = openssl(&["rsa", "-in", "k.pem", "-pubout"], dir.path())?;
        let signer = SigningKey::rs256_from_pkcs8(&der).context("the openssl key in ring")?;
        let jwk = signer.public_jwk(kid);
        Ok(RsaKey {
            kid: kid.to_string(),
            signer,
            public_pem,
            jwk,
        })
    }

    /// Signs `claims` with RS256 and this key's kid (`typ: JWT`, as Zitadel does).
    pub(crate) fn sign(&self, claims: &Value) -> String {
        let mut header = Map::new();
        header.insert("kid".into(), self.kid.clone().into());
        header.insert("typ".into(), "JWT".into());
        self.sign_with(&header, claims)
    }

    /// Signs `claims` under exactly `header` (plus `alg: RS256`).
    pub(crate) fn sign_with(&self, header: &Map<String, Value>, claims: &Value) -> String {
        self.signer
            .sign(header, claims)
            .unwrap_or_else(|e| panic!("signing: {e}"))
    }
}

/// Seconds since the epoch.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The fake Zitadel's state.
#[derive(Default)]
pub(crate) struct FakeZitadel {
    /// Served JWKS keys.
    pub keys: Mutex<Vec<Value>>,
    /// JWKS GETs so far.
    pub jwks_fetches: AtomicU64,
    /// userinfo GETs so far.
    pub userinfo_calls: AtomicU64,
}

async fn jwks(State(z): State<Arc<FakeZitadel>>) -> Json<Value> {
    z.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys = z.keys.lock().map(|k| k.clone()).unwrap_or_default();
    Json(json!({ "keys": keys }))
}

/// userinfo: the token's `sub` (payload read without verification: the service verified it),
/// e-mail `<sub>@example.test`, none for subjects starting with `9`.
async fn userinfo(
    State(z): State<Arc<FakeZitadel>>,
    headers: HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    z.userinfo_calls.fetch_add(1, Ordering::SeqCst);
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| jose::b64_decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let Some(sub) = payload
        .as_ref()
        .and_then(|p| p.get("sub"))
        .and_then(Value::as_str)
    else {
        return (axum::http::StatusCode::UNAUTHORIZED, "").into_response();
    };
    if sub.starts_with('9') {
        return Json(json!({"sub": sub})).into_response();
    }
    Json(json!({"sub": sub, "email": format!("{sub}@example.test"), "email_verified": true, "name": format!("User {sub}")})).into_response()
}

/// Everything one test needs; servers stop on drop.
pub(crate) struct SsoEnv {
    /// The runtime running the fake Zitadel and the service.
    pub rt: tokio::runtime::Runtime,
    /// PostgreSQL.
    pub pg: Postgres,
    /// PocketBase.
    pub pb: PocketBase,
    /// The fake Zitadel's state.
    pub zitadel: Arc<FakeZitadel>,
    /// Its base URL (= issuer).
    pub issuer: String,
    /// The key served from the start.
    pub key: RsaKey,
    /// The service.
    pub sso: Arc<Sso>,
    /// The service's base URL.
    pub url: String,
    /// A client for the service.
    pub http: reqwest::Client,
    /// The service's configuration (pointing at these servers).
    pub config: SsoConfig,
    /// The service's secrets, as environment variables.
    pub secrets: HashMap<&'static str, String>,
    /// The public key (PEM) of the platform token key the service signs with (`local1`).
    pub platform_public_pem: String,
}

/// The platform database name.
pub(crate) const DB: &str = "kombify_platform";

impl SsoEnv {
    /// Starts everything with `cooldown_seconds` between on-demand JWKS refreshes.
    pub(crate) fn start(cooldown_seconds: u32) -> Result<SsoEnv> {
        kombiform_services::http::init_logging();
        let pg = Postgres::start()?;
        pg.create_database(DB)?;
        let mut db = pg.connect(DB)?;
        // The schema, the data, and the services' roles: the service logs in as its own
        // least-privilege role (`kombify_sso`), as in production.
        for f in ["001_schema.sql", "002_data.sql", "003_roles.sql"] {
            let sql = generated(&format!("local/sql/{f}"))?;
            db.batch_execute(&sql)
                .with_context(|| format!("applying {f}"))?;
        }
        let pb = PocketBase::start()?;
        let su = pb.superuser_token()?;
        let snapshot = generated("local/pocketbase/collections.json")?;
        let mut body: Value = serde_json::from_str(&snapshot)?;
        body["deleteMissing"] = json!(false);
        let r = pb
            .agent()
            .put(format!("{}/api/collections/import", pb.url()))
            .header("Authorization", &su)
            .json(&body)
            .send()?;
        if r.status() != 204 {
            bail!("collections import answered {}", r.status());
        }

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let key = RsaKey::generate("key-1")?;
        let zitadel = Arc::new(FakeZitadel::default());
        zitadel
            .keys
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(key.jwk.clone());
        let z_listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let issuer = format!("http://{}", z_listener.local_addr()?);
        let z_app = Router::new()
            .route("/oauth/v2/keys", get(jwks))
            .route("/oidc/v1/userinfo", get(userinfo))
            .with_state(Arc::clone(&zitadel));
        rt.spawn(async move { axum::serve(z_listener, z_app).await });

        let mut config: SsoConfig = serde_json::from_str(&generated("local/services/sso.json")?)?;
        config.zitadel.issuer = issuer.clone();
        config.zitadel.discovery_uri = format!("{issuer}/.well-known/openid-configuration");
        config.zitadel.jwks_uri = format!("{issuer}/oauth/v2/keys");
        config.zitadel.jwks_refresh_cooldown_seconds = cooldown_seconds;
        config.pocketbase.url = pb.url();
        config.pocketbase.superuser_email = SUPERUSER_EMAIL.to_string();
        config.postgres.host = pg.host().to_string();
        config.postgres.port = pg.port();
        let (platform_private, platform_public_pem) =
            kombiform_test_support::kong_jwt::es256_key_pair()?;
        let env: HashMap<&str, String> = HashMap::from([
            ("SSO_TOKEN_KEY_LOCAL", platform_private),
            ("PG_KOMBIFY_SSO_PASSWORD", "unused-trust-auth".to_string()),
            (
                "POCKETBASE_SUPERUSER_PASSWORD",
                SUPERUSER_PASSWORD.to_string(),
            ),
            ("SSO_INTERNAL_TOKEN", INTERNAL_TOKEN.to_string()),
            ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRETS.join(",")),
            ("ZITADEL_WEBHOOK_SECRET", ZITADEL_SECRET.to_string()),
        ]);
        let service = Arc::new(Sso::new(config.clone(), |n| env.get(n).cloned())?);
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        rt.block_on(service.warm_up());
        let s = Arc::clone(&service);
        rt.spawn(async move {
            sso::serve(listener, s, Limits::default(), std::future::pending()).await
        });
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(kombiform_sys::tls::client_config()?)
            .no_proxy()
            .build()?;
        Ok(SsoEnv {
            rt,
            pg,
            pb,
            zitadel,
            issuer,
            key,
            sso: service,
            url,
            http,
            config,
            secrets: env,
            platform_public_pem,
        })
    }

    /// Standard access-token claims for `sub` in org `org`, valid for an hour.
    pub(crate) fn claims(&self, sub: &str, org: &str) -> Value {
        let t = now();
        json!({
            "iss": self.issuer, "sub": sub, "aud": [AUDIENCE, "100000000000000002"], "client_id": "100000000000000002",
            "exp": t + 3600, "iat": t, "nbf": t, "jti": format!("V2_{sub}_{t}"), ORG_CLAIM: org,
        })
    }

    /// A valid access token for `sub` in `org`, signed with the served key.
    pub(crate) fn token(&self, sub: &str, org: &str) -> String {
        self.key.sign(&self.claims(sub, org))
    }

    /// `POST /api/internal/sso/exchange` with a bearer token: (status, headers, JSON body).
    pub(crate) async fn exchange(&self, token: &str) -> (u16, HeaderMap, Value) {
        let r = self
            .http
            .post(format!("{}/api/internal/sso/exchange", self.url))
            .bearer_auth(token)
            .send()
            .await;
        read(r).await
    }

    /// A blocking [`Self::exchange`].
    pub(crate) fn exchange_blocking(&self, token: &str) -> (u16, HeaderMap, Value) {
        self.rt.block_on(self.exchange(token))
    }

    /// A request to the service: (status, headers, JSON body or null).
    pub(crate) fn send(&self, req: reqwest::RequestBuilder) -> (u16, HeaderMap, Value) {
        self.rt.block_on(async { read(req.send().await).await })
    }

    /// A query on the platform database.
    pub(crate) fn query(&self, sql: &str) -> Vec<postgres::Row> {
        let mut c = self
            .pg
            .connect(DB)
            .unwrap_or_else(|e| panic!("connect: {e:#}"));
        c.query(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A statement on the platform database.
    pub(crate) fn execute(&self, sql: &str) {
        let mut c = self
            .pg
            .connect(DB)
            .unwrap_or_else(|e| panic!("connect: {e:#}"));
        c.batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// GET on PocketBase with an auth token: (status, JSON body).
    pub(crate) fn pb_get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self
            .pb
            .agent()
            .get(format!("{}{path}", self.pb.url()))
            .header("Authorization", token)
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// POST on PocketBase with an auth token: status.
    pub(crate) fn pb_post(&self, path: &str, token: &str) -> u16 {
        let r = self
            .pb
            .agent()
            .post(format!("{}{path}", self.pb.url()))
            .header("Authorization", token)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        r.status().as_u16()
    }

    /// A request with a JSON body (or none) on PocketBase with an auth token: (status, JSON
    /// body or `Null`).
    pub(crate) fn pb_send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.pb.url());
        let agent = self.pb.agent();
        let sent = match (method, body) {
            ("DELETE", _) => agent.delete(&url).header("Authorization", token).send(),
            ("POST", Some(b)) => agent
                .post(&url)
                .header("Authorization", token)
                .json(&b)
                .send(),
            ("PATCH", Some(b)) => agent
                .patch(&url)
                .header("Authorization", token)
                .json(&b)
                .send(),
            other => panic!("unsupported request {other:?}"),
        };
        let r = sent.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Number of records in a PocketBase collection (as superuser).
    pub(crate) fn pb_count(&self, collection: &str) -> u64 {
        let su = self
            .pb
            .superuser_token()
            .unwrap_or_else(|e| panic!("{e:#}"));
        let (status, v) = self.pb_get(
            &format!("/api/collections/{collection}/records?perPage=1"),
            &su,
        );
        assert_eq!(status, 200, "{v}");
        v["totalItems"].as_u64().unwrap_or(u64::MAX)
    }
}

async fn read(r: reqwest::Result<reqwest::Response>) -> (u16, HeaderMap, Value) {
    let r = r.unwrap_or_else(|e| panic!("request failed: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.unwrap_or_default();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
