//! Prometheus metrics (SPEC O2): the families every component records into, and the text
//! exposition served at `/metrics`.
//!
//! Families are created once at startup; recording is a hash lookup and an atomic add, so it is
//! fine on the hot path. Label values are bounded (service, action and status come from config
//! and HTTP, never from free-form client input).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub service: String,
    pub action: String,
    pub decision: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub service: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

/// Every metric family of the gateway.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<ServiceLabels, Histogram>,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub policy_reloads: Family<ResultLabels, Counter>,
    pub policy_active: Family<VersionLabels, Gauge>,
    pub policy_loaded_timestamp: Gauge,
    pub ledger_write_duration: Histogram,
    pub ledger_records: Counter,
    pub decision_records: Counter,
    pub login_failures: Counter,
    pub lockouts: Counter,
    /// Password work refused because its lane or its address's share was full (issue 16.5).
    pub password_queue_rejections: Counter,
    /// Calls answered 429 before Cedar because their principal was past `[audit] deny_rate`.
    pub denied_calls_throttled: Counter,
    pub inflight: Gauge,
    /// Client connections closed at accept because a connection cap was full.
    pub connections_refused: Family<CapLabels, Counter>,
    /// TLS certificate reloads by result (success, failure).
    pub tls_reloads: Family<ResultLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapLabels {
    pub cap: String,
}

pub type SharedMetrics = Arc<Metrics>;

// === impl Metrics ===

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Service calls by service, action, decision and status",
            requests.clone(),
        );
        let request_duration = Family::<ServiceLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register(
            "request_duration_seconds",
            "Time from request to response head, by service",
            request_duration.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream calls that produced no response (unavailable, timeout)",
            upstream_errors.clone(),
        );
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reload attempts by result (success, failure)",
            policy_reloads.clone(),
        );
        for result in ["success", "failure"] {
            // Present from the start, so a dashboard sees zero rather than nothing.
            let _ = policy_reloads.get_or_create(&ResultLabels {
                result: result.to_owned(),
            });
        }
        let policy_active = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "policy_active_version",
            "1 for the active policy version (content hash)",
            policy_active.clone(),
        );
        let policy_loaded_timestamp = Gauge::default();
        registry.register(
            "policy_loaded_timestamp_seconds",
            "Unix time the active policy version was loaded",
            policy_loaded_timestamp.clone(),
        );
        let ledger_write_duration = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register(
            "ledger_write_duration_seconds",
            "Time from submitting a ledger record to its durable acknowledgement",
            ledger_write_duration.clone(),
        );
        let ledger_records = Counter::default();
        registry.register(
            "ledger_records",
            "Ledger records made durable",
            ledger_records.clone(),
        );
        let decision_records = Counter::default();
        registry.register(
            "decision_records",
            "Decision records made durable",
            decision_records.clone(),
        );
        let login_failures = Counter::default();
        registry.register(
            "login_failures",
            "Failed login attempts",
            login_failures.clone(),
        );
        let lockouts = Counter::default();
        registry.register(
            "lockouts",
            "Users locked after repeated failures",
            lockouts.clone(),
        );
        let password_queue_rejections = Counter::default();
        registry.register(
            "password_queue_rejections",
            "Password checks and hashes refused with 429 SlowDown because the queue was full",
            password_queue_rejections.clone(),
        );
        let denied_calls_throttled = Counter::default();
        registry.register(
            "denied_calls_throttled",
            "Calls refused with 429 SlowDown before authorization: the principal was past [audit] deny_rate",
            denied_calls_throttled.clone(),
        );
        let inflight = Gauge::default();
        registry.register(
            "inflight_requests",
            "Requests being handled",
            inflight.clone(),
        );
        let connections_refused = Family::<CapLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Client connections closed at accept by a cap (max_connections, max_connections_per_ip)",
            connections_refused.clone(),
        );
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "TLS certificate and key reload attempts by result (success, failure)",
            tls_reloads.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            upstream_errors,
            policy_reloads,
            policy_active,
            policy_loaded_timestamp,
            ledger_write_duration,
            ledger_records,
            decision_records,
            login_failures,
            lockouts,
            password_queue_rejections,
            denied_calls_throttled,
            inflight,
            connections_refused,
            tls_reloads,
        }
    }

    /// Counts a TLS reload attempt.
    pub fn tls_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.tls_reloads
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts a connection closed at accept by a full cap.
    pub fn connection_refused(&self, refusal: crate::server::limits::Refusal) {
        use crate::server::limits::Refusal;
        let cap = match refusal {
            Refusal::Total => "max_connections",
            Refusal::PerIp => "max_connections_per_ip",
        };
        self.connections_refused
            .get_or_create(&CapLabels {
                cap: cap.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
