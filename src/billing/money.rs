//! `Money`: an exact USD amount over `rust_decimal::Decimal`, and the one rounding rule.
//!
//! Owns parsing amounts from decimal strings, checked arithmetic and rounding to cents (half
//! away from zero, never banker's rounding). It must not know where amounts come from (config,
//! ledger) and must never touch a float.

use std::fmt;
use std::iter::Sum;
use std::str::FromStr;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

/// An exact amount of money in USD. May be negative (credits, adjustments); prices are parsed
/// with [`Money::parse_non_negative`]. Arithmetic is checked: an overflow is an error, never a
/// wrap or a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(Decimal);

/// A price per unit (a request, a GB, a tier's request). Unit prices keep every decimal they
/// were written with ("0.0004"); only line amounts are rounded to cents.
pub type UnitPrice = Money;

/// Why a string or a computation does not give an amount of money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("invalid amount `{input}`: {reason}")]
    Invalid { input: String, reason: &'static str },
    #[error("amount `{input}` must not be negative")]
    Negative { input: String },
    #[error("amount overflows the exact decimal range")]
    Overflow,
    #[error("division by zero")]
    DivisionByZero,
}

/// Longest amount string we accept; an amount needs far fewer, and it bounds the work.
const MAX_INPUT_LEN: usize = 40;

// === impl Money ===

impl Money {
    pub const ZERO: Money = Money(Decimal::ZERO);

    /// Wraps an exact decimal. Prefer [`Money::parse`] at the edges.
    pub const fn from_decimal(value: Decimal) -> Self {
        Money(value)
    }

    /// A whole number of cents, e.g. `from_cents(1100)` is 11.00.
    pub fn from_cents(cents: i64) -> Self {
        Money(Decimal::new(cents, 2))
    }

    pub const fn as_decimal(&self) -> Decimal {
        self.0
    }

    /// Parses a plain decimal string: an optional `-`, digits, and optionally `.` and digits.
    /// Exponents, `+`, spaces, `_`, `NaN`, `inf`, a bare `.5` or `5.` are refused, so a value
    /// that went through a float (`1e-4`) never sneaks in.
    pub fn parse(input: &str) -> Result<Self, MoneyError> {
        let invalid = |reason| MoneyError::Invalid {
            input: input.chars().take(MAX_INPUT_LEN).collect(),
            reason,
        };
        if input.is_empty() {
            return Err(invalid("expected a decimal number such as `0.0004`"));
        }
        if input.len() > MAX_INPUT_LEN {
            return Err(invalid("too long"));
        }
        let unsigned = input.strip_prefix('-').unwrap_or(input);
        let (int_part, frac_part) = match unsigned.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (unsigned, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int_part) || !frac_part.is_none_or(all_digits) {
            return Err(invalid(
                "expected digits with an optional `-` and decimal point, e.g. `12.50`",
            ));
        }
        let value =
            Decimal::from_str_exact(input).map_err(|_| invalid("more digits than fit exactly"))?;
        Ok(Money(normalize_zero(value)))
    }

    /// [`Money::parse`], refusing negative amounts (prices, minimums).
    pub fn parse_non_negative(input: &str) -> Result<Self, MoneyError> {
        let money = Self::parse(input)?;
        if money.is_negative() {
            return Err(MoneyError::Negative {
                input: input.to_owned(),
            });
        }
        Ok(money)
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    pub fn is_negative(&self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.0
            .checked_add(other.0)
            .map(Money)
            .ok_or(MoneyError::Overflow)
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.0
            .checked_sub(other.0)
            .map(Money)
            .ok_or(MoneyError::Overflow)
    }

    /// `self * quantity`, e.g. a unit price times a number of requests.
    pub fn checked_mul_quantity(self, quantity: u64) -> Result<Money, MoneyError> {
        self.checked_mul_ratio(Decimal::from(quantity))
    }

    /// `self * ratio`, e.g. a percentage as `0.07`, or a share `days / days_in_month`.
    pub fn checked_mul_ratio(self, ratio: Decimal) -> Result<Money, MoneyError> {
        self.0
            .checked_mul(ratio)
            .map(|d| Money(normalize_zero(d)))
            .ok_or(MoneyError::Overflow)
    }

    /// `self / divisor`. Exact when the quotient fits 28 decimal digits; otherwise correct to
    /// about 28 significant digits (so never off by a cent after [`Money::round_cents`]).
    pub fn checked_div(self, divisor: Decimal) -> Result<Money, MoneyError> {
        if divisor.is_zero() {
            return Err(MoneyError::DivisionByZero);
        }
        self.0
            .checked_div(divisor)
            .map(|d| Money(normalize_zero(d)))
            .ok_or(MoneyError::Overflow)
    }

    /// The one rounding rule of tollgate: to cents, half away from zero
    /// (0.125 -> 0.13, -0.125 -> -0.13). `Decimal::round_dp` alone would round half to even.
    pub fn round_cents(self) -> Money {
        let mut rounded = self
            .0
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        rounded.rescale(2);
        Money(normalize_zero(rounded))
    }

    /// True when the amount has no fraction of a cent.
    pub fn is_whole_cents(&self) -> bool {
        self.round_cents() == *self
    }

    /// The amount in cents when it is a whole number of cents.
    pub fn to_cents(self) -> Option<i128> {
        if !self.is_whole_cents() {
            return None;
        }
        self.0.checked_mul(Decimal::ONE_HUNDRED)?.to_i128()
    }

    /// Sums amounts, failing on overflow (the `Sum` impl saturates instead).
    pub fn checked_sum(amounts: impl IntoIterator<Item = Money>) -> Result<Money, MoneyError> {
        amounts
            .into_iter()
            .try_fold(Money::ZERO, |acc, m| acc.checked_add(m))
    }

    pub fn max(self, other: Money) -> Money {
        if other > self { other } else { self }
    }
}

/// `-0` prints as `-0.00`; keep zero unsigned so equal amounts print (and hash) the same.
fn normalize_zero(d: Decimal) -> Decimal {
    if d.is_zero() {
        let mut zero = Decimal::ZERO;
        zero.rescale(d.scale());
        zero
    } else {
        d
    }
}

/// Plain decimal, at least two decimals, no trailing zeros beyond them: `11.00`, `7.5` prints
/// `7.50`, a unit price `0.0004` stays `0.0004`. Never an exponent.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = normalize_zero(self.0.normalize());
        if d.scale() < 2 {
            d.rescale(2);
        }
        fmt::Display::fmt(&d, f)
    }
}

impl FromStr for Money {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, MoneyError> {
        Self::parse(s)
    }
}

/// Saturating sum, because `Sum` cannot fail and billing must not panic. Amounts anywhere near
/// the 7.9e28 limit are not money; use [`Money::checked_sum`] where an error must surface.
impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        Money(iter.fold(Decimal::ZERO, |acc, m| acc.saturating_add(m.0)))
    }
}

impl<'a> Sum<&'a Money> for Money {
    fn sum<I: Iterator<Item = &'a Money>>(iter: I) -> Money {
        iter.copied().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_plain_decimals_exactly() {
        assert_eq!(m("0.0004").as_decimal(), Decimal::new(4, 4));
        assert_eq!(m("12").to_string(), "12.00");
        assert_eq!(m("-3.5").to_string(), "-3.50");
        assert_eq!(m("0.10").to_string(), "0.10");
        assert_eq!(m("0.0004").to_string(), "0.0004");
        assert_eq!(m("007.250").to_string(), "7.25");
    }

    #[test]
    fn refuses_float_like_garbage() {
        for bad in [
            "", "1e-4", "1E3", "+1", ".5", "5.", "1.2.3", " 1", "1 ", "1_000", "NaN", "inf", "-",
            "--1", "0x10", "1,5", "١",
        ] {
            assert!(
                matches!(Money::parse(bad), Err(MoneyError::Invalid { .. })),
                "{bad:?}"
            );
        }
        assert!(Money::parse(&"9".repeat(41)).is_err());
        // More fractional digits than Decimal can hold exactly.
        assert!(Money::parse("0.00000000000000000000000000001").is_err());
    }

    #[test]
    fn non_negative_parse_refuses_negatives_but_not_zero() {
        assert!(matches!(
            Money::parse_non_negative("-0.01"),
            Err(MoneyError::Negative { .. })
        ));
        assert_eq!(
            Money::parse_non_negative("-0").map(|m| m.is_zero()),
            Ok(true)
        );
        assert_eq!(m("-0.00").to_string(), "0.00");
    }

    #[test]
    fn rounds_half_away_from_zero_not_to_even() {
        assert_eq!(m("0.125").round_cents().to_string(), "0.13");
        assert_eq!(m("0.135").round_cents().to_string(), "0.14");
        assert_eq!(m("-0.125").round_cents().to_string(), "-0.13");
        assert_eq!(m("0.1249999").round_cents().to_string(), "0.12");
        assert_eq!(m("2.5").round_cents().to_string(), "2.50");
        assert_eq!(m("-0.004").round_cents().to_string(), "0.00");
        // Banker's rounding would give 0.12 here; we must not.
        assert_ne!(
            m("0.125").round_cents(),
            Money(Decimal::new(125, 3).round_dp(2))
        );
    }

    #[test]
    fn checked_arithmetic_reports_overflow() {
        let max = Money(Decimal::MAX);
        assert_eq!(max.checked_add(m("1")), Err(MoneyError::Overflow));
        assert_eq!(
            Money(Decimal::MIN).checked_sub(m("1")),
            Err(MoneyError::Overflow)
        );
        assert_eq!(max.checked_mul_quantity(2), Err(MoneyError::Overflow));
        assert_eq!(
            m("1").checked_div(Decimal::ZERO),
            Err(MoneyError::DivisionByZero)
        );
        assert_eq!(
            m("0.0004").checked_mul_quantity(3).map(|x| x.to_string()),
            Ok("0.0012".into())
        );
        assert_eq!(
            m("11")
                .checked_mul_ratio(Decimal::new(7, 2))
                .map(|x| x.to_string()),
            Ok("0.77".into())
        );
        assert_eq!(
            m("1.10").checked_sub(m("1.2")).map(|x| x.to_string()),
            Ok("-0.10".into())
        );
    }

    #[test]
    fn sums_and_cents() {
        let parts = [m("7.33"), m("3.67")];
        let total: Money = parts.iter().sum();
        assert_eq!(total.to_string(), "11.00");
        assert_eq!(Money::checked_sum(parts), Ok(m("11")));
        assert_eq!(
            Money::checked_sum([Money(Decimal::MAX), m("1")]),
            Err(MoneyError::Overflow)
        );
        let saturated: Money = [Money(Decimal::MAX), m("1")].into_iter().sum();
        assert_eq!(saturated, Money(Decimal::MAX));
        assert_eq!(m("11.00").to_cents(), Some(1100));
        assert_eq!(m("-0.07").to_cents(), Some(-7));
        assert_eq!(m("0.005").to_cents(), None);
        assert_eq!(Money::from_cents(733), m("7.33"));
    }
}
