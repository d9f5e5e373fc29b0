//! The stand-in's request pipeline, in ARM's order: the token endpoint; authentication; the
//! throttling bucket of the subscription, principal and operation class; injected faults;
//! the api-version; then the resource logic of `store.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::json;

use crate::answer::{Answer, Req};
use crate::bucket::{Admission, Buckets, Class};
use crate::faults::{Dice, Faults, Outcome, RequestFault};
use crate::path::{route, Route};
use crate::profiles;
use crate::store::{Store, TENANT};

/// What the stand-in has seen and done (for tests and for people).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// ARM requests received (token requests apart).
    pub requests: u64,
    /// Of those: GET and HEAD.
    pub reads: u64,
    /// PUT, PATCH and POST.
    pub writes: u64,
    /// DELETE.
    pub deletes: u64,
    /// Token requests.
    pub token_requests: u64,
    /// Requests refused with `429 SubscriptionRequestsThrottled` because ARM's bucket was
    /// empty: a client that keeps its budget never causes one.
    pub over_limit: u64,
    /// Injected 429s.
    pub injected_throttles: u64,
    /// Injected 500s and 503s.
    pub injected_errors: u64,
    /// Dropped connections.
    pub dropped: u64,
    /// Long-running operations set to end Failed.
    pub failed_operations: u64,
    /// Long-running operations set to end Canceled.
    pub canceled_operations: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
    deletes: AtomicU64,
    token_requests: AtomicU64,
    over_limit: AtomicU64,
    injected_throttles: AtomicU64,
    injected_errors: AtomicU64,
    dropped: AtomicU64,
    failed_operations: AtomicU64,
    canceled_operations: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            requests: get(&self.requests),
            reads: get(&self.reads),
            writes: get(&self.writes),
            deletes: get(&self.deletes),
            token_requests: get(&self.token_requests),
            over_limit: get(&self.over_limit),
            injected_throttles: get(&self.injected_throttles),
            injected_errors: get(&self.injected_errors),
            dropped: get(&self.dropped),
            failed_operations: get(&self.failed_operations),
            canceled_operations: get(&self.canceled_operations),
        }
    }
}

/// The ARM logic and its state.
#[derive(Debug)]
pub(crate) struct Arm {
    faults: Faults,
    scale: f64,
    dice: Dice,
    buckets: Buckets,
    store: Mutex<Store>,
    tokens: Mutex<HashMap<String, String>>,
    pub(crate) counters: Counters,
}

impl Arm {
    pub(crate) fn new(faults: Faults, scale: f64, page_size: usize) -> Self {
        Self {
            dice: Dice::new(faults.seed),
            buckets: Buckets::new(&faults),
            faults,
            scale,
            store: Mutex::new(Store::new(scale, page_size)),
            tokens: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers one request.
    pub(crate) fn handle(&self, req: &Req) -> Answer {
        let route = route(&req.path);
        if route == Route::Token {
            return self.token(req);
        }
        bump(&self.counters.requests);
        let class = Class::of(&req.method);
        bump(match class {
            Class::Read => &self.counters.reads,
            Class::Write => &self.counters.writes,
            Class::Delete => &self.counters.deletes,
        });
        let principal = match self.principal(req) {
            Ok(principal) => principal,
            Err(answer) => return answer,
        };
        let sub = subscription(&req.path);
        let remaining = match self.buckets.admit(&sub, &principal, class) {
            Admission::Admitted { remaining } => remaining,
            Admission::Throttled { retry_after } => {
                bump(&self.counters.over_limit);
                let secs = retry_after.as_secs_f64().ceil().max(1.0);
                return Answer::error(
                    429,
                    "SubscriptionRequestsThrottled",
                    &format!(
                        "Number of '{}' requests for subscription '{sub}' actor '{principal}' exceeded. Please try again after '{secs}' seconds after the additional tokens are available. Refer to https://aka.ms/arm-throttling",
                        class.plural()
                    ),
                )
                .with("retry-after", &secs.to_string())
                .with(&format!("x-ms-ratelimit-remaining-subscription-{}", class.plural()), "0");
            }
        };
        self.admitted(req, route).with(
            &format!("x-ms-ratelimit-remaining-subscription-{}", class.plural()),
            &remaining.to_string(),
        )
    }

    fn admitted(&self, req: &Req, route: Route) -> Answer {
        match self.dice.request(&self.faults) {
            RequestFault::None => {}
            RequestFault::Drop => {
                bump(&self.counters.dropped);
                return Answer::dropped();
            }
            RequestFault::Throttle => {
                bump(&self.counters.injected_throttles);
                let answer = Answer::error(
                    429,
                    "ResourceRequestsThrottled",
                    "Number of requests exceeded the limit of the resource provider (injected by kombiform-arm-standin).",
                );
                return self
                    .store()
                    .retry_after(answer, self.faults.retry_after.as_secs());
            }
            RequestFault::ServerError { unavailable } => {
                bump(&self.counters.injected_errors);
                if unavailable {
                    let answer = Answer::error(
                        503,
                        "ServiceUnavailable",
                        "The service is temporarily unavailable (injected by kombiform-arm-standin).",
                    );
                    return self
                        .store()
                        .retry_after(answer, self.faults.retry_after.as_secs());
                }
                return Answer::error(
                    500,
                    "InternalServerError",
                    "Encountered internal server error (injected by kombiform-arm-standin).",
                );
            }
        }
        let Some(api) = req.api_version().map(str::to_owned) else {
            return Answer::error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            );
        };
        let mut store = self.store();
        store.settle(Instant::now());
        if req.method == Method::GET {
            if let Some(answer) = store.operation(req) {
                return answer;
            }
        }
        if let Err(answer) = check_api_version(&route, &api) {
            return answer;
        }
        let method = &req.method;
        match route {
            Route::Subscription { sub } if method == Method::GET => Answer::json(
                200,
                &json!({
                    "id": format!("/subscriptions/{sub}"),
                    "subscriptionId": sub,
                    "tenantId": TENANT,
                    "displayName": "kombiform-arm-standin",
                    "state": "Enabled",
                    "authorizationSource": "RoleBased",
                }),
            ),
            Route::Provider { sub, namespace } if method == Method::GET => {
                provider(&sub, &namespace)
            }
            Route::SubscriptionList {
                sub,
                namespace,
                type_,
            } if method == Method::GET => {
                let type_key = format!("{namespace}/{type_}").to_ascii_lowercase();
                store.list_of_type(&sub, &type_key, req)
            }
            Route::ResourceGroups { sub } if method == Method::GET => store.list_groups(&sub, req),
            Route::GroupResources { group_key, .. } if method == Method::GET => {
                store.list_group_resources(&group_key, req)
            }
            Route::DeletedVaults { sub } if method == Method::GET => {
                store.deleted_vaults(&sub, req)
            }
            Route::DeletedVault {
                sub,
                name,
                purge: false,
                ..
            } if method == Method::GET => store.deleted_vault(&sub, &name),
            Route::DeletedVault {
                sub,
                name,
                purge: true,
                ..
            } if method == Method::POST => store.purge_vault(&sub, &name, &api, &req.base),
            Route::Collection(c) if method == Method::GET => store.list_collection(&c, req),
            Route::Collection(c) if method == Method::POST => store.action(&c),
            Route::Resource(rp) => {
                let body = match req.json() {
                    Ok(body) => body,
                    Err(answer) => return answer,
                };
                match *method {
                    Method::GET => store.get(&rp),
                    Method::HEAD if rp.is_group() => store.head_group(&rp),
                    Method::PUT => {
                        let outcome = self.outcome();
                        store.put(&rp, body, &api, &req.base, outcome)
                    }
                    Method::PATCH => store.patch(&rp, body),
                    Method::DELETE => {
                        let outcome = self.outcome();
                        store.delete(&rp, &api, &req.base, outcome)
                    }
                    _ => method_not_allowed(method),
                }
            }
            Route::Unknown => Answer::error(
                400,
                "InvalidRequestUri",
                &format!("The request uri '{}' is not valid.", req.path),
            ),
            _ => method_not_allowed(method),
        }
    }

    /// How the long-running operation a request may start will end.
    fn outcome(&self) -> Outcome {
        let outcome = self.dice.outcome(&self.faults);
        match outcome {
            Outcome::Failed => bump(&self.counters.failed_operations),
            Outcome::Canceled => bump(&self.counters.canceled_operations),
            Outcome::Succeeded => {}
        }
        outcome
    }

    /// The principal behind the bearer token, or ARM's 401.
    fn principal(&self, req: &Req) -> Result<String, Answer> {
        let challenge = "Bearer authorization_uri=\"https://login.microsoftonline.com/\", error=\"invalid_token\"";
        let Some(header) = req.header("authorization") else {
            return Err(Answer::error(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
            .with("www-authenticate", challenge));
        };
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .unwrap_or_default()
            .trim();
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match tokens.get(token) {
            Some(principal) => Ok(principal.clone()),
            None => Err(Answer::error(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            )
            .with("www-authenticate", challenge)),
        }
    }

    /// The OAuth2 client-credentials token endpoint (`POST /{tenant}/oauth2/v2.0/token`):
    /// a client secret or a client assertion (workload identity federation) buys a token.
    pub(crate) fn token(&self, req: &Req) -> Answer {
        bump(&self.counters.token_requests);
        if req.method != Method::POST {
            return method_not_allowed(&req.method);
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body)
            .into_owned()
            .collect();
        let field = |name: &str| form.get(name).filter(|v| !v.is_empty());
        let aad = |status: u16, error: &str, code: u32, description: &str| {
            Answer::json(
                status,
                &json!({
                    "error": error,
                    "error_description": format!("AADSTS{code}: {description}"),
                    "error_codes": [code],
                }),
            )
        };
        for name in ["grant_type", "client_id", "scope"] {
            if field(name).is_none() {
                return aad(
                    400,
                    "invalid_request",
                    900144,
                    &format!("The request body must contain the following parameter: '{name}'."),
                );
            }
        }
        if field("grant_type").map(String::as_str) != Some("client_credentials") {
            return aad(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            );
        }
        let assertion = field("client_assertion").is_some()
            && field("client_assertion_type").map(String::as_str)
                == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
        if field("client_secret").is_none() && !assertion {
            return aad(
                401,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
            );
        }
        let principal = field("client_id").cloned().unwrap_or_default();
        let tenant = req.path.split('/').nth(1).unwrap_or_default();
        let scope = field("scope").map(String::as_str).unwrap_or_default();
        let token = jwt_shaped(tenant, &principal, scope);
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), principal);
        Answer::json(
            200,
            &json!({
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            }),
        )
    }

    /// The scale of the stand-in's time.
    pub(crate) fn scale(&self) -> f64 {
        self.scale
    }

    /// The latency every answer waits.
    pub(crate) fn latency(&self) -> Duration {
        self.faults.latency
    }
}

fn method_not_allowed(method: &Method) -> Answer {
    Answer::error(
        405,
        "MethodNotAllowed",
        &format!("The requested resource does not support http method '{method}'."),
    )
}

/// The subscription of a path, or "".
fn subscription(path: &str) -> String {
    let segments = crate::path::segments(path);
    match segments.as_slice() {
        [first, sub, ..] if first.eq_ignore_ascii_case("subscriptions") => sub.to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// `YYYY-MM-DD` with an optional lower-case suffix.
fn well_formed(api: &str) -> bool {
    let b = api.as_bytes();
    b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
        && (b.len() == 10
            || (b.len() > 11 && b[10] == b'-' && b[11..].iter().all(u8::is_ascii_lowercase)))
}

/// ARM's answer to an api-version the route's namespace does not serve.
fn check_api_version(route: &Route, api: &str) -> Result<(), Answer> {
    let (namespace, type_) = match route {
        Route::Resource(rp) => (rp.namespace().to_owned(), rp.type_.clone()),
        Route::Collection(c) => (
            c.type_.split('/').next().unwrap_or_default().to_owned(),
            c.type_.clone(),
        ),
        Route::SubscriptionList {
            namespace, type_, ..
        } => (namespace.clone(), format!("{namespace}/{type_}")),
        Route::DeletedVaults { .. } | Route::DeletedVault { .. } => (
            "Microsoft.KeyVault".into(),
            "Microsoft.KeyVault/deletedVaults".into(),
        ),
        _ => (
            "Microsoft.Resources".into(),
            "Microsoft.Resources/subscriptions".into(),
        ),
    };
    let Some(versions) = profiles::api_versions(&namespace) else {
        return Err(Answer::error(
            400,
            "InvalidResourceNamespace",
            &format!("The resource namespace '{namespace}' is invalid."),
        ));
    };
    let supported = versions.join(", ");
    if !well_formed(api) {
        return Err(Answer::error(
            400,
            "InvalidApiVersionParameter",
            &format!(
                "The api-version '{api}' is invalid. The supported versions are '{supported}'."
            ),
        ));
    }
    if !versions.contains(&api) {
        return Err(Answer::error(
            400,
            "NoRegisteredProviderFound",
            &format!(
                "No registered resource provider found for location 'westeurope' and API version '{api}' for type '{type_}'. The supported api-versions are '{supported}'."
            ),
        ));
    }
    Ok(())
}

/// `GET /subscriptions/{s}/providers/{ns}`: the namespace, registered, with its types.
fn provider(sub: &str, namespace: &str) -> Answer {
    let Some(versions) = profiles::api_versions(namespace) else {
        return Answer::error(
            404,
            "InvalidResourceNamespace",
            &format!("The resource namespace '{namespace}' is invalid."),
        );
    };
    let types: Vec<serde_json::Value> = profiles::types_of(namespace)
        .map(|full| {
            let type_ = full.split_once('/').map(|(_, t)| t).unwrap_or(full);
            json!({"resourceType": type_, "apiVersions": versions})
        })
        .collect();
    Answer::json(
        200,
        &json!({
            "id": format!("/subscriptions/{sub}/providers/{namespace}"),
            "namespace": namespace,
            "registrationState": "Registered",
            "resourceTypes": types,
        }),
    )
}

/// A token shaped like Entra's (an unsigned JWT: header, claims, random signature) with the
/// claims services check without verifying a signature, as Azurite's `--oauth basic` does:
/// the audience the scope names, an `sts.windows.net` issuer for the tenant, and lifetimes.
/// ARM requests are checked against the tokens this stand-in issued, so no signature is
/// needed.
fn jwt_shaped(tenant: &str, client_id: &str, scope: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let audience = scope.split_whitespace().next().unwrap_or_default();
    let audience = audience.strip_suffix("/.default").unwrap_or(audience);
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": "kombiform-arm-standin"});
    let claims = json!({
        "aud": audience,
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "tid": tenant,
        "appid": client_id,
        "oid": client_id,
        "iat": now.saturating_sub(60),
        "nbf": now.saturating_sub(60),
        "exp": now + 3599,
        "jti": kombiform_sys::random_id128(),
    });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(kombiform_sys::random_bytes::<32>()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_are_checked_per_namespace() {
        let rg = route("/subscriptions/s/resourceGroups/rg");
        assert!(check_api_version(&rg, "2025-04-01").is_ok());
        let err = check_api_version(&rg, "2099-01-01").unwrap_err();
        assert_eq!(err.status, 400);
        assert!(String::from_utf8_lossy(&err.body).contains("NoRegisteredProviderFound"));
        let err = check_api_version(&rg, "latest").unwrap_err();
        assert!(String::from_utf8_lossy(&err.body).contains("InvalidApiVersionParameter"));
        let unknown = route("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Nope/things/x");
        let err = check_api_version(&unknown, "2025-04-01").unwrap_err();
        assert!(String::from_utf8_lossy(&err.body).contains("InvalidResourceNamespace"));
        assert!(well_formed("2022-06-01-preview"));
        assert!(!well_formed("2022-06-01-"));
    }
}
