//! O3: two gateway instances on one PostgreSQL database, sharing every piece of state: accounts
//! and tokens, lockout counters, organizations and handshakes, one ledger and one decision log
//! whose chains stay linear whichever instance writes. These run in the PostgreSQL run of the
//! suite (`o3_the_whole_suite_passes_on_postgresql`); on SQLite they are skipped with a notice
//! (one SQLite file is one instance's).

use chrono::Duration;
use http::{Method, StatusCode};
use serde_json::json;
use tollgate::authz::FeatureSet;
use tollgate::clock::Clock as _;
use tollgate::params;

use crate::billing::{at, bill, calls, future_month, id, lines, requests, test_prices};
use crate::support::gateway::copy_policies;
use crate::support::{Account, Client, TestGateway, Upstream, backend};

/// Two instances on one database, with the same signing keys (a fleet deploys one key set,
/// as it deploys one policy tree).
struct Fleet {
    a: TestGateway,
    b: TestGateway,
    _upstream: Upstream,
    _dir: tempfile::TempDir,
}

async fn fleet(test: &str) -> Option<Fleet> {
    if !backend::on_postgres() {
        eprintln!("`{test}` needs a shared PostgreSQL store; it runs in the PostgreSQL run");
        return None;
    }
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let start = || {
        TestGateway::builder(&upstream.url())
            .tweak(test_prices)
            .data_dir(data.clone())
            .start()
    };
    let a = start().await;
    let b = start().await;
    Some(Fleet {
        a,
        b,
        _upstream: upstream,
        _dir: dir,
    })
}

/// `account`'s token, used against instance `gw`.
fn on(gw: &TestGateway, account: &Account) -> Account {
    Account {
        client: account.client.rebase(&gw.url()),
        ..account.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o3_calls_spread_over_two_instances_add_up_on_one_consolidated_bill() {
    let Some(f) = fleet("o3_calls_spread_over_two_instances_add_up_on_one_consolidated_bill").await
    else {
        return;
    };
    let month = future_month(f.a.clock.now());
    for gw in [&f.a, &f.b] {
        gw.clock.set(at(month, 1, 1));
    }
    // Signed up on different instances; the organization is made on A, joined through B.
    let payer = f.a.mfa_owner("payer").await;
    let m1 = f.b.account("member-one").await;
    let m2 = f.a.account("member-two").await;
    f.a.app
        .orgs
        .create_organization(
            &id(&payer),
            Some(FeatureSet::ConsolidatedBilling),
            true,
            f.a.clock.now(),
        )
        .await
        .expect("create org");
    for member in [&m1, &m2] {
        let invite =
            f.a.app
                .orgs
                .invite(&id(&payer), &id(member), f.a.clock.now())
                .await
                .expect("invite on A");
        f.b.app
            .orgs
            .accept(&id(member), &invite.id, f.b.clock.now())
            .await
            .expect("accept on B");
    }

    for gw in [&f.a, &f.b] {
        gw.clock.set(at(month, 2, 9));
    }
    // A token issued by one instance is honoured by the other; calls alternate.
    let (m1, m2) = (f.b.relogin(&m1).await, f.a.relogin(&m2).await);
    calls(&on(&f.a, &m1), Method::GET, "/svc/storage/objects", 3).await;
    calls(&on(&f.b, &m1), Method::GET, "/svc/storage/objects", 4).await;
    calls(&on(&f.b, &m2), Method::GET, "/svc/storage/objects", 2).await;
    calls(&on(&f.a, &m2), Method::GET, "/svc/storage/objects", 1).await;

    let payer = f.b.mfa_login(&payer).await;
    let via_b = bill(&payer, month, "").await;
    let via_a = bill(&on(&f.a, &payer), month, "").await;
    assert_eq!(via_a, via_b, "both instances compute the same bill");
    assert_eq!(
        lines(&via_b, &m1.id, "storage:ListObjects"),
        requests("7", "7.00")
    );
    assert_eq!(
        lines(&via_b, &m2.id, "storage:ListObjects"),
        requests("3", "3.00")
    );
    assert_eq!(via_b["total"], "10.00");

    // One ledger: ten call records from two writers, one linear chain, one decision log.
    let db = f.a.database();
    let (ledger, decisions) = backend::off_runtime(|| {
        (
            tollgate::journal::verify_ledger(&db),
            tollgate::journal::verify_decisions(&db),
        )
    });
    let ledger = ledger.expect("the ledger chain verifies");
    decisions.expect("the decision chain verifies");
    let call_records: i64 = backend::TestDb(db)
        .query_row(
            "SELECT COUNT(*) FROM ledger WHERE kind = 'call'",
            params![],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(call_records, 10);
    assert_eq!(ledger.head_seq, ledger.records, "seq has no gaps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o3_u4_failed_logins_on_both_instances_count_toward_one_lock() {
    let Some(f) = fleet("o3_u4_failed_logins_on_both_instances_count_toward_one_lock").await else {
        return;
    };
    let acme = f.a.account("acme").await;
    let login = |gw: &TestGateway, password: &str| {
        let body = json!({"account_id": acme.id, "user": "owner", "password": password});
        let client = gw.client.clone();
        async move { client.post_json("/auth/login", body).await }
    };
    for i in 0..4 {
        let gw = if i % 2 == 0 { &f.a } else { &f.b };
        let r = login(gw, "Wrong-pass-1!").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    }
    // The fifth failure, on A, locks the user on both.
    let r = login(&f.a, "Wrong-pass-1!").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.error_code(), "UserLocked");
    let r = login(&f.b, crate::support::gateway::OWNER_PASSWORD).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.error_code(), "UserLocked");
    // The lock lifts on both after fifteen minutes of each instance's clock.
    for gw in [&f.a, &f.b] {
        gw.clock.advance(Duration::minutes(16));
    }
    let r = login(&f.b, crate::support::gateway::OWNER_PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o3_a3_a_handshake_accepted_on_both_instances_at_once_has_one_winner() {
    let Some(f) =
        fleet("o3_a3_a_handshake_accepted_on_both_instances_at_once_has_one_winner").await
    else {
        return;
    };
    let payer = f.a.mfa_owner("payer").await;
    f.a.app
        .orgs
        .create_organization(
            &id(&payer),
            Some(FeatureSet::ConsolidatedBilling),
            true,
            f.a.clock.now(),
        )
        .await
        .expect("create org");
    for round in 0..5 {
        let member = f.a.account(&format!("member-{round}")).await;
        let invite =
            f.a.app
                .orgs
                .invite(&id(&payer), &id(&member), f.a.clock.now())
                .await
                .expect("invite");
        // Over HTTP, on both instances at the same moment.
        let path = format!("/handshakes/{}/accept", invite.id);
        let (via_a, via_b) = (on(&f.a, &member), on(&f.b, &member));
        let (on_a, on_b) = tokio::join!(
            via_a.client.post_json(&path, json!({})),
            via_b.client.post_json(&path, json!({})),
        );
        let statuses = [on_a.status, on_b.status];
        let wins = statuses.iter().filter(|s| s.is_success()).count();
        assert_eq!(
            wins,
            1,
            "round {round}: exactly one accept wins: {} / {}",
            on_a.text(),
            on_b.text()
        );
        let view =
            f.b.app
                .orgs
                .describe(&id(&payer), f.b.clock.now())
                .await
                .expect("describe");
        assert_eq!(
            view.members
                .iter()
                .filter(|m| m.account_id.as_str() == member.id)
                .count(),
            1,
            "round {round}: one membership"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o3_p1_each_instance_reports_its_active_policy_version() {
    let Some(f) = fleet("o3_p1_each_instance_reports_its_active_policy_version").await else {
        return;
    };
    // A third instance on the same database runs an edited tree: the fleet is out of step.
    let (_guard, policies) = copy_policies();
    crate::support::org::write(
        &policies,
        "default-account/extra.cedar",
        "@id(\"extra\")\nforbid (principal, action == Tollgate::Action::\"storage:DeleteObject\", resource);\n",
    );
    let c = TestGateway::builder(&f._upstream.url())
        .data_dir(f.a.data_dir.clone())
        .policies_dir(policies)
        .start()
        .await;
    let acme = f.a.account("acme").await;
    let mut versions = Vec::new();
    for gw in [&f.a, &f.b, &c] {
        let r = on(gw, &acme).client.get("/policies").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let version = r.json()["version"].as_str().expect("version").to_owned();
        let metrics = gw.client.get("/metrics").await.text();
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("tollgate_policy_active_version")
                    && l.contains(&version)
                    && l.ends_with(" 1")),
            "{version} on /metrics: {metrics}"
        );
        versions.push(version);
    }
    assert_eq!(versions[0], versions[1], "A and B run the same tree");
    assert_ne!(versions[0], versions[2], "C's edited tree shows");
    // Reading the shared database does not depend on the instance.
    let r = Client::new(&c.url()).get("/readyz").await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn o3_a_gateway_whose_database_is_unreachable_does_not_start_and_says_where() {
    // Runs on either backend: it needs no server, only a port where none listens.
    let port = crate::support::upstream::closed_port().await;
    let port = port.rsplit(':').next().expect("port").to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tollgate.toml"),
    )
    .expect("config");
    let config = shipped
        .replacen(
            "kind = \"sqlite\"",
            &format!("kind = \"postgres\"\nurl = \"postgres://tollgate@127.0.0.1:{port}/fleet\""),
            1,
        )
        .replacen(
            "data_dir = \"data\"",
            &format!(
                "data_dir = {:?}",
                dir.path().join("data").display().to_string()
            ),
            1,
        )
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"");
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, config).expect("write config");
    let output = tokio::process::Command::new(crate::support::binary())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .await
        .expect("run tollgate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it must not serve: {stderr}");
    assert!(
        stderr.contains(&format!("postgres://tollgate@127.0.0.1:{port}/fleet"))
            && stderr.contains("cannot reach PostgreSQL"),
        "the error names the database and the problem: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o3_u4_an_unknown_user_is_counted_and_locked_across_the_fleet() {
    let Some(f) = fleet("o3_u4_an_unknown_user_is_counted_and_locked_across_the_fleet").await
    else {
        return;
    };
    let acme = f.a.account("acme").await;
    let login = |gw: &TestGateway| {
        let body = json!({"account_id": acme.id, "user": "ghost", "password": "Wrong-pass-1!"});
        let client = gw.client.clone();
        async move { client.post_json("/auth/login", body).await }
    };
    for i in 0..4 {
        let gw = if i % 2 == 0 { &f.a } else { &f.b };
        let r = login(gw).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    }
    // The fifth failure from this address, on A, locks it out of `ghost` on both instances,
    // exactly as for a user that exists.
    let r = login(&f.a).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.error_code(), "UserLocked");
    let r = login(&f.b).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.error_code(), "UserLocked");
}

/// Issue 16 item 10 on a fleet: a key deleted through one instance ends its tokens on the other
/// at once, though that instance had just served them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u8_a_key_deleted_on_one_instance_ends_its_tokens_on_the_other_at_once() {
    let Some(f) =
        fleet("u8_a_key_deleted_on_one_instance_ends_its_tokens_on_the_other_at_once").await
    else {
        return;
    };
    let acme = f.a.account("acme").await;
    let keys = format!("/accounts/{}/users/owner/access-keys", acme.id);
    let r = acme.client.post_json(&keys, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let key_id = r.json()["access_key_id"].as_str().expect("id").to_owned();
    let r = Client::new(&f.b.url())
        .post_json(
            "/auth/token",
            json!({"access_key_id": key_id, "secret": r.json()["secret"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let token = r.json()["token"].as_str().expect("token").to_owned();
    let (on_a, on_b) = (
        Client::new(&f.a.url()).with_token(&token),
        Client::new(&f.b.url()).with_token(&token),
    );
    for _ in 0..3 {
        for client in [&on_a, &on_b] {
            let r = client.get("/svc/storage/objects/a").await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        }
    }
    let r = acme
        .client
        .send(Method::DELETE, &format!("{keys}/{key_id}"), &[], Vec::new())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    for client in [&on_b, &on_a] {
        let r = client.get("/svc/storage/objects/a").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
        assert_eq!(r.error_code(), "InvalidToken");
    }
}
