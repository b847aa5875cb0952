//! Talking to upstream services: one pooled HTTP/1.1 client for all of them, header hygiene
//! (SPEC F2), per-service timeouts (F4).
//!
//! The pipeline hands over a request whose target and headers are already decided; this module
//! only sends it and classifies failures as unavailable (502) or timed out (504).

pub mod headers;

use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body::{Body, BodyTooLarge};

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

/// The shared, pooled upstream client.
#[derive(Clone)]
pub struct Upstreams {
    client: Client<HttpConnector, Body>,
}

// === impl Upstreams ===

impl Upstreams {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .retry_canceled_requests(false)
            .build(connector);
        Self { client }
    }

    /// Sends `request` and waits for the response head, at most `timeout`.
    pub async fn send(
        &self,
        service: &str,
        request: http::Request<Body>,
        timeout: Duration,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(classify(service, e)),
            Err(_) => Err(UpstreamError::Timeout {
                service: service.to_owned(),
                timeout,
            }),
        }
    }
}

impl Default for Upstreams {
    fn default() -> Self {
        Self::new()
    }
}

/// A body cap hit while sending is the client's fault, not the upstream's.
fn classify(service: &str, e: hyper_util::client::legacy::Error) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(too_large) = err.downcast_ref::<BodyTooLarge>() {
            return UpstreamError::BodyTooLarge {
                limit: too_large.limit,
            };
        }
        source = err.source();
    }
    let reason = if e.is_connect() {
        "connection refused or unreachable".to_owned()
    } else {
        "the connection failed before a response".to_owned()
    };
    UpstreamError::Unavailable {
        service: service.to_owned(),
        reason,
    }
}
