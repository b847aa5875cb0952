//! SPEC S1 and S2 through HTTP: signing up for services (and the `NotSignedUp` refusal of calls
//! before sign-up and after sign-off), Premium Support plans with exact periods, and the seed's
//! sentence end to end: a linked account signs up, calls and takes a plan unless the payer
//! restricts it with an all-features guardrail.

use std::path::PathBuf;

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, TimeZone, Utc};
use http::{Method, StatusCode};
use rust_decimal::Decimal;
use tollgate::authz::FeatureSet;
use tollgate::billing::{BillingMonth, Money, charge_for_periods};
use tollgate::clock::Clock;
use tollgate::config::PlanConfig;
use tollgate::ids::AccountId;

use crate::support::gateway::copy_policies;
use crate::support::org::{with_mfa, write};
use crate::support::{Account, TestGateway, Upstream};

fn secs(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn signup_path(account: &Account, service: &str) -> String {
    format!("/accounts/{}/services/{service}/signup", account.id)
}

fn plan_path(account: &Account, service: &str) -> String {
    format!("/accounts/{}/services/{service}/plan", account.id)
}

async fn run_job(account: &Account) -> crate::support::client::TestResponse {
    account
        .client
        .post_json("/svc/compute/jobs", serde_json::json!({"job": "x"}))
        .await
}

async fn sign_up(account: &Account, service: &str) -> crate::support::client::TestResponse {
    account
        .client
        .post_json(&signup_path(account, service), serde_json::json!({}))
        .await
}

async fn sign_off(account: &Account, service: &str) -> crate::support::client::TestResponse {
    account
        .client
        .send(Method::DELETE, &signup_path(account, service), &[], "")
        .await
}

async fn put_plan(
    account: &Account,
    service: &str,
    plan: serde_json::Value,
) -> crate::support::client::TestResponse {
    account
        .client
        .put_json(
            &plan_path(account, service),
            serde_json::json!({ "plan": plan }),
        )
        .await
}

/// Logs the account's owner in again (after the clock moved past the token's lifetime).
async fn relogin(gw: &TestGateway, account: Account) -> Account {
    let token = gw
        .login(&account.id, &account.owner, &account.password)
        .await;
    Account {
        client: gw.client.with_token(&token),
        ..account
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_a_signup_required_service_refuses_calls_before_sign_up_and_after_sign_off() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    let acme = gw.account("acme").await;

    let r = run_job(&acme).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.error_code(), "NotSignedUp");
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains(&format!(
            "POST /accounts/{}/services/compute/signup",
            acme.id
        )),
        "the message says how to sign up: {message}"
    );
    assert_eq!(upstream.count(), 0, "nothing was forwarded");
    assert_eq!(
        acme.client.get("/svc/storage/objects/a").await.status,
        StatusCode::OK,
        "a service without signup_required needs no sign-up"
    );

    let signed_up_at = gw.clock.now();
    let r = sign_up(&acme, "compute").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["signed_up_at"], secs(signed_up_at));
    assert_eq!(r.json()["signed_off_at"], serde_json::Value::Null);
    gw.clock.advance(ChronoDuration::minutes(5));
    let r = sign_up(&acme, "compute").await;
    assert_eq!(r.status, StatusCode::OK, "signing up twice changes nothing");
    assert_eq!(r.json()["signed_up_at"], secs(signed_up_at));

    let r = run_job(&acme).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(upstream.count(), 2);

    gw.clock.advance(ChronoDuration::minutes(5));
    let signed_off_at = gw.clock.now();
    let r = sign_off(&acme, "compute").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["signed_up_at"], secs(signed_up_at));
    assert_eq!(r.json()["signed_off_at"], secs(signed_off_at));
    let r = run_job(&acme).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "refused again after sign-off"
    );
    assert_eq!(r.error_code(), "NotSignedUp");
    assert_eq!(upstream.count(), 2);
    let r = sign_off(&acme, "compute").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "NotSignedUp");

    gw.clock.advance(ChronoDuration::minutes(5));
    let again = gw.clock.now();
    assert_eq!(sign_up(&acme, "compute").await.status, StatusCode::CREATED);
    assert_eq!(sign_up(&acme, "storage").await.status, StatusCode::CREATED);
    let r = acme
        .client
        .get(&format!("/accounts/{}/services", acme.id))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let services = &r.json()["services"];
    assert_eq!(services[0]["service"], "compute");
    assert_eq!(services[0]["signup_required"], true);
    assert_eq!(services[0]["signed_up"], true);
    assert_eq!(services[0]["signed_up_at"], secs(again));
    assert_eq!(
        services[0]["signups"],
        serde_json::json!([
            {"signed_up_at": secs(signed_up_at), "signed_off_at": secs(signed_off_at)},
            {"signed_up_at": secs(again), "signed_off_at": null},
        ])
    );
    assert_eq!(services[1]["service"], "storage");
    assert_eq!(services[1]["signup_required"], false);
    assert_eq!(services.as_array().unwrap().len(), 2);

    let r = sign_up(&acme, "teleport").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "NoSuchService");
    let other = gw.account("other").await;
    let r = other
        .client
        .post_json(&signup_path(&acme, "compute"), serde_json::json!({}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "nobody signs up another account"
    );
    assert_eq!(run_job(&other).await.error_code(), "NotSignedUp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_s2_a_plan_of_a_signup_required_service_needs_the_sign_up_and_ends_with_it() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .tweak(|c| {
            for s in c.services.iter_mut().filter(|s| s.name == "compute") {
                s.plans.push(PlanConfig {
                    name: "reserved".into(),
                    monthly_minimum: Decimal::new(50, 0),
                    usage_percent_tiers: Vec::new(),
                });
            }
        })
        .start()
        .await;
    let acme = gw.account("acme").await;
    let r = put_plan(&acme, "compute", "reserved".into()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.error_code(), "NotSignedUp");
    assert_eq!(sign_up(&acme, "compute").await.status, StatusCode::CREATED);
    let chosen = gw.clock.now();
    let r = put_plan(&acme, "compute", "reserved".into()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    gw.clock.advance(ChronoDuration::minutes(30));
    let r = sign_off(&acme, "compute").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json()["plan_ended"],
        serde_json::json!({"plan": "reserved", "from": secs(chosen), "until": secs(gw.clock.now())})
    );
    let listed = acme
        .client
        .get(&format!("/accounts/{}/services", acme.id))
        .await
        .json();
    assert_eq!(listed["services"][0]["plan"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_an_unknown_plan_is_404_naming_the_available_plans() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    let acme = gw.account("acme").await;
    let r = put_plan(&acme, "support", "gold".into()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "NoSuchPlan");
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("`business`") && message.contains("`enterprise`"),
        "{message}"
    );
    let r = put_plan(&acme, "storage", "business".into()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text().contains("offers no plans"), "{}", r.text());
    let r = acme
        .client
        .put_json(&plan_path(&acme, "support"), serde_json::json!({}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "`plan` is required");
    let r = put_plan(&acme, "support", 7.into()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = put_plan(&acme, "nope", "business".into()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "NoSuchService");
    let listed = acme
        .client
        .get(&format!("/accounts/{}/services", acme.id))
        .await
        .json();
    assert_eq!(
        listed["services"],
        serde_json::json!([]),
        "nothing recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_plan_changes_are_recorded_at_their_instant_and_split_the_month() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    // A 30-day month in the future, so every token issued after the jump is valid.
    let mut month = BillingMonth::containing(gw.clock.now()).unwrap();
    while month.days_in_month() != 30 || month.start() <= gw.clock.now() {
        month = month.next().unwrap();
    }
    let at = |day: u32, hour: u32| {
        Utc.with_ymd_and_hms(month.year(), month.month(), day, hour, 0, 0)
            .unwrap()
    };
    gw.clock.set(at(10, 15));
    let acme = gw.account("acme").await;

    let r = put_plan(&acme, "support", "business".into()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({"account_id": acme.id, "service": "support", "plan": "business",
                           "since": secs(at(10, 15)), "previous": null})
    );
    gw.clock.set(at(12, 8));
    let acme = relogin(&gw, acme).await;
    let r = put_plan(&acme, "support", "business".into()).await;
    assert_eq!(
        r.json()["since"],
        secs(at(10, 15)),
        "the same plan again changes nothing"
    );

    gw.clock.set(at(20, 9));
    let acme = relogin(&gw, acme).await;
    let r = put_plan(&acme, "support", "enterprise".into()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["plan"], "enterprise");
    assert_eq!(r.json()["since"], secs(at(20, 9)));
    assert_eq!(
        r.json()["previous"],
        serde_json::json!({"plan": "business", "from": secs(at(10, 15)), "until": secs(at(20, 9))})
    );

    let next = month.next().unwrap();
    let ended_at = Utc
        .with_ymd_and_hms(next.year(), next.month(), 5, 12, 0, 0)
        .unwrap();
    gw.clock.set(ended_at);
    let acme = relogin(&gw, acme).await;
    let r = acme
        .client
        .send(Method::DELETE, &plan_path(&acme, "support"), &[], "")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["plan"], serde_json::Value::Null);
    assert_eq!(r.json()["since"], secs(ended_at));
    let r = put_plan(&acme, "support", serde_json::Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "ending no plan is harmless");
    assert_eq!(r.json()["previous"], serde_json::Value::Null);

    let listed = acme
        .client
        .get(&format!("/accounts/{}/services", acme.id))
        .await
        .json();
    assert_eq!(listed["services"][0]["service"], "support");
    assert_eq!(listed["services"][0]["plan"], serde_json::Value::Null);
    assert_eq!(
        listed["services"][0]["plans"],
        serde_json::json!([
            {"plan": "business", "from": secs(at(10, 15)), "until": secs(at(20, 9))},
            {"plan": "enterprise", "from": secs(at(20, 9)), "until": secs(ended_at)},
        ])
    );

    // What the bill reads: exact periods clipped to the month ...
    let account = AccountId::parse(&acme.id).unwrap();
    let periods = tollgate::services::plan_periods(&gw.app.store, &account, month)
        .await
        .unwrap();
    let got: Vec<_> = periods
        .iter()
        .map(|p| (p.service.as_str(), p.plan.as_str(), p.from, p.until))
        .collect();
    assert_eq!(
        got,
        [
            ("support", "business", at(10, 15), at(20, 9)),
            ("support", "enterprise", at(20, 9), month.end()),
        ]
    );
    let periods = tollgate::services::plan_periods(&gw.app.store, &account, next)
        .await
        .unwrap();
    assert_eq!(periods.len(), 1);
    assert_eq!(
        (periods[0].from, periods[0].until),
        (next.start(), ended_at)
    );

    // ... and ready to price: business the 10th–20th (11 days), enterprise the 20th–30th (11):
    // the day of the change counts for both plans.
    let prices = crate::support::backend::query(&gw.database(), |c| {
        tollgate::pricebook::load_history(c).unwrap()
    });
    let plans = tollgate::services::account_plans(&gw.app.store, &prices, &account, month)
        .await
        .unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].service, "support");
    let days: Vec<(&str, u32)> = plans[0]
        .periods
        .iter()
        .map(|p| (p.plan.name(), p.active_days))
        .collect();
    assert_eq!(days, [("business", 11), ("enterprise", 11)]);
    // $100,000 of other charges: business 6,900 * 11/30 = 2,530; enterprise
    // max(15,000, 10,000) * 11/30 = 5,500.
    let other = Money::parse("100000").unwrap();
    assert_eq!(
        charge_for_periods(&plans[0].periods, other, month.days_in_month()),
        Ok(Money::parse("8030.00").unwrap())
    );
}

// --- the seed: a linked account restricted by its payer ---

/// A consolidated-billing organization: `payer` (owner with MFA) manages it, `member` joined by
/// invitation; `policies` is a private tree the test may edit.
struct World {
    gw: TestGateway,
    _upstream: Upstream,
    _policies_guard: tempfile::TempDir,
    policies: PathBuf,
    payer: Account,
    member: Account,
    org_id: String,
}

async fn consolidated_billing_world() -> World {
    let upstream = Upstream::start().await;
    let (guard, policies) = copy_policies();
    let gw = TestGateway::builder(&upstream.url())
        .policies_dir(policies.clone())
        .tweak(|c| c.policies.watch = false)
        .start()
        .await;
    let payer = gw.account("payer").await;
    let member = gw.account("member").await;
    let payer = with_mfa(&gw, payer).await;
    let orgs = &gw.app.orgs;
    let payer_id = AccountId::parse(&payer.id).unwrap();
    let member_id = AccountId::parse(&member.id).unwrap();
    let org = orgs
        .create_organization(
            &payer_id,
            Some(FeatureSet::ConsolidatedBilling),
            true,
            gw.clock.now(),
        )
        .await
        .expect("create org");
    let invite = orgs
        .invite(&payer_id, &member_id, gw.clock.now())
        .await
        .expect("invite");
    orgs.accept(&member_id, &invite.id, gw.clock.now())
        .await
        .expect("accept");
    World {
        gw,
        _upstream: upstream,
        _policies_guard: guard,
        policies,
        payer,
        member,
        org_id: org.id.to_string(),
    }
}

const RESTRICT_SIGNUP_COMPUTE_AND_PLANS: &str = r#"
@id("full-access")
permit (principal, action, resource);

@id("no-compute-no-support-plans")
forbid (
  principal,
  action in [Tollgate::Action::"compute:SignUp", Tollgate::Action::"compute:RunJob",
             Tollgate::Action::"support:ChangePlan"],
  resource
);
"#;

async fn enable_all_features(w: &World) {
    let payer = AccountId::parse(&w.payer.id).unwrap();
    let member = AccountId::parse(&w.member.id).unwrap();
    crate::support::org::enable_all_features(&w.gw, &payer, &member).await;
}

fn assert_denied_by_organization(r: &crate::support::client::TestResponse, what: &str) {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.text());
    assert_eq!(r.error_code(), "AccessDenied", "{what}");
    assert_eq!(r.json()["error"]["denied_by"], "organization", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_s2_p3_a_linked_account_signs_up_calls_and_takes_a_plan_unless_the_payer_restricts_it() {
    let w = consolidated_billing_world().await;
    write(
        &w.policies,
        &format!("orgs/{}/restrict.cedar", w.org_id),
        RESTRICT_SIGNUP_COMPUTE_AND_PLANS,
    );
    let r = w.gw.reload_policies(&w.payer).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Consolidated billing only: the guardrail is there but does not bind.
    assert_eq!(run_job(&w.member).await.error_code(), "NotSignedUp");
    let r = sign_up(&w.member, "compute").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = run_job(&w.member).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = put_plan(&w.member, "support", "business".into()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    enable_all_features(&w).await;

    // All features: the same guardrail now refuses each of them for the member ...
    assert_denied_by_organization(&run_job(&w.member).await, "compute:RunJob");
    assert_denied_by_organization(&sign_off(&w.member, "compute").await, "sign-off");
    assert_denied_by_organization(&sign_up(&w.member, "compute").await, "compute:SignUp");
    assert_denied_by_organization(
        &put_plan(&w.member, "support", "enterprise".into()).await,
        "support:ChangePlan",
    );
    let r = w
        .member
        .client
        .send(Method::DELETE, &plan_path(&w.member, "support"), &[], "")
        .await;
    assert_denied_by_organization(&r, "ending the plan");
    let listed = w
        .member
        .client
        .get(&format!("/accounts/{}/services", w.member.id))
        .await
        .json();
    assert_eq!(listed["services"][1]["plan"], "business", "nothing changed");
    assert_eq!(
        w.member.client.get("/svc/storage/objects/a").await.status,
        StatusCode::OK,
        "what the guardrail does not name stays allowed"
    );

    // ... while the payer's own account is unaffected.
    assert_eq!(run_job(&w.payer).await.error_code(), "NotSignedUp");
    assert_eq!(
        sign_up(&w.payer, "compute").await.status,
        StatusCode::CREATED
    );
    assert_eq!(run_job(&w.payer).await.status, StatusCode::OK);
    let r = put_plan(&w.payer, "support", "enterprise".into()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}
