//! The price book (SPEC M3, M4, S2; issue 17): route prices and plans as versions, so a bill is
//! a function of the ledger alone.
//!
//! Owns the [`PriceBook`] (every route's [`RoutePrice`] and every service's [`Plan`] of one
//! configuration), its numbered versions ([`PriceVersion`], recorded by `crate::pricebook` when
//! the config's prices differ from the newest one) and the questions a bill asks of them
//! ([`PriceHistory`]): the prices a ledger record was made under (each record carries its
//! version id), the plan terms in force at an instant, and the *epoch* of a line: the first
//! version of the run of versions in which one unit of a route kept the same price, so that a
//! line is split only where its own price changed. It must not read a store or the config.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};

use super::bill::{RouteKey, Unit};
use super::plan::Plan;
use super::price::RoutePrice;

/// The number of a price book version: 1, 2, ... in the order they were recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PriceVersionId(u64);

/// Every route's prices and every service's plans of one configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceBook {
    pub routes: BTreeMap<RouteKey, RoutePrice>,
    /// By `(service, plan name)`.
    pub plans: BTreeMap<(String, String), Plan>,
}

/// One recorded version: in force from `effective_from` until the next version's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceVersion {
    pub id: PriceVersionId,
    pub effective_from: DateTime<Utc>,
    pub book: PriceBook,
}

/// Every recorded version, oldest first: what a bill prices with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceHistory {
    versions: Vec<PriceVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceBookError {
    #[error("price versions must be numbered 1, 2, ... in order; found {found} after {previous}")]
    OutOfOrder { previous: u64, found: u64 },
}

// === impl PriceVersionId ===

impl PriceVersionId {
    pub const FIRST: PriceVersionId = PriceVersionId(1);

    /// A stored id; 0 is not an id.
    pub fn new(id: u64) -> Option<Self> {
        (id > 0).then_some(Self(id))
    }

    pub fn get(self) -> u64 {
        self.0
    }

    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for PriceVersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

// === impl PriceBook ===

impl PriceBook {
    pub fn route(&self, route: &RouteKey) -> Option<&RoutePrice> {
        self.routes.get(route)
    }

    pub fn plan(&self, service: &str, name: &str) -> Option<&Plan> {
        self.plans.get(&(service.to_owned(), name.to_owned()))
    }
}

// === impl PriceHistory ===

impl PriceHistory {
    /// The versions, which must be numbered 1, 2, ... (any order given).
    pub fn new(mut versions: Vec<PriceVersion>) -> Result<Self, PriceBookError> {
        versions.sort_by_key(|v| v.id);
        let mut previous = 0;
        for v in &versions {
            if v.id.0 != previous + 1 {
                return Err(PriceBookError::OutOfOrder {
                    previous,
                    found: v.id.0,
                });
            }
            previous = v.id.0;
        }
        Ok(Self { versions })
    }

    /// One version, for tests and for a history of a single configuration.
    pub fn single(book: PriceBook, effective_from: DateTime<Utc>) -> Self {
        Self {
            versions: vec![PriceVersion {
                id: PriceVersionId::FIRST,
                effective_from,
                book,
            }],
        }
    }

    /// Sets a route's price in the first version (tests build a one-version history).
    #[cfg(test)]
    pub(crate) fn insert_route(&mut self, route: RouteKey, price: RoutePrice) {
        if let Some(first) = self.versions.first_mut() {
            first.book.routes.insert(route, price);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    pub fn newest(&self) -> Option<&PriceVersion> {
        self.versions.last()
    }

    /// The version a record names; a record from before the price book (no version) was made
    /// under the first one recorded.
    pub fn version(&self, id: Option<PriceVersionId>) -> Option<&PriceVersion> {
        match id {
            None => self.versions.first(),
            Some(id) => {
                let index = usize::try_from(id.0.checked_sub(1)?).ok()?;
                self.versions.get(index)
            }
        }
    }

    /// The version in force at `at`: the newest recorded at or before it (the first one for an
    /// instant before any).
    pub fn in_force_at(&self, at: DateTime<Utc>) -> Option<&PriceVersion> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.effective_from <= at)
            .or_else(|| self.versions.first())
    }

    /// The price of `route` in version `id` (see [`PriceHistory::version`]).
    pub fn route_price(&self, id: Option<PriceVersionId>, route: &RouteKey) -> Option<&RoutePrice> {
        self.version(id)?.book.route(route)
    }

    /// The plan terms of `service`'s plan `name` in force at `at`.
    pub fn plan_at(&self, service: &str, name: &str, at: DateTime<Utc>) -> Option<&Plan> {
        self.in_force_at(at)?.book.plan(service, name)
    }

    /// The epoch of `unit` of `route` under version `id`: the first version of the unbroken run
    /// of versions, ending at `id`, in which that unit had the same price (a route absent from a
    /// version breaks the run). Lines of one epoch are one line on a bill.
    pub fn epoch(
        &self,
        id: Option<PriceVersionId>,
        route: &RouteKey,
        unit: &Unit,
    ) -> Option<&PriceVersion> {
        let at = self.version(id)?;
        let key = unit_price(at.book.route(route), unit);
        let index = usize::try_from(at.id.0 - 1).ok()?;
        let mut start = at;
        for v in self.versions.get(..index)?.iter().rev() {
            if unit_price(v.book.route(route), unit) != key {
                break;
            }
            start = v;
        }
        Some(start)
    }
}

/// What identifies the price of one unit of a route: the flat price or tiers of requests, the
/// per-GB price of a GB unit. `None` for a route the version does not have.
fn unit_price(price: Option<&RoutePrice>, unit: &Unit) -> Option<String> {
    let price = price?;
    Some(match unit {
        Unit::Requests => match price.per_request_tiers() {
            None => format!("flat {}", price.per_request()),
            Some(tiers) => {
                let mut s = String::from("tiers");
                for t in tiers {
                    s.push_str(&format!(" {:?}:{}", t.up_to, t.price));
                }
                s
            }
        },
        Unit::GbIn => price.per_gb_in().to_string(),
        Unit::GbOut => price.per_gb_out().to_string(),
        Unit::Plan(_) => String::new(),
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::billing::{Money, RawPriceTier, RawRoutePrice};

    fn t(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 4, day, 0, 0, 0).unwrap()
    }

    fn book(put: RawRoutePrice<'_>) -> PriceBook {
        let mut b = PriceBook::default();
        b.routes.insert(
            RouteKey::new("storage", "storage:PutObject"),
            RoutePrice::parse(&put).unwrap(),
        );
        b
    }

    fn flat(p: &str) -> RawRoutePrice<'_> {
        RawRoutePrice {
            per_request: Some(p),
            per_gb_in: Some("0.02"),
            ..Default::default()
        }
    }

    #[test]
    fn epochs_split_only_where_a_units_price_changed() {
        let tiered = RawRoutePrice {
            per_request_tiers: Some(vec![RawPriceTier {
                up_to: None,
                price: "0.5",
            }]),
            per_gb_in: Some("0.02"),
            ..Default::default()
        };
        let history = PriceHistory::new(vec![
            PriceVersion {
                id: PriceVersionId(1),
                effective_from: t(1),
                book: book(flat("1.00")),
            },
            PriceVersion {
                id: PriceVersionId(2),
                effective_from: t(5),
                book: book(flat("1.0")),
            },
            PriceVersion {
                id: PriceVersionId(3),
                effective_from: t(9),
                book: book(tiered),
            },
        ])
        .unwrap();
        let put = RouteKey::new("storage", "storage:PutObject");
        let epoch = |v: u64, unit: Unit| {
            history
                .epoch(PriceVersionId::new(v), &put, &unit)
                .map(|e| e.id.0)
        };
        assert_eq!(epoch(2, Unit::Requests), Some(1), "the same price");
        assert_eq!(epoch(3, Unit::Requests), Some(3), "tiers now");
        assert_eq!(epoch(3, Unit::GbIn), Some(1), "GB-in never changed");
        assert_eq!(
            history.version(None).map(|v| v.id.0),
            Some(1),
            "a record without a version: the first"
        );
        assert_eq!(history.in_force_at(t(7)).map(|v| v.id.0), Some(2));
        assert_eq!(history.in_force_at(t(1)).map(|v| v.id.0), Some(1));
        assert_eq!(
            history
                .route_price(PriceVersionId::new(1), &put)
                .map(RoutePrice::per_request),
            Some(Money::parse("1").unwrap())
        );
        assert!(
            PriceHistory::new(vec![PriceVersion {
                id: PriceVersionId(2),
                effective_from: t(1),
                book: PriceBook::default()
            }])
            .is_err()
        );
    }
}
