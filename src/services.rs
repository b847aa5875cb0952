//! The services an account uses (SPEC S1, S2), as the bill and the API see them: the configured
//! plans turned into [`billing::Plan`]s, and an account's plan periods of one month, either as
//! exact intervals ([`plan_periods`]) or ready for the bill ([`account_plans`]).
//!
//! Owns the link between config (which services need a sign-up, which plans they offer) and the
//! stored periods. It must not know HTTP, and it does no money arithmetic: `billing::plan` does.

use chrono::{DateTime, Datelike, Utc};

use crate::billing::{
    AccountPlans, BillingMonth, Money, Plan, PlanPeriod, PriceHistory, RawPercentTier, RawPlan,
};
use crate::config::{PlanConfig, ServiceConfig};
use crate::ids::AccountId;
use crate::store::StoreError;
use crate::store::services::ServiceStore;

/// A plan period inside one month: `[from, until)`, both within the month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthPlanPeriod {
    pub service: String,
    pub plan: String,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// A configured plan that `billing::Plan` refuses (config checks the numbers, not the name).
    #[error("plan `{plan}` of service `{service}` is invalid: {problems}")]
    InvalidPlan {
        service: String,
        plan: String,
        problems: String,
    },
    /// An account had a plan that the price book did not offer when the period began (the
    /// store was edited): it cannot be priced.
    #[error(
        "account {account} had plan `{plan}` of service `{service}` in {month}, but the price book has no such plan"
    )]
    PlanNotConfigured {
        account: AccountId,
        service: String,
        plan: String,
        month: BillingMonth,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The configured plan `plan` of `service`, if it offers one.
pub fn find_plan<'a>(
    services: &'a [ServiceConfig],
    service: &str,
    plan: &str,
) -> Option<&'a PlanConfig> {
    services
        .iter()
        .find(|s| s.name == service)
        .and_then(|s| s.plans.iter().find(|p| p.name == plan))
}

/// A configured plan as the bill prices it.
pub fn plan_from_config(service: &str, plan: &PlanConfig) -> Result<Plan, ServicesError> {
    let minimum = plan.monthly_minimum.to_string();
    let tiers: Vec<(Option<String>, String)> = plan
        .usage_percent_tiers
        .iter()
        .map(|(up_to, percent)| (up_to.map(|u| u.to_string()), percent.to_string()))
        .collect();
    let raw = RawPlan {
        name: &plan.name,
        monthly_minimum: Some(&minimum),
        usage_percent_tiers: tiers
            .iter()
            .map(|(up_to, percent)| RawPercentTier {
                up_to: up_to.as_deref(),
                percent,
            })
            .collect(),
    };
    Plan::parse(&raw).map_err(|errors| ServicesError::InvalidPlan {
        service: service.to_owned(),
        plan: plan.name.clone(),
        problems: errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    })
}

/// The account's plan periods in `month`, clipped to it, by service then start: what the bill
/// reads. A change at 15:00 on the 10th ends one period and starts the next at that instant.
pub async fn plan_periods(
    store: &dyn ServiceStore,
    account: &AccountId,
    month: BillingMonth,
) -> Result<Vec<MonthPlanPeriod>, StoreError> {
    let (start, end) = (month.start(), month.end());
    Ok(store
        .plan_periods(account, start, end)
        .await?
        .into_iter()
        .filter_map(|p| {
            let (from, until) = p.clipped(start, end)?;
            Some(MonthPlanPeriod {
                service: p.service,
                plan: p.plan,
                from,
                until,
            })
        })
        .collect())
}

/// The account's plans of `month` as the bill takes them: one [`AccountPlans`] per service,
/// one [`PlanPeriod`] per plan, whose active days are the UTC days on which that plan was active
/// at some instant ([`BillingMonth::active_dates`], SPEC S2): a plan chosen and ended on the same
/// day counts that day, the day of a change counts for both plans, and a plan chosen several
/// times in one day counts the day once. Each plan has its terms from the price book version in
/// force when its first period began within the month (an edit of a plan's terms applies from
/// the next month or the next plan change, never to a period already running; issue 17).
/// `other_charges_elsewhere` is left at zero: only the bill knows the account's charges on other
/// payers' bills.
pub async fn account_plans(
    store: &dyn ServiceStore,
    prices: &PriceHistory,
    account: &AccountId,
    month: BillingMonth,
) -> Result<Vec<AccountPlans>, ServicesError> {
    // Per service (in order), per plan (in order of first use): the plan and its days as a
    // bit set of day-of-month indexes (a month has at most 31 days).
    let mut days: Vec<(String, Vec<(Plan, u32)>)> = Vec::new();
    for period in plan_periods(store, account, month).await? {
        let until = (period.until < month.end()).then_some(period.until);
        let Some((first, last)) = month.active_dates(period.from, until) else {
            continue;
        };
        let plan = prices
            .plan_at(&period.service, &period.plan, period.from)
            .cloned()
            .ok_or_else(|| ServicesError::PlanNotConfigured {
                account: account.clone(),
                service: period.service.clone(),
                plan: period.plan.clone(),
                month,
            })?;
        // Periods come by service, so a service's entry is the last one or a new one.
        if days
            .last()
            .is_none_or(|(service, _)| *service != period.service)
        {
            days.push((period.service.clone(), Vec::new()));
        }
        let Some((_, plans)) = days.last_mut() else {
            continue;
        };
        let bits = day_bits(first.day0(), last.day0());
        match plans.iter_mut().find(|(p, _)| p.name() == plan.name()) {
            Some((_, set)) => *set |= bits,
            None => plans.push((plan, bits)),
        }
    }
    Ok(days
        .into_iter()
        .map(|(service, plans)| AccountPlans {
            account_id: account.clone(),
            service,
            periods: plans
                .into_iter()
                .map(|(plan, set)| PlanPeriod {
                    plan,
                    active_days: set.count_ones(),
                })
                .collect(),
            other_charges_elsewhere: Money::ZERO,
        })
        .collect())
}

/// Bits `first..=last` (day-of-month indexes from 0, at most 30).
fn day_bits(first: u32, last: u32) -> u32 {
    (first.min(31)..=last.min(31))
        .filter(|d| *d < 32)
        .fold(0u32, |acc, d| acc | (1u32 << d))
}
