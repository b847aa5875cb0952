//! Impact replay (D4): every logged service and API decision of a window is decided again
//! against a draft tree, and every decision whose verdict would change is listed, grouped by
//! account, action and direction, with the billed amount of the affected calls.
//!
//! The replayed request is the one recorded (`DecisionRecord::request`): the same principal,
//! groups, organization and feature set, context (time, source ip, MFA, month-to-date spend) as
//! when it was decided, so a flip is due to the draft alone. The comparison is with the verdict
//! that was logged, whatever tree was active then.

use std::collections::BTreeMap;

use crate::db::{Conn, params};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::AuditError;
use crate::authz::{PolicyRef, PolicySnapshot, Tier, Verdict};
use crate::billing::Money;
use crate::ids::AccountId;
use crate::journal::{DecisionKind, for_each_decision};

/// One decision that would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flip {
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub request_id: Option<String>,
    pub kind: DecisionKind,
    pub account: AccountId,
    pub user: String,
    pub action: String,
    pub resource: String,
    pub before: Verdict,
    pub after: Verdict,
    /// Under the draft.
    pub denied_by: Option<Tier>,
    /// The draft's determining policies (both tiers).
    pub determining: Vec<PolicyRef>,
    /// Billed for this call (ledger calls and transfers of its request id), exact.
    pub billed: Money,
}

/// Flips of one account and action in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlipGroup {
    pub account: AccountId,
    pub action: String,
    pub before: Verdict,
    pub after: Verdict,
    pub count: u64,
    pub billed: Money,
}

/// What a draft would change in a window of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImpactReport {
    pub draft_version: String,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Decisions decided again.
    pub replayed: u64,
    /// Decisions whose stored request does not parse back (not replayed).
    pub unreplayable: u64,
    /// Oldest first.
    pub flips: Vec<Flip>,
    /// By account, action, direction.
    pub groups: Vec<FlipGroup>,
    pub allow_to_deny: u64,
    pub deny_to_allow: u64,
    /// Sum of `billed` over every flip.
    pub billed: Money,
}

// === free functions ===

/// Replays the window `[since, until)` against `draft`. `progress` is called with the number of
/// decisions replayed so far, every 1,000.
pub fn replay(
    conn: &Conn,
    draft: &PolicySnapshot,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    mut progress: impl FnMut(u64),
) -> Result<ImpactReport, AuditError> {
    let mut replayed = 0u64;
    let mut unreplayable = 0u64;
    let mut flips = Vec::new();
    for_each_decision(conn, since, until, |record| {
        let (Some(request), Some(before), Some(account)) =
            (record.request(), record.decision, record.account_id.clone())
        else {
            unreplayable += 1;
            return true;
        };
        let decision = draft.decide(&request);
        replayed += 1;
        if replayed.is_multiple_of(1000) {
            progress(replayed);
        }
        if decision.verdict != before {
            flips.push(Flip {
                seq: record.seq,
                time: record.time,
                request_id: record.request_id.clone(),
                kind: record.kind,
                account,
                user: record.user_name.clone().unwrap_or_default(),
                action: record.action.clone(),
                resource: record.resource.clone(),
                before,
                after: decision.verdict,
                denied_by: decision.denied_by,
                determining: decision.determining().cloned().collect(),
                billed: Money::ZERO,
            });
        }
        true
    })?;
    progress(replayed);

    let mut groups: BTreeMap<(AccountId, String, bool), FlipGroup> = BTreeMap::new();
    let mut total = Money::ZERO;
    let overflow = |e: crate::billing::MoneyError| AuditError::Corrupt(e.to_string());
    for flip in &mut flips {
        if let Some(request_id) = &flip.request_id {
            let amounts = conn.query_map(
                "SELECT amount FROM ledger WHERE request_id = ?1 AND account_id = ?2 AND action = ?3",
                params![request_id, flip.account.as_str(), flip.action],
                |r| r.get::<String>(0),
            )?;
            for amount in amounts {
                let money = Decimal::from_str_exact(&amount)
                    .map(Money::from_decimal)
                    .map_err(|_| {
                        AuditError::Corrupt(format!("ledger amount `{amount}` is not a decimal"))
                    })?;
                flip.billed = flip.billed.checked_add(money).map_err(overflow)?;
            }
        }
        total = total.checked_add(flip.billed).map_err(overflow)?;
        let key = (
            flip.account.clone(),
            flip.action.clone(),
            flip.before == Verdict::Allow,
        );
        let group = groups.entry(key).or_insert_with(|| FlipGroup {
            account: flip.account.clone(),
            action: flip.action.clone(),
            before: flip.before,
            after: flip.after,
            count: 0,
            billed: Money::ZERO,
        });
        group.count += 1;
        group.billed = group.billed.checked_add(flip.billed).map_err(overflow)?;
    }
    let allow_to_deny = flips.iter().filter(|f| f.before == Verdict::Allow).count() as u64;
    Ok(ImpactReport {
        draft_version: draft.version().to_owned(),
        since,
        until,
        replayed,
        unreplayable,
        deny_to_allow: flips.len() as u64 - allow_to_deny,
        allow_to_deny,
        flips,
        groups: groups.into_values().collect(),
        billed: total,
    })
}

/// How many service and API decisions lie in `[since, until)`, for progress reports.
pub fn count_decisions(
    conn: &Conn,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<u64, AuditError> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM decisions WHERE kind IN ('service', 'api') AND time >= ?1 AND time < ?2",
        params![
            since.map_or(i64::MIN, crate::store::sql::to_ms),
            until.map_or(i64::MAX, crate::store::sql::to_ms)
        ],
        |r| r.get(0),
    )?;
    Ok(n.max(0) as u64)
}
