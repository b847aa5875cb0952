//! SPEC M2–M7 and O1 through HTTP and the real binary: the consolidated bill (tiers pooled and
//! shared, AWS's example, GB = 2^30 bytes), who sees what (payer, member, standalone), joins
//! and leaves mid-month, CSV, finalization and late records, `tollgate bill` and
//! `tollgate ledger verify`, refusing service when the ledger cannot be written, and a SIGKILL
//! in the middle of traffic.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use http::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::Value;
use tollgate::billing::{BillingMonth, Money, RoutePrice, export};
use tollgate::billing::{RawPriceTier, RawRoutePrice};
use tollgate::clock::Clock;
use tollgate::config::Config;
use tollgate::ids::{AccountId, OrgId, RequestId, UserName};
use tollgate::journal::{Charge, LedgerEntry, MeteredCall, RecordId};
use tollgate::org::FeatureSet;

use crate::support::{self, Account, Client, MfaAccount, TestGateway, Upstream, binary};
use tollgate::params;

// === the world: a payer with two members, in a month of the future ===

struct World {
    gw: TestGateway,
    _upstream: Upstream,
    month: BillingMonth,
    payer: MfaAccount,
    a: Account,
    b: Account,
    org_id: OrgId,
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// Sets the price of `action` in the shipped config.
fn price(c: &mut Config, action: &str, p: RoutePrice) {
    let route = c
        .services
        .iter_mut()
        .flat_map(|s| s.routes.iter_mut())
        .find(|r| r.action == action)
        .unwrap_or_else(|| panic!("no route {action}"));
    route.price = p;
}

pub(crate) fn tiers(first: u64, p1: &str, p2: &str) -> RoutePrice {
    RoutePrice::parse(&RawRoutePrice {
        per_request_tiers: Some(vec![
            RawPriceTier {
                up_to: Some(first),
                price: p1,
            },
            RawPriceTier {
                up_to: None,
                price: p2,
            },
        ]),
        ..RawRoutePrice::default()
    })
    .unwrap()
}

pub(crate) fn per_request(p: &str) -> RoutePrice {
    RoutePrice::parse(&RawRoutePrice {
        per_request: Some(p),
        ..RawRoutePrice::default()
    })
    .unwrap()
}

/// The first whole month after now, so every token issued after the jump is valid.
pub(crate) fn future_month(now: DateTime<Utc>) -> BillingMonth {
    let mut month = BillingMonth::containing(now).unwrap();
    while month.start() <= now {
        month = month.next().unwrap();
    }
    month
}

pub(crate) fn at(month: BillingMonth, day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(month.year(), month.month(), day, hour, 0, 0)
        .unwrap()
}

pub(crate) fn id(account: &Account) -> AccountId {
    AccountId::parse(&account.id).unwrap()
}

/// Test prices: PutObject $1.00 for the first 10 requests then $0.50 (SPEC M3's example, scaled:
/// 8 + 4 requests give the same $11.00 = $7.33 + $3.67); GetObject AWS's $174.08 per unit for
/// the first 10 then $133.12; ListObjects $1.00 per request; nothing per GB.
pub(crate) fn test_prices(c: &mut Config) {
    price(c, "storage:PutObject", tiers(10, "1.00", "0.50"));
    price(c, "storage:GetObject", tiers(10, "174.08", "133.12"));
    price(c, "storage:ListObjects", per_request("1.00"));
    c.policies.watch = false;
}

async fn world() -> World {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .tweak(test_prices)
        .start()
        .await;
    let month = future_month(gw.clock.now());
    gw.clock.set(at(month, 1, 1));
    let payer = gw.mfa_owner("payer").await;
    let a = gw.account("acct-a").await;
    let b = gw.account("acct-b").await;
    let orgs = &gw.app.orgs;
    let org = orgs
        .create_organization(
            &AccountId::parse(&payer.id).unwrap(),
            Some(FeatureSet::ConsolidatedBilling),
            true,
            gw.clock.now(),
        )
        .await
        .expect("create org");
    for member in [&a, &b] {
        join(&gw, &payer, member).await;
    }
    World {
        gw,
        _upstream: upstream,
        month,
        payer,
        a,
        b,
        org_id: org.id,
    }
}

async fn join(gw: &TestGateway, payer: &Account, member: &Account) {
    let orgs = &gw.app.orgs;
    let invite = orgs
        .invite(&id(payer), &id(member), gw.clock.now())
        .await
        .expect("invite");
    orgs.accept(&id(member), &invite.id, gw.clock.now())
        .await
        .expect("accept");
}

pub(crate) async fn calls(account: &Account, method: Method, path: &str, n: usize) {
    for _ in 0..n {
        let r = account.client.send(method.clone(), path, &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    }
}

pub(crate) async fn bill(account: &Account, month: BillingMonth, query: &str) -> Value {
    let r = account
        .client
        .get(&format!("/billing/bills/{month}{query}"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "bill: {}", r.text());
    r.json()
}

/// `(unit, quantity, amount)` of an account's request lines of `action` on a bill's JSON
/// (GB lines show only for routes with a per-GB price, SPEC M3).
pub(crate) fn lines(bill: &Value, account: &str, action: &str) -> Vec<(String, String, String)> {
    all_lines(bill, account, action)
        .into_iter()
        .filter(|l| l.0 == "requests")
        .collect()
}

fn all_lines(bill: &Value, account: &str, action: &str) -> Vec<(String, String, String)> {
    account_of(bill, account)["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["action"] == action)
        .map(|l| {
            (
                l["unit"].as_str().unwrap().to_owned(),
                l["quantity"].as_str().unwrap().to_owned(),
                l["amount"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

pub(crate) fn requests(quantity: &str, amount: &str) -> Vec<(String, String, String)> {
    vec![("requests".into(), quantity.into(), amount.into())]
}

fn account_of<'a>(bill: &'a Value, account: &str) -> &'a Value {
    bill["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account_id"] == account)
        .unwrap_or_else(|| panic!("account {account} not on the bill: {bill}"))
}

fn account_ids(bill: &Value) -> Vec<String> {
    bill["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account_id"].as_str().unwrap().to_owned())
        .collect()
}

/// M5: every account total is the sum of its lines, the bill total the sum of account totals.
fn assert_adds_up(bill: &Value) {
    let mut total = Decimal::ZERO;
    for account in bill["accounts"].as_array().unwrap() {
        let sum: Decimal = account["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| dec(l["amount"].as_str().unwrap()))
            .sum();
        assert_eq!(sum, dec(account["total"].as_str().unwrap()), "{account}");
        total += sum;
    }
    assert_eq!(total, dec(bill["total"].as_str().unwrap()), "{bill}");
}

/// A ledger record appended in-process (for quantities HTTP cannot carry, e.g. 12 TB).
fn entry(
    account: &Account,
    payer: &Account,
    org: Option<&OrgId>,
    action: &str,
    at: DateTime<Utc>,
    bytes_out: u64,
    price: &RoutePrice,
) -> LedgerEntry {
    LedgerEntry {
        record_id: RecordId::generate(),
        event_time: at,
        call: MeteredCall {
            request_id: RequestId::generate(),
            account_id: id(account),
            payer_account_id: id(payer),
            org_id: org.cloned(),
            user_name: UserName::parse(&account.owner).unwrap(),
            service: "storage".into(),
            action: action.into(),
            method: "GET".into(),
            status: 200,
            client_request_id: None,
        },
        bytes_in: 0,
        bytes_out,
        charge: Charge::at_price(price, 1, 0, bytes_out).unwrap(),
    }
}

// === M3, M4, M5 ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m3_spec_tier_example_and_aws_example_on_a_real_bill() {
    let w = world().await;
    w.gw.clock.set(at(w.month, 3, 9));
    let (a, b) = (w.gw.relogin(&w.a).await, w.gw.relogin(&w.b).await);
    // SPEC M3, scaled: 10 requests at $1.00 then $0.50; A 8, B 4 -> $11.00 = $7.33 + $3.67.
    calls(&a, Method::PUT, "/svc/storage/objects/k", 8).await;
    calls(&b, Method::PUT, "/svc/storage/objects/k", 4).await;
    // AWS's example, one request per TB: 10 at $174.08 then $133.12; 8 + 4.
    calls(&a, Method::GET, "/svc/storage/objects/k", 8).await;
    calls(&b, Method::GET, "/svc/storage/objects/k", 4).await;
    // And per GB (2^30 bytes) through the ledger: 8 TiB and 4 TiB out at $0.17/GB
    // ($174.08/TB), not tiered: $1,392.64 + $696.32 = AWS's "separately" $2,088.96.
    let per_gb = RoutePrice::flat(Money::ZERO, Money::ZERO, Money::parse("0.17").unwrap());
    let tib = 1u64 << 40;
    for (account, tbs) in [(&a, 8), (&b, 4)] {
        let e = entry(
            account,
            &w.payer,
            Some(&w.org_id),
            "storage:DeleteObject",
            w.gw.clock.now(),
            tbs * tib,
            &per_gb,
        );
        w.gw.app.journal.append(e).await.expect("append");
    }

    let payer = w.gw.mfa_login(&w.payer).await;
    let consolidated = bill(&payer, w.month, "").await;
    assert_eq!(consolidated["payer_account_id"], payer.id);
    assert_eq!(consolidated["status"], "ESTIMATED");
    assert_eq!(consolidated["currency"], "USD");
    assert!(consolidated.get("billed_to").is_none(), "{consolidated}");
    assert_eq!(
        lines(&consolidated, &a.id, "storage:PutObject"),
        requests("8", "7.33")
    );
    assert_eq!(
        lines(&consolidated, &b.id, "storage:PutObject"),
        requests("4", "3.67")
    );
    assert_eq!(
        lines(&consolidated, &a.id, "storage:GetObject")[..1],
        requests("8", "1338.03")[..]
    );
    assert_eq!(
        lines(&consolidated, &b.id, "storage:GetObject")[..1],
        requests("4", "669.01")[..]
    );
    let gb = |account: &str| {
        all_lines(&consolidated, account, "storage:DeleteObject")
            .into_iter()
            .filter(|l| l.0 == "GB-out")
            .collect::<Vec<_>>()
    };
    assert_eq!(
        gb(&a.id),
        vec![("GB-out".into(), "8192".into(), "1392.64".into())]
    );
    assert_eq!(
        gb(&b.id),
        vec![("GB-out".into(), "4096".into(), "696.32".into())]
    );
    // $11.00 + $2,007.04 + $2,088.96 (+ $0.00 DeleteObject requests).
    assert_eq!(consolidated["total"], "4107.00");
    assert_eq!(account_of(&consolidated, &payer.id)["total"], "0.00");
    assert_adds_up(&consolidated);
    assert_eq!(
        account_ids(&consolidated),
        {
            let mut ids = vec![payer.id.clone(), a.id.clone(), b.id.clone()];
            ids.sort();
            ids
        },
        "every account billed to the payer, itself included"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m4_member_sees_only_its_lines_billed_to_the_payer_and_standalone_its_own() {
    let w = world().await;
    let gw = &w.gw;
    gw.clock.set(at(w.month, 2, 9));
    let (a, b) = (gw.relogin(&w.a).await, gw.relogin(&w.b).await);
    let solo = gw.account("solo").await;
    calls(&a, Method::GET, "/svc/storage/objects", 2).await;
    calls(&b, Method::GET, "/svc/storage/objects", 3).await;
    calls(&solo, Method::GET, "/svc/storage/objects", 5).await;

    let member = bill(&a, w.month, "").await;
    assert_eq!(member["billed_to"], w.payer.id);
    assert_eq!(member["payer_account_id"], w.payer.id);
    assert_eq!(
        account_ids(&member),
        vec![a.id.clone()],
        "only its own lines"
    );
    assert_eq!(
        lines(&member, &a.id, "storage:ListObjects"),
        requests("2", "2.00")
    );
    assert_eq!(member["total"], "2.00");
    assert!(member.get("also_billed_to").is_none(), "{member}");
    // Another payer's bill is not a member's to pick.
    let r = a
        .client
        .get(&format!("/billing/bills/{}?payer={}", w.month, solo.id))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    assert_eq!(r.error_code(), "NoSuchBill");

    let standalone = bill(&solo, w.month, "").await;
    assert_eq!(standalone["payer_account_id"], solo.id);
    assert!(standalone.get("billed_to").is_none(), "{standalone}");
    assert_eq!(account_ids(&standalone), vec![solo.id.clone()]);
    assert_eq!(standalone["total"], "5.00");

    let payer = gw.mfa_login(&w.payer).await;
    let consolidated = bill(&payer, w.month, "").await;
    assert_eq!(consolidated["total"], "5.00");
    assert!(!account_ids(&consolidated).contains(&solo.id));

    // Bad input and a month that has not begun.
    let r = a.client.get("/billing/bills/2025-13").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "InvalidInput");
    let r = a
        .client
        .get(&format!("/billing/bills/{}", w.month.next().unwrap()))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // No token, no bill.
    let r = gw.client.get(&format!("/billing/bills/{}", w.month)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m4_a6_mid_month_join_and_leave_split_the_account_between_bills() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .tweak(test_prices)
        .start()
        .await;
    let month = future_month(gw.clock.now());
    gw.clock.set(at(month, 1, 1));
    let payer = gw.mfa_owner("payer").await;
    let b = gw.account("acct-b").await;
    gw.app
        .orgs
        .create_organization(
            &id(&payer),
            Some(FeatureSet::ConsolidatedBilling),
            true,
            gw.clock.now(),
        )
        .await
        .unwrap();

    // Before joining: its own bill.
    gw.clock.set(at(month, 2, 9));
    let b = gw.relogin(&b).await;
    calls(&b, Method::GET, "/svc/storage/objects", 1).await;
    // Joins on the 10th: billed to the payer from then on.
    gw.clock.set(at(month, 10, 9));
    join(&gw, &payer, &b).await;
    let b = gw.relogin(&b).await;
    calls(&b, Method::GET, "/svc/storage/objects", 2).await;
    // Leaves on the 20th: its own again at once.
    gw.clock.set(at(month, 20, 9));
    gw.app.orgs.leave(&id(&b), gw.clock.now()).await.unwrap();
    let b = gw.relogin(&b).await;
    calls(&b, Method::GET, "/svc/storage/objects", 3).await;
    // After the month.
    gw.clock.set(at(month.next().unwrap(), 2, 9));
    let b = gw.relogin(&b).await;

    let payer = gw.mfa_login(&payer).await;
    let consolidated = bill(&payer, month, "").await;
    assert_eq!(
        lines(&consolidated, &b.id, "storage:ListObjects"),
        requests("2", "2.00"),
        "only the usage while a member is on the payer's bill"
    );
    assert_adds_up(&consolidated);

    // By default, the bill of its payer at the month's end: itself.
    let own = bill(&b, month, "").await;
    assert_eq!(own["payer_account_id"], b.id);
    assert!(own.get("billed_to").is_none());
    assert_eq!(
        lines(&own, &b.id, "storage:ListObjects"),
        requests("4", "4.00"),
        "before joining and after leaving"
    );
    assert_eq!(own["also_billed_to"], serde_json::json!([payer.id]));
    // Its lines on the payer's bill of the same month.
    let there = bill(&b, month, &format!("?payer={}", payer.id)).await;
    assert_eq!(there["billed_to"], payer.id);
    assert_eq!(account_ids(&there), vec![b.id.clone()]);
    assert_eq!(
        lines(&there, &b.id, "storage:ListObjects"),
        requests("2", "2.00")
    );
    assert_eq!(there["also_billed_to"], serde_json::json!([b.id]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m4_csv_has_one_row_per_line_and_round_trips() {
    let w = world().await;
    w.gw.clock.set(at(w.month, 4, 9));
    let (a, b) = (w.gw.relogin(&w.a).await, w.gw.relogin(&w.b).await);
    calls(&a, Method::PUT, "/svc/storage/objects/k", 3).await;
    calls(&b, Method::GET, "/svc/storage/objects", 2).await;
    let payer = w.gw.mfa_login(&w.payer).await;
    let json = bill(&payer, w.month, "").await;
    let r = payer
        .client
        .get(&format!("/billing/bills/{}?format=csv", w.month))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    let rows = export::parse_csv(&r.text()).expect("CSV parses");
    let expected: Vec<(String, String, String, String, String)> = json["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|acct| {
            acct["lines"].as_array().unwrap().iter().map(move |l| {
                (
                    acct["account_id"].as_str().unwrap().to_owned(),
                    l["action"].as_str().unwrap().to_owned(),
                    l["unit"].as_str().unwrap().to_owned(),
                    l["quantity"].as_str().unwrap().to_owned(),
                    l["amount"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect();
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.account_id.to_string(),
                r.action.clone(),
                r.unit.to_string(),
                r.quantity.normalize().to_string(),
                r.amount.to_string(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert!(
        rows.iter()
            .all(|r| r.payer_account_id.to_string() == payer.id)
    );
    let sum: Money = Money::checked_sum(rows.iter().map(|r| r.amount)).unwrap();
    assert_eq!(sum.to_string(), json["total"]);
    let r = payer
        .client
        .get(&format!("/billing/bills/{}?format=xml", w.month))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

// === M6 ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m6_finalize_after_grace_seals_the_bill_and_late_records_become_adjustments() {
    let w = world().await;
    let gw = &w.gw;
    gw.clock.set(at(w.month, 5, 9));
    let a = gw.relogin(&w.a).await;
    calls(&a, Method::PUT, "/svc/storage/objects/k", 3).await;
    calls(&a, Method::GET, "/svc/storage/objects", 1).await;
    let finalize = |account: &Account| {
        let client = account.client.clone();
        let path = format!("/billing/bills/{}/finalize", w.month);
        async move { client.send(Method::POST, &path, &[], "").await }
    };

    // During the month, and until the grace period (3 days by default) is over: 409.
    let payer = gw.mfa_login(&w.payer).await;
    let r = finalize(&payer).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert_eq!(r.error_code(), "FinalizeTooEarly");
    let next = w.month.next().unwrap();
    gw.clock.set(at(next, 3, 23) + Duration::minutes(59));
    let payer = gw.mfa_login(&w.payer).await;
    let r = finalize(&payer).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{}", at(next, 4, 0).format("%Y-%m-%d %H:%M:%S"))),
        "names the earliest time: {}",
        r.text()
    );
    assert!(r.header("retry-after").is_some());
    let before = bill(&payer, w.month, "").await;

    // A member is not the payer.
    gw.clock.set(at(next, 4, 1));
    let a = gw.relogin(&a).await;
    let r = finalize(&a).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.error_code(), "AccessDenied");

    let payer = gw.mfa_login(&w.payer).await;
    let r = finalize(&payer).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sealed = r.json();
    assert_eq!(sealed["status"], "FINAL");
    let hash = sealed["content_hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64);
    assert_eq!(sealed["total"], before["total"]);
    assert_eq!(sealed["accounts"], before["accounts"]);
    let r = finalize(&payer).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error_code(), "BillAlreadyFinal");

    // A record of the final month arriving late is booked on the next month, naming it.
    let late = entry(
        &a,
        &w.payer,
        Some(&w.org_id),
        "storage:ListObjects",
        at(w.month, 28, 12),
        0,
        &RoutePrice::flat(Money::parse("1.00").unwrap(), Money::ZERO, Money::ZERO),
    );
    gw.app.journal.append(late).await.expect("append");
    let after = bill(&payer, w.month, "").await;
    assert_eq!(after["status"], "FINAL");
    assert_eq!(
        after["content_hash"],
        hash.as_str(),
        "a final bill never changes"
    );
    assert_eq!(after["accounts"], sealed["accounts"]);
    let open = bill(&payer, next, "").await;
    assert_eq!(open["status"], "ESTIMATED");
    let adjustment: Vec<&Value> = account_of(&open, &a.id)["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["action"] == "storage:ListObjects")
        .collect();
    assert_eq!(adjustment.len(), 1, "{open}");
    assert_eq!(adjustment[0]["original_month"], w.month.to_string());
    assert_eq!(adjustment[0]["quantity"], "1");
    assert_eq!(adjustment[0]["amount"], "1.00");
    assert_adds_up(&open);
    // The member sees the FINAL status and the payer's seal too.
    let member = bill(&a, w.month, "").await;
    assert_eq!(member["status"], "FINAL");
    assert_eq!(member["content_hash"], hash.as_str());
}

// === O1, M7: the CLI ===

/// A config file for the binary: the shipped one with this data dir, the repository's policies,
/// every service at `upstream`, and port 0.
fn write_config(dir: &Path, data_dir: &Path, upstream: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/tollgate.toml")).unwrap();
    let mut config = support::backend::with_store(&shipped, data_dir)
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "dir = \"policies\"",
            &format!("dir = {:?}", root.join("policies").display().to_string()),
        )
        .replace("watch = true", "watch = false");
    for port in ["9101", "9102", "9103"] {
        config = config.replace(
            &format!("\"http://127.0.0.1:{port}\""),
            &format!("{upstream:?}"),
        );
    }
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn tollgate(args: &[&str], config: &Path) -> (i32, String, String) {
    let output = Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run tollgate");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o1_m7_bill_and_ledger_verify_commands_on_a_live_store_and_a_tampered_row() {
    // Real time here: the CLI reads the system clock, so the month is the current one. The
    // shipped prices, since the CLI reads the shipped config file.
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .tweak(|c| c.policies.watch = false)
        .start()
        .await;
    let payer = gw.mfa_owner("payer").await;
    let a = gw.account("acct-a").await;
    let solo = gw.account("solo").await;
    gw.app
        .orgs
        .create_organization(
            &id(&payer),
            Some(FeatureSet::ConsolidatedBilling),
            true,
            gw.clock.now(),
        )
        .await
        .unwrap();
    join(&gw, &payer, &a).await;
    calls(&a, Method::PUT, "/svc/storage/objects/k", 3).await;
    calls(&solo, Method::GET, "/svc/storage/objects", 2).await;
    let month = BillingMonth::containing(gw.clock.now()).unwrap();
    let payer = gw.mfa_login(&payer).await;
    let api_csv = payer
        .client
        .get(&format!("/billing/bills/{month}?format=csv"))
        .await
        .text();

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &gw.data_dir, &upstream.url());
    // One payer, while the gateway runs on the store: the same rows as the API.
    let (code, out, err) = tollgate(
        &[
            "bill",
            "--month",
            &month.to_string(),
            "--payer",
            &payer.id,
            "--format",
            "csv",
        ],
        &config,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        export::parse_csv(&out).unwrap(),
        export::parse_csv(&api_csv).unwrap()
    );
    // Every payer of the month.
    let (code, out, err) = tollgate(
        &["bill", "--month", &month.to_string(), "--format", "json"],
        &config,
    );
    assert_eq!(code, 0, "{err}");
    let all: Value = serde_json::from_str(&out).unwrap();
    let payers: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["payer_account_id"].as_str().unwrap())
        .collect();
    let mut expected = vec![payer.id.as_str(), solo.id.as_str()];
    expected.sort();
    assert_eq!(payers, expected);
    let (code, out, err) = tollgate(&["bill", "--month", &month.to_string()], &config);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&solo.id) && out.contains("storage:ListObjects"),
        "{out}"
    );
    let (code, _, _) = tollgate(&["bill", "--month", "2025-13"], &config);
    assert_eq!(code, 64);

    // A clean ledger verifies.
    let (code, out, err) = tollgate(&["ledger", "verify"], &config);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("records checked"), "{out}");
    let heads = gw.app.journal.heads();
    assert!(
        out.contains(&format!("head seq {}", heads.ledger.seq)),
        "{out}"
    );

    // Altering one stored amount is found, by seq.
    let changed = support::backend::TestDb(gw.database())
        .execute("UPDATE ledger SET amount = '0' WHERE seq = 2", params![])
        .unwrap();
    assert_eq!(changed, 1);
    let (code, out, err) = tollgate(&["ledger", "verify"], &config);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("record 2 was altered"), "{out}");
}

// === M2: no ledger, no service ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m2_calls_are_refused_while_the_ledger_cannot_be_written_and_served_again_after() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    let a = gw.account("acct-a").await;
    calls(&a, Method::GET, "/svc/storage/objects", 1).await;

    // Another process-like connection holds the write lock longer than the busy timeout (5 s).
    let lock = support::backend::hold_write_lock(gw.database());
    let seen_before = upstream.seen().len();
    let r = a.client.get("/svc/storage/objects").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.error_code(), "MeteringUnavailable");
    assert!(
        !r.text().contains("\"uri\""),
        "the upstream's answer is not served: {}",
        r.text()
    );
    assert_eq!(
        upstream.seen().len(),
        seen_before + 1,
        "the upstream answered; the gateway withheld the answer"
    );
    let r = gw.client.get("/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.json()["status"], "unready");

    drop(lock);
    let mut recovered = false;
    for _ in 0..50 {
        tokio::time::sleep(StdDuration::from_millis(200)).await;
        if gw.client.get("/readyz").await.status == StatusCode::OK {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "ready again once the store takes writes");
    calls(&a, Method::GET, "/svc/storage/objects", 1).await;
    let calls_recorded: i64 = support::backend::TestDb(gw.database())
        .query_row(
            "SELECT COUNT(*) FROM ledger WHERE kind = 'call'",
            params![],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(calls_recorded, 2, "the refused call left no record");
}

// === M2, M7 under SIGKILL ===

struct Serving {
    child: std::process::Child,
    url: String,
}

fn serve(config: &Path) -> Serving {
    let mut child = Command::new(binary())
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tollgate");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("tollgate: listening on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(StdDuration::from_secs(30))
        .expect("the gateway listens");
    Serving { child, url }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m2_m7_sigkill_mid_traffic_loses_no_served_call_and_both_chains_verify() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &data, &upstream.url());
    let mut gw = serve(&config);
    let client = Client::new(&gw.url);
    let r = client
        .post_json(
            "/accounts",
            serde_json::json!({"name": "crash", "email": "c@example.com", "owner_user": "owner", "owner_password": crate::support::gateway::OWNER_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let account = r.json()["account_id"].as_str().unwrap().to_owned();
    let r = client
        .post_json(
            "/auth/login",
            serde_json::json!({"account_id": account, "user": "owner", "password": crate::support::gateway::OWNER_PASSWORD}),
        )
        .await;
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let client = client.with_token(&token);

    // Several tasks call for ~2 s, each request with its own id; the gateway dies under them.
    let served = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let (client, served) = (client.clone(), served.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let rid = format!("crash-{t}-{i}");
                let request = http::Request::builder()
                    .method(Method::GET)
                    .uri(format!("{}/svc/storage/objects/k{i}", client.base()))
                    .header(
                        "authorization",
                        format!("Bearer {}", client.token().unwrap()),
                    )
                    .header("x-request-id", &rid)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                let sender = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<http_body_util::Full<bytes::Bytes>>();
                let result =
                    tokio::time::timeout(StdDuration::from_secs(5), sender.request(request)).await;
                match result {
                    Ok(Ok(response)) => {
                        let status = response.status();
                        // The head arrived: that is what the client received.
                        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                        if status == StatusCode::OK {
                            served.lock().push(rid);
                        }
                    }
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(StdDuration::from_secs(2)).await;
    gw.child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
    let _ = gw.child.wait();
    for task in tasks {
        let _ = tokio::time::timeout(StdDuration::from_secs(10), task).await;
    }
    let served = served.lock().clone();
    assert!(served.len() > 20, "traffic flowed: {}", served.len());

    // The store reopens after the crash, and serves.
    let mut gw = serve(&config);
    let r = Client::new(&gw.url).get("/readyz").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    gw.child.kill().unwrap();
    let _ = gw.child.wait();

    let db = support::backend::database(&data);
    let count = |sql: &str| -> BTreeMap<String, i64> {
        support::backend::TestDb(db.clone())
            .query_map(sql, params![], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .into_iter()
            .collect()
    };
    let call_records = count(
        "SELECT client_request_id, COUNT(*) FROM ledger WHERE kind = 'call' AND client_request_id LIKE 'crash-%' GROUP BY client_request_id",
    );
    let decision_records = count(
        "SELECT client_request_id, COUNT(*) FROM decisions WHERE kind = 'service' AND client_request_id LIKE 'crash-%' GROUP BY client_request_id",
    );
    let unique: HashSet<&String> = served.iter().collect();
    assert_eq!(unique.len(), served.len(), "request ids are unique");
    for rid in &served {
        assert_eq!(call_records.get(rid), Some(&1), "call record of {rid}");
        assert_eq!(
            decision_records.get(rid),
            Some(&1),
            "decision record of {rid}"
        );
    }
    assert!(
        call_records.values().all(|n| *n == 1),
        "no call metered twice"
    );
    let (code, out, err) = tollgate(&["ledger", "verify"], &config);
    assert_eq!(code, 0, "{out}{err}");
    let decisions = tokio::task::spawn_blocking(move || tollgate::journal::verify_decisions(&db))
        .await
        .unwrap()
        .expect("decision log verifies");
    assert!(decisions.records >= served.len() as u64);
}

// === S2 on the bill ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_plan_line_is_on_the_month_end_payers_bill_and_counts_charges_elsewhere() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .tweak(|c| {
            test_prices(c);
            price(c, "storage:ListObjects", per_request("1000.00"));
        })
        .start()
        .await;
    let month = future_month(gw.clock.now());
    gw.clock.set(at(month, 1, 1));
    let payer = gw.mfa_owner("payer").await;
    let b = gw.account("acct-b").await;
    gw.app
        .orgs
        .create_organization(
            &id(&payer),
            Some(FeatureSet::ConsolidatedBilling),
            true,
            gw.clock.now(),
        )
        .await
        .unwrap();
    let r = b
        .client
        .put_json(
            &format!("/accounts/{}/services/support/plan", b.id),
            serde_json::json!({"plan": "business"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // $1,000 on its own bill before joining, $1,000 on the payer's after.
    calls(&b, Method::GET, "/svc/storage/objects", 1).await;
    gw.clock.set(at(month, 10, 9));
    join(&gw, &payer, &b).await;
    let b = gw.relogin(&b).await;
    calls(&b, Method::GET, "/svc/storage/objects", 1).await;
    gw.clock.set(at(month.next().unwrap(), 1, 9));

    let payer = gw.mfa_login(&payer).await;
    let consolidated = bill(&payer, month, "").await;
    // 10 % of the whole month's $2,000 = $200 (> the $100 minimum), all days of the month; on
    // this bill alone it would have been max($100, 10 % of $1,000) = $100.
    assert_eq!(
        all_lines(&consolidated, &b.id, "plan"),
        vec![(
            "plan:business".into(),
            month.days_in_month().to_string(),
            "200.00".into()
        )]
    );
    assert_eq!(account_of(&consolidated, &b.id)["total"], "1200.00");
    assert_adds_up(&consolidated);
    let b = gw.relogin(&b).await;
    let own = bill(&b, month, &format!("?payer={}", b.id)).await;
    assert!(all_lines(&own, &b.id, "plan").is_empty(), "{own}");
    assert_eq!(own["total"], "1000.00");
}
