//! Talking to upstream services: one pooled HTTP/1.1 client for the `http://` ones and one per
//! `https://` service (its own trust and client certificate, [`tls`]), header hygiene (SPEC F2),
//! per-service timeouts (F4).
//!
//! The pipeline hands over a request whose target and headers are already decided; this module
//! only sends it and classifies failures as unavailable (502) or timed out (504).
//!
//! A call that reached an upstream must be metered whatever its client does (issue 17 item 7),
//! so the pipeline runs each call and its metering on a task of its own ([`Upstreams::detach`]),
//! not inside the connection's future; shutdown waits for those tasks
//! ([`Upstreams::settled`]) before the journal closes.

pub mod headers;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body::{Body, BodyTooLarge};
use crate::config::ServiceConfig;
pub use tls::UpstreamTlsError;

/// Why a call to an upstream produced no response head.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream `{service}` is unavailable: {reason}")]
    Unavailable { service: String, reason: String },
    #[error("upstream `{service}` did not answer within {timeout:?}")]
    Timeout { service: String, timeout: Duration },
    #[error("request body exceeds the route's limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
}

/// The pooled upstream clients.
#[derive(Clone)]
pub struct Upstreams {
    plain: Client<HttpConnector, Body>,
    /// One client per `https://` service, by service name.
    tls: Arc<HashMap<String, Client<HttpsConnector<HttpConnector>, Body>>>,
    in_flight: Arc<InFlight>,
}

/// Detached calls still running, and a wake-up for whoever waits until none is.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Counts one detached call for as long as it lives (dropped when its task ends, however).
struct InFlightGuard(Arc<InFlight>);

// === impl Upstreams ===

impl Upstreams {
    /// The clients for `services`; an `https://` service's CA and client pair are read here.
    pub fn new(services: &[ServiceConfig]) -> Result<Self, UpstreamTlsError> {
        let mut tls = HashMap::new();
        for service in services {
            let Some(config) = &service.tls else { continue };
            let config = tls::client_config(&service.name, config)?;
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_only()
                .enable_http1()
                .wrap_connector(tcp_connector(false));
            tls.insert(service.name.clone(), pooled().build(connector));
        }
        Ok(Self {
            plain: pooled().build(tcp_connector(true)),
            tls: Arc::new(tls),
            in_flight: Arc::default(),
        })
    }

    /// Runs `call` (an upstream call and what must follow it, its metering) on a task of its
    /// own, so dropping the returned handle (the client went away) does not cancel it. Shutdown
    /// waits for it through [`Upstreams::settled`].
    pub fn detach<F>(&self, call: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.in_flight.count.fetch_add(1, Ordering::AcqRel);
        let guard = InFlightGuard(self.in_flight.clone());
        tokio::spawn(async move {
            let _guard = guard;
            call.await
        })
    }

    /// Returns once no detached call is running (for shutdown, before the journal closes).
    pub async fn settled(&self) {
        loop {
            let idle = self.in_flight.idle.notified();
            let mut idle = std::pin::pin!(idle);
            // Registered before the check, so a call ending in between still wakes us.
            idle.as_mut().enable();
            if self.in_flight.count.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Sends `request` and waits for the response head, at most `timeout`.
    pub async fn send(
        &self,
        service: &str,
        request: http::Request<Body>,
        timeout: Duration,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let https = request.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
        let sent = match self.tls.get(service) {
            Some(client) if https => tokio::time::timeout(timeout, client.request(request)).await,
            _ => tokio::time::timeout(timeout, self.plain.request(request)).await,
        };
        match sent {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(classify(service, e)),
            Err(_) => Err(UpstreamError::Timeout {
                service: service.to_owned(),
                timeout,
            }),
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

fn tcp_connector(enforce_http: bool) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.enforce_http(enforce_http);
    connector
}

fn pooled() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .retry_canceled_requests(false);
    builder
}

/// A body cap hit while sending is the client's fault, not the upstream's. Everything else is
/// the upstream's: the client learns the kind of failure, the log the whole cause (a TLS reason
/// such as an untrusted certificate stays out of the response, O4).
fn classify(service: &str, e: hyper_util::client::legacy::Error) -> UpstreamError {
    let mut tls = false;
    let mut cause = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(err) = source {
        if let Some(too_large) = err.downcast_ref::<BodyTooLarge>() {
            return UpstreamError::BodyTooLarge {
                limit: too_large.limit,
            };
        }
        // hyper-rustls hands rustls' errors over inside an `io::Error`.
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        tls |= err.is::<rustls::Error>() || inner.is_some_and(|i| i.is::<rustls::Error>());
        cause.push_str(": ");
        cause.push_str(&err.to_string());
        source = err.source();
    }
    tracing::warn!(service, cause, "upstream call failed");
    let reason = if tls {
        "the TLS handshake with it failed"
    } else if e.is_connect() {
        "connection refused or unreachable"
    } else {
        "the connection failed before a response"
    };
    UpstreamError::Unavailable {
        service: service.to_owned(),
        reason: reason.to_owned(),
    }
}
