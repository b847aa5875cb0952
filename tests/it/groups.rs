//! SPEC U10 through HTTP: groups per account, names unique regardless of case, members, and a
//! group grant in `accounts/<id>/` that applies from a member's next request and goes away
//! from the next request after removal.

use std::path::Path;

use http::{Method, StatusCode};

use crate::support::gateway::copy_policies;
use crate::support::{Account, TestGateway, Upstream};

const READER_PASSWORD: &str = "Reader-pass-1!";

fn write(dir: &Path, relative: &str, text: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

async fn create_user(account: &Account, user: &str) {
    let r = account
        .client
        .post_json(
            &format!("/accounts/{}/users", account.id),
            serde_json::json!({"user": user, "password": READER_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u10_a_group_grant_applies_from_the_next_request_and_removal_takes_it_away() {
    let upstream = Upstream::start().await;
    let (_guard, policies) = copy_policies();
    let gw = TestGateway::builder(&upstream.url())
        .policies_dir(policies.clone())
        .tweak(|c| c.policies.watch = false)
        .start()
        .await;
    let acme = gw.account("acme").await;
    create_user(&acme, "reader").await;
    write(
        &policies,
        &format!("accounts/{}/readers.cedar", acme.id),
        &format!(
            r#"@id("readers-read-storage")
permit (
  principal in Tollgate::Group::"{}/Readers",
  action in [Tollgate::Action::"storage:GetObject", Tollgate::Action::"storage:ListObjects"],
  resource
);
"#,
            acme.id
        ),
    );
    let r = gw.reload_policies(&acme).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // One token for the whole test: membership is read per request, not baked into the token.
    let reader = gw
        .client
        .with_token(&gw.login(&acme.id, "reader", READER_PASSWORD).await);
    let r = reader.get("/svc/storage/objects/a").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "no grant before joining");
    assert_eq!(r.json()["error"]["denied_by"], "account");

    let groups = format!("/accounts/{}/groups", acme.id);
    let r = acme
        .client
        .post_json(&groups, serde_json::json!({"group": "Readers"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["group"], "Readers");
    assert_eq!(r.json()["members"], serde_json::json!([]));
    let member = format!("{groups}/Readers/members/reader");
    let r = acme.client.send(Method::PUT, &member, &[], "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());

    assert_eq!(
        reader.get("/svc/storage/objects/a").await.status,
        StatusCode::OK,
        "the grant applies from the next request"
    );
    assert_eq!(
        reader.get("/svc/storage/objects").await.status,
        StatusCode::OK
    );
    let r = reader
        .send(Method::PUT, "/svc/storage/objects/a", &[], "x")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "read-only: no writes");

    let listed = acme.client.get(&groups).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    assert_eq!(
        listed.json()["groups"],
        serde_json::json!([{
            "account_id": acme.id,
            "group": "Readers",
            "created_at": listed.json()["groups"][0]["created_at"],
            "members": ["reader"],
        }])
    );

    let r = acme.client.send(Method::DELETE, &member, &[], "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = reader.get("/svc/storage/objects/a").await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "removal applies from the next request"
    );
    assert_eq!(r.json()["error"]["denied_by"], "account");
    let r = acme.client.send(Method::DELETE, &member, &[], "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "NoSuchGroupMember");

    // Deleting the group takes its memberships with it.
    let r = acme.client.send(Method::PUT, &member, &[], "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        reader.get("/svc/storage/objects/a").await.status,
        StatusCode::OK
    );
    let r = acme
        .client
        .send(Method::DELETE, &format!("{groups}/readers"), &[], "")
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "names ignore case");
    assert_eq!(
        reader.get("/svc/storage/objects/a").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        acme.client.get(&groups).await.json()["groups"],
        serde_json::json!([])
    );
    assert!(
        upstream.seen().iter().all(|s| s.method != "PUT"),
        "no refused call reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u10_group_names_are_unique_regardless_of_case_and_unknown_names_are_404() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    let acme = gw.account("acme").await;
    create_user(&acme, "reader").await;
    let groups = format!("/accounts/{}/groups", acme.id);
    let r = acme
        .client
        .post_json(&groups, serde_json::json!({"group": "ops"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    for taken in ["ops", "OPS", "Ops"] {
        let r = acme
            .client
            .post_json(&groups, serde_json::json!({"group": taken}))
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{taken}");
        assert_eq!(r.error_code(), "GroupAlreadyExists");
    }
    let r = acme
        .client
        .post_json(&groups, serde_json::json!({"group": "no spaces"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "InvalidInput");

    let put = |path: String| {
        let client = acme.client.clone();
        async move { client.send(Method::PUT, &path, &[], "").await }
    };
    let r = put(format!("{groups}/nope/members/reader")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "NoSuchGroup");
    let r = put(format!("{groups}/ops/members/ghost")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "NoSuchUser");
    let r = put(format!("{groups}/OPS/members/READER")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = put(format!("{groups}/ops/members/reader")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "adding twice is harmless");
    assert_eq!(
        acme.client.get(&groups).await.json()["groups"][0]["members"],
        serde_json::json!(["reader"])
    );
    let r = acme
        .client
        .send(Method::DELETE, &format!("{groups}/nope"), &[], "")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "NoSuchGroup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u10_groups_of_another_account_are_refused_and_users_need_a_grant() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    let acme = gw.account("acme").await;
    let other = gw.account("other").await;
    let acme_groups = format!("/accounts/{}/groups", acme.id);
    let r = acme
        .client
        .post_json(&acme_groups, serde_json::json!({"group": "ops"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    // The other account's owner may do anything in its own account, nothing in this one.
    let r = other
        .client
        .post_json(&acme_groups, serde_json::json!({"group": "mine"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.error_code(), "AccessDenied");
    assert_eq!(
        other.client.get(&acme_groups).await.status,
        StatusCode::FORBIDDEN
    );
    let r = other
        .client
        .send(Method::DELETE, &format!("{acme_groups}/ops"), &[], "")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        acme.client.get(&acme_groups).await.json()["groups"][0]["group"],
        "ops",
        "the group is untouched"
    );

    // A user of the account without `iam:ManageGroups` is denied by the account's policies.
    create_user(&acme, "intern").await;
    let intern = gw
        .client
        .with_token(&gw.login(&acme.id, "intern", READER_PASSWORD).await);
    let r = intern
        .send(
            Method::PUT,
            &format!("{acme_groups}/ops/members/intern"),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"]["denied_by"], "account");
}
