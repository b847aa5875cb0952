//! Billing integrity under faults (issue 17, items 1, 2 and 7): a call is charged exactly when
//! the client was (or would have been) served the upstream's answer, whatever the store and the
//! client do in the middle of it.
//!
//! - M2 item 1: a call whose decision record was not committed is answered 503 and not charged,
//!   even when its ledger record could have been committed later; its retry is charged once.
//! - M2 item 2: a transfer record (nobody waits for it) survives a failed batch: it is retried
//!   until it is durable.
//! - M2 item 7: a client that disconnects after its request reached the upstream is charged for
//!   what the upstream answered, also when the gateway shuts down in the meantime.
//!
//! `docs/hardening.md` ("Billing integrity (issue 17)") maps each rule to its test.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::AsyncWriteExt;

use crate::support::{Account, TestGateway, Upstream, backend};
use tollgate::params;

async fn gateway() -> (TestGateway, Upstream, Account) {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .service_timeout("storage", Duration::from_secs(30))
        // The tests tag calls with their own request ids, kept only from a trusted proxy (F2).
        .tweak(|c| c.server.trusted_proxies = vec!["127.0.0.0/8".parse().expect("net")])
        .start()
        .await;
    let account = gw.account("acme").await;
    (gw, upstream, account)
}

/// (call records as (status, bytes_out), transfer records' bytes_out) for `request_id`.
fn ledger_records(data_dir: &Path, request_id: &str) -> (Vec<(u16, u64)>, Vec<u64>) {
    let rows = backend::query(&backend::database(data_dir), |conn| {
        conn.query_map(
            "SELECT kind, status, bytes_out FROM ledger WHERE request_id = ?1 ORDER BY seq",
            params![request_id],
            |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?, r.get::<i64>(2)?)),
        )
        .expect("query")
    });
    let mut calls = Vec::new();
    let mut transfers = Vec::new();
    for (kind, status, bytes_out) in rows {
        match kind.as_str() {
            "call" => calls.push((status as u16, bytes_out as u64)),
            _ => transfers.push(bytes_out as u64),
        }
    }
    (calls, transfers)
}

/// Request ids of call records that have no decision record with the same request id.
fn calls_without_a_decision(data_dir: &Path) -> Vec<String> {
    backend::query(&backend::database(data_dir), |conn| {
        conn.query_map(
            "SELECT l.request_id FROM ledger l WHERE l.kind = 'call' AND NOT EXISTS
               (SELECT 1 FROM decisions d WHERE d.request_id = l.request_id)",
            params![],
            |r| r.get::<String>(0),
        )
        .expect("query")
    })
}

async fn call_with_id(
    account: &Account,
    path: &str,
    request_id: &str,
) -> crate::support::client::TestResponse {
    account
        .client
        .send(
            Method::GET,
            path,
            &[("x-request-id", request_id)],
            Bytes::new(),
        )
        .await
}

/// Waits until the journal writer has failed `n` batches in all (the store lock did its work).
async fn until_failed_batches(gw: &TestGateway, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while gw.app.journal.stats().failed_batches < n {
        assert!(
            Instant::now() < deadline,
            "no journal batch failed within {within:?} while the store was locked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn verify_chains(gw: &TestGateway) {
    let db = gw.database();
    backend::off_runtime(|| tollgate::journal::verify_ledger(&db)).expect("ledger chain");
    backend::off_runtime(|| tollgate::journal::verify_decisions(&db)).expect("decision chain");
}

/// Item 1. The repro of issue 17: the store is locked past the busy timeout while a call to a
/// 9 s upstream is in flight. The call's decision record fails with its batch; the store is free
/// again when the upstream answers, so the ledger record alone could commit. It must not: the
/// client gets 503 `MeteringUnavailable` ("not served, retry") and must not be charged, and its
/// retry is charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m2_a_call_whose_decision_failed_is_refused_503_and_not_charged_even_if_the_store_recovers()
{
    let (gw, upstream, acme) = gateway().await;
    let db = gw.database();
    let failed_before = gw.app.journal.stats().failed_batches;
    let locker = backend::hold_write_lock(db.clone());
    let call = {
        let acme = acme.clone();
        tokio::spawn(async move {
            call_with_id(&acme, "/svc/storage/objects/slow/9000", "undecided").await
        })
    };
    // The decision's batch fails after the busy timeout (5 s); then the store comes back, long
    // before the upstream answers.
    until_failed_batches(&gw, failed_before + 1, Duration::from_secs(20)).await;
    drop(locker);
    let r = call.await.expect("task");
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.error_code(), "MeteringUnavailable");
    assert_eq!(upstream.count(), 1, "the call did reach the upstream");
    assert_eq!(
        ledger_records(&gw.data_dir, "undecided"),
        (vec![], vec![]),
        "a call answered 503 was charged"
    );

    // The client retries, as told: charged once.
    let r = call_with_id(&acme, "/svc/storage/objects/a", "undecided-retry").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        ledger_records(&gw.data_dir, "undecided-retry").0,
        vec![(200, 0)]
    );
    assert_eq!(
        calls_without_a_decision(&gw.data_dir),
        Vec::<String>::new(),
        "a forwarded call without a decision record"
    );
    verify_chains(&gw);
}

/// Item 2. A transfer record is queued when a body ends, after the head went out, and nobody
/// waits for it. A batch that fails (here: the store locked past the busy timeout while the body
/// ends) must not drop it: it is retried until durable, so only a crash can lose it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m2_a_transfer_record_whose_batch_failed_is_retried_until_durable() {
    let (gw, _upstream, acme) = gateway().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    // "first" now, "second" 1.5 s later: the body ends while the store is locked.
    let request = http::Request::get(format!("{}/svc/storage/objects/trickle/1500", gw.url()))
        .header(
            "authorization",
            format!("Bearer {}", acme.client.token().expect("token")),
        )
        .header("x-request-id", "transfer-locked")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = client.request(request).await.expect("a head");
    assert_eq!(response.status(), StatusCode::OK);
    // The head is out: the call record is durable. Lock the store before the body ends.
    let failed_before = gw.app.journal.stats().failed_batches;
    let locker = backend::hold_write_lock(gw.database());
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the body ends")
        .expect("a whole body")
        .to_bytes();
    assert_eq!(&body[..], b"firstsecond");
    until_failed_batches(&gw, failed_before + 1, Duration::from_secs(20)).await;
    assert_eq!(
        ledger_records(&gw.data_dir, "transfer-locked"),
        (vec![(200, 0)], vec![]),
        "the transfer's batch failed; only the call record is stored so far"
    );
    drop(locker);

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (calls, transfers) = ledger_records(&gw.data_dir, "transfer-locked");
        assert_eq!(calls, vec![(200, 0)]);
        if !transfers.is_empty() {
            assert_eq!(transfers, vec![11], "the bytes handed to the client, once");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the transfer record of a failed batch was dropped, not retried"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    verify_chains(&gw);
}

/// Item 7. The client sends a call and hangs up while the upstream works on it (1.5 s). The
/// upstream received the call and answered 200: the call is charged, with the status the
/// upstream answered, and no response bytes (none reached the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m2_a_client_that_disconnects_mid_call_is_charged_for_what_the_upstream_answered() {
    let (gw, upstream, acme) = gateway().await;
    let token = acme.client.token().expect("token").to_owned();
    let mut stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    stream
        .write_all(
            format!(
                "PUT /svc/storage/objects/slow/1500 HTTP/1.1\r\nHost: gw\r\n\
                 Authorization: Bearer {token}\r\nX-Request-Id: gone-mid-call\r\n\
                 Content-Length: 4\r\n\r\nwork"
            )
            .as_bytes(),
        )
        .await
        .expect("send");
    // The upstream records a call as soon as it has read it, before it starts its 1.5 s of work.
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the call never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(stream);
    let seen = upstream.last();
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.body_len, 4);
    assert_eq!(
        seen.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("gone-mid-call")
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (calls, transfers) = ledger_records(&gw.data_dir, "gone-mid-call");
        if !calls.is_empty() {
            assert_eq!(
                calls,
                vec![(200, 0)],
                "one call record, the upstream's status"
            );
            assert_eq!(transfers, Vec::<u64>::new(), "no byte reached the client");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the upstream did the work of a client that hung up, and nothing was charged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(calls_without_a_decision(&gw.data_dir), Vec::<String>::new());
    verify_chains(&gw);
}

/// Item 7, at shutdown: a call whose client hung up is no connection the drain waits for, yet
/// it is still running upstream. The shutdown waits for it, so its record reaches the journal
/// before the journal closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m2_a_shutdown_still_meters_the_call_of_a_client_that_hung_up() {
    let (mut gw, upstream, acme) = gateway().await;
    let token = acme.client.token().expect("token").to_owned();
    let mut stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    stream
        .write_all(
            format!(
                "GET /svc/storage/objects/slow/1500 HTTP/1.1\r\nHost: gw\r\n\
                 Authorization: Bearer {token}\r\nX-Request-Id: gone-at-shutdown\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("send");
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the call never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await; // the connection is gone
    gw.shutdown().await;
    assert_eq!(
        ledger_records(&gw.data_dir, "gone-at-shutdown"),
        (vec![(200, 0)], vec![]),
        "the shutdown closed the journal before the running call was metered"
    );
    verify_chains(&gw);
}
