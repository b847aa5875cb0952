//! SPEC A1, U1–U9 and F2's identity token: accounts, users, passwords, lockout, MFA, tokens and
//! access keys, all through HTTP against the in-process gateway (and, for U3's logs, the real
//! binary). Time-dependent rules move the gateway's manual clock; TOTP codes come from the real
//! `oathtool` at the gateway's time.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};
use std::time::{Duration as StdDuration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate::clock::Clock as _;
use tollgate::ids::AccountId;
use tollgate::params;

use crate::support::client::{TestResponse, raw};
use crate::support::gateway::OWNER_PASSWORD;
use crate::support::mfa::oathtool_code;
use crate::support::{Client, TestGateway, Upstream, binary};

const DEV_PASSWORD: &str = "Dev-pass-2?";

async fn gateway() -> (TestGateway, Upstream) {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    (gw, upstream)
}

async fn login(
    gw: &TestGateway,
    account: &str,
    user: &str,
    password: &str,
    mfa_code: Option<&str>,
) -> TestResponse {
    let mut body = json!({"account_id": account, "user": user, "password": password});
    if let Some(code) = mfa_code {
        body["mfa_code"] = json!(code);
    }
    gw.client.post_json("/auth/login", body).await
}

/// Logs in and returns a client sending the new token.
async fn login_client(gw: &TestGateway, account: &str, user: &str, password: &str) -> Client {
    gw.client
        .with_token(&gw.login(account, user, password).await)
}

async fn create_user(owner: &Client, account: &str, user: &str, password: &str) -> TestResponse {
    owner
        .post_json(
            &format!("/accounts/{account}/users"),
            json!({"user": user, "password": password}),
        )
        .await
}

async fn change_password(
    client: &Client,
    account: &str,
    user: &str,
    old: Option<&str>,
    new: &str,
) -> TestResponse {
    let mut body = json!({"new_password": new});
    if let Some(old) = old {
        body["old_password"] = json!(old);
    }
    client
        .put_json(&format!("/accounts/{account}/users/{user}/password"), body)
        .await
}

fn assert_error(r: &TestResponse, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.error_code(), code, "{}", r.text());
}

fn message(r: &TestResponse) -> String {
    r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The decoded header and payload of a JWT (not verified).
fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut decode = |what: &str| -> Value {
        let part = parts.next().unwrap_or_else(|| panic!("jwt without {what}"));
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
    };
    let header = decode("header");
    let payload = decode("payload");
    (header, payload)
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn code_at(gw: &TestGateway, secret: &str, offset_secs: i64) -> String {
    oathtool_code(secret, gw.clock.now().timestamp() + offset_secs)
}

/// Starts MFA enrollment for `user` and verifies it with the current code; returns the secret.
/// The step of that code is used up, so move the clock before the next login with a code.
async fn enroll_mfa(gw: &TestGateway, client: &Client, account: &str, user: &str) -> String {
    let r = client
        .post_json(&format!("/accounts/{account}/users/{user}/mfa"), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "enroll: {}", r.text());
    let secret = r.json()["secret"].as_str().expect("secret").to_owned();
    let code = code_at(gw, &secret, 0);
    let r = client
        .post_json(
            &format!("/accounts/{account}/users/{user}/mfa/verify"),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "verify: {}", r.text());
    secret
}

async fn make_management(gw: &TestGateway, account: &str) {
    let id = AccountId::parse(account).expect("account id");
    gw.app
        .orgs
        .create_organization(&id, None, true, gw.clock.now())
        .await
        .expect("organization created");
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no `{name}` in:\n{text}"))
}

// === A1: signup ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_signup_creates_an_account_whose_owner_can_log_in() {
    let (gw, _up) = gateway().await;
    let r = gw
        .client
        .post_json(
            "/accounts",
            json!({"name": "Acme Corp", "email": "ops@acme.example", "owner_user": "root-user", "owner_password": OWNER_PASSWORD}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let id = r.json()["account_id"]
        .as_str()
        .expect("account_id")
        .to_owned();
    assert!(
        id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()),
        "12-digit id: {id}"
    );
    let r = login(&gw, &id, "root-user", OWNER_PASSWORD, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = r.json();
    assert_eq!(body["account_id"], id.as_str());
    assert_eq!(body["user"], "root-user");
    assert_eq!(body["mfa"], false);
    assert!(body["token"].is_string() && body["expires_at"].is_string());

    // Two signups never share an id.
    let other = gw.account("other").await;
    assert_ne!(other.id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_signup_is_refused_when_closed() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .tweak(|c| c.accounts.open_signup = false)
        .start()
        .await;
    let r = gw
        .client
        .post_json(
            "/accounts",
            json!({"name": "acme", "email": "a@example.com", "owner_user": "owner", "owner_password": OWNER_PASSWORD}),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "SignupDisabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_weak_owner_password_names_each_unmet_rule() {
    let (gw, _up) = gateway().await;
    let r = gw
        .client
        .post_json(
            "/accounts",
            json!({"name": "acme", "email": "a@example.com", "owner_user": "owner", "owner_password": "weak"}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "PasswordPolicyViolation");
    let m = message(&r);
    for rule in [
        "at least 8 characters",
        "an upper-case letter",
        "a digit",
        "a symbol",
    ] {
        assert!(m.contains(rule), "`{rule}` missing from: {m}");
    }
    assert!(!m.contains("a lower-case letter"), "{m}");
    assert!(!m.contains("weak"), "the password is never echoed: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_bad_signup_input_gets_a_clear_4xx_never_a_500() {
    let (gw, _up) = gateway().await;
    let good = json!({"name": "acme", "email": "a@example.com", "owner_user": "owner", "owner_password": OWNER_PASSWORD});
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body.to_string()
    };
    let without = |key: &str| {
        let mut body = good.clone();
        body.as_object_mut().expect("object").remove(key);
        body.to_string()
    };
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("malformed json", b"{\"name\": ".to_vec(), "InvalidInput", ""),
        ("empty body", Vec::new(), "InvalidInput", ""),
        ("a json array", b"[1,2]".to_vec(), "InvalidInput", ""),
        (
            "missing owner_password",
            without("owner_password").into_bytes(),
            "InvalidInput",
            "owner_password",
        ),
        (
            "missing email",
            without("email").into_bytes(),
            "InvalidInput",
            "email",
        ),
        (
            "unknown field",
            with("plan", json!("gold")).into_bytes(),
            "InvalidInput",
            "plan",
        ),
        (
            "name of the wrong type",
            with("name", json!(42)).into_bytes(),
            "InvalidInput",
            "",
        ),
        (
            "overlong name",
            with("name", json!("n".repeat(65))).into_bytes(),
            "InvalidInput",
            "name",
        ),
        (
            "empty name",
            with("name", json!("  ")).into_bytes(),
            "InvalidInput",
            "name",
        ),
        (
            "control character in name",
            with("name", json!("ac\u{7}me")).into_bytes(),
            "InvalidInput",
            "name",
        ),
        (
            "overlong owner_user",
            with("owner_user", json!("u".repeat(65))).into_bytes(),
            "InvalidInput",
            "user name",
        ),
        (
            "owner_user with a slash",
            with("owner_user", json!("a/b")).into_bytes(),
            "InvalidInput",
            "user name",
        ),
        (
            "not an email",
            with("email", json!("nobody")).into_bytes(),
            "InvalidInput",
            "email",
        ),
        (
            "overlong email",
            with("email", json!(format!("{}@example.com", "e".repeat(260)))).into_bytes(),
            "InvalidInput",
            "email",
        ),
        (
            "overlong password",
            with("owner_password", json!(format!("Aa1!{}", "x".repeat(125)))).into_bytes(),
            "PasswordPolicyViolation",
            "at most 128 characters",
        ),
        (
            "name with a space at its end (not trimmed)",
            with("name", json!("acme ")).into_bytes(),
            "InvalidInput",
            "name",
        ),
        (
            "email with spaces around it (not trimmed)",
            with("email", json!(" a@example.com")).into_bytes(),
            "InvalidInput",
            "email",
        ),
        (
            "email without a local part",
            with("email", json!("@example.com")).into_bytes(),
            "InvalidInput",
            "email",
        ),
        (
            "empty email",
            with("email", json!("")).into_bytes(),
            "InvalidInput",
            "email",
        ),
        (
            "non-UTF-8 body",
            vec![b'{', 0xff, 0xfe, b'}'],
            "InvalidInput",
            "",
        ),
        (
            "non-UTF-8 inside a string",
            [
                &b"{\"name\":\"a"[..],
                &[0xc3, 0x28],
                &br#"","email":"a@example.com","owner_user":"owner","owner_password":"Owner-pass-1!"}"#[..],
            ]
            .concat(),
            "InvalidInput",
            "",
        ),
    ];
    for (what, body, code, names) in cases {
        let r = gw
            .client
            .send(
                Method::POST,
                "/accounts",
                &[("content-type", "application/json")],
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text());
        assert_eq!(r.error_code(), code, "{what}: {}", r.text());
        assert!(
            message(&r).contains(names),
            "{what}: the message should name `{names}`: {}",
            r.text()
        );
    }

    // The same for login: bad input is a 4xx, never a 500.
    for body in [
        b"{".to_vec(),
        br#"{"account_id": 1, "user": "u", "password": "p"}"#.to_vec(),
        br#"{"account_id": "123456789012", "user": "u"}"#.to_vec(),
        br#"{"account_id": "123456789012", "user": "u", "password": "p", "x": 1}"#.to_vec(),
        vec![0xff; 10],
    ] {
        let r = gw
            .client
            .send(Method::POST, "/auth/login", &[], body.clone())
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "InvalidInput");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_a_body_over_max_api_body_gets_413() {
    let (gw, _up) = gateway().await;
    let limit = gw.app.config.server.max_api_body as usize;
    let filler = "x".repeat(limit + 1024);
    let body = format!(
        r#"{{"name":"{filler}","email":"a@example.com","owner_user":"owner","owner_password":"{OWNER_PASSWORD}"}}"#
    );
    // With a Content-Length.
    let request = format!(
        "POST /accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = raw(
        &gw.addr.to_string(),
        request.as_bytes(),
        StdDuration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.300}");
    assert!(answer.contains("\"PayloadTooLarge\""), "{answer:.600}");
    // Chunked, so the size is only known while reading.
    let chunk = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let request = format!(
        "POST /accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
    );
    let answer = raw(
        &gw.addr.to_string(),
        request.as_bytes(),
        StdDuration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.300}");
}

// === U1: each account on its own ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u1_same_user_name_in_two_accounts_never_crosses_over() {
    let (gw, _up) = gateway().await;
    let a = gw.account_with_owner("alpha", "admin").await;
    let b = gw.account_with_owner("beta", "admin").await;
    let b_password = "Beta-admin-9#";
    let r = change_password(&b.client, &b.id, "admin", Some(OWNER_PASSWORD), b_password).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());

    // Each password logs into its own account only.
    let r = login(&gw, &b.id, "admin", OWNER_PASSWORD, None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidCredentials");
    let r = login(&gw, &a.id, "admin", b_password, None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidCredentials");
    let r = login(&gw, &a.id, "admin", OWNER_PASSWORD, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["account_id"], a.id.as_str());
    gw.clock.advance(Duration::seconds(1));
    let b_client = login_client(&gw, &b.id, "admin", b_password).await;

    // A token of one account reaches nothing in the other.
    let a_client = &a.client;
    let attempts = [
        create_user(a_client, &b.id, "intruder", DEV_PASSWORD).await,
        a_client
            .get(&format!("/accounts/{}/password-policy", b.id))
            .await,
        a_client
            .put_json(
                &format!("/accounts/{}/password-policy", b.id),
                json!({"min_length": 8, "require_uppercase": false, "require_lowercase": false, "require_digit": false, "require_symbol": false}),
            )
            .await,
        change_password(a_client, &b.id, "admin", None, "Hijack-pass-1!").await,
        change_password(a_client, &b.id, "admin", Some(b_password), "Hijack-pass-1!").await,
        a_client
            .post_json(&format!("/accounts/{}/users/admin/mfa", b.id), json!({}))
            .await,
        a_client
            .post_json(
                &format!("/accounts/{}/users/admin/access-keys", b.id),
                json!({}),
            )
            .await,
    ];
    for r in &attempts {
        assert_error(r, StatusCode::FORBIDDEN, "AccessDenied");
    }
    // B is untouched: its admin still logs in with its own password.
    let r = login(&gw, &b.id, "admin", b_password, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = b_client
        .get(&format!("/accounts/{}/password-policy", b.id))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["require_symbol"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u1_user_names_are_unique_within_an_account_regardless_of_case() {
    let (gw, _up) = gateway().await;
    let a = gw.account("alpha").await;
    let b = gw.account("beta").await;
    let r = create_user(&a.client, &a.id, "Alice", DEV_PASSWORD).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    for taken in ["alice", "ALICE", "aLiCe", "OWNER"] {
        let r = create_user(&a.client, &a.id, taken, DEV_PASSWORD).await;
        assert_error(&r, StatusCode::CONFLICT, "UserAlreadyExists");
    }
    // Another account may have its own alice.
    let r = create_user(&b.client, &b.id, "alice", DEV_PASSWORD).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

// === U2: password policies ===

fn policy(min_length: i64, all: bool) -> Value {
    json!({
        "min_length": min_length,
        "require_uppercase": all,
        "require_lowercase": all,
        "require_digit": all,
        "require_symbol": all,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u2_password_policy_get_put_and_ranges() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    let path = format!("/accounts/{}/password-policy", acme.id);
    let r = acme.client.get(&path).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = r.json();
    assert_eq!(body["min_length"], 8);
    for rule in [
        "require_uppercase",
        "require_lowercase",
        "require_digit",
        "require_symbol",
    ] {
        assert_eq!(body[rule], true, "default {rule}");
    }
    assert!(body["max_age_days"].is_null() && body["reuse_prevention"].is_null());

    // Out of range: every bad field is named, whatever the number.
    let cases = [
        (
            json!({"min_length": 7, "max_age_days": 0, "reuse_prevention": 25}),
            vec!["min_length", "max_age_days", "reuse_prevention"],
        ),
        (json!({"min_length": 129}), vec!["min_length"]),
        (json!({"max_age_days": 1096}), vec!["max_age_days"]),
        (
            json!({"min_length": 300, "reuse_prevention": 300}),
            vec!["min_length", "reuse_prevention"],
        ),
        (
            json!({"min_length": -1, "max_age_days": 70000}),
            vec!["min_length", "max_age_days"],
        ),
        (
            json!({"min_length": 99999999999i64, "reuse_prevention": -3}),
            vec!["min_length", "reuse_prevention"],
        ),
    ];
    for (overrides, fields) in cases {
        let mut body = policy(8, true);
        for (k, v) in overrides.as_object().expect("object") {
            body[k] = v.clone();
        }
        let r = acme.client.put_json(&path, body.clone()).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "InvalidInput");
        for field in fields {
            assert!(
                message(&r).contains(field),
                "{body}: `{field}` not named: {}",
                r.text()
            );
        }
    }
    let r = acme.client.put_json(&path, json!({"min_length": 8})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "InvalidInput");
    assert!(message(&r).contains("require_uppercase"), "{}", r.text());

    // Bounds are inclusive; a valid PUT is what GET shows.
    let mut body = policy(128, false);
    body["max_age_days"] = json!(1095);
    body["reuse_prevention"] = json!(24);
    let r = acme.client.put_json(&path, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = acme.client.get(&path).await;
    assert_eq!(r.json(), body);
    let mut body = policy(8, false);
    body["max_age_days"] = json!(1);
    body["reuse_prevention"] = json!(1);
    let r = acme.client.put_json(&path, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(acme.client.get(&path).await.json(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u2_a_stricter_policy_applies_to_the_next_password_change() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    let path = format!("/accounts/{}/password-policy", acme.id);
    let r = acme.client.put_json(&path, policy(16, true)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // The current, shorter password still logs in.
    let r = login(&gw, &acme.id, "owner", OWNER_PASSWORD, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // The next change must meet it, and hears of every unmet rule.
    let r = change_password(
        &acme.client,
        &acme.id,
        "owner",
        Some(OWNER_PASSWORD),
        "short",
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "PasswordPolicyViolation");
    let m = message(&r);
    for rule in [
        "at least 16 characters",
        "an upper-case letter",
        "a digit",
        "a symbol",
    ] {
        assert!(m.contains(rule), "`{rule}` missing: {m}");
    }
    assert!(!m.contains("lower-case"), "{m}");
    let r = change_password(
        &acme.client,
        &acme.id,
        "owner",
        Some(OWNER_PASSWORD),
        "ALL UPPER CASE AND LONG",
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "PasswordPolicyViolation");
    let m = message(&r);
    assert!(
        m.contains("a lower-case letter") && m.contains("a digit") && !m.contains("16"),
        "{m}"
    );
    // New users too.
    let r = create_user(&acme.client, &acme.id, "dev", DEV_PASSWORD).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "PasswordPolicyViolation");
    let r = change_password(
        &acme.client,
        &acme.id,
        "owner",
        Some(OWNER_PASSWORD),
        "Long-enough-pass-16",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u2_reuse_prevention_refuses_recent_passwords() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    let mut body = policy(8, true);
    body["reuse_prevention"] = json!(2);
    let r = acme
        .client
        .put_json(&format!("/accounts/{}/password-policy", acme.id), body)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = create_user(&acme.client, &acme.id, "dev", "Pass-one-1!").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let owner = &acme.client;
    // The owner sets dev's passwords (no old password needed).
    let set = |new: &'static str| change_password(owner, &acme.id, "dev", None, new);
    let r = set("Pass-one-1!").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "PasswordPolicyViolation");
    assert!(message(&r).contains("last 2 passwords"), "{}", r.text());
    assert_eq!(set("Pass-two-2!").await.status, StatusCode::NO_CONTENT);
    // One back: still within the last two.
    let r = set("Pass-one-1!").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "PasswordPolicyViolation");
    assert_eq!(set("Pass-three-3!").await.status, StatusCode::NO_CONTENT);
    // Two back: out of the window again.
    assert_eq!(set("Pass-one-1!").await.status, StatusCode::NO_CONTENT);
    let r = login(&gw, &acme.id, "dev", "Pass-one-1!", None).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u2_an_expired_password_allows_only_a_password_change() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    let mut body = policy(8, true);
    body["max_age_days"] = json!(30);
    let r = acme
        .client
        .put_json(&format!("/accounts/{}/password-policy", acme.id), body)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    gw.clock.advance(Duration::days(29));
    let r = login(&gw, &acme.id, "owner", OWNER_PASSWORD, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["password_expired"] != true, "{}", r.text());

    gw.clock.advance(Duration::days(2));
    let r = login(&gw, &acme.id, "owner", OWNER_PASSWORD, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["password_expired"], true, "{}", r.text());
    let expired = gw
        .client
        .with_token(r.json()["token"].as_str().expect("token"));
    let r = expired.get("/svc/storage/objects/a").await;
    assert_error(&r, StatusCode::FORBIDDEN, "PasswordExpired");
    let r = expired
        .get(&format!("/accounts/{}/password-policy", acme.id))
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "PasswordExpired");
    let r = create_user(&expired, &acme.id, "dev", DEV_PASSWORD).await;
    assert_error(&r, StatusCode::FORBIDDEN, "PasswordExpired");

    let r = change_password(
        &expired,
        &acme.id,
        "owner",
        Some(OWNER_PASSWORD),
        "Fresh-pass-2@",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    gw.clock.advance(Duration::seconds(1));
    let r = login(&gw, &acme.id, "owner", "Fresh-pass-2@", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["password_expired"] != true, "{}", r.text());
    let fresh = gw
        .client
        .with_token(r.json()["token"].as_str().expect("token"));
    let r = fresh.get("/svc/storage/objects/a").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u2_a_management_account_policy_never_goes_below_the_default_floor() {
    let (gw, _up) = gateway().await;
    let payer = gw.account("payer").await;
    let path = format!("/accounts/{}/password-policy", payer.id);
    // While standalone, the account may relax its policy.
    let r = payer.client.put_json(&path, policy(8, false)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        payer.client.get(&path).await.json()["require_symbol"],
        false
    );
    let r = create_user(&payer.client, &payer.id, "dev", "lowercaseonly").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    make_management(&gw, &payer.id).await;
    let r = login(&gw, &payer.id, "owner", OWNER_PASSWORD, None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "MfaEnrollmentRequired");
    let enrollment = gw
        .client
        .with_token(r.json()["enrollment_token"].as_str().expect("token"));
    let secret = enroll_mfa(&gw, &enrollment, &payer.id, "owner").await;
    gw.clock.advance(Duration::seconds(30));
    let code = code_at(&gw, &secret, 0);
    let r = login(&gw, &payer.id, "owner", OWNER_PASSWORD, Some(&code)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let owner = gw
        .client
        .with_token(r.json()["token"].as_str().expect("token"));

    // The floor shows, and binds, whatever is stored.
    let r = owner.get(&path).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let shown = r.json();
    for rule in [
        "require_uppercase",
        "require_lowercase",
        "require_digit",
        "require_symbol",
    ] {
        assert_eq!(shown[rule], true, "{rule}: {shown}");
    }
    let r = owner.put_json(&path, policy(8, false)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["require_symbol"], true, "{}", r.text());
    let r = create_user(&owner, &payer.id, "ops", "lowercaseonly").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "PasswordPolicyViolation");
    let r = change_password(&owner, &payer.id, "dev", None, "lowercaseagain").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "PasswordPolicyViolation");
    let m = message(&r);
    assert!(
        m.contains("an upper-case letter") && m.contains("a digit") && m.contains("a symbol"),
        "{m}"
    );
    // Stricter settings of its own still apply on top of the floor.
    let r = owner.put_json(&path, policy(20, false)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["min_length"], 20);
    let r = change_password(&owner, &payer.id, "dev", None, "Short-but-ok-1!").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "PasswordPolicyViolation");
    assert!(
        message(&r).contains("at least 20 characters"),
        "{}",
        r.text()
    );
}

// === U3: how passwords are kept, and what is never logged ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u3_passwords_are_stored_only_as_argon2id_phc_strings() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    assert_eq!(
        create_user(&acme.client, &acme.id, "dev", DEV_PASSWORD)
            .await
            .status,
        StatusCode::CREATED
    );
    let r = change_password(&acme.client, &acme.id, "dev", None, "Second-pass-2!").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = acme
        .client
        .post_json(
            &format!("/accounts/{}/users/owner/access-keys", acme.id),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let key_secret = r.json()["secret"].as_str().expect("secret").to_owned();

    let db = crate::support::backend::TestDb(gw.database());
    let mut hashes: Vec<String> = db
        .query_map("SELECT password_hash FROM users", params![], |r| r.get(0))
        .expect("query");
    assert_eq!(hashes.len(), 2);
    let history: Vec<String> = db
        .query_map(
            "SELECT password_hash FROM password_history",
            params![],
            |r| r.get(0),
        )
        .expect("query");
    assert!(!history.is_empty(), "the old password is kept, hashed");
    hashes.extend(history);
    for hash in &hashes {
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        for password in [OWNER_PASSWORD, DEV_PASSWORD, "Second-pass-2!"] {
            assert!(!hash.contains(password));
        }
    }
    let key_hash: String = db
        .query_row("SELECT secret_hash FROM access_keys", params![], |r| {
            r.get(0)
        })
        .expect("key row");
    assert!(
        key_hash.len() == 64 && key_hash != key_secret,
        "access key secrets are stored hashed"
    );
    // Nothing else in the file holds a password or the key secret.
    if crate::support::backend::sqlite_only("u3 (the database file's bytes)") {
        return;
    }
    let mut bytes = Vec::new();
    for name in ["tollgate.db", "tollgate.db-wal"] {
        if let Ok(mut f) = std::fs::File::open(gw.data_dir.join(name)) {
            f.read_to_end(&mut bytes).expect("read");
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    for secret in [OWNER_PASSWORD, DEV_PASSWORD, "Second-pass-2!", &key_secret] {
        assert!(!text.contains(secret), "`{secret}` found in the store");
    }
}

/// A running `tollgate serve` with its output captured.
struct RunningBinary {
    child: std::process::Child,
    url: String,
    output: std::sync::Arc<parking_lot::Mutex<String>>,
    _dir: tempfile::TempDir,
}

fn start_binary() -> RunningBinary {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/tollgate.toml")).expect("config");
    // The upstreams must be down whatever else runs on this machine: a port just closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut config = shipped.replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"");
    for port in ["9101", "9102", "9103"] {
        config = config.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{closed}"));
    }
    let config = config
        .replace(
            "data_dir = \"data\"",
            &format!(
                "data_dir = {:?}",
                dir.path().join("data").display().to_string()
            ),
        )
        .replace(
            "dir = \"policies\"",
            &format!("dir = {:?}", root.join("policies").display().to_string()),
        );
    assert!(config.contains("127.0.0.1:0"), "listen address replaced");
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, config).expect("write config");
    let mut child = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .env("TOLLGATE_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tollgate");
    let output = std::sync::Arc::new(parking_lot::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let out = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("tollgate: listening on ") {
                let _ = tx.send(url.to_owned());
            }
            out.lock().push_str(&line);
            out.lock().push('\n');
        }
    });
    let out = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            out.lock().push_str(&line);
            out.lock().push('\n');
        }
    });
    let url = rx
        .recv_timeout(StdDuration::from_secs(30))
        .unwrap_or_else(|_| panic!("no listening line; output:\n{}", output.lock()));
    RunningBinary {
        child,
        url,
        output,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u3_no_password_secret_code_or_token_reaches_the_logs() {
    let mut gw = start_binary();
    let client = Client::new(&gw.url);
    let mut secrets: Vec<String> = Vec::new();
    let owner_password = "Logcheck-owner-7%";
    secrets.push(owner_password.to_owned());

    let r = client
        .post_json(
            "/accounts",
            json!({"name": "logcheck", "email": "l@example.com", "owner_user": "owner", "owner_password": owner_password}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let id = r.json()["account_id"].as_str().expect("id").to_owned();
    // A weak and a wrong password go through the error paths.
    let weak = "weakpassword-zz";
    secrets.push(weak.to_owned());
    let r = client
        .post_json(
            "/accounts",
            json!({"name": "weak", "email": "w@example.com", "owner_user": "owner", "owner_password": weak}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let wrong = "Wrong-password-8^";
    secrets.push(wrong.to_owned());
    let r = client
        .post_json(
            "/auth/login",
            json!({"account_id": id, "user": "owner", "password": wrong}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let r = client
        .post_json(
            "/auth/login",
            json!({"account_id": id, "user": "owner", "password": owner_password}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let token = r.json()["token"].as_str().expect("token").to_owned();
    secrets.push(token.clone());
    let owner = client.with_token(&token);

    // A new user, a password change, MFA and access keys.
    let dev_password = "Logcheck-dev-5&";
    secrets.push(dev_password.to_owned());
    let r = create_user(&owner, &id, "dev", dev_password).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let changed = "Logcheck-dev-6*";
    secrets.push(changed.to_owned());
    let r = change_password(&owner, &id, "dev", None, changed).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    let r = owner
        .post_json(&format!("/accounts/{id}/users/dev/mfa"), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let mfa_secret = r.json()["secret"].as_str().expect("secret").to_owned();
    secrets.push(mfa_secret.clone());
    secrets.push(r.json()["otpauth_uri"].as_str().expect("uri").to_owned());
    let now = chrono::Utc::now().timestamp();
    let code = oathtool_code(&mfa_secret, now);
    let r = owner
        .post_json(
            &format!("/accounts/{id}/users/dev/mfa/verify"),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // The same code again in a login: refused, but it went through the login's MFA path.
    let r = client
        .post_json(
            "/auth/login",
            json!({"account_id": id, "user": "dev", "password": changed, "mfa_code": code}),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidMfaCode");
    let future_code = oathtool_code(&mfa_secret, now + 30);
    let r = client
        .post_json(
            "/auth/login",
            json!({"account_id": id, "user": "dev", "password": changed, "mfa_code": future_code}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    secrets.push(r.json()["token"].as_str().expect("token").to_owned());
    // Codes are short: only check ones that cannot appear by accident in timestamps or ids.
    let codes = [code, future_code];

    let r = owner
        .post_json(
            &format!("/accounts/{id}/users/owner/access-keys"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let key_id = r.json()["access_key_id"].as_str().expect("id").to_owned();
    let key_secret = r.json()["secret"].as_str().expect("secret").to_owned();
    secrets.push(key_secret.clone());
    let r = client
        .post_json(
            "/auth/token",
            json!({"access_key_id": key_id, "secret": key_secret}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let key_token = r.json()["token"].as_str().expect("token").to_owned();
    secrets.push(key_token.clone());
    let r = client
        .post_json(
            "/auth/token",
            json!({"access_key_id": key_id, "secret": "x".repeat(40)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A service call (its upstream is down: the identity token is made all the same), a
    // tampered token and a logout.
    let r = client
        .with_token(&key_token)
        .get("/svc/storage/objects/a")
        .await;
    assert!(r.status.is_server_error(), "{}", r.text());
    let r = client
        .with_token(&format!("{token}x"))
        .get("/svc/storage/objects/a")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = owner.post_json("/auth/logout", json!({})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = owner.get("/svc/storage/objects/a").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Stop it and read everything it wrote.
    let status = Command::new("kill")
        .args(["-TERM", &gw.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut child = gw.child;
    let exit = tokio::time::timeout(
        StdDuration::from_secs(20),
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("exits after SIGTERM")
    .expect("join")
    .expect("wait");
    assert!(exit.success(), "{exit:?}");
    gw.child = Command::new("true").spawn().expect("placeholder");
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    let logs = gw.output.lock().clone();
    assert!(
        logs.contains("DEBUG") || logs.contains("INFO"),
        "the capture holds the gateway's log:\n{logs}"
    );
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret reached the logs: `{secret}`\n{logs}"
        );
        // Tokens: not even their signature part.
        if let Some(signature) = secret.rsplit('.').next().filter(|s| s.len() > 40) {
            assert!(
                !logs.contains(signature),
                "a token signature reached the logs"
            );
        }
    }
    for code in codes {
        assert!(
            !logs.contains(&format!("\"{code}\"")) && !logs.contains(&format!("={code}")),
            "an MFA code reached the logs: {code}\n{logs}"
        );
    }
    assert!(
        !logs.contains("$argon2"),
        "a password hash reached the logs"
    );
}

// === U4: login, failures and lockout ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u4_unknown_account_unknown_user_and_wrong_password_look_the_same() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    let cases = [
        ("999999999999", "owner", OWNER_PASSWORD),
        ("not-an-id", "owner", OWNER_PASSWORD),
        (acme.id.as_str(), "nobody", OWNER_PASSWORD),
        (acme.id.as_str(), "bad name!", OWNER_PASSWORD),
        (acme.id.as_str(), "owner", "Wrong-pass-1!"),
    ];
    let mut bodies = Vec::new();
    let mut times = Vec::new();
    for (account, user, password) in cases {
        let started = Instant::now();
        let r = login(&gw, account, user, password, None).await;
        times.push(started.elapsed());
        assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidCredentials");
        let mut body = r.json();
        body["request_id"] = Value::Null;
        bodies.push(body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "identical bodies: {bodies:?}"
    );
    // Each costs a password verification: none is answered much faster than a wrong password
    // (without the dummy verification an unknown user answers ~30x faster; 8x leaves room for a
    // loaded CI machine).
    let wrong = times[4];
    for (i, t) in times.iter().enumerate() {
        assert!(
            *t * 8 >= wrong,
            "case {i} answered in {t:?}, a wrong password in {wrong:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u4_five_failures_lock_the_user_for_fifteen_minutes() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    for i in 1..=4 {
        let r = login(&gw, &acme.id, "owner", "Wrong-pass-1!", None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidCredentials");
        assert!(r.header("retry-after").is_none(), "attempt {i}");
    }
    let r = login(&gw, &acme.id, "owner", "Wrong-pass-1!", None).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "UserLocked");
    // Even the right password is refused while locked.
    gw.clock.advance(Duration::minutes(5));
    let r = login(&gw, &acme.id, "owner", OWNER_PASSWORD, None).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "UserLocked");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert_eq!(retry, 600, "ten minutes of the lock are left");
    // Tokens issued before the lock keep working: the lock is about logging in.
    let r = acme.client.get("/svc/storage/objects/a").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Another user of the account is not locked.
    let r = create_user(&acme.client, &acme.id, "dev", DEV_PASSWORD).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        login(&gw, &acme.id, "dev", DEV_PASSWORD, None).await.status,
        StatusCode::OK
    );

    gw.clock
        .advance(Duration::minutes(10) - Duration::seconds(1));
    let r = login(&gw, &acme.id, "owner", OWNER_PASSWORD, None).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "UserLocked");
    gw.clock.advance(Duration::seconds(1));
    let r = login(&gw, &acme.id, "owner", OWNER_PASSWORD, None).await;
    assert_eq!(r.status, StatusCode::OK, "the lock lifts after 15 minutes");

    let metrics = gw.client.get("/metrics").await.text();
    assert_eq!(metric(&metrics, "tollgate_lockouts_total"), 1, "{metrics}");
    assert!(
        metric(&metrics, "tollgate_login_failures_total") >= 5,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u4_a_success_resets_the_failure_count() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    for _ in 0..4 {
        let r = login(&gw, &acme.id, "owner", "Wrong-pass-1!", None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidCredentials");
    }
    assert_eq!(
        login(&gw, &acme.id, "owner", OWNER_PASSWORD, None)
            .await
            .status,
        StatusCode::OK
    );
    for _ in 0..4 {
        let r = login(&gw, &acme.id, "owner", "Wrong-pass-1!", None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidCredentials");
    }
    assert_eq!(
        login(&gw, &acme.id, "owner", OWNER_PASSWORD, None)
            .await
            .status,
        StatusCode::OK
    );
    let metrics = gw.client.get("/metrics").await.text();
    assert_eq!(metric(&metrics, "tollgate_login_failures_total"), 8);
    assert_eq!(metric(&metrics, "tollgate_lockouts_total"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u4_concurrent_failures_all_count_toward_the_lock() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    // A burst of guesses in parallel must not get more than a lock's worth of tries.
    let guesses: Vec<_> = (0..10)
        .map(|i| {
            let client = gw.client.clone();
            let id = acme.id.clone();
            tokio::spawn(async move {
                client
                    .post_json(
                        "/auth/login",
                        json!({"account_id": id, "user": "owner", "password": format!("Guess-{i}-pass!")}),
                    )
                    .await
                    .status
            })
        })
        .collect();
    for guess in guesses {
        let status = guess.await.expect("join");
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS,
            "{status}"
        );
    }
    let r = login(&gw, &acme.id, "owner", OWNER_PASSWORD, None).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "UserLocked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u4_wrong_old_passwords_count_toward_the_lock() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    // A token alone (say, a stolen one) must not buy unlimited guesses at the password.
    for i in 1..=4 {
        let r = change_password(
            &acme.client,
            &acme.id,
            "owner",
            Some(&format!("Guess-{i}-pass!")),
            "New-pass-11!",
        )
        .await;
        assert_error(&r, StatusCode::FORBIDDEN, "InvalidCredentials");
    }
    let r = change_password(
        &acme.client,
        &acme.id,
        "owner",
        Some("Guess-5-pass!"),
        "New-pass-11!",
    )
    .await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "UserLocked");
    assert!(r.header("retry-after").is_some());
    let r = change_password(
        &acme.client,
        &acme.id,
        "owner",
        Some(OWNER_PASSWORD),
        "New-pass-11!",
    )
    .await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "UserLocked");
    let r = login(&gw, &acme.id, "owner", OWNER_PASSWORD, None).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "UserLocked");
    gw.clock.advance(Duration::minutes(15));
    let r = change_password(
        &acme.client,
        &acme.id,
        "owner",
        Some(OWNER_PASSWORD),
        "New-pass-11!",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u4_the_lock_survives_a_restart() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut first = TestGateway::builder(&upstream.url())
        .data_dir(data.clone())
        .start()
        .await;
    let acme = first.account("acme").await;
    for _ in 0..5 {
        login(&first, &acme.id, "owner", "Wrong-pass-1!", None).await;
    }
    let r = login(&first, &acme.id, "owner", OWNER_PASSWORD, None).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "UserLocked");
    first.shutdown().await;
    drop(first);

    let second = TestGateway::builder(&upstream.url())
        .data_dir(data)
        .start()
        .await;
    let r = login(&second, &acme.id, "owner", OWNER_PASSWORD, None).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "UserLocked");
    // The old token still verifies after the restart: the signing key was kept.
    let r = Client::new(&second.url())
        .with_token(acme.client.token().expect("token"))
        .get("/svc/storage/objects/a")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    second.clock.advance(Duration::minutes(16));
    let r = login(&second, &acme.id, "owner", OWNER_PASSWORD, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

// === U5: TOTP ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u5_totp_enrollment_login_replay_and_lockout() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    let base = format!("/accounts/{}/users/owner/mfa", acme.id);
    let r = acme.client.post_json(&base, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let secret = r.json()["secret"].as_str().expect("secret").to_owned();
    let uri = r.json()["otpauth_uri"].as_str().expect("uri").to_owned();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(uri.contains("issuer=tollgate"), "{uri}");
    assert!(
        secret.len() >= 26
            && secret
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)),
        "Base32: {secret}"
    );
    // Not on until verified.
    assert_eq!(
        login(&gw, &acme.id, "owner", OWNER_PASSWORD, None)
            .await
            .status,
        StatusCode::OK
    );
    let verify = format!("{base}/verify");
    for bad in ["12345", "abcdef", "1234567"] {
        let r = acme.client.post_json(&verify, json!({"code": bad})).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidMfaCode");
    }
    let stale = code_at(&gw, &secret, -120);
    let r = acme.client.post_json(&verify, json!({"code": stale})).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidMfaCode");
    let r = acme
        .client
        .post_json(&verify, json!({"code": code_at(&gw, &secret, 0)}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["mfa"], true);

    let r = login(&gw, &acme.id, "owner", OWNER_PASSWORD, None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "MfaRequired");
    // A wrong password with a good code is still just wrong credentials.
    gw.clock.advance(Duration::seconds(30));
    let code = code_at(&gw, &secret, 0);
    let r = login(&gw, &acme.id, "owner", "Wrong-pass-1!", Some(&code)).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidCredentials");
    let r = login(&gw, &acme.id, "owner", OWNER_PASSWORD, Some(&code)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["mfa"], true);
    let (_, claims) = jwt_parts(r.json()["token"].as_str().expect("token"));
    assert_eq!(claims["mfa"], true);

    // The same code again: refused.
    let r = login(&gw, &acme.id, "owner", OWNER_PASSWORD, Some(&code)).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidMfaCode");
    // Once the next step's code was used (a fast authenticator clock), the current step's
    // code is refused too: it is earlier.
    gw.clock.advance(Duration::seconds(30));
    let next = code_at(&gw, &secret, 30);
    let r = login(&gw, &acme.id, "owner", OWNER_PASSWORD, Some(&next)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let current = code_at(&gw, &secret, 0);
    let r = login(&gw, &acme.id, "owner", OWNER_PASSWORD, Some(&current)).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidMfaCode");

    // Wrong codes count toward the lockout (this is the second failure in a row).
    for _ in 0..3 {
        let r = login(&gw, &acme.id, "owner", OWNER_PASSWORD, Some("000000")).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidMfaCode");
    }
    let r = login(&gw, &acme.id, "owner", OWNER_PASSWORD, Some("000000")).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "UserLocked");
    gw.clock.advance(Duration::seconds(60));
    let r = login(
        &gw,
        &acme.id,
        "owner",
        OWNER_PASSWORD,
        Some(&code_at(&gw, &secret, 0)),
    )
    .await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "UserLocked");

    // With MFA on, enrolling again is refused (it would drop the second factor).
    let r = acme.client.post_json(&base, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
}

// === U6: management accounts need MFA ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u6_a_management_user_without_mfa_gets_only_an_enrollment_token() {
    let (gw, _up) = gateway().await;
    let payer = gw.account("payer").await;
    let other = gw.account("other").await;
    assert_eq!(
        create_user(&payer.client, &payer.id, "bob", DEV_PASSWORD)
            .await
            .status,
        StatusCode::CREATED
    );
    make_management(&gw, &payer.id).await;

    // The owner's token from before the organization is no good any more.
    let r = payer.client.get("/svc/storage/objects/a").await;
    assert_error(&r, StatusCode::FORBIDDEN, "MfaEnrollmentRequired");

    let r = login(&gw, &payer.id, "owner", OWNER_PASSWORD, None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "MfaEnrollmentRequired");
    let body = r.json();
    let token = body["enrollment_token"].as_str().expect("enrollment_token");
    let (_, claims) = jwt_parts(token);
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        600,
        "ten minutes"
    );
    assert!(body["expires_at"].is_string());
    assert!(body["token"].is_null(), "no service token: {body}");
    let enrollment = gw.client.with_token(token);

    // Good for nothing but its own user's MFA endpoints.
    let r = enrollment.get("/svc/storage/objects/a").await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidToken");
    for r in [
        enrollment
            .get(&format!("/accounts/{}/password-policy", payer.id))
            .await,
        create_user(&enrollment, &payer.id, "eve", DEV_PASSWORD).await,
        change_password(
            &enrollment,
            &payer.id,
            "owner",
            Some(OWNER_PASSWORD),
            "New-pass-1!!",
        )
        .await,
        enrollment
            .post_json(
                &format!("/accounts/{}/users/owner/access-keys", payer.id),
                json!({}),
            )
            .await,
        enrollment
            .post_json(&format!("/accounts/{}/users/bob/mfa", payer.id), json!({}))
            .await,
        enrollment
            .post_json(
                &format!("/accounts/{}/users/bob/mfa/verify", payer.id),
                json!({"code": "123456"}),
            )
            .await,
        enrollment.get("/policies").await,
    ] {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
        assert_eq!(r.error_code(), "InvalidToken");
    }
    let r = enrollment
        .post_json(
            &format!("/accounts/{}/users/owner/mfa", other.id),
            json!({}),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "AccessDenied");

    // Enroll with it, then log in with a code: service calls work.
    let secret = enroll_mfa(&gw, &enrollment, &payer.id, "owner").await;
    let r = login(&gw, &payer.id, "owner", OWNER_PASSWORD, None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "MfaRequired");
    gw.clock.advance(Duration::seconds(30));
    let r = login(
        &gw,
        &payer.id,
        "owner",
        OWNER_PASSWORD,
        Some(&code_at(&gw, &secret, 0)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["mfa"], true);
    let owner = gw
        .client
        .with_token(r.json()["token"].as_str().expect("token"));
    let r = owner.get("/svc/storage/objects/a").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Bob's enrollment token dies after ten minutes.
    let r = login(&gw, &payer.id, "bob", DEV_PASSWORD, None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "MfaEnrollmentRequired");
    let bob = gw
        .client
        .with_token(r.json()["enrollment_token"].as_str().expect("token"));
    gw.clock.advance(Duration::minutes(10));
    let r = bob
        .post_json(&format!("/accounts/{}/users/bob/mfa", payer.id), json!({}))
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidToken");
    // An access key does not get around it either.
    let r = owner
        .post_json(
            &format!("/accounts/{}/users/bob/access-keys", payer.id),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = gw
        .client
        .post_json(
            "/auth/token",
            json!({"access_key_id": r.json()["access_key_id"], "secret": r.json()["secret"]}),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "MfaEnrollmentRequired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u6_an_older_token_of_an_account_that_became_management_is_refused() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    let r = acme.client.get("/svc/storage/objects/a").await;
    assert_eq!(r.status, StatusCode::OK);
    make_management(&gw, &acme.id).await;
    for r in [
        acme.client.get("/svc/storage/objects/a").await,
        acme.client
            .get(&format!("/accounts/{}/password-policy", acme.id))
            .await,
        create_user(&acme.client, &acme.id, "dev", DEV_PASSWORD).await,
    ] {
        assert_error(&r, StatusCode::FORBIDDEN, "MfaEnrollmentRequired");
    }
}

// === U7: tokens ===

/// Signs `claims` with the gateway's own active key: only the claims are wrong.
fn sign_with_gateway_key(gw: &TestGateway, claims: &Value) -> String {
    let active = gw.app.tokens.keys().active().expect("active key");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(active.kid.to_string());
    jsonwebtoken::encode(&header, claims, &active.encoding).expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u7_tokens_carry_the_claims_and_a_kid_from_the_jwks() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    let token = acme.client.token().expect("token");
    let (header, claims) = jwt_parts(token);
    assert_eq!(header["alg"], "EdDSA");
    let kid = header["kid"].as_str().expect("kid");
    let jwks = gw.client.get("/.well-known/jwks.json").await;
    assert_eq!(jwks.status, StatusCode::OK);
    let keys = jwks.json()["keys"].as_array().expect("keys").clone();
    let key = keys
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap_or_else(|| panic!("kid {kid} not in {keys:?}"));
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert!(key.get("d").is_none(), "no private part in the JWKS");

    for claim in ["iss", "aud", "sub", "acct", "mfa", "iat", "exp", "jti"] {
        assert!(claims.get(claim).is_some(), "{claim} missing: {claims}");
    }
    assert_eq!(claims["iss"], "tollgate");
    assert_eq!(claims["aud"], "tollgate");
    assert_eq!(claims["sub"], "owner");
    assert_eq!(claims["acct"], acme.id.as_str());
    assert_eq!(claims["mfa"], false);
    let iat = claims["iat"].as_i64().expect("iat");
    assert_eq!(iat, gw.clock.now().timestamp());
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - iat,
        3600,
        "1h default"
    );

    // The token verifies against the published key.
    let x = key["x"].as_str().expect("x");
    let decoding = jsonwebtoken::DecodingKey::from_ed_components(x).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["tollgate"]);
    validation.set_issuer(&["tollgate"]);
    jsonwebtoken::decode::<Value>(token, &decoding, &validation).expect("verifies");

    // Two logins give two different jtis.
    let other = gw.login(&acme.id, "owner", OWNER_PASSWORD).await;
    assert_ne!(jwt_parts(&other).1["jti"], claims["jti"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u7_expired_logged_out_and_pre_password_change_tokens_are_refused() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    let call = |c: Client| async move { c.get("/svc/storage/objects/a").await };

    // Expiry at token_ttl, by the gateway's clock.
    gw.clock.advance(
        Duration::from_std(gw.app.config.auth.token_ttl).expect("ttl") - Duration::seconds(1),
    );
    assert_eq!(call(acme.client.clone()).await.status, StatusCode::OK);
    gw.clock.advance(Duration::seconds(1));
    let r = call(acme.client.clone()).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidToken");

    // Logout ends exactly that token.
    let first = login_client(&gw, &acme.id, "owner", OWNER_PASSWORD).await;
    let second = login_client(&gw, &acme.id, "owner", OWNER_PASSWORD).await;
    let r = first.post_json("/auth/logout", json!({})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = call(first.clone()).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidToken");
    let r = first.post_json("/auth/logout", json!({})).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidToken");
    assert_eq!(call(second.clone()).await.status, StatusCode::OK);

    // A password change ends every earlier token, the changing one included.
    gw.clock.advance(Duration::seconds(2));
    let third = login_client(&gw, &acme.id, "owner", OWNER_PASSWORD).await;
    let r = change_password(
        &second,
        &acme.id,
        "owner",
        Some(OWNER_PASSWORD),
        "Changed-pass-3$",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    for client in [second, third] {
        let r = call(client).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidToken");
    }
    gw.clock.advance(Duration::milliseconds(10));
    let fresh = login_client(&gw, &acme.id, "owner", "Changed-pass-3$").await;
    assert_eq!(call(fresh).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u7_forged_and_malformed_tokens_get_401_never_500() {
    let (gw, upstream) = gateway().await;
    let acme = gw.account("acme").await;
    let token = acme.client.token().expect("token").to_owned();
    let (header, claims) = jwt_parts(&token);
    let mut segments = token.split('.');
    let (h64, p64, s64) = (
        segments.next().expect("h").to_owned(),
        segments.next().expect("p").to_owned(),
        segments.next().expect("s").to_owned(),
    );
    let kid = header["kid"].as_str().expect("kid").to_owned();
    let jwks = gw.client.get("/.well-known/jwks.json").await.json();
    let x = jwks["keys"][0]["x"].as_str().expect("x").to_owned();
    let public = URL_SAFE_NO_PAD.decode(&x).expect("x");

    let mut forged: Vec<(&str, String)> = Vec::new();
    // Tampered payload, original signature.
    let mut other = claims.clone();
    other["sub"] = json!("someone-else");
    forged.push(("tampered sub", format!("{h64}.{}.{s64}", b64(&other))));
    let mut other = claims.clone();
    other["mfa"] = json!(true);
    forged.push(("tampered mfa", format!("{h64}.{}.{s64}", b64(&other))));
    // alg: none, with and without a signature.
    let none = json!({"alg": "none", "typ": "JWT", "kid": kid});
    forged.push(("alg none", format!("{}.{p64}.", b64(&none))));
    forged.push(("alg none signed", format!("{}.{p64}.{s64}", b64(&none))));
    let none = json!({"alg": "EdDSA", "kid": kid, "crit": ["exp"]});
    forged.push(("crit", format!("{}.{p64}.{s64}", b64(&none))));
    // Algorithm confusion: HS256 keyed with the public key (raw bytes and the JWK's `x`).
    for secret in [public.clone(), x.clone().into_bytes()] {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(kid.clone());
        let t = jsonwebtoken::encode(
            &h,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .expect("hs256");
        forged.push(("HS256 with the public key", t));
    }
    // A key the gateway never had, under an unknown and under a known kid.
    let stranger = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&stranger).expect("der");
    let stranger = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
    for k in ["0123456789abcdef", kid.as_str()] {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = Some(k.to_owned());
        forged.push((
            "foreign key",
            jsonwebtoken::encode(&h, &claims, &stranger).expect("sign"),
        ));
    }
    // kid injection.
    for k in [
        "../../../etc/passwd",
        "x' OR '1'='1",
        "http://evil.example/jwks",
        "",
    ] {
        let h = json!({"alg": "EdDSA", "kid": k});
        forged.push(("kid injection", format!("{}.{p64}.{s64}", b64(&h))));
    }
    let h = json!({"alg": "EdDSA"});
    forged.push(("no kid", format!("{}.{p64}.{s64}", b64(&h))));
    // The gateway's own key, wrong claims.
    let now = gw.clock.now().timestamp();
    let mut wrong_claims: Vec<(&str, Value)> = Vec::new();
    for (what, key, value) in [
        ("wrong issuer", "iss", json!("someone-else")),
        ("wrong audience", "aud", json!("storage")),
        ("audience array", "aud", json!(["tollgate"])),
        ("expired", "exp", json!(now - 1)),
        ("identity scope", "scope", json!("identity")),
        ("unknown scope", "scope", json!("root")),
        ("bad account", "acct", json!("12")),
        ("bad user", "sub", json!("a/b")),
    ] {
        let mut c = claims.clone();
        c[key] = value;
        wrong_claims.push((what, c));
    }
    let mut future = claims.clone();
    future["iat"] = json!(now + 3600);
    future["iat_ms"] = json!((now + 3600) * 1000);
    future["exp"] = json!(now + 7200);
    wrong_claims.push(("not yet valid", future));
    let mut missing = claims.clone();
    missing.as_object_mut().expect("object").remove("exp");
    wrong_claims.push(("no exp", missing));
    for (what, c) in &wrong_claims {
        forged.push((what, sign_with_gateway_key(&gw, c)));
    }
    // Truncated and oversized.
    forged.push(("truncated signature", token[..token.len() - 5].to_owned()));
    forged.push(("truncated to two parts", format!("{h64}.{p64}")));
    forged.push(("header only", h64.clone()));
    forged.push(("garbage", "not-a-token".to_owned()));
    forged.push(("four parts", format!("{token}.x")));
    forged.push(("non-base64", format!("{h64}.{p64}.!!!")));
    forged.push(("huge", format!("{token}{}", "A".repeat(20 * 1024))));
    let mut huge_claims = claims.clone();
    huge_claims["pad"] = json!("p".repeat(20 * 1024));
    forged.push(("huge but signed", sign_with_gateway_key(&gw, &huge_claims)));

    let seen_before = upstream.count();
    for (what, forged_token) in &forged {
        for path in [
            "/svc/storage/objects/a",
            &format!("/accounts/{}/password-policy", acme.id),
        ] {
            let r = gw.client.with_token(forged_token).get(path).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text());
            assert_eq!(r.error_code(), "InvalidToken", "{what}");
        }
    }
    assert_eq!(
        upstream.count(),
        seen_before,
        "nothing forged reached the upstream"
    );
    // The untouched token still works, so the forgeries were refused for what they changed.
    assert_eq!(
        acme.client.get("/svc/storage/objects/a").await.status,
        StatusCode::OK
    );
    // And a token signed with our key and untouched claims works too (the helper is sound).
    let resigned = sign_with_gateway_key(&gw, &claims);
    assert_eq!(
        gw.client
            .with_token(&resigned)
            .get("/svc/storage/objects/a")
            .await
            .status,
        StatusCode::OK
    );
    // Authorization header shapes.
    for value in ["Basic abc", "Bearer", "Bearer ", "token"] {
        let r = gw
            .client
            .send(
                Method::GET,
                "/svc/storage/objects/a",
                &[("authorization", value)],
                Vec::new(),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{value}");
    }
    let r = gw.client.get("/svc/storage/objects/a").await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "MissingToken");
}

// === U8: access keys ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u8_access_keys_give_tokens_without_mfa_until_deleted() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    let keys = format!("/accounts/{}/users/owner/access-keys", acme.id);
    let r = acme.client.post_json(&keys, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let first_id = r.json()["access_key_id"].as_str().expect("id").to_owned();
    let first_secret = r.json()["secret"].as_str().expect("secret").to_owned();
    let r = acme.client.post_json(&keys, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let second_id = r.json()["access_key_id"].as_str().expect("id").to_owned();
    let r = acme.client.post_json(&keys, json!({})).await;
    assert_error(&r, StatusCode::CONFLICT, "AccessKeyLimitExceeded");

    // The list shows ids, never secrets.
    let r = acme.client.get(&keys).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let listed: Vec<String> = r.json()["access_keys"]
        .as_array()
        .expect("list")
        .iter()
        .map(|k| {
            assert!(k.get("secret").is_none(), "{k}");
            k["access_key_id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(listed, vec![first_id.clone(), second_id.clone()]);
    assert!(!r.text().contains(&first_secret));

    // A token for the key: mfa false, and it works.
    let r = gw
        .client
        .post_json(
            "/auth/token",
            json!({"access_key_id": first_id, "secret": first_secret}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["mfa"], false);
    assert_eq!(r.json()["user"], "owner");
    let token = r.json()["token"].as_str().expect("token").to_owned();
    assert_eq!(jwt_parts(&token).1["mfa"], false);
    let r = gw
        .client
        .with_token(&token)
        .get("/svc/storage/objects/a")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Wrong secrets and ids.
    let mut wrong = first_secret.clone();
    wrong.replace_range(0..1, if wrong.starts_with('A') { "B" } else { "A" });
    for (id, secret) in [
        (first_id.as_str(), wrong.as_str()),
        (first_id.as_str(), ""),
        ("TGAK0000000000000000", first_secret.as_str()),
        ("nonsense", first_secret.as_str()),
        (second_id.as_str(), first_secret.as_str()),
    ] {
        let r = gw
            .client
            .post_json(
                "/auth/token",
                json!({"access_key_id": id, "secret": secret}),
            )
            .await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidCredentials");
    }

    // Deleted: no more tokens from it; a new key fits again.
    let r = acme
        .client
        .send(
            Method::DELETE,
            &format!("{keys}/{first_id}"),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = gw
        .client
        .post_json(
            "/auth/token",
            json!({"access_key_id": first_id, "secret": first_secret}),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidCredentials");
    let r = acme
        .client
        .send(
            Method::DELETE,
            &format!("{keys}/{first_id}"),
            &[],
            Vec::new(),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "NoSuchAccessKey");
    let r = acme.client.post_json(&keys, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    // Another account cannot delete or list this user's keys.
    let other = gw.account("other").await;
    let r = other
        .client
        .send(
            Method::DELETE,
            &format!("{keys}/{second_id}"),
            &[],
            Vec::new(),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "AccessDenied");
    let r = other.client.get(&keys).await;
    assert_error(&r, StatusCode::FORBIDDEN, "AccessDenied");
}

// === U9: managing users ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u9_owners_manage_their_own_accounts_users() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    let r = create_user(&acme.client, &acme.id, "dev", DEV_PASSWORD).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["user"], "dev");
    assert_eq!(r.json()["account_id"], acme.id.as_str());
    let r = create_user(&acme.client, &acme.id, "bad name!", DEV_PASSWORD).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "InvalidInput");
    let r = create_user(&acme.client, &acme.id, "weak", "weak").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "PasswordPolicyViolation");

    // A new user may do nothing until the account's policies say so.
    let dev = login_client(&gw, &acme.id, "dev", DEV_PASSWORD).await;
    let r = dev.get("/svc/storage/objects/a").await;
    assert_error(&r, StatusCode::FORBIDDEN, "AccessDenied");
    assert_eq!(r.json()["error"]["denied_by"], "account");
    let r = create_user(&dev, &acme.id, "dev2", DEV_PASSWORD).await;
    assert_error(&r, StatusCode::FORBIDDEN, "AccessDenied");
    let r = change_password(&dev, &acme.id, "owner", None, "Taken-over-1!").await;
    assert_error(&r, StatusCode::FORBIDDEN, "AccessDenied");
    let r = change_password(
        &dev,
        &acme.id,
        "owner",
        Some(OWNER_PASSWORD),
        "Taken-over-1!",
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "AccessDenied");
    let r = dev
        .post_json(
            &format!("/accounts/{}/users/owner/access-keys", acme.id),
            json!({}),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "AccessDenied");

    // A user changes its own password only with the right old one.
    // Without one, the same 403 as a wrong one (issue 22: the document cannot say "required
    // when the path names yourself", so a missing `old_password` is no malformed request).
    let r = change_password(&dev, &acme.id, "dev", None, "Dev-new-pass-3!").await;
    assert_error(&r, StatusCode::FORBIDDEN, "InvalidCredentials");
    assert!(message(&r).contains("old_password"), "{}", r.text());
    let r = change_password(
        &dev,
        &acme.id,
        "dev",
        Some("Not-the-pass-1!"),
        "Dev-new-pass-3!",
    )
    .await;
    assert_eq!(r.status.as_u16() / 100, 4, "{}", r.text());
    assert_eq!(r.error_code(), "InvalidCredentials");
    let r = change_password(&dev, &acme.id, "DEV", Some(DEV_PASSWORD), "Dev-new-pass-3!").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    gw.clock.advance(Duration::seconds(1));
    assert_eq!(
        login(&gw, &acme.id, "dev", DEV_PASSWORD, None).await.status,
        StatusCode::UNAUTHORIZED
    );

    // The owner resets it without the old one.
    let r = change_password(&acme.client, &acme.id, "dev", None, "Owner-set-pass-4!").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    gw.clock.advance(Duration::seconds(1));
    assert_eq!(
        login(&gw, &acme.id, "dev", "Dev-new-pass-3!", None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&gw, &acme.id, "dev", "Owner-set-pass-4!", None)
            .await
            .status,
        StatusCode::OK
    );
    // Names with `@` or `+` work percent-encoded in the path, as clients send them.
    let r = create_user(&acme.client, &acme.id, "ops+1@acme", DEV_PASSWORD).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = change_password(
        &acme.client,
        &acme.id,
        "ops%2B1%40acme",
        None,
        "Encoded-pass-5!",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(
        login(&gw, &acme.id, "ops+1@acme", "Encoded-pass-5!", None)
            .await
            .status,
        StatusCode::OK
    );
    let r = change_password(
        &acme.client,
        &acme.id,
        &"n".repeat(5000),
        None,
        "Owner-set-pass-4!",
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "NoSuchUser");
    assert!(r.text().len() < 1000, "the path is not echoed whole");
    let r = change_password(&acme.client, &acme.id, "nobody", None, "Owner-set-pass-4!").await;
    assert_error(&r, StatusCode::NOT_FOUND, "NoSuchUser");

    // Nobody manages another account's users, owner or not.
    let other = gw.account("other").await;
    for r in [
        create_user(&other.client, &acme.id, "spy", DEV_PASSWORD).await,
        change_password(&other.client, &acme.id, "dev", None, "Hijack-pass-1!").await,
        other
            .client
            .post_json(&format!("/accounts/{}/users/dev/mfa", acme.id), json!({}))
            .await,
        other
            .client
            .get(&format!("/accounts/{}/users/dev/access-keys", acme.id))
            .await,
        other
            .client
            .get(&format!("/accounts/{}/users/nobody/access-keys", acme.id))
            .await,
    ] {
        assert_error(&r, StatusCode::FORBIDDEN, "AccessDenied");
    }
    assert_eq!(
        login(&gw, &acme.id, "dev", "Owner-set-pass-4!", None)
            .await
            .status,
        StatusCode::OK
    );
}

/// Issue 22 item 1 (STYLE 17, D1): Cedar decides on the user as named before anyone looks it
/// up. A user without IAM rights gets the same logged 403 for a colleague who exists and a name
/// nobody holds, on every call that names a user; only a caller Cedar allows learns which exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue22_a_caller_without_rights_learns_nothing_about_which_users_exist() {
    let upstream = Upstream::start().await;
    // Sixteen refusals in a row: the deny throttle (its own tests) stays out of the way.
    let gw = TestGateway::builder(&upstream.url())
        .tweak(|c| c.audit.deny_rate = 0)
        .start()
        .await;
    let acme = gw.account("acme").await;
    for user in ["dev", "colleague"] {
        let r = create_user(&acme.client, &acme.id, user, DEV_PASSWORD).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }
    let r = acme
        .client
        .post_json(
            &format!("/accounts/{}/groups", acme.id),
            json!({"group": "ops"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let dev = login_client(&gw, &acme.id, "dev", DEV_PASSWORD).await;
    let calls = |user: &str| {
        let base = format!("/accounts/{}/users/{user}", acme.id);
        let groups = format!("/accounts/{}/groups/ops/members/{user}", acme.id);
        vec![
            (
                Method::PUT,
                format!("{base}/password"),
                r#"{"new_password":"Hijack-pass-1!"}"#,
            ),
            (Method::POST, format!("{base}/mfa"), ""),
            (
                Method::POST,
                format!("{base}/mfa/verify"),
                r#"{"code":"123456"}"#,
            ),
            (Method::POST, format!("{base}/access-keys"), ""),
            (Method::GET, format!("{base}/access-keys"), ""),
            (
                Method::DELETE,
                format!("{base}/access-keys/TGAKAAAAAAAAAAAAAAAA"),
                "",
            ),
            (Method::PUT, groups.clone(), ""),
            (Method::DELETE, groups, ""),
        ]
    };
    let headers = [("content-type", "application/json")];
    let mut refused = Vec::new();
    for (existing, missing) in calls("colleague").into_iter().zip(calls("nobody-here")) {
        let mut answers = Vec::new();
        for (method, path, body) in [existing, missing] {
            let r = dev.send(method.clone(), &path, &headers, body).await;
            assert_error(&r, StatusCode::FORBIDDEN, "AccessDenied");
            let request_id = r.header("x-request-id").expect("a request id").to_owned();
            refused.push((format!("{method} {path}"), request_id));
            answers.push((r.status, r.json()["error"]["code"].clone(), message(&r)));
        }
        assert_eq!(
            answers[0],
            answers[1],
            "{} answers alike for both names",
            refused.last().unwrap().0
        );
    }

    // Each refusal is in the decision log, as a Deny of the caller (D1).
    let log = acme
        .client
        .get("/decisions?user=dev&decision=Deny&limit=1000")
        .await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.text());
    let log = log.json();
    for (call, request_id) in &refused {
        let found = log["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["request_id"] == request_id.as_str() && d["decision"] == "Deny");
        assert!(
            found,
            "{call} ({request_id}) is not logged as a Deny: {log}"
        );
    }

    // The owner, whom Cedar allows, is told which users exist.
    let r = change_password(
        &acme.client,
        &acme.id,
        "nobody-here",
        None,
        "Owner-set-pass-4!",
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "NoSuchUser");
    let r = acme
        .client
        .get(&format!(
            "/accounts/{}/users/colleague/access-keys",
            acme.id
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

// === F2: the identity the upstream sees ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_the_upstream_gets_a_verifiable_identity_token() {
    let (gw, upstream) = gateway().await;
    let acme = gw.account("acme").await;
    let r = acme
        .client
        .send(
            Method::GET,
            "/svc/storage/objects/a",
            &[
                ("x-tollgate-user", "mallory"),
                ("x-tollgate-account", "111111111111"),
                ("x-tollgate-identity", "forged"),
            ],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = upstream.last();
    let header = |name: &str| {
        let values: Vec<_> = seen.headers.get_all(name).iter().collect();
        assert_eq!(values.len(), 1, "exactly one {name}");
        values[0].to_str().expect("ascii").to_owned()
    };
    assert_eq!(header("x-tollgate-account"), acme.id);
    assert_eq!(header("x-tollgate-user"), "owner");
    let identity = header("x-tollgate-identity");
    let (jwt_header, _) = jwt_parts(&identity);
    assert_eq!(jwt_header["alg"], "EdDSA");

    // Verify it the way an upstream would: the JWKS, EdDSA only, audience = the service.
    let jwks = gw.client.get("/.well-known/jwks.json").await.json();
    let key = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == jwt_header["kid"])
        .expect("the identity token's kid is published")
        .clone();
    let decoding =
        jsonwebtoken::DecodingKey::from_ed_components(key["x"].as_str().expect("x")).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["storage"]);
    validation.set_issuer(&["tollgate"]);
    let claims = jsonwebtoken::decode::<Value>(&identity, &decoding, &validation)
        .expect("the identity token verifies")
        .claims;
    assert_eq!(claims["sub"], "owner");
    assert_eq!(claims["acct"], acme.id.as_str());
    assert_eq!(claims["mfa"], false);
    assert_eq!(
        claims["rid"].as_str(),
        r.header("x-request-id"),
        "names the request"
    );
    assert!(claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat") <= 300);
    // For another service's audience it does not verify.
    validation.set_audience(&["support"]);
    assert!(jsonwebtoken::decode::<Value>(&identity, &decoding, &validation).is_err());
    // And the gateway itself refuses it as a bearer token.
    let r = gw
        .client
        .with_token(&identity)
        .get("/svc/storage/objects/a")
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidToken");
}

/// A token for a new access key of `user`, minted with `POST /auth/token`; returns the key id
/// and the token.
async fn access_key_token(
    gw: &TestGateway,
    owner: &Client,
    account: &str,
    user: &str,
) -> (String, String) {
    let r = owner
        .post_json(
            &format!("/accounts/{account}/users/{user}/access-keys"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let key_id = r.json()["access_key_id"].as_str().expect("id").to_owned();
    let r = gw
        .client
        .post_json(
            "/auth/token",
            json!({"access_key_id": key_id, "secret": r.json()["secret"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["mfa"], false);
    (
        key_id,
        r.json()["token"].as_str().expect("token").to_owned(),
    )
}

/// Issue 16 item 6: a management-account user's access-key token (`mfa=false`) calls services,
/// and every JSON API call with it is 403 `MfaRequired`; other accounts' key tokens keep the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u6_a_management_users_access_key_token_calls_services_but_no_api() {
    let (gw, _up) = gateway().await;
    let payer = gw.account("payer").await;
    let other = gw.account("other").await;
    let secret = enroll_mfa(&gw, &payer.client, &payer.id, "owner").await;
    make_management(&gw, &payer.id).await;
    gw.clock.advance(Duration::seconds(30));
    let r = login(
        &gw,
        &payer.id,
        "owner",
        OWNER_PASSWORD,
        Some(&code_at(&gw, &secret, 0)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let owner = gw
        .client
        .with_token(r.json()["token"].as_str().expect("token"));
    let (_, token) = access_key_token(&gw, &owner, &payer.id, "owner").await;
    let program = gw.client.with_token(&token);

    let r = program.get("/svc/storage/objects/a").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "services are allowed: {}",
        r.text()
    );
    let org_before = owner.get("/org").await.json();
    let new_member = json!({"name": "m", "email": "m@example.com", "owner_user": "owner", "owner_password": OWNER_PASSWORD});
    for r in [
        program.post_json("/org/accounts", new_member.clone()).await,
        program
            .post_json("/org/invitations", json!({"account_id": other.id}))
            .await,
        program.get("/decisions").await,
        program.get("/org").await,
        program.get("/policies").await,
        program
            .get(&format!("/accounts/{}/users/owner/access-keys", payer.id))
            .await,
        program
            .post_json(
                &format!("/accounts/{}/users/owner/access-keys", payer.id),
                json!({}),
            )
            .await,
        create_user(&program, &payer.id, "eve", DEV_PASSWORD).await,
    ] {
        assert_error(&r, StatusCode::FORBIDDEN, "MfaRequired");
    }
    // The same user with MFA keeps the API, and nothing was created by the refused calls.
    let r = owner.get("/org").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["members"], org_before["members"]);
    assert_eq!(r.json()["handshakes"], org_before["handshakes"]);
    assert_eq!(
        owner.post_json("/org/accounts", new_member).await.status,
        StatusCode::CREATED
    );

    // A standalone account's access-key token is not a management user's: the API stays open.
    let (_, token) = access_key_token(&gw, &other.client, &other.id, "owner").await;
    let r = gw.client.with_token(&token).get("/decisions").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Giving the token up is allowed: logout only takes away.
    let r = program.post_json("/auth/logout", json!({})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = program.get("/svc/storage/objects/a").await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "InvalidToken");
}

/// Issue 16 item 10: deleting an access key ends every token minted from it at once, with the
/// verified-token cache and the caller cache warm; a token from the user's other key, and the
/// owner's session, go on. The dead token cannot make a new key either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u8_deleting_an_access_key_ends_its_tokens_at_once() {
    let (gw, _up) = gateway().await;
    let acme = gw.account("acme").await;
    let (key_id, token) = access_key_token(&gw, &acme.client, &acme.id, "owner").await;
    let (_, other_token) = access_key_token(&gw, &acme.client, &acme.id, "owner").await;
    let (program, other) = (
        gw.client.with_token(&token),
        gw.client.with_token(&other_token),
    );
    let claims = jwt_parts(&token).1;
    assert_eq!(claims["akid"], key_id.as_str(), "the token names its key");
    for _ in 0..3 {
        assert_eq!(
            program.get("/svc/storage/objects/a").await.status,
            StatusCode::OK
        );
        assert_eq!(
            other.get("/svc/storage/objects/a").await.status,
            StatusCode::OK
        );
    }
    let keys = format!("/accounts/{}/users/owner/access-keys", acme.id);
    assert_eq!(program.get(&keys).await.status, StatusCode::OK);

    let r = acme
        .client
        .send(Method::DELETE, &format!("{keys}/{key_id}"), &[], Vec::new())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_error(
        &program.get("/svc/storage/objects/a").await,
        StatusCode::UNAUTHORIZED,
        "InvalidToken",
    );
    assert_error(
        &program.post_json(&keys, json!({})).await,
        StatusCode::UNAUTHORIZED,
        "InvalidToken",
    );
    assert_eq!(
        other.get("/svc/storage/objects/a").await.status,
        StatusCode::OK
    );
    assert_eq!(
        acme.client.get("/svc/storage/objects/a").await.status,
        StatusCode::OK
    );
}

/// Issue 16 item 15: TOTP secrets are sealed at rest (AES-GCM, key beside the signing keys,
/// 0600), a secret stored in plain text by an older version is sealed at the next start, and
/// logins with codes work throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u5_totp_secrets_are_sealed_at_rest_and_old_plain_rows_are_sealed_at_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let start = || {
        TestGateway::builder(&upstream.url())
            .data_dir(data.clone())
            .start()
    };
    let mut gw = start().await;
    let acme = gw.account("acme").await;
    let secret = enroll_mfa(&gw, &acme.client, &acme.id, "owner").await;
    let db = crate::support::backend::TestDb(gw.database());
    let stored = |db: &crate::support::backend::TestDb| -> String {
        db.query_row(
            "SELECT mfa_secret FROM users WHERE account_id = ?1 AND name_key = 'owner'",
            params![acme.id.as_str()],
            |r| r.get(0),
        )
        .expect("mfa_secret")
    };
    let at_rest = stored(&db);
    assert!(at_rest.starts_with("v1:"), "{at_rest}");
    assert!(
        !at_rest.contains(&secret),
        "the secret is stored in plain text"
    );
    let key = gw.data_dir.join("keys/mfa-secrets.key");
    let mode = std::fs::metadata(&key)
        .expect("key file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    gw.clock.advance(Duration::seconds(30));
    let r = login(
        &gw,
        &acme.id,
        "owner",
        OWNER_PASSWORD,
        Some(&code_at(&gw, &secret, 0)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // A row as an older version stored it: plain text. The next start seals it.
    db.execute(
        "UPDATE users SET mfa_secret = ?2 WHERE account_id = ?1 AND name_key = 'owner'",
        params![acme.id.as_str(), secret.as_str()],
    )
    .expect("plain row");
    gw.shutdown().await;
    let clock = gw.clock.now();
    drop(gw);
    let gw = start().await;
    gw.clock.set(clock + Duration::seconds(60));
    let db = crate::support::backend::TestDb(gw.database());
    let resealed = stored(&db);
    assert!(resealed.starts_with("v1:"), "{resealed}");
    assert!(!resealed.contains(&secret));
    let r = login(
        &gw,
        &acme.id,
        "owner",
        OWNER_PASSWORD,
        Some(&code_at(&gw, &secret, 0)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // A wrong code is still refused.
    gw.clock.advance(Duration::seconds(30));
    let r = login(&gw, &acme.id, "owner", OWNER_PASSWORD, Some("000000")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
}
