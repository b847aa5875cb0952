//! The request pipeline: what happens to every request, in order.
//!
//! ```text
//! request id -> target checks -> /svc/{service}/{path}?  -> route -> forward -> response
//!                              otherwise                 -> ops endpoints / JSON API
//! ```
//!
//! Service calls are checked before routing (F1), routed with the compiled table, and forwarded
//! with header hygiene (F2), streaming bodies (F3) and per-service timeouts (F4).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::app::App;
use crate::authz::Resource;
use crate::body::{self, Body, Capped, Counted};
use crate::ids::RequestId;
use crate::metrics::{RequestLabels, ServiceLabels, UpstreamErrorLabels};
use crate::server::authn::{self, Allow, Caller};
use crate::server::authorize::{self, Facts};
use crate::server::path;
use crate::server::rejection::{self, Rejection};
use crate::store::Health;
use crate::upstream::{UpstreamError, headers};

/// Handles one request; never fails: every error becomes a response.
pub async fn handle(app: Arc<App>, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let request_id = request
        .headers()
        .get(&headers::X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| RequestId::parse(v).ok())
        .unwrap_or_else(RequestId::generate);
    let mut response = match dispatch(&app, request, peer, &request_id).await {
        Ok(response) => response,
        Err(rejection) => rejection.into_response(&request_id),
    };
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        response.headers_mut().insert(headers::X_REQUEST_ID, value);
    }
    response
}

async fn dispatch(
    app: &Arc<App>,
    request: Request<Incoming>,
    peer: SocketAddr,
    request_id: &RequestId,
) -> Result<Response<Body>, Rejection> {
    let uri = request.uri();
    if uri.scheme().is_some() || uri.authority().is_some() || request.method() == Method::CONNECT {
        return Err(Rejection::bad_request(
            "InvalidTarget",
            "absolute-form and CONNECT request targets are not accepted; send `METHOD /path`",
        ));
    }
    let path = uri.path();
    if let Some(rest) = path.strip_prefix("/svc/") {
        path::check(path)?;
        let (service, service_path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let (service, service_path) = (service.to_owned(), service_path.to_owned());
        return service_call(app, request, peer, request_id, &service, &service_path).await;
    }
    match (request.method(), path) {
        (&Method::GET, "/healthz") => Ok(json(StatusCode::OK, r#"{"status":"ok"}"#.to_owned())),
        (&Method::GET, "/readyz") => Ok(readiness(app).await),
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(body::full(app.metrics.render()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(response)
        }
        _ => crate::api::handle(app, request, peer, request_id).await,
    }
}

/// What the metrics learn about a service call as it goes.
#[derive(Default)]
struct Outcome {
    /// Service and action, once a route matched (never raw client input).
    route: Option<(String, String)>,
    decision: &'static str,
}

async fn service_call(
    app: &Arc<App>,
    request: Request<Incoming>,
    peer: SocketAddr,
    request_id: &RequestId,
    service: &str,
    service_path: &str,
) -> Result<Response<Body>, Rejection> {
    let started = Instant::now();
    let mut outcome = Outcome {
        route: None,
        decision: "none",
    };
    let result = forward(
        app,
        request,
        peer,
        request_id,
        service,
        service_path,
        &mut outcome,
    )
    .await;
    let status = match &result {
        Ok(response) => response.status(),
        Err(rejection) => rejection.status,
    };
    let (service, action) = outcome.route.unwrap_or_default();
    app.metrics
        .request_duration
        .get_or_create(&ServiceLabels {
            service: service.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            service,
            action,
            decision: outcome.decision.to_owned(),
            status: status.as_u16(),
        })
        .inc();
    result
}

/// Route, authenticate, authorize, forward (SPEC F1-F4, P1).
async fn forward(
    app: &Arc<App>,
    request: Request<Incoming>,
    peer: SocketAddr,
    request_id: &RequestId,
    service: &str,
    service_path: &str,
    outcome: &mut Outcome,
) -> Result<Response<Body>, Rejection> {
    let matched = app.routes.route(service, request.method(), service_path)?;
    let route = &matched.route;
    outcome.route = Some((matched.service.name.clone(), route.action.clone()));
    let caller = authn::authenticate(app, request.headers(), peer, Allow::default()).await?;
    outcome.decision = "deny";
    authorize::authorize(
        app,
        &caller,
        Facts {
            action: &route.action,
            resource: Resource::Service {
                name: service.to_owned(),
            },
            method: request.method().as_str(),
            path: service_path,
        },
    )?;
    outcome.decision = "allow";
    crate::api::services::require_signed_up(app, &caller, &matched.service).await?;

    if let (Some(limit), Some(length)) = (route.max_body, content_length(&request)?)
        && length > limit
    {
        return Err(rejection::payload_too_large(limit));
    }

    let (mut parts, incoming) = request.into_parts();
    let upstream_uri = {
        let base = &matched.service.config.upstream;
        let query = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        format!(
            "{}://{}{service_path}{query}",
            base.scheme_str().unwrap_or("http"),
            base.authority().map(|a| a.as_str()).unwrap_or_default()
        )
    };
    parts.uri = upstream_uri
        .parse()
        .map_err(|e| Rejection::internal(&format_args!("bad upstream uri: {e}")))?;
    parts.version = http::Version::HTTP_11;
    let trusted = app.is_trusted_proxy(peer.ip());
    headers::to_upstream(&mut parts.headers, peer.ip(), trusted);
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        parts.headers.insert(headers::X_REQUEST_ID, value);
    }
    identity_headers(app, &caller, request_id, service, &mut parts.headers)?;
    let (capped, request_bytes) = Capped::new(incoming, route.max_body);
    let upstream_request = Request::from_parts(parts, capped.boxed_unsync());

    let timeout = matched.service.config.timeout;
    let response = match app.upstreams.send(service, upstream_request, timeout).await {
        Ok(response) => response,
        // A cap hit while streaming surfaces as a failed upstream call: it is the client's.
        Err(_) if request_bytes.exceeded() => {
            return Err(rejection::payload_too_large(
                route.max_body.unwrap_or_default(),
            ));
        }
        Err(e) => {
            let kind = match e {
                UpstreamError::Unavailable { .. } => "unavailable",
                UpstreamError::Timeout { .. } => "timeout",
                UpstreamError::BodyTooLarge { .. } => "body_too_large",
            };
            app.metrics
                .upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    service: service.to_owned(),
                    kind: kind.to_owned(),
                })
                .inc();
            return Err(Rejection::from(e));
        }
    };

    let (mut parts, incoming) = response.into_parts();
    headers::to_client(&mut parts.headers);
    let counted = Counted::new(incoming, Box::new(|_bytes, _end| {}));
    Ok(Response::from_parts(parts, counted.boxed_unsync()))
}

/// Tells the upstream who is calling (F2): account and user, and a short-lived identity token it
/// can verify against the gateway's JWKS.
fn identity_headers(
    app: &App,
    caller: &Caller,
    request_id: &RequestId,
    service: &str,
    headers: &mut http::HeaderMap,
) -> Result<(), Rejection> {
    let identity = app.tokens.issue_identity(
        &caller.claims,
        request_id,
        service,
        crate::config::chrono_duration(app.config.auth.identity_ttl),
        app.clock.now(),
    )?;
    let value = |s: &str| HeaderValue::from_str(s).map_err(|e| Rejection::internal(&e));
    headers.insert(
        headers::X_TOLLGATE_ACCOUNT,
        value(caller.claims.account.as_str())?,
    );
    headers.insert(
        headers::X_TOLLGATE_USER,
        value(caller.claims.user.as_str())?,
    );
    headers.insert(
        headers::X_TOLLGATE_IDENTITY,
        value(identity.token.expose())?,
    );
    Ok(())
}

/// The declared body length, if any; a malformed one is the client's error.
fn content_length(request: &Request<Incoming>) -> Result<Option<u64>, Rejection> {
    match request.headers().get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                Rejection::bad_request("InvalidHeader", "Content-Length is not a number")
            }),
    }
}

async fn readiness(app: &App) -> Response<Body> {
    let store = app.store.check_writable().await;
    let ready = store.is_ok();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "unready" },
        "checks": {
            "store": match &store { Ok(()) => "ok".to_owned(), Err(e) => e.to_string() },
        }
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, body.to_string())
}

pub fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
