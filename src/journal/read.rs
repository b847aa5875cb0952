//! The read side of the journal, on connections other than the writer's (SQLite WAL and
//! PostgreSQL MVCC let readers see a consistent snapshot while writers commit): chain verification, the usage a
//! bill is computed from, month-to-date spend, FINAL months and decision queries (SPEC D2, D3).
//!
//! Nothing here writes. Stored values are parsed back into domain types; a value that does not
//! parse is reported as [`JournalError::Corrupt`], never guessed at.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;

use super::decisions::{self, DecisionRow};
use super::entry::{DecisionKind, ORG_APPLIED_REASON};
use super::{ChainPosition, JournalError, VerifyError, VerifySummary};
use crate::authz::{
    FeatureSet, OrgMembership, PolicyRef, Principal, Request, RequestContext, Resource,
    TargetAccount, TargetUser, Tier, Verdict,
};
use crate::billing::{Adjustment, Amounts, BillingMonth, Money, PriceVersionId, UsageAggregate};
use crate::chain::{self, Hash};
use crate::db::{
    Behavior, Conn, DbError, OptionalExtension, Row, ToValue, Value as SqlValue, params,
};
use crate::ids::{AccountId, GroupName, OrgId, UserName};
use crate::store::sql::{from_ms, to_ms};

/// A payer's month as the bill needs it, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillUsage {
    /// Usage of records of this month, per account, tier pool, service and action.
    pub usage: Vec<UsageAggregate>,
    /// Late records of FINAL months booked on this month (M6).
    pub adjustments: Vec<Adjustment>,
    /// The last ledger record of the snapshot: pass it to `Journal::mark_final`.
    pub through_seq: u64,
}

/// A FINAL bill's seal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalMonth {
    pub payer: AccountId,
    pub month: BillingMonth,
    pub finalized_at: DateTime<Utc>,
    pub content_hash: String,
    pub through_seq: u64,
}

/// `GET /decisions` filters. `accounts` is the set the caller may see (D2), already narrowed by
/// any `account=` parameter; an empty set matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionFilter {
    pub accounts: Vec<AccountId>,
    /// Accounts of `accounts` visible only from a time on (inclusive): a member, to its
    /// management account, from when it joined, never before (D2).
    pub visible_from: Vec<(AccountId, DateTime<Utc>)>,
    /// Matched regardless of case, like user names.
    pub user: Option<UserName>,
    pub action: Option<String>,
    pub decision: Option<Verdict>,
    /// Inclusive.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive.
    pub until: Option<DateTime<Utc>>,
    /// 1–1000; `None` = 100.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of decisions, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<DecisionRecord>,
    /// Present when more records may follow.
    pub next_cursor: Option<String>,
}

/// A stored decision-log record.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRecord {
    pub seq: u64,
    pub record_id: String,
    pub kind: DecisionKind,
    pub time: DateTime<Utc>,
    pub request_id: Option<String>,
    pub account_id: Option<AccountId>,
    pub user_name: Option<String>,
    pub action: String,
    pub resource: String,
    pub source_ip: Option<String>,
    pub mfa: Option<bool>,
    /// `None` for a reload.
    pub decision: Option<Verdict>,
    pub denied_by: Option<Tier>,
    pub account_policies: Vec<PolicyRef>,
    pub org_applied: bool,
    /// Why the organization tier did (`all_features_member`) or did not apply.
    pub org_reason: Option<String>,
    pub org_policies: Vec<PolicyRef>,
    pub errors: Vec<TierError>,
    pub policy_version: String,
    /// The full Cedar request (a decision) or the reload's trigger and result, as stored.
    pub request_json: String,
}

/// One evaluation error of a decision (or a reload's diagnostic, with no tier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierError {
    pub tier: Option<Tier>,
    pub message: String,
}

/// Why a decision query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("`limit` must be between 1 and {MAX_LIMIT}, got {limit}")]
    InvalidLimit { limit: u32 },
    #[error("invalid `cursor`: use the `next_cursor` of a previous page")]
    InvalidCursor,
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl From<DbError> for QueryError {
    fn from(e: DbError) -> Self {
        QueryError::Journal(e.into())
    }
}

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
const CURSOR_PREFIX: &str = "d1.";
/// Every cursor [`query_decisions`] takes, as `docs/openapi.json` states it.
pub const CURSOR_PATTERN: &str = "^d1\\.[1-9][0-9]{0,17}$";

// === free functions ===

/// A connection for reading (and for the verify commands), with the store's settings.
pub fn open_reader(db: &crate::db::Database) -> Result<Conn, JournalError> {
    db.reader().map_err(unavailable)
}

/// Usage and adjustments booked on `payer`'s `month`, summed exactly from the ledger.
pub fn usage_for_bill(
    conn: &Conn,
    payer: &AccountId,
    month: BillingMonth,
) -> Result<BillUsage, JournalError> {
    usage_for_bill_through(conn, payer, month, None)
}

/// [`usage_for_bill`] of the ledger as it was through record `through` (`None`: all of it):
/// how another payer's month looked when a bill that reads it was sealed (M6).
pub fn usage_for_bill_through(
    conn: &Conn,
    payer: &AccountId,
    month: BillingMonth,
    through: Option<u64>,
) -> Result<BillUsage, JournalError> {
    let tx = conn.transaction(Behavior::Snapshot).map_err(unavailable)?;
    let last: i64 = tx
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM ledger", params![], |r| {
            r.get(0)
        })
        .map_err(unavailable)?;
    let limit = through.map_or(i64::MAX, |t| i64::try_from(t).unwrap_or(i64::MAX));
    let through_seq = last.min(limit);
    // (original month, account, organization whose tier pool it counts toward, service, action,
    // price version, tiered): the bill prices each group with the version its records were made
    // under (issue 17), and pools tiers per organization named on the records.
    type Key = (
        Option<String>,
        String,
        Option<String>,
        String,
        String,
        Option<i64>,
        bool,
    );
    let mut groups: BTreeMap<Key, (u64, u64, u64, Amounts)> = BTreeMap::new();
    tx.for_each(
        "SELECT original_month, account_id, org_id, service, action,
                quantity, bytes_in, bytes_out, amount_requests, amount_gb_in, amount_gb_out,
                price_version, tiered
         FROM ledger WHERE payer_account_id = ?1 AND billing_month = ?2 AND seq <= ?3",
        params![payer.as_str(), month.to_string(), through_seq],
        |row| {
            let key: Key = (
                row.get(0).map_err(unavailable)?,
                row.get(1).map_err(unavailable)?,
                row.get(2).map_err(unavailable)?,
                row.get(3).map_err(unavailable)?,
                row.get(4).map_err(unavailable)?,
                row.get(11).map_err(unavailable)?,
                row.get(12).map_err(unavailable)?,
            );
            let count = |i: usize| -> Result<u64, JournalError> {
                let n: i64 = row.get(i).map_err(unavailable)?;
                u64::try_from(n).map_err(|_| corrupt(format!("negative count {n} in the ledger")))
            };
            let money = |i: usize| -> Result<Money, JournalError> {
                parse_money(&row.get::<String>(i).map_err(unavailable)?)
            };
            let amounts = Amounts {
                requests: money(8)?,
                gb_in: money(9)?,
                gb_out: money(10)?,
            };
            let (q, bi, bo) = (count(5)?, count(6)?, count(7)?);
            let slot = groups.entry(key).or_insert((0, 0, 0, Amounts::default()));
            let overflow = || corrupt("usage sums overflow".to_owned());
            slot.0 = slot.0.checked_add(q).ok_or_else(overflow)?;
            slot.1 = slot.1.checked_add(bi).ok_or_else(overflow)?;
            slot.2 = slot.2.checked_add(bo).ok_or_else(overflow)?;
            slot.3 = slot
                .3
                .checked_add(&amounts)
                .map_err(|e| corrupt(e.to_string()))?;
            Ok::<_, JournalError>(true)
        },
    )?;
    let mut usage = Vec::new();
    let mut adjustments = Vec::new();
    type BaseKey = (String, String, String, Option<String>, Option<String>);
    let mut bases: BTreeMap<BaseKey, u64> = BTreeMap::new();
    for (
        (original, account, org, service, action, price_version, tiered),
        (quantity, bytes_in, bytes_out, amounts),
    ) in groups
    {
        let account_id = AccountId::parse(&account).map_err(|e| corrupt(e.to_string()))?;
        let pooled = org.is_some();
        let tier_org = org
            .as_deref()
            .map(|o| OrgId::parse(o).map_err(|e| corrupt(format!("ledger org `{o}`: {e}"))))
            .transpose()?;
        let price_version = match price_version {
            None => None,
            Some(v) => Some(
                u64::try_from(v)
                    .ok()
                    .and_then(PriceVersionId::new)
                    .ok_or_else(|| corrupt(format!("price version {v} in the ledger")))?,
            ),
        };
        let aggregate = UsageAggregate {
            account_id,
            billed_to: payer.clone(),
            in_org_tier_pool: pooled,
            tier_org,
            service,
            action,
            quantity,
            bytes_in,
            bytes_out,
            amounts,
            price_version,
            tiered,
        };
        match original {
            None => usage.push(aggregate),
            Some(original) => {
                let original_month =
                    BillingMonth::parse(&original).map_err(|e| corrupt(e.to_string()))?;
                let pool = (!pooled).then(|| account.clone());
                let key = (
                    original.clone(),
                    aggregate.service.clone(),
                    aggregate.action.clone(),
                    pool.clone(),
                    org.clone(),
                );
                let base = if !tiered {
                    0
                } else {
                    match bases.get(&key) {
                        Some(b) => *b,
                        None => {
                            let b = tier_base(&tx, payer, &aggregate, &original, month, pool, org)?;
                            bases.insert(key, b);
                            b
                        }
                    }
                };
                adjustments.push(Adjustment {
                    original_month,
                    usage: aggregate,
                    tier_base_quantity: base,
                });
            }
        }
    }
    Ok(BillUsage {
        usage,
        adjustments,
        through_seq: through_seq as u64,
    })
}

/// The quantity a tier group already had when its late records are billed: the original
/// month's own records plus late records of it booked on earlier months.
fn tier_base(
    conn: &Conn,
    payer: &AccountId,
    usage: &UsageAggregate,
    original: &str,
    billed_in: BillingMonth,
    pool_account: Option<String>,
    pool_org: Option<String>,
) -> Result<u64, JournalError> {
    let n: i64 = conn
        .query_row(
            "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) FROM ledger
             WHERE payer_account_id = ?1 AND service = ?2 AND action = ?3 AND tiered <> 0
               AND ((billing_month = ?4 AND original_month IS NULL)
                    OR (original_month = ?4 AND billing_month < ?5))
               AND CASE WHEN CAST(?6 AS TEXT) IS NULL THEN org_id = ?7
                        ELSE org_id IS NULL AND account_id = ?6 END",
            params![
                payer.as_str(),
                usage.service,
                usage.action,
                original,
                billed_in.to_string(),
                pool_account,
                pool_org
            ],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    u64::try_from(n).map_err(|_| corrupt(format!("negative quantity sum {n}")))
}

/// Names of accounts from the accounts table (for the bill); unknown ids are left out.
pub fn account_names<'a>(
    conn: &Conn,
    ids: impl IntoIterator<Item = &'a AccountId>,
) -> Result<BTreeMap<AccountId, String>, JournalError> {
    let mut names = BTreeMap::new();
    for id in ids {
        let name: Option<String> = conn
            .query_row(
                "SELECT name FROM accounts WHERE id = ?1",
                params![id.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        if let Some(name) = name {
            names.insert(id.clone(), name);
        }
    }
    Ok(names)
}

/// The account's exact charges booked on the month containing `now` (one primary-key lookup
/// in the running total the writer keeps). The request charge of tiered routes is not in it:
/// it is known only on the bill.
pub fn month_to_date_spend(
    conn: &Conn,
    account: &AccountId,
    now: DateTime<Utc>,
) -> Result<Money, JournalError> {
    let month = BillingMonth::containing(now).map_err(|e| corrupt(e.to_string()))?;
    let amount: Option<String> = conn
        .query_row(
            "SELECT amount FROM ledger_spend WHERE account_id = ?1 AND month = ?2",
            params![account.as_str(), month.to_string()],
            |r| r.get(0),
        )
        .optional()
        .map_err(unavailable)?;
    amount.map_or(Ok(Money::ZERO), |a| parse_money(&a))
}

/// The seal of a FINAL month, if it is final.
pub fn final_month(
    conn: &Conn,
    payer: &AccountId,
    month: BillingMonth,
) -> Result<Option<FinalMonth>, JournalError> {
    conn.query_row(
        "SELECT finalized_at, content_hash, through_seq FROM final_months
         WHERE payer_account_id = ?1 AND month = ?2",
        params![payer.as_str(), month.to_string()],
        |r| {
            Ok(FinalMonth {
                payer: payer.clone(),
                month,
                finalized_at: from_ms(r.get(0)?),
                content_hash: r.get(1)?,
                through_seq: r.get::<i64>(2)? as u64,
            })
        },
    )
    .optional()
    .map_err(unavailable)
}

/// Decisions (not reloads) of the visible accounts matching `filter`, newest first.
pub fn query_decisions(conn: &Conn, filter: &DecisionFilter) -> Result<Page, QueryError> {
    let limit = filter.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(QueryError::InvalidLimit { limit });
    }
    let before = filter.cursor.as_deref().map(parse_cursor).transpose()?;
    if filter.accounts.is_empty() {
        return Ok(Page {
            records: Vec::new(),
            next_cursor: None,
        });
    }
    // Each account either whole, or from its `visible_from` time on.
    let mut whole = Vec::new();
    let mut scopes = Vec::new();
    let mut args: Vec<SqlValue> = Vec::new();
    for account in &filter.accounts {
        match filter.visible_from.iter().find(|(a, _)| a == account) {
            Some((_, from)) => {
                scopes.push("(account_id = ? AND time >= ?)".to_owned());
                args.push(SqlValue::Text(account.as_str().to_owned()));
                args.push(SqlValue::Integer(to_ms(*from)));
            }
            None => whole.push(SqlValue::Text(account.as_str().to_owned())),
        }
    }
    if !whole.is_empty() {
        scopes.insert(
            0,
            format!("account_id IN ({})", vec!["?"; whole.len()].join(", ")),
        );
        let scoped = std::mem::take(&mut args);
        args = whole;
        args.extend(scoped);
    }
    let mut sql = format!(
        "SELECT seq, prev_hash, hash, {} FROM decisions WHERE kind IN ('service', 'api') AND ({})",
        decisions::COLUMNS,
        scopes.join(" OR ")
    );
    if let Some(user) = &filter.user {
        sql.push_str(match conn.dialect() {
            // Matches the index on `user_name COLLATE NOCASE` / `lower(user_name)`.
            crate::db::Dialect::Sqlite => " AND user_name = ? COLLATE NOCASE",
            crate::db::Dialect::Postgres => " AND lower(user_name) = lower(?)",
        });
        args.push(SqlValue::Text(user.as_str().to_owned()));
    }
    if let Some(action) = &filter.action {
        sql.push_str(" AND action = ?");
        args.push(SqlValue::Text(action.clone()));
    }
    if let Some(decision) = filter.decision {
        sql.push_str(" AND decision = ?");
        args.push(SqlValue::Text(
            super::entry::verdict_str(decision).to_owned(),
        ));
    }
    if let Some(since) = filter.since {
        sql.push_str(" AND time >= ?");
        args.push(SqlValue::Integer(to_ms(since)));
    }
    if let Some(until) = filter.until {
        sql.push_str(" AND time < ?");
        args.push(SqlValue::Integer(to_ms(until)));
    }
    if let Some(before) = before {
        sql.push_str(" AND seq < ?");
        args.push(SqlValue::Integer(before));
    }
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    args.push(SqlValue::Integer(i64::from(limit) + 1));

    let refs: Vec<&dyn ToValue> = args.iter().map(|a| a as &dyn ToValue).collect();
    let mut records = select_decisions(conn, &sql, &refs)?;
    let next_cursor = if records.len() > limit as usize {
        records.truncate(limit as usize);
        records.last().map(|r| encode_cursor(r.seq))
    } else {
        None
    };
    Ok(Page {
        records,
        next_cursor,
    })
}

/// Every decision-log record of a request id, oldest first (ids may repeat: clients choose them).
pub fn decision_by_request_id(
    conn: &Conn,
    request_id: &str,
) -> Result<Vec<DecisionRecord>, JournalError> {
    let sql = format!(
        "SELECT seq, prev_hash, hash, {} FROM decisions WHERE request_id = ?1 ORDER BY seq",
        decisions::COLUMNS
    );
    select_decisions(conn, &sql, params![request_id]).map_err(|e| match e {
        QueryError::Journal(j) => j,
        other => JournalError::Corrupt(other.to_string()),
    })
}

/// Calls `f` with every service and API decision (not reloads) whose time is in
/// `[since, until)`, oldest first, in one read snapshot; stops early when `f` returns `false`.
/// For replaying the log (D4) without holding it in memory.
pub fn for_each_decision(
    conn: &Conn,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    mut f: impl FnMut(DecisionRecord) -> bool,
) -> Result<(), JournalError> {
    let tx = conn.transaction(Behavior::Snapshot).map_err(unavailable)?;
    let sql = format!(
        "SELECT seq, prev_hash, hash, {} FROM decisions
         WHERE kind IN ('service', 'api') AND time >= ?1 AND time < ?2 ORDER BY seq",
        decisions::COLUMNS
    );
    tx.for_each(
        &sql,
        params![since.map_or(i64::MIN, to_ms), until.map_or(i64::MAX, to_ms)],
        |row| {
            let seq: i64 = row.get(0).map_err(unavailable)?;
            let stored = DecisionRow::from_row(row, 3).map_err(unavailable)?;
            Ok::<_, JournalError>(f(DecisionRecord::from_stored(seq as u64, stored)?))
        },
    )
}

fn select_decisions(
    conn: &Conn,
    sql: &str,
    args: &[&dyn ToValue],
) -> Result<Vec<DecisionRecord>, QueryError> {
    let mut out = Vec::new();
    conn.for_each(sql, args, |row| {
        let seq: i64 = row.get(0).map_err(unavailable)?;
        let stored = DecisionRow::from_row(row, 3).map_err(unavailable)?;
        out.push(DecisionRecord::from_stored(seq as u64, stored)?);
        Ok::<_, QueryError>(true)
    })?;
    Ok(out)
}

fn encode_cursor(seq: u64) -> String {
    format!("{CURSOR_PREFIX}{seq}")
}

/// A cursor as [`CURSOR_PATTERN`] says: `d1.` and a positive sequence number. Plain text, so
/// the API document can state exactly which cursors exist; one past every record gives an empty
/// page, not an error.
fn parse_cursor(cursor: &str) -> Result<i64, QueryError> {
    cursor
        .strip_prefix(CURSOR_PREFIX)
        .filter(|n| n.len() <= 18 && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0'))
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .ok_or(QueryError::InvalidCursor)
}

/// The last record of `table` (`ledger` or `decisions`).
pub(super) fn chain_head(conn: &Conn, table: &str) -> Result<ChainPosition, JournalError> {
    let head: Option<(i64, String)> = conn
        .query_row(
            &format!("SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1"),
            params![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(unavailable)?;
    match head {
        None => Ok(ChainPosition::EMPTY),
        Some((seq, hash)) => Ok(ChainPosition {
            seq: u64::try_from(seq).map_err(|_| corrupt(format!("{table} seq {seq}")))?,
            hash: chain::parse_hash(&hash).map_err(|e| corrupt(format!("{table}: {e}")))?,
        }),
    }
}

/// Streams `table` in seq order through `chain::verify`, in one read snapshot.
pub(super) fn verify_table(
    conn: &Conn,
    table: &str,
    columns: &str,
    canonical: impl Fn(&Row<'_>) -> Result<Vec<u8>, DbError>,
) -> Result<VerifySummary, VerifyError> {
    verify_table_from(
        conn,
        table,
        columns,
        chain::FIRST_SEQ,
        chain::GENESIS,
        canonical,
    )
}

/// [`verify_table`] from a trusted checkpoint: the first stored record must be `first_seq` and
/// follow `prev_hash` (records before it were removed under that checkpoint).
pub(super) fn verify_table_from(
    conn: &Conn,
    table: &str,
    columns: &str,
    first_seq: u64,
    prev_hash: Hash,
    canonical: impl Fn(&Row<'_>) -> Result<Vec<u8>, DbError>,
) -> Result<VerifySummary, VerifyError> {
    // One read snapshot: our own, unless the caller already holds one (to read a checkpoint
    // in the same snapshot).
    let _tx = if conn.in_transaction() {
        None
    } else {
        Some(conn.transaction(Behavior::Snapshot).map_err(unavailable)?)
    };
    // Pages of records in seq order, fetched as the chain check pulls them: memory stays
    // bounded whatever the length of the chain.
    let sql = format!(
        "SELECT seq, prev_hash, hash, {columns} FROM {table} WHERE seq > ?1 ORDER BY seq LIMIT ?2"
    );
    let mut failure: Option<DbError> = None;
    // An unparsable stored hash can never match a computed one.
    const UNMATCHABLE: Hash = [0xff; 32];
    let mut page: std::collections::VecDeque<(u64, Vec<u8>, Hash, Hash)> = Default::default();
    let mut after: i64 = first_seq.saturating_sub(1).try_into().unwrap_or(i64::MAX);
    let mut exhausted = false;
    let records = std::iter::from_fn(|| {
        if page.is_empty() && !exhausted && failure.is_none() {
            let fetched = conn.query_map(&sql, params![after, VERIFY_PAGE], |row| {
                let seq: i64 = row.get(0)?;
                let prev: String = row.get(1)?;
                let hash: String = row.get(2)?;
                Ok((
                    u64::try_from(seq).unwrap_or(0),
                    canonical(row)?,
                    chain::parse_hash(&prev).unwrap_or(UNMATCHABLE),
                    chain::parse_hash(&hash).unwrap_or(UNMATCHABLE),
                ))
            });
            match fetched {
                Ok(rows) => {
                    exhausted = (rows.len() as i64) < VERIFY_PAGE;
                    if let Some(last) = rows.last() {
                        after = i64::try_from(last.0).unwrap_or(i64::MAX);
                    }
                    page.extend(rows);
                }
                Err(e) => failure = Some(e),
            }
        }
        page.pop_front()
    });
    let result = chain::verify_from(first_seq, prev_hash, records);
    if let Some(e) = failure {
        return Err(unavailable(e).into());
    }
    let head = result?;
    Ok(VerifySummary {
        records: head.count,
        head_seq: head.last_seq.unwrap_or(0),
        head_hash: head.hash,
    })
}

/// Records read per page while verifying a chain.
const VERIFY_PAGE: i64 = 4096;

/// Parses a stored exact amount (no length limit beyond `Decimal`'s, unlike config input).
pub(super) fn parse_money(s: &str) -> Result<Money, JournalError> {
    Decimal::from_str_exact(s)
        .map(Money::from_decimal)
        .map_err(|_| corrupt(format!("stored amount `{s}` is not an exact decimal")))
}

fn unavailable(e: impl std::fmt::Display) -> JournalError {
    JournalError::Unavailable(e.to_string())
}

fn corrupt(message: String) -> JournalError {
    JournalError::Corrupt(message)
}

// === impl DecisionRecord ===

impl DecisionRecord {
    fn from_stored(seq: u64, row: DecisionRow) -> Result<Self, JournalError> {
        let bad = |what: &str, v: &str| corrupt(format!("decision {seq}: bad {what} `{v}`"));
        let kind = match row.kind.as_str() {
            "service" => DecisionKind::Service,
            "api" => DecisionKind::Api,
            "reload" => DecisionKind::Reload,
            other => return Err(bad("kind", other)),
        };
        let decision = match row.decision.as_deref() {
            None => None,
            Some("Allow") => Some(Verdict::Allow),
            Some("Deny") => Some(Verdict::Deny),
            Some(other) => return Err(bad("decision", other)),
        };
        let denied_by = row
            .denied_by
            .as_deref()
            .map(|t| parse_tier(t).ok_or_else(|| bad("denied_by", t)))
            .transpose()?;
        let account_id = row
            .account_id
            .as_deref()
            .map(|a| AccountId::parse(a).map_err(|_| bad("account_id", a)))
            .transpose()?;
        Ok(Self {
            seq,
            record_id: row.record_id,
            kind,
            time: from_ms(row.time),
            request_id: row.request_id,
            account_id,
            user_name: row.user_name,
            action: row.action,
            resource: row.resource,
            source_ip: row.source_ip,
            mfa: row.mfa,
            decision,
            denied_by,
            account_policies: parse_policies(&row.account_policies)
                .ok_or_else(|| bad("account_policies", &row.account_policies))?,
            org_applied: row.org_applied,
            org_reason: row.org_reason,
            org_policies: parse_policies(&row.org_policies)
                .ok_or_else(|| bad("org_policies", &row.org_policies))?,
            errors: parse_errors(&row.errors).ok_or_else(|| bad("errors", &row.errors))?,
            policy_version: row.policy_version,
            request_json: row.request_json,
        })
    }

    /// Whether the organization tier bound this decision.
    pub fn org_tier_applied(&self) -> bool {
        self.org_applied && self.org_reason.as_deref() == Some(ORG_APPLIED_REASON)
    }

    /// The Cedar request as it was decided, to replay it against another tree (D4).
    /// `None` for a reload, or if the stored request does not parse.
    pub fn request(&self) -> Option<Request> {
        if self.kind == DecisionKind::Reload {
            return None;
        }
        request_from_json(&serde_json::from_str(&self.request_json).ok()?)
    }
}

fn parse_tier(s: &str) -> Option<Tier> {
    match s {
        "account" => Some(Tier::Account),
        "organization" => Some(Tier::Organization),
        _ => None,
    }
}

fn parse_policies(json: &str) -> Option<Vec<PolicyRef>> {
    let value: Value = serde_json::from_str(json).ok()?;
    value
        .as_array()?
        .iter()
        .map(|p| {
            Some(PolicyRef {
                file: p.get("file")?.as_str()?.to_owned(),
                id: p.get("id")?.as_str()?.to_owned(),
            })
        })
        .collect()
}

fn parse_errors(json: &str) -> Option<Vec<TierError>> {
    let value: Value = serde_json::from_str(json).ok()?;
    value
        .as_array()?
        .iter()
        .map(|e| {
            let message = e.get("message")?.as_str()?;
            let tier = e.get("tier").and_then(Value::as_str).and_then(parse_tier);
            // A reload diagnostic: prefix its location.
            let location = match (e.get("file").and_then(Value::as_str), e.get("line")) {
                (Some(file), Some(Value::Number(line))) => format!("{file}:{line}: "),
                (Some(file), _) => format!("{file}: "),
                _ => String::new(),
            };
            Some(TierError {
                tier,
                message: format!("{location}{message}"),
            })
        })
        .collect()
}

fn request_from_json(v: &Value) -> Option<Request> {
    let s = |v: &Value, k: &str| v.get(k)?.as_str().map(str::to_owned);
    let p = v.get("principal")?;
    let principal = Principal {
        account: AccountId::parse(&s(p, "account")?).ok()?,
        account_name: s(p, "account_name")?,
        user: UserName::parse(&s(p, "user")?).ok()?,
        groups: p
            .get("groups")?
            .as_array()?
            .iter()
            .map(|g| GroupName::parse(g.as_str()?).ok())
            .collect::<Option<Vec<_>>>()?,
        is_owner: p.get("is_owner")?.as_bool()?,
    };
    let organization = match v.get("organization")? {
        Value::Null => None,
        o => Some(OrgMembership {
            id: OrgId::parse(&s(o, "id")?).ok()?,
            feature_set: FeatureSet::parse(&s(o, "feature_set")?)?,
            management_account: AccountId::parse(&s(o, "management_account")?).ok()?,
        }),
    };
    let r = v.get("resource")?;
    let resource = match s(r, "type")?.as_str() {
        "service" => Resource::Service {
            name: s(r, "name")?,
        },
        "account" => Resource::Account(TargetAccount {
            id: AccountId::parse(&s(r, "id")?).ok()?,
            name: s(r, "name")?,
            organization: match r.get("organization")? {
                Value::Null => None,
                o => Some(OrgId::parse(o.as_str()?).ok()?),
            },
        }),
        "user" => Resource::User(TargetUser {
            user: UserName::parse(&s(r, "user")?).ok()?,
            is_owner: r.get("is_owner")?.as_bool()?,
        }),
        _ => return None,
    };
    let c = v.get("context")?;
    let context = RequestContext {
        mfa: c.get("mfa")?.as_bool()?,
        source_ip: s(c, "source_ip")?.parse::<IpAddr>().ok()?,
        time: c.get("time")?.as_i64()?,
        method: s(c, "method")?,
        path: s(c, "path")?,
        month_to_date_spend: Decimal::from_str_exact(&s(c, "month_to_date_spend")?).ok()?,
    };
    Some(Request {
        principal,
        organization,
        action: s(v, "action")?,
        resource,
        context,
    })
}
