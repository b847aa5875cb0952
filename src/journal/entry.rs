//! What callers append: metered calls, body transfers, authorization decisions and policy
//! reloads, as plain domain values; and their conversion into the exact column values the
//! writer stores and hashes.
//!
//! The conversion runs on the caller's task (it is pure and cheap), so an entry that cannot be
//! stored is refused before it is queued and the single writer thread only does SQL and hashing.
//! JSON columns are built explicitly with `serde_json::json!` (domain types derive no serde).

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::JournalError;
use super::decisions::DecisionRow;
use super::ledger::LedgerRow;
use crate::authz::{Decision, OrgTier, PolicyRef, ReloadTrigger, Request, Resource, Tier, Verdict};
use crate::billing::{
    Amounts, BillingMonth, Money, MoneyError, PriceTier, PriceVersionId, RoutePrice, UnitPrice,
};
use crate::ids::{AccountId, OrgId, RequestId, UserName};
use crate::store::sql::to_ms;

/// A gateway-generated record id: `r-` and 32 lowercase hex digits. Unique per record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(String);

/// Who made a metered call and what it was; shared by a call and its transfer supplement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteredCall {
    pub request_id: RequestId,
    pub account_id: AccountId,
    /// The management account while the account is a member, else the account itself.
    pub payer_account_id: AccountId,
    /// The organization whose tier pool the usage counts in: set only while a member.
    pub org_id: Option<OrgId>,
    pub user_name: UserName,
    pub service: String,
    pub action: String,
    pub method: String,
    /// The upstream's status code.
    pub status: u16,
    /// The `X-Request-Id` an untrusted client sent, kept aside (F2).
    pub client_request_id: Option<RequestId>,
}

/// Unit prices in force and the exact (unrounded) amounts they gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// `None` when the route has no flat request price (unpriced or tiered).
    pub per_request: Option<UnitPrice>,
    pub per_gb_in: Option<UnitPrice>,
    pub per_gb_out: Option<UnitPrice>,
    /// The request charge is computed on the bill from graduated tiers (`amounts.requests` is 0).
    pub tiered: bool,
    pub amounts: Amounts,
    /// The price book version the prices come from (stored with the record: the bill prices
    /// the record with it). `None` only for records made without a price book (tests).
    pub price_version: Option<PriceVersionId>,
    /// A tiered route's tiers, in memory only (never stored: the version names them): the
    /// month-to-date spend estimates the call at its marginal rate (`journal::spend`).
    pub tiers: Option<Arc<[PriceTier]>>,
}

/// A metered call (SPEC M1), written before the response head is sent (M2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub record_id: RecordId,
    /// When the upstream answered.
    pub event_time: DateTime<Utc>,
    pub call: MeteredCall,
    pub bytes_in: u64,
    /// Bytes known when the head is sent (often 0; the rest comes as a [`TransferEntry`]).
    pub bytes_out: u64,
    pub charge: Charge,
}

/// Bytes of a response body that ended after the head was sent: a supplement to the call
/// `call_record_id`, quantity 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferEntry {
    pub record_id: RecordId,
    pub call_record_id: RecordId,
    /// When the body ended.
    pub event_time: DateTime<Utc>,
    pub call: MeteredCall,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// `per_request` is ignored; `amounts.requests` must be zero.
    pub charge: Charge,
}

/// What a decision record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionKind {
    /// A service call through `/svc/`.
    Service,
    /// A call of the gateway's own API.
    Api,
    /// A policy reload attempt (only from a [`ReloadEntry`]).
    Reload,
}

/// One authorization decision (SPEC D1), allow or deny. The full Cedar request is kept, so the
/// decision can be replayed against another policy tree (D4).
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionEntry {
    pub record_id: RecordId,
    /// `Service` or `Api`.
    pub kind: DecisionKind,
    pub time: DateTime<Utc>,
    pub request_id: RequestId,
    /// The `X-Request-Id` an untrusted client sent, kept aside (F2).
    pub client_request_id: Option<RequestId>,
    pub request: Request,
    pub decision: Decision,
}

/// One policy reload attempt (P7), success or failure; stored in the decision log as `reload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadEntry {
    pub record_id: RecordId,
    pub time: DateTime<Utc>,
    pub trigger: ReloadTrigger,
    /// The version active after the attempt: the new one, or the one kept after a failure.
    pub active_version: String,
    /// `None` when the tree was loaded.
    pub failure: Option<ReloadFailure>,
    /// Who asked, for an API reload.
    pub requested_by: Option<(AccountId, UserName)>,
    pub request_id: Option<RequestId>,
}

/// Why a reload was rejected (the first diagnostic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadFailure {
    /// Relative to the policies dir.
    pub file: Option<String>,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub message: String,
}

/// Anything the journal records.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Call(LedgerEntry),
    Transfer(TransferEntry),
    Decision(Box<DecisionEntry>),
    Reload(ReloadEntry),
}

/// An entry turned into column values; the writer adds position, booking and hashes.
pub(super) enum Pending {
    Ledger(Box<PendingLedger>),
    Decision(Box<DecisionRow>),
}

pub(super) struct PendingLedger {
    /// Every column but `commit_time`, `billing_month`, `original_month` (set by the writer).
    pub row: LedgerRow,
    pub event_month: BillingMonth,
    /// `row.amount`, for the running month-to-date spend.
    pub amount: Money,
    /// A tiered call's tiers, for the spend estimate (`journal::spend`).
    pub tiers: Option<Arc<[PriceTier]>>,
}

// === impl RecordId ===

impl RecordId {
    pub fn generate() -> Self {
        let bytes: [u8; 16] = rand::random();
        Self(format!("r-{}", hex::encode(bytes)))
    }

    /// Parses an id as stored (`r-` and 32 lowercase hex digits).
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("r-")?;
        (rest.len() == 32 && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl Charge ===

impl Charge {
    /// The charge of `requests` calls (1 for a call, 0 for a transfer) moving the given bytes
    /// at a route's prices; a tiered route's request amount is left to the bill.
    pub fn at_price(
        price: &RoutePrice,
        requests: u64,
        bytes_in: u64,
        bytes_out: u64,
    ) -> Result<Self, MoneyError> {
        let nonzero = |p: UnitPrice| (!p.is_zero()).then_some(p);
        Ok(Self {
            per_request: if price.is_tiered() {
                None
            } else {
                nonzero(price.per_request())
            },
            per_gb_in: nonzero(price.per_gb_in()),
            per_gb_out: nonzero(price.per_gb_out()),
            tiered: price.is_tiered(),
            amounts: price.amounts(requests, bytes_in, bytes_out)?,
            price_version: None,
            tiers: price.shared_tiers(),
        })
    }

    /// The same charge, made under price book version `version`.
    pub fn under(mut self, version: Option<PriceVersionId>) -> Self {
        self.price_version = version;
        self
    }

    /// No prices, no amounts.
    pub fn free() -> Self {
        Self {
            per_request: None,
            per_gb_in: None,
            per_gb_out: None,
            tiered: false,
            amounts: Amounts::default(),
            price_version: None,
            tiers: None,
        }
    }
}

// === impl Entry ===

impl From<LedgerEntry> for Entry {
    fn from(e: LedgerEntry) -> Self {
        Entry::Call(e)
    }
}

impl From<TransferEntry> for Entry {
    fn from(e: TransferEntry) -> Self {
        Entry::Transfer(e)
    }
}

impl From<DecisionEntry> for Entry {
    fn from(e: DecisionEntry) -> Self {
        Entry::Decision(Box::new(e))
    }
}

impl From<ReloadEntry> for Entry {
    fn from(e: ReloadEntry) -> Self {
        Entry::Reload(e)
    }
}

impl Entry {
    pub(super) fn into_pending(self) -> Result<Pending, JournalError> {
        match self {
            Entry::Call(e) => ledger_pending(
                e.record_id,
                None,
                e.event_time,
                e.call,
                1,
                e.bytes_in,
                e.bytes_out,
                e.charge,
            ),
            Entry::Transfer(e) => {
                if !e.charge.amounts.requests.is_zero() {
                    return Err(JournalError::Invalid(format!(
                        "transfer `{}` carries a request amount",
                        e.record_id
                    )));
                }
                let charge = Charge {
                    per_request: None,
                    ..e.charge
                };
                ledger_pending(
                    e.record_id,
                    Some(e.call_record_id),
                    e.event_time,
                    e.call,
                    0,
                    e.bytes_in,
                    e.bytes_out,
                    charge,
                )
            }
            Entry::Decision(e) => decision_row(*e).map(|r| Pending::Decision(Box::new(r))),
            Entry::Reload(e) => Ok(Pending::Decision(Box::new(reload_row(e)))),
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one private constructor shared by calls and transfers"
)]
fn ledger_pending(
    record_id: RecordId,
    call_record_id: Option<RecordId>,
    event_time: DateTime<Utc>,
    call: MeteredCall,
    quantity: i64,
    bytes_in: u64,
    bytes_out: u64,
    charge: Charge,
) -> Result<Pending, JournalError> {
    let stored = |what: &str, n: u64| {
        i64::try_from(n).map_err(|_| {
            JournalError::Invalid(format!("{what} {n} of `{record_id}` is out of range"))
        })
    };
    let bytes_in = stored("bytes_in", bytes_in)?;
    let bytes_out = stored("bytes_out", bytes_out)?;
    let amount = charge
        .amounts
        .total()
        .map_err(|e| JournalError::Invalid(format!("amount of `{record_id}`: {e}")))?;
    let event_month = BillingMonth::containing(event_time)
        .map_err(|e| JournalError::Invalid(format!("event time of `{record_id}`: {e}")))?;
    let price = |p: Option<UnitPrice>| p.map(|p| p.to_string());
    let price_version = charge
        .price_version
        .map(|v| {
            i64::try_from(v.get()).map_err(|_| {
                JournalError::Invalid(format!(
                    "price version {v} of `{record_id}` is out of range"
                ))
            })
        })
        .transpose()?;
    let row = LedgerRow {
        record_id: record_id.0,
        kind: if call_record_id.is_some() {
            "transfer"
        } else {
            "call"
        }
        .to_owned(),
        call_record_id: call_record_id.map(|r| r.0),
        event_time: to_ms(event_time),
        commit_time: 0,
        request_id: call.request_id.as_str().to_owned(),
        account_id: call.account_id.as_str().to_owned(),
        payer_account_id: call.payer_account_id.as_str().to_owned(),
        org_id: call.org_id.map(|o| o.as_str().to_owned()),
        user_name: call.user_name.as_str().to_owned(),
        service: call.service,
        action: call.action,
        method: call.method,
        status: i64::from(call.status),
        bytes_in,
        bytes_out,
        quantity,
        per_request: price(charge.per_request),
        per_gb_in: price(charge.per_gb_in),
        per_gb_out: price(charge.per_gb_out),
        tiered: charge.tiered,
        price_version,
        amount_requests: charge.amounts.requests.to_string(),
        amount_gb_in: charge.amounts.gb_in.to_string(),
        amount_gb_out: charge.amounts.gb_out.to_string(),
        amount: amount.to_string(),
        billing_month: String::new(),
        original_month: None,
        client_request_id: call.client_request_id.map(|r| r.as_str().to_owned()),
    };
    Ok(Pending::Ledger(Box::new(PendingLedger {
        row,
        event_month,
        amount,
        tiers: if charge.tiered && quantity > 0 {
            charge.tiers
        } else {
            None
        },
    })))
}

fn decision_row(e: DecisionEntry) -> Result<DecisionRow, JournalError> {
    let kind = match e.kind {
        DecisionKind::Service => "service",
        DecisionKind::Api => "api",
        DecisionKind::Reload => {
            return Err(JournalError::Invalid(format!(
                "decision `{}` has kind reload; record reloads with a ReloadEntry",
                e.record_id
            )));
        }
    };
    let d = &e.decision;
    let (org_applied, org_reason, org_policies) = match &d.organization {
        OrgTier::Applied(outcome) => (
            true,
            ORG_APPLIED_REASON,
            policies_json(&outcome.determining),
        ),
        OrgTier::NotApplied { reason } => (false, reason.as_str(), json!([])),
    };
    let mut errors: Vec<Value> = e
        .decision
        .account
        .errors
        .iter()
        .map(|m| json!({"tier": Tier::Account.as_str(), "message": m}))
        .collect();
    if let OrgTier::Applied(outcome) = &d.organization {
        errors.extend(
            outcome
                .errors
                .iter()
                .map(|m| json!({"tier": Tier::Organization.as_str(), "message": m})),
        );
    }
    let ctx = &e.request.context;
    Ok(DecisionRow {
        record_id: e.record_id.0,
        kind: kind.to_owned(),
        time: to_ms(e.time),
        request_id: Some(e.request_id.as_str().to_owned()),
        account_id: Some(e.request.principal.account.as_str().to_owned()),
        user_name: Some(e.request.principal.user.as_str().to_owned()),
        action: e.request.action.clone(),
        resource: resource_uid(&e.request),
        source_ip: Some(ctx.source_ip.to_string()),
        mfa: Some(ctx.mfa),
        decision: Some(verdict_str(d.verdict).to_owned()),
        denied_by: d.denied_by.map(|t| t.as_str().to_owned()),
        account_policies: policies_json(&d.account.determining).to_string(),
        org_applied,
        org_reason: Some(org_reason.to_owned()),
        org_policies: org_policies.to_string(),
        errors: Value::Array(errors).to_string(),
        policy_version: d.policy_version.clone(),
        request_json: request_json(&e.request).to_string(),
        client_request_id: e.client_request_id.map(|r| r.as_str().to_owned()),
    })
}

/// `org_reason` of a decision whose organization tier bound.
pub(super) const ORG_APPLIED_REASON: &str = "all_features_member";

/// The action and resource of a reload record.
pub(super) const RELOAD_ACTION: &str = "policy:Reload";
const RELOAD_RESOURCE: &str = "policies";

fn reload_row(e: ReloadEntry) -> DecisionRow {
    let errors = match &e.failure {
        None => json!([]),
        Some(f) => json!([{
            "file": f.file,
            "line": f.line,
            "column": f.column,
            "message": f.message,
        }]),
    };
    let detail = json!({
        "trigger": trigger_str(e.trigger),
        "result": if e.failure.is_some() { "rejected" } else { "loaded" },
        "active_version": e.active_version,
    });
    let (account_id, user_name) = match e.requested_by {
        Some((a, u)) => (Some(a.as_str().to_owned()), Some(u.as_str().to_owned())),
        None => (None, None),
    };
    DecisionRow {
        record_id: e.record_id.0,
        kind: "reload".to_owned(),
        time: to_ms(e.time),
        request_id: e.request_id.map(|r| r.as_str().to_owned()),
        account_id,
        user_name,
        action: RELOAD_ACTION.to_owned(),
        resource: RELOAD_RESOURCE.to_owned(),
        source_ip: None,
        mfa: None,
        decision: None,
        denied_by: None,
        account_policies: "[]".to_owned(),
        org_applied: false,
        org_reason: None,
        org_policies: "[]".to_owned(),
        errors: errors.to_string(),
        policy_version: e.active_version,
        request_json: detail.to_string(),
        client_request_id: None,
    }
}

pub(super) fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "Allow",
        Verdict::Deny => "Deny",
    }
}

pub(super) fn trigger_str(t: ReloadTrigger) -> &'static str {
    match t {
        ReloadTrigger::FileChange => "file_change",
        ReloadTrigger::Signal => "signal",
        ReloadTrigger::Api => "api",
        ReloadTrigger::Cli => "cli",
    }
}

fn policies_json(policies: &[PolicyRef]) -> Value {
    Value::Array(
        policies
            .iter()
            .map(|p| json!({"file": p.file, "id": p.id}))
            .collect(),
    )
}

/// The Cedar entity the action applied to, e.g. `Tollgate::Service::"123456789012/storage"`.
fn resource_uid(req: &Request) -> String {
    use crate::authz::names::{ACCOUNT_TYPE, SERVICE_TYPE, USER_TYPE};
    match &req.resource {
        Resource::Service { name } => {
            format!("{SERVICE_TYPE}::\"{}/{name}\"", req.principal.account)
        }
        Resource::Account(target) => format!("{ACCOUNT_TYPE}::\"{}\"", target.id),
        Resource::User(target) => {
            format!("{USER_TYPE}::\"{}/{}\"", req.principal.account, target.user)
        }
    }
}

/// The whole Cedar request, enough to rebuild it (`read::request_from_json`) and replay it.
fn request_json(req: &Request) -> Value {
    let p = &req.principal;
    let organization = req.organization.as_ref().map(|o| {
        json!({
            "id": o.id.as_str(),
            "feature_set": o.feature_set.as_str(),
            "management_account": o.management_account.as_str(),
        })
    });
    let resource = match &req.resource {
        Resource::Service { name } => json!({"type": "service", "name": name}),
        Resource::Account(t) => json!({
            "type": "account",
            "id": t.id.as_str(),
            "name": t.name,
            "organization": t.organization.as_ref().map(|o| o.as_str()),
        }),
        Resource::User(t) => json!({
            "type": "user",
            "user": t.user.as_str(),
            "is_owner": t.is_owner,
        }),
    };
    let c = &req.context;
    json!({
        "principal": {
            "account": p.account.as_str(),
            "account_name": p.account_name,
            "user": p.user.as_str(),
            "groups": p.groups.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
            "is_owner": p.is_owner,
        },
        "organization": organization,
        "action": req.action,
        "resource": resource,
        "context": {
            "mfa": c.mfa,
            "source_ip": c.source_ip.to_string(),
            "time": c.time,
            "method": c.method,
            "path": c.path,
            "month_to_date_spend": c.month_to_date_spend.to_string(),
        },
    })
}
