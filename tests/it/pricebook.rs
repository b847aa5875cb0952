//! Issue 17, the price book (SPEC M3, M4, M6, P5): a bill is a function of the ledger alone.
//! Each test restarts the gateway on the same data with a changed config between calls, the way
//! an operator changes prices, and reads the bill through HTTP.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::Value;
use tollgate::billing::BillingMonth;
use tollgate::billing::{RawRoutePrice, RoutePrice};
use tollgate::config::Config;

use crate::billing::{at, future_month, per_request as flat, tiers as tiered};
use crate::support::gateway::copy_policies;
use crate::support::{Account, TestGateway, Upstream};

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// Sets the price of `action` (the routes naming it) in the config.
fn set_price(c: &mut Config, action: &str, p: RoutePrice) {
    let mut found = false;
    for route in c
        .services
        .iter_mut()
        .flat_map(|s| s.routes.iter_mut())
        .filter(|r| r.action == action)
    {
        route.price = p.clone();
        found = true;
    }
    assert!(found, "no route {action}");
}

/// A data dir that outlives the gateways started on it.
struct Site {
    _dir: tempfile::TempDir,
    data: PathBuf,
    policies: Option<PathBuf>,
    upstream: Upstream,
}

impl Site {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        Site {
            _dir: dir,
            data,
            policies: None,
            upstream: Upstream::start().await,
        }
    }

    /// Starts a gateway on the site's data with `config` applied, its clock at `now`.
    async fn start(
        &self,
        now: DateTime<Utc>,
        config: impl FnOnce(&mut Config) + 'static,
    ) -> TestGateway {
        let mut builder = TestGateway::builder(&self.upstream.url())
            .data_dir(self.data.clone())
            .starts_at(now)
            .tweak(move |c| {
                c.policies.watch = false;
                config(c);
            });
        if let Some(p) = &self.policies {
            builder = builder.policies_dir(p.clone());
        }
        let gw = builder.start().await;
        gw.clock.set(now);
        gw
    }
}

async fn stop(mut gw: TestGateway) {
    gw.shutdown().await;
    drop(gw);
}

async fn calls(account: &Account, method: Method, path: &str, n: usize) {
    for _ in 0..n {
        let r = account.client.send(method.clone(), path, &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    }
}

async fn bill(account: &Account, month: BillingMonth) -> Value {
    let r = account.client.get(&format!("/billing/bills/{month}")).await;
    assert_eq!(r.status, StatusCode::OK, "bill: {}", r.text());
    r.json()
}

/// `(unit, quantity, amount, prices_from)` of the account's lines of `action`.
fn lines(bill: &Value, account: &str, action: &str) -> Vec<(String, String, String, String)> {
    let acct = bill["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account_id"] == account)
        .unwrap_or_else(|| panic!("{account} not on {bill}"));
    acct["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["action"] == action)
        .map(|l| {
            (
                l["unit"].as_str().unwrap().to_owned(),
                l["quantity"].as_str().unwrap().to_owned(),
                l["amount"].as_str().unwrap().to_owned(),
                l["prices_from"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn req(quantity: &str, amount: &str, from: &str) -> (String, String, String, String) {
    (
        "requests".into(),
        quantity.into(),
        amount.into(),
        from.into(),
    )
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

const PUT: &str = "/svc/storage/objects/k";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m4_flat_to_tiered_does_not_retier_earlier_flat_calls() {
    let site = Site::new().await;
    let month = future_month(Utc::now());
    let gw = site
        .start(at(month, 2, 9), |c| {
            set_price(c, "storage:PutObject", flat("1.00"))
        })
        .await;
    let a = gw.account("acct-a").await;
    calls(&a, Method::PUT, PUT, 3).await;
    stop(gw).await;

    let changed = at(month, 10, 9);
    let gw = site
        .start(changed, |c| {
            set_price(c, "storage:PutObject", tiered(10, "0.10", "0.05"))
        })
        .await;
    let a = gw.relogin(&a).await;
    calls(&a, Method::PUT, PUT, 2).await;
    let b = bill(&a, month).await;
    // The flat calls keep their $1.00; the tiered ones are tiered alone (SPEC M4: one line per
    // price version, each with `prices_from`).
    assert_eq!(
        lines(&b, &a.id, "storage:PutObject"),
        vec![
            req("3", "3.00", &rfc3339(at(month, 2, 9))),
            req("2", "0.20", &rfc3339(changed)),
        ],
        "{b}"
    );
    assert_eq!(b["total"], "3.20");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m4_tiered_to_flat_keeps_earlier_tiered_calls_charged() {
    let site = Site::new().await;
    let month = future_month(Utc::now());
    let gw = site
        .start(at(month, 2, 9), |c| {
            set_price(c, "storage:PutObject", tiered(10, "1.00", "0.50"))
        })
        .await;
    let a = gw.account("acct-a").await;
    calls(&a, Method::PUT, PUT, 4).await;
    stop(gw).await;

    let changed = at(month, 10, 9);
    let gw = site
        .start(changed, |c| set_price(c, "storage:PutObject", flat("0.25")))
        .await;
    let a = gw.relogin(&a).await;
    calls(&a, Method::PUT, PUT, 2).await;
    let b = bill(&a, month).await;
    assert_eq!(
        lines(&b, &a.id, "storage:PutObject"),
        vec![
            req("4", "4.00", &rfc3339(at(month, 2, 9))),
            req("2", "0.50", &rfc3339(changed)),
        ],
        "{b}"
    );
    assert_eq!(b["total"], "4.50");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m3_removing_a_tiered_route_keeps_its_calls_charged() {
    let site = Site::new().await;
    let month = future_month(Utc::now());
    let gw = site
        .start(at(month, 2, 9), |c| {
            set_price(c, "storage:PutObject", tiered(10, "1.00", "0.50"))
        })
        .await;
    let a = gw.account("acct-a").await;
    calls(&a, Method::PUT, PUT, 3).await;
    stop(gw).await;

    let gw = site
        .start(at(month, 10, 9), |c| {
            for s in &mut c.services {
                s.routes.retain(|r| r.action != "storage:PutObject");
            }
        })
        .await;
    let a = gw.relogin(&a).await;
    let r = a.client.send(Method::PUT, PUT, &[], "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "the route is gone");
    let b = bill(&a, month).await;
    assert_eq!(
        lines(&b, &a.id, "storage:PutObject"),
        vec![req("3", "3.00", "")],
        "{b}"
    );
    assert_eq!(b["total"], "3.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m4_a_tier_edit_within_the_month_splits_the_line_and_continues_the_tiers() {
    let site = Site::new().await;
    let month = future_month(Utc::now());
    let gw = site
        .start(at(month, 2, 9), |c| {
            set_price(c, "storage:PutObject", tiered(10, "1.00", "0.50"))
        })
        .await;
    let a = gw.account("acct-a").await;
    calls(&a, Method::PUT, PUT, 8).await;
    stop(gw).await;

    let changed = at(month, 10, 9);
    let gw = site
        .start(changed, |c| {
            set_price(c, "storage:PutObject", tiered(10, "2.00", "1.00"))
        })
        .await;
    let a = gw.relogin(&a).await;
    calls(&a, Method::PUT, PUT, 4).await;
    let b = bill(&a, month).await;
    // The new tiers price the 9th to 12th request of the month: 2 x $2.00 + 2 x $1.00.
    assert_eq!(
        lines(&b, &a.id, "storage:PutObject"),
        vec![
            req("8", "8.00", &rfc3339(at(month, 2, 9))),
            req("4", "6.00", &rfc3339(changed)),
        ],
        "{b}"
    );
    assert_eq!(b["total"], "14.00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m6_a_tier_or_plan_edit_leaves_a_final_bill_as_sealed() {
    let site = Site::new().await;
    let month = future_month(Utc::now());
    let gw = site
        .start(at(month, 2, 9), |c| {
            set_price(c, "storage:PutObject", tiered(10, "1.00", "0.50"))
        })
        .await;
    let a = gw.account("acct-a").await;
    let r = a
        .client
        .put_json(
            &format!("/accounts/{}/services/support/plan", a.id),
            serde_json::json!({"plan": "business"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    calls(&a, Method::PUT, PUT, 12).await;
    gw.clock.set(at(month.next().unwrap(), 5, 9));
    let a = gw.relogin(&a).await;
    let r = a
        .client
        .send(
            Method::POST,
            &format!("/billing/bills/{month}/finalize"),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sealed = r.json();
    stop(gw).await;

    let gw = site
        .start(at(month.next().unwrap(), 6, 9), |c| {
            set_price(c, "storage:PutObject", tiered(5, "3.00", "2.00"));
            let support = c.services.iter_mut().find(|s| s.name == "support").unwrap();
            let business = support
                .plans
                .iter_mut()
                .find(|p| p.name == "business")
                .unwrap();
            business.monthly_minimum = dec("250.00");
        })
        .await;
    let a = gw.relogin(&a).await;
    let after = bill(&a, month).await;
    assert_eq!(after["status"], "FINAL");
    assert_eq!(after["content_hash"], sealed["content_hash"]);
    assert_eq!(after["accounts"], sealed["accounts"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m3_routes_without_a_per_gb_price_put_no_gb_lines_on_a_bill() {
    let site = Site::new().await;
    let month = future_month(Utc::now());
    let gw = site
        .start(at(month, 2, 9), |c| {
            set_price(c, "storage:ListObjects", flat("1.00"));
            set_price(
                c,
                "storage:GetObject",
                RoutePrice::parse(&RawRoutePrice {
                    per_request: Some("1.00"),
                    per_gb_out: Some("0.09"),
                    ..RawRoutePrice::default()
                })
                .unwrap(),
            );
        })
        .await;
    let a = gw.account("acct-a").await;
    // Both answer a small JSON body: bytes out, measured.
    calls(&a, Method::GET, "/svc/storage/objects", 2).await;
    calls(&a, Method::GET, "/svc/storage/objects/k", 2).await;
    // The transfer records are queued when the bodies end: wait until both are booked.
    let mut booked = false;
    for _ in 0..100 {
        let b = bill(&a, month).await;
        if lines(&b, &a.id, "storage:GetObject")
            .iter()
            .any(|l| l.0 == "GB-out")
        {
            booked = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(booked, "the transfer records are booked");
    let b = bill(&a, month).await;
    let units = |action: &str| -> Vec<String> {
        lines(&b, &a.id, action).into_iter().map(|l| l.0).collect()
    };
    assert_eq!(units("storage:ListObjects"), vec!["requests"], "{b}");
    assert_eq!(
        units("storage:GetObject"),
        vec!["requests", "GB-out"],
        "{b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p5_a_spend_cap_on_a_tiered_action_fires() {
    let mut site = Site::new().await;
    let (_guard, policies) = copy_policies();
    crate::support::org::write(
        &policies,
        "default-account/spend-cap.cedar",
        r#"@id("compute-spend-cap")
forbid (principal, action == Tollgate::Action::"compute:RunJob", resource)
when { context.month_to_date_spend.greaterThanOrEqual(decimal("2.50")) };
"#,
    );
    site.policies = Some(policies);
    let month = future_month(Utc::now());
    let gw = site
        .start(at(month, 2, 9), |c| {
            set_price(c, "compute:RunJob", tiered(2, "1.00", "0.50"))
        })
        .await;
    let a = gw.account("acct-a").await;
    let r = a
        .client
        .send(
            Method::POST,
            &format!("/accounts/{}/services/compute/signup", a.id),
            &[],
            "",
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    // Marginal rates: $1.00, $1.00, then $0.50: $2.50 after the third job.
    calls(&a, Method::POST, "/svc/compute/jobs", 3).await;
    let r = a
        .client
        .send(Method::POST, "/svc/compute/jobs", &[], "")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.error_code(), "AccessDenied");
    let b = bill(&a, month).await;
    assert_eq!(b["total"], "2.50", "{b}");
}
