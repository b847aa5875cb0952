//! The `ledger_marks` table (issue 17 item 6, SPEC M6, M7): a hash chain of the events that
//! change what the ledger's tail must look like, and the truncation check built on it.
//!
//! A mark is a FINAL seal (so deleting a `final_months` row, which would silently turn a FINAL
//! bill back into ESTIMATED, is seen) or an operator's acceptance of a truncated ledger (who,
//! when, which records were lost). Every mark records the ledger head when it was made.
//!
//! # Truncation
//! Records cut off the end of the ledger leave a valid, shorter chain. The store keeps
//! witnesses of the ledger's length that live outside it: `ledger_spend.records` (the writer
//! counts every record in the same transaction), `final_months.through_seq` (a seal covers
//! records up to it) and the marks' `ledger_seq`. [`witness`] reads them; a ledger whose head is
//! below the longest witness was truncated. After an acceptance (`tollgate ledger
//! accept-truncation`), `ledger_spend` is recounted from the ledger and only marks made after it
//! count, so appends may resume.
//!
//! # Adopted seals
//! A store upgraded from before this table has `final_months` rows and no marks. When the
//! writer opens such a store (marks chain EMPTY, seals present) it adopts every existing seal:
//! one `final` mark per row, its `actor` set to [`ADOPTED_AT_UPGRADE`] so `ledger verify` can
//! say which seals it took on trust ([`adopt_seals`]). Once any mark exists nothing is adopted:
//! a seal without a mark is then reported (tamper detection).
//!
//! Written by the journal writer (seals, adopted seals) and by the operator's
//! `accept-truncation` (inside the journal lock); it must not know HTTP or prices.

use crate::billing::BillingMonth;
use crate::chain::{self, Canonical};
use crate::db::{Conn, DbError, OptionalExtension, Row, Tx, params};

use super::read::{chain_head, verify_table};
use super::{ChainPosition, JournalError, VerifyError, VerifySummary};

/// What a mark records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkKind {
    /// A payer's month was sealed FINAL.
    Final {
        payer: String,
        month: String,
        content_hash: String,
        /// The seal predates the marks table: the writer adopted its `final_months` row when it
        /// first opened the upgraded store ([`adopt_seals`]).
        adopted: bool,
    },
    /// An operator accepted that the ledger ends at `through_seq`; the witnesses showed
    /// `witnessed_seq` records.
    AcceptTruncation { actor: String },
}

/// One stored mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub seq: u64,
    pub kind: MarkKind,
    /// Unix milliseconds.
    pub time: i64,
    /// A seal: the last ledger record of the bill. An acceptance: the accepted ledger head.
    pub through_seq: u64,
    /// The ledger head when the mark was made.
    pub ledger_seq: u64,
    pub ledger_hash: String,
    /// An acceptance: how long the ledger was by its witnesses (records `through_seq + 1 ..=
    /// witnessed_seq` were lost). A seal: its `ledger_seq`.
    pub witnessed_seq: u64,
}

/// The longest ledger the store's witnesses vouch for, and which witness says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    pub seq: u64,
    /// Names the witness, e.g. "`ledger_spend` counts 12 records".
    pub source: String,
}

const COLUMNS: &str = "kind, time, payer_account_id, month, content_hash, through_seq, \
     ledger_seq, ledger_hash, witnessed_seq, actor";

const CANONICAL_TAG: &str = "tollgate/ledger-mark/v1";

/// The `actor` of a `final` mark that adopted a seal made before the marks table existed.
pub const ADOPTED_AT_UPGRADE: &str = "adopted at upgrade";

// === impl Mark ===

impl Mark {
    fn canonical(&self) -> Vec<u8> {
        let (kind, payer, month, content_hash, actor) = self.columns();
        canonical(
            kind,
            self.time,
            payer,
            month,
            content_hash,
            self.through_seq as i64,
            self.ledger_seq as i64,
            &self.ledger_hash,
            self.witnessed_seq as i64,
            actor,
        )
    }

    #[allow(clippy::type_complexity)]
    fn columns(&self) -> (&str, Option<&str>, Option<&str>, Option<&str>, Option<&str>) {
        match &self.kind {
            MarkKind::Final {
                payer,
                month,
                content_hash,
                adopted,
            } => (
                "final",
                Some(payer),
                Some(month),
                Some(content_hash),
                adopted.then_some(ADOPTED_AT_UPGRADE),
            ),
            MarkKind::AcceptTruncation { actor } => {
                ("accept_truncation", None, None, None, Some(actor))
            }
        }
    }

    fn from_row(row: &Row<'_>) -> Result<Self, DbError> {
        let kind: String = row.get(1)?;
        let payer: Option<String> = row.get(3)?;
        let month: Option<String> = row.get(4)?;
        let content_hash: Option<String> = row.get(5)?;
        let actor: Option<String> = row.get(10)?;
        let kind = match (kind.as_str(), payer, month, content_hash) {
            ("final", Some(payer), Some(month), Some(content_hash)) => MarkKind::Final {
                payer,
                month,
                content_hash,
                adopted: actor.as_deref() == Some(ADOPTED_AT_UPGRADE),
            },
            _ => MarkKind::AcceptTruncation {
                actor: actor.unwrap_or_default(),
            },
        };
        let n = |i: usize| -> Result<u64, DbError> { Ok(row.get::<i64>(i)?.max(0) as u64) };
        Ok(Self {
            seq: n(0)?,
            kind,
            time: row.get(2)?,
            through_seq: n(6)?,
            ledger_seq: n(7)?,
            ledger_hash: row.get(8)?,
            witnessed_seq: n(9)?,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn canonical(
    kind: &str,
    time: i64,
    payer: Option<&str>,
    month: Option<&str>,
    content_hash: Option<&str>,
    through_seq: i64,
    ledger_seq: i64,
    ledger_hash: &str,
    witnessed_seq: i64,
    actor: Option<&str>,
) -> Vec<u8> {
    Canonical::new(CANONICAL_TAG)
        .str("kind", kind)
        .i64("time", time)
        .opt_str("payer_account_id", payer)
        .opt_str("month", month)
        .opt_str("content_hash", content_hash)
        .i64("through_seq", through_seq)
        .i64("ledger_seq", ledger_seq)
        .str("ledger_hash", ledger_hash)
        .i64("witnessed_seq", witnessed_seq)
        .opt_str("actor", actor)
        .finish()
}

// === free functions ===

/// Appends a mark (seq and hash from the stored head) inside the caller's transaction, which
/// must hold the journal lock.
pub(super) fn append(tx: &Tx<'_>, mut mark: Mark) -> Result<Mark, DbError> {
    let head = chain_head(tx, "ledger_marks").map_err(|e| DbError::Type(e.to_string()))?;
    mark.seq = head.seq + 1;
    let hash = chain::link(&head.hash, &mark.canonical());
    let (kind, payer, month, content_hash, actor) = mark.columns();
    tx.execute(
        &format!(
            "INSERT INTO ledger_marks (seq, {COLUMNS}, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        ),
        params![
            mark.seq as i64,
            kind,
            mark.time,
            payer,
            month,
            content_hash,
            mark.through_seq as i64,
            mark.ledger_seq as i64,
            mark.ledger_hash,
            mark.witnessed_seq as i64,
            actor,
            chain::to_hex(&head.hash),
            chain::to_hex(&hash),
        ],
    )?;
    Ok(mark)
}

/// A seal's mark, made with the ledger head of the sealing batch.
pub(super) fn final_mark(
    payer: &str,
    month: BillingMonth,
    content_hash: &str,
    through_seq: u64,
    time: i64,
    ledger: ChainPosition,
) -> Mark {
    Mark {
        seq: 0,
        kind: MarkKind::Final {
            payer: payer.to_owned(),
            month: month.to_string(),
            content_hash: content_hash.to_owned(),
            adopted: false,
        },
        time,
        through_seq,
        ledger_seq: ledger.seq,
        ledger_hash: chain::to_hex(&ledger.hash),
        witnessed_seq: ledger.seq,
    }
}

/// Adopts the seals of a store upgraded from before the marks table (module docs): when the
/// marks chain is empty, appends one adopted `final` mark per `final_months` row, oldest seal
/// first (by `through_seq`, then month and payer), with the ledger head `ledger`. Does nothing
/// once any mark exists. Runs inside the caller's transaction, which must hold the journal lock;
/// returns how many seals it adopted.
pub(super) fn adopt_seals(tx: &Tx<'_>, time: i64, ledger: ChainPosition) -> Result<u64, DbError> {
    let marks: i64 = tx.query_row(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM ledger_marks",
        params![],
        |r| r.get(0),
    )?;
    if marks > 0 {
        return Ok(0);
    }
    let seals: Vec<(String, String, String, i64)> = tx.query_map(
        "SELECT payer_account_id, month, content_hash, through_seq FROM final_months
         ORDER BY through_seq, month, payer_account_id",
        params![],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let mut adopted = 0;
    for (payer, month, content_hash, through_seq) in seals {
        append(
            tx,
            Mark {
                seq: 0,
                kind: MarkKind::Final {
                    payer,
                    month,
                    content_hash,
                    adopted: true,
                },
                time,
                through_seq: u64::try_from(through_seq).unwrap_or(0),
                ledger_seq: ledger.seq,
                ledger_hash: chain::to_hex(&ledger.hash),
                witnessed_seq: ledger.seq,
            },
        )?;
        adopted += 1;
    }
    Ok(adopted)
}

/// Verifies the marks' chain and returns every mark, oldest first (a short table).
pub(super) fn verify(conn: &Conn) -> Result<(VerifySummary, Vec<Mark>), VerifyError> {
    let summary = verify_table(conn, "ledger_marks", COLUMNS, |row| {
        let n = |i: usize| row.get::<i64>(i);
        Ok(canonical(
            &row.get::<String>(3)?,
            n(4)?,
            row.get::<Option<String>>(5)?.as_deref(),
            row.get::<Option<String>>(6)?.as_deref(),
            row.get::<Option<String>>(7)?.as_deref(),
            n(8)?,
            n(9)?,
            &row.get::<String>(10)?,
            n(11)?,
            row.get::<Option<String>>(12)?.as_deref(),
        ))
    })?;
    Ok((summary, all(conn)?))
}

/// Every mark, oldest first.
pub(super) fn all(conn: &Conn) -> Result<Vec<Mark>, JournalError> {
    conn.query_map(
        &format!("SELECT seq, {COLUMNS} FROM ledger_marks ORDER BY seq"),
        params![],
        Mark::from_row,
    )
    .map_err(|e| JournalError::Unavailable(e.to_string()))
}

/// The last acceptance of a truncation, if any.
pub(super) fn last_acceptance(conn: &Conn) -> Result<Option<Mark>, JournalError> {
    conn.query_row(
        &format!(
            "SELECT seq, {COLUMNS} FROM ledger_marks WHERE kind = 'accept_truncation'
             ORDER BY seq DESC LIMIT 1"
        ),
        params![],
        Mark::from_row,
    )
    .optional()
    .map_err(|e| JournalError::Unavailable(e.to_string()))
}

/// The longest ledger the witnesses vouch for (module docs): `ledger_spend`'s record count,
/// and the seals and marks made since the last acceptance. `None` when nothing witnesses a
/// record (an empty store).
pub(super) fn witness(conn: &Conn) -> Result<Option<Witness>, JournalError> {
    let unavailable = |e: DbError| JournalError::Unavailable(e.to_string());
    let mut best: Option<Witness> = None;
    let mut consider = |seq: u64, source: String| {
        if seq > 0 && best.as_ref().is_none_or(|b| seq > b.seq) {
            best = Some(Witness { seq, source });
        }
    };
    let spend: i64 = conn
        .query_row(
            "SELECT CAST(COALESCE(SUM(records), 0) AS BIGINT) FROM ledger_spend",
            params![],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    consider(
        u64::try_from(spend).unwrap_or(0),
        format!("`ledger_spend` counts {spend} records"),
    );
    let accepted = last_acceptance(conn)?;
    let since = accepted.as_ref().map_or(0, |a| a.seq);
    let marks: Option<(i64, i64)> = conn
        .query_row(
            "SELECT ledger_seq, seq FROM ledger_marks WHERE seq >= ?1
             ORDER BY ledger_seq DESC LIMIT 1",
            params![since as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(unavailable)?;
    if let Some((ledger_seq, mark)) = marks {
        consider(
            u64::try_from(ledger_seq).unwrap_or(0),
            format!("ledger mark {mark} was made when the ledger ended at record {ledger_seq}"),
        );
    }
    // Seals whose mark is gone still witness their records.
    let final_months: Option<(i64, String, String)> = conn
        .query_row(
            "SELECT through_seq, payer_account_id, month FROM final_months
             ORDER BY through_seq DESC LIMIT 1",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(unavailable)?;
    if let Some((through, payer, month)) = final_months {
        // A seal made before an acceptance may name records the operator accepted as lost.
        let covered = accepted
            .as_ref()
            .is_some_and(|a| (through as u64) <= a.witnessed_seq);
        if !covered {
            consider(
                u64::try_from(through).unwrap_or(0),
                format!(
                    "`final_months` seals the {month} bill of payer {payer} through record {through}"
                ),
            );
        }
    }
    Ok(best)
}

/// Why the writer must not append: the ledger ends below its witnesses. `None` if it does not.
pub(super) fn truncation(
    conn: &Conn,
    head: ChainPosition,
) -> Result<Option<(u64, Witness)>, JournalError> {
    Ok(witness(conn)?
        .filter(|w| w.seq > head.seq)
        .map(|w| (head.seq, w)))
}
