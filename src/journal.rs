//! The durable journal: the metering ledger (SPEC M1, M2, M6, M7) and the decision log (D1,
//! D2, D5), written by one group-commit writer.
//!
//! Owns the `ledger`, `ledger_spend`, `final_months`, `ledger_marks` and `decisions` tables, the
//! writer that appends to them, and the read side (chain verification, bill usage, month-to-date
//! spend, decision queries). It must not know HTTP, prices or policies beyond the plain values it
//! is handed, and it must not be bypassed: nothing writes these tables but the writer.
//!
//! # Writing
//! One writer thread owns one dedicated connection (SQLite: WAL, `synchronous=FULL`) and drains a
//! bounded channel: it takes whatever is queued (up to [`JournalOptions::max_batch`], no
//! artificial delay, so batches grow with load: natural group commit), writes the batch in one
//! transaction, commits, and only then acknowledges each waiter. The channel is FIFO, so an entry
//! queued before another is committed in the same or an earlier batch, unless that earlier
//! batch failed.
//!
//! # Dependencies: a charge only with its decision
//! A call's ledger record must not commit unless its decision record committed too, in the same
//! batch or an earlier one (issue 17 item 1): otherwise a decision whose batch failed (the client
//! is answered 503, "not served, retry") would leave a charge behind once the store recovers.
//! [`Journal::submit`] hands back an [`Acknowledgement`] whose [`Dependency`] the writer marks
//! committed or failed with its batch; [`Journal::append_after`] queues an entry that carries
//! such dependencies, and the writer, when it builds a batch, refuses an entry any of whose
//! dependencies failed (its waiter gets [`JournalError::Unavailable`]; nothing is written). A
//! dependency still pending at that point is in the same batch (FIFO), so both commit or neither
//! does. This costs no second commit wait per call: one atomic load per dependency on the writer
//! thread, one atomic store per tracked entry.
//!
//! # Entries nobody waits for
//! Entries queued with [`Journal::enqueue`] (the transfer supplement of a call, queued when its
//! response body ends) do not get a commit of their own: a batch made only of them waits up to
//! [`JournalOptions::linger`] for an entry that is waited for, and they commit together. At low
//! concurrency that saves one commit per call; it widens the window in which a crash loses a
//! transfer supplement (under-billing, never double billing) by at most the linger.
//!
//! When their batch fails they are not dropped (issue 17 item 2): the writer keeps them and puts
//! them at the front of its next batch, and while the store stays unwritable its idle probe is
//! an attempt to commit them, until they are durable. Only a crash (or a store that is still
//! unwritable when the gateway shuts down, which is logged with the count) loses them. They
//! come from bodies of calls already served, so they are bounded by the calls in flight; while
//! the store fails no new call is served.
//!
//! # Failures
//! A batch that cannot be committed (disk full, read-only, locked) fails every waiter in it with
//! [`JournalError::Unavailable`], the in-memory chain heads stay where they were (the transaction
//! rolled back), health goes false, and the writer keeps taking new batches (and probes the
//! store while idle), so service comes back by itself. A full queue is `Unavailable` too: a
//! caller is never blocked forever and an entry is never dropped silently.
//!
//! # Chains
//! Each table is its own hash chain (`crate::chain`): `seq` is the position, and the hash covers
//! a [`crate::chain::Canonical`] encoding of every other column, so altering any stored value is
//! detected by [`verify_ledger`] / [`verify_decisions`]. Cutting records off the end leaves a
//! valid shorter chain: [`audit_ledger`] compares the ledger with the witnesses of its length
//! (`ledger_spend` counts, FINAL seals, the `ledger_marks` chain; see `marks`), the writer
//! refuses to open on a truncated ledger until [`accept_truncation`], and a published head
//! ([`ledger_head`]) catches a consistent cut of everything.
//!
//! # Booking (M6)
//! A ledger record is booked in the month of its event time, unless the payer's bill for that
//! month is FINAL: then it goes to the next open month and names the original month.
//! [`Journal::mark_final`] goes through the writer, so "final" and "booked" are exactly ordered,
//! and it refuses to seal a month that gained records after the bill was computed.

mod audit;
mod checkpoint;
mod decisions;
mod entry;
mod ledger;
mod marks;
mod read;
mod spend;
mod writer;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::billing::BillingMonth;
use crate::chain::{ChainBreak, GENESIS, Hash};
use crate::clock::SharedClock;
use crate::db::{Conn, Database, DbError};
use crate::ids::AccountId;
use crate::metrics::SharedMetrics;

pub use audit::{
    AcceptError, AcceptedLoss, AdoptedSeal, LedgerAudit, LedgerProblem, accept_truncation,
    audit_ledger, ledger_head,
};
pub use entry::{
    Charge, DecisionEntry, DecisionKind, Entry, LedgerEntry, MeteredCall, RecordId, ReloadEntry,
    ReloadFailure, TransferEntry,
};
pub use read::{
    BillUsage, CURSOR_PATTERN, DEFAULT_LIMIT, DecisionFilter, DecisionRecord, FinalMonth,
    MAX_LIMIT, Page, QueryError, TierError, account_names, decision_by_request_id, final_month,
    for_each_decision, month_to_date_spend, open_reader, query_decisions, usage_for_bill,
    usage_for_bill_through,
};
pub use spend::SpendBook;

/// Handle to the journal; cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
    tx: SyncSender<writer::Command>,
}

/// The writer thread; join it after [`Journal::shutdown`] (or after dropping every handle).
pub struct JournalTask {
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Tuning of the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalOptions {
    /// Most entries committed in one transaction.
    pub max_batch: usize,
    /// Entries that may wait in the queue; beyond it appends fail with `Unavailable`.
    pub queue_capacity: usize,
    /// While unhealthy and idle, how often the writer probes whether the store is writable again.
    pub probe_interval: Duration,
    /// How long a batch made only of entries nobody waits for (transfer supplements) waits for
    /// one somebody does, to share its commit instead of costing one of its own.
    pub linger: Duration,
}

/// The fate of one queued entry, shared by the writer (which settles it when the entry's batch
/// commits or fails) and whatever must commit only if that entry did ([`Journal::append_after`]).
#[derive(Debug, Clone)]
pub struct Dependency(Arc<AtomicU8>);

/// The acknowledgement of a [`Journal::submit`]: await it for the [`Receipt`]; take its
/// [`Dependency`] first to make later entries depend on it.
#[derive(Debug)]
pub struct Acknowledgement {
    done: oneshot::Receiver<Result<Receipt, JournalError>>,
    dependency: Dependency,
}

/// Proof that an entry is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The entry's position in its chain (the ledger or the decision log).
    pub seq: u64,
    /// When its batch was committed (the ledger's `commit_time`).
    pub committed_at: DateTime<Utc>,
}

/// The last committed record of one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainPosition {
    /// 0 for an empty chain.
    pub seq: u64,
    /// The last record's hash; [`GENESIS`] for an empty chain.
    pub hash: Hash,
}

/// Where both chains end, as the writer knows it (advanced only by committed batches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalHeads {
    pub ledger: ChainPosition,
    pub decisions: ChainPosition,
}

/// Counters of the writer, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JournalStats {
    /// Transactions committed.
    pub batches: u64,
    /// Transactions that failed (rolled back).
    pub failed_batches: u64,
    /// Ledger records committed.
    pub ledger_records: u64,
    /// Decision-log records committed.
    pub decision_records: u64,
}

/// A chain that verified, and where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifySummary {
    pub records: u64,
    /// Sequence number of the last record, 0 for an empty chain.
    pub head_seq: u64,
    pub head_hash: Hash,
}

/// Why an append, a read or an open failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// Nothing was (or can be) made durable: the caller must not serve unmetered.
    #[error("journal unavailable: {0}")]
    Unavailable(String),
    /// The entry cannot be recorded as given (a value out of the stored range).
    #[error("invalid journal entry: {0}")]
    Invalid(String),
    /// A stored value does not parse back: the store was edited or is from another tool.
    #[error("journal store corrupt: {0}")]
    Corrupt(String),
    /// Records were cut off the end of the ledger: nothing is appended until an operator
    /// acknowledges the loss.
    #[error(
        "the ledger was truncated: it ends at record {ends_at}, but {witness}, so records {} to {witnessed} are missing; nothing is appended until an operator acts: inspect it with `tollgate ledger verify`, restore the store from a backup, or acknowledge the loss with `tollgate ledger accept-truncation --through {ends_at}`",
        ends_at + 1
    )]
    Truncated {
        ends_at: u64,
        witnessed: u64,
        witness: String,
    },
}

impl From<DbError> for JournalError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Type(m) => JournalError::Corrupt(m),
            other => JournalError::Unavailable(other.to_string()),
        }
    }
}

/// Why a month could not be marked FINAL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FinalizeError {
    #[error("the {month} bill of payer {payer} is already final")]
    AlreadyFinal {
        payer: AccountId,
        month: BillingMonth,
    },
    /// Records were booked on the month after the bill was computed: compute it again.
    #[error(
        "the {month} bill of payer {payer} gained ledger record {found_seq} after it was computed (through record {through_seq}); compute it again"
    )]
    LedgerMoved {
        payer: AccountId,
        month: BillingMonth,
        through_seq: u64,
        found_seq: u64,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Why a stored chain could not be verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Broken(#[from] ChainBreak),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// State shared by the handles and the writer.
struct Shared {
    healthy: AtomicBool,
    closed: AtomicBool,
    heads: Mutex<JournalHeads>,
    last_error: Mutex<Option<String>>,
    batches: AtomicU64,
    failed_batches: AtomicU64,
    ledger_records: AtomicU64,
    decision_records: AtomicU64,
    metrics: SharedMetrics,
    /// Month-to-date spend as committed, kept current by the writer.
    spend: Arc<SpendBook>,
}

// === impl Journal ===

impl Journal {
    /// Opens the writer on the database at `db_path` (already migrated by the store) with the
    /// default options, and starts its thread.
    pub fn open(
        db: &Database,
        clock: SharedClock,
        metrics: SharedMetrics,
    ) -> Result<(Journal, JournalTask), JournalError> {
        Self::open_with(db, clock, metrics, JournalOptions::default())
    }

    pub fn open_with(
        db: &Database,
        clock: SharedClock,
        metrics: SharedMetrics,
        options: JournalOptions,
    ) -> Result<(Journal, JournalTask), JournalError> {
        let state = writer::WriterState::open(db, clock, options)?;
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            heads: Mutex::new(state.heads()),
            last_error: Mutex::new(None),
            batches: AtomicU64::new(0),
            failed_batches: AtomicU64::new(0),
            ledger_records: AtomicU64::new(0),
            decision_records: AtomicU64::new(0),
            metrics,
            spend: Arc::new(SpendBook::default()),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(options.queue_capacity.max(1));
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("tollgate-journal".into())
            .spawn(move || writer::run(state, rx, &thread_shared))
            .map_err(|e| JournalError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok((
            Journal { shared, tx },
            JournalTask {
                thread: Some(thread),
            },
        ))
    }

    /// Queues `entry` and waits until it is durable.
    pub async fn append(&self, entry: impl Into<Entry>) -> Result<Receipt, JournalError> {
        self.append_after(entry, Vec::new()).await
    }

    /// Queues `entry`, to be committed only if every entry of `after` committed (in an earlier
    /// batch or in the same one), and waits until it is durable. If one of them failed, nothing
    /// is written and the answer is [`JournalError::Unavailable`] (module docs: dependencies).
    pub async fn append_after(
        &self,
        entry: impl Into<Entry>,
        after: Vec<Dependency>,
    ) -> Result<Receipt, JournalError> {
        let (ack, done) = oneshot::channel();
        self.send(entry.into(), Some(ack), None, after)?;
        done.await
            .map_err(|_| JournalError::Unavailable("the journal writer stopped".into()))?
    }

    /// Queues `entry` now and returns the acknowledgement to await later: the entry's place in
    /// the FIFO is fixed at this call, its durability proven when the acknowledgement resolves.
    pub fn submit(&self, entry: impl Into<Entry>) -> Result<Acknowledgement, JournalError> {
        let (ack, done) = oneshot::channel();
        let dependency = Dependency::pending();
        self.send(
            entry.into(),
            Some(ack),
            Some(dependency.clone()),
            Vec::new(),
        )?;
        Ok(Acknowledgement { done, dependency })
    }

    /// Queues `entry` without waiting. Its durability is proven by the acknowledgement of any
    /// entry appended after it (FIFO) when their batch commits; if that batch fails, the later
    /// append fails and this entry is retried by the writer until it is durable (module docs).
    pub fn enqueue(&self, entry: impl Into<Entry>) -> Result<(), JournalError> {
        self.send(entry.into(), None, None, Vec::new())
    }

    /// Marks the payer's `month` FINAL with the bill's content hash. `through_seq` is the last
    /// ledger record the bill was computed from ([`BillUsage::through_seq`]): if the month gained
    /// records since, nothing is marked and [`FinalizeError::LedgerMoved`] asks to recompute.
    pub async fn mark_final(
        &self,
        payer: &AccountId,
        month: BillingMonth,
        content_hash: &str,
        through_seq: u64,
    ) -> Result<FinalMonth, FinalizeError> {
        let (ack, done) = oneshot::channel();
        self.command(writer::Command::MarkFinal(writer::MarkFinal {
            payer: payer.clone(),
            month,
            content_hash: content_hash.to_owned(),
            through_seq,
            ack,
        }))?;
        done.await
            .map_err(|_| JournalError::Unavailable("the journal writer stopped".into()))?
    }

    /// The committed month-to-date spend per account, kept current by the writer (for the
    /// store's principal reads: no database read per request).
    pub fn spend_book(&self) -> Arc<SpendBook> {
        self.shared.spend.clone()
    }

    /// True while the last batch (or probe) committed. For `/readyz`.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire) && !self.shared.closed.load(Ordering::Acquire)
    }

    /// Why the last failed batch failed, until one succeeds.
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error.lock().clone()
    }

    /// The committed heads of both chains.
    pub fn heads(&self) -> JournalHeads {
        *self.shared.heads.lock()
    }

    pub fn stats(&self) -> JournalStats {
        JournalStats {
            batches: self.shared.batches.load(Ordering::Relaxed),
            failed_batches: self.shared.failed_batches.load(Ordering::Relaxed),
            ledger_records: self.shared.ledger_records.load(Ordering::Relaxed),
            decision_records: self.shared.decision_records.load(Ordering::Relaxed),
        }
    }

    /// Refuses new entries, commits everything queued before this call, and stops the writer.
    /// Waits for the last commit; join the [`JournalTask`] to wait for the thread itself.
    pub async fn shutdown(&self) -> Result<(), JournalError> {
        let (ack, done) = oneshot::channel();
        // Claim the shutdown first so nothing queued after the marker is accepted.
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.tx
            .send(writer::Command::Shutdown(ack))
            .map_err(|_| JournalError::Unavailable("the journal writer stopped".into()))?;
        done.await
            .map_err(|_| JournalError::Unavailable("the journal writer stopped".into()))?
    }

    fn send(
        &self,
        entry: Entry,
        ack: Option<oneshot::Sender<Result<Receipt, JournalError>>>,
        tracked: Option<Dependency>,
        after: Vec<Dependency>,
    ) -> Result<(), JournalError> {
        let pending = entry.into_pending()?;
        self.command(writer::Command::Write(writer::Write {
            pending,
            ack,
            tracked,
            after,
            submitted: Instant::now(),
        }))
    }

    fn command(&self, command: writer::Command) -> Result<(), JournalError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(JournalError::Unavailable("the journal is shut down".into()));
        }
        match self.tx.try_send(command) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(JournalError::Unavailable(
                "the journal queue is full".into(),
            )),
            Err(TrySendError::Disconnected(_)) => Err(JournalError::Unavailable(
                "the journal writer stopped".into(),
            )),
        }
    }

    /// Runs `f` on the writer's connection, between batches (tests simulate a full disk with
    /// `PRAGMA max_page_count`).
    #[cfg(test)]
    async fn with_writer_connection<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Conn) -> T + Send + 'static,
    ) -> T {
        let (ack, done) = oneshot::channel();
        let hook: writer::Hook = Box::new(move |conn| {
            let _ = ack.send(f(conn));
        });
        self.command(writer::Command::Hook(hook))
            .unwrap_or_else(|e| panic!("{e}"));
        done.await.unwrap_or_else(|e| panic!("{e}"))
    }
}

// === impl JournalTask ===

impl JournalTask {
    /// Waits for the writer thread to end (blocking; call from a blocking context or after
    /// shutdown, when it ends at once).
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// [`JournalTask::join`] on the blocking pool.
    pub async fn wait(self) {
        let _ = tokio::task::spawn_blocking(move || self.join()).await;
    }
}

// === impl JournalOptions ===

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            queue_capacity: 16 * 1024,
            probe_interval: Duration::from_secs(1),
            linger: Duration::from_millis(2),
        }
    }
}

// === impl Dependency ===

impl Dependency {
    const PENDING: u8 = 0;
    const COMMITTED: u8 = 1;
    const FAILED: u8 = 2;

    fn pending() -> Self {
        Self(Arc::new(AtomicU8::new(Self::PENDING)))
    }

    /// The entry will never be committed: its batch failed, or it was refused.
    pub fn failed(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::FAILED
    }

    /// The entry is durable.
    pub fn committed(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::COMMITTED
    }

    /// Settles the entry's fate (writer only).
    fn settle(&self, committed: bool) {
        let state = if committed {
            Self::COMMITTED
        } else {
            Self::FAILED
        };
        self.0.store(state, Ordering::Release);
    }
}

// === impl Acknowledgement ===

impl Acknowledgement {
    /// The submitted entry's fate, for entries that must commit only if it did.
    pub fn dependency(&self) -> Dependency {
        self.dependency.clone()
    }
}

impl Future for Acknowledgement {
    type Output = Result<Receipt, JournalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.done).poll(cx).map(|r| {
            r.map_err(|_| JournalError::Unavailable("the journal writer stopped".into()))?
        })
    }
}

// === impl ChainPosition ===

impl ChainPosition {
    pub const EMPTY: ChainPosition = ChainPosition {
        seq: 0,
        hash: GENESIS,
    };
}

// === free functions: verification ===

/// Verifies the ledger chain from genesis on a fresh read connection (works while a gateway
/// writes: it reads one consistent snapshot). Reports the first altered, inserted or missing
/// record.
pub fn verify_ledger(db: &Database) -> Result<VerifySummary, VerifyError> {
    let conn = open_reader(db)?;
    ledger::verify(&conn)
}

/// Verifies the decision-log chain from genesis, like [`verify_ledger`].
pub fn verify_decisions(db: &Database) -> Result<VerifySummary, VerifyError> {
    let conn = open_reader(db)?;
    decisions::verify(&conn)
}

/// Verifies the decision-log chain on `conn` starting at `first_seq`, which must follow
/// `prev_hash`: the checkpoint retention keeps when it removes a verified prefix (see
/// `crate::audit::retention`). With `(1, GENESIS)` this is [`verify_decisions`].
pub fn verify_decisions_from(
    conn: &Conn,
    first_seq: u64,
    prev_hash: Hash,
) -> Result<VerifySummary, VerifyError> {
    decisions::verify_from(conn, first_seq, prev_hash)
}
