//! SPEC P1–P7 through HTTP: account policies, organization guardrails (only in all-features
//! organizations, never on the management account), evaluation errors, `GET /policies`, and
//! reloads that keep the last good tree.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, StatusCode};
use tollgate::authz::FeatureSet;
use tollgate::clock::Clock;
use tollgate::ids::AccountId;

use crate::support::gateway::copy_policies;
use crate::support::org::{enable_all_features, with_mfa, write};
use crate::support::{Account, TestGateway, Upstream};

/// A consolidated-billing or all-features organization: `payer` (owner with MFA, logged in
/// with a code) manages it, `member` joined by invitation.
struct World {
    gw: TestGateway,
    _upstream: Upstream,
    _policies_guard: tempfile::TempDir,
    policies: PathBuf,
    payer: Account,
    member: Account,
    org_id: String,
}

async fn world(feature_set: FeatureSet) -> World {
    let upstream = Upstream::start().await;
    let (guard, policies) = copy_policies();
    let gw = TestGateway::builder(&upstream.url())
        .policies_dir(policies.clone())
        .tweak(|c| {
            c.policies.watch = false;
            // These tests deny many calls within one second of the manual clock on purpose;
            // the deny throttle (`flood::d1_...`) would answer some of them before Cedar.
            c.audit.deny_rate = 0;
        })
        .start()
        .await;
    let payer = gw.account("payer").await;
    let member = gw.account("member").await;
    let payer = with_mfa(&gw, payer).await;
    let orgs = &gw.app.orgs;
    let payer_id = AccountId::parse(&payer.id).unwrap();
    let member_id = AccountId::parse(&member.id).unwrap();
    let now = || gw.clock.now();
    let org = orgs
        .create_organization(
            &payer_id,
            Some(FeatureSet::ConsolidatedBilling),
            true,
            now(),
        )
        .await
        .expect("create org");
    let invite = orgs
        .invite(&payer_id, &member_id, now())
        .await
        .expect("invite");
    orgs.accept(&member_id, &invite.id, now())
        .await
        .expect("accept");
    if feature_set == FeatureSet::AllFeatures {
        enable_all_features(&gw, &payer_id, &member_id).await;
    }
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

async fn put_object(account: &Account) -> StatusCode {
    account
        .client
        .send(Method::PUT, "/svc/storage/objects/report.csv", &[], "data")
        .await
        .status
}

const FORBID_PUT: &str = r#"
@id("full-access")
permit (principal, action, resource);

@id("no-put")
forbid (principal, action == Tollgate::Action::"storage:PutObject", resource);
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_p4_guardrails_do_not_bind_in_consolidated_billing() {
    let w = world(FeatureSet::ConsolidatedBilling).await;
    write(
        &w.policies,
        &format!("orgs/{}/guardrails.cedar", w.org_id),
        FORBID_PUT,
    );
    assert_eq!(w.gw.reload_policies(&w.member).await.status, StatusCode::OK);
    assert_eq!(
        put_object(&w.member).await,
        StatusCode::OK,
        "a CB organization cannot restrict its members"
    );
    let view = w.member.client.get("/policies").await.json();
    assert_eq!(view["organizations"][0]["org_id"], w.org_id.as_str());
    assert_eq!(view["organizations"][0]["status"], "inactive");
    assert!(
        view["organizations"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("consolidated billing")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_guardrails_bind_members_in_all_features_but_never_the_management_account() {
    let w = world(FeatureSet::AllFeatures).await;
    write(
        &w.policies,
        &format!("orgs/{}/guardrails.cedar", w.org_id),
        FORBID_PUT,
    );
    assert_eq!(w.gw.reload_policies(&w.payer).await.status, StatusCode::OK);
    let r = w
        .member
        .client
        .send(Method::PUT, "/svc/storage/objects/x", &[], "data")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.error_code(), "AccessDenied");
    assert_eq!(r.json()["error"]["denied_by"], "organization");
    assert!(
        !r.text().contains("no-put") && !r.text().contains("forbid"),
        "no policy text or id in a 403: {}",
        r.text()
    );
    assert_eq!(
        w.member.client.get("/svc/storage/objects/x").await.status,
        StatusCode::OK,
        "other actions still allowed"
    );
    assert_eq!(
        put_object(&w.payer).await,
        StatusCode::OK,
        "the management account is exempt"
    );
    let view = w.member.client.get("/policies").await.json();
    assert_eq!(view["organizations"][0]["status"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_an_allow_list_guardrail_permits_only_what_it_names() {
    let w = world(FeatureSet::AllFeatures).await;
    let allow_list = r#"
@id("read-only-storage")
permit (principal, action in [Tollgate::Action::"storage:GetObject", Tollgate::Action::"storage:ListObjects"], resource);
"#;
    write(
        &w.policies,
        &format!("orgs/{}/allow-list.cedar", w.org_id),
        allow_list,
    );
    assert_eq!(w.gw.reload_policies(&w.payer).await.status, StatusCode::OK);
    assert_eq!(
        w.member.client.get("/svc/storage/objects/a").await.status,
        StatusCode::OK
    );
    assert_eq!(put_object(&w.member).await, StatusCode::FORBIDDEN);
    let r = w
        .member
        .client
        .post_json("/svc/support/cases", serde_json::json!({}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"]["denied_by"], "organization");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3_guardrails_only_restrict_they_never_grant() {
    let w = world(FeatureSet::AllFeatures).await;
    // The member's owner creates a user with no permissions; a permissive guardrail must not help.
    let r = w
        .member
        .client
        .post_json(
            &format!("/accounts/{}/users", w.member.id),
            serde_json::json!({"user": "intern", "password": "Intern-pass-1!"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    write(
        &w.policies,
        &format!("orgs/{}/all.cedar", w.org_id),
        "@id(\"all\")\npermit (principal, action, resource);\n",
    );
    assert_eq!(w.gw.reload_policies(&w.payer).await.status, StatusCode::OK);
    let token = w.gw.login(&w.member.id, "intern", "Intern-pass-1!").await;
    let r =
        w.gw.client
            .with_token(&token)
            .get("/svc/storage/objects/a")
            .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"]["denied_by"], "account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p3a_an_erroring_guardrail_denies() {
    let w = world(FeatureSet::AllFeatures).await;
    // The forbid overflows a Long at evaluation time; Cedar would skip it and allow.
    let erroring = r#"
@id("full-access")
permit (principal, action, resource);

@id("overflowing-forbid")
forbid (principal, action, resource) when { context.time * 9223372036854775807 > 0 };
"#;
    write(
        &w.policies,
        &format!("orgs/{}/broken.cedar", w.org_id),
        erroring,
    );
    assert_eq!(w.gw.reload_policies(&w.payer).await.status, StatusCode::OK);
    let r = w.member.client.get("/svc/storage/objects/a").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.json()["error"]["denied_by"], "organization");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2_another_accounts_files_cannot_affect_this_account() {
    let w = world(FeatureSet::ConsolidatedBilling).await;
    // The member's folder forbids everything: it binds the member only.
    write(
        &w.policies,
        &format!("accounts/{}/lockdown.cedar", w.member.id),
        "@id(\"lockdown\")\nforbid (principal, action, resource);\n",
    );
    assert_eq!(w.gw.reload_policies(&w.payer).await.status, StatusCode::OK);
    let r = w.member.client.get("/svc/storage/objects/a").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"]["denied_by"], "account");
    assert_eq!(
        w.payer.client.get("/svc/storage/objects/a").await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p5_policies_see_mfa_and_the_source_ip() {
    let w = world(FeatureSet::ConsolidatedBilling).await;
    let policy = r#"
@id("put-needs-mfa")
forbid (principal, action == Tollgate::Action::"storage:PutObject", resource) unless { context.mfa };

@id("no-deletes-from-loopback")
forbid (principal, action == Tollgate::Action::"storage:DeleteObject", resource)
when { context.source_ip.isLoopback() };
"#;
    write(
        &w.policies,
        &format!("accounts/{}/conditions.cedar", w.member.id),
        policy,
    );
    write(
        &w.policies,
        &format!("accounts/{}/conditions.cedar", w.payer.id),
        policy,
    );
    assert_eq!(w.gw.reload_policies(&w.payer).await.status, StatusCode::OK);
    assert_eq!(
        put_object(&w.member).await,
        StatusCode::FORBIDDEN,
        "no MFA on the member's token"
    );
    assert_eq!(
        put_object(&w.payer).await,
        StatusCode::OK,
        "the payer logged in with MFA"
    );
    let r = w
        .payer
        .client
        .send(Method::DELETE, "/svc/storage/objects/a", &[], "")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "tests run on loopback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p7_a_broken_tree_is_rejected_whole_and_the_last_good_one_stays() {
    let w = world(FeatureSet::AllFeatures).await;
    let before = w.member.client.get("/policies").await.json()["version"].clone();
    write(
        &w.policies,
        &format!("accounts/{}/broken.cedar", w.member.id),
        "@id(\"x\")\npermit (principal, action, resource\n",
    );
    let r = w.gw.reload_policies(&w.member).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.error_code(), "InvalidPolicies");
    let diagnostic = &r.json()["error"]["diagnostics"][0];
    assert_eq!(
        diagnostic["file"],
        format!("accounts/{}/broken.cedar", w.member.id)
    );
    assert!(diagnostic["line"].as_u64().is_some(), "{diagnostic}");
    // The old tree still decides.
    assert_eq!(
        w.member.client.get("/svc/storage/objects/a").await.status,
        StatusCode::OK
    );
    let view = w.member.client.get("/policies").await.json();
    assert_eq!(view["version"], before);
    assert_eq!(
        view["last_error"]["file"],
        format!("accounts/{}/broken.cedar", w.member.id)
    );
    // Another account sees that something is wrong, but not where.
    let view = w.payer.client.get("/policies").await.json();
    assert!(view["last_error"]["file"].is_null(), "{view}");
    assert!(
        !view["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains(&w.member.id)
    );
    // Metrics count the failure.
    let metrics = w.gw.client.get("/metrics").await.text();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("tollgate_policy_reloads_total{result=\"failure\"}")
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    // Fixing the file swaps in a new version and clears the error.
    std::fs::remove_file(
        w.policies
            .join(format!("accounts/{}/broken.cedar", w.member.id)),
    )
    .unwrap();
    write(
        &w.policies,
        &format!("accounts/{}/ok.cedar", w.member.id),
        "@id(\"ok\")\nforbid (principal, action == Tollgate::Action::\"storage:PutObject\", resource);\n",
    );
    let r = w.gw.reload_policies(&w.member).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let view = w.member.client.get("/policies").await.json();
    assert_ne!(view["version"], before);
    assert!(view["last_error"].is_null());
    assert_eq!(put_object(&w.member).await, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p7_file_changes_reload_without_any_call() {
    let upstream = Upstream::start().await;
    let (_guard, policies) = copy_policies();
    let gw = TestGateway::builder(&upstream.url())
        .policies_dir(policies.clone())
        .start()
        .await;
    let acme = gw.account("acme").await;
    assert_eq!(put_object(&acme).await, StatusCode::OK);
    write(
        &policies,
        &format!("accounts/{}/no-put.cedar", acme.id),
        "@id(\"no-put\")\nforbid (principal, action == Tollgate::Action::\"storage:PutObject\", resource);\n",
    );
    let mut denied = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if put_object(&acme).await == StatusCode::FORBIDDEN {
            denied = true;
            break;
        }
    }
    assert!(denied, "the watcher did not pick up the new file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p7_requests_during_reloads_always_see_one_whole_tree() {
    let w = world(FeatureSet::ConsolidatedBilling).await;
    let file = format!("accounts/{}/toggle.cedar", w.member.id);
    let allow_get = "@id(\"toggle\")\nforbid (principal, action == Tollgate::Action::\"storage:PutObject\", resource);\n";
    let deny_get = "@id(\"toggle\")\nforbid (principal, action == Tollgate::Action::\"storage:GetObject\", resource);\n";
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut hammers = Vec::new();
    for _ in 0..4 {
        let client = w.member.client.clone();
        let stop = stop.clone();
        hammers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = client.get("/svc/storage/objects/a").await.status;
                seen.push(status);
            }
            seen
        }));
    }
    for i in 0..40 {
        write(
            &w.policies,
            &file,
            if i % 2 == 0 { deny_get } else { allow_get },
        );
        assert_eq!(w.gw.reload_policies(&w.payer).await.status, StatusCode::OK);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for hammer in hammers {
        for status in hammer.await.unwrap() {
            assert!(
                status == StatusCode::OK || status == StatusCode::FORBIDDEN,
                "unexpected {status}"
            );
        }
    }
}

#[test]
fn p6_the_gateway_refuses_to_start_on_an_invalid_tree() {
    let (_guard, policies) = copy_policies();
    write(
        &policies,
        "accounts/123456789012/bad.cedar",
        "@id(\"bad\")\npermit (principal, action == Tollgate::Action::\"storage:Nope\", resource);\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = include_str!("../../config/tollgate.toml")
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "dir = \"policies\"",
            &format!("dir = {:?}", policies.display().to_string()),
        );
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, config).unwrap();
    let output = std::process::Command::new(crate::support::binary())
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("accounts/123456789012/bad.cedar:2:"),
        "{stderr}"
    );
    assert!(stderr.contains("storage:Nope"), "{stderr}");
}

#[test]
fn p6_policy_validate_and_test_commands() {
    let binary = crate::support::binary();
    let shipped = crate::support::gateway::shipped_policies();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tollgate.toml");
    let output = std::process::Command::new(&binary)
        .args(["policy", "validate"])
        .arg(&shipped)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = std::process::Command::new(&binary)
        .args(["policy", "test"])
        .arg(&shipped)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(" 0 failed"));

    let (_guard, broken) = copy_policies();
    write(
        &broken,
        "default-account/oops.cedar",
        "@id(\"oops\")\npermit (principal, action, resource) when { principal.nosuch };\n",
    );
    let output = std::process::Command::new(&binary)
        .args(["policy", "validate"])
        .arg(&broken)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("default-account/oops.cedar:2:"), "{stderr}");
}

/// Issue 16 item 3: the tree is the operator's. A tenant's owner (whom the default account
/// policy lets do `policy:Reload`) cannot make an unreviewed file live through the API; the
/// accounts in `[policies] reload_accounts` can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p7_only_the_operators_accounts_reload_the_tree_through_the_api() {
    let upstream = Upstream::start().await;
    let (_guard, policies) = copy_policies();
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().join("data");
    let start = |operators: Vec<AccountId>| {
        TestGateway::builder(&upstream.url())
            .policies_dir(policies.clone())
            .data_dir(data_dir.clone())
            .tweak(move |c| {
                c.policies.watch = false;
                c.policies.reload_accounts = operators;
            })
            .start()
    };
    let mut gw = start(Vec::new()).await;
    let tenant = gw.account("tenant").await;
    let operator = gw.account("operator").await;
    let version = gw.app.policies.load().version().to_owned();
    write(
        &policies,
        &format!("accounts/{}/no-put.cedar", tenant.id),
        FORBID_PUT,
    );
    // Nobody by default, the operator-to-be included.
    for who in [&tenant, &operator] {
        let r = who
            .client
            .post_json("/policies/reload", serde_json::json!({}))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
        assert_eq!(r.error_code(), "AccessDenied");
        assert!(r.text().contains("reload_accounts"), "{}", r.text());
    }
    assert_eq!(
        gw.app.policies.load().version(),
        version,
        "nothing went live"
    );
    assert_eq!(put_object(&tenant).await, StatusCode::OK);
    gw.shutdown().await;
    drop(gw);

    // Configured: the operator's account reloads; the tenant still cannot. (A start loads the
    // tree, so the unreviewed file comes back only after it.)
    let file = policies.join(format!("accounts/{}/no-put.cedar", tenant.id));
    std::fs::remove_file(&file).unwrap();
    let operator_id = AccountId::parse(&operator.id).unwrap();
    let gw = start(vec![operator_id]).await;
    let version = gw.app.policies.load().version().to_owned();
    std::fs::write(&file, FORBID_PUT).unwrap();
    let tenant = gw.relogin(&tenant).await;
    let operator = gw.relogin(&operator).await;
    let r = tenant
        .client
        .post_json("/policies/reload", serde_json::json!({}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(gw.app.policies.load().version(), version);
    let r = operator
        .client
        .post_json("/policies/reload", serde_json::json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_ne!(gw.app.policies.load().version(), version);
    assert_eq!(put_object(&tenant).await, StatusCode::FORBIDDEN);
}

/// Issue 16 item 3: one API reload a second; a faster caller gets 429 `SlowDown` with
/// `Retry-After`, and nothing is reloaded. SIGHUP's path (and the watcher's) is not limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p7_api_reloads_are_limited_to_one_a_second() {
    let upstream = Upstream::start().await;
    let (_guard, policies) = copy_policies();
    let gw = TestGateway::builder(&upstream.url())
        .policies_dir(policies.clone())
        .tweak(|c| c.policies.watch = false)
        .start()
        .await;
    let operator = gw.account("operator").await;
    let r = gw.reload_policies(&operator).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let version = gw.app.policies.load().version().to_owned();
    write(
        &policies,
        &format!("accounts/{}/no-put.cedar", operator.id),
        FORBID_PUT,
    );
    gw.clock.advance(chrono::Duration::milliseconds(999));
    let r = operator
        .client
        .post_json("/policies/reload", serde_json::json!({}))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.error_code(), "SlowDown");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(gw.app.policies.load().version(), version, "not reloaded");

    // The operator's signal is not an API call: it reloads whenever it is sent.
    let store = gw.app.policies.clone();
    let reloaded = tokio::task::spawn_blocking(move || {
        store
            .reload(tollgate::authz::ReloadTrigger::Signal)
            .map(|s| s.version().to_owned())
    })
    .await
    .unwrap()
    .expect("a SIGHUP reload");
    assert_ne!(reloaded, version);

    gw.clock.advance(chrono::Duration::milliseconds(1));
    let r = operator
        .client
        .post_json("/policies/reload", serde_json::json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "a second later: {}", r.text());
}
