//! SPEC O2: health, readiness and metrics endpoints.

use http::StatusCode;

use crate::support::backend::TestDb;
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

/// Everything a write could change: the store's probe row, the journal's tables and the
/// newest decision's hash.
fn durable_state(db: &TestDb) -> (Option<String>, i64, i64, Option<String>) {
    let probe = db
        .query_map("SELECT value FROM meta WHERE key = 'probe'", &[], |r| {
            r.get::<String>(0)
        })
        .expect("meta")
        .pop();
    let count = |table: &str| -> i64 {
        db.query_row(&format!("SELECT COUNT(*) FROM {table}"), &[], |r| r.get(0))
            .expect("count")
    };
    let head = db
        .query_map(
            "SELECT hash FROM decisions ORDER BY seq DESC LIMIT 1",
            &[],
            |r| r.get::<String>(0),
        )
        .expect("decisions")
        .pop();
    (probe, count("ledger"), count("decisions"), head)
}

/// Issue 16 item 13: a readiness probe reads and never writes: the store and the journal are
/// the same after many probes, and the caller cache (SQLite) is not dropped by them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o2_readiness_probes_leave_the_store_and_journal_unchanged() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    let acme = gw.account("acme").await;
    assert_eq!(
        acme.client.get("/svc/storage/objects/a").await.status,
        StatusCode::OK
    );
    let db = TestDb(gw.database());
    // The call's transfer record is booked when its body has ended: wait until all is still.
    let mut before = durable_state(&db);
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = durable_state(&db);
        if now == before {
            break;
        }
        before = now;
    }
    let generation = gw.app.store.generation();
    for _ in 0..20 {
        let r = gw.client.get("/readyz").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.json()["checks"]["store"], "ok");
    }
    assert_eq!(durable_state(&db), before, "a probe wrote something");
    assert_eq!(
        gw.app.store.generation(),
        generation,
        "a probe dropped the caller cache"
    );
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
