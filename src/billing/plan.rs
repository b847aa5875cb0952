//! Service plans such as Premium Support (SPEC S2): a monthly minimum or a graduated percentage
//! of the account's other charges, whichever is greater, prorated by the days it was active.
//!
//! Owns validating plans and the exact charge arithmetic. It must not decide which charges count
//! as "other charges" (the bill does) and it rounds only in [`charge_for_periods`].
//!
//! The rule for a month with several plan periods (a mid-month start, a change of plan, a
//! cancellation): each period is charged `monthly_charge(plan, other) * days / days_in_month`,
//! where `other` is the account's other charges for the **whole** month (not just the period's
//! days) and `days` the UTC days on which the plan was active at some instant (SPEC S2: the day
//! of a change counts for both plans); the exact amounts are added and rounded half away from
//! zero to cents once, at the end. On a bill each plan is one line, so the periods of the same
//! plan are added before that single rounding; a plan counts each day at most once.

use rust_decimal::Decimal;

use super::money::{Money, MoneyError};

/// A validated plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    name: String,
    monthly_minimum: Money,
    usage_percent_tiers: Vec<PercentTier>,
}

/// `percent` of the other charges between the previous tier's `up_to` and this `up_to`
/// (`None`: everything above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PercentTier {
    pub up_to: Option<Money>,
    /// Percent, e.g. `7` for 7 %, between 0 and 100.
    pub percent: Decimal,
}

/// A plan as written in config, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawPlan<'a> {
    pub name: &'a str,
    pub monthly_minimum: Option<&'a str>,
    pub usage_percent_tiers: Vec<RawPercentTier<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPercentTier<'a> {
    pub up_to: Option<&'a str>,
    pub percent: &'a str,
}

/// A stretch of a month during which one plan was active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanPeriod {
    pub plan: Plan,
    pub active_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("`name`: `{name}` must be 1 to 64 letters, digits, `-` or `_`")]
    Name { name: String },
    #[error("`{field}`: {source}")]
    Amount { field: String, source: MoneyError },
    #[error("`{field}`: percent `{value}` must be a number from 0 to 100")]
    Percent { field: String, value: String },
    #[error("`{field}`: must be greater than the previous tier's `up_to`")]
    TierNotAscending { field: String },
    #[error("`{field}`: only the last tier may omit `up_to`")]
    UnboundedTierNotLast { field: String },
    #[error("`usage_percent_tiers`: the last tier must omit `up_to`")]
    LastTierBounded,
    #[error("{active_days} active days in a month of {days_in_month} days")]
    Days {
        active_days: u32,
        days_in_month: u32,
    },
    #[error(transparent)]
    Money(#[from] MoneyError),
}

// === impl Plan ===

impl Plan {
    /// Validates every field and reports every problem at once. A plan with no percentage
    /// tiers is a flat monthly fee.
    pub fn parse(raw: &RawPlan<'_>) -> Result<Self, Vec<PlanError>> {
        let mut errors = Vec::new();
        let name_ok = !raw.name.is_empty()
            && raw.name.len() <= 64
            && raw
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            errors.push(PlanError::Name {
                name: raw.name.chars().take(80).collect(),
            });
        }
        let monthly_minimum = match raw.monthly_minimum {
            None => Money::ZERO,
            Some(s) => Money::parse_non_negative(s).unwrap_or_else(|source| {
                errors.push(PlanError::Amount {
                    field: "monthly_minimum".into(),
                    source,
                });
                Money::ZERO
            }),
        };
        let mut tiers = Vec::with_capacity(raw.usage_percent_tiers.len());
        let mut previous: Option<Money> = None;
        let last = raw.usage_percent_tiers.len().saturating_sub(1);
        for (i, tier) in raw.usage_percent_tiers.iter().enumerate() {
            let field = |name: &str| format!("usage_percent_tiers[{i}].{name}");
            let percent = match Money::parse_non_negative(tier.percent) {
                Ok(p) if p.as_decimal() <= Decimal::ONE_HUNDRED => p.as_decimal(),
                _ => {
                    errors.push(PlanError::Percent {
                        field: field("percent"),
                        value: tier.percent.chars().take(40).collect(),
                    });
                    Decimal::ZERO
                }
            };
            let up_to = match tier.up_to {
                None => {
                    if i != last {
                        errors.push(PlanError::UnboundedTierNotLast {
                            field: field("up_to"),
                        });
                    }
                    None
                }
                Some(s) => match Money::parse_non_negative(s) {
                    Ok(up_to) => {
                        if up_to.is_zero() || previous.is_some_and(|p| up_to <= p) {
                            errors.push(PlanError::TierNotAscending {
                                field: field("up_to"),
                            });
                        }
                        previous = Some(up_to);
                        if i == last {
                            errors.push(PlanError::LastTierBounded);
                        }
                        Some(up_to)
                    }
                    Err(source) => {
                        errors.push(PlanError::Amount {
                            field: field("up_to"),
                            source,
                        });
                        None
                    }
                },
            };
            tiers.push(PercentTier { up_to, percent });
        }
        if errors.is_empty() {
            Ok(Self {
                name: raw.name.to_owned(),
                monthly_minimum,
                usage_percent_tiers: tiers,
            })
        } else {
            Err(errors)
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn monthly_minimum(&self) -> Money {
        self.monthly_minimum
    }

    pub fn usage_percent_tiers(&self) -> &[PercentTier] {
        &self.usage_percent_tiers
    }

    /// The graduated percentage of `other_charges` alone (exact). Negative other charges
    /// (credits exceeding charges) count as zero.
    pub fn usage_charge(&self, other_charges: Money) -> Result<Money, MoneyError> {
        let base = other_charges.max(Money::ZERO);
        let mut total = Money::ZERO;
        let mut lower = Money::ZERO;
        for tier in &self.usage_percent_tiers {
            if base <= lower {
                break;
            }
            let upper = tier.up_to.map_or(base, |up_to| up_to.min(base));
            let slice = upper.checked_sub(lower)?;
            let part = slice
                .checked_mul_ratio(tier.percent)?
                .checked_div(Decimal::ONE_HUNDRED)?;
            total = total.checked_add(part)?;
            match tier.up_to {
                Some(up_to) => lower = up_to,
                None => break,
            }
        }
        Ok(total)
    }

    /// A full month's charge: the greater of the minimum and [`Plan::usage_charge`] (exact).
    pub fn monthly_charge(&self, other_charges: Money) -> Result<Money, MoneyError> {
        Ok(self.monthly_minimum.max(self.usage_charge(other_charges)?))
    }
}

/// `charge * active_days / days_in_month`, exact.
pub fn prorated(charge: Money, active_days: u32, days_in_month: u32) -> Result<Money, PlanError> {
    if days_in_month == 0 || active_days > days_in_month {
        return Err(PlanError::Days {
            active_days,
            days_in_month,
        });
    }
    if active_days == days_in_month {
        return Ok(charge);
    }
    Ok(charge
        .checked_mul_quantity(u64::from(active_days))?
        .checked_div(Decimal::from(days_in_month))?)
}

/// The exact, unrounded charge of some periods: the sum of each period's prorated monthly
/// charge on the month's `other_charges`.
///
/// A UTC day on which two plans were active counts for both (SPEC S2), so the periods of
/// different plans may add up to more days than the month; a plan counts each day once, so the
/// periods of one plan (by name) must not: that is refused with [`PlanError::Days`], as is any
/// period longer than the month.
pub fn exact_charge_for_periods(
    periods: &[PlanPeriod],
    other_charges: Money,
    days_in_month: u32,
) -> Result<Money, PlanError> {
    let mut per_plan: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
    for period in periods {
        let days = per_plan.entry(period.plan.name()).or_default();
        *days = days.saturating_add(period.active_days);
        if *days > days_in_month {
            return Err(PlanError::Days {
                active_days: *days,
                days_in_month,
            });
        }
    }
    let mut total = Money::ZERO;
    for period in periods {
        let full = period.plan.monthly_charge(other_charges)?;
        total = total.checked_add(prorated(full, period.active_days, days_in_month)?)?;
    }
    Ok(total)
}

/// [`exact_charge_for_periods`] rounded half away from zero to cents: the rule in this
/// module's doc.
pub fn charge_for_periods(
    periods: &[PlanPeriod],
    other_charges: Money,
    days_in_month: u32,
) -> Result<Money, PlanError> {
    Ok(exact_charge_for_periods(periods, other_charges, days_in_month)?.round_cents())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn tier(up_to: Option<&'static str>, percent: &'static str) -> RawPercentTier<'static> {
        RawPercentTier { up_to, percent }
    }

    fn plan(raw: RawPlan<'_>) -> Plan {
        Plan::parse(&raw).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// AWS-like Business support: greater of $100 or 10 % of the first $10,000, 7 % of
    /// $10,000–$80,000, 5 % of $80,000–$250,000, 3 % above.
    fn business() -> Plan {
        plan(RawPlan {
            name: "business",
            monthly_minimum: Some("100.00"),
            usage_percent_tiers: vec![
                tier(Some("10000"), "10"),
                tier(Some("80000"), "7"),
                tier(Some("250000"), "5"),
                tier(None, "3"),
            ],
        })
    }

    fn developer() -> Plan {
        plan(RawPlan {
            name: "developer",
            monthly_minimum: Some("29"),
            usage_percent_tiers: vec![tier(None, "3")],
        })
    }

    #[test]
    fn minimum_wins_on_small_usage() {
        assert_eq!(business().monthly_charge(m("500")), Ok(m("100")));
        assert_eq!(business().monthly_charge(Money::ZERO), Ok(m("100")));
        assert_eq!(business().monthly_charge(m("-50")), Ok(m("100")));
        assert_eq!(business().monthly_charge(m("1000")), Ok(m("100")));
    }

    #[test]
    fn percentage_tiers_win_on_large_usage() {
        // $1,000 + $4,900 + $1,000
        assert_eq!(business().monthly_charge(m("100000")), Ok(m("6900")));
        assert_eq!(business().monthly_charge(m("10000")), Ok(m("1000")));
        assert_eq!(business().monthly_charge(m("1000.01")), Ok(m("100.001")));
        // 1,000 + 4,900 + 8,500 + 3 % of 50,000 = 1,500
        assert_eq!(business().monthly_charge(m("300000")), Ok(m("15900")));
        assert_eq!(developer().monthly_charge(m("2000")), Ok(m("60")));
    }

    #[test]
    fn proration_over_a_mid_month_start() {
        // Business from April 10th: 21 of 30 days, minimum applies: 100 * 21 / 30 = 70.
        let periods = [PlanPeriod {
            plan: business(),
            active_days: 21,
        }];
        assert_eq!(charge_for_periods(&periods, m("500"), 30), Ok(m("70")));
        // 100 * 10 / 31 = 32.258064... -> 32.26
        let periods = [PlanPeriod {
            plan: business(),
            active_days: 10,
        }];
        assert_eq!(charge_for_periods(&periods, m("0"), 31), Ok(m("32.26")));
        assert_eq!(prorated(m("100"), 31, 31), Ok(m("100")));
        assert_eq!(prorated(m("100"), 0, 31), Ok(Money::ZERO));
        assert!(matches!(
            prorated(m("100"), 32, 31),
            Err(PlanError::Days { .. })
        ));
        assert!(matches!(
            prorated(m("100"), 0, 0),
            Err(PlanError::Days { .. })
        ));
    }

    #[test]
    fn change_of_plan_charges_each_period_on_the_whole_months_usage() {
        // April (30 days), other charges $2,000: developer for 14 days, business for 16.
        // developer: max(29, 60) * 14/30 = 28; business: max(100, 200) * 16/30 = 106.666...
        let periods = [
            PlanPeriod {
                plan: developer(),
                active_days: 14,
            },
            PlanPeriod {
                plan: business(),
                active_days: 16,
            },
        ];
        assert_eq!(
            exact_charge_for_periods(&periods, m("2000"), 30).map(|x| x.round_cents()),
            Ok(m("134.67"))
        );
        assert_eq!(charge_for_periods(&periods, m("2000"), 30), Ok(m("134.67")));
        // The day of a change counts for both plans: 20 + 11 days in a 30-day month is fine.
        let change_day = [
            PlanPeriod {
                plan: developer(),
                active_days: 20,
            },
            PlanPeriod {
                plan: business(),
                active_days: 11,
            },
        ];
        assert!(charge_for_periods(&change_day, m("2000"), 30).is_ok());
        // One plan counts a day once: more days than the month is refused.
        let too_many = [
            PlanPeriod {
                plan: business(),
                active_days: 20,
            },
            PlanPeriod {
                plan: business(),
                active_days: 11,
            },
        ];
        assert!(matches!(
            charge_for_periods(&too_many, m("2000"), 30),
            Err(PlanError::Days {
                active_days: 31,
                ..
            })
        ));
    }

    #[test]
    fn rounding_happens_once_at_the_end() {
        // Three periods of 0.005 each: rounding each would give 0.03, once gives 0.02.
        let fee = plan(RawPlan {
            name: "tiny",
            monthly_minimum: Some("0.15"),
            usage_percent_tiers: vec![],
        });
        let periods: Vec<PlanPeriod> = (0..3)
            .map(|_| PlanPeriod {
                plan: fee.clone(),
                active_days: 1,
            })
            .collect();
        assert_eq!(charge_for_periods(&periods, Money::ZERO, 30), Ok(m("0.02")));
    }

    #[test]
    fn validation_names_each_bad_field() {
        let errors = Plan::parse(&RawPlan {
            name: "bad name",
            monthly_minimum: Some("-1"),
            usage_percent_tiers: vec![
                tier(Some("100"), "101"),
                tier(Some("100"), "5"),
                tier(None, "x"),
                tier(None, "1"),
            ],
        })
        .err()
        .unwrap_or_default();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let expect = [
            "`name`",
            "`monthly_minimum`",
            "`usage_percent_tiers[0].percent`",
            "`usage_percent_tiers[1].up_to`",
            "`usage_percent_tiers[2].percent`",
            "`usage_percent_tiers[2].up_to`",
        ];
        assert_eq!(text.len(), expect.len(), "{text:?}");
        for (t, e) in text.iter().zip(expect) {
            assert!(t.starts_with(e), "{t} should start with {e}");
        }
        assert_eq!(
            Plan::parse(&RawPlan {
                name: "x",
                monthly_minimum: None,
                usage_percent_tiers: vec![tier(Some("10"), "1")],
            }),
            Err(vec![PlanError::LastTierBounded])
        );
    }
}
