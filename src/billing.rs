//! Money, prices and bills: the pure arithmetic of consolidated billing (SPEC M3–M6, S2).
//!
//! Everything here takes plain data and returns plain data. It knows nothing of HTTP, SQL, the
//! config file or the clock; the ledger writer, the store and the API call into it.
//!
//! # Money and rounding
//! Amounts are [`Money`], an exact `rust_decimal::Decimal` in USD, parsed only from plain
//! decimal strings (`"0.0004"`; never `1e-4`, never through a float; this module denies float
//! arithmetic). Arithmetic is checked. There is one rounding rule, [`Money::round_cents`]: half
//! away from zero to cents (0.125 -> 0.13, -0.125 -> -0.13); `Decimal::round_dp` alone would
//! round half to even and is never used for money. Unit prices and per-call amounts stay exact;
//! only bill lines are rounded, once, from exact sums.
//!
//! # Prices
//! A [`RoutePrice`] has `per_request`, `per_gb_in`, `per_gb_out` and optional graduated
//! `per_request_tiers`. A GB is 2^30 bytes ([`BYTES_PER_GB`], AWS's billing GB). A call's
//! non-tiered amount is `per_request + bytes_in/GB * per_gb_in + bytes_out/GB * per_gb_out`,
//! exact; the ledger records it. A tiered action's request charge is not known per call: it
//! depends on the month's combined quantity, so it is computed on the bill.
//!
//! # The price book
//! Prices and plans are versioned ([`pricebook`]): each ledger record names the version it was
//! made under, and a bill prices every record with its own version, so changing the config
//! changes only what comes after (SPEC M4; issue 17).
//!
//! # Tier pooling and allocation
//! Usage made while a member of the payer's organization counts toward the organization's
//! combined monthly quantity of that action (the consolidated-billing volume benefit); usage
//! outside the organization is tiered on the account's own quantity. The pooled line total is
//! rounded to cents and shared out by [`allocate_cents`]: largest remainder in proportion to
//! each account's quantity, ties to the larger quantity then the smaller account id, so the
//! shares add up exactly to the line (SPEC M3: A 800 + B 400 requests at $0.010 for the first
//! 1,000 then $0.005: line $11.00, A $7.33, B $3.67).
//!
//! # Plans
//! A [`Plan`] (e.g. Premium Support) charges the greater of its monthly minimum and a graduated
//! percentage of the account's other charges that month, prorated by the days it was active; a
//! month with several plan periods charges each period pro rata on the whole month's other
//! charges and rounds once at the end (details in [`plan`]).
//!
//! # Bills
//! [`compute_bill`] turns a payer's month of usage aggregates, prices, plan periods and
//! adjustments into a [`Bill`]: per account, per `(service, action, unit)` lines; account total
//! = sum of its lines; bill total = sum of account totals. Late records of a month already FINAL
//! are booked on an open month as adjustment lines naming the original month. A FINAL bill is
//! sealed with [`Bill::content_hash`]. [`export`] renders CSV and a plain-text table.

#![deny(clippy::float_arithmetic)]

pub mod allocate;
pub mod bill;
pub mod export;
pub mod money;
pub mod month;
pub mod plan;
pub mod price;
pub mod pricebook;

pub use allocate::{AllocateError, allocate_cents};
pub use bill::{
    AccountBill, AccountPlans, Adjustment, Bill, BillError, BillInput, BillLine, BillStatus,
    CURRENCY, RouteKey, Unit, UsageAggregate, compute_bill,
};
pub use money::{Money, MoneyError, UnitPrice};
pub use month::{BillingMonth, MonthError};
pub use plan::{
    PercentTier, Plan, PlanError, PlanPeriod, RawPercentTier, RawPlan, charge_for_periods, prorated,
};
pub use price::{
    Amounts, BYTES_PER_GB, PriceError, PriceTier, RawPriceTier, RawRoutePrice, RoutePrice,
    marginal_price,
};
pub use pricebook::{PriceBook, PriceBookError, PriceHistory, PriceVersion, PriceVersionId};
