//! Route prices (SPEC M3): per request, per GB in and out, and graduated request tiers.
//!
//! Owns validating prices given as decimal strings and the exact (unrounded) amounts they give.
//! It must not round: rounding to cents happens once, on bill lines.
//!
//! A GB here is 2^30 bytes (1,073,741,824), AWS's billing GB.

use std::sync::Arc;

use rust_decimal::Decimal;

use super::money::{Money, MoneyError, UnitPrice};

/// Bytes in a billing GB: 2^30.
pub const BYTES_PER_GB: u64 = 1 << 30;

/// A validated route price. Requests are priced either flat (`per_request`) or by graduated
/// tiers (`per_request_tiers`), never both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePrice {
    per_request: UnitPrice,
    per_gb_in: UnitPrice,
    per_gb_out: UnitPrice,
    /// Shared, so a call's charge can carry them to the spend estimate without a copy.
    per_request_tiers: Option<Arc<[PriceTier]>>,
}

/// One graduated tier: requests up to and including `up_to` (counted from the first of the
/// month) cost `price` each; `None` is the last, unbounded tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTier {
    pub up_to: Option<u64>,
    pub price: UnitPrice,
}

/// Route prices as written in config, before validation. Absent prices are zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRoutePrice<'a> {
    pub per_request: Option<&'a str>,
    pub per_gb_in: Option<&'a str>,
    pub per_gb_out: Option<&'a str>,
    pub per_request_tiers: Option<Vec<RawPriceTier<'a>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPriceTier<'a> {
    pub up_to: Option<u64>,
    pub price: &'a str,
}

/// One problem with a route price, naming the field (`per_request_tiers[1].up_to`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("`{field}`: {source}")]
    Amount { field: String, source: MoneyError },
    #[error("`{field}`: must be greater than the previous tier's `up_to` ({previous})")]
    TierNotAscending { field: String, previous: u64 },
    #[error("`{field}`: must be at least 1")]
    TierZero { field: String },
    #[error("`{field}`: only the last tier may omit `up_to`")]
    UnboundedTierNotLast { field: String },
    #[error("`per_request_tiers`: the last tier must omit `up_to` so every quantity has a price")]
    LastTierBounded,
    #[error("`per_request_tiers`: must list at least one tier")]
    NoTiers,
    #[error("`per_request` and `per_request_tiers` cannot both be set")]
    FlatAndTiered,
}

/// The exact, unrounded non-tiered amounts of some usage. For a tiered route `requests` is zero:
/// its request charge is computed on the bill, on the organization's pooled quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Amounts {
    pub requests: Money,
    pub gb_in: Money,
    pub gb_out: Money,
}

// === impl RoutePrice ===

/// No prices: every call is free.
impl Default for RoutePrice {
    fn default() -> Self {
        Self::flat(Money::ZERO, Money::ZERO, Money::ZERO)
    }
}

impl RoutePrice {
    /// Validates every field and reports every problem at once.
    pub fn parse(raw: &RawRoutePrice<'_>) -> Result<Self, Vec<PriceError>> {
        let mut errors = Vec::new();
        let mut amount = |field: &str, value: Option<&str>| match value {
            None => Money::ZERO,
            Some(s) => Money::parse_non_negative(s).unwrap_or_else(|source| {
                errors.push(PriceError::Amount {
                    field: field.to_owned(),
                    source,
                });
                Money::ZERO
            }),
        };
        let per_request = amount("per_request", raw.per_request);
        let per_gb_in = amount("per_gb_in", raw.per_gb_in);
        let per_gb_out = amount("per_gb_out", raw.per_gb_out);
        let per_request_tiers = match &raw.per_request_tiers {
            None => None,
            Some(tiers) => {
                if raw.per_request.is_some() {
                    errors.push(PriceError::FlatAndTiered);
                }
                Some(Arc::from(parse_tiers(tiers, &mut errors)))
            }
        };
        if errors.is_empty() {
            Ok(Self {
                per_request,
                per_gb_in,
                per_gb_out,
                per_request_tiers,
            })
        } else {
            Err(errors)
        }
    }

    /// A flat price with no tiers, from already-parsed amounts.
    pub fn flat(per_request: UnitPrice, per_gb_in: UnitPrice, per_gb_out: UnitPrice) -> Self {
        Self {
            per_request,
            per_gb_in,
            per_gb_out,
            per_request_tiers: None,
        }
    }

    /// The flat price per request; zero for a tiered route.
    pub fn per_request(&self) -> UnitPrice {
        self.per_request
    }

    pub fn per_gb_in(&self) -> UnitPrice {
        self.per_gb_in
    }

    pub fn per_gb_out(&self) -> UnitPrice {
        self.per_gb_out
    }

    pub fn per_request_tiers(&self) -> Option<&[PriceTier]> {
        self.per_request_tiers.as_deref()
    }

    /// The tiers, shared (for a call's charge: the spend estimate prices it on them).
    pub fn shared_tiers(&self) -> Option<Arc<[PriceTier]>> {
        self.per_request_tiers.clone()
    }

    pub fn is_tiered(&self) -> bool {
        self.per_request_tiers.is_some()
    }

    /// Exact non-tiered amounts of `requests` calls moving `bytes_in` and `bytes_out`:
    /// `requests * per_request`, `bytes_in / GB * per_gb_in`, `bytes_out / GB * per_gb_out`.
    /// Works for one call (what the ledger records) and for a month's aggregate alike.
    pub fn amounts(
        &self,
        requests: u64,
        bytes_in: u64,
        bytes_out: u64,
    ) -> Result<Amounts, MoneyError> {
        Ok(Amounts {
            requests: self.per_request.checked_mul_quantity(requests)?,
            gb_in: gb_amount(bytes_in, self.per_gb_in)?,
            gb_out: gb_amount(bytes_out, self.per_gb_out)?,
        })
    }

    /// Exact amount of one call, not counting tiers: `per_request + bytes_in/GB*per_gb_in +
    /// bytes_out/GB*per_gb_out` (for a tiered route the request part is zero).
    pub fn call_amount(&self, bytes_in: u64, bytes_out: u64) -> Result<Money, MoneyError> {
        self.amounts(1, bytes_in, bytes_out)?.total()
    }

    /// Exact graduated total for `quantity` requests in a month: each tier's slice of the
    /// quantity at that tier's price. Zero for a route without tiers.
    pub fn tier_total(&self, quantity: u64) -> Result<Money, MoneyError> {
        match &self.per_request_tiers {
            None => Ok(Money::ZERO),
            Some(tiers) => tier_total(tiers, quantity),
        }
    }
}

/// The price of the request at 1-based `position` of the month under graduated `tiers`: the
/// marginal rate (the last tier's price beyond every bound).
pub fn marginal_price(tiers: &[PriceTier], position: u64) -> UnitPrice {
    tiers
        .iter()
        .find(|t| t.up_to.is_none_or(|up_to| position <= up_to))
        .or(tiers.last())
        .map_or(Money::ZERO, |t| t.price)
}

/// `bytes * price / 2^30`, multiplying first so the only inexact step is one division.
fn gb_amount(bytes: u64, per_gb: UnitPrice) -> Result<Money, MoneyError> {
    if bytes == 0 || per_gb.is_zero() {
        return Ok(Money::ZERO);
    }
    per_gb
        .checked_mul_quantity(bytes)?
        .checked_div(Decimal::from(BYTES_PER_GB))
}

/// Graduated total over validated tiers (ascending, last unbounded).
pub(crate) fn tier_total(tiers: &[PriceTier], quantity: u64) -> Result<Money, MoneyError> {
    let mut total = Money::ZERO;
    let mut lower = 0u64;
    for tier in tiers {
        if quantity <= lower {
            break;
        }
        let upper = tier.up_to.map_or(quantity, |up_to| up_to.min(quantity));
        let slice = upper.saturating_sub(lower);
        total = total.checked_add(tier.price.checked_mul_quantity(slice)?)?;
        match tier.up_to {
            Some(up_to) => lower = up_to,
            None => break,
        }
    }
    Ok(total)
}

fn parse_tiers(raw: &[RawPriceTier<'_>], errors: &mut Vec<PriceError>) -> Vec<PriceTier> {
    if raw.is_empty() {
        errors.push(PriceError::NoTiers);
        return Vec::new();
    }
    let mut tiers = Vec::with_capacity(raw.len());
    let mut previous: Option<u64> = None;
    let last = raw.len() - 1;
    for (i, tier) in raw.iter().enumerate() {
        let field = |name: &str| format!("per_request_tiers[{i}].{name}");
        let price = Money::parse_non_negative(tier.price).unwrap_or_else(|source| {
            errors.push(PriceError::Amount {
                field: field("price"),
                source,
            });
            Money::ZERO
        });
        match tier.up_to {
            Some(0) => errors.push(PriceError::TierZero {
                field: field("up_to"),
            }),
            Some(up_to) => {
                if let Some(prev) = previous.filter(|&prev| up_to <= prev) {
                    errors.push(PriceError::TierNotAscending {
                        field: field("up_to"),
                        previous: prev,
                    });
                }
                previous = Some(up_to);
                if i == last {
                    errors.push(PriceError::LastTierBounded);
                }
            }
            None if i != last => errors.push(PriceError::UnboundedTierNotLast {
                field: field("up_to"),
            }),
            None => {}
        }
        tiers.push(PriceTier {
            up_to: tier.up_to,
            price,
        });
    }
    tiers
}

// === impl Amounts ===

impl Amounts {
    pub fn total(&self) -> Result<Money, MoneyError> {
        self.requests
            .checked_add(self.gb_in)?
            .checked_add(self.gb_out)
    }

    pub fn checked_add(&self, other: &Amounts) -> Result<Amounts, MoneyError> {
        Ok(Amounts {
            requests: self.requests.checked_add(other.requests)?,
            gb_in: self.gb_in.checked_add(other.gb_in)?,
            gb_out: self.gb_out.checked_add(other.gb_out)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn price(raw: RawRoutePrice<'_>) -> RoutePrice {
        RoutePrice::parse(&raw).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn tiered(tiers: &[(Option<u64>, &'static str)]) -> RawRoutePrice<'static> {
        RawRoutePrice {
            per_request_tiers: Some(
                tiers
                    .iter()
                    .map(|&(up_to, price)| RawPriceTier { up_to, price })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn flat_amounts_are_exact_and_use_binary_gb() {
        let p = price(RawRoutePrice {
            per_request: Some("0.0004"),
            per_gb_out: Some("0.09"),
            ..Default::default()
        });
        assert_eq!(p.call_amount(0, 0), Ok(m("0.0004")));
        // Exactly one GB out is 2^30 bytes, not 10^9.
        assert_eq!(p.call_amount(0, BYTES_PER_GB), Ok(m("0.0904")));
        assert_eq!(
            p.call_amount(0, 1_000_000_000).map(|a| a < m("0.0904")),
            Ok(true)
        );
        // Half a GB: 0.045 exactly, a cent midpoint that must survive unrounded.
        assert_eq!(p.call_amount(0, BYTES_PER_GB / 2), Ok(m("0.0454")));
        let a = p.amounts(3, 5 * BYTES_PER_GB, BYTES_PER_GB / 4);
        assert_eq!(
            a,
            Ok(Amounts {
                requests: m("0.0012"),
                gb_in: Money::ZERO,
                gb_out: m("0.0225"),
            })
        );
    }

    #[test]
    fn absent_prices_are_zero() {
        let p = price(RawRoutePrice::default());
        assert_eq!(p.call_amount(10, 10), Ok(Money::ZERO));
        assert!(!p.is_tiered());
    }

    #[test]
    fn tier_total_is_graduated() {
        let p = price(tiered(&[(Some(1000), "0.010"), (None, "0.005")]));
        assert_eq!(p.tier_total(0), Ok(Money::ZERO));
        assert_eq!(p.tier_total(800), Ok(m("8")));
        assert_eq!(p.tier_total(1000), Ok(m("10")));
        assert_eq!(p.tier_total(1001), Ok(m("10.005")));
        assert_eq!(p.tier_total(1200), Ok(m("11")));
        assert_eq!(p.per_request(), Money::ZERO);
        assert_eq!(p.call_amount(0, 0), Ok(Money::ZERO));

        let three = price(tiered(&[(Some(10), "3"), (Some(20), "2"), (None, "1")]));
        assert_eq!(three.tier_total(5), Ok(m("15")));
        assert_eq!(three.tier_total(15), Ok(m("40")));
        assert_eq!(three.tier_total(25), Ok(m("55")));
        let single = price(tiered(&[(None, "0.004")]));
        assert_eq!(single.tier_total(1000), Ok(m("4")));
    }

    #[test]
    fn aws_volume_example_in_tb() {
        let p = price(tiered(&[(Some(10), "174.08"), (None, "133.12")]));
        assert_eq!(p.tier_total(12), Ok(m("2007.04")));
        let separately = p
            .tier_total(8)
            .and_then(|a| a.checked_add(p.tier_total(4)?));
        assert_eq!(separately, Ok(m("2088.96")));
    }

    #[test]
    fn validation_names_each_bad_field() {
        let errors = RoutePrice::parse(&RawRoutePrice {
            per_request: Some("-1"),
            per_gb_in: Some("1e-3"),
            per_gb_out: Some("0.09"),
            per_request_tiers: None,
        })
        .err()
        .unwrap_or_default();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        let starts = |i: usize, field: &str| text.get(i).is_some_and(|t| t.starts_with(field));
        assert!(starts(0, "`per_request`"), "{text:?}");
        assert!(starts(1, "`per_gb_in`"), "{text:?}");
    }

    #[test]
    fn tiers_must_ascend_and_end_unbounded() {
        let errs = |raw: RawRoutePrice<'_>| RoutePrice::parse(&raw).err().unwrap_or_default();
        assert_eq!(
            errs(tiered(&[
                (Some(1000), "0.01"),
                (Some(1000), "0.005"),
                (None, "0.004")
            ])),
            vec![PriceError::TierNotAscending {
                field: "per_request_tiers[1].up_to".into(),
                previous: 1000
            }]
        );
        assert_eq!(
            errs(tiered(&[(Some(1000), "0.01"), (Some(2000), "0.005")])),
            vec![PriceError::LastTierBounded]
        );
        assert_eq!(
            errs(tiered(&[(None, "0.01"), (None, "0.005")])),
            vec![PriceError::UnboundedTierNotLast {
                field: "per_request_tiers[0].up_to".into()
            }]
        );
        assert_eq!(
            errs(tiered(&[(Some(0), "0.01"), (None, "0.005")])),
            vec![PriceError::TierZero {
                field: "per_request_tiers[0].up_to".into()
            }]
        );
        assert_eq!(errs(tiered(&[])), vec![PriceError::NoTiers]);
        let bad_price = errs(tiered(&[(Some(10), "0.01"), (None, "-0.005")]));
        assert!(
            matches!(&bad_price[..], [PriceError::Amount { field, .. }] if field == "per_request_tiers[1].price"),
            "{bad_price:?}"
        );
        let mut both = tiered(&[(None, "0.01")]);
        both.per_request = Some("0.01");
        assert_eq!(errs(both), vec![PriceError::FlatAndTiered]);
    }
}
