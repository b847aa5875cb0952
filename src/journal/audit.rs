//! The ledger audit behind `tollgate ledger verify|head|accept-truncation` (SPEC M7, issue 17
//! item 6): the hash chain, plus what the chain alone cannot see.
//!
//! The chain finds an altered, inserted or missing record; records cut off the end leave a
//! valid shorter chain. The audit therefore also compares the ledger with its witnesses (see
//! `marks`): the per-account, per-month record counts in `ledger_spend`, the FINAL seals and the
//! marks' chain (a deleted or altered `final_months` row is named), and, when the auditor kept
//! one, an expected head `SEQ:HASH`. [`accept_truncation`] is the operator's acknowledgement of
//! a truncated ledger; it is the only writer of the journal tables besides the writer thread,
//! and it takes the same journal lock.
//!
//! Reads run in one snapshot on a reader connection; nothing here knows HTTP.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};

use super::marks::{self, Mark, MarkKind};
use super::read::{open_reader, parse_money};
use super::{ChainPosition, JournalError, VerifyError, VerifySummary, ledger};
use crate::billing::Money;
use crate::chain::{self, ChainBreak, Hash};
use crate::db::{Behavior, Conn, Database, OptionalExtension, params};
use crate::store::sql::{from_ms, to_ms};

/// What `ledger verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerAudit {
    /// The ledger chain, verified from genesis.
    pub chain: VerifySummary,
    /// Marks (seals and acceptances) verified.
    pub marks: u64,
    /// Everything wrong beyond the chain; empty when the ledger is complete.
    pub problems: Vec<LedgerProblem>,
    /// Losses an operator acknowledged, oldest first.
    pub accepted: Vec<AcceptedLoss>,
    /// Seals made before ledger marks existed, adopted when the upgraded store first opened
    /// (`marks` module docs), oldest first.
    pub adopted: Vec<AdoptedSeal>,
}

/// A FINAL seal that predates the ledger marks and was adopted at upgrade: its mark vouches
/// only for the `final_months` row as the writer found it then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptedSeal {
    pub mark: u64,
    pub payer: String,
    pub month: String,
    /// When the writer adopted it.
    pub at: DateTime<Utc>,
}

/// One thing missing or changed that the chain alone does not show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerProblem {
    /// Records were cut off the end.
    Truncated {
        ends_at: u64,
        witnessed: u64,
        witness: String,
    },
    /// `ledger_spend` counts more records of an account's month than the ledger holds.
    MissingRecords {
        account: String,
        month: String,
        counted: u64,
        present: u64,
    },
    /// The ledger holds more records of an account's month than `ledger_spend` counts (its row
    /// was deleted or edited).
    SpendRowChanged {
        account: String,
        month: String,
        counted: u64,
        present: u64,
    },
    /// A FINAL seal's `final_months` row was deleted: the bill would read ESTIMATED again.
    SealDeleted {
        payer: String,
        month: String,
        mark: u64,
    },
    /// A `final_months` row differs from the seal's mark.
    SealChanged {
        payer: String,
        month: String,
        mark: u64,
    },
    /// A `final_months` row that no seal's mark records (written outside tollgate).
    SealUnrecorded { payer: String, month: String },
    /// The auditor's expected head is beyond the end of the ledger.
    ExpectedHeadMissing { seq: u64, ends_at: u64 },
    /// The record at the auditor's expected head has another hash.
    ExpectedHeadDiffers {
        seq: u64,
        expected: Hash,
        found: Hash,
    },
}

/// An operator's acknowledgement of a truncated ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedLoss {
    pub mark: u64,
    pub actor: String,
    pub at: DateTime<Utc>,
    /// The ledger ends here since.
    pub through_seq: u64,
    /// Records `through_seq + 1 ..= witnessed_seq` were lost.
    pub witnessed_seq: u64,
}

/// Why `accept-truncation` refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    #[error(
        "the ledger ends at record {head}, not {through}: pass `--through {head}` to accept that it ends there"
    )]
    NotTheHead { through: u64, head: u64 },
    #[error(
        "the ledger ending at record {head} is not truncated (no witness shows more records): nothing to accept"
    )]
    NotTruncated { head: u64 },
    #[error(
        "the ledger's chain is broken ({0}): accept-truncation acknowledges only records cut off the end; restore the store from a backup"
    )]
    Broken(ChainBreak),
    #[error("`--by` must name who acknowledges the loss (1 to 200 characters)")]
    InvalidActor,
    #[error(transparent)]
    Journal(#[from] JournalError),
}

// === free functions ===

/// The stored head of the ledger (not verified; cheap): what `tollgate ledger head` prints.
pub fn ledger_head(db: &Database) -> Result<ChainPosition, JournalError> {
    let conn = open_reader(db)?;
    ledger::head(&conn)
}

/// Verifies the ledger chain and everything around it (module docs), in one read snapshot.
/// `expect_head` is a head `(seq, hash)` the auditor kept: the ledger must still hold it.
pub fn audit_ledger(
    db: &Database,
    expect_head: Option<(u64, Hash)>,
) -> Result<LedgerAudit, VerifyError> {
    let conn = open_reader(db)?;
    let _tx = conn
        .transaction(Behavior::Snapshot)
        .map_err(|e| JournalError::Unavailable(e.to_string()))?;
    let chain = ledger::verify(&conn)?;
    let (marks_summary, all_marks) = marks::verify(&conn)?;
    let mut problems = Vec::new();
    let head = ChainPosition {
        seq: chain.head_seq,
        hash: chain.head_hash,
    };
    if let Some((ends_at, witness)) = marks::truncation(&conn, head)? {
        problems.push(LedgerProblem::Truncated {
            ends_at,
            witnessed: witness.seq,
            witness: witness.source,
        });
    }
    problems.extend(spend_counts(&conn)?);
    problems.extend(seals(&conn, &all_marks)?);
    if let Some((seq, expected)) = expect_head {
        if seq > chain.head_seq {
            problems.push(LedgerProblem::ExpectedHeadMissing {
                seq,
                ends_at: chain.head_seq,
            });
        } else if seq > 0 {
            let found = record_hash(&conn, seq)?;
            if found != expected {
                problems.push(LedgerProblem::ExpectedHeadDiffers {
                    seq,
                    expected,
                    found,
                });
            }
        }
    }
    let accepted = all_marks
        .iter()
        .filter_map(|m| match &m.kind {
            MarkKind::AcceptTruncation { actor } => Some(AcceptedLoss {
                mark: m.seq,
                actor: actor.clone(),
                at: from_ms(m.time),
                through_seq: m.through_seq,
                witnessed_seq: m.witnessed_seq,
            }),
            MarkKind::Final { .. } => None,
        })
        .collect();
    let adopted = all_marks
        .iter()
        .filter_map(|m| match &m.kind {
            MarkKind::Final {
                payer,
                month,
                adopted: true,
                ..
            } => Some(AdoptedSeal {
                mark: m.seq,
                payer: payer.clone(),
                month: month.clone(),
                at: from_ms(m.time),
            }),
            _ => None,
        })
        .collect();
    Ok(LedgerAudit {
        chain,
        marks: marks_summary.records,
        problems,
        accepted,
        adopted,
    })
}

/// Acknowledges that the ledger ends at `through` (its current head) although its witnesses
/// show more records: records who (`actor`) and when, recounts `ledger_spend` from the ledger,
/// and so lets the gateway append again. Runs in one transaction under the journal lock.
pub fn accept_truncation(
    db: &Database,
    through: u64,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<AcceptedLoss, AcceptError> {
    let actor = actor.trim();
    if actor.is_empty() || actor.chars().count() > 200 {
        return Err(AcceptError::InvalidActor);
    }
    let unavailable = |e: crate::db::DbError| JournalError::Unavailable(e.to_string());
    let conn = db.connect().map_err(unavailable)?;
    let tx = conn.transaction(Behavior::Journal).map_err(unavailable)?;
    let chain = match ledger::verify(&tx) {
        Ok(summary) => summary,
        Err(VerifyError::Broken(b)) => return Err(AcceptError::Broken(b)),
        Err(VerifyError::Journal(e)) => return Err(e.into()),
    };
    let head = ChainPosition {
        seq: chain.head_seq,
        hash: chain.head_hash,
    };
    if head.seq != through {
        return Err(AcceptError::NotTheHead {
            through,
            head: head.seq,
        });
    }
    let Some((_, witness)) = marks::truncation(&tx, head)? else {
        return Err(AcceptError::NotTruncated { head: head.seq });
    };
    recount_spend(&tx)?;
    let mark = marks::append(
        &tx,
        Mark {
            seq: 0,
            kind: MarkKind::AcceptTruncation {
                actor: actor.to_owned(),
            },
            time: to_ms(now),
            through_seq: head.seq,
            ledger_seq: head.seq,
            ledger_hash: chain::to_hex(&head.hash),
            witnessed_seq: witness.seq,
        },
    )
    .map_err(unavailable)?;
    tx.commit().map_err(unavailable)?;
    Ok(AcceptedLoss {
        mark: mark.seq,
        actor: actor.to_owned(),
        at: from_ms(mark.time),
        through_seq: head.seq,
        witnessed_seq: witness.seq,
    })
}

/// `ledger_spend` again from the records the ledger holds (after an accepted loss).
fn recount_spend(conn: &Conn) -> Result<(), JournalError> {
    let unavailable = |e: crate::db::DbError| JournalError::Unavailable(e.to_string());
    let mut totals: BTreeMap<(String, String), (Money, i64)> = BTreeMap::new();
    conn.for_each(
        "SELECT account_id, billing_month, amount FROM ledger",
        params![],
        |row| {
            let key = (
                row.get::<String>(0).map_err(unavailable)?,
                row.get::<String>(1).map_err(unavailable)?,
            );
            let amount = parse_money(&row.get::<String>(2).map_err(unavailable)?)?;
            let slot = totals.entry(key).or_insert((Money::ZERO, 0));
            slot.0 = slot
                .0
                .checked_add(amount)
                .map_err(|e| JournalError::Corrupt(e.to_string()))?;
            slot.1 += 1;
            Ok::<_, JournalError>(true)
        },
    )?;
    conn.execute("DELETE FROM ledger_spend", params![])
        .map_err(unavailable)?;
    for ((account, month), (amount, records)) in totals {
        conn.execute(
            "INSERT INTO ledger_spend (account_id, month, amount, records) VALUES (?1, ?2, ?3, ?4)",
            params![account, month, amount.to_string(), records],
        )
        .map_err(unavailable)?;
    }
    Ok(())
}

/// `ledger_spend`'s record count of each account's month against the ledger's.
fn spend_counts(conn: &Conn) -> Result<Vec<LedgerProblem>, JournalError> {
    let unavailable = |e: crate::db::DbError| JournalError::Unavailable(e.to_string());
    let counted: BTreeMap<(String, String), i64> = conn
        .query_map(
            "SELECT account_id, month, records FROM ledger_spend",
            params![],
            |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)),
        )
        .map_err(unavailable)?
        .into_iter()
        .collect();
    let present: BTreeMap<(String, String), i64> = conn
        .query_map(
            "SELECT account_id, billing_month, COUNT(*) FROM ledger
             GROUP BY account_id, billing_month",
            params![],
            |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)),
        )
        .map_err(unavailable)?
        .into_iter()
        .collect();
    let mut keys: Vec<&(String, String)> = counted.keys().chain(present.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut problems = Vec::new();
    for key in keys {
        let c = counted.get(key).copied().unwrap_or(0).max(0) as u64;
        let p = present.get(key).copied().unwrap_or(0).max(0) as u64;
        let (account, month) = (key.0.clone(), key.1.clone());
        if c > p {
            problems.push(LedgerProblem::MissingRecords {
                account,
                month,
                counted: c,
                present: p,
            });
        } else if p > c {
            problems.push(LedgerProblem::SpendRowChanged {
                account,
                month,
                counted: c,
                present: p,
            });
        }
    }
    Ok(problems)
}

/// The seals in `final_months` against the seals' marks.
fn seals(conn: &Conn, all_marks: &[Mark]) -> Result<Vec<LedgerProblem>, JournalError> {
    let rows: BTreeMap<(String, String), (String, i64)> = conn
        .query_map(
            "SELECT payer_account_id, month, content_hash, through_seq FROM final_months",
            params![],
            |r| Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?))),
        )
        .map_err(|e| JournalError::Unavailable(e.to_string()))?
        .into_iter()
        .collect();
    let mut marked: BTreeMap<(String, String), &Mark> = BTreeMap::new();
    for mark in all_marks {
        if let MarkKind::Final { payer, month, .. } = &mark.kind {
            marked.insert((payer.clone(), month.clone()), mark);
        }
    }
    let mut problems = Vec::new();
    for ((payer, month), mark) in &marked {
        let MarkKind::Final { content_hash, .. } = &mark.kind else {
            continue;
        };
        match rows.get(&(payer.clone(), month.clone())) {
            None => problems.push(LedgerProblem::SealDeleted {
                payer: payer.clone(),
                month: month.clone(),
                mark: mark.seq,
            }),
            Some((hash, through))
                if hash != content_hash || *through as u64 != mark.through_seq =>
            {
                problems.push(LedgerProblem::SealChanged {
                    payer: payer.clone(),
                    month: month.clone(),
                    mark: mark.seq,
                });
            }
            Some(_) => {}
        }
    }
    for (payer, month) in rows.keys() {
        if !marked.contains_key(&(payer.clone(), month.clone())) {
            problems.push(LedgerProblem::SealUnrecorded {
                payer: payer.clone(),
                month: month.clone(),
            });
        }
    }
    Ok(problems)
}

fn record_hash(conn: &Conn, seq: u64) -> Result<Hash, JournalError> {
    let hash: Option<String> = conn
        .query_row(
            "SELECT hash FROM ledger WHERE seq = ?1",
            params![seq as i64],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| JournalError::Unavailable(e.to_string()))?;
    let hash = hash.ok_or_else(|| JournalError::Corrupt(format!("ledger record {seq} is gone")))?;
    chain::parse_hash(&hash).map_err(|e| JournalError::Corrupt(e.to_string()))
}

// === impl LedgerProblem ===

impl fmt::Display for LedgerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerProblem::Truncated {
                ends_at,
                witnessed,
                witness,
            } => write!(
                f,
                "truncated: the ledger ends at record {ends_at}, but {witness}: records {} to {witnessed} are missing ({} records)",
                ends_at + 1,
                witnessed - ends_at
            ),
            LedgerProblem::MissingRecords {
                account,
                month,
                counted,
                present,
            } => write!(
                f,
                "{} records of account {account} in {month} are missing: `ledger_spend` counts {counted}, the ledger holds {present}",
                counted - present
            ),
            LedgerProblem::SpendRowChanged {
                account,
                month,
                counted,
                present,
            } => write!(
                f,
                "the `ledger_spend` row of account {account} in {month} was deleted or changed: it counts {counted} records, the ledger holds {present}"
            ),
            LedgerProblem::SealDeleted { payer, month, mark } => write!(
                f,
                "the FINAL seal of the {month} bill of payer {payer} was deleted from `final_months` (ledger mark {mark} records it): the bill reads ESTIMATED"
            ),
            LedgerProblem::SealChanged { payer, month, mark } => write!(
                f,
                "the FINAL seal of the {month} bill of payer {payer} in `final_months` differs from ledger mark {mark}"
            ),
            LedgerProblem::SealUnrecorded { payer, month } => write!(
                f,
                "`final_months` seals the {month} bill of payer {payer}, but no ledger mark records that seal"
            ),
            LedgerProblem::ExpectedHeadMissing { seq, ends_at } => write!(
                f,
                "the expected head record {seq} is missing: the ledger ends at record {ends_at}, so records {} to {seq} are missing",
                ends_at + 1
            ),
            LedgerProblem::ExpectedHeadDiffers {
                seq,
                expected,
                found,
            } => write!(
                f,
                "record {seq} has hash {}, not the expected {}: the ledger was rewritten from there or before",
                chain::to_hex(found),
                chain::to_hex(expected)
            ),
        }
    }
}
