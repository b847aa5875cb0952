//! The JSON API: account signup, login and tokens, users and credentials, groups, service
//! sign-ups and plans, bills, policies, decisions. Each area
//! has its own file with its handlers and the DTOs it reads and writes (the only serde types
//! besides the raw config). Handlers authenticate and authorize through `server::authn` and
//! `server::authorize`, call domain modules, and map errors through `server::rejection`.

pub mod accounts;
pub mod auth;
pub mod billing;
pub mod decisions;
pub mod groups;
pub mod org;
pub mod policies;
pub mod services;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::authz::{Resource, TargetAccount};
use crate::body::{self, Body};
use crate::ids::AccountId;
use crate::ids::RequestId;
use crate::org::HandshakeAction;
use crate::server::authn::Caller;
use crate::server::authorize::{self, Facts};
use crate::server::rejection::{self, Rejection};

/// One API request, its body not yet read.
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: http::HeaderMap,
    pub peer: SocketAddr,
    pub request_id: RequestId,
    body: Incoming,
}

/// Every (method, path template) the dispatcher below answers, one entry per match arm and in
/// the same order, so a reviewer sees both together. `docs/openapi.json` documents each one, and
/// `tests/it/openapi.rs` checks the three agree (and that each entry is really routed).
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/auth/login"),
    ("POST", "/auth/token"),
    ("POST", "/auth/logout"),
    ("POST", "/accounts"),
    ("GET", "/accounts/{account_id}/password-policy"),
    ("PUT", "/accounts/{account_id}/password-policy"),
    ("POST", "/accounts/{account_id}/users"),
    ("PUT", "/accounts/{account_id}/users/{user}/password"),
    ("POST", "/accounts/{account_id}/users/{user}/mfa"),
    ("POST", "/accounts/{account_id}/users/{user}/mfa/verify"),
    ("POST", "/accounts/{account_id}/users/{user}/access-keys"),
    ("GET", "/accounts/{account_id}/users/{user}/access-keys"),
    (
        "DELETE",
        "/accounts/{account_id}/users/{user}/access-keys/{key_id}",
    ),
    ("POST", "/org"),
    ("GET", "/org"),
    ("DELETE", "/org"),
    ("POST", "/org/accounts"),
    ("DELETE", "/org/accounts/{account_id}"),
    ("POST", "/org/invitations"),
    ("POST", "/org/enable-all-features"),
    ("POST", "/org/leave"),
    ("GET", "/handshakes"),
    ("POST", "/handshakes/{handshake_id}/accept"),
    ("POST", "/handshakes/{handshake_id}/decline"),
    ("POST", "/handshakes/{handshake_id}/cancel"),
    ("POST", "/accounts/{account_id}/groups"),
    ("GET", "/accounts/{account_id}/groups"),
    ("DELETE", "/accounts/{account_id}/groups/{group}"),
    (
        "PUT",
        "/accounts/{account_id}/groups/{group}/members/{user}",
    ),
    (
        "DELETE",
        "/accounts/{account_id}/groups/{group}/members/{user}",
    ),
    ("GET", "/accounts/{account_id}/services"),
    ("POST", "/accounts/{account_id}/services/{service}/signup"),
    ("DELETE", "/accounts/{account_id}/services/{service}/signup"),
    ("PUT", "/accounts/{account_id}/services/{service}/plan"),
    ("DELETE", "/accounts/{account_id}/services/{service}/plan"),
    ("GET", "/billing/bills/{month}"),
    ("POST", "/billing/bills/{month}/finalize"),
    ("GET", "/policies"),
    ("GET", "/decisions"),
    ("POST", "/policies/reload"),
];

/// Routes an API request to its handler. A new arm needs its entry in [`ENDPOINTS`] and its
/// operation in `docs/openapi.json`.
pub async fn handle(
    app: &Arc<App>,
    request: Request<Incoming>,
    peer: SocketAddr,
    request_id: &RequestId,
) -> Result<Response<Body>, Rejection> {
    let (parts, body) = request.into_parts();
    let req = ApiRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        peer,
        request_id: request_id.clone(),
        body,
    };
    let path = req.path.clone();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method.clone(), segments.as_slice()) {
        (Method::GET, [".well-known", "jwks.json"]) => auth::jwks(app),
        (Method::POST, ["auth", "login"]) => auth::login(app, req).await,
        (Method::POST, ["auth", "token"]) => auth::token(app, req).await,
        (Method::POST, ["auth", "logout"]) => auth::logout(app, req).await,
        (Method::POST, ["accounts"]) => accounts::signup(app, req).await,
        (Method::GET, ["accounts", account, "password-policy"]) => {
            accounts::get_password_policy(app, req, account).await
        }
        (Method::PUT, ["accounts", account, "password-policy"]) => {
            accounts::put_password_policy(app, req, account).await
        }
        (Method::POST, ["accounts", account, "users"]) => {
            accounts::create_user(app, req, account).await
        }
        (Method::PUT, ["accounts", account, "users", user, "password"]) => {
            accounts::change_password(app, req, account, user).await
        }
        (Method::POST, ["accounts", account, "users", user, "mfa"]) => {
            accounts::enroll_mfa(app, req, account, user).await
        }
        (Method::POST, ["accounts", account, "users", user, "mfa", "verify"]) => {
            accounts::verify_mfa(app, req, account, user).await
        }
        (Method::POST, ["accounts", account, "users", user, "access-keys"]) => {
            accounts::create_access_key(app, req, account, user).await
        }
        (Method::GET, ["accounts", account, "users", user, "access-keys"]) => {
            accounts::list_access_keys(app, req, account, user).await
        }
        (Method::DELETE, ["accounts", account, "users", user, "access-keys", key]) => {
            accounts::delete_access_key(app, req, account, user, key).await
        }
        (Method::POST, ["org"]) => org::create(app, req).await,
        (Method::GET, ["org"]) => org::describe(app, req).await,
        (Method::DELETE, ["org"]) => org::delete(app, req).await,
        (Method::POST, ["org", "accounts"]) => org::create_account(app, req).await,
        (Method::DELETE, ["org", "accounts", account]) => {
            org::remove_account(app, req, account).await
        }
        (Method::POST, ["org", "invitations"]) => org::invite(app, req).await,
        (Method::POST, ["org", "enable-all-features"]) => org::enable_all_features(app, req).await,
        (Method::POST, ["org", "leave"]) => org::leave(app, req).await,
        (Method::GET, ["handshakes"]) => org::handshakes(app, req).await,
        (Method::POST, ["handshakes", id, "accept"]) => {
            org::handshake_action(app, req, id, HandshakeAction::Accept).await
        }
        (Method::POST, ["handshakes", id, "decline"]) => {
            org::handshake_action(app, req, id, HandshakeAction::Decline).await
        }
        (Method::POST, ["handshakes", id, "cancel"]) => {
            org::handshake_action(app, req, id, HandshakeAction::Cancel).await
        }
        (Method::POST, ["accounts", account, "groups"]) => groups::create(app, req, account).await,
        (Method::GET, ["accounts", account, "groups"]) => groups::list(app, req, account).await,
        (Method::DELETE, ["accounts", account, "groups", group]) => {
            groups::delete(app, req, account, group).await
        }
        (Method::PUT, ["accounts", account, "groups", group, "members", user]) => {
            groups::add_member(app, req, account, group, user).await
        }
        (Method::DELETE, ["accounts", account, "groups", group, "members", user]) => {
            groups::remove_member(app, req, account, group, user).await
        }
        (Method::GET, ["accounts", account, "services"]) => services::list(app, req, account).await,
        (Method::POST, ["accounts", account, "services", service, "signup"]) => {
            services::sign_up(app, req, account, service).await
        }
        (Method::DELETE, ["accounts", account, "services", service, "signup"]) => {
            services::sign_off(app, req, account, service).await
        }
        (Method::PUT, ["accounts", account, "services", service, "plan"]) => {
            services::put_plan(app, req, account, service).await
        }
        (Method::DELETE, ["accounts", account, "services", service, "plan"]) => {
            services::delete_plan(app, req, account, service).await
        }
        (Method::GET, ["billing", "bills", month]) => billing::get(app, req, month).await,
        (Method::POST, ["billing", "bills", month, "finalize"]) => {
            billing::finalize(app, req, month).await
        }
        (Method::GET, ["policies"]) => policies::describe(app, req).await,
        (Method::GET, ["decisions"]) => decisions::list(app, req).await,
        (Method::POST, ["policies", "reload"]) => policies::reload(app, req).await,
        _ => match allowed_methods(&req.path).as_slice() {
            [] => Err(Rejection::not_found(
                "NotFound",
                format!(
                    "no endpoint {} `{}`; see docs/api.md",
                    req.method,
                    truncate(&req.path)
                ),
            )),
            allowed => Err(Rejection::method_not_allowed(
                &req.method,
                &req.path,
                allowed,
            )),
        },
    }
}

/// The methods a known path of the JSON API or the ops endpoints answers, in the order
/// [`ENDPOINTS`] lists them; empty for an unknown path. A placeholder matches any one segment,
/// as the dispatcher's arms do. Service calls (`/svc/...`) never get here: their unknown routes
/// are F1's 404 `NoSuchRoute`.
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let matches = |template: &str| {
        let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(t, s)| t.starts_with('{') || t == s)
    };
    let ops = crate::server::pipeline::ENDPOINTS
        .iter()
        .filter(|(method, _)| *method != "*");
    let mut allowed: Vec<&'static str> = Vec::new();
    for (method, template) in ENDPOINTS.iter().chain(ops) {
        if matches(template) && !allowed.contains(method) {
            allowed.push(method);
        }
    }
    allowed
}

/// The path's account, which must be the caller's own: nobody manages another account (U9),
/// so no policy is even asked.
pub(crate) fn own_account(caller: &Caller, account: &str) -> Result<AccountId, Rejection> {
    let own = &caller.principal.user.account_id;
    match AccountId::parse(account) {
        Ok(id) if &id == own => Ok(id),
        _ => Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            format!("users of account {own} can manage only account {own}"),
        )),
    }
}

/// The common opening of an account-level call: authenticate, check that the path's account is
/// the caller's own, and decide `action` on it.
pub(crate) async fn caller_on_own_account(
    app: &App,
    req: &ApiRequest,
    account: &str,
    action: &str,
) -> Result<(Caller, AccountId), Rejection> {
    let caller = crate::server::authn::authenticate(
        app,
        &req.headers,
        req.peer,
        crate::server::authn::Allow::default(),
    )
    .await?;
    let account = own_account(&caller, account)?;
    authorize_on_own_account(app, &caller, action, req)?;
    Ok((caller, account))
}

/// Decides `action` with the caller's own account as the resource (every account-level call).
pub(crate) fn authorize_on_own_account(
    app: &App,
    caller: &Caller,
    action: &str,
    req: &ApiRequest,
) -> Result<(), Rejection> {
    let resource = Resource::Account(TargetAccount {
        id: caller.principal.user.account_id.clone(),
        name: caller.principal.account_name.clone(),
        organization: caller.principal.organization.as_ref().map(|o| o.id.clone()),
    });
    authorize::authorize(
        app,
        caller,
        Facts {
            action,
            resource,
            method: req.method.as_str(),
            path: &req.path,
        },
    )
    .map(|_| ())
}

/// Integers in request bodies as JSON Schema's `integer` has them: `12` and `12.0` alike (a
/// number whose fraction is zero is an integer there). Out-of-range values saturate, so that
/// the range check after parsing names the field; a fraction or a non-number is refused.
pub(crate) mod integral {
    use serde::{Deserialize, Deserializer, de::Error as _};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        from_number(&serde_json::Number::deserialize(d)?).map_err(D::Error::custom)
    }

    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(|n| from_number(&n).map_err(D::Error::custom))
            .transpose()
    }

    /// The `as` casts are exact: a float with no fraction, clamped to i64's range first.
    fn from_number(n: &serde_json::Number) -> Result<i64, String> {
        if let Some(i) = n.as_i64() {
            return Ok(i);
        }
        if n.as_u64().is_some() {
            return Ok(i64::MAX);
        }
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 => Ok(f.clamp(i64::MIN as f64, i64::MAX as f64) as i64),
            _ => Err(format!("expected an integer, got `{n}`")),
        }
    }
}

// === impl ApiRequest ===

impl ApiRequest {
    /// Reads the body as JSON of type `T`, within the configured size cap.
    pub async fn json<T: DeserializeOwned>(self, app: &App) -> Result<T, Rejection> {
        let limit = app.config.server.max_api_body;
        let bytes = read_capped(self.body, limit, app).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Rejection::bad_request(
                "InvalidInput",
                format!("the request body is not the expected JSON: {e}"),
            )
        })
    }

    /// Reads an optional JSON body of type `T`: an empty body is `T::default()`.
    pub async fn json_or_default<T: DeserializeOwned + Default>(
        self,
        app: &App,
    ) -> Result<T, Rejection> {
        let bytes = read_capped(self.body, app.config.server.max_api_body, app).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            Rejection::bad_request(
                "InvalidInput",
                format!("the request body is not the expected JSON: {e}"),
            )
        })
    }

    /// The client's address as policies see it (`authn::client_ip`).
    pub fn client_ip(&self, app: &App) -> std::net::IpAddr {
        crate::server::authn::client_ip(app, &self.headers, self.peer)
    }

    /// Reads and discards a body that must be empty or JSON we do not need.
    pub async fn discard_body(self, app: &App) -> Result<(), Rejection> {
        read_capped(self.body, app.config.server.max_api_body, app)
            .await
            .map(|_| ())
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref().and_then(|q| {
            q.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name).then(|| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned()
                })
            })
        })
    }
}

async fn read_capped(body: Incoming, limit: u64, app: &App) -> Result<Bytes, Rejection> {
    let timeout = app.config.server.body_read_timeout;
    let body = crate::body::ReadTimeout::new(body, timeout);
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(rejection::payload_too_large(limit))
        }
        Err(e) if e.downcast_ref::<crate::body::BodyReadTimeout>().is_some() => {
            Err(rejection::body_read_timeout(timeout))
        }
        Err(_) => Err(Rejection::bad_request(
            "InvalidInput",
            "the request body could not be read",
        )),
    }
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Result<Response<Body>, Rejection> {
    let bytes = serde_json::to_vec(value).map_err(|e| Rejection::internal(&e))?;
    let mut response = Response::new(body::full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

pub fn no_content() -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}
