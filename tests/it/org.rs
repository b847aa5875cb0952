//! SPEC A2–A7 over HTTP: the organization, its members and handshakes, every error path, expiry
//! by moved time, a restart on the same data, and two accepts racing on two connections.
//!
//! Management accounts need MFA (U6), so every payer here is an `MfaAccount`; members and
//! standalone accounts log in with a password only.

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate::clock::Clock;

use crate::support::client::TestResponse;
use crate::support::{Account, Client, MfaAccount, TestGateway, Upstream};

const MEMBER_PASSWORD: &str = "Member-pass-2?";

async fn gateway() -> (Upstream, TestGateway) {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    (upstream, gw)
}

/// `POST` without a body.
async fn post(client: &Client, path: &str) -> TestResponse {
    client.send(Method::POST, path, &[], Bytes::new()).await
}

async fn delete(client: &Client, path: &str) -> TestResponse {
    client.send(Method::DELETE, path, &[], Bytes::new()).await
}

#[track_caller]
fn expect_error(r: &TestResponse, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.error_code(), code, "{}", r.text());
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.len() > 10,
        "a message a person can act on: {message}"
    );
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().expect("a time string"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// A payer with MFA and its new organization.
async fn payer(gw: &TestGateway, name: &str, feature_set: &str) -> (MfaAccount, String) {
    let p = gw.mfa_owner(name).await;
    let r = p
        .client
        .post_json("/org", json!({"feature_set": feature_set}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let id = r.json()["id"].as_str().expect("org id").to_owned();
    (p, id)
}

/// Invites `account` and returns the handshake.
async fn invite(p: &Account, account: &Account) -> Value {
    let r = p
        .client
        .post_json("/org/invitations", json!({"account_id": account.id}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "invite: {}", r.text());
    r.json()
}

/// Invites `account` and has it accept.
async fn join(p: &Account, account: &Account) {
    let h = invite(p, account).await;
    let r = post(
        &account.client,
        &format!("/handshakes/{}/accept", h["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "accept: {}", r.text());
}

/// Creates a member account (A3) and logs its owner in.
async fn create_member(gw: &TestGateway, p: &Account, name: &str) -> Account {
    let r = p
        .client
        .post_json(
            "/org/accounts",
            json!({"name": name, "email": format!("{name}@example.com"), "owner_user": "owner", "owner_password": MEMBER_PASSWORD}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "create account: {}",
        r.text()
    );
    let id = r.json()["account_id"].as_str().unwrap().to_owned();
    let token = gw.login(&id, "owner", MEMBER_PASSWORD).await;
    Account {
        id,
        owner: "owner".into(),
        password: MEMBER_PASSWORD.into(),
        client: gw.client.with_token(&token),
    }
}

async fn org(account: &Account) -> Value {
    let r = account.client.get("/org").await;
    assert_eq!(r.status, StatusCode::OK, "GET /org: {}", r.text());
    r.json()
}

async fn handshakes(account: &Account) -> Vec<Value> {
    let r = account.client.get("/handshakes").await;
    assert_eq!(r.status, StatusCode::OK, "GET /handshakes: {}", r.text());
    r.json()["handshakes"].as_array().unwrap().clone()
}

fn find<'a>(list: &'a [Value], id: &Value) -> &'a Value {
    list.iter()
        .find(|h| h["id"] == *id)
        .unwrap_or_else(|| panic!("handshake {id} not in {list:?}"))
}

fn member_ids(org: &Value) -> Vec<String> {
    org["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["account_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The same account's session, pointed at a restarted gateway.
fn on(gw: &TestGateway, account: &Account) -> Account {
    Account {
        client: gw.client.with_token(account.client.token().unwrap()),
        ..account.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_to_a7_the_full_story_survives_a_restart() {
    let upstream = Upstream::start().await;
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let mut gw = TestGateway::builder(&upstream.url())
        .data_dir(data.clone())
        .start()
        .await;

    let p = gw.mfa_owner("payer").await;
    let b = gw.account("bravo").await;

    // A2: consolidated billing only, so that A5 has something to do.
    let r = p
        .client
        .post_json("/org", json!({"feature_set": "CONSOLIDATED_BILLING"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let created = r.json();
    let org_id = created["id"].as_str().unwrap().to_owned();
    assert!(
        org_id.starts_with("o-") && org_id.len() == 12,
        "organization id: {org_id}"
    );
    assert_eq!(created["management_account_id"], p.id.as_str());
    assert_eq!(created["feature_set"], "CONSOLIDATED_BILLING");
    assert_eq!(created["members"], json!([]));
    assert_eq!(created["handshakes"], json!([]));

    // A3: a member created inside; its owner logs in with the password given.
    let r = p
        .client
        .post_json(
            "/org/accounts",
            json!({"name": "alpha", "email": "alpha@example.com", "owner_user": "alice", "owner_password": MEMBER_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let a_id = r.json()["account_id"].as_str().unwrap().to_owned();
    assert_eq!(a_id.len(), 12, "{a_id}");
    assert_eq!(r.json()["joined_method"], "CREATED");
    let a_token = gw.login(&a_id, "alice", MEMBER_PASSWORD).await;
    assert!(!a_token.is_empty());

    // A4: the invitation, 15 days.
    let invitation = invite(&p, &b).await;
    assert_eq!(invitation["kind"], "INVITE");
    assert_eq!(invitation["state"], "OPEN");
    assert_eq!(invitation["organization_id"], org_id.as_str());
    assert_eq!(invitation["from_account_id"], p.id.as_str());
    assert_eq!(invitation["to_account_id"], b.id.as_str());
    assert_eq!(invitation["parent_id"], Value::Null);
    assert_eq!(
        time(&invitation["expires_at"]) - time(&invitation["created_at"]),
        Duration::days(15)
    );

    // Restart on the same data: everything so far is durable.
    let before = gw.clock.now();
    gw.shutdown().await;
    drop(gw);
    let gw = TestGateway::builder(&upstream.url())
        .data_dir(data.clone())
        .start()
        .await;
    gw.clock.set(before);
    let p = MfaAccount {
        account: on(&gw, &p),
        secret: p.secret.clone(),
    };
    let b = on(&gw, &b);

    // B sees the invitation and accepts it: INVITED from now.
    let seen = handshakes(&b).await;
    assert_eq!(find(&seen, &invitation["id"])["state"], "OPEN");
    let r = post(
        &b.client,
        &format!("/handshakes/{}/accept", invitation["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["state"], "ACCEPTED");
    assert_eq!(r.json()["id"], invitation["id"]);

    // A7: the management account's view.
    let view = org(&p).await;
    assert_eq!(view["id"], org_id.as_str());
    assert_eq!(view["management_account_id"], p.id.as_str());
    let members = view["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{view}");
    let alpha = members
        .iter()
        .find(|m| m["account_id"] == a_id.as_str())
        .unwrap();
    assert_eq!(alpha["name"], "alpha");
    assert_eq!(alpha["joined_method"], "CREATED");
    let bravo = members
        .iter()
        .find(|m| m["account_id"] == b.id.as_str())
        .unwrap();
    assert_eq!(bravo["name"], "bravo");
    assert_eq!(bravo["joined_method"], "INVITED");
    assert_eq!(time(&bravo["joined_at"]), gw.clock.now());
    assert_eq!(
        view["handshakes"],
        json!([]),
        "the accepted invitation is no longer open"
    );

    // A5: the parent is REQUESTED and only the invited member gets an approval.
    let r = post(&p.client, "/org/enable-all-features").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let parent = r.json();
    assert_eq!(parent["kind"], "ENABLE_ALL_FEATURES");
    assert_eq!(parent["state"], "REQUESTED");
    assert_eq!(
        time(&parent["expires_at"]) - time(&parent["created_at"]),
        Duration::days(90)
    );
    let open = org(&p).await["handshakes"].as_array().unwrap().clone();
    let children: Vec<&Value> = open
        .iter()
        .filter(|h| h["kind"] == "APPROVE_ALL_FEATURES")
        .collect();
    assert_eq!(
        children.len(),
        1,
        "one child, for the invited member: {open:?}"
    );
    assert_eq!(children[0]["to_account_id"], b.id.as_str());
    assert_eq!(children[0]["parent_id"], parent["id"]);
    assert_eq!(children[0]["state"], "OPEN");
    let child = find(&handshakes(&b).await, &children[0]["id"]).clone();

    // Accepting the parent early.
    let parent_path = format!("/handshakes/{}/accept", parent["id"].as_str().unwrap());
    expect_error(
        &post(&p.client, &parent_path).await,
        StatusCode::CONFLICT,
        "HandshakeNotComplete",
    );

    // B approves; the parent opens; P accepts it.
    let r = post(
        &b.client,
        &format!("/handshakes/{}/accept", child["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["state"], "ACCEPTED");
    let open = org(&p).await["handshakes"].as_array().unwrap().clone();
    assert_eq!(find(&open, &parent["id"])["state"], "OPEN");
    let r = post(&p.client, &parent_path).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["state"], "ACCEPTED");
    let view = org(&p).await;
    assert_eq!(view["feature_set"], "ALL_FEATURES");
    assert_eq!(view["handshakes"], json!([]));

    // And a member sees the same organization.
    let seen_by_b = org(&b).await;
    assert_eq!(seen_by_b["feature_set"], "ALL_FEATURES");
    assert_eq!(seen_by_b["members"], view["members"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_creating_an_organization_needs_an_mfa_session() {
    let (_upstream, gw) = gateway().await;
    // A password-only session.
    let c = gw.account("charlie").await;
    let r = c.client.post_json("/org", json!({})).await;
    expect_error(&r, StatusCode::FORBIDDEN, "MfaRequired");
    expect_error(
        &c.client.get("/org").await,
        StatusCode::NOT_FOUND,
        "NotInOrganization",
    );

    // MFA on for the user is not enough: the session itself must be MFA (an access-key token
    // has `mfa=false`).
    let d = gw.mfa_owner("delta").await;
    let r = d
        .client
        .post_json(
            &format!("/accounts/{}/users/{}/access-keys", d.id, d.owner),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let key = r.json();
    let r = gw
        .client
        .post_json(
            "/auth/token",
            json!({"access_key_id": key["access_key_id"], "secret": key["secret"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let program = gw.client.with_token(r.json()["token"].as_str().unwrap());
    expect_error(
        &post(&program, "/org").await,
        StatusCode::FORBIDDEN,
        "MfaRequired",
    );

    // With the MFA session and no body: the default feature set.
    let r = post(&d.client, "/org").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["feature_set"], "ALL_FEATURES");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_an_account_in_an_organization_cannot_create_another() {
    let (_upstream, gw) = gateway().await;
    let (p, org_id) = payer(&gw, "payer", "ALL_FEATURES").await;
    let r = p.client.post_json("/org", json!({})).await;
    expect_error(&r, StatusCode::CONFLICT, "AlreadyInOrganization");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&org_id),
        "{}",
        r.text()
    );

    // A member too, even with an MFA session.
    let b = gw.mfa_owner("bravo").await;
    join(&p, &b).await;
    expect_error(
        &b.client.post_json("/org", json!({})).await,
        StatusCode::CONFLICT,
        "AlreadyInOrganization",
    );
    assert_eq!(member_ids(&org(&p).await), vec![b.id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a3_to_a6_members_are_refused_management_only_calls() {
    let (_upstream, gw) = gateway().await;
    let (p, _) = payer(&gw, "payer", "CONSOLIDATED_BILLING").await;
    let b = gw.account("bravo").await;
    join(&p, &b).await;
    let a = create_member(&gw, &p, "alpha").await;
    let c = gw.account("charlie").await;

    let calls = [
        b.client
            .post_json(
                "/org/accounts",
                json!({"name": "x", "email": "x@example.com", "owner_user": "owner", "owner_password": MEMBER_PASSWORD}),
            )
            .await,
        b.client
            .post_json("/org/invitations", json!({"account_id": c.id}))
            .await,
        post(&b.client, "/org/enable-all-features").await,
        delete(&b.client, &format!("/org/accounts/{}", a.id)).await,
        delete(&b.client, "/org").await,
    ];
    for r in &calls {
        expect_error(r, StatusCode::FORBIDDEN, "AccessDenied");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&p.id),
            "names the management account: {}",
            r.text()
        );
    }
    // Nothing happened: still two members, no invitation, no migration.
    let view = org(&p).await;
    assert_eq!(view["members"].as_array().unwrap().len(), 2, "{view}");
    assert_eq!(view["handshakes"], json!([]));
    assert_eq!(view["feature_set"], "CONSOLIDATED_BILLING");
    // A member may read the organization (A7), as in AWS, but not whom it invites.
    assert_eq!(org(&b).await["members"], view["members"]);
    let outside = invite(&p, &c).await;
    assert_eq!(org(&p).await["handshakes"][0]["id"], outside["id"]);
    assert_eq!(org(&b).await["handshakes"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a7_an_account_in_no_organization_gets_not_in_organization() {
    let (_upstream, gw) = gateway().await;
    let c = gw.account("charlie").await;
    let d = gw.account("delta").await;
    let calls = [
        c.client.get("/org").await,
        delete(&c.client, "/org").await,
        c.client
            .post_json(
                "/org/accounts",
                json!({"name": "x", "email": "x@example.com", "owner_user": "owner", "owner_password": MEMBER_PASSWORD}),
            )
            .await,
        c.client
            .post_json("/org/invitations", json!({"account_id": d.id}))
            .await,
        post(&c.client, "/org/enable-all-features").await,
        delete(&c.client, &format!("/org/accounts/{}", d.id)).await,
        post(&c.client, "/org/leave").await,
    ];
    for r in &calls {
        expect_error(r, StatusCode::NOT_FOUND, "NotInOrganization");
    }
    // Handshakes are listed for any account (invited accounts are in no organization).
    assert_eq!(handshakes(&c).await, Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p1_organization_calls_are_decided_by_cedar() {
    let (_upstream, gw) = gateway().await;
    let (p, _) = payer(&gw, "payer", "ALL_FEATURES").await;
    let b = gw.account("bravo").await;
    join(&p, &b).await;
    // A user of the member account that no policy permits anything.
    let r = b
        .client
        .post_json(
            &format!("/accounts/{}/users", b.id),
            json!({"user": "intern", "password": MEMBER_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let intern = gw
        .client
        .with_token(&gw.login(&b.id, "intern", MEMBER_PASSWORD).await);
    for r in [
        intern.get("/org").await,
        intern.get("/handshakes").await,
        post(&intern, "/org/leave").await,
    ] {
        expect_error(&r, StatusCode::FORBIDDEN, "AccessDenied");
        assert_eq!(r.json()["error"]["denied_by"], "account", "{}", r.text());
    }
    assert_eq!(
        member_ids(&org(&p).await),
        vec![b.id.clone()],
        "still a member"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_inviting_a_member_of_any_organization_conflicts() {
    let (_upstream, gw) = gateway().await;
    let (p, _) = payer(&gw, "payer", "ALL_FEATURES").await;
    let b = gw.account("bravo").await;
    join(&p, &b).await;
    let a = create_member(&gw, &p, "alpha").await;
    let (q, _) = payer(&gw, "other-payer", "ALL_FEATURES").await;
    let q_member = create_member(&gw, &q, "other-member").await;

    for target in [&b, &a, &q.account, &q_member, &p.account] {
        let r = p
            .client
            .post_json("/org/invitations", json!({"account_id": target.id}))
            .await;
        expect_error(&r, StatusCode::CONFLICT, "AccountAlreadyInOrganization");
    }
    // An account that does not exist, and one that is not an id.
    let r = p
        .client
        .post_json("/org/invitations", json!({"account_id": "000000000000"}))
        .await;
    expect_error(&r, StatusCode::NOT_FOUND, "NoSuchAccount");
    let r = p
        .client
        .post_json("/org/invitations", json!({"account_id": "bravo"}))
        .await;
    expect_error(&r, StatusCode::BAD_REQUEST, "InvalidInput");
    assert_eq!(org(&p).await["handshakes"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_a_second_open_invitation_is_a_duplicate() {
    let (_upstream, gw) = gateway().await;
    let (p, _) = payer(&gw, "payer", "ALL_FEATURES").await;
    let c = gw.account("charlie").await;
    let first = invite(&p, &c).await;
    let r = p
        .client
        .post_json("/org/invitations", json!({"account_id": c.id}))
        .await;
    expect_error(&r, StatusCode::CONFLICT, "DuplicateHandshake");
    assert!(
        r.text().contains(first["id"].as_str().unwrap()),
        "names the open one: {}",
        r.text()
    );

    // Once the first is canceled, a new one may be sent.
    let r = post(
        &p.client,
        &format!("/handshakes/{}/cancel", first["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["state"], "CANCELED");
    let second = invite(&p, &c).await;
    assert_ne!(second["id"], first["id"]);
    let seen = handshakes(&c).await;
    assert_eq!(find(&seen, &first["id"])["state"], "CANCELED");
    assert_eq!(find(&seen, &second["id"])["state"], "OPEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_accepting_an_accepted_invitation_is_already_in_state() {
    let (_upstream, gw) = gateway().await;
    let (p, _) = payer(&gw, "payer", "ALL_FEATURES").await;
    let b = gw.account("bravo").await;
    let h = invite(&p, &b).await;
    let path = format!("/handshakes/{}/accept", h["id"].as_str().unwrap());
    assert_eq!(post(&b.client, &path).await.status, StatusCode::OK);
    expect_error(
        &post(&b.client, &path).await,
        StatusCode::CONFLICT,
        "HandshakeAlreadyInState",
    );
    assert_eq!(
        member_ids(&org(&p).await),
        vec![b.id.clone()],
        "joined once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_any_other_move_out_of_a_finished_state_is_an_invalid_transition() {
    let (_upstream, gw) = gateway().await;
    let (p, _) = payer(&gw, "payer", "ALL_FEATURES").await;
    let b = gw.account("bravo").await;
    let accepted = invite(&p, &b).await;
    let id = accepted["id"].as_str().unwrap();
    assert_eq!(
        post(&b.client, &format!("/handshakes/{id}/accept"))
            .await
            .status,
        StatusCode::OK
    );
    expect_error(
        &post(&b.client, &format!("/handshakes/{id}/decline")).await,
        StatusCode::CONFLICT,
        "InvalidHandshakeTransition",
    );
    expect_error(
        &post(&p.client, &format!("/handshakes/{id}/cancel")).await,
        StatusCode::CONFLICT,
        "InvalidHandshakeTransition",
    );

    // A declined invitation cannot be accepted afterwards.
    let c = gw.account("charlie").await;
    let declined = invite(&p, &c).await;
    let id = declined["id"].as_str().unwrap();
    let r = post(&c.client, &format!("/handshakes/{id}/decline")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["state"], "DECLINED");
    expect_error(
        &post(&c.client, &format!("/handshakes/{id}/accept")).await,
        StatusCode::CONFLICT,
        "InvalidHandshakeTransition",
    );
    assert_eq!(member_ids(&org(&p).await), vec![b.id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_only_the_invited_account_answers_and_only_the_sender_cancels() {
    let (_upstream, gw) = gateway().await;
    let (p, _) = payer(&gw, "payer", "ALL_FEATURES").await;
    let c = gw.account("charlie").await;
    let stranger = gw.account("stranger").await;
    let h = invite(&p, &c).await;
    let id = h["id"].as_str().unwrap();

    for r in [
        post(&p.client, &format!("/handshakes/{id}/accept")).await,
        post(&p.client, &format!("/handshakes/{id}/decline")).await,
        post(&c.client, &format!("/handshakes/{id}/cancel")).await,
    ] {
        expect_error(&r, StatusCode::FORBIDDEN, "AccessDenied");
    }
    // An account that is no party does not learn that the handshake exists.
    for action in ["accept", "decline", "cancel"] {
        expect_error(
            &post(&stranger.client, &format!("/handshakes/{id}/{action}")).await,
            StatusCode::NOT_FOUND,
            "NoSuchHandshake",
        );
    }
    expect_error(
        &post(&c.client, "/handshakes/h-doesnotexist0/accept").await,
        StatusCode::NOT_FOUND,
        "NoSuchHandshake",
    );
    expect_error(
        &post(&c.client, "/handshakes/not-an-id/accept").await,
        StatusCode::NOT_FOUND,
        "NoSuchHandshake",
    );
    assert!(handshakes(&stranger).await.is_empty());
    // Still open, for the right party.
    assert_eq!(find(&handshakes(&c).await, &h["id"])["state"], "OPEN");
    let r = post(&c.client, &format!("/handshakes/{id}/accept")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_invitations_expire_15_days_after_creation() {
    let (_upstream, gw) = gateway().await;
    let (p, _) = payer(&gw, "payer", "ALL_FEATURES").await;
    let c = gw.account("charlie").await;
    let h = invite(&p, &c).await;
    let expires_at = time(&h["expires_at"]);

    // One second before: still open (tokens expired meanwhile: log in again).
    gw.clock.set(expires_at - Duration::seconds(1));
    let c = gw.relogin(&c).await;
    assert_eq!(find(&handshakes(&c).await, &h["id"])["state"], "OPEN");

    // At the instant: EXPIRED everywhere, whether or not the sweep ran.
    gw.clock.set(expires_at);
    assert_eq!(find(&handshakes(&c).await, &h["id"])["state"], "EXPIRED");
    let p = gw.mfa_login(&p).await;
    assert_eq!(org(&p).await["handshakes"], json!([]), "no longer open");
    expect_error(
        &post(
            &c.client,
            &format!("/handshakes/{}/accept", h["id"].as_str().unwrap()),
        )
        .await,
        StatusCode::CONFLICT,
        "InvalidHandshakeTransition",
    );
    assert_eq!(member_ids(&org(&p).await), Vec::<String>::new());

    // An expired invitation is no duplicate: a new one may be sent.
    let again = invite(&p, &c).await;
    assert_eq!(again["state"], "OPEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a5_an_all_features_organization_is_already_all_features() {
    let (_upstream, gw) = gateway().await;
    let (p, _) = payer(&gw, "payer", "ALL_FEATURES").await;
    expect_error(
        &post(&p.client, "/org/enable-all-features").await,
        StatusCode::CONFLICT,
        "AlreadyAllFeatures",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a5_a_second_request_while_one_is_pending_conflicts() {
    let (_upstream, gw) = gateway().await;
    let (p, _) = payer(&gw, "payer", "CONSOLIDATED_BILLING").await;
    let b = gw.account("bravo").await;
    join(&p, &b).await;
    let r = post(&p.client, "/org/enable-all-features").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let parent = r.json();
    let r = post(&p.client, "/org/enable-all-features").await;
    expect_error(&r, StatusCode::CONFLICT, "AllFeaturesMigrationPending");
    assert!(
        r.text().contains(parent["id"].as_str().unwrap()),
        "{}",
        r.text()
    );
    assert_eq!(
        org(&p).await["handshakes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["kind"] == "ENABLE_ALL_FEATURES")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a5_invitations_are_canceled_and_refused_during_the_migration() {
    let (_upstream, gw) = gateway().await;
    let (p, _) = payer(&gw, "payer", "CONSOLIDATED_BILLING").await;
    let b = gw.account("bravo").await;
    join(&p, &b).await;
    let c = gw.account("charlie").await;
    let d = gw.account("delta").await;
    let open = invite(&p, &c).await;

    let r = post(&p.client, "/org/enable-all-features").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let parent = r.json();
    assert_eq!(
        find(&handshakes(&c).await, &open["id"])["state"],
        "CANCELED"
    );
    let r = p
        .client
        .post_json("/org/invitations", json!({"account_id": d.id}))
        .await;
    expect_error(
        &r,
        StatusCode::CONFLICT,
        "InviteDisabledDuringEnableAllFeatures",
    );
    assert!(handshakes(&d).await.is_empty());

    // Canceling the request ends the refusal.
    let r = post(
        &p.client,
        &format!("/handshakes/{}/cancel", parent["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["state"], "CANCELED");
    assert_eq!(invite(&p, &d).await["state"], "OPEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a5_a_declining_member_blocks_the_switch_until_it_is_removed() {
    let (_upstream, gw) = gateway().await;
    let (p, _) = payer(&gw, "payer", "CONSOLIDATED_BILLING").await;
    let b1 = gw.account("bravo-one").await;
    let b2 = gw.account("bravo-two").await;
    join(&p, &b1).await;
    join(&p, &b2).await;
    let _a = create_member(&gw, &p, "alpha").await;

    let r = post(&p.client, "/org/enable-all-features").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let parent = r.json();
    assert_eq!(parent["state"], "REQUESTED");
    let child_of = |list: Vec<Value>| {
        list.into_iter()
            .find(|h| h["kind"] == "APPROVE_ALL_FEATURES" && h["parent_id"] == parent["id"])
            .expect("an approval")
    };
    let c1 = child_of(handshakes(&b1).await);
    let c2 = child_of(handshakes(&b2).await);
    let r = post(
        &b1.client,
        &format!("/handshakes/{}/accept", c1["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = post(
        &b2.client,
        &format!("/handshakes/{}/decline", c2["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["state"], "DECLINED");

    // The management account cannot cancel a member's approval on its behalf.
    expect_error(
        &post(
            &p.client,
            &format!("/handshakes/{}/cancel", c2["id"].as_str().unwrap()),
        )
        .await,
        StatusCode::FORBIDDEN,
        "AccessDenied",
    );

    let parent_path = format!("/handshakes/{}/accept", parent["id"].as_str().unwrap());
    let open = org(&p).await["handshakes"].as_array().unwrap().clone();
    assert_eq!(find(&open, &parent["id"])["state"], "REQUESTED", "blocked");
    expect_error(
        &post(&p.client, &parent_path).await,
        StatusCode::CONFLICT,
        "HandshakeNotComplete",
    );

    // Removing the decliner unblocks it.
    let r = delete(&p.client, &format!("/org/accounts/{}", b2.id)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let open = org(&p).await["handshakes"].as_array().unwrap().clone();
    assert_eq!(find(&open, &parent["id"])["state"], "OPEN");
    let r = post(&p.client, &parent_path).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(org(&p).await["feature_set"], "ALL_FEATURES");
    expect_error(
        &b2.client.get("/org").await,
        StatusCode::NOT_FOUND,
        "NotInOrganization",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a5_with_only_created_members_the_request_opens_at_once() {
    let (_upstream, gw) = gateway().await;
    let (p, _) = payer(&gw, "payer", "CONSOLIDATED_BILLING").await;
    let a = create_member(&gw, &p, "alpha").await;
    let r = post(&p.client, "/org/enable-all-features").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let parent = r.json();
    assert_eq!(parent["state"], "OPEN");
    assert!(
        handshakes(&a).await.is_empty(),
        "created members approve nothing"
    );
    let r = post(
        &p.client,
        &format!("/handshakes/{}/accept", parent["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(org(&a).await["feature_set"], "ALL_FEATURES");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a6_the_management_account_cannot_leave() {
    let (_upstream, gw) = gateway().await;
    let (p, org_id) = payer(&gw, "payer", "ALL_FEATURES").await;
    for r in [
        post(&p.client, "/org/leave").await,
        delete(&p.client, &format!("/org/accounts/{}", p.id)).await,
    ] {
        expect_error(&r, StatusCode::CONFLICT, "ManagementAccountCannotLeave");
    }
    assert_eq!(org(&p).await["id"], org_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a6_deleting_the_organization_needs_it_empty() {
    let (_upstream, gw) = gateway().await;
    let (p, org_id) = payer(&gw, "payer", "ALL_FEATURES").await;
    let b = gw.account("bravo").await;
    join(&p, &b).await;
    let c = gw.account("charlie").await;
    let pending = invite(&p, &c).await;

    let r = delete(&p.client, "/org").await;
    expect_error(&r, StatusCode::CONFLICT, "OrganizationNotEmpty");
    assert_eq!(org(&p).await["id"], org_id.as_str());

    let r = post(&b.client, "/org/leave").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = delete(&p.client, "/org").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    expect_error(
        &p.client.get("/org").await,
        StatusCode::NOT_FOUND,
        "NotInOrganization",
    );
    // Its open invitation went with it.
    assert_eq!(
        find(&handshakes(&c).await, &pending["id"])["state"],
        "CANCELED"
    );
    // The account is standalone again and may create a new organization.
    let r = p.client.post_json("/org", json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_ne!(r.json()["id"], org_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a6_members_are_removed_or_leave() {
    let (_upstream, gw) = gateway().await;
    let (p, _) = payer(&gw, "payer", "ALL_FEATURES").await;
    let b = gw.account("bravo").await;
    join(&p, &b).await;
    let a = create_member(&gw, &p, "alpha").await;
    let stranger = gw.account("stranger").await;

    // Removal.
    let r = delete(&p.client, &format!("/org/accounts/{}", a.id)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    expect_error(
        &a.client.get("/org").await,
        StatusCode::NOT_FOUND,
        "NotInOrganization",
    );
    assert_eq!(member_ids(&org(&p).await), vec![b.id.clone()]);
    for r in [
        delete(&p.client, &format!("/org/accounts/{}", a.id)).await,
        delete(&p.client, &format!("/org/accounts/{}", stranger.id)).await,
        delete(&p.client, "/org/accounts/000000000000").await,
        delete(&p.client, "/org/accounts/not-an-id").await,
    ] {
        expect_error(&r, StatusCode::NOT_FOUND, "NoSuchAccount");
    }

    // Leaving.
    let r = post(&b.client, "/org/leave").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    expect_error(
        &b.client.get("/org").await,
        StatusCode::NOT_FOUND,
        "NotInOrganization",
    );
    expect_error(
        &post(&b.client, "/org/leave").await,
        StatusCode::NOT_FOUND,
        "NotInOrganization",
    );
    assert_eq!(member_ids(&org(&p).await), Vec::<String>::new());

    // A former member can be invited back.
    join(&p, &b).await;
    assert_eq!(member_ids(&org(&p).await), vec![b.id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a4_two_concurrent_accepts_over_http_one_wins() {
    let (_upstream, gw) = gateway().await;
    let (p, _) = payer(&gw, "payer", "ALL_FEATURES").await;
    for round in 0..3 {
        let c = gw.account(&format!("racer-{round}")).await;
        let h = invite(&p, &c).await;
        let path = format!("/handshakes/{}/accept", h["id"].as_str().unwrap());
        // Two clients, so two connections.
        let token = c.client.token().unwrap();
        let one = Client::new(&gw.url()).with_token(token);
        let two = Client::new(&gw.url()).with_token(token);
        let (r1, r2) = tokio::join!(post(&one, &path), post(&two, &path));
        let mut statuses = [r1.status, r2.status];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::CONFLICT],
            "round {round}: {} / {}",
            r1.text(),
            r2.text()
        );
        let loser = if r1.status == StatusCode::CONFLICT {
            &r1
        } else {
            &r2
        };
        assert_eq!(
            loser.error_code(),
            "HandshakeAlreadyInState",
            "{}",
            loser.text()
        );
        let ids = member_ids(&org(&p).await);
        assert_eq!(
            ids.iter().filter(|id| **id == c.id).count(),
            1,
            "joined once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2_a3_bodies_are_checked_like_signup() {
    let (_upstream, gw) = gateway().await;
    let p = gw.mfa_owner("payer").await;
    let r = p
        .client
        .post_json("/org", json!({"feature_set": "SOME_FEATURES"}))
        .await;
    expect_error(&r, StatusCode::BAD_REQUEST, "InvalidInput");
    expect_error(
        &p.client.get("/org").await,
        StatusCode::NOT_FOUND,
        "NotInOrganization",
    );
    let r = p
        .client
        .post_json("/org", json!({"feature_set": "ALL_FEATURES", "extra": 1}))
        .await;
    expect_error(&r, StatusCode::BAD_REQUEST, "InvalidInput");
    let r = p.client.post_json("/org", json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    let body = |name: &str, email: &str, user: &str, password: &str| json!({"name": name, "email": email, "owner_user": user, "owner_password": password});
    for (request, code) in [
        (
            body("alpha", "alpha@example.com", "owner", "short"),
            "PasswordPolicyViolation",
        ),
        (
            body("alpha", "alpha@example.com", "owner", "alllowercase-1!"),
            "PasswordPolicyViolation",
        ),
        (
            body("alpha", "not-an-email", "owner", MEMBER_PASSWORD),
            "InvalidInput",
        ),
        (
            body("", "alpha@example.com", "owner", MEMBER_PASSWORD),
            "InvalidInput",
        ),
        (
            body("alpha", "alpha@example.com", "no spaces", MEMBER_PASSWORD),
            "InvalidInput",
        ),
    ] {
        let r = p.client.post_json("/org/accounts", request).await;
        expect_error(&r, StatusCode::BAD_REQUEST, code);
    }
    assert_eq!(org(&p).await["members"], json!([]), "nothing was created");
}
