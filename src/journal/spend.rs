//! The month-to-date spend of each account, kept in memory so a request can read it without a
//! store round trip (spend-cap policies read it on every decision, SPEC P5).
//!
//! The writer is the only code that changes `ledger_spend`, and after each committed batch it
//! [`sets`](SpendBook::set) the absolute totals it wrote. A reader that finds no entry loads it
//! from the database *while holding the book's lock*, so a load and a writer's update never
//! interleave: either the load sees the commit (and the later `set` writes the same value) or
//! the `set` happens first (and the load is not needed). The book is therefore exactly the
//! committed `ledger_spend`, as a fresh read would be; it is only a cache: clearing it is safe.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::billing::Money;

/// Months kept; older ones are dropped when a new month appears.
const MONTHS_KEPT: usize = 2;

/// `month -> account -> amount` of committed ledger records.
#[derive(Debug, Default)]
pub struct SpendBook {
    months: Mutex<HashMap<String, HashMap<String, Money>>>,
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
