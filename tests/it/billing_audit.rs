//! Billing integrity (issue 17) through the real gateway: support-plan days (SPEC S2), ledger
//! truncation and seal deletion seen by `tollgate ledger verify` and refused by the writer (M7),
//! sealed bills that never depend on another payer's open month, and one tier group per
//! organization (M3, M6).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration as StdDuration;

use chrono::{DateTime, TimeZone, Utc};
use http::StatusCode;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;
use tollgate::billing::BillingMonth;
use tollgate::clock::Clock;

use tollgate::params;

use crate::support::backend::TestDb;
use crate::support::{self, Account, Client, TestGateway, Upstream, binary};

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

// === M7: truncation and seal deletion (issue 17 item 6) ===

/// The shipped config on the test's store, with `storage:ListObjects` at $1.00 a call.
fn write_config(dir: &Path, data_dir: &Path, upstream: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/tollgate.toml")).unwrap();
    assert!(shipped.contains("per_request = \"0.0005\""));
    let mut config = support::backend::with_store(&shipped, data_dir)
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "dir = \"policies\"",
            &format!("dir = {:?}", root.join("policies").display().to_string()),
        )
        .replace("watch = true", "watch = false")
        .replacen("per_request = \"0.0005\"", "per_request = \"1.00\"", 1);
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

/// Starts `tollgate serve`: `Ok((child, url))` once it listens, `Err((exit code, stderr))` if
/// it exits first.
fn serve(config: &Path) -> Result<(Child, String), (i32, String)> {
    let mut child = Command::new(binary())
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
    let deadline = std::time::Instant::now() + StdDuration::from_secs(60);
    loop {
        if let Ok(url) = rx.recv_timeout(StdDuration::from_millis(100)) {
            return Ok((child, url));
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
            return Err((status.code().unwrap_or(-1), err));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway neither listened nor exited"
        );
    }
}

fn stop(mut child: Child) {
    child.kill().unwrap();
    let _ = child.wait();
}

async fn owner_client(url: &str) -> Client {
    let client = Client::new(url);
    let r = client
        .post_json(
            "/accounts",
            serde_json::json!({"name": "cut", "email": "c@example.com", "owner_user": "owner",
                               "owner_password": crate::support::gateway::OWNER_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let account = r.json()["account_id"].as_str().unwrap().to_owned();
    let r = client
        .post_json(
            "/auth/login",
            serde_json::json!({"account_id": account, "user": "owner",
                               "password": crate::support::gateway::OWNER_PASSWORD}),
        )
        .await;
    let token = r.json()["token"].as_str().unwrap().to_owned();
    client.with_token(&token)
}

fn head_of(config: &Path) -> (u64, String) {
    let (code, out, err) = tollgate(&["ledger", "head"], config);
    assert_eq!(code, 0, "{out}{err}");
    let line = out.trim().to_owned();
    let (seq, hash) = line.split_once(':').unwrap_or_else(|| panic!("{line}"));
    assert_eq!(hash.len(), 64, "{line}");
    (seq.parse().unwrap(), line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m7_records_cut_off_the_ledger_end_are_reported_and_block_appends_until_accepted() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &data, &upstream.url());
    let (child, url) = serve(&config).expect("the gateway starts");
    let client = owner_client(&url).await;
    for _ in 0..4 {
        let r = client.get("/svc/storage/objects").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    // Every record is committed once its response is read; then the gateway stops.
    let r = client.get("/svc/storage/objects").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let db = TestDb(support::backend::database(&data));
    stop(child);

    let (code, out, err) = tollgate(&["ledger", "verify"], &config);
    assert_eq!(code, 0, "{out}{err}");
    let (head, kept) = head_of(&config);
    assert!(head >= 5, "{kept}");
    // The last three records go, a $1.00 call among them.
    let last_three: Vec<(String, String)> = db
        .query_map(
            "SELECT kind, amount FROM ledger WHERE seq > ?1",
            params![(head - 3) as i64],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        last_three
            .iter()
            .any(|(kind, amount)| kind == "call"
                && amount.parse::<Decimal>().unwrap() == Decimal::ONE),
        "a $1.00 call is among the last three: {last_three:?}"
    );
    let deleted = db
        .execute(
            "DELETE FROM ledger WHERE seq > ?1",
            params![(head - 3) as i64],
        )
        .unwrap();
    assert_eq!(deleted, 3);
    let cut = head - 3;

    // verify names what is missing and fails.
    let (code, out, err) = tollgate(&["ledger", "verify"], &config);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!(
            "the ledger ends at record {cut}, but `ledger_spend` counts {head} records: records {} to {head} are missing (3 records)",
            cut + 1
        )),
        "{out}"
    );
    assert!(out.contains("records of account"), "{out}");
    // An auditor who kept the head proves the tail incomplete.
    let (code, out, _) = tollgate(&["ledger", "verify", "--expect-head", &kept], &config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("the expected head record {head} is missing")),
        "{out}"
    );
    let (code, _, err) = tollgate(&["ledger", "verify", "--expect-head", "x"], &config);
    assert_eq!(code, 64, "{err}");

    // The gateway refuses to start appending after the cut, and says what to run.
    let (code, err) = serve(&config)
        .map(|(c, _)| stop(c))
        .expect_err("refuses to start");
    assert_ne!(code, 0);
    assert!(err.contains("the ledger was truncated"), "{err}");
    assert!(
        err.contains(&format!(
            "tollgate ledger accept-truncation --through {cut}"
        )),
        "{err}"
    );

    // Accepting needs the real head; then it records who and when.
    let (code, _, err) = tollgate(
        &[
            "ledger",
            "accept-truncation",
            "--through",
            &head.to_string(),
            "--by",
            "auditor@example.com",
        ],
        &config,
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains(&format!("--through {cut}")), "{err}");
    let (code, out, err) = tollgate(
        &[
            "ledger",
            "accept-truncation",
            "--through",
            &cut.to_string(),
            "--by",
            "auditor@example.com",
        ],
        &config,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "records {} to {head} are acknowledged lost by auditor@example.com",
            cut + 1
        )),
        "{out}"
    );
    let (code, out, err) = tollgate(&["ledger", "verify"], &config);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("note: auditor@example.com acknowledged at"),
        "{out}"
    );
    let (code, _, err) = tollgate(
        &[
            "ledger",
            "accept-truncation",
            "--through",
            &cut.to_string(),
            "--by",
            "x",
        ],
        &config,
    );
    assert_eq!(code, 64, "nothing left to accept: {err}");

    // Appends resume after the cut, and the ledger verifies.
    let (child, url) = serve(&config).expect("the gateway starts after the acceptance");
    let client = owner_client(&url).await;
    let r = client.get("/svc/storage/objects").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    stop(child);
    let (next, _) = head_of(&config);
    assert!(next > cut);
    let (code, out, err) = tollgate(&["ledger", "verify"], &config);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m6_m7_a_deleted_final_seal_is_reported_by_ledger_verify() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .tweak(|c| c.policies.watch = false)
        .start()
        .await;
    let month = future_month(gw.clock.now());
    gw.clock.set(at(month, 5, 9));
    let solo = gw.account("solo").await;
    let r = solo.client.get("/svc/storage/objects").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    gw.clock.set(at(month.next().unwrap(), 10, 9));
    let solo = gw.relogin(&solo).await;
    let r = solo
        .client
        .send(
            http::Method::POST,
            &format!("/billing/bills/{month}/finalize"),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(bill(&solo, month).await["status"], "FINAL");

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &gw.data_dir, &upstream.url());
    let (code, out, err) = tollgate(&["ledger", "verify"], &config);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 ledger marks checked"), "{out}");

    // Deleting the seal row turns the FINAL bill back into ESTIMATED ...
    let deleted = TestDb(gw.database())
        .execute(
            "DELETE FROM final_months WHERE payer_account_id = ?1",
            params![solo.id.as_str()],
        )
        .unwrap();
    assert_eq!(deleted, 1);
    // ... and verify names it.
    let (code, out, err) = tollgate(&["ledger", "verify"], &config);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!(
            "the FINAL seal of the {month} bill of payer {} was deleted from `final_months`",
            solo.id
        )),
        "{out}"
    );
    // A seal row written outside tollgate (no mark records it) is named too.
    TestDb(gw.database())
        .execute(
            "INSERT INTO final_months (payer_account_id, month, finalized_at, content_hash, through_seq)
             VALUES (?1, ?2, 0, 'forged', 1)",
            params!["111111111111", month.to_string()],
        )
        .unwrap();
    let (code, out, _) = tollgate(&["ledger", "verify"], &config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "`final_months` seals the {month} bill of payer 111111111111, but no ledger mark records that seal"
        )),
        "{out}"
    );
}

/// A store upgraded from before `ledger_marks` has FINAL seals and no marks: the writer adopts
/// them when it opens, so `ledger verify` passes and notes them. Once marks exist, a seal row
/// without one is still reported after a restart (nothing more is adopted). The deletion of a
/// seal's row while its mark exists is covered by
/// `m6_m7_a_deleted_final_seal_is_reported_by_ledger_verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m6_m7_seals_made_before_ledger_marks_are_adopted_at_upgrade_not_reported() {
    let upstream = Upstream::start().await;
    let mut gw = TestGateway::builder(&upstream.url())
        .tweak(|c| c.policies.watch = false)
        .start()
        .await;
    let month = future_month(gw.clock.now());
    gw.clock.set(at(month, 5, 9));
    let solo = gw.account("solo").await;
    let r = solo.client.get("/svc/storage/objects").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    gw.clock.set(at(month.next().unwrap(), 10, 9));
    let solo = gw.relogin(&solo).await;
    let r = solo
        .client
        .send(
            http::Method::POST,
            &format!("/billing/bills/{month}/finalize"),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let db = TestDb(gw.database());
    gw.shutdown().await;

    // The store as it was before the marks table: the seal's row, no marks.
    let emptied = db.execute("DELETE FROM ledger_marks", params![]).unwrap();
    assert_eq!(emptied, 1);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &gw.data_dir, &upstream.url());
    let unrecorded = format!(
        "`final_months` seals the {month} bill of payer {}, but no ledger mark records that seal",
        solo.id
    );
    let (code, out, err) = tollgate(&["ledger", "verify"], &config);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(&unrecorded), "{out}");

    // The upgraded gateway adopts the seal when its writer opens the store.
    let (child, _) = serve(&config).expect("the gateway starts on the upgraded store");
    stop(child);
    let (code, out, err) = tollgate(&["ledger", "verify"], &config);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "note: the FINAL seal of the {month} bill of payer {} predates ledger marks; the gateway adopted it",
            solo.id
        )),
        "{out}"
    );
    assert!(out.contains("1 ledger marks checked"), "{out}");

    // With a mark in the chain nothing more is adopted: a seal row no mark records (written
    // outside tollgate) is reported, also after a restart.
    db.execute(
        "INSERT INTO final_months (payer_account_id, month, finalized_at, content_hash, through_seq)
         VALUES (?1, ?2, 0, 'forged', 1)",
        params!["111111111111", month.to_string()],
    )
    .unwrap();
    let (child, _) = serve(&config).expect("the gateway starts");
    stop(child);
    let (code, out, _) = tollgate(&["ledger", "verify"], &config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "`final_months` seals the {month} bill of payer 111111111111, but no ledger mark records that seal"
        )),
        "{out}"
    );
}

// === M6: a sealed bill never depends on another payer's open month ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m6_s2_a_late_record_on_another_payers_open_month_leaves_a_sealed_plan_bill_final() {
    use tollgate::billing::{Money, RoutePrice};
    use tollgate::ids::{RequestId, UserName};
    use tollgate::journal::{Charge, LedgerEntry, MeteredCall, RecordId};
    use tollgate::org::FeatureSet;

    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .tweak(|c| c.policies.watch = false)
        .start()
        .await;
    let month = future_month(gw.clock.now());
    gw.clock.set(at(month, 1, 1));
    let payer = gw.mfa_owner("payer").await;
    let b = gw.account("acct-b").await;
    let id = |a: &str| tollgate::ids::AccountId::parse(a).unwrap();
    gw.app
        .orgs
        .create_organization(
            &id(&payer.id),
            Some(FeatureSet::ConsolidatedBilling),
            true,
            gw.clock.now(),
        )
        .await
        .unwrap();
    put_plan(&b, "business".into()).await;
    // B calls on its own bill, then joins the payer's organization on the 10th.
    let r = b.client.get("/svc/storage/objects").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    gw.clock.set(at(month, 10, 9));
    let orgs = &gw.app.orgs;
    let invite = orgs
        .invite(&id(&payer.id), &id(&b.id), gw.clock.now())
        .await
        .unwrap();
    orgs.accept(&id(&b.id), &invite.id, gw.clock.now())
        .await
        .unwrap();
    let b = gw.relogin(&b).await;
    let r = b.client.get("/svc/storage/objects").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // The payer seals its bill, with B's plan line on it.
    gw.clock.set(at(month.next().unwrap(), 10, 9));
    let payer = gw.mfa_login(&payer).await;
    let r = payer
        .client
        .send(
            http::Method::POST,
            &format!("/billing/bills/{month}/finalize"),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sealed = r.json();
    assert_eq!(plan_lines(&sealed, &b.id).len(), 1, "{sealed}");

    // A late record of B's standalone days lands on B's own month, which is still open.
    let late = LedgerEntry {
        record_id: RecordId::generate(),
        event_time: at(month, 5, 12),
        call: MeteredCall {
            request_id: RequestId::generate(),
            account_id: id(&b.id),
            payer_account_id: id(&b.id),
            org_id: None,
            user_name: UserName::parse(&b.owner).unwrap(),
            service: "storage".into(),
            action: "storage:ListObjects".into(),
            method: "GET".into(),
            status: 200,
            client_request_id: None,
        },
        bytes_in: 0,
        bytes_out: 0,
        charge: Charge::at_price(
            &RoutePrice::flat(Money::parse("5000.00").unwrap(), Money::ZERO, Money::ZERO),
            1,
            0,
            0,
        )
        .unwrap(),
    };
    gw.app.journal.append(late).await.expect("append");

    // The sealed bill still reads, unchanged.
    let r = payer.client.get(&format!("/billing/bills/{month}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let after = r.json();
    assert_eq!(after["status"], "FINAL");
    assert_eq!(after["content_hash"], sealed["content_hash"]);
    assert_eq!(after["accounts"], sealed["accounts"]);
}

// === M3: one tier group per organization ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m3_a_payer_with_two_organizations_in_one_month_has_two_tier_groups() {
    use tollgate::org::FeatureSet;

    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .tweak(|c| {
            c.policies.watch = false;
            let route = c
                .services
                .iter_mut()
                .flat_map(|s| s.routes.iter_mut())
                .find(|r| r.action == "storage:PutObject")
                .unwrap();
            route.price = crate::billing::tiers(10, "1.00", "0.50");
        })
        .start()
        .await;
    let month = future_month(gw.clock.now());
    gw.clock.set(at(month, 1, 1));
    let payer = gw.mfa_owner("payer").await;
    let a = gw.account("acct-a").await;
    let b = gw.account("acct-b").await;
    let id = |a: &str| tollgate::ids::AccountId::parse(a).unwrap();
    let orgs = &gw.app.orgs;
    let (gw, payer_id) = (&gw, id(&payer.id));
    let join = |member: String| {
        let payer_id = payer_id.clone();
        async move {
            let invite = orgs
                .invite(&payer_id, &id(&member), gw.clock.now())
                .await
                .unwrap();
            orgs.accept(&id(&member), &invite.id, gw.clock.now())
                .await
                .unwrap();
        }
    };
    let put = |account: Account| async move {
        for _ in 0..8 {
            let r = account
                .client
                .send(http::Method::PUT, "/svc/storage/objects/k", &[], "")
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        }
    };

    // The first organization: A makes 8 requests in it, then leaves; it is deleted.
    orgs.create_organization(
        &id(&payer.id),
        Some(FeatureSet::ConsolidatedBilling),
        true,
        gw.clock.now(),
    )
    .await
    .unwrap();
    join(a.id.clone()).await;
    put(gw.relogin(&a).await).await;
    gw.clock.set(at(month, 5, 9));
    orgs.remove_account(&id(&payer.id), &id(&a.id), gw.clock.now())
        .await
        .unwrap();
    orgs.delete_organization(&id(&payer.id), gw.clock.now())
        .await
        .unwrap();
    // The second: B makes 8 requests in it.
    gw.clock.set(at(month, 6, 9));
    orgs.create_organization(
        &id(&payer.id),
        Some(FeatureSet::ConsolidatedBilling),
        true,
        gw.clock.now(),
    )
    .await
    .unwrap();
    join(b.id.clone()).await;
    put(gw.relogin(&b).await).await;

    // Each organization's 8 requests are under its first tier: $8.00 each, not one pool of
    // 16 ($10.00 + $3.00 = $13.00 shared out).
    gw.clock.set(at(month.next().unwrap(), 2, 9));
    let payer = gw.mfa_login(&payer).await;
    let consolidated = bill(&payer, month).await;
    let amount = |account: &str| -> Vec<String> {
        consolidated["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["account_id"] == account)
            .flat_map(|x| x["lines"].as_array().unwrap().iter())
            .filter(|l| l["action"] == "storage:PutObject" && l["unit"] == "requests")
            .map(|l| l["amount"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(amount(&a.id), vec!["8.00"], "{consolidated}");
    assert_eq!(amount(&b.id), vec!["8.00"], "{consolidated}");
}
