//! Billing integrity (issue 17) through the real gateway: support-plan days (SPEC S2), ledger
//! truncation and seal deletion seen by `tollgate ledger verify` and refused by the writer (M7),
//! sealed bills that never depend on another payer's open month, and one tier group per
//! organization (M3, M6).

use chrono::{DateTime, TimeZone, Utc};
use http::StatusCode;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;
use tollgate::billing::BillingMonth;
use tollgate::clock::Clock;

use crate::support::{Account, TestGateway, Upstream};

fn future_month(now: DateTime<Utc>) -> BillingMonth {
    let mut month = BillingMonth::containing(now).unwrap();
    while month.start() <= now {
        month = month.next().unwrap();
    }
    month
}

fn at(month: BillingMonth, day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(month.year(), month.month(), day, hour, 0, 0)
        .unwrap()
}

async fn put_plan(account: &Account, plan: Value) {
    let r = account
        .client
        .put_json(
            &format!("/accounts/{}/services/support/plan", account.id),
            serde_json::json!({ "plan": plan }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

async fn bill(account: &Account, month: BillingMonth) -> Value {
    let r = account.client.get(&format!("/billing/bills/{month}")).await;
    assert_eq!(r.status, StatusCode::OK, "bill: {}", r.text());
    r.json()
}

/// `(unit, quantity, amount)` of the plan lines of `account` on a bill.
fn plan_lines(bill: &Value, account: &str) -> Vec<(String, String, String)> {
    bill["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["account_id"] == account)
        .flat_map(|a| a["lines"].as_array().unwrap().iter())
        .filter(|l| l["action"] == "plan")
        .map(|l| {
            (
                l["unit"].as_str().unwrap().to_owned(),
                l["quantity"].as_str().unwrap().to_owned(),
                l["amount"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `minimum * days / days_in_month`, rounded half away from zero to cents, as a bill string.
fn prorated(minimum: i64, days: u32, month: BillingMonth) -> String {
    (Decimal::from(minimum) * Decimal::from(days) / Decimal::from(month.days_in_month()))
        .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
        .to_string()
}

// === S2: plan days ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_a_plan_chosen_and_dropped_on_the_same_day_is_charged_for_that_day() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    let month = future_month(gw.clock.now());
    gw.clock.set(at(month, 5, 9));
    let acme = gw.account("acme").await;
    // Enterprise every morning, dropped every evening, on the 5th and the 6th; twice on the
    // 7th, which is still one day.
    let mut acme = acme;
    for (day, from, until) in [(5, 9, 17), (6, 9, 10), (7, 9, 10), (7, 11, 12)] {
        gw.clock.set(at(month, day, from));
        acme = gw.relogin(&acme).await;
        put_plan(&acme, "enterprise".into()).await;
        gw.clock.set(at(month, day, until));
        acme = gw.relogin(&acme).await;
        put_plan(&acme, Value::Null).await;
    }

    gw.clock.set(at(month.next().unwrap(), 2, 9));
    let acme = gw.relogin(&acme).await;
    let b = bill(&acme, month).await;
    assert_eq!(
        plan_lines(&b, &acme.id),
        vec![(
            "plan:enterprise".to_owned(),
            "3".to_owned(),
            prorated(15000, 3, month)
        )],
        "{b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_the_day_of_a_plan_change_is_billed_for_both_plans() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    let month = future_month(gw.clock.now());
    let days = month.days_in_month();
    gw.clock.set(at(month, 10, 15));
    let acme = gw.account("acme").await;
    put_plan(&acme, "business".into()).await;
    gw.clock.set(at(month, 20, 9));
    let acme = gw.relogin(&acme).await;
    put_plan(&acme, "enterprise".into()).await;

    gw.clock.set(at(month.next().unwrap(), 2, 9));
    let acme = gw.relogin(&acme).await;
    let b = bill(&acme, month).await;
    // Business the 10th–20th (11 days), enterprise the 20th to the month's end: the 20th is
    // on both lines.
    assert_eq!(
        plan_lines(&b, &acme.id),
        vec![
            (
                "plan:business".to_owned(),
                "11".to_owned(),
                prorated(100, 11, month)
            ),
            (
                "plan:enterprise".to_owned(),
                (days - 19).to_string(),
                prorated(15000, days - 19, month)
            ),
        ],
        "{b}"
    );
}
