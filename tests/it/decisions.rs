//! SPEC D1–D5 and P7's reload record, through HTTP and the real binary: every decision on the
//! record with its determining `@id`s per tier, `GET /decisions` (visibility, paging, bad
//! parameters), `tollgate decisions explain` with the policy text of the decision's version,
//! `tollgate policy impact`, `tollgate decisions verify` against tampering, reload attempts in
//! the log, and `tollgate decisions prune` keeping verify green.

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::Duration as ChronoDuration;
use http::{Method, StatusCode};
use serde_json::Value;
use tollgate::authz::FeatureSet;
use tollgate::clock::Clock;
use tollgate::ids::{AccountId, HandshakeId};

use crate::support::gateway::copy_policies;
use crate::support::org::write;
use crate::support::{self, Account, TestGateway, Upstream, binary};
use tollgate::params;

// === scaffolding ===

/// A gateway on a private copy of the policies, with a config file the CLI can use.
struct Env {
    gw: TestGateway,
    _upstream: Upstream,
    _guard: tempfile::TempDir,
    policies: PathBuf,
    config: PathBuf,
}

async fn env() -> Env {
    let upstream = Upstream::start().await;
    let (guard, policies) = copy_policies();
    let gw = TestGateway::builder(&upstream.url())
        .policies_dir(policies.clone())
        .tweak(|c| {
            c.policies.watch = false;
            // The tests tag calls with their own request ids, which only a trusted proxy may
            // choose (F2).
            c.server.trusted_proxies = vec!["127.0.0.0/8".parse().expect("net")];
        })
        .start()
        .await;
    let config = guard.path().join("tollgate.toml");
    write_config(&config, &gw.data_dir, &policies);
    Env {
        gw,
        _upstream: upstream,
        _guard: guard,
        policies,
        config,
    }
}

/// The shipped config with this test's data dir and policies.
fn write_config(path: &Path, data_dir: &Path, policies: &Path) {
    let shipped = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/tollgate.toml"),
    )
    .unwrap();
    let text = support::backend::with_store(&shipped, data_dir).replace(
        "dir = \"policies\"",
        &format!("dir = {:?}", policies.display().to_string()),
    );
    assert_ne!(text, shipped, "the shipped config changed shape");
    std::fs::write(path, text).unwrap();
}

/// An organization of `payer` (owner with MFA) with `member` invited into it.
async fn organization(
    e: &Env,
    feature_set: FeatureSet,
) -> (crate::support::MfaAccount, Account, String) {
    let gw = &e.gw;
    let payer = gw.mfa_owner("payer").await;
    let member = gw.account("member").await;
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
        .unwrap();
    let invite = orgs
        .invite(&payer_id, &member_id, gw.clock.now())
        .await
        .unwrap();
    orgs.accept(&member_id, &invite.id, gw.clock.now())
        .await
        .unwrap();
    if feature_set == FeatureSet::AllFeatures {
        let parent = orgs
            .enable_all_features(&payer_id, gw.clock.now())
            .await
            .unwrap();
        for h in orgs
            .handshakes_for(&member_id, gw.clock.now())
            .await
            .unwrap()
        {
            if h.parent_id.as_ref() == Some(&parent.id) {
                orgs.accept(&member_id, &h.id, gw.clock.now())
                    .await
                    .unwrap();
            }
        }
        let parent_id: HandshakeId = parent.id.clone();
        orgs.accept(&payer_id, &parent_id, gw.clock.now())
            .await
            .unwrap();
    }
    // Membership and feature set are read at authentication: log in again.
    let payer = gw.mfa_login(&payer).await;
    let member = gw.relogin(&member).await;
    (payer, member, org.id.to_string())
}

/// A call with our own request id, so the test can find its decision.
async fn call(account: &Account, method: Method, path: &str, request_id: &str) -> StatusCode {
    account
        .client
        .send(method, path, &[("x-request-id", request_id)], "data")
        .await
        .status
}

async fn decisions(account: &Account, query: &str) -> crate::support::client::TestResponse {
    account.client.get(&format!("/decisions?{query}")).await
}

fn by_request_id<'a>(page: &'a Value, request_id: &str) -> &'a Value {
    page["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no decision {request_id} in {page}"))
}

fn ids(policies: &Value) -> Vec<String> {
    policies
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}#{}",
                p["file"].as_str().unwrap(),
                p["id"].as_str().unwrap()
            )
        })
        .collect()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn tollgate(args: &[&str]) -> Run {
    let out = Command::new(binary()).args(args).output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn db(e: &Env) -> support::backend::TestDb {
    support::backend::TestDb(e.gw.database())
}

/// Waits until every queued journal entry is committed (a later append proves earlier ones).
async fn settle(e: &Env) {
    for _ in 0..100 {
        let stats = e.gw.app.journal.stats();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if e.gw.app.journal.stats() == stats {
            return;
        }
    }
}

const FORBID_PUT: &str = r#"@id("full-access")
permit (principal, action, resource);

@id("no-put")
forbid (principal, action == Tollgate::Action::"storage:PutObject", resource);
"#;

// === D1, D2: recorded and listed ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d1_allow_and_deny_are_recorded_with_the_determining_ids_of_each_tier() {
    let e = env().await;
    let (_payer, member, org_id) = organization(&e, FeatureSet::AllFeatures).await;
    let guardrails = format!("orgs/{org_id}/guardrails.cedar");
    write(&e.policies, &guardrails, FORBID_PUT);
    assert_eq!(e.gw.reload_policies(&member).await.status, StatusCode::OK);
    // A user with no permissions, for an account-tier deny of an API call.
    let r = member
        .client
        .post_json(
            &format!("/accounts/{}/users", member.id),
            serde_json::json!({"user": "intern", "password": "Intern-pass-1!"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let intern =
        e.gw.relogin(&Account {
            owner: "intern".into(),
            password: "Intern-pass-1!".into(),
            ..member.clone()
        })
        .await;

    assert_eq!(
        call(&member, Method::GET, "/svc/storage/objects/a", "d1-get").await,
        StatusCode::OK
    );
    assert_eq!(
        call(&member, Method::PUT, "/svc/storage/objects/a", "d1-put").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&member, Method::GET, "/policies", "d1-api").await,
        StatusCode::OK
    );
    assert_eq!(
        call(&intern, Method::GET, "/policies", "d1-api-deny").await,
        StatusCode::FORBIDDEN
    );

    let r = decisions(&member, "limit=1000").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let page = r.json();
    let version = e.gw.app.policies.load().version().to_owned();

    let get = by_request_id(&page, "d1-get");
    assert_eq!(get["decision"], "Allow");
    assert_eq!(get["kind"], "service");
    assert_eq!(get["account"], member.id.as_str());
    assert_eq!(get["user"], "owner");
    assert_eq!(get["action"], "storage:GetObject");
    assert_eq!(
        get["resource"],
        format!("Tollgate::Service::\"{}/storage\"", member.id)
    );
    assert_eq!(get["source_ip"], "127.0.0.1");
    assert_eq!(get["mfa"], false);
    assert_eq!(get["denied_by"], Value::Null);
    assert_eq!(
        ids(&get["policies"]["account"]),
        ["default-account/owner.cedar#owner-full-access"]
    );
    assert_eq!(
        ids(&get["policies"]["organization"]),
        [format!("{guardrails}#full-access")]
    );
    assert_eq!(get["organization_tier"]["applied"], true);
    assert_eq!(get["organization_tier"]["reason"], "all_features_member");
    assert_eq!(get["errors"], serde_json::json!([]));
    assert_eq!(get["policy_version"], version.as_str());
    assert!(get["time"].as_str().unwrap().ends_with('Z'));

    let put = by_request_id(&page, "d1-put");
    assert_eq!(put["decision"], "Deny");
    assert_eq!(put["denied_by"], "organization");
    assert_eq!(
        ids(&put["policies"]["account"]),
        ["default-account/owner.cedar#owner-full-access"]
    );
    assert_eq!(
        ids(&put["policies"]["organization"]),
        [format!("{guardrails}#no-put")]
    );

    let api = by_request_id(&page, "d1-api");
    assert_eq!(api["kind"], "api");
    assert_eq!(api["action"], "policy:Read");
    assert_eq!(api["decision"], "Allow");
    assert_eq!(
        ids(&api["policies"]["account"]),
        ["default-account/owner.cedar#owner-full-access"]
    );

    let denied = by_request_id(&page, "d1-api-deny");
    assert_eq!(denied["user"], "intern");
    assert_eq!(denied["decision"], "Deny");
    assert_eq!(denied["denied_by"], "account");
    assert_eq!(
        denied["policies"]["account"],
        serde_json::json!([]),
        "nothing permits it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d2_visibility_follows_the_account_and_the_all_features_management_account() {
    // ALL_FEATURES: the payer sees its member's decisions; the member never the payer's.
    let e = env().await;
    let (payer, member, _) = organization(&e, FeatureSet::AllFeatures).await;
    let stranger = e.gw.account("stranger").await;
    call(&member, Method::GET, "/svc/storage/objects/m", "af-member").await;
    call(&payer, Method::GET, "/svc/storage/objects/p", "af-payer").await;

    let r = decisions(
        &payer,
        &format!("account={}&action=storage:GetObject", member.id),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    by_request_id(&r.json(), "af-member");
    let all = decisions(&payer, "action=storage:GetObject").await.json();
    by_request_id(&all, "af-member");
    by_request_id(&all, "af-payer");

    let r = decisions(&member, &format!("account={}", payer.id)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.error_code(), "AccessDenied");
    let own = decisions(&member, "action=storage:GetObject").await.json();
    let accounts: Vec<&Value> = own["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["account"])
        .collect();
    assert!(accounts.iter().all(|a| *a == member.id.as_str()), "{own}");

    let r = decisions(&stranger, &format!("account={}", member.id)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = decisions(&payer, &format!("account={}", stranger.id)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // CONSOLIDATED_BILLING: the payer sees only its own.
    let e = env().await;
    let (payer, member, _) = organization(&e, FeatureSet::ConsolidatedBilling).await;
    call(&member, Method::GET, "/svc/storage/objects/m", "cb-member").await;
    let r = decisions(&payer, &format!("account={}", member.id)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let all = decisions(&payer, "limit=1000").await.json();
    assert!(
        all["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["account"] == payer.id.as_str()),
        "{all}"
    );
    let own = decisions(&member, "limit=1000").await.json();
    let cb = by_request_id(&own, "cb-member");
    assert_eq!(cb["organization_tier"]["applied"], false);
    assert_eq!(
        cb["organization_tier"]["reason"],
        "consolidated_billing_only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d2_pages_newest_first_with_a_cursor_and_names_bad_parameters() {
    let e = env().await;
    let acme = e.gw.account("acme").await;
    for i in 0..5 {
        call(
            &acme,
            Method::GET,
            &format!("/svc/storage/objects/{i}"),
            &format!("page-{i}"),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut query = "action=storage:GetObject&limit=2".to_owned();
    let mut pages = 0;
    loop {
        let r = decisions(&acme, &query).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let page = r.json();
        pages += 1;
        let items = page["decisions"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|d| d["request_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("action=storage:GetObject&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        ["page-4", "page-3", "page-2", "page-1", "page-0"],
        "newest first"
    );

    let r = decisions(&acme, "decision=deny&user=owner").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["decisions"], serde_json::json!([]));

    let r = decisions(&acme, "limit=0&decision=maybe&since=yesterday&colour=red").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "InvalidInput");
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    for name in ["`limit`", "`decision`", "`since`", "`colour`"] {
        assert!(message.contains(name), "{name} not named in: {message}");
    }
    assert_eq!(
        decisions(&acme, "limit=1001").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        decisions(&acme, "cursor=nonsense").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        decisions(&acme, "limit=1000&since=1h").await.status,
        StatusCode::OK
    );
}

// === D3: explain ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d3_explain_shows_the_policy_text_of_the_decisions_own_version() {
    let e = env().await;
    let (payer, member, org_id) = organization(&e, FeatureSet::AllFeatures).await;
    let guardrails = format!("orgs/{org_id}/guardrails.cedar");
    write(&e.policies, &guardrails, FORBID_PUT);
    assert_eq!(e.gw.reload_policies(&payer).await.status, StatusCode::OK);
    let old_version = e.gw.app.policies.load().version().to_owned();
    assert_eq!(
        call(
            &member,
            Method::PUT,
            "/svc/storage/objects/x",
            "explain-old"
        )
        .await,
        StatusCode::FORBIDDEN
    );
    // The guardrail changes (same @id, new text) and is reloaded.
    let new_text = FORBID_PUT.replace(
        "forbid (principal, action == Tollgate::Action::\"storage:PutObject\", resource);",
        "forbid (principal, action == Tollgate::Action::\"storage:PutObject\", resource)\nwhen { context.mfa == false };",
    );
    write(&e.policies, &guardrails, &new_text);
    assert_eq!(e.gw.reload_policies(&payer).await.status, StatusCode::OK);
    assert_ne!(e.gw.app.policies.load().version(), old_version);
    settle(&e).await;

    let run = tollgate(&[
        "decisions",
        "explain",
        "explain-old",
        "--config",
        e.config.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(
        out.contains("Deny (denied by the organization tier)"),
        "{out}"
    );
    assert!(out.contains(&old_version), "{out}");
    assert!(out.contains("sources match the version hash"), "{out}");
    assert!(
        out.contains(&format!("{guardrails}  @id(\"no-put\")")),
        "{out}"
    );
    assert!(
        out.contains(
            "| forbid (principal, action == Tollgate::Action::\"storage:PutObject\", resource);"
        ),
        "the old text: {out}"
    );
    assert!(
        !out.contains("context.mfa == false"),
        "never the new text: {out}"
    );
    assert!(
        out.contains("default-account/owner.cedar  @id(\"owner-full-access\")"),
        "{out}"
    );
    assert!(
        out.contains("| when { principal.is_owner && resource in principal.account };"),
        "{out}"
    );
    assert!(
        out.contains("applied: the account is a member of an ALL_FEATURES organization"),
        "{out}"
    );

    let run = tollgate(&[
        "decisions",
        "explain",
        "no-such-request",
        "--config",
        e.config.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("no decision with request id `no-such-request`")
    );
}

// === D4: impact ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d4_impact_lists_exactly_the_decisions_a_draft_would_flip_with_counts_and_billed_amount() {
    let e = env().await;
    let a = e.gw.account("alpha").await;
    let b = e.gw.account("beta").await;
    for (account, tag) in [(&a, "a"), (&b, "b")] {
        for i in 0..3 {
            let id = format!("{tag}-get-{i}");
            assert_eq!(
                call(
                    account,
                    Method::GET,
                    &format!("/svc/storage/objects/{i}"),
                    &id
                )
                .await,
                StatusCode::OK
            );
        }
        assert_eq!(
            call(
                account,
                Method::PUT,
                "/svc/storage/objects/new",
                &format!("{tag}-put")
            )
            .await,
            StatusCode::OK
        );
        assert_eq!(
            call(account, Method::GET, "/policies", &format!("{tag}-api")).await,
            StatusCode::OK
        );
    }
    settle(&e).await;

    // The draft forbids one action for one account.
    let (_draft_guard, draft) = copy_policies();
    write(
        &draft,
        &format!("accounts/{}/no-reads.cedar", a.id),
        "@id(\"alpha-no-get\")\nforbid (principal, action == Tollgate::Action::\"storage:GetObject\", resource);\n",
    );
    let config = e.config.to_str().unwrap();
    let run = tollgate(&[
        "policy",
        "impact",
        "--draft",
        draft.to_str().unwrap(),
        "--config",
        config,
        "--format",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["changed"], 3, "{report:#}");
    assert_eq!(report["allow_to_deny"], 3);
    assert_eq!(report["deny_to_allow"], 0);
    let flipped: Vec<&str> = report["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(flipped, ["a-get-0", "a-get-1", "a-get-2"], "{report:#}");
    let d = &report["decisions"][0];
    assert_eq!(d["denied_by"], "account");
    assert_eq!(d["determining"][0]["id"], "alpha-no-get");
    let groups = report["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{report}");
    assert_eq!(groups[0]["account"], a.id.as_str());
    assert_eq!(groups[0]["action"], "storage:GetObject");
    assert_eq!(groups[0]["count"], 3);
    // The billed amount is the ledger's, exactly, for those three calls.
    let expected: rust_decimal::Decimal = {
        let amounts: Vec<String> = db(&e)
            .query_map(
                "SELECT amount FROM ledger WHERE account_id = ?1 AND action = 'storage:GetObject'",
                params![a.id.as_str()],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            amounts.len() >= 3,
            "a call record each, and transfers: {amounts:?}"
        );
        amounts
            .iter()
            .map(|s| s.parse::<rust_decimal::Decimal>().unwrap())
            .sum()
    };
    assert!(expected > rust_decimal::Decimal::ZERO);
    let billed: rust_decimal::Decimal = report["billed"].as_str().unwrap().parse().unwrap();
    assert_eq!(billed, expected);
    assert_eq!(groups[0]["billed"], report["billed"]);
    assert!(report["replayed"].as_u64().unwrap() >= 10);

    let run = tollgate(&[
        "policy",
        "impact",
        "--draft",
        draft.to_str().unwrap(),
        "--config",
        config,
    ]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("summary: 3 of "), "{}", run.stdout);
    assert!(
        run.stdout.contains("(3 Allow -> Deny, 0 Deny -> Allow)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("{}  storage:GetObject  Allow -> Deny", a.id)),
        "{}",
        run.stdout
    );

    // A draft that would not load is refused with its diagnostics, and nothing is replayed.
    write(
        &draft,
        &format!("accounts/{}/broken.cedar", a.id),
        "permit (principal, action, resource",
    );
    let run = tollgate(&[
        "policy",
        "impact",
        "--draft",
        draft.to_str().unwrap(),
        "--config",
        config,
    ]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stderr.contains("broken.cedar:1:"), "{}", run.stderr);
    assert!(
        run.stderr.contains("nothing was replayed"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
}

// === D5: verify and prune ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d5_verify_passes_while_the_gateway_runs_and_names_the_altered_record() {
    let e = env().await;
    let acme = e.gw.account("acme").await;
    for i in 0..4 {
        call(
            &acme,
            Method::GET,
            &format!("/svc/storage/objects/{i}"),
            &format!("v-{i}"),
        )
        .await;
    }
    settle(&e).await;
    let config = e.config.to_str().unwrap();
    let run = tollgate(&["decisions", "verify", "--config", config]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("ok: "), "{}", run.stdout);

    let seq: i64 = db(&e)
        .query_row(
            "SELECT seq FROM decisions WHERE request_id = 'v-2'",
            params![],
            |r| r.get(0),
        )
        .unwrap();
    db(&e)
        .execute(
            "UPDATE decisions SET decision = 'Deny', denied_by = 'account' WHERE seq = ?1",
            params![seq],
        )
        .unwrap();
    let run = tollgate(&["decisions", "verify", "--config", config]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("record {seq} was altered")),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d5_prune_removes_old_records_under_a_checkpoint_and_verify_stays_green() {
    let e = env().await;
    // Old activity, 100 days ago on the gateway's clock.
    let now = e.gw.clock.now();
    e.gw.clock.set(now - ChronoDuration::days(100));
    let acme = e.gw.account("acme").await;
    for i in 0..3 {
        call(
            &acme,
            Method::GET,
            &format!("/svc/storage/objects/{i}"),
            &format!("old-{i}"),
        )
        .await;
    }
    e.gw.clock.set(now);
    let acme = e.gw.relogin(&acme).await;
    for i in 0..2 {
        call(
            &acme,
            Method::GET,
            &format!("/svc/storage/objects/{i}"),
            &format!("new-{i}"),
        )
        .await;
    }
    settle(&e).await;
    let config = e.config.to_str().unwrap();
    let old: i64 = db(&e)
        .query_row(
            "SELECT MAX(seq) FROM decisions WHERE request_id LIKE 'old-%'",
            params![],
            |r| r.get(0),
        )
        .unwrap();

    let run = tollgate(&[
        "decisions",
        "prune",
        "--older-than",
        "90d",
        "--config",
        config,
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("checkpoint: seq {old} hash ")),
        "{}",
        run.stdout
    );
    let left: i64 = db(&e)
        .query_row(
            "SELECT COUNT(*) FROM decisions WHERE request_id LIKE 'old-%'",
            params![],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
    let min: i64 = db(&e)
        .query_row("SELECT MIN(seq) FROM decisions", params![], |r| r.get(0))
        .unwrap();
    assert_eq!(min, old + 1, "exactly the old prefix is gone");

    let run = tollgate(&["decisions", "verify", "--config", config]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("verified (seq {}..", old + 1)),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("records through seq {old} were pruned")),
        "{}",
        run.stdout
    );

    // The gateway keeps appending after the prune; the chain still verifies.
    call(&acme, Method::GET, "/svc/storage/objects/9", "after-prune").await;
    settle(&e).await;
    assert_eq!(
        tollgate(&["decisions", "verify", "--config", config]).code,
        0
    );

    // Removing more records without a checkpoint is a gap.
    db(&e)
        .execute("DELETE FROM decisions WHERE seq = ?1", params![old + 1])
        .unwrap();
    let run = tollgate(&["decisions", "verify", "--config", config]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains(&format!("record {} is missing", old + 1)),
        "{}",
        run.stdout
    );

    // Without --older-than, prune uses `[audit] retention` (90 days when the config has none),
    // and verifies first: the gap above makes it refuse (not a usage error, 64).
    let run = tollgate(&["decisions", "prune", "--config", config]);
    assert_eq!(run.code, 1, "a broken chain is not pruned: {}", run.stderr);
}

// === P7 + D1: reload attempts ===

/// request_id, account_id, user_name, policy_version, errors, request_json of a reload record.
type ReloadRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p7_every_reload_attempt_is_recorded_with_its_trigger_and_who_asked() {
    let e = env().await;
    let acme = e.gw.account("acme").await;
    let before = e.gw.app.policies.load().version().to_owned();
    write(
        &e.policies,
        &format!("accounts/{}/extra.cedar", acme.id),
        "@id(\"extra\")\npermit (principal, action == Tollgate::Action::\"storage:GetObject\", resource);\n",
    );
    let r = e.gw.reload_policies(&acme).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let loaded = e.gw.app.policies.load().version().to_owned();
    let ok_id = r.header("x-request-id").unwrap().to_owned();
    write(
        &e.policies,
        &format!("accounts/{}/bad.cedar", acme.id),
        "permit (principal,",
    );
    let r = e.gw.reload_policies(&acme).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let bad_id = r.header("x-request-id").unwrap().to_owned();
    // A reload nobody asked for through the API (SIGHUP's path).
    std::fs::remove_file(e.policies.join(format!("accounts/{}/bad.cedar", acme.id))).unwrap();
    let policies = e.gw.app.policies.clone();
    tokio::task::spawn_blocking(move || {
        policies
            .reload(tollgate::authz::ReloadTrigger::Signal)
            .unwrap()
    })
    .await
    .unwrap();

    let rows: Vec<ReloadRow> = db(&e)
        .query_map("SELECT request_id, account_id, user_name, policy_version, errors, request_json FROM decisions WHERE kind = 'reload' ORDER BY seq", params![], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let detail = |i: usize| -> Value { serde_json::from_str(&rows[i].5).unwrap() };

    assert_eq!(rows[0].0.as_deref(), Some(ok_id.as_str()));
    assert_eq!(rows[0].1.as_deref(), Some(acme.id.as_str()));
    assert_eq!(rows[0].2.as_deref(), Some("owner"));
    assert_eq!(rows[0].3, loaded);
    assert_eq!(detail(0)["trigger"], "api");
    assert_eq!(detail(0)["result"], "loaded");
    assert_eq!(rows[0].4, "[]");

    assert_eq!(rows[1].0.as_deref(), Some(bad_id.as_str()));
    assert_eq!(rows[1].3, loaded, "the last good version stays active");
    assert_eq!(detail(1)["result"], "rejected");
    assert!(rows[1].4.contains("bad.cedar"), "{}", rows[1].4);

    assert_eq!(detail(2)["trigger"], "signal");
    assert_eq!(detail(2)["result"], "loaded");
    assert_eq!(rows[2].1, None, "nobody asked through the API");

    // Every version that was active is archived with its sources.
    let archived: Vec<String> = db(&e)
        .query_map("SELECT version FROM policy_versions", params![], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(
        archived.contains(&before) && archived.contains(&loaded),
        "{archived:?}"
    );
    assert_eq!(
        tollgate(&[
            "decisions",
            "verify",
            "--config",
            e.config.to_str().unwrap()
        ])
        .code,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p7_a_file_watcher_reload_is_archived_and_recorded() {
    let upstream = Upstream::start().await;
    let (_guard, policies) = copy_policies();
    let gw = TestGateway::builder(&upstream.url())
        .policies_dir(policies.clone())
        .start()
        .await;
    let acme = gw.account("acme").await;
    let before = gw.app.policies.load().version().to_owned();
    write(
        &policies,
        &format!("accounts/{}/watched.cedar", acme.id),
        "@id(\"watched\")\npermit (principal, action == Tollgate::Action::\"storage:GetObject\", resource);\n",
    );
    let conn = support::backend::TestDb(gw.database());
    let mut found = None;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let row: Option<(String, String)> = conn
            .query_row(
                "SELECT policy_version, request_json FROM decisions WHERE kind = 'reload' ORDER BY seq DESC LIMIT 1",
                params![],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok();
        if let Some((version, detail)) = row
            && version != before
        {
            found = Some((version, detail));
            break;
        }
    }
    let (version, detail) = found.expect("the watcher's reload is recorded");
    assert!(detail.contains("\"trigger\":\"file_change\""), "{detail}");
    let archived: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM policy_versions WHERE version = ?1",
            params![version],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(archived, 1);
}

/// `account` joins the payer's organization by invitation now; returns the time it joined.
async fn join(
    gw: &TestGateway,
    payer: &AccountId,
    account: &AccountId,
) -> chrono::DateTime<chrono::Utc> {
    let invite = gw
        .app
        .orgs
        .invite(payer, account, gw.clock.now())
        .await
        .unwrap();
    gw.app
        .orgs
        .accept(account, &invite.id, gw.clock.now())
        .await
        .unwrap();
    gw.clock.now()
}

async fn get_objects(account: &Account, n: usize) {
    for _ in 0..n {
        let r = account.client.get("/svc/storage/objects/a").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
}

/// How many of `member`'s decisions `reader` can list; fails if one is from before `from`.
async fn listed_since(
    reader: &Account,
    member: &Account,
    from: chrono::DateTime<chrono::Utc>,
) -> usize {
    let r = decisions(reader, &format!("account={}", member.id)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let records = r.json()["decisions"].as_array().unwrap().clone();
    for d in &records {
        let time = chrono::DateTime::parse_from_rfc3339(d["time"].as_str().unwrap()).unwrap();
        assert!(
            time >= from,
            "a decision from before the member joined: {d}"
        );
    }
    records.len()
}

/// Issue 16 item 12 (D2): the payer reads a member's decisions only from the time it joined,
/// never from before; after the member left and re-joined, only from its latest joining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d2_the_payer_sees_a_members_decisions_only_from_when_it_joined() {
    let e = env().await;
    let gw = &e.gw;
    let (payer, _member, _org_id) = organization(&e, FeatureSet::AllFeatures).await;
    let payer_id = AccountId::parse(&payer.id).unwrap();
    let late = gw.account("late").await;
    let late_id = AccountId::parse(&late.id).unwrap();

    get_objects(&late, 3).await; // standalone: its own business
    gw.clock.advance(ChronoDuration::minutes(10));
    let first_join = join(gw, &payer_id, &late_id).await;
    gw.clock.advance(ChronoDuration::minutes(1));
    get_objects(&late, 1).await;
    assert_eq!(
        listed_since(&payer, &late, first_join).await,
        1,
        "only the call made as a member"
    );

    gw.clock.advance(ChronoDuration::minutes(10));
    gw.app.orgs.leave(&late_id, gw.clock.now()).await.unwrap();
    gw.clock.advance(ChronoDuration::minutes(1));
    get_objects(&late, 2).await; // standalone again
    gw.clock.advance(ChronoDuration::minutes(10));
    let second_join = join(gw, &payer_id, &late_id).await;
    gw.clock.advance(ChronoDuration::minutes(1));
    get_objects(&late, 1).await;
    assert_eq!(
        listed_since(&payer, &late, second_join).await,
        1,
        "after re-joining: neither the time away nor the earlier membership"
    );
    // The member itself still reads all of its own.
    let r = decisions(&late, "").await;
    let own = r.json()["decisions"].as_array().unwrap().len();
    assert!(own >= 7, "{}", r.text());
}
