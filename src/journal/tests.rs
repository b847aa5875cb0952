//! Journal tests on real SQLite files in temp dirs: group commit, durability, ordering, tamper
//! detection, store failure and recovery, restart, M6 booking, decision queries and spend.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;

use super::*;
use crate::authz::{
    Decision, NotAppliedReason, OrgMembership, OrgTier, PolicyRef, Principal, ReloadTrigger,
    Request, RequestContext, Resource, Tier, TierOutcome, Verdict,
};
use crate::billing::{Money, RoutePrice};
use crate::chain::{self, ChainBreak};
use crate::clock::ManualClock;
use crate::db::{Conn, Database, params};
use crate::ids::{AccountId, GroupName, OrgId, RequestId, UserName};
use crate::metrics::Metrics;
use crate::store::sql::SqlStore;

const A: &str = "111111111111";
const B: &str = "222222222222";
const C: &str = "333333333333";
const ORG: &str = "o-abcdefghij";

struct Fixture {
    _dir: tempfile::TempDir,
    db: Database,
    clock: Arc<ManualClock>,
}

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0)
        .single()
        .unwrap_or_else(|| panic!("date"))
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open(dir.path()).unwrap();
    let db = store.database().clone();
    drop(store);
    Fixture {
        _dir: dir,
        db,
        clock: Arc::new(ManualClock::new(at(2026, 3, 15))),
    }
}

fn options() -> JournalOptions {
    JournalOptions {
        // Long, so a probe never flips health in the middle of a test that checks it.
        probe_interval: Duration::from_secs(3600),
        ..JournalOptions::default()
    }
}

fn open(f: &Fixture, opts: JournalOptions) -> (Journal, JournalTask) {
    Journal::open_with(&f.db, f.clock.clone(), Arc::new(Metrics::new()), opts).unwrap()
}

fn acct(s: &str) -> AccountId {
    AccountId::parse(s).unwrap()
}

fn call(account: &str, payer: &str, org: bool) -> MeteredCall {
    MeteredCall {
        request_id: RequestId::generate(),
        account_id: acct(account),
        payer_account_id: acct(payer),
        org_id: org.then(|| OrgId::parse(ORG).unwrap()),
        user_name: UserName::parse("alice").unwrap(),
        service: "storage".into(),
        action: "storage:GetObject".into(),
        method: "GET".into(),
        status: 200,
        client_request_id: None,
    }
}

fn price() -> RoutePrice {
    RoutePrice::flat(
        Money::parse("0.0004").unwrap(),
        Money::ZERO,
        Money::parse("0.09").unwrap(),
    )
}

fn call_at(account: &str, payer: &str, org: bool, when: DateTime<Utc>) -> LedgerEntry {
    LedgerEntry {
        record_id: RecordId::generate(),
        event_time: when,
        call: call(account, payer, org),
        bytes_in: 100,
        bytes_out: 0,
        charge: Charge::at_price(&price(), 1, 100, 0).unwrap(),
    }
}

fn ledger_entry(account: &str) -> LedgerEntry {
    call_at(account, account, false, at(2026, 3, 15))
}

fn request(account: &str, user: &str, action: &str) -> Request {
    Request {
        principal: Principal {
            account: acct(account),
            account_name: "acme".into(),
            user: UserName::parse(user).unwrap(),
            groups: vec![GroupName::parse("admins").unwrap()],
            is_owner: false,
        },
        organization: Some(OrgMembership {
            id: OrgId::parse(ORG).unwrap(),
            feature_set: crate::authz::FeatureSet::AllFeatures,
            management_account: acct(A),
        }),
        action: action.into(),
        resource: Resource::Service {
            name: "storage".into(),
        },
        context: RequestContext {
            mfa: true,
            source_ip: "10.1.2.3".parse().unwrap(),
            time: 1_773_576_000,
            method: "GET".into(),
            path: "/objects/a".into(),
            month_to_date_spend: Decimal::new(1234, 2),
        },
    }
}

fn decision(verdict: Verdict) -> Decision {
    let policy = PolicyRef {
        file: "default-account/owner.cedar".into(),
        id: "owner-all".into(),
    };
    Decision {
        verdict,
        denied_by: (verdict == Verdict::Deny).then_some(Tier::Organization),
        account: TierOutcome {
            verdict: Verdict::Allow,
            determining: vec![policy.clone()],
            errors: vec![],
        },
        organization: OrgTier::Applied(TierOutcome {
            verdict,
            determining: if verdict == Verdict::Deny {
                vec![PolicyRef {
                    file: format!("orgs/{ORG}/guard.cedar"),
                    id: "no-deletes".into(),
                }]
            } else {
                vec![]
            },
            errors: vec!["policy `x` in `y`: boom".into()],
        }),
        policy_version: "v1".into(),
    }
}

fn decision_entry(
    account: &str,
    user: &str,
    action: &str,
    verdict: Verdict,
    time: DateTime<Utc>,
) -> DecisionEntry {
    DecisionEntry {
        record_id: RecordId::generate(),
        kind: DecisionKind::Service,
        time,
        request_id: RequestId::generate(),
        client_request_id: None,
        request: request(account, user, action),
        decision: decision(verdict),
    }
}

fn reader(f: &Fixture) -> Conn {
    open_reader(&f.db).unwrap()
}

fn count(db: &Database, table: &str) -> i64 {
    open_reader(db)
        .unwrap()
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), params![], |r| {
            r.get(0)
        })
        .unwrap()
}

/// Runs SQL on a separate read-write connection (the tamperer).
fn tamper(db: &Database, sql: &str) {
    let conn = db.connect().unwrap();
    conn.execute_batch(sql).unwrap();
}

// === writing ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_group_committed_and_both_chains_verify() {
    let f = fixture();
    let (journal, task) = open(&f, options());
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for t in 0..50 {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..20 {
                let who = [A, B, C][(t + i) % 3];
                let time = at(2026, 3, 15);
                journal
                    .enqueue(decision_entry(
                        who,
                        "alice",
                        "storage:GetObject",
                        Verdict::Allow,
                        time,
                    ))
                    .unwrap();
                let receipt = journal.append(ledger_entry(who)).await.unwrap();
                seqs.push(receipt.seq);
            }
            seqs
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=1000).collect::<Vec<u64>>());

    let stats = journal.stats();
    assert_eq!(stats.ledger_records, 1000);
    assert_eq!(stats.decision_records, 1000);
    assert_eq!(stats.failed_batches, 0);
    assert!(
        stats.batches < 1000,
        "expected group commit, got {} transactions for 2000 records",
        stats.batches
    );
    eprintln!(
        "2000 records in {elapsed:?} over {} transactions ({:.0} records/s)",
        stats.batches,
        2000.0 / elapsed.as_secs_f64()
    );

    let ledger = verify_ledger(&f.db).unwrap();
    let decisions = verify_decisions(&f.db).unwrap();
    assert_eq!((ledger.records, ledger.head_seq), (1000, 1000));
    assert_eq!((decisions.records, decisions.head_seq), (1000, 1000));
    let heads = journal.heads();
    assert_eq!(heads.ledger.hash, ledger.head_hash);
    assert_eq!(heads.decisions.hash, decisions.head_hash);
    assert!(journal.is_healthy());
    journal.shutdown().await.unwrap();
    task.wait().await;
}

#[tokio::test]
async fn an_acknowledged_record_is_visible_to_another_connection() {
    let f = fixture();
    let (journal, _task) = open(&f, options());
    let conn = reader(&f);
    for _ in 0..5 {
        let entry = ledger_entry(A);
        let id = entry.record_id.clone();
        let receipt = journal.append(entry).await.unwrap();
        let (stored, commit_time): (String, i64) = conn
            .query_row(
                "SELECT record_id, commit_time FROM ledger WHERE seq = ?1",
                params![receipt.seq as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(stored, id.as_str());
        assert_eq!(commit_time, receipt.committed_at.timestamp_millis());
    }
    let d = decision_entry(
        A,
        "alice",
        "storage:GetObject",
        Verdict::Deny,
        at(2026, 3, 15),
    );
    let id = d.record_id.clone();
    let receipt = journal.append(d).await.unwrap();
    let stored: String = conn
        .query_row(
            "SELECT record_id FROM decisions WHERE seq = ?1",
            params![receipt.seq as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, id.as_str());
}

#[tokio::test]
async fn an_enqueued_decision_is_durable_when_the_following_append_is_acknowledged() {
    let f = fixture();
    let (journal, _task) = open(&f, options());
    let mut ids = Vec::new();
    for i in 0..10 {
        let d = decision_entry(
            A,
            "alice",
            &format!("storage:Op{i}"),
            Verdict::Allow,
            at(2026, 3, 15),
        );
        ids.push(d.record_id.as_str().to_owned());
        journal.enqueue(d).unwrap();
        journal.append(ledger_entry(A)).await.unwrap();
        // Durable and visible elsewhere as soon as the ledger append is acknowledged.
        let conn = reader(&f);
        let seen: Vec<String> = conn
            .query_map(
                "SELECT record_id FROM decisions ORDER BY seq",
                params![],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(seen, ids, "FIFO: decisions stored in the order queued");
    }
}

fn transfer_entry(account: &str) -> TransferEntry {
    TransferEntry {
        record_id: RecordId::generate(),
        call_record_id: RecordId::generate(),
        event_time: at(2026, 3, 15),
        call: call(account, account, false),
        bytes_in: 0,
        bytes_out: 1 << 20,
        charge: Charge::at_price(&price(), 0, 0, 1 << 20).unwrap(),
    }
}

#[tokio::test]
async fn an_unawaited_entry_shares_the_commit_of_the_next_awaited_one() {
    let f = fixture();
    let (journal, task) = open(
        &f,
        JournalOptions {
            linger: Duration::from_millis(500),
            ..options()
        },
    );
    journal.append(ledger_entry(A)).await.unwrap();
    let before = journal.stats().batches;
    journal.enqueue(transfer_entry(A)).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let receipt = journal.append(ledger_entry(A)).await.unwrap();
    assert_eq!(receipt.seq, 3, "the transfer went first (FIFO)");
    assert_eq!(
        journal.stats().batches,
        before + 1,
        "the transfer waited and rode along with the call"
    );

    // Alone, it is committed when the linger runs out: never dropped, never stuck.
    journal.enqueue(transfer_entry(A)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&f.db, "ledger") < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the lone transfer was never committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(journal.stats().batches, before + 2);
    journal.shutdown().await.unwrap();
    task.wait().await;
    assert_eq!(verify_ledger(&f.db).unwrap().records, 4);
}

#[tokio::test]
async fn wal_checkpoints_run_in_the_background_not_on_commit() {
    let f = fixture();
    let Database::Sqlite(sqlite) = &f.db else {
        panic!("the journal tests run on SQLite");
    };
    let file = sqlite.path().to_owned();
    let (journal, task) = open(&f, options());
    // Far fewer pages than SQLite's automatic checkpoint (1000): without the background
    // checkpointer the records would stay in the WAL and the database file would not grow.
    let before = std::fs::metadata(&file).unwrap().len();
    for _ in 0..20 {
        journal.append(ledger_entry(A)).await.unwrap();
    }
    let autocheckpoint: i64 = journal
        .with_writer_connection(|c| {
            c.query_row("PRAGMA wal_autocheckpoint", params![], |r| r.get(0))
                .unwrap()
        })
        .await;
    assert_eq!(
        autocheckpoint, 0,
        "the writer does not checkpoint on commit"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&file).unwrap().len() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint copied the WAL into the database file"
        );
        tokio::time::sleep(checkpoint::INTERVAL).await;
    }
    journal.shutdown().await.unwrap();
    task.wait().await;
    assert_eq!(verify_ledger(&f.db).unwrap().records, 20);
}

#[tokio::test]
async fn a_full_queue_is_unavailable_not_a_wait() {
    let f = fixture();
    let (journal, _task) = open(
        &f,
        JournalOptions {
            queue_capacity: 2,
            ..options()
        },
    );
    // Park the writer inside a hook so the queue cannot drain.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (parked_tx, parked_rx) = tokio::sync::oneshot::channel::<()>();
    let parked = journal.clone();
    let hook = tokio::spawn(async move {
        parked
            .with_writer_connection(move |_| {
                let _ = parked_tx.send(());
                let _ = release_rx.recv();
            })
            .await
    });
    parked_rx.await.unwrap();
    journal.enqueue(ledger_entry(A)).unwrap();
    journal.enqueue(ledger_entry(A)).unwrap();
    let err = journal.append(ledger_entry(A)).await.unwrap_err();
    assert!(
        matches!(&err, JournalError::Unavailable(m) if m.contains("full")),
        "{err:?}"
    );
    release_tx.send(()).unwrap();
    hook.await.unwrap();
    // The writer drains the two queued entries after the hook returns; until it has taken them
    // off the queue, the queue may still be full. It must recover within a moment.
    let mut receipt = None;
    for _ in 0..200 {
        match journal.append(ledger_entry(A)).await {
            Ok(r) => {
                receipt = Some(r);
                break;
            }
            Err(JournalError::Unavailable(m)) if m.contains("full") => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(receipt.expect("the queue drains").seq, 3);
}

#[tokio::test]
async fn shutdown_commits_what_is_queued_and_refuses_more() {
    let f = fixture();
    let (journal, task) = open(&f, options());
    for _ in 0..100 {
        journal
            .enqueue(decision_entry(
                A,
                "alice",
                "storage:GetObject",
                Verdict::Allow,
                at(2026, 3, 15),
            ))
            .unwrap();
    }
    journal.shutdown().await.unwrap();
    task.wait().await;
    assert_eq!(count(&f.db, "decisions"), 100);
    assert!(!journal.is_healthy());
    assert!(matches!(
        journal.append(ledger_entry(A)).await,
        Err(JournalError::Unavailable(_))
    ));
}

#[tokio::test]
async fn invalid_entries_are_refused_before_queueing() {
    let f = fixture();
    let (journal, _task) = open(&f, options());
    let mut e = ledger_entry(A);
    e.bytes_out = u64::MAX;
    assert!(matches!(
        journal.append(e).await,
        Err(JournalError::Invalid(_))
    ));
    let mut d = decision_entry(
        A,
        "alice",
        "storage:GetObject",
        Verdict::Allow,
        at(2026, 3, 15),
    );
    d.kind = DecisionKind::Reload;
    assert!(matches!(journal.enqueue(d), Err(JournalError::Invalid(_))));
    assert_eq!(journal.append(ledger_entry(A)).await.unwrap().seq, 1);
}

// === tamper detection ===

/// A journal with 5 ledger and 5 decision records, shut down.
async fn populated() -> Fixture {
    let f = fixture();
    let (journal, task) = open(&f, options());
    for i in 0..5 {
        journal.append(ledger_entry([A, B][i % 2])).await.unwrap();
        journal
            .append(decision_entry(
                A,
                "alice",
                "storage:GetObject",
                Verdict::Allow,
                at(2026, 3, 15),
            ))
            .await
            .unwrap();
    }
    journal.shutdown().await.unwrap();
    task.wait().await;
    assert_eq!(verify_ledger(&f.db).unwrap().records, 5);
    assert_eq!(verify_decisions(&f.db).unwrap().records, 5);
    f
}

fn ledger_break(f: &Fixture) -> ChainBreak {
    match verify_ledger(&f.db) {
        Err(VerifyError::Broken(b)) => b,
        other => panic!("expected a chain break, got {other:?}"),
    }
}

fn decisions_break(f: &Fixture) -> ChainBreak {
    match verify_decisions(&f.db) {
        Err(VerifyError::Broken(b)) => b,
        other => panic!("expected a chain break, got {other:?}"),
    }
}

#[tokio::test]
async fn an_updated_column_is_reported_at_its_record() {
    // Every hashed column is covered: change each in turn.
    for (column, value) in [
        ("amount", "'9.99'"),
        ("account_id", "'999999999999'"),
        ("org_id", "'o-zzzzzzzzzz'"),
        ("billing_month", "'2026-04'"),
        ("bytes_out", "1"),
        ("tiered", "1"),
        ("commit_time", "commit_time + 1"),
        ("per_gb_in", "'0.01'"),
    ] {
        let f = populated().await;
        tamper(
            &f.db,
            &format!("UPDATE ledger SET {column} = {value} WHERE seq = 3"),
        );
        assert_eq!(ledger_break(&f), ChainBreak::Altered { seq: 3 }, "{column}");
    }
    for (column, value) in [
        ("decision", "'Deny'"),
        ("org_policies", "'[{\"file\":\"f\",\"id\":\"i\"}]'"),
        ("request_json", "'{}'"),
        ("mfa", "0"),
    ] {
        let f = populated().await;
        tamper(
            &f.db,
            &format!("UPDATE decisions SET {column} = {value} WHERE seq = 2"),
        );
        assert_eq!(
            decisions_break(&f),
            ChainBreak::Altered { seq: 2 },
            "{column}"
        );
    }
}

#[tokio::test]
async fn a_deleted_record_is_reported_as_missing() {
    let f = populated().await;
    tamper(&f.db, "DELETE FROM ledger WHERE seq = 3");
    assert_eq!(
        ledger_break(&f),
        ChainBreak::Missing {
            expected: 3,
            found: 4
        }
    );
    tamper(&f.db, "DELETE FROM decisions WHERE seq = 1");
    assert_eq!(
        decisions_break(&f),
        ChainBreak::Missing {
            expected: 1,
            found: 2
        }
    );
}

#[tokio::test]
async fn a_forged_record_slipped_in_is_reported() {
    let f = populated().await;
    // Renumber 3..=5 to 4..=6 and insert a well-formed forged record 3 that links to 2.
    let conn = f.db.connect().unwrap();
    conn.execute_batch(
        "UPDATE ledger SET seq = seq + 1000 WHERE seq >= 3;
         UPDATE ledger SET seq = seq - 999 WHERE seq >= 1003;",
    )
    .unwrap();
    let cols = "record_id, kind, call_record_id, event_time, commit_time, request_id, \
                account_id, payer_account_id, org_id, user_name, service, action, method, \
                status, bytes_in, bytes_out, quantity, per_request, per_gb_in, per_gb_out, \
                tiered, amount_requests, amount_gb_in, amount_gb_out, amount, billing_month, \
                original_month, client_request_id, price_version";
    let (mut row, prev_hex): (ledger::LedgerRow, String) = conn
        .query_row(
            &format!("SELECT seq, prev_hash, hash, {cols} FROM ledger WHERE seq = 2"),
            params![],
            |r| Ok((ledger::LedgerRow::from_row(r, 3)?, r.get(2)?)),
        )
        .unwrap();
    row.record_id = RecordId::generate().as_str().to_owned();
    row.amount = "0.00".into();
    let prev = chain::parse_hash(&prev_hex).unwrap();
    let hash = chain::link(&prev, &row.canonical());
    let tx = conn.transaction(crate::db::Behavior::Immediate).unwrap();
    row.insert(&tx, 3, &prev, &hash).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        ledger_break(&f),
        ChainBreak::Inserted {
            seq: 4,
            previous: 3
        }
    );
}

#[tokio::test]
async fn two_swapped_records_are_reported() {
    let f = populated().await;
    tamper(
        &f.db,
        "UPDATE ledger SET seq = -2 WHERE seq = 2;
         UPDATE ledger SET seq = 2 WHERE seq = 3;
         UPDATE ledger SET seq = 3 WHERE seq = -2;",
    );
    assert_eq!(
        ledger_break(&f),
        ChainBreak::Inserted {
            seq: 2,
            previous: 1
        }
    );
    tamper(
        &f.db,
        "UPDATE decisions SET seq = -4 WHERE seq = 4;
         UPDATE decisions SET seq = 4 WHERE seq = 5;
         UPDATE decisions SET seq = 5 WHERE seq = -4;",
    );
    assert_eq!(
        decisions_break(&f),
        ChainBreak::Inserted {
            seq: 4,
            previous: 3
        }
    );
}

// === failure and recovery ===

#[tokio::test]
async fn a_full_disk_fails_the_batch_keeps_the_heads_and_recovers() {
    let f = fixture();
    let (journal, _task) = open(
        &f,
        JournalOptions {
            probe_interval: Duration::from_millis(300),
            ..options()
        },
    );
    for _ in 0..3 {
        journal.append(ledger_entry(A)).await.unwrap();
    }
    // The database may not grow any more: the next pages it needs are refused (SQLITE_FULL).
    journal
        .with_writer_connection(|c| {
            let pages: i64 = c
                .query_row("PRAGMA page_count", params![], |r| r.get(0))
                .unwrap();
            c.execute_batch(&format!("PRAGMA max_page_count = {pages}"))
                .unwrap();
        })
        .await;
    let mut failure = None;
    for _ in 0..2000 {
        let before = journal.heads();
        let stats_before = journal.stats();
        journal
            .enqueue(decision_entry(
                A,
                "alice",
                "storage:GetObject",
                Verdict::Allow,
                at(2026, 3, 15),
            ))
            .unwrap();
        match journal.append(ledger_entry(A)).await {
            Ok(_) => continue,
            Err(e) => {
                failure = Some((e, before, stats_before));
                break;
            }
        }
    }
    let (err, before, stats_before) = failure.expect("the store never filled up");
    assert!(matches!(err, JournalError::Unavailable(_)), "{err:?}");
    assert!(!journal.is_healthy());
    assert!(journal.last_error().is_some());
    assert!(journal.stats().failed_batches >= 1);
    // The failed batch (with its decision, if it was in it) rolled back: heads unchanged.
    let after = journal.heads();
    assert_eq!(after.ledger, before.ledger);
    let committed_decisions = journal.stats().decision_records - stats_before.decision_records;
    assert_eq!(
        after.decisions.seq,
        before.decisions.seq + committed_decisions
    );
    assert_eq!(count(&f.db, "ledger") as u64, before.ledger.seq);
    assert_eq!(verify_ledger(&f.db).unwrap().head_hash, before.ledger.hash);

    // Room again: the writer recovers by itself, first through its idle probe...
    journal
        .with_writer_connection(|c| {
            c.execute_batch("PRAGMA max_page_count = 1073741823")
                .unwrap();
        })
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !journal.is_healthy() {
        assert!(std::time::Instant::now() < deadline, "never became healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and the chain continues from the last committed record.
    let receipt = journal.append(ledger_entry(A)).await.unwrap();
    assert_eq!(receipt.seq, before.ledger.seq + 1);
    assert!(journal.is_healthy());
    let v = verify_ledger(&f.db).unwrap();
    assert_eq!(v.head_seq, receipt.seq);
    assert_eq!(v.head_hash, journal.heads().ledger.hash);
    assert_eq!(
        verify_decisions(&f.db).unwrap().head_seq,
        journal.heads().decisions.seq
    );
}

/// Makes every write on the writer's connection fail at once (SQLite `query_only`), or not.
async fn refuse_writes(journal: &Journal, refuse: bool) {
    journal
        .with_writer_connection(move |c| {
            c.execute_batch(&format!("PRAGMA query_only = {}", i64::from(refuse)))
                .unwrap();
        })
        .await;
}

fn a_decision() -> DecisionEntry {
    decision_entry(
        A,
        "alice",
        "storage:GetObject",
        Verdict::Allow,
        at(2026, 3, 15),
    )
}

/// Issue 17 item 1: a ledger record depending on a decision whose batch failed is refused, even
/// though the store takes writes again by then; one depending on a decision in its own batch
/// commits with it.
#[tokio::test]
async fn an_entry_whose_dependency_failed_is_refused_and_one_in_the_same_batch_commits() {
    let f = fixture();
    let (journal, _task) = open(&f, options());
    refuse_writes(&journal, true).await;
    let ack = journal.submit(a_decision()).unwrap();
    let failed = ack.dependency();
    assert!(matches!(ack.await, Err(JournalError::Unavailable(_))));
    assert!(failed.failed());
    refuse_writes(&journal, false).await;

    let err = journal
        .append_after(ledger_entry(A), vec![failed.clone()])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, JournalError::Unavailable(m) if m.contains("depends on")),
        "{err:?}"
    );
    assert_eq!(
        count(&f.db, "ledger"),
        0,
        "the refused record was not written"
    );
    // The store itself is fine: the same record without the dependency commits.
    assert_eq!(journal.append(ledger_entry(A)).await.unwrap().seq, 1);

    // Same batch: park the writer so the decision and the record are taken together.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (parked_tx, parked_rx) = tokio::sync::oneshot::channel::<()>();
    let parked = journal.clone();
    let hook = tokio::spawn(async move {
        parked
            .with_writer_connection(move |_| {
                let _ = parked_tx.send(());
                let _ = release_rx.recv();
            })
            .await
    });
    parked_rx.await.unwrap();
    let batches = journal.stats().batches;
    let ack = journal.submit(a_decision()).unwrap();
    let dependency = ack.dependency();
    let record = {
        let journal = journal.clone();
        tokio::spawn(async move {
            journal
                .append_after(ledger_entry(A), vec![dependency])
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    release_tx.send(()).unwrap();
    hook.await.unwrap();
    let decision = ack.await.unwrap();
    let receipt = record.await.unwrap().unwrap();
    assert_eq!(receipt.seq, 2);
    assert_eq!(decision.committed_at, receipt.committed_at);
    assert_eq!(
        journal.stats().batches,
        batches + 1,
        "one batch, one commit"
    );
    assert_eq!(verify_ledger(&f.db).unwrap().records, 2);
    assert_eq!(verify_decisions(&f.db).unwrap().records, 1);
}

/// Issue 17 item 2: an entry nobody waits for is kept when its batch fails, and committed once
/// the store takes writes again, first by the idle writer and else at shutdown.
#[tokio::test]
async fn an_unawaited_entry_of_a_failed_batch_is_retried_until_durable() {
    let f = fixture();
    let (journal, task) = open(
        &f,
        JournalOptions {
            probe_interval: Duration::from_millis(100),
            linger: Duration::ZERO,
            ..options()
        },
    );
    journal.append(ledger_entry(A)).await.unwrap();
    refuse_writes(&journal, true).await;
    journal.enqueue(transfer_entry(A)).unwrap();
    // An awaited entry behind it fails with it; the transfer is kept, not dropped.
    assert!(matches!(
        journal.append(ledger_entry(B)).await,
        Err(JournalError::Unavailable(_))
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while journal.stats().failed_batches < 2 {
        assert!(std::time::Instant::now() < deadline, "no retry while idle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&f.db, "ledger"), 1);
    refuse_writes(&journal, false).await;
    while count(&f.db, "ledger") < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the kept transfer was never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(journal.is_healthy());
    let kinds: Vec<String> = reader(&f)
        .query_map("SELECT kind FROM ledger ORDER BY seq", params![], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(kinds, ["call", "transfer"], "committed once, not twice");

    // Kept when the store fails again, and committed by the shutdown's last batch.
    refuse_writes(&journal, true).await;
    journal.enqueue(transfer_entry(A)).unwrap();
    while journal.stats().failed_batches < 3 {
        assert!(std::time::Instant::now() < deadline + Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    refuse_writes(&journal, false).await;
    journal.shutdown().await.unwrap();
    task.wait().await;
    assert_eq!(verify_ledger(&f.db).unwrap().records, 3);
}

#[tokio::test]
async fn a_restart_continues_both_chains_from_the_stored_heads() {
    let f = fixture();
    let (journal, task) = open(&f, options());
    for _ in 0..4 {
        journal.append(ledger_entry(A)).await.unwrap();
        journal
            .append(decision_entry(
                A,
                "alice",
                "storage:GetObject",
                Verdict::Allow,
                at(2026, 3, 15),
            ))
            .await
            .unwrap();
    }
    let heads = journal.heads();
    journal.shutdown().await.unwrap();
    task.wait().await;

    let (journal, _task) = open(&f, options());
    assert_eq!(journal.heads(), heads);
    assert_eq!(journal.append(ledger_entry(B)).await.unwrap().seq, 5);
    let d = decision_entry(
        B,
        "bob",
        "storage:GetObject",
        Verdict::Deny,
        at(2026, 3, 15),
    );
    assert_eq!(journal.append(d).await.unwrap().seq, 5);
    assert_eq!(verify_ledger(&f.db).unwrap().records, 5);
    assert_eq!(verify_decisions(&f.db).unwrap().records, 5);
}

#[test]
fn opening_an_unmigrated_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("empty.db");
    std::fs::File::create(&db).unwrap();
    let clock = Arc::new(ManualClock::new(at(2026, 3, 15)));
    let db = Database::Sqlite(Arc::new(crate::db::SqliteDatabase::new(db)));
    let result = Journal::open(&db, clock, Arc::new(Metrics::new()));
    assert!(matches!(result, Err(JournalError::Unavailable(m)) if m.contains("schema")));
}

// === booking and bills ===

#[tokio::test]
async fn a_record_of_a_final_month_is_booked_on_the_next_open_month() {
    let f = fixture();
    let (journal, _task) = open(&f, options());
    let feb = BillingMonth::parse("2026-02").unwrap();
    let mar = BillingMonth::parse("2026-03").unwrap();
    let payer = acct(A);
    journal
        .append(call_at(A, A, true, at(2026, 2, 10)))
        .await
        .unwrap();
    journal
        .append(call_at(B, A, true, at(2026, 2, 11)))
        .await
        .unwrap();
    journal
        .append(call_at(B, A, true, at(2026, 2, 12)))
        .await
        .unwrap();

    let conn = reader(&f);
    let usage = usage_for_bill(&conn, &payer, feb).unwrap();
    assert_eq!(usage.usage.len(), 2);
    assert_eq!(usage.through_seq, 3);

    // A record booked after the bill was computed: sealing it is refused.
    journal
        .append(call_at(A, A, true, at(2026, 2, 20)))
        .await
        .unwrap();
    let moved = journal
        .mark_final(&payer, feb, "hash-1", usage.through_seq)
        .await
        .unwrap_err();
    assert!(
        matches!(moved, FinalizeError::LedgerMoved { found_seq: 4, .. }),
        "{moved:?}"
    );
    let usage = usage_for_bill(&conn, &payer, feb).unwrap();
    let sealed = journal
        .mark_final(&payer, feb, "hash-2", usage.through_seq)
        .await
        .unwrap();
    assert_eq!(sealed.content_hash, "hash-2");
    assert_eq!(final_month(&conn, &payer, feb).unwrap(), Some(sealed));
    assert!(matches!(
        journal.mark_final(&payer, feb, "hash-3", 99).await,
        Err(FinalizeError::AlreadyFinal { .. })
    ));

    // Late February usage of B (pooled) goes to March, naming February.
    let late = journal
        .append(call_at(B, A, true, at(2026, 2, 27)))
        .await
        .unwrap();
    let (billing, original): (String, Option<String>) = conn
        .query_row(
            "SELECT billing_month, original_month FROM ledger WHERE seq = ?1",
            params![late.seq as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (billing.as_str(), original.as_deref()),
        ("2026-03", Some("2026-02"))
    );
    // Another payer's February is not final: its records stay in February.
    let other = journal
        .append(call_at(C, C, false, at(2026, 2, 27)))
        .await
        .unwrap();
    let billing: String = conn
        .query_row(
            "SELECT billing_month FROM ledger WHERE seq = ?1",
            params![other.seq as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(billing, "2026-02");

    let march = usage_for_bill(&conn, &payer, mar).unwrap();
    assert!(march.usage.is_empty());
    assert_eq!(march.adjustments.len(), 1);
    let adj = &march.adjustments[0];
    assert_eq!(adj.original_month, feb);
    assert_eq!(adj.usage.account_id, acct(B));
    assert!(adj.usage.in_org_tier_pool);
    assert_eq!(adj.usage.quantity, 1);
    // These calls are priced flat: only tiered records count toward tiers (issue 17), so no
    // tier base.
    assert!(!adj.usage.tiered);
    assert_eq!(adj.tier_base_quantity, 0);
    // February's bill did not change.
    assert_eq!(
        usage_for_bill(&conn, &payer, feb).unwrap().usage,
        usage.usage
    );

    // With March final too, the next late February record goes to April.
    let usage = usage_for_bill(&conn, &payer, mar).unwrap();
    journal
        .mark_final(&payer, mar, "hash-m", usage.through_seq)
        .await
        .unwrap();
    let later = journal
        .append(call_at(A, A, true, at(2026, 2, 28)))
        .await
        .unwrap();
    let (billing, original): (String, Option<String>) = conn
        .query_row(
            "SELECT billing_month, original_month FROM ledger WHERE seq = ?1",
            params![later.seq as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (billing.as_str(), original.as_deref()),
        ("2026-04", Some("2026-02"))
    );
    let april = usage_for_bill(&conn, &payer, BillingMonth::parse("2026-04").unwrap()).unwrap();
    // Flat calls: no tier base (only tiered records count toward tiers, issue 17; the base of
    // tiered late records is covered by `billing::m6_*` and the bill tests).
    assert_eq!(april.adjustments[0].tier_base_quantity, 0);

    // Finals survive a restart.
    drop(journal);
    let (journal, _task2) = open(&f, options());
    let again = journal
        .append(call_at(B, A, true, at(2026, 3, 1)))
        .await
        .unwrap();
    let billing: String = conn
        .query_row(
            "SELECT billing_month FROM ledger WHERE seq = ?1",
            params![again.seq as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(billing, "2026-04");
    verify_ledger(&f.db).unwrap();
}

#[tokio::test]
async fn usage_for_bill_sums_exact_amounts_per_account_pool_and_action() {
    let f = fixture();
    let (journal, _task) = open(&f, options());
    let payer = acct(A);
    let mar = BillingMonth::parse("2026-03").unwrap();
    for _ in 0..3 {
        journal
            .append(call_at(B, A, true, at(2026, 3, 2)))
            .await
            .unwrap();
    }
    // B before joining: its own payer, not pooled; then a non-pooled record billed to A
    // (e.g. the day it left) stays out of the pool.
    journal
        .append(call_at(B, B, false, at(2026, 3, 1)))
        .await
        .unwrap();
    journal
        .append(call_at(B, A, false, at(2026, 3, 20)))
        .await
        .unwrap();
    let mut big = call_at(A, A, true, at(2026, 3, 3));
    big.bytes_out = 3 << 30;
    big.charge = Charge::at_price(&price(), 1, 100, 3 << 30).unwrap();
    journal.append(big).await.unwrap();
    // A transfer supplement: bytes only, quantity 0.
    let transfer = TransferEntry {
        record_id: RecordId::generate(),
        call_record_id: RecordId::generate(),
        event_time: at(2026, 3, 3),
        call: call(A, A, true),
        bytes_in: 0,
        bytes_out: 1 << 30,
        charge: Charge::at_price(&price(), 0, 0, 1 << 30).unwrap(),
    };
    journal.append(transfer).await.unwrap();

    let conn = reader(&f);
    let usage = usage_for_bill(&conn, &payer, mar).unwrap();
    assert!(usage.adjustments.is_empty());
    let find = |account: &str, pooled: bool| {
        usage
            .usage
            .iter()
            .find(|u| u.account_id == acct(account) && u.in_org_tier_pool == pooled)
            .unwrap_or_else(|| panic!("no usage for {account} pooled={pooled}"))
    };
    let b = find(B, true);
    assert_eq!((b.quantity, b.bytes_in, b.bytes_out), (3, 300, 0));
    assert_eq!(b.amounts.requests.to_string(), "0.0012");
    assert_eq!(b.billed_to, payer);
    assert_eq!(find(B, false).quantity, 1);
    let a = find(A, true);
    assert_eq!((a.quantity, a.bytes_out), (1, 4 << 30));
    assert_eq!(a.amounts.gb_out.to_string(), "0.36");
    assert_eq!(usage.usage.len(), 3);
    // B's own bill has its pre-join call.
    let own = usage_for_bill(&conn, &acct(B), mar).unwrap();
    assert_eq!(own.usage.len(), 1);

    // Names come from the accounts table.
    tamper(
        &f.db,
        &format!(
            "INSERT INTO accounts (id, name, email, created_at) VALUES ('{A}', 'acme', 'a@x', 0)"
        ),
    );
    let names = account_names(&conn, [&acct(A), &acct(B)]).unwrap();
    assert_eq!(names.get(&acct(A)).map(String::as_str), Some("acme"));
    assert!(!names.contains_key(&acct(B)));
}

#[tokio::test]
async fn month_to_date_spend_is_the_exact_running_total_of_the_month() {
    let f = fixture();
    let (journal, _task) = open(&f, options());
    let conn = reader(&f);
    let now = at(2026, 3, 20);
    assert_eq!(
        month_to_date_spend(&conn, &acct(A), now).unwrap(),
        Money::ZERO
    );
    // Two calls in March at 0.0004 each, one with a GB out at 0.09; one call in February.
    journal
        .append(call_at(A, A, false, at(2026, 3, 1)))
        .await
        .unwrap();
    let mut with_bytes = call_at(A, A, false, at(2026, 3, 2));
    with_bytes.bytes_out = 1 << 30;
    with_bytes.charge = Charge::at_price(&price(), 1, 100, 1 << 30).unwrap();
    journal.append(with_bytes).await.unwrap();
    journal
        .append(call_at(A, A, false, at(2026, 2, 2)))
        .await
        .unwrap();
    journal
        .append(call_at(B, B, false, at(2026, 3, 2)))
        .await
        .unwrap();
    assert_eq!(
        month_to_date_spend(&conn, &acct(A), now).unwrap(),
        Money::parse("0.0908").unwrap()
    );
    assert_eq!(
        month_to_date_spend(&conn, &acct(A), at(2026, 2, 28)).unwrap(),
        Money::parse("0.0004").unwrap()
    );
    assert_eq!(
        month_to_date_spend(&conn, &acct(B), now).unwrap(),
        Money::parse("0.0004").unwrap()
    );
    assert_eq!(
        month_to_date_spend(&conn, &acct(C), now).unwrap(),
        Money::ZERO
    );
    // Concurrent appends in one batch add up exactly.
    let mut waits = Vec::new();
    for _ in 0..100 {
        let j = journal.clone();
        waits.push(tokio::spawn(async move {
            j.append(call_at(C, C, false, at(2026, 3, 5)))
                .await
                .unwrap()
        }));
    }
    for w in waits {
        w.await.unwrap();
    }
    assert_eq!(
        month_to_date_spend(&conn, &acct(C), now).unwrap(),
        Money::parse("0.04").unwrap()
    );
}

// === decision queries ===

#[tokio::test]
async fn decisions_are_filtered_paged_newest_first_and_limited_to_visible_accounts() {
    let f = fixture();
    let (journal, _task) = open(&f, options());
    let mut expected_a = Vec::new();
    for i in 0..7u32 {
        let verdict = if i % 3 == 0 {
            Verdict::Deny
        } else {
            Verdict::Allow
        };
        let user = if i % 2 == 0 { "Alice" } else { "bob" };
        let action = if i < 4 {
            "storage:GetObject"
        } else {
            "storage:PutObject"
        };
        let d = decision_entry(A, user, action, verdict, at(2026, 3, 1 + i));
        expected_a.push(d.record_id.as_str().to_owned());
        journal.append(d).await.unwrap();
        journal
            .append(decision_entry(B, user, action, verdict, at(2026, 3, 1 + i)))
            .await
            .unwrap();
    }
    journal
        .append(ReloadEntry {
            record_id: RecordId::generate(),
            time: at(2026, 3, 9),
            trigger: ReloadTrigger::Api,
            active_version: "v1".into(),
            failure: Some(ReloadFailure {
                file: Some("accounts/111111111111/x.cedar".into()),
                line: Some(3),
                column: Some(7),
                message: "unexpected token".into(),
            }),
            requested_by: Some((acct(A), UserName::parse("alice").unwrap())),
            request_id: None,
        })
        .await
        .unwrap();
    expected_a.reverse();
    let conn = reader(&f);
    let ids =
        |page: &Page| -> Vec<String> { page.records.iter().map(|r| r.record_id.clone()).collect() };
    let filter = |accounts: &[&str]| DecisionFilter {
        accounts: accounts.iter().map(|a| acct(a)).collect(),
        ..DecisionFilter::default()
    };

    // Visibility: A's reviewers see A's decisions only, newest first; no reloads.
    let page = query_decisions(&conn, &filter(&[A])).unwrap();
    assert_eq!(ids(&page), expected_a);
    assert!(page.next_cursor.is_none());
    assert_eq!(
        query_decisions(&conn, &filter(&[A, B]))
            .unwrap()
            .records
            .len(),
        14
    );
    assert!(
        query_decisions(&conn, &filter(&[]))
            .unwrap()
            .records
            .is_empty()
    );
    assert!(
        query_decisions(&conn, &filter(&[C]))
            .unwrap()
            .records
            .is_empty()
    );

    // Paging with a cursor: 3 + 3 + 1, no overlap, same order.
    let mut all = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = query_decisions(
            &conn,
            &DecisionFilter {
                limit: Some(3),
                cursor: cursor.clone(),
                ..filter(&[A])
            },
        )
        .unwrap();
        pages += 1;
        all.extend(ids(&page));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!((pages, all), (3, expected_a.clone()));

    // Filters.
    let with = |f: DecisionFilter| query_decisions(&conn, &f).unwrap().records;
    let users = with(DecisionFilter {
        user: Some(UserName::parse("ALICE").unwrap()),
        ..filter(&[A])
    });
    assert_eq!(users.len(), 4);
    assert!(
        users
            .iter()
            .all(|r| r.user_name.as_deref() == Some("Alice"))
    );
    let denies = with(DecisionFilter {
        decision: Some(Verdict::Deny),
        ..filter(&[A])
    });
    assert_eq!(denies.len(), 3);
    assert!(
        denies
            .iter()
            .all(|r| r.decision == Some(Verdict::Deny) && r.denied_by == Some(Tier::Organization))
    );
    let puts = with(DecisionFilter {
        action: Some("storage:PutObject".into()),
        ..filter(&[A])
    });
    assert_eq!(puts.len(), 3);
    let window = with(DecisionFilter {
        since: Some(at(2026, 3, 2)),
        until: Some(at(2026, 3, 4)),
        ..filter(&[A])
    });
    assert_eq!(
        window.iter().map(|r| r.time).collect::<Vec<_>>(),
        vec![at(2026, 3, 3), at(2026, 3, 2)]
    );

    // Bad limits and cursors are refused.
    for limit in [0, 1001] {
        assert_eq!(
            query_decisions(
                &conn,
                &DecisionFilter {
                    limit: Some(limit),
                    ..filter(&[A])
                }
            ),
            Err(QueryError::InvalidLimit { limit })
        );
    }
    assert_eq!(
        query_decisions(
            &conn,
            &DecisionFilter {
                limit: Some(1000),
                ..filter(&[A])
            }
        )
        .unwrap()
        .records
        .len(),
        7
    );
    for bad in [
        "nonsense",
        "ZDEuMA",
        "",
        "d1.0",
        "d1.01",
        "d1.-1",
        "d1.9999999999999999999",
    ] {
        assert_eq!(
            query_decisions(
                &conn,
                &DecisionFilter {
                    cursor: Some(bad.into()),
                    ..filter(&[A])
                }
            ),
            Err(QueryError::InvalidCursor),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn a_decision_is_found_by_request_id_with_everything_needed_to_replay_it() {
    let f = fixture();
    let (journal, _task) = open(&f, options());
    let d = decision_entry(
        A,
        "alice",
        "storage:DeleteObject",
        Verdict::Deny,
        at(2026, 3, 4),
    );
    let request_id = d.request_id.clone();
    let original = d.request.clone();
    journal.append(d).await.unwrap();
    let conn = reader(&f);
    let found = decision_by_request_id(&conn, request_id.as_str()).unwrap();
    assert_eq!(found.len(), 1);
    let r = &found[0];
    assert_eq!(r.kind, DecisionKind::Service);
    assert_eq!(r.account_id, Some(acct(A)));
    assert_eq!(r.action, "storage:DeleteObject");
    assert_eq!(r.resource, "Tollgate::Service::\"111111111111/storage\"");
    assert_eq!(r.source_ip.as_deref(), Some("10.1.2.3"));
    assert_eq!(r.mfa, Some(true));
    assert_eq!(r.decision, Some(Verdict::Deny));
    assert_eq!(r.denied_by, Some(Tier::Organization));
    assert_eq!(r.account_policies[0].id, "owner-all");
    assert_eq!(r.org_policies[0].id, "no-deletes");
    assert!(r.org_tier_applied());
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].tier, Some(Tier::Organization));
    assert_eq!(r.policy_version, "v1");
    assert_eq!(r.time, at(2026, 3, 4));
    assert_eq!(r.request(), Some(original));
    assert!(decision_by_request_id(&conn, "nope").unwrap().is_empty());

    // A decision whose organization tier did not apply says why.
    let mut d = decision_entry(
        B,
        "bob",
        "storage:GetObject",
        Verdict::Allow,
        at(2026, 3, 4),
    );
    d.decision.organization = OrgTier::NotApplied {
        reason: NotAppliedReason::ConsolidatedBillingOnly,
    };
    d.decision.denied_by = None;
    let rid = d.request_id.clone();
    journal.append(d).await.unwrap();
    let r = &decision_by_request_id(&conn, rid.as_str()).unwrap()[0];
    assert!(!r.org_applied);
    assert_eq!(r.org_reason.as_deref(), Some("consolidated_billing_only"));
    assert!(r.org_policies.is_empty());
    assert!(r.errors.iter().all(|e| e.tier == Some(Tier::Account)));
}

/// F2 (issue 16 item 14): an untrusted client's own request id is kept in both logs, covered by
/// their hashes; records without one hash as they did before the column existed.
#[tokio::test]
async fn f2_a_client_request_id_is_stored_and_covered_by_both_chains() {
    let f = fixture();
    let (journal, task) = open(&f, options());
    let client_id = RequestId::parse("client-chosen.1").unwrap();
    let mut entry = ledger_entry(A);
    entry.call.client_request_id = Some(client_id.clone());
    journal.append(entry).await.unwrap();
    let mut decision = decision_entry(
        A,
        "alice",
        "storage:GetObject",
        Verdict::Allow,
        at(2026, 3, 15),
    );
    decision.client_request_id = Some(client_id);
    journal.append(decision).await.unwrap();
    journal.shutdown().await.unwrap();
    task.wait().await;
    assert_eq!(verify_ledger(&f.db).unwrap().records, 1);
    assert_eq!(verify_decisions(&f.db).unwrap().records, 1);
    let conn = f.db.connect().unwrap();
    for table in ["ledger", "decisions"] {
        let stored: Option<String> = conn
            .query_row(
                &format!("SELECT client_request_id FROM {table} WHERE seq = 1"),
                params![],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored.as_deref(), Some("client-chosen.1"), "{table}");
    }
    tamper(
        &f.db,
        "UPDATE ledger SET client_request_id = 'someone-else' WHERE seq = 1;
         UPDATE decisions SET client_request_id = NULL WHERE seq = 1;",
    );
    assert_eq!(ledger_break(&f), ChainBreak::Altered { seq: 1 });
    assert_eq!(decisions_break(&f), ChainBreak::Altered { seq: 1 });
}
