//! The demo's upstream services, small but real: `storage` keeps objects, `support` keeps
//! cases, `compute` runs jobs (a SHA-256 of the input). Each keeps its data per calling account,
//! as told by the gateway's `X-Tollgate-Account` header, in memory.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

/// Which demo service a listener plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Storage,
    Support,
    Compute,
}

#[derive(Default)]
struct State {
    /// (account, key) -> object
    objects: BTreeMap<(String, String), Bytes>,
    /// account -> cases
    cases: BTreeMap<String, Vec<serde_json::Value>>,
    /// job id -> job
    jobs: BTreeMap<String, serde_json::Value>,
    next_id: u64,
}

const MAX_BODY: usize = 16 << 20;

/// Serves `kind` on `listener` until the process ends.
pub fn spawn(kind: Kind, listener: TcpListener) {
    let state = Arc::new(Mutex::new(State::default()));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(kind, state.clone(), req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// Binds `addr` for a demo service.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn handle(
    kind: Kind,
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let account = req
        .headers()
        .get("x-tollgate-account")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(json(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({"error": "body too large"}),
            ));
        }
    };
    let mut state = state.lock();
    let response = match kind {
        Kind::Storage => storage(&mut state, &account, &method, &path, body),
        Kind::Support => support(&mut state, &account, &method, &path, &body),
        Kind::Compute => compute(&mut state, &account, &method, &path, &body),
    };
    Ok(response)
}

fn storage(
    state: &mut State,
    account: &str,
    method: &Method,
    path: &str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    if path == "/objects" && method == Method::GET {
        let objects: Vec<_> = state
            .objects
            .iter()
            .filter(|((owner, _), _)| owner == account)
            .map(|((_, key), data)| serde_json::json!({"key": key, "size": data.len()}))
            .collect();
        return json(StatusCode::OK, serde_json::json!({ "objects": objects }));
    }
    let Some(key) = path.strip_prefix("/objects/").filter(|k| !k.is_empty()) else {
        return not_found();
    };
    let id = (account.to_owned(), key.to_owned());
    match *method {
        Method::GET => match state.objects.get(&id) {
            Some(data) => {
                let mut response = Response::new(Full::new(data.clone()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/octet-stream"),
                );
                response
            }
            None => not_found(),
        },
        Method::PUT => {
            let etag = hex::encode(Sha256::digest(&body));
            let size = body.len();
            state.objects.insert(id, body);
            json(
                StatusCode::CREATED,
                serde_json::json!({"key": key, "size": size, "etag": etag}),
            )
        }
        Method::DELETE => match state.objects.remove(&id) {
            Some(_) => json(StatusCode::OK, serde_json::json!({"deleted": key})),
            None => not_found(),
        },
        _ => not_found(),
    }
}

fn support(
    state: &mut State,
    account: &str,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Response<Full<Bytes>> {
    match (method, path) {
        (&Method::POST, "/cases") => {
            let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            state.next_id += 1;
            let case = serde_json::json!({
                "case_id": format!("case-{}", state.next_id),
                "status": "open",
                "subject": request.get("subject").cloned().unwrap_or_default(),
            });
            state
                .cases
                .entry(account.to_owned())
                .or_default()
                .push(case.clone());
            json(StatusCode::CREATED, case)
        }
        (&Method::GET, "/cases") => {
            let cases = state.cases.get(account).cloned().unwrap_or_default();
            json(StatusCode::OK, serde_json::json!({ "cases": cases }))
        }
        _ => not_found(),
    }
}

fn compute(
    state: &mut State,
    _account: &str,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Response<Full<Bytes>> {
    match (method, path) {
        (&Method::POST, "/jobs") => {
            state.next_id += 1;
            let id = format!("job-{}", state.next_id);
            let job = serde_json::json!({
                "job_id": id,
                "status": "succeeded",
                "result": hex::encode(Sha256::digest(body)),
            });
            state.jobs.insert(id, job.clone());
            json(StatusCode::CREATED, job)
        }
        (&Method::GET, p) => match p.strip_prefix("/jobs/").and_then(|id| state.jobs.get(id)) {
            Some(job) => json(StatusCode::OK, job.clone()),
            None => not_found(),
        },
        _ => not_found(),
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn not_found() -> Response<Full<Bytes>> {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({"error": "not found"}),
    )
}
