//! Pure bill computation (SPEC M3–M6, S2): usage aggregates, prices and plans in, a `Bill` out.
//!
//! Owns turning a payer's month of usage into lines, per-account totals and a bill total, the
//! tier pooling and sharing, plan lines, adjustment lines for late records of a final month, and
//! the content hash of a bill. It must not read a store, the clock or the config: the caller
//! hands it plain data (and decides the status).
//!
//! Rules, in the order they are applied:
//! - Every aggregate must be billed to this bill's payer, and every account on it must be named.
//! - Lines are per account and `(service, action, unit)`, units `requests`, `GB-in`, `GB-out`
//!   and `plan:<name>`; adjustment lines are kept apart by the month they adjust.
//! - Prices come from the price book version each record was made under (`price_version`; a
//!   record from before the price book: the first version), never from today's config. A line
//!   is also keyed by its *epoch* (see [`PriceHistory::epoch`]): where the price of its unit
//!   changed within the month, the line is split, one per epoch, each with `prices_from` (the
//!   epoch's start, or the month's start if earlier) (SPEC M4).
//! - A non-tiered line's amount is its exact amounts (from the ledger) added, then rounded half
//!   away from zero to cents once. A GB unit without a price (zero or absent) puts no line on
//!   the bill (SPEC M3).
//! - A tiered record's (the ledger says `tiered`) request charge is computed per *tier group*
//!   on the group's combined monthly quantity, rounded to cents, and shared out by largest
//!   remainder in proportion to each account's quantity. The tier group is the organization
//!   (usage marked `in_org_tier_pool`) or, for usage outside it (e.g. before joining, after
//!   leaving), the account alone. Within a group the epochs are priced in version order, each on
//!   its own tiers, continuing the month's position where the previous epoch ended (only tiered
//!   usage counts toward tiers).
//! - A plan line is charged on the account's other charges of the month: its usage lines on this
//!   bill (not adjustments, not plans) plus `other_charges_elsewhere` (see
//!   [`super::plan`] for proration). Action `plan`, unit `plan:<name>`, quantity = active days.
//! - Adjustments (records that fell into a month already final, SPEC M6) become lines naming
//!   that `original_month`. Non-tiered amounts are taken as recorded; a tiered action continues
//!   its original month's tiers from `tier_base_quantity` (the quantity that month's final bill
//!   already charged for the same tier group), so a late record costs what it would have.
//! - An account total is the sum of its lines; the bill total the sum of account totals.
//! - Accounts sort by id; lines by original month (current month first), service, action, unit.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use sha2::{Digest, Sha256};

use super::allocate::{AllocateError, allocate_cents};
use super::money::{Money, MoneyError};
use super::month::BillingMonth;
use super::plan::{PlanError, PlanPeriod, exact_charge_for_periods};
use super::price::{Amounts, BYTES_PER_GB, RoutePrice};
use super::pricebook::{PriceHistory, PriceVersionId};
use crate::chain::{Canonical, Hash};
use crate::ids::{AccountId, OrgId};

/// All amounts are US dollars.
pub const CURRENCY: &str = "USD";

/// The `action` of plan lines.
pub const PLAN_ACTION: &str = "plan";

/// Decimal places shown for GB quantities (about a KiB); amounts are computed from bytes.
pub const GB_QUANTITY_DP: u32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BillStatus {
    /// The month is open or not yet finalized; the bill may still change.
    Estimated,
    /// Finalized: never changes again (SPEC M6).
    Final,
}

/// The unit a line counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unit {
    Requests,
    GbIn,
    GbOut,
    /// A service plan, by plan name.
    Plan(String),
}

/// A route: `(service, action)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    pub service: String,
    pub action: String,
}

/// One account's usage of one action in the month, summed from the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageAggregate {
    pub account_id: AccountId,
    /// The payer the records name (must be this bill's payer).
    pub billed_to: AccountId,
    /// The usage was made while a member of the payer's organization, so it counts toward the
    /// organization's combined tier quantity.
    pub in_org_tier_pool: bool,
    /// The organization whose tier pool the usage counts toward (with `in_org_tier_pool`): a
    /// payer that deleted its organization and created another in the same month has one tier
    /// group per organization, never one for both.
    pub tier_org: Option<OrgId>,
    pub service: String,
    pub action: String,
    /// Requests.
    pub quantity: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Exact sums of the recorded non-tiered amounts (see [`RoutePrice::amounts`]).
    pub amounts: Amounts,
    /// The price book version the records were made under (`None`: before the price book).
    pub price_version: Option<PriceVersionId>,
    /// The records' request charge is tiered (computed on the bill).
    pub tiered: bool,
}

/// Late usage of a month that was already final, booked on this bill (SPEC M6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    pub original_month: BillingMonth,
    pub usage: UsageAggregate,
    /// For a tiered action: the quantity of the same tier group already charged on the
    /// original month's final bill (the organization's combined quantity, or the account's own
    /// outside the pool). Adjustments of one group must agree on it. Zero for non-tiered.
    pub tier_base_quantity: u64,
}

/// An account's plan periods for one service this month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPlans {
    pub account_id: AccountId,
    pub service: String,
    pub periods: Vec<PlanPeriod>,
    /// The account's charges this month on other payers' bills (it changed payer mid-month);
    /// they count toward the plan's percentage like the charges on this bill.
    pub other_charges_elsewhere: Money,
}

/// Everything a bill is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillInput {
    pub month: BillingMonth,
    pub payer: AccountId,
    pub status: BillStatus,
    /// Every account on the bill, payer included, with its name. Accounts with no usage still
    /// appear (with a zero total).
    pub accounts: BTreeMap<AccountId, String>,
    pub usage: Vec<UsageAggregate>,
    /// The price book: every version the records name.
    pub prices: PriceHistory,
    pub plans: Vec<AccountPlans>,
    pub adjustments: Vec<Adjustment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bill {
    pub payer_account_id: AccountId,
    pub month: BillingMonth,
    pub status: BillStatus,
    /// Set on a single account's view of a consolidated bill (SPEC M4: a member sees only its
    /// own lines, marked as billed to the payer).
    pub billed_to: Option<AccountId>,
    pub accounts: Vec<AccountBill>,
    pub total: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountBill {
    pub account_id: AccountId,
    pub name: String,
    pub billed_to: AccountId,
    pub lines: Vec<BillLine>,
    pub total: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillLine {
    pub service: String,
    pub action: String,
    pub unit: Unit,
    /// Requests, GB (shown to [`GB_QUANTITY_DP`] places) or plan days.
    pub quantity: Decimal,
    /// Whole cents.
    pub amount: Money,
    /// For an adjustment line: the final month whose late usage it charges.
    pub original_month: Option<BillingMonth>,
    /// Set when the line's prices changed within its month (SPEC M4): from when these prices
    /// apply (the price version's start, or the month's start).
    pub prices_from: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillError {
    #[error("usage of account `{account_id}` is billed to `{billed_to}`, not to payer `{payer}`")]
    ForeignUsage {
        account_id: AccountId,
        billed_to: AccountId,
        payer: AccountId,
    },
    #[error("account `{account_id}` is on the bill but has no name")]
    UnknownAccount { account_id: AccountId },
    #[error(
        "an adjustment for `{original_month}` cannot be booked on `{month}`: it must adjust an earlier month"
    )]
    AdjustmentNotEarlier {
        original_month: BillingMonth,
        month: BillingMonth,
    },
    #[error(
        "adjustments of `{service}` `{action}` for `{original_month}` disagree on the quantity already billed"
    )]
    InconsistentTierBase {
        service: String,
        action: String,
        original_month: BillingMonth,
    },
    #[error(
        "tiered usage of `{service}` `{action}` names price version {version}, which has no tiers for it; the price book is incomplete"
    )]
    NoTiers {
        service: String,
        action: String,
        version: String,
    },
    #[error("quantity overflow")]
    QuantityOverflow,
    #[error(transparent)]
    Money(#[from] MoneyError),
    #[error(transparent)]
    Allocate(#[from] AllocateError),
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Computes a bill. Pure: the same input always gives the same bill, whatever the order of
/// its vectors.
pub fn compute_bill(input: &BillInput) -> Result<Bill, BillError> {
    let mut builder = Builder::new(input)?;
    for usage in &input.usage {
        builder.add_usage(usage, None, 0)?;
    }
    for adj in &input.adjustments {
        if adj.original_month >= input.month {
            return Err(BillError::AdjustmentNotEarlier {
                original_month: adj.original_month,
                month: input.month,
            });
        }
        builder.add_usage(&adj.usage, Some(adj.original_month), adj.tier_base_quantity)?;
    }
    builder.charge_tiers()?;
    builder.charge_plans()?;
    builder.finish()
}

// === impl Bill ===

impl Bill {
    pub fn account(&self, account_id: &AccountId) -> Option<&AccountBill> {
        self.accounts.iter().find(|a| &a.account_id == account_id)
    }

    /// What one account of the bill sees (SPEC M4): only its own lines, marked `billed_to` the
    /// payer; the total is its own. `None` if the account is not on the bill.
    pub fn for_account(&self, account_id: &AccountId) -> Option<Bill> {
        let account = self.account(account_id)?.clone();
        Some(Bill {
            payer_account_id: self.payer_account_id.clone(),
            month: self.month,
            status: self.status,
            billed_to: Some(self.payer_account_id.clone()),
            total: account.total,
            accounts: vec![account],
        })
    }

    /// The canonical encoding the content hash is taken over: every field, in order,
    /// length-prefixed (see [`Canonical`]).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::new("tollgate/bill/v1")
            .display("payer_account_id", &self.payer_account_id)
            .display("month", &self.month)
            .display("status", &self.status)
            .str("currency", CURRENCY)
            .opt_str("billed_to", self.billed_to.as_ref().map(AccountId::as_str))
            .count("accounts", self.accounts.len());
        for account in &self.accounts {
            let mut a = Canonical::new("account")
                .display("account_id", &account.account_id)
                .str("name", &account.name)
                .display("billed_to", &account.billed_to)
                .count("lines", account.lines.len());
            for line in &account.lines {
                let original = line.original_month.map(|m| m.to_string());
                let mut l = Canonical::new("line")
                    .str("service", &line.service)
                    .str("action", &line.action)
                    .display("unit", &line.unit)
                    .display("quantity", &line.quantity.normalize())
                    .display("amount", &line.amount)
                    .opt_str("original_month", original.as_deref());
                // Only on split lines, so bills sealed before the price book hash as they did.
                if let Some(from) = line.prices_from {
                    l = l.i64("prices_from", from.timestamp_millis());
                }
                a = a.nested("line", l);
            }
            c = c.nested("account", a.display("total", &account.total));
        }
        c.display("total", &self.total).finish()
    }

    /// SHA-256 of [`Bill::canonical_bytes`]: recorded when a bill becomes FINAL, so any later
    /// change to it is evident.
    pub fn content_hash(&self) -> Hash {
        Sha256::digest(self.canonical_bytes()).into()
    }

    pub fn content_hash_hex(&self) -> String {
        hex::encode(self.content_hash())
    }
}

// === impl BillStatus ===

impl BillStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            BillStatus::Estimated => "ESTIMATED",
            BillStatus::Final => "FINAL",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ESTIMATED" => Some(BillStatus::Estimated),
            "FINAL" => Some(BillStatus::Final),
            _ => None,
        }
    }
}

impl fmt::Display for BillStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Unit ===

impl Unit {
    /// Parses `requests`, `GB-in`, `GB-out` or `plan:<name>`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "requests" => Some(Unit::Requests),
            "GB-in" => Some(Unit::GbIn),
            "GB-out" => Some(Unit::GbOut),
            _ => s
                .strip_prefix("plan:")
                .filter(|name| !name.is_empty())
                .map(|name| Unit::Plan(name.to_owned())),
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unit::Requests => f.write_str("requests"),
            Unit::GbIn => f.write_str("GB-in"),
            Unit::GbOut => f.write_str("GB-out"),
            Unit::Plan(name) => write!(f, "plan:{name}"),
        }
    }
}

// === impl RouteKey ===

impl RouteKey {
    pub fn new(service: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            action: action.into(),
        }
    }
}

// === Builder: the computation's working state ===

/// `(original month, service, action, unit, epoch)`: `None` (this month) sorts first; the
/// epoch is the first price version of the line's prices (`None`: no price known).
type LineKey = (
    Option<BillingMonth>,
    String,
    String,
    Unit,
    Option<PriceVersionId>,
);

#[derive(Default)]
struct LineAcc {
    /// Requests, bytes or days.
    raw_quantity: u128,
    /// Exact amounts, rounded once at the end.
    exact: Money,
    /// Amounts already in whole cents (tier shares).
    cents: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TierPool {
    Organization(Option<OrgId>),
    Account(AccountId),
}

type TierGroupKey = (Option<BillingMonth>, RouteKey, TierPool);

#[derive(Default)]
struct TierGroup {
    base: Option<u64>,
    /// Per epoch (first price version of the tiers), in version order, each account's quantity.
    epochs: BTreeMap<PriceVersionId, BTreeMap<AccountId, u64>>,
}

struct Builder<'a> {
    input: &'a BillInput,
    lines: BTreeMap<AccountId, BTreeMap<LineKey, LineAcc>>,
    tiers: BTreeMap<TierGroupKey, TierGroup>,
}

impl<'a> Builder<'a> {
    fn new(input: &'a BillInput) -> Result<Self, BillError> {
        let mut lines = BTreeMap::new();
        for account_id in input.accounts.keys() {
            lines.insert(account_id.clone(), BTreeMap::new());
        }
        if !input.accounts.contains_key(&input.payer) {
            return Err(BillError::UnknownAccount {
                account_id: input.payer.clone(),
            });
        }
        Ok(Self {
            input,
            lines,
            tiers: BTreeMap::new(),
        })
    }

    fn account_lines(
        &mut self,
        account_id: &AccountId,
    ) -> Result<&mut BTreeMap<LineKey, LineAcc>, BillError> {
        self.lines
            .get_mut(account_id)
            .ok_or_else(|| BillError::UnknownAccount {
                account_id: account_id.clone(),
            })
    }

    fn add_usage(
        &mut self,
        usage: &UsageAggregate,
        original_month: Option<BillingMonth>,
        tier_base: u64,
    ) -> Result<(), BillError> {
        if usage.billed_to != self.input.payer {
            return Err(BillError::ForeignUsage {
                account_id: usage.account_id.clone(),
                billed_to: usage.billed_to.clone(),
                payer: self.input.payer.clone(),
            });
        }
        let route = RouteKey::new(&usage.service, &usage.action);
        let prices = &self.input.prices;
        let price = prices.route_price(usage.price_version, &route);
        let epoch = |unit: &Unit| {
            prices
                .epoch(usage.price_version, &route, unit)
                .map(|v| v.id)
        };
        let key = |unit: Unit| {
            let epoch = epoch(&unit);
            (
                original_month,
                usage.service.clone(),
                usage.action.clone(),
                unit,
                epoch,
            )
        };
        let tiered_epoch = if usage.tiered {
            match (
                price.is_some_and(RoutePrice::is_tiered),
                epoch(&Unit::Requests),
            ) {
                (true, Some(e)) => Some(e),
                _ => {
                    return Err(BillError::NoTiers {
                        service: usage.service.clone(),
                        action: usage.action.clone(),
                        version: usage.price_version.map_or_else(
                            || "1 (before the price book)".to_owned(),
                            |v| v.to_string(),
                        ),
                    });
                }
            }
        } else {
            None
        };
        let (requests_key, gb_in_key, gb_out_key) =
            (key(Unit::Requests), key(Unit::GbIn), key(Unit::GbOut));

        let lines = self.account_lines(&usage.account_id)?;
        let requests = lines.entry(requests_key).or_default();
        add_quantity(&mut requests.raw_quantity, usage.quantity)?;
        if tiered_epoch.is_none() {
            requests.exact = requests.exact.checked_add(usage.amounts.requests)?;
        }
        for (line_key, bytes, amount, per_gb) in [
            (
                gb_in_key,
                usage.bytes_in,
                usage.amounts.gb_in,
                price.map(RoutePrice::per_gb_in),
            ),
            (
                gb_out_key,
                usage.bytes_out,
                usage.amounts.gb_out,
                price.map(RoutePrice::per_gb_out),
            ),
        ] {
            // SPEC M3: lines carry only units that have a price.
            let priced = per_gb.is_some_and(|p| !p.is_zero());
            if amount.is_zero() && (bytes == 0 || !priced) {
                continue;
            }
            let line = lines.entry(line_key).or_default();
            add_quantity(&mut line.raw_quantity, bytes)?;
            line.exact = line.exact.checked_add(amount)?;
        }

        if let Some(epoch) = tiered_epoch {
            let pool = if usage.in_org_tier_pool {
                TierPool::Organization(usage.tier_org.clone())
            } else {
                TierPool::Account(usage.account_id.clone())
            };
            let group = self.tiers.entry((original_month, route, pool)).or_default();
            match (original_month, group.base) {
                (Some(month), Some(base)) if base != tier_base => {
                    return Err(BillError::InconsistentTierBase {
                        service: usage.service.clone(),
                        action: usage.action.clone(),
                        original_month: month,
                    });
                }
                _ => group.base = Some(tier_base),
            }
            let q = group
                .epochs
                .entry(epoch)
                .or_default()
                .entry(usage.account_id.clone())
                .or_default();
            *q = q
                .checked_add(usage.quantity)
                .ok_or(BillError::QuantityOverflow)?;
        }
        Ok(())
    }

    /// Prices each tier group on its combined quantity, epoch by epoch in version order (each
    /// on its own tiers, continuing where the previous ended), and shares each rounded total out.
    fn charge_tiers(&mut self) -> Result<(), BillError> {
        let tiers = std::mem::take(&mut self.tiers);
        for ((original_month, route, _pool), group) in tiers {
            let mut position = group.base.unwrap_or(0);
            for (epoch, quantities) in group.epochs {
                let price = self
                    .input
                    .prices
                    .route_price(Some(epoch), &route)
                    .ok_or_else(|| BillError::NoTiers {
                        service: route.service.clone(),
                        action: route.action.clone(),
                        version: epoch.to_string(),
                    })?;
                let combined = quantities
                    .values()
                    .try_fold(0u64, |acc, q| acc.checked_add(*q))
                    .ok_or(BillError::QuantityOverflow)?;
                let end = position
                    .checked_add(combined)
                    .ok_or(BillError::QuantityOverflow)?;
                let total = price
                    .tier_total(end)?
                    .checked_sub(price.tier_total(position)?)?
                    .round_cents();
                position = end;
                let shares: Vec<(AccountId, u64)> = quantities.into_iter().collect();
                for (account_id, amount) in allocate_cents(total, &shares)? {
                    let key = (
                        original_month,
                        route.service.clone(),
                        route.action.clone(),
                        Unit::Requests,
                        Some(epoch),
                    );
                    let line = self.account_lines(&account_id)?.entry(key).or_default();
                    line.cents = line.cents.checked_add(amount)?;
                }
            }
        }
        Ok(())
    }

    fn charge_plans(&mut self) -> Result<(), BillError> {
        let days_in_month = self.input.month.days_in_month();
        // Other charges are fixed before any plan line is added, so plans never charge on
        // each other whatever their order.
        let mut usage_charges: BTreeMap<AccountId, Money> = BTreeMap::new();
        for (account_id, lines) in &self.lines {
            let mut sum = Money::ZERO;
            for (key, line) in lines {
                if key.0.is_none() && !matches!(key.3, Unit::Plan(_)) {
                    sum = sum.checked_add(line_amount(line)?)?;
                }
            }
            usage_charges.insert(account_id.clone(), sum);
        }
        for plans in &self.input.plans {
            let on_bill = usage_charges
                .get(&plans.account_id)
                .copied()
                .ok_or_else(|| BillError::UnknownAccount {
                    account_id: plans.account_id.clone(),
                })?;
            let other = on_bill.checked_add(plans.other_charges_elsewhere)?;
            // Validates the days of all periods together.
            exact_charge_for_periods(&plans.periods, other, days_in_month)?;
            let names: BTreeSet<&str> = plans.periods.iter().map(|p| p.plan.name()).collect();
            for name in names {
                let periods: Vec<PlanPeriod> = plans
                    .periods
                    .iter()
                    .filter(|p| p.plan.name() == name)
                    .cloned()
                    .collect();
                let exact = exact_charge_for_periods(&periods, other, days_in_month)?;
                let days: u32 = periods.iter().map(|p| p.active_days).sum();
                let key = (
                    None,
                    plans.service.clone(),
                    PLAN_ACTION.to_owned(),
                    Unit::Plan(name.to_owned()),
                    None,
                );
                let line = self
                    .account_lines(&plans.account_id)?
                    .entry(key)
                    .or_default();
                add_quantity(&mut line.raw_quantity, u64::from(days))?;
                line.exact = line.exact.checked_add(exact)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Bill, BillError> {
        let payer = self.input.payer.clone();
        // Lines (of any account) whose unit had more than one epoch in their month are split
        // and show `prices_from`.
        let mut epochs: BTreeMap<
            (Option<BillingMonth>, &str, &str, &Unit),
            BTreeSet<PriceVersionId>,
        > = BTreeMap::new();
        for lines in self.lines.values() {
            for (month, service, action, unit, epoch) in lines.keys() {
                if let Some(epoch) = epoch {
                    epochs
                        .entry((*month, service, action, unit))
                        .or_default()
                        .insert(*epoch);
                }
            }
        }
        let split: BTreeSet<(Option<BillingMonth>, String, String, Unit)> = epochs
            .into_iter()
            .filter(|(_, e)| e.len() > 1)
            .map(|((m, s, a, u), _)| (m, s.to_owned(), a.to_owned(), u.clone()))
            .collect();
        let mut accounts = Vec::with_capacity(self.lines.len());
        for (account_id, lines) in self.lines {
            let name = self
                .input
                .accounts
                .get(&account_id)
                .cloned()
                .ok_or_else(|| BillError::UnknownAccount {
                    account_id: account_id.clone(),
                })?;
            let mut out = Vec::with_capacity(lines.len());
            for ((original_month, service, action, unit, epoch), line) in lines {
                let quantity = display_quantity(&unit, line.raw_quantity);
                let is_split = split.contains(&(
                    original_month,
                    service.clone(),
                    action.clone(),
                    unit.clone(),
                ));
                let prices_from = match epoch {
                    Some(epoch) if is_split => {
                        let start = original_month.unwrap_or(self.input.month).start();
                        self.input
                            .prices
                            .version(Some(epoch))
                            .map(|v| v.effective_from.max(start))
                    }
                    _ => None,
                };
                out.push(BillLine {
                    service,
                    action,
                    unit,
                    quantity,
                    amount: line_amount(&line)?,
                    original_month,
                    prices_from,
                });
            }
            let total = Money::checked_sum(out.iter().map(|l| l.amount))?;
            accounts.push(AccountBill {
                account_id,
                name,
                billed_to: payer.clone(),
                lines: out,
                total,
            });
        }
        let total = Money::checked_sum(accounts.iter().map(|a| a.total))?;
        Ok(Bill {
            payer_account_id: payer,
            month: self.input.month,
            status: self.input.status,
            billed_to: None,
            accounts,
            total,
        })
    }
}

fn add_quantity(acc: &mut u128, add: u64) -> Result<(), BillError> {
    *acc = acc
        .checked_add(u128::from(add))
        .ok_or(BillError::QuantityOverflow)?;
    Ok(())
}

/// The line's amount: exact parts rounded once, plus the parts already in cents.
fn line_amount(line: &LineAcc) -> Result<Money, MoneyError> {
    line.exact.round_cents().checked_add(line.cents)
}

fn display_quantity(unit: &Unit, raw: u128) -> Decimal {
    // A u128 beyond Decimal's 96 bits is not a real quantity; show the maximum.
    let raw = i128::try_from(raw)
        .ok()
        .and_then(|r| Decimal::try_from_i128_with_scale(r, 0).ok())
        .unwrap_or(Decimal::MAX);
    match unit {
        Unit::GbIn | Unit::GbOut => raw
            .checked_div(Decimal::from(BYTES_PER_GB))
            .unwrap_or(Decimal::ZERO)
            .round_dp_with_strategy(GB_QUANTITY_DP, RoundingStrategy::MidpointAwayFromZero)
            .normalize(),
        Unit::Requests | Unit::Plan(_) => raw,
    }
}

#[cfg(test)]
mod tests;
