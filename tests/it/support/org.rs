//! Organizations for tests: an owner with MFA (real `oathtool` codes), a switch to all
//! features done in-process, and policy files written into a copied tree.

use std::path::Path;

use chrono::Duration as ChronoDuration;
use http::StatusCode;
use tollgate::clock::Clock;
use tollgate::ids::{AccountId, HandshakeId};

use super::gateway::oathtool;
use super::{Account, TestGateway};

pub fn write(dir: &Path, relative: &str, text: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

pub async fn enable_all_features(gw: &TestGateway, payer: &AccountId, member: &AccountId) {
    let orgs = &gw.app.orgs;
    let parent = orgs
        .enable_all_features(payer, gw.clock.now())
        .await
        .expect("enable");
    for handshake in orgs
        .handshakes_for(member, gw.clock.now())
        .await
        .expect("list")
    {
        if handshake.parent_id.as_ref() == Some(&parent.id) {
            orgs.accept(member, &handshake.id, gw.clock.now())
                .await
                .expect("approve");
        }
    }
    let parent_id: HandshakeId = parent.id.clone();
    orgs.accept(payer, &parent_id, gw.clock.now())
        .await
        .expect("finish");
}

/// Enrolls MFA for the account's owner with a real `oathtool` code and logs in with MFA.
pub async fn with_mfa(gw: &TestGateway, account: Account) -> Account {
    let path = format!("/accounts/{}/users/{}/mfa", account.id, account.owner);
    let r = account.client.post_json(&path, serde_json::json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "enroll: {}", r.text());
    let secret = r.json()["secret"].as_str().unwrap().to_owned();
    let code = oathtool(&secret, gw.clock.now().timestamp());
    let r = account
        .client
        .post_json(
            &format!("{path}/verify"),
            serde_json::json!({ "code": code }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "verify: {}", r.text());
    gw.clock.advance(ChronoDuration::seconds(30));
    let code = oathtool(&secret, gw.clock.now().timestamp());
    let r = gw
        .client
        .post_json(
            "/auth/login",
            serde_json::json!({"account_id": account.id, "user": account.owner, "password": account.password, "mfa_code": code}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "mfa login: {}", r.text());
    assert_eq!(r.json()["mfa"], true);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    Account {
        client: gw.client.with_token(&token),
        ..account
    }
}
