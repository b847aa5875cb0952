//! The month-to-date spend of each account, kept in memory so a request can read it without a
//! store round trip (spend-cap policies read it on every decision, SPEC P5).
//!
//! The writer is the only code that changes `ledger_spend`, and after each committed batch it
//! [`sets`](SpendBook::set) the absolute totals it wrote. A reader that finds no entry loads it
//! from the database *while holding the book's lock*, so a load and a writer's update never
//! interleave: either the load sees the commit (and the later `set` writes the same value) or
//! the `set` happens first (and the load is not needed). The book is therefore exactly the
//! committed `ledger_spend`, as a fresh read would be; it is only a cache: clearing it is safe.
//!
//! # Tiered calls (issue 17)
//! A tiered call's exact charge is known only on the bill (it depends on the month's pooled
//! quantity), so its record's amount is 0. For the spend, the writer estimates it at the
//! **pooled marginal rate at the time of the call**: the price of the tier holding the call's
//! position in its tier group's monthly quantity (the organization's, or the account's own
//! outside one), under the tiers of the call's own price version, and adds that to
//! `ledger_spend`. The pooled quantity of each group is kept here, in memory, beside the spend:
//! loaded once per group and month from the ledger by the writer (on its own connection), then
//! advanced by each committed batch, so no call costs a query. On a shared database other
//! instances' calls are not counted after the load, so the estimate can lag behind the bill
//! there (never ahead of it by more than the tier difference); the bill is exact.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::billing::{Money, PriceTier, marginal_price};

/// Months kept; older ones are dropped when a new month appears.
const MONTHS_KEPT: usize = 2;

/// `month -> account -> amount` of committed ledger records, and the pooled quantities of
/// tiered actions.
#[derive(Debug, Default)]
pub struct SpendBook {
    months: Mutex<HashMap<String, HashMap<String, Money>>>,
    pooled: Mutex<HashMap<PoolKey, u64>>,
}

/// A tier group's month: `(billing month, payer, service, action, pool)`; the pool is `org:<id>`
/// for usage while a member, else `account:<id>`.
type PoolKey = (String, String, String, String, String);

/// What a ledger record tells the estimate.
pub(super) struct TieredCall<'a> {
    pub month: &'a str,
    pub payer: &'a str,
    pub account: &'a str,
    pub org: Option<&'a str>,
    pub service: &'a str,
    pub action: &'a str,
    pub quantity: u64,
}

/// The pooled quantities one batch adds, applied to the book only when it commits.
#[derive(Debug, Default)]
pub(super) struct PoolBatch {
    deltas: HashMap<PoolKey, u64>,
}

// === impl SpendBook ===

impl SpendBook {
    /// The committed spend of `account` in `month`, if the book knows it.
    pub fn get(&self, account: &str, month: &str) -> Option<Money> {
        self.months.lock().get(month)?.get(account).copied()
    }

    /// The committed spend, loading it with `load` (a database read) when the book does not
    /// know it yet. `load` runs under the book's lock (see the module docs).
    pub fn get_or_load<E>(
        &self,
        account: &str,
        month: &str,
        load: impl FnOnce() -> Result<Money, E>,
    ) -> Result<Money, E> {
        let mut months = self.months.lock();
        if let Some(amount) = months.get(month).and_then(|m| m.get(account)) {
            return Ok(*amount);
        }
        let amount = load()?;
        month_entry(&mut months, month).insert(account.to_owned(), amount);
        Ok(amount)
    }

    /// The writer's absolute totals after a committed batch.
    pub(super) fn set(&self, totals: Vec<(String, String, Money)>) {
        if totals.is_empty() {
            return;
        }
        let mut months = self.months.lock();
        for (account, month, amount) in totals {
            month_entry(&mut months, &month).insert(account, amount);
        }
    }
}

impl SpendBook {
    /// The estimated charge of a tiered call (module docs): its quantity at the marginal rate
    /// of its position in the pool, counting what the book knows plus `batch` so far. `load`
    /// reads the pool's committed quantity from the ledger the first time (under the lock).
    pub(super) fn estimate_tiered<E>(
        &self,
        batch: &mut PoolBatch,
        call: &TieredCall<'_>,
        tiers: &[PriceTier],
        load: impl FnOnce() -> Result<u64, E>,
    ) -> Result<Money, E> {
        let pool = match call.org {
            Some(org) => format!("org:{org}"),
            None => format!("account:{}", call.account),
        };
        let key: PoolKey = (
            call.month.to_owned(),
            call.payer.to_owned(),
            call.service.to_owned(),
            call.action.to_owned(),
            pool,
        );
        let base = {
            let mut pooled = self.pooled.lock();
            match pooled.get(&key) {
                Some(q) => *q,
                None => {
                    let q = load()?;
                    pooled.insert(key.clone(), q);
                    q
                }
            }
        };
        let delta = batch.deltas.entry(key).or_default();
        let mut estimate = Money::ZERO;
        for _ in 0..call.quantity {
            *delta = delta.saturating_add(1);
            let position = base.saturating_add(*delta);
            estimate = estimate
                .checked_add(marginal_price(tiers, position))
                .unwrap_or(estimate);
        }
        Ok(estimate)
    }

    /// A committed batch's pooled quantities.
    pub(super) fn commit_pooled(&self, batch: PoolBatch) {
        if batch.deltas.is_empty() {
            return;
        }
        let mut pooled = self.pooled.lock();
        for (key, delta) in batch.deltas {
            let q = pooled.entry(key).or_default();
            *q = q.saturating_add(delta);
        }
        // Keep the newest months only, like the spend.
        let mut months: Vec<String> = pooled.keys().map(|k| k.0.clone()).collect();
        months.sort();
        months.dedup();
        if months.len() > MONTHS_KEPT {
            let keep = months.split_off(months.len() - MONTHS_KEPT);
            pooled.retain(|k, _| keep.contains(&k.0));
        }
    }
}

fn month_entry<'a>(
    months: &'a mut HashMap<String, HashMap<String, Money>>,
    month: &str,
) -> &'a mut HashMap<String, Money> {
    if !months.contains_key(month) {
        if months.len() >= MONTHS_KEPT {
            let mut keys: Vec<String> = months.keys().cloned().collect();
            keys.sort();
            for old in keys.iter().take(keys.len() + 1 - MONTHS_KEPT) {
                months.remove(old);
            }
        }
        months.insert(month.to_owned(), HashMap::new());
    }
    months.entry(month.to_owned()).or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(s: &str) -> Money {
        crate::journal::read::parse_money(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn loads_once_then_follows_the_writer() {
        let book = SpendBook::default();
        let loaded: Result<Money, ()> = book.get_or_load("a", "2026-03", || Ok(money("1.50")));
        assert_eq!(loaded, Ok(money("1.50")));
        let again: Result<Money, ()> = book.get_or_load("a", "2026-03", || Err(()));
        assert_eq!(again, Ok(money("1.50")), "no second load");
        book.set(vec![("a".into(), "2026-03".into(), money("2.00"))]);
        assert_eq!(book.get("a", "2026-03"), Some(money("2.00")));
        assert_eq!(book.get("b", "2026-03"), None);
    }

    #[test]
    fn tiered_calls_are_estimated_at_the_pooled_marginal_rate() {
        let tiers = [
            PriceTier {
                up_to: Some(2),
                price: money("1.00"),
            },
            PriceTier {
                up_to: None,
                price: money("0.50"),
            },
        ];
        let book = SpendBook::default();
        let call = |account| TieredCall {
            month: "2026-03",
            payer: "p",
            account,
            org: Some("o-1"),
            service: "compute",
            action: "compute:RunJob",
            quantity: 1,
        };
        let mut batch = PoolBatch::default();
        let first: Result<Money, ()> =
            book.estimate_tiered(&mut batch, &call("a"), &tiers, || Ok(1));
        assert_eq!(first, Ok(money("1.00")), "position 2 of the pool");
        let second: Result<Money, ()> =
            book.estimate_tiered(&mut batch, &call("b"), &tiers, || Err(()));
        assert_eq!(
            second,
            Ok(money("0.50")),
            "another member, same pool: position 3"
        );
        book.commit_pooled(batch);
        let mut next = PoolBatch::default();
        let third: Result<Money, ()> =
            book.estimate_tiered(&mut next, &call("a"), &tiers, || Err(()));
        assert_eq!(third, Ok(money("0.50")));
        // A failed batch's quantities are never committed.
        drop(next);
        let mut again = PoolBatch::default();
        let fourth: Result<Money, ()> =
            book.estimate_tiered(&mut again, &call("a"), &tiers, || Err(()));
        assert_eq!(fourth, Ok(money("0.50")));
    }

    #[test]
    fn keeps_only_recent_months() {
        let book = SpendBook::default();
        for month in ["2026-01", "2026-02", "2026-03"] {
            book.set(vec![("a".into(), month.into(), money("1"))]);
        }
        assert_eq!(book.get("a", "2026-01"), None);
        assert!(book.get("a", "2026-02").is_some());
        assert!(book.get("a", "2026-03").is_some());
    }
}
