//! Largest-remainder allocation of a line total, in cents, to accounts by their quantities.
//!
//! Owns the one rule that makes shared lines add up exactly (SPEC M3): each share gets the
//! floor of its proportional cents, and the cents left over go one each to the largest
//! remainders. Ties go to the larger quantity, then to the smaller key (account id), so the
//! result never depends on input order. Works in integer cents: no rounding, no floats.

use std::collections::BTreeSet;

use super::money::Money;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocateError {
    #[error("cannot allocate `{total}`: not a whole number of cents")]
    NotWholeCents { total: Money },
    #[error("cannot allocate negative `{total}`")]
    Negative { total: Money },
    #[error("cannot allocate `{total}` over a combined quantity of zero")]
    NoQuantity { total: Money },
    #[error("the same key appears twice among the shares")]
    DuplicateKey,
    #[error("quantities too large to allocate")]
    Overflow,
}

/// Splits `total` (non-negative, whole cents) among `shares` `(key, quantity)` in proportion to
/// quantity. Returns `(key, amount)` in the input's order; the amounts sum to `total` exactly.
/// A zero total gives every key zero, even when all quantities are zero.
pub fn allocate_cents<K>(
    total: Money,
    shares: &[(K, u64)],
) -> Result<Vec<(K, Money)>, AllocateError>
where
    K: Ord + Clone,
{
    let cents = total
        .to_cents()
        .ok_or(AllocateError::NotWholeCents { total })?;
    let cents = u128::try_from(cents).map_err(|_| AllocateError::Negative { total })?;
    let keys: BTreeSet<&K> = shares.iter().map(|(k, _)| k).collect();
    if keys.len() != shares.len() {
        return Err(AllocateError::DuplicateKey);
    }
    let combined: u128 = shares.iter().map(|&(_, q)| u128::from(q)).sum();
    if combined == 0 {
        return if cents == 0 {
            Ok(shares
                .iter()
                .map(|(k, _)| (k.clone(), Money::ZERO))
                .collect())
        } else {
            Err(AllocateError::NoQuantity { total })
        };
    }

    // floor(cents * q / combined) and the remainder, per share.
    let mut parts = Vec::with_capacity(shares.len());
    for (index, (key, quantity)) in shares.iter().enumerate() {
        let numerator = cents
            .checked_mul(u128::from(*quantity))
            .ok_or(AllocateError::Overflow)?;
        parts.push(Part {
            index,
            key,
            quantity: *quantity,
            cents: numerator / combined,
            remainder: numerator % combined,
        });
    }
    let floors: u128 = parts.iter().map(|p| p.cents).sum();
    // Fewer leftover cents than shares, since each floor lost less than one cent.
    let leftover = cents.saturating_sub(floors);

    parts.sort_by(|a, b| {
        b.remainder
            .cmp(&a.remainder)
            .then(b.quantity.cmp(&a.quantity))
            .then(a.key.cmp(b.key))
    });
    for part in parts
        .iter_mut()
        .take(usize::try_from(leftover).unwrap_or(usize::MAX))
    {
        part.cents += 1;
    }
    parts.sort_by_key(|p| p.index);

    parts
        .into_iter()
        .map(|p| {
            let cents = i64::try_from(p.cents).map_err(|_| AllocateError::Overflow)?;
            Ok((p.key.clone(), Money::from_cents(cents)))
        })
        .collect()
}

struct Part<'a, K> {
    index: usize,
    key: &'a K,
    quantity: u64,
    cents: u128,
    remainder: u128,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::price::{RawPriceTier, RawRoutePrice, RoutePrice};

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn tiers(tiers: &[(Option<u64>, &'static str)]) -> RoutePrice {
        RoutePrice::parse(&RawRoutePrice {
            per_request_tiers: Some(
                tiers
                    .iter()
                    .map(|&(up_to, price)| RawPriceTier { up_to, price })
                    .collect(),
            ),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn alloc(total: &str, shares: &[(&'static str, u64)]) -> Vec<(&'static str, String)> {
        allocate_cents(m(total), shares)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect()
    }

    #[test]
    fn spec_m3_example() {
        let price = tiers(&[(Some(1000), "0.010"), (None, "0.005")]);
        let line = price
            .tier_total(800 + 400)
            .unwrap_or_else(|e| panic!("{e}"))
            .round_cents();
        assert_eq!(line.to_string(), "11.00");
        assert_eq!(
            allocate_cents(line, &[("A", 800), ("B", 400)]),
            Ok(vec![("A", m("7.33")), ("B", m("3.67"))])
        );
        let separately = price
            .tier_total(800)
            .and_then(|a| a.checked_add(price.tier_total(400)?));
        assert_eq!(separately, Ok(m("12")));
    }

    #[test]
    fn aws_reference_example() {
        let price = tiers(&[(Some(10), "174.08"), (None, "133.12")]);
        let line = price
            .tier_total(12)
            .unwrap_or_else(|e| panic!("{e}"))
            .round_cents();
        assert_eq!(line.to_string(), "2007.04");
        assert_eq!(
            alloc("2007.04", &[("A", 8), ("B", 4)]),
            vec![("A", "1338.03".into()), ("B", "669.01".into())]
        );
    }

    #[test]
    fn ties_go_to_larger_quantity_then_smaller_key_whatever_the_order() {
        // 0.10 over three equal shares: 3 each, one cent left, tie broken by key.
        assert_eq!(
            alloc("0.10", &[("c", 1), ("a", 1), ("b", 1)]),
            vec![
                ("c", "0.03".into()),
                ("a", "0.04".into()),
                ("b", "0.03".into())
            ]
        );
        // 0.02 over four equal shares: the two smallest keys.
        assert_eq!(
            alloc("0.02", &[("d", 1), ("b", 1), ("c", 1), ("a", 1)]),
            vec![
                ("d", "0.00".into()),
                ("b", "0.01".into()),
                ("c", "0.00".into()),
                ("a", "0.01".into())
            ]
        );
        // Equal remainders (half a cent each): the larger quantity wins over the smaller key.
        assert_eq!(
            alloc("0.02", &[("a", 1), ("b", 3)]),
            vec![("a", "0.00".into()), ("b", "0.02".into())]
        );
        // Input order never matters.
        let x = alloc("0.04", &[("a", 2), ("b", 3), ("c", 3)]);
        let y = alloc("0.04", &[("c", 3), ("b", 3), ("a", 2)]);
        let mut y_sorted = y.clone();
        y_sorted.sort();
        let mut x_sorted = x.clone();
        x_sorted.sort();
        assert_eq!(x_sorted, y_sorted);
        assert_eq!(
            x_sorted,
            vec![
                ("a", "0.01".into()),
                ("b", "0.02".into()),
                ("c", "0.01".into())
            ]
        );
    }

    #[test]
    fn zero_and_error_cases() {
        assert_eq!(
            alloc("0", &[("a", 0), ("b", 0)]),
            vec![("a", "0.00".into()), ("b", "0.00".into())]
        );
        assert_eq!(alloc("0", &[("a", 5)]), vec![("a", "0.00".into())]);
        assert_eq!(
            alloc("5", &[("a", 5), ("b", 0)]),
            vec![("a", "5.00".into()), ("b", "0.00".into())]
        );
        assert!(matches!(
            allocate_cents(m("1"), &[("a", 0)]),
            Err(AllocateError::NoQuantity { .. })
        ));
        assert!(matches!(
            allocate_cents(m("1.005"), &[("a", 1)]),
            Err(AllocateError::NotWholeCents { .. })
        ));
        assert!(matches!(
            allocate_cents(m("-1"), &[("a", 1)]),
            Err(AllocateError::Negative { .. })
        ));
        assert_eq!(
            allocate_cents(m("1"), &[("a", 1), ("a", 2)]),
            Err(AllocateError::DuplicateKey)
        );
        let empty: Vec<(&str, Money)> = Vec::new();
        assert_eq!(allocate_cents(m("0"), &[] as &[(&str, u64)]), Ok(empty));
    }

    /// A small deterministic generator, so the property test needs no extra crate.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
    }

    #[test]
    fn parts_always_sum_to_the_total_and_stay_within_a_cent_of_fair() {
        let mut rng = Lcg(42);
        for _ in 0..2_000 {
            let n = 1 + (rng.next() % 7) as usize;
            let shares: Vec<(u32, u64)> = (0..n)
                .map(|i| {
                    let q = match rng.next() % 4 {
                        0 => 0,
                        1 => rng.next() % 10,
                        2 => rng.next() % 100_000,
                        _ => rng.next() * 1_000,
                    };
                    (i as u32, q)
                })
                .collect();
            let combined: u64 = shares.iter().map(|s| s.1).sum();
            let cents = if combined == 0 {
                0
            } else {
                (rng.next() % 10_000_000) as i64
            };
            let total = Money::from_cents(cents);
            let parts = allocate_cents(total, &shares).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                Money::checked_sum(parts.iter().map(|p| p.1)),
                Ok(total),
                "{shares:?}"
            );
            for ((_, q), (_, amount)) in shares.iter().zip(&parts) {
                let got = amount.to_cents().unwrap_or(-1);
                assert!(got >= 0);
                // |got - fair| < 1 cent: floor(fair) <= got <= floor(fair) + 1.
                let fair_floor = i128::from(cents) * i128::from(*q) / i128::from(combined.max(1));
                assert!(
                    got == fair_floor || got == fair_floor + 1,
                    "{shares:?} {cents}"
                );
            }
        }
    }
}
