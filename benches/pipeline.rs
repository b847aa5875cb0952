//! Criterion benches of the pipeline's steps (docs/benchmarks.md): token verification (cold and
//! through the verified-token cache), one Cedar decision with 10 and with 10,000 accounts each
//! with its own policy folder (the cost must not grow), route matching, and ledger appends (ack
//! latency alone and group-commit throughput with many waiters).
//!
//! Run: `cargo bench --bench pipeline` (add `-- <filter>` for one group).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use support::{account_id, decision_request, policy_tree, shipped_config};
use tollgate::auth::{KeyRing, TokenIssuer};
use tollgate::authz::{PolicySnapshot, load_tree};
use tollgate::clock::{SharedClock, SystemClock};
use tollgate::ids::{AccountId, RequestId, UserName};
use tollgate::journal::{Charge, Journal, LedgerEntry, MeteredCall, RecordId};
use tollgate::metrics::Metrics;
use tollgate::server::route::RouteTable;
use tollgate::store::sql::SqlStore;

#[path = "support.rs"]
mod support;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

// --- tokens -------------------------------------------------------------------------------

fn tokens(c: &mut Criterion) {
    let dir = ok(tempfile::tempdir());
    let ttl = chrono::Duration::hours(1);
    let keys = Arc::new(ok(KeyRing::open(dir.path().join("keys"), ttl, Utc::now())));
    let issuer = TokenIssuer::new(keys, "tollgate", "tollgate", ttl);
    let account = ok(AccountId::parse("123456789012"));
    let user = ok(UserName::parse("alice"));
    let token = ok(issuer.issue(&account, &user, false, Utc::now()));
    let token = token.token.expose().to_owned();
    let now = Utc::now();
    let mut group = c.benchmark_group("token");
    group.bench_function("verify_eddsa", |b| {
        b.iter(|| ok(issuer.verify_uncached(&token, now)))
    });
    group.bench_function("verify_cached", |b| {
        b.iter(|| ok(issuer.verify(&token, now)))
    });
    let claims = ok(issuer.verify(&token, now));
    let rid = RequestId::generate();
    group.bench_function("issue_identity", |b| {
        b.iter(|| {
            ok(issuer.issue_identity(&claims, &rid, "storage", chrono::Duration::minutes(5), now))
        })
    });
    group.finish();
}

// --- Cedar --------------------------------------------------------------------------------

fn cedar(c: &mut Criterion) {
    let required = shipped_config();
    let required = required.route_actions();
    let mut group = c.benchmark_group("cedar_decision");
    for accounts in [10usize, 10_000] {
        let dir = ok(tempfile::tempdir());
        policy_tree(dir.path(), accounts);
        let started = Instant::now();
        let snapshot: PolicySnapshot =
            load_tree(dir.path(), &required).unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "loaded {accounts} account folders in {:?}",
            started.elapsed()
        );
        // The same account (the 6th) in both trees.
        let request = decision_request(&account_id(5));
        let decision = snapshot.decide(&request);
        assert!(decision.is_allow(), "{decision:?}");
        group.bench_with_input(BenchmarkId::new("accounts", accounts), &request, |b, r| {
            b.iter(|| snapshot.decide(r))
        });
    }
    group.finish();
}

// --- routes -------------------------------------------------------------------------------

fn routes(c: &mut Criterion) {
    let config = shipped_config();
    let table = ok(RouteTable::compile(&config));
    let get = http::Method::GET;
    let mut group = c.benchmark_group("route");
    group.bench_function("match_wildcard", |b| {
        b.iter(|| ok(table.route("storage", &get, "/objects/some/key.txt")))
    });
    group.bench_function("match_literal", |b| {
        b.iter(|| ok(table.route("support", &get, "/cases")))
    });
    group.finish();
}

// --- ledger -------------------------------------------------------------------------------

fn ledger_entry(price: &tollgate::server::route::Route) -> LedgerEntry {
    let account = ok(AccountId::parse("123456789012"));
    LedgerEntry {
        record_id: RecordId::generate(),
        event_time: Utc::now(),
        call: MeteredCall {
            request_id: RequestId::generate(),
            account_id: account.clone(),
            payer_account_id: account,
            org_id: None,
            user_name: ok(UserName::parse("alice")),
            service: "storage".to_owned(),
            action: "storage:GetObject".to_owned(),
            method: "GET".to_owned(),
            status: 200,
            client_request_id: None,
        },
        bytes_in: 0,
        bytes_out: 0,
        charge: ok(Charge::at_price(&price.price, 1, 0, 0)),
    }
}

fn ledger(c: &mut Criterion) {
    let runtime = ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build());
    let dir = ok(tempfile::tempdir());
    let store = ok(SqlStore::open(dir.path()));
    let clock: SharedClock = Arc::new(SystemClock);
    let (journal, _task) = ok(Journal::open(
        store.database(),
        clock,
        Arc::new(Metrics::new()),
    ));
    let config = shipped_config();
    let table = ok(RouteTable::compile(&config));
    let route = ok(table.route("storage", &http::Method::GET, "/objects/a")).route;

    let mut group = c.benchmark_group("ledger_append");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    // `waiters` requests append at once, each waiting for its own ack (as the pipeline does);
    // the time per element is the inverse of the committed records per second.
    for waiters in [1usize, 32, 256] {
        group.throughput(Throughput::Elements(waiters as u64));
        group.bench_function(BenchmarkId::new("waiters", waiters), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let mut acks = Vec::with_capacity(waiters);
                        for _ in 0..waiters {
                            let journal = journal.clone();
                            let entry = ledger_entry(&route);
                            acks.push(tokio::spawn(async move { journal.append(entry).await }));
                        }
                        for ack in acks {
                            ok(ok(ack.await));
                        }
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();

    // Ack latency percentiles under a steady stream of 32 concurrent appenders.
    let latencies = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let journal = journal.clone();
            let route = route.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    ok(journal.append(ledger_entry(&route)).await);
                    seen.push(t.elapsed());
                }
                seen
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(ok(t.await));
        }
        all
    });
    let mut sorted = latencies;
    sorted.sort();
    let pct = |p: f64| {
        sorted
            .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    eprintln!(
        "ledger ack latency, 32 appenders for 3 s: {} records ({:.0}/s), p50 {:?}, p99 {:?}, max {:?}; batches {}",
        sorted.len(),
        sorted.len() as f64 / 3.0,
        pct(0.50),
        pct(0.99),
        pct(1.0),
        journal.stats().batches
    );
}

criterion_group!(benches, tokens, cedar, routes, ledger);
criterion_main!(benches);
