//! The per-request caches (issue 9) never change an answer: with the verified-token cache and
//! the caller cache warm, logout applies at once (U7), a password change refuses older tokens
//! at once (U7), group changes apply from the next request (U10), and a spend-cap policy sees
//! the spend of every call already acknowledged (P5).

use http::{Method, StatusCode};

use crate::support::gateway::{OWNER_PASSWORD, copy_policies};
use crate::support::{Client, TestGateway, Upstream};

const USER_PASSWORD: &str = "Member-pass-1!";
const OBJECT: &str = "/svc/storage/objects/a";

/// Calls enough times that both caches hold the caller (the first call fills them).
async fn warm(client: &Client, expected: StatusCode) {
    for _ in 0..3 {
        assert_eq!(client.get(OBJECT).await.status, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u7_logout_applies_at_once_with_the_caches_warm() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    let acme = gw.account("acme").await;
    warm(&acme.client, StatusCode::OK).await;
    assert!(gw.app.tokens.cached_tokens() >= 1);
    // A second token of the same user stays good: logout names one token.
    let other = gw
        .client
        .with_token(&gw.login(&acme.id, "owner", OWNER_PASSWORD).await);
    warm(&other, StatusCode::OK).await;

    let r = acme
        .client
        .post_json("/auth/logout", serde_json::json!({}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = acme.client.get(OBJECT).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert_eq!(r.error_code(), "InvalidToken");
    assert_eq!(other.get(OBJECT).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u7_a_password_change_refuses_older_tokens_at_once_with_the_caches_warm() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    let acme = gw.account("acme").await;
    warm(&acme.client, StatusCode::OK).await;
    let r = acme
        .client
        .put_json(
            &format!("/accounts/{}/users/owner/password", acme.id),
            serde_json::json!({"old_password": OWNER_PASSWORD, "new_password": "Changed-pass-2!"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = acme.client.get(OBJECT).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert_eq!(r.error_code(), "InvalidToken");
    // Logged in again after the change (a later millisecond): good.
    gw.clock.advance(chrono::Duration::milliseconds(5));
    let fresh = gw
        .client
        .with_token(&gw.login(&acme.id, "owner", "Changed-pass-2!").await);
    assert_eq!(fresh.get(OBJECT).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u10_group_changes_apply_from_the_next_request_with_the_caches_warm() {
    let upstream = Upstream::start().await;
    let (_guard, policies) = copy_policies();
    let gw = TestGateway::builder(&upstream.url())
        .policies_dir(policies.clone())
        .tweak(|c| c.policies.watch = false)
        .start()
        .await;
    let acme = gw.account("acme").await;
    let r = acme
        .client
        .post_json(
            &format!("/accounts/{}/users", acme.id),
            serde_json::json!({"user": "reader", "password": USER_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let folder = policies.join("accounts").join(&acme.id);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("readers.cedar"),
        format!(
            "@id(\"readers\")\npermit (principal in Tollgate::Group::\"{}/readers\", action == Tollgate::Action::\"storage:GetObject\", resource);\n",
            acme.id
        ),
    )
    .unwrap();
    let r = gw.reload_policies(&acme).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let reader = gw
        .client
        .with_token(&gw.login(&acme.id, "reader", USER_PASSWORD).await);
    let groups = format!("/accounts/{}/groups", acme.id);
    let member = format!("{groups}/readers/members/reader");

    warm(&reader, StatusCode::FORBIDDEN).await;
    let r = acme
        .client
        .post_json(&groups, serde_json::json!({"group": "readers"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    warm(&reader, StatusCode::FORBIDDEN).await;
    let r = acme.client.send(Method::PUT, &member, &[], "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(
        reader.get(OBJECT).await.status,
        StatusCode::OK,
        "joined: next request"
    );
    warm(&reader, StatusCode::OK).await;
    let r = acme.client.send(Method::DELETE, &member, &[], "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(
        reader.get(OBJECT).await.status,
        StatusCode::FORBIDDEN,
        "left: next request"
    );
    let r = acme.client.send(Method::PUT, &member, &[], "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    warm(&reader, StatusCode::OK).await;
    let r = acme
        .client
        .send(Method::DELETE, &format!("{groups}/readers"), &[], "")
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(
        reader.get(OBJECT).await.status,
        StatusCode::FORBIDDEN,
        "group deleted: next request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p5_a_spend_cap_sees_every_acknowledged_call_with_the_caches_warm() {
    let upstream = Upstream::start().await;
    let (_guard, policies) = copy_policies();
    let gw = TestGateway::builder(&upstream.url())
        .policies_dir(policies.clone())
        .tweak(|c| c.policies.watch = false)
        .start()
        .await;
    let acme = gw.account("acme").await;
    // GetObject costs $0.0004: the cap lets exactly three calls through.
    let folder = policies.join("accounts").join(&acme.id);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("cap.cedar"),
        "@id(\"spend-cap\")\nforbid (principal, action == Tollgate::Action::\"storage:GetObject\", resource)\nwhen { context.month_to_date_spend.greaterThan(decimal(\"0.0011\")) };\n",
    )
    .unwrap();
    let r = gw.reload_policies(&acme).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for i in 0..3 {
        let r = acme.client.get(OBJECT).await;
        assert_eq!(r.status, StatusCode::OK, "call {i}: {}", r.text());
    }
    let r = acme.client.get(OBJECT).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "the fourth call is over the cap"
    );
    assert_eq!(r.json()["error"]["denied_by"], "account");
}
