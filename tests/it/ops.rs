//! SPEC O2: health, readiness and metrics endpoints.

use http::StatusCode;

use crate::support::{TestGateway, Upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o2_healthz_and_readyz_answer() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    let r = gw.client.get("/healthz").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "ok");
    let r = gw.client.get("/readyz").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["checks"]["store"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o2_metrics_count_requests_by_service_action_and_status() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    let acme = gw.account("acme").await;
    acme.client.get("/svc/storage/objects/a").await;
    acme.client.get("/svc/storage/objects/b").await;
    // A call without a token is counted too, with no decision.
    gw.client.get("/svc/storage/objects/c").await;
    let r = gw.client.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain")
    );
    let text = r.text();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("tollgate_requests_total{")
                && l.contains("action=\"storage:GetObject\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("no request counter in:\n{text}"));
    assert!(line.ends_with(" 2"), "{line}");
    assert!(line.contains("decision=\"allow\""), "{line}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("tollgate_requests_total{")
                && l.contains("decision=\"none\"")
                && l.contains("status=\"401\"")),
        "unauthenticated calls are counted:\n{text}"
    );
    for family in [
        "tollgate_request_duration_seconds",
        "tollgate_policy_reloads_total",
        "tollgate_login_failures_total",
        "tollgate_lockouts_total",
        "tollgate_ledger_write_duration_seconds",
    ] {
        assert!(text.contains(family), "{family} missing from /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_endpoints_get_a_spec_error_body() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    let r = gw.client.get("/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "NotFound");
    assert_eq!(r.json()["request_id"].as_str(), r.header("x-request-id"));
}
