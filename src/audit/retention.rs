//! Retention of the decision log (`[audit] retention`, `tollgate decisions prune`) and
//! verification that survives it (D5).
//!
//! # How verification stays sound
//! Pruning removes a *prefix* of the chain, and only after the whole chain verified. For the
//! last removed record it keeps a checkpoint row `(through_seq, through_hash)`: that record's
//! hash, which verification had just recomputed from content. `verify` then starts at
//! `through_seq + 1`, requiring that record's stored previous hash to be `through_hash`
//! (`chain::verify_from`): every remaining record is still covered, and removing more records
//! without a checkpoint is a gap (`record N is missing`), removing a checkpoint row too.
//!
//! What it cannot see, like truncation at the end: someone able to write the database could
//! delete a prefix *and* forge a checkpoint. `prune` prints the checkpoint; keep it (and
//! published heads) outside the data dir and compare.
//!
//! Pruning never removes the newest record, so the journal writer's chain head is always in
//! the table (a restarted writer continues the chain from it). It deletes in chunks, each in
//! its own short transaction with its checkpoint, so a running gateway's writer waits at most
//! one chunk.

use crate::db::{Behavior, Conn, OptionalExtension, params};
use chrono::{DateTime, Utc};

use super::AuditError;
use crate::chain::{self, FIRST_SEQ, GENESIS, Hash};
use crate::db::Database;
use crate::journal::{VerifySummary, open_reader, verify_decisions_from};
use crate::store::sql::{from_ms, to_ms};

/// Where a pruned prefix ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last removed record.
    pub through_seq: u64,
    /// Its hash: the remaining chain's first record must follow it.
    pub through_hash: Hash,
    pub pruned_at: DateTime<Utc>,
    /// Records removed under this checkpoint row.
    pub records: u64,
}

/// A verified decision log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainReport {
    pub summary: VerifySummary,
    /// Verification started after this checkpoint (`None`: from genesis).
    pub checkpoint: Option<Checkpoint>,
}

/// What `prune` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: u64,
    /// The newest checkpoint after pruning (`None`: nothing was ever pruned).
    pub checkpoint: Option<Checkpoint>,
    /// The remaining chain, verified after pruning.
    pub remaining: ChainReport,
}

/// Records deleted per transaction.
const CHUNK: u64 = 5_000;

// === free functions ===

/// The newest checkpoint, if anything was pruned.
pub fn latest_checkpoint(conn: &Conn) -> Result<Option<Checkpoint>, AuditError> {
    let row: Option<(i64, String, i64, i64)> = conn
        .query_row(
            "SELECT through_seq, through_hash, pruned_at, records FROM decision_checkpoints
             ORDER BY through_seq DESC LIMIT 1",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    row.map(|(seq, hash, at, records)| {
        Ok(Checkpoint {
            through_seq: u64::try_from(seq)
                .map_err(|_| AuditError::Corrupt(format!("checkpoint seq {seq}")))?,
            through_hash: chain::parse_hash(&hash)
                .map_err(|e| AuditError::Corrupt(format!("checkpoint: {e}")))?,
            pruned_at: from_ms(at),
            records: records.max(0) as u64,
        })
    })
    .transpose()
}

/// Verifies the decision log from its newest checkpoint (or genesis), in one read snapshot.
/// A break is `Err(AuditError::Verify(VerifyError::Broken(..)))` naming the first bad record.
pub fn verify_chain(conn: &Conn) -> Result<ChainReport, AuditError> {
    let tx = conn.transaction(Behavior::Snapshot)?;
    let checkpoint = latest_checkpoint(&tx)?;
    let (first, prev) = match &checkpoint {
        Some(c) => (c.through_seq + 1, c.through_hash),
        None => (FIRST_SEQ, GENESIS),
    };
    let summary = verify_decisions_from(&tx, first, prev)?;
    Ok(ChainReport {
        summary,
        checkpoint,
    })
}

/// Removes the decision records older than `cutoff` (a prefix of the chain, never the newest
/// record), after verifying the whole chain; leaves a checkpoint per chunk and verifies again.
pub fn prune(
    db: &Database,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<PruneReport, AuditError> {
    let reader = open_reader(db)?;
    verify_chain(&reader)?;
    let writer = db.connect()?;
    // The prefix: every record before the first one at or after the cutoff, and never the last.
    let (first, last): (Option<i64>, Option<i64>) =
        writer.query_row("SELECT MIN(seq), MAX(seq) FROM decisions", params![], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let (Some(first), Some(last)) = (first, last) else {
        return finish(&reader, 0);
    };
    let first_kept: Option<i64> = writer.query_row(
        "SELECT MIN(seq) FROM decisions WHERE time >= ?1",
        params![to_ms(cutoff)],
        |r| r.get(0),
    )?;
    let through = first_kept.unwrap_or(last).min(last) - 1;
    let mut removed = 0u64;
    let mut start = first;
    while start <= through {
        let end = (start + CHUNK as i64 - 1).min(through);
        let conn = db.connect()?;
        let tx = conn.transaction(Behavior::Immediate)?;
        let hash: String = tx.query_row(
            "SELECT hash FROM decisions WHERE seq = ?1",
            params![end],
            |r| r.get(0),
        )?;
        let n = tx.execute("DELETE FROM decisions WHERE seq <= ?1", params![end])? as u64;
        tx.execute(
            "INSERT INTO decision_checkpoints (through_seq, through_hash, pruned_at, records)
             VALUES (?1, ?2, ?3, ?4)",
            params![end, hash, to_ms(now), n as i64],
        )?;
        tx.commit()?;
        removed += n;
        start = end + 1;
    }
    drop(writer);
    finish(&reader, removed)
}

fn finish(reader: &Conn, removed: u64) -> Result<PruneReport, AuditError> {
    let remaining = verify_chain(reader)?;
    Ok(PruneReport {
        removed,
        checkpoint: remaining.checkpoint,
        remaining,
    })
}
