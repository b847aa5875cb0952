//! The request pipeline: what happens to every request, in order.
//!
//! ```text
//! request id -> target and head checks -> /svc/{service}/{path}?  -> route -> forward -> response
//!                              otherwise                 -> ops endpoints / JSON API
//! ```
//!
//! Service calls get one canonical path before routing (F1: routing, Cedar and the upstream see
//! the same string), are routed with the compiled table, and forwarded with header hygiene
//! (F2), streaming bodies (F3) and per-service timeouts (F4). The request id is the client's
//! only when a trusted proxy sent it (F2).
//!
//! Metering (M1, M2, issue 17): once a request is on its way upstream, the upstream call and the
//! call's ledger record run on a task of their own ([`Exchange`]), so a client that hangs up
//! cancels only its wait for the answer, never the call or its charge. The ledger record
//! depends on the request's decision record (`server::scope`): if the decision was not
//! committed, neither is the charge, and the answer is 503.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::app::App;
use crate::authz::Resource;
use crate::body::{self, Body, BodyEnd, Capped, Counted};
use crate::ids::RequestId;
use crate::journal::{
    Charge, Dependency, Journal, JournalError, LedgerEntry, MeteredCall, RecordId, TransferEntry,
};
use crate::metrics::{RequestLabels, ServiceLabels, UpstreamErrorLabels};
use crate::server::authn::{self, Allow, Caller};
use crate::server::authorize::{self, Facts};
use crate::server::message;
use crate::server::path::{self, PathError};
use crate::server::rejection::{self, Rejection};
use crate::server::route::{Matched, Route};
use crate::server::scope;
use crate::store::Health;
use crate::upstream::{UpstreamError, headers};

/// Handles one request; never fails: every error becomes a response.
pub async fn handle(app: Arc<App>, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let (request_id, client_request_id) = request_ids(&app, request.headers(), peer);
    // Every journal entry of the request (its decisions, its ledger record) is durable before
    // the response head leaves; if one is not, the response is replaced by a 503.
    let (result, durable) = scope::run(
        request_id.clone(),
        client_request_id,
        dispatch(&app, request, peer, &request_id),
    )
    .await;
    let result = match durable {
        Ok(()) => result,
        Err(e) => Err(Rejection::from(e)),
    };
    let mut response = match result {
        Ok(response) => response,
        Err(rejection) => rejection.into_response(&request_id),
    };
    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        response.headers_mut().insert(headers::X_REQUEST_ID, value);
    }
    response
}

/// The request's id, and the id the client sent if it is not believed (F2): a well-formed
/// `X-Request-Id` is the request's id only when a trusted proxy sent it. Anyone else's is kept
/// aside (recorded as `client_request_id`) and a fresh id is generated; a malformed one is
/// dropped.
fn request_ids(
    app: &App,
    headers: &http::HeaderMap,
    peer: SocketAddr,
) -> (RequestId, Option<RequestId>) {
    let sent = headers
        .get(&headers::X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| RequestId::parse(v).ok());
    match sent {
        Some(id) if app.is_trusted_proxy(peer.ip()) => (id, None),
        sent => (RequestId::generate(), sent),
    }
}

/// The endpoints answered here rather than by the JSON API's dispatcher (`api::ENDPOINTS`):
/// the ops endpoints in `dispatch`, and service calls, forwarded whatever their method (`*`).
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/openapi.json"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("*", "/svc/{service}/{path}"),
];

/// The API reference, built into the binary so it always describes this build.
const OPENAPI: &str = include_str!("../../docs/openapi.json");

async fn dispatch(
    app: &Arc<App>,
    request: Request<Incoming>,
    peer: SocketAddr,
    request_id: &RequestId,
) -> Result<Response<Body>, Rejection> {
    let uri = request.uri();
    // HTTP/2 always carries `:scheme` and `:authority`, which hyper puts in the URI: that is the
    // protocol, not an absolute-form target. Only the path is routed either way.
    let absolute_form = request.version() != http::Version::HTTP_2
        && (uri.scheme().is_some() || uri.authority().is_some());
    if absolute_form || request.method() == Method::CONNECT {
        return Err(Rejection::bad_request(
            "InvalidTarget",
            "absolute-form and CONNECT request targets are not accepted; send `METHOD /path`",
        ));
    }
    let path = uri.path();
    message::check(
        request.method(),
        request.version(),
        path,
        request.headers(),
        app.config.server.max_header_bytes,
    )?;
    if path.starts_with("/svc/") {
        // One canonical path from here on: routing, Cedar and the upstream all get it (F1).
        let canonical = path::canonicalize(path)?;
        let rest = canonical.get("/svc/".len()..).unwrap_or_default();
        let (service, service_path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let (service, service_path) = (service.to_owned(), service_path.to_owned());
        return service_call(app, request, peer, request_id, &service, &service_path).await;
    }
    match (request.method(), path) {
        (&Method::GET, "/openapi.json") => Ok(openapi()),
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
    // `service_path` is canonical (F1): it is what the upstream gets. Routing and Cedar get it
    // too, case-folded where the service asks for that.
    let decided_path = match app.routes.service(service) {
        Some(svc) => {
            if !svc.config.allow_path_params && path::has_params(service_path) {
                return Err(PathError::PathParameter {
                    service: service.to_owned(),
                }
                .into());
            }
            if svc.config.case_insensitive_paths {
                path::fold_case(service_path)
            } else {
                Cow::Borrowed(service_path)
            }
        }
        None => Cow::Borrowed(service_path),
    };
    let matched = app.routes.route(service, request.method(), &decided_path)?;
    let route = &matched.route;
    let method = request.method().to_string();
    outcome.route = Some((matched.service.name.clone(), route.action.clone()));
    let caller = authn::authenticate(
        app,
        request.headers(),
        peer,
        Allow {
            management_without_mfa: true,
            ..Allow::default()
        },
    )
    .await?;
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
            path: &decided_path,
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
    let incoming = body::ReadTimeout::new(incoming, app.config.server.body_read_timeout);
    let (capped, request_bytes) = Capped::new(incoming, route.max_body);
    let upstream_request = Request::from_parts(parts, capped.boxed_unsync());

    // The ledger record will commit only if the request's decision records did (issue 17 item
    // 1). One that already failed means the answer is 503 whatever the upstream says: do not
    // make the upstream do work nobody can be charged for.
    let after = scope::dependencies();
    if after.iter().any(Dependency::failed) {
        return Err(Rejection::from(JournalError::Unavailable(
            "the decision record of this call could not be committed; retry the call".into(),
        )));
    }
    let exchange = Exchange {
        app: app.clone(),
        service: service.to_owned(),
        request: upstream_request,
        timeout: matched.service.config.timeout,
        request_bytes,
        max_body: route.max_body,
        meter: Meter::new(app, &caller, request_id, &matched, method),
        after,
    };
    // Issue 17 item 7: from here the call and its metering are not owned by this connection's
    // future; a client that goes away drops only this wait.
    let Answered {
        mut parts,
        body,
        meter,
        record_id,
    } = app.upstreams.detach(exchange.run()).await.map_err(|e| {
        Rejection::internal(&format_args!("the upstream call's task failed: {e}"))
    })??;
    headers::to_client(&mut parts.headers);
    let journal = app.journal.clone();
    let on_end = Box::new(move |bytes_out: u64, end: BodyEnd| {
        meter.record_transfer(&journal, &record_id, bytes_out, end)
    });
    let counted = Counted::new(body, on_end);
    Ok(Response::from_parts(parts, counted.boxed_unsync()))
}

/// One upstream call and its ledger record, run on a task of its own (SPEC M1, M2; issue 17
/// item 7): whatever the client does once the request left, the call completes and, if the
/// upstream answered, is charged with the status it answered.
struct Exchange {
    app: Arc<App>,
    service: String,
    request: Request<Body>,
    timeout: std::time::Duration,
    request_bytes: Arc<body::CapStats>,
    max_body: Option<u64>,
    meter: Meter,
    /// The request's decision records: the ledger record commits only if they did.
    after: Vec<Dependency>,
}

/// An answered, metered call: the response head and body to hand to the client.
struct Answered {
    parts: http::response::Parts,
    body: Incoming,
    meter: Meter,
    record_id: RecordId,
}

impl Exchange {
    async fn run(self) -> Result<Answered, Rejection> {
        let Exchange {
            app,
            service,
            request,
            timeout,
            request_bytes,
            max_body,
            mut meter,
            after,
        } = self;
        let response = match app.upstreams.send(&service, request, timeout).await {
            Ok(response) => response,
            // A cap hit while streaming surfaces as a failed upstream call: it is the client's.
            Err(_) if request_bytes.exceeded() => {
                return Err(rejection::payload_too_large(max_body.unwrap_or_default()));
            }
            // A malformed or cut-off request body is the client's fault too, not the upstream's.
            Err(_) if request_bytes.failed() => {
                return Err(Rejection::bad_request(
                    "InvalidBody",
                    "the request body could not be read (malformed chunked encoding or a cut connection); send it again",
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
                        service: service.clone(),
                        kind: kind.to_owned(),
                    })
                    .inc();
                return Err(Rejection::from(e));
            }
        };
        let (parts, body) = response.into_parts();
        meter.call.status = parts.status.as_u16();
        let record_id = meter
            .record_call(&app, request_bytes.bytes(), after)
            .await?;
        Ok(Answered {
            parts,
            body,
            meter,
            record_id,
        })
    }
}

/// What the ledger needs to know about one forwarded call (SPEC M1).
struct Meter {
    /// `status` is set when the upstream answers.
    call: MeteredCall,
    price: Arc<Route>,
    clock: crate::clock::SharedClock,
}

impl Meter {
    fn new(
        app: &App,
        caller: &Caller,
        request_id: &RequestId,
        matched: &Matched,
        method: String,
    ) -> Self {
        let account = caller.principal.user.account_id.clone();
        // The payer is the management account of the organization the account is in right now;
        // usage counts toward that organization's volume tiers (the management account's too).
        let (payer, org_id) = match &caller.principal.organization {
            Some(org) => (org.management_account.clone(), Some(org.id.clone())),
            None => (account.clone(), None),
        };
        Self {
            call: MeteredCall {
                request_id: request_id.clone(),
                account_id: account,
                payer_account_id: payer,
                org_id,
                user_name: caller.principal.user.name.clone(),
                service: matched.service.name.clone(),
                action: matched.route.action.clone(),
                method,
                status: 0,
                client_request_id: scope::client_request_id(),
            },
            price: matched.route.clone(),
            clock: app.clock.clone(),
        }
    }

    /// The per-request record, durable before the response head is sent (M2), committed only
    /// if every entry of `after` (the request's decision records) committed. Its event time is
    /// when the upstream answered; request bytes are counted as they were sent to the upstream.
    async fn record_call(
        &self,
        app: &App,
        bytes_in: u64,
        after: Vec<Dependency>,
    ) -> Result<RecordId, Rejection> {
        let charge = Charge::at_price(&self.price.price, 1, bytes_in, 0)
            .map_err(|e| Rejection::internal(&e))?
            .under(self.price.price_version);
        let record_id = RecordId::generate();
        let entry = LedgerEntry {
            record_id: record_id.clone(),
            event_time: self.clock.now(),
            call: self.call.clone(),
            bytes_in,
            bytes_out: 0,
            charge,
        };
        app.journal.append_after(entry, after).await?;
        Ok(record_id)
    }

    /// Response bytes actually handed to the client, booked when the body ends (completely,
    /// failed, or cut off by the client). Nobody waits for it; the journal retries it after a
    /// failed batch until it is durable, so only a crash loses this supplement, never the
    /// per-request charge (docs/billing.md).
    fn record_transfer(
        &self,
        journal: &Journal,
        call_record_id: &RecordId,
        bytes_out: u64,
        end: BodyEnd,
    ) {
        if bytes_out == 0 {
            return;
        }
        let charge = match Charge::at_price(&self.price.price, 0, 0, bytes_out) {
            Ok(charge) => charge.under(self.price.price_version),
            Err(e) => {
                tracing::error!(error = %e, "cannot price a transfer");
                return;
            }
        };
        let entry = TransferEntry {
            record_id: RecordId::generate(),
            call_record_id: call_record_id.clone(),
            event_time: self.clock.now(),
            call: self.call.clone(),
            bytes_in: 0,
            bytes_out,
            charge,
        };
        if let Err(e) = journal.enqueue(entry) {
            tracing::error!(error = %e, ?end, bytes_out, "transfer bytes could not be metered");
        }
    }
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

/// `GET /openapi.json`: public, like the JWKS; it describes the API, not anyone's data.
fn openapi() -> Response<Body> {
    let mut response = Response::new(body::full(OPENAPI));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Ready when the policies are loaded, the store answers with nothing keeping writers out, and
/// the journal commits. A probe only reads (SPEC O2): no durable write, and the caller cache
/// stays warm.
async fn readiness(app: &App) -> Response<Body> {
    let store = app.store.check_ready().await;
    let journal_ok = app.journal.is_healthy();
    let ready = store.is_ok() && journal_ok;
    let mut body = serde_json::json!({
        "status": if ready { "ready" } else { "unready" },
        "checks": {
            "policies": format!("ok: version {}", app.policies.load().version()),
            "store": match &store { Ok(()) => "ok".to_owned(), Err(e) => e.to_string() },
            "journal": if journal_ok {
                "ok".to_owned()
            } else {
                app.journal.last_error().unwrap_or_else(|| "unavailable".to_owned())
            },
        }
    });
    // A rejected certificate reload leaves the old pair served: a detail, never unready (O4).
    if let (Some(tls), Some(checks)) = (&app.tls, body.get_mut("checks")) {
        checks["tls"] = serde_json::Value::String(tls.status());
    }
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
