//! The writer thread: the only code that writes the journal tables.
//!
//! It owns one connection and the in-memory chain heads and FINAL months. Each turn it takes
//! what is queued (up to `max_batch`), writes it in one transaction that holds the journal lock
//! from its first statement ([`Behavior::Journal`]), commits, and only then advances the heads
//! and acknowledges the waiters. A failed batch rolls back and leaves the heads as they were, so
//! the next batch continues the chain from the last committed record. It runs on a dedicated OS
//! thread, never on a reactor thread.
//!
//! On a shared database (PostgreSQL, several instances) other writers append too: each batch
//! then reads both chain heads and the FINAL months again after taking the lock, so the chains
//! stay one linear sequence across the fleet (a global `seq`, each record linked to the one
//! before it, whichever instance wrote it). A broken connection is replaced before the next
//! batch or probe.
//!
//! Two rules about which entries a batch holds (issue 17; module docs of `journal`):
//! - an entry whose dependency failed is refused while the batch is built ([`write_batch`]);
//! - entries nobody waits for are kept when their batch fails ([`WriterState::retry`]) and go
//!   first into the next batch, or into the idle probe's attempt, until they commit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::entry::Pending;
use super::read::FinalMonth;
use super::{
    ChainPosition, Dependency, FinalizeError, JournalError, JournalHeads, JournalOptions, Receipt,
    Shared, decisions, ledger, marks,
};
use crate::billing::{BillingMonth, Money};
use crate::chain;
use crate::clock::SharedClock;
use crate::db::{Behavior, Conn, Database, DbError, OptionalExtension, Tx, params};
use crate::ids::AccountId;
use crate::store::sql::to_ms;

/// The schema version that created the journal tables.
const JOURNAL_SCHEMA_VERSION: i64 = 3;

/// Why an entry was refused because an entry it depends on was not committed.
const DEPENDENCY_FAILED: &str = "an entry this one depends on (the call's decision record) could not be committed, so this one is not written either; retry the call";

pub(super) enum Command {
    Write(Write),
    MarkFinal(MarkFinal),
    Shutdown(oneshot::Sender<Result<(), JournalError>>),
    #[cfg(test)]
    Hook(Hook),
}

#[cfg(test)]
pub(super) type Hook = Box<dyn FnOnce(&Conn) + Send>;

pub(super) struct Write {
    pub pending: Pending,
    /// `None`: nobody waits for this entry; it is retried until durable.
    pub ack: Option<oneshot::Sender<Result<Receipt, JournalError>>>,
    /// Settled with this entry's fate, for entries that depend on it.
    pub tracked: Option<Dependency>,
    /// Entries that must have committed (earlier or in this batch) for this one to commit.
    pub after: Vec<Dependency>,
    pub submitted: Instant,
}

pub(super) struct MarkFinal {
    pub payer: AccountId,
    pub month: BillingMonth,
    pub content_hash: String,
    pub through_seq: u64,
    pub ack: oneshot::Sender<Result<FinalMonth, FinalizeError>>,
}

pub(super) struct WriterState {
    db: Database,
    conn: Conn,
    /// SQLite: runs WAL checkpoints off the commit path; stops with the writer.
    _checkpointer: Option<super::checkpoint::Checkpointer>,
    clock: SharedClock,
    options: JournalOptions,
    ledger: ChainPosition,
    decisions: ChainPosition,
    /// `(payer, month)` of every FINAL bill; small, loaded once, changed only by this thread.
    finals: HashSet<(String, BillingMonth)>,
    /// Entries nobody waits for whose batch failed, oldest first: they lead the next batch
    /// (or the idle probe's attempt) until they are durable (issue 17 item 2).
    retry: Vec<Write>,
}

/// What a committed batch changes.
struct Committed {
    ledger: ChainPosition,
    decisions: ChainPosition,
    /// Per write, its position in its chain; `None` when it was refused because an entry it
    /// depends on failed.
    seqs: Vec<Option<u64>>,
    finalized: Option<Result<FinalMonth, FinalizeError>>,
    ledger_records: u64,
    decision_records: u64,
    /// `(account, month, total)` written to `ledger_spend`.
    spend: Vec<(String, String, Money)>,
    /// Tiered quantities the batch added to their pools (the spend estimate, `journal::spend`).
    pooled: super::spend::PoolBatch,
}

// === impl WriterState ===

impl WriterState {
    pub fn open(
        db: &Database,
        clock: SharedClock,
        options: JournalOptions,
    ) -> Result<Self, JournalError> {
        let unavailable = |e: &dyn std::fmt::Display| {
            JournalError::Unavailable(format!("cannot open the journal at {}: {e}", db.describe()))
        };
        let conn = db.connect().map_err(|e| unavailable(&e))?;
        if let Some(sqlite) = conn.as_sqlite() {
            let version: i64 = sqlite
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(|e| unavailable(&e))?;
            if version < JOURNAL_SCHEMA_VERSION {
                return Err(JournalError::Unavailable(format!(
                    "the database at {} has schema version {version}; open the store first so it migrates to {JOURNAL_SCHEMA_VERSION}",
                    db.describe()
                )));
            }
        }
        let ledger = ledger::head(&conn)?;
        refuse_truncated_ledger(&conn, ledger)?;
        adopt_unmarked_seals(&conn, to_ms(clock.now()))?;
        let decisions = decisions::head(&conn)?;
        let finals = load_finals(&conn)?;
        let checkpointer = super::checkpoint::Checkpointer::start(db, &conn);
        Ok(Self {
            db: db.clone(),
            _checkpointer: checkpointer,
            conn,
            clock,
            options,
            ledger,
            decisions,
            finals,
            retry: Vec::new(),
        })
    }

    pub fn heads(&self) -> JournalHeads {
        JournalHeads {
            ledger: self.ledger,
            decisions: self.decisions,
        }
    }

    /// Writes `batch` (and a trailing `mark_final`) in one transaction and acknowledges.
    fn commit(&mut self, mut batch: Vec<Write>, final_cmd: Option<MarkFinal>, shared: &Shared) {
        let commit_time = self.clock.now();
        let heads = self.heads();
        let result = self.reconnect_if_broken().and_then(|()| {
            write_batch(
                &self.conn,
                self.db.is_shared(),
                &mut self.finals,
                heads,
                &mut batch,
                final_cmd.as_ref(),
                commit_time,
                &shared.spend,
            )
        });
        match result {
            Ok(done) => {
                self.ledger = done.ledger;
                self.decisions = done.decisions;
                if let Some(Ok(f)) = &done.finalized {
                    self.finals.insert((f.payer.as_str().to_owned(), f.month));
                }
                *shared.heads.lock() = self.heads();
                // Before any ack: a request that follows an acknowledged call sees its spend.
                shared.spend.set(done.spend);
                shared.spend.commit_pooled(done.pooled);
                if !shared.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!("journal writes succeed again");
                }
                *shared.last_error.lock() = None;
                shared.batches.fetch_add(1, Ordering::Relaxed);
                shared
                    .ledger_records
                    .fetch_add(done.ledger_records, Ordering::Relaxed);
                shared
                    .decision_records
                    .fetch_add(done.decision_records, Ordering::Relaxed);
                shared.metrics.ledger_records.inc_by(done.ledger_records);
                shared
                    .metrics
                    .decision_records
                    .inc_by(done.decision_records);
                for (w, seq) in batch.into_iter().zip(done.seqs) {
                    let Some(seq) = seq else {
                        // Refused: an entry it depends on failed (already settled as failed).
                        if let Some(ack) = w.ack {
                            let _ = ack
                                .send(Err(JournalError::Unavailable(DEPENDENCY_FAILED.to_owned())));
                        }
                        continue;
                    };
                    if matches!(w.pending, Pending::Ledger(_)) {
                        shared
                            .metrics
                            .ledger_write_duration
                            .observe(w.submitted.elapsed().as_secs_f64());
                    }
                    if let Some(tracked) = &w.tracked {
                        tracked.settle(true);
                    }
                    if let Some(ack) = w.ack {
                        let _ = ack.send(Ok(Receipt {
                            seq,
                            committed_at: commit_time,
                        }));
                    }
                }
                if let (Some(cmd), Some(outcome)) = (final_cmd, done.finalized) {
                    let _ = cmd.ack.send(outcome);
                }
            }
            Err(reason) => {
                let kept = batch.iter().filter(|w| w.ack.is_none()).count();
                let was_healthy = shared.healthy.swap(false, Ordering::AcqRel);
                if !was_healthy && kept == batch.len() && final_cmd.is_none() {
                    // Only kept entries during an outage already reported (the idle retry, once
                    // a second): say it goes on without an error line per attempt.
                    tracing::warn!(kept, error = %reason, "the journal store still refuses writes; kept entries wait");
                } else {
                    tracing::error!(
                        records = batch.len(),
                        kept_for_retry = kept,
                        error = %reason,
                        "journal batch could not be committed; entries awaited are refused, the others are kept and retried"
                    );
                }
                *shared.last_error.lock() = Some(reason.clone());
                shared.failed_batches.fetch_add(1, Ordering::Relaxed);
                for w in batch {
                    if let Some(tracked) = &w.tracked {
                        tracked.settle(false);
                    }
                    match w.ack {
                        Some(ack) => {
                            let _ = ack.send(Err(JournalError::Unavailable(reason.clone())));
                        }
                        // Nobody is told it failed, so it must not be lost: keep it, in order.
                        None => self.retry.push(w),
                    }
                }
                if let Some(cmd) = final_cmd {
                    let _ = cmd
                        .ack
                        .send(Err(JournalError::Unavailable(reason.clone()).into()));
                }
            }
        }
    }

    /// Replaces a connection the server closed (PostgreSQL restarted, network cut).
    fn reconnect_if_broken(&mut self) -> Result<(), String> {
        if self.conn.is_broken() {
            // PostgreSQL only: a SQLite connection does not break, so the checkpointer's
            // setting on it stays.
            self.conn = self.db.connect().map_err(|e| e.to_string())?;
            tracing::info!("journal writer reconnected to {}", self.db.describe());
        }
        Ok(())
    }

    /// While unhealthy and idle: is the store writable again?
    fn probe(&mut self, shared: &Shared) {
        let result = self.reconnect_if_broken().and_then(|()| {
            self.conn
                .execute(
                    "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'probe'",
                    params![],
                )
                .map_err(|e| e.to_string())
        });
        match result {
            Ok(_) => {
                tracing::info!("journal store is writable again");
                shared.healthy.store(true, Ordering::Release);
                *shared.last_error.lock() = None;
            }
            Err(reason) => *shared.last_error.lock() = Some(reason),
        }
    }
}

/// The writer loop: runs until shutdown or until every handle is dropped.
pub(super) fn run(mut state: WriterState, rx: Receiver<Command>, shared: &Shared) {
    loop {
        let first = if shared.healthy.load(Ordering::Acquire) && state.retry.is_empty() {
            match rx.recv() {
                Ok(c) => c,
                Err(_) => break,
            }
        } else {
            match rx.recv_timeout(state.options.probe_interval) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) if state.retry.is_empty() => {
                    state.probe(shared);
                    continue;
                }
                // Idle with entries kept from a failed batch: committing them is the probe.
                Err(RecvTimeoutError::Timeout) => {
                    let retry = std::mem::take(&mut state.retry);
                    state.commit(retry, None, shared);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        };
        // Collect writes until the queue is empty, the batch is full, or a command that must
        // come after them (so FIFO order holds for every kind of command). Entries kept from a
        // failed batch go first: they were queued before anything still in the channel.
        let mut batch = std::mem::take(&mut state.retry);
        let mut tail = None;
        match first {
            Command::Write(w) => batch.push(w),
            other => tail = Some(other),
        }
        let max = state.options.max_batch.max(1);
        collect_queued(&rx, &mut batch, &mut tail, max);
        if tail.is_none() && !batch.is_empty() && batch.iter().all(|w| w.ack.is_none()) {
            linger(&rx, &mut batch, &mut tail, max, state.options.linger);
        }
        let (final_cmd, after) = match tail {
            Some(Command::MarkFinal(m)) => (Some(m), None),
            other => (None, other),
        };
        if !batch.is_empty() || final_cmd.is_some() {
            state.commit(batch, final_cmd, shared);
        }
        match after {
            Some(Command::Shutdown(ack)) => {
                let result = match shared.last_error.lock().clone() {
                    None => Ok(()),
                    Some(reason) => Err(JournalError::Unavailable(reason)),
                };
                let _ = ack.send(result);
                break;
            }
            #[cfg(test)]
            Some(Command::Hook(f)) => f(&state.conn),
            _ => {}
        }
    }
    // Every handle is gone (no shutdown command): one last attempt at the kept entries.
    if !state.retry.is_empty() && !shared.closed.load(Ordering::Acquire) {
        let retry = std::mem::take(&mut state.retry);
        state.commit(retry, None, shared);
    }
    if !state.retry.is_empty() {
        tracing::error!(
            records = state.retry.len(),
            error = shared.last_error.lock().as_deref().unwrap_or("unknown"),
            "the journal stopped while the store refused writes: entries nobody waited for (transfer records) are lost"
        );
    }
    // Anything still queued was sent after shutdown began; dropping it fails its waiters.
    shared.closed.store(true, Ordering::Release);
}

/// Adds whatever is queued to `batch`, up to `max` writes or a command that must come after
/// them (so FIFO order holds for every kind of command).
fn collect_queued(
    rx: &Receiver<Command>,
    batch: &mut Vec<Write>,
    tail: &mut Option<Command>,
    max: usize,
) {
    while tail.is_none() && batch.len() < max {
        match rx.try_recv() {
            Ok(Command::Write(w)) => batch.push(w),
            Ok(other) => *tail = Some(other),
            Err(_) => break,
        }
    }
}

/// Waits up to `linger` for a write that somebody awaits to join a batch nobody awaits (module
/// docs of `journal`), then takes whatever else is queued.
fn linger(
    rx: &Receiver<Command>,
    batch: &mut Vec<Write>,
    tail: &mut Option<Command>,
    max: usize,
    linger: std::time::Duration,
) {
    let deadline = Instant::now() + linger;
    while tail.is_none() && batch.len() < max && batch.iter().all(|w| w.ack.is_none()) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match rx.recv_timeout(left) {
            Ok(Command::Write(w)) => batch.push(w),
            Ok(other) => *tail = Some(other),
            Err(_) => return,
        }
    }
    collect_queued(rx, batch, tail, max);
}

/// Writes one batch; `Err` carries the reason (the transaction rolled back on drop). On a
/// shared database the heads and `finals` are read again under the lock (module docs).
#[expect(
    clippy::too_many_arguments,
    reason = "the writer's state, split so the batch can borrow it field by field"
)]
fn write_batch(
    conn: &Conn,
    shared_db: bool,
    finals: &mut HashSet<(String, BillingMonth)>,
    heads: JournalHeads,
    batch: &mut [Write],
    final_cmd: Option<&MarkFinal>,
    commit_time: DateTime<Utc>,
    spend_book: &super::SpendBook,
) -> Result<Committed, String> {
    let sql = |e: DbError| e.to_string();
    let tx = conn.transaction(Behavior::Journal).map_err(sql)?;
    let heads = if shared_db {
        *finals = load_finals(&tx).map_err(|e| e.to_string())?;
        JournalHeads {
            ledger: ledger::head(&tx).map_err(|e| e.to_string())?,
            decisions: decisions::head(&tx).map_err(|e| e.to_string())?,
        }
    } else {
        heads
    };
    let mut ledger_head = heads.ledger;
    let mut decisions_head = heads.decisions;
    let mut seqs = Vec::with_capacity(batch.len());
    let mut spend: HashMap<(String, String), (Money, i64)> = HashMap::new();
    let (mut ledger_records, mut decision_records) = (0u64, 0u64);
    let mut pooled = super::spend::PoolBatch::default();
    for w in batch.iter_mut() {
        // Issue 17 item 1: an entry whose dependency failed (in an earlier batch, or refused
        // earlier in this one) is not written. A pending dependency is in this batch (FIFO).
        if w.after.iter().any(Dependency::failed) {
            if let Some(tracked) = &w.tracked {
                tracked.settle(false);
            }
            seqs.push(None);
            continue;
        }
        match &mut w.pending {
            Pending::Ledger(p) => {
                let (billing, original) = book(finals, &p.row.payer_account_id, p.event_month);
                p.row.billing_month = billing.to_string();
                p.row.original_month = original.map(|m| m.to_string());
                p.row.commit_time = to_ms(commit_time);
                // Before the insert, so a first load of the pool does not count this record.
                let estimate = match &p.tiers {
                    Some(tiers) => tiered_estimate(&tx, spend_book, &mut pooled, &p.row, tiers)?,
                    None => Money::ZERO,
                };
                let seq = ledger_head.seq + 1;
                let hash = chain::link(&ledger_head.hash, &p.row.canonical());
                p.row
                    .insert(&tx, seq, &ledger_head.hash, &hash)
                    .map_err(sql)?;
                ledger_head = ChainPosition { seq, hash };
                let slot = spend
                    .entry((p.row.account_id.clone(), p.row.billing_month.clone()))
                    .or_insert((Money::ZERO, 0));
                slot.0 = slot
                    .0
                    .checked_add(p.amount)
                    .and_then(|a| a.checked_add(estimate))
                    .map_err(|e| e.to_string())?;
                slot.1 += 1;
                seqs.push(Some(seq));
                ledger_records += 1;
            }
            Pending::Decision(row) => {
                let seq = decisions_head.seq + 1;
                let hash = chain::link(&decisions_head.hash, &row.canonical());
                row.insert(&tx, seq, &decisions_head.hash, &hash)
                    .map_err(sql)?;
                decisions_head = ChainPosition { seq, hash };
                seqs.push(Some(seq));
                decision_records += 1;
            }
        }
    }
    let mut totals = Vec::with_capacity(spend.len());
    for ((account, month), (amount, records)) in spend {
        let total = add_spend(&tx, &account, &month, amount, records)?;
        totals.push((account, month, total));
    }
    let finalized = match final_cmd {
        Some(cmd) => Some(mark_final(&tx, finals, cmd, commit_time, ledger_head).map_err(sql)?),
        None => None,
    };
    tx.commit().map_err(sql)?;
    Ok(Committed {
        ledger: ledger_head,
        decisions: decisions_head,
        seqs,
        finalized,
        ledger_records,
        decision_records,
        spend: totals,
        pooled,
    })
}

/// A tiered call's spend estimate (`journal::spend`); the pool's committed quantity is read
/// from the ledger once per group and month.
fn tiered_estimate(
    tx: &Tx<'_>,
    book: &super::SpendBook,
    pooled: &mut super::spend::PoolBatch,
    row: &ledger::LedgerRow,
    tiers: &[crate::billing::PriceTier],
) -> Result<Money, String> {
    let call = super::spend::TieredCall {
        month: &row.billing_month,
        payer: &row.payer_account_id,
        account: &row.account_id,
        org: row.org_id.as_deref(),
        service: &row.service,
        action: &row.action,
        quantity: u64::try_from(row.quantity).unwrap_or(0),
    };
    book.estimate_tiered(pooled, &call, tiers, || {
        let n: i64 = tx
            .query_row(
                "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) FROM ledger
                 WHERE payer_account_id = ?1 AND billing_month = ?2 AND service = ?3
                   AND action = ?4 AND tiered <> 0
                   AND CASE WHEN CAST(?5 AS TEXT) IS NULL
                            THEN org_id IS NULL AND account_id = ?6
                            ELSE org_id = ?5 END",
                params![
                    row.payer_account_id,
                    row.billing_month,
                    row.service,
                    row.action,
                    row.org_id,
                    row.account_id
                ],
                |r| r.get(0),
            )
            .map_err(|e| e.to_string())?;
        Ok(u64::try_from(n).unwrap_or(0))
    })
}

/// The month a record of `event_month` is booked in, and the original month when it moved
/// (SPEC M6: a FINAL month's late records go to the next open month).
fn book(
    finals: &HashSet<(String, BillingMonth)>,
    payer: &str,
    event_month: BillingMonth,
) -> (BillingMonth, Option<BillingMonth>) {
    let mut month = event_month;
    while finals.contains(&(payer.to_owned(), month)) {
        match month.next() {
            Some(next) => month = next,
            None => break,
        }
    }
    (month, (month != event_month).then_some(event_month))
}

fn add_spend(
    tx: &Tx<'_>,
    account: &str,
    month: &str,
    amount: Money,
    records: i64,
) -> Result<Money, String> {
    let current: Option<String> = tx
        .query_row(
            "SELECT amount FROM ledger_spend WHERE account_id = ?1 AND month = ?2",
            params![account, month],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| e.to_string())?;
    let base = match current {
        None => Money::ZERO,
        Some(s) => super::read::parse_money(&s).map_err(|e| e.to_string())?,
    };
    let total = base.checked_add(amount).map_err(|e| e.to_string())?;
    tx.execute(
        "INSERT INTO ledger_spend (account_id, month, amount, records) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (account_id, month)
         DO UPDATE SET amount = excluded.amount, records = ledger_spend.records + excluded.records",
        params![account, month, total.to_string(), records],
    )
    .map_err(|e| e.to_string())?;
    Ok(total)
}

/// Seals a month inside the batch's transaction. The outer error is a store failure (the
/// whole batch fails); the inner one a refusal of this request alone.
fn mark_final(
    tx: &Tx<'_>,
    finals: &HashSet<(String, BillingMonth)>,
    cmd: &MarkFinal,
    now: DateTime<Utc>,
    ledger: ChainPosition,
) -> Result<Result<FinalMonth, FinalizeError>, DbError> {
    let payer = cmd.payer.as_str();
    if finals.contains(&(payer.to_owned(), cmd.month)) {
        return Ok(Err(FinalizeError::AlreadyFinal {
            payer: cmd.payer.clone(),
            month: cmd.month,
        }));
    }
    let month = cmd.month.to_string();
    let latest: Option<i64> = tx.query_row(
        "SELECT MAX(seq) FROM ledger WHERE payer_account_id = ?1 AND billing_month = ?2",
        params![payer, month],
        |r| r.get(0),
    )?;
    if let Some(found) = latest.map(|s| s as u64).filter(|&s| s > cmd.through_seq) {
        return Ok(Err(FinalizeError::LedgerMoved {
            payer: cmd.payer.clone(),
            month: cmd.month,
            through_seq: cmd.through_seq,
            found_seq: found,
        }));
    }
    tx.execute(
        "INSERT INTO final_months (payer_account_id, month, finalized_at, content_hash, through_seq)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            payer,
            month,
            to_ms(now),
            cmd.content_hash,
            cmd.through_seq as i64
        ],
    )?;
    // The seal's mark: deleting the `final_months` row is then seen by `ledger verify`.
    marks::append(
        tx,
        marks::final_mark(
            payer,
            cmd.month,
            &cmd.content_hash,
            cmd.through_seq,
            to_ms(now),
            ledger,
        ),
    )?;
    Ok(Ok(FinalMonth {
        payer: cmd.payer.clone(),
        month: cmd.month,
        finalized_at: crate::store::sql::from_ms(to_ms(now)),
        content_hash: cmd.content_hash.clone(),
        through_seq: cmd.through_seq,
    }))
}

fn load_finals(conn: &Conn) -> Result<HashSet<(String, BillingMonth)>, JournalError> {
    let rows = conn
        .query_map(
            "SELECT payer_account_id, month FROM final_months",
            params![],
            |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
        )
        .map_err(|e| JournalError::Unavailable(e.to_string()))?;
    let mut finals = HashSet::new();
    for (payer, month) in rows {
        let month = BillingMonth::parse(&month)
            .map_err(|e| JournalError::Corrupt(format!("final_months: {e}")))?;
        finals.insert((payer, month));
    }
    Ok(finals)
}

/// The startup check (issue 17 item 6): a ledger that ends below its witnesses (records cut off
/// its end) is not appended to, or the loss would become permanent. The operator inspects it
/// with `tollgate ledger verify` and lets appends resume with `tollgate ledger accept-truncation`.
fn refuse_truncated_ledger(conn: &Conn, head: ChainPosition) -> Result<(), JournalError> {
    match marks::truncation(conn, head)? {
        None => Ok(()),
        Some((ends_at, witness)) => Err(JournalError::Truncated {
            ends_at,
            witnessed: witness.seq,
            witness: witness.source,
        }),
    }
}

/// The upgrade step of the marks table (issue 17 item 6): a store sealed FINAL months before
/// `ledger_marks` existed has seals without marks, which `ledger verify` would report one by
/// one. While the marks chain is empty, the writer adopts them (`marks::adopt_seals`), under the
/// journal lock and in one transaction, so on a shared store exactly one instance does it. Once
/// any mark exists this does nothing, and a seal without a mark stays a reported finding.
fn adopt_unmarked_seals(conn: &Conn, now_ms: i64) -> Result<(), JournalError> {
    let unavailable = |e: DbError| {
        JournalError::Unavailable(format!(
            "cannot record the FINAL seals made before ledger marks existed: {e}"
        ))
    };
    // Cheap check without the lock: nearly every start has marks, or no seals.
    let pending: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM final_months WHERE NOT EXISTS (SELECT 1 FROM ledger_marks) LIMIT 1",
            params![],
            |r| r.get(0),
        )
        .optional()
        .map_err(unavailable)?;
    if pending.is_none() {
        return Ok(());
    }
    let tx = conn.transaction(Behavior::Journal).map_err(unavailable)?;
    let ledger = ledger::head(&tx)?;
    let adopted = marks::adopt_seals(&tx, now_ms, ledger).map_err(unavailable)?;
    tx.commit().map_err(unavailable)?;
    if adopted > 0 {
        tracing::info!(
            adopted,
            "adopted the FINAL seals made before ledger marks existed; `tollgate ledger verify` notes them"
        );
    }
    Ok(())
}
