//! Owners with MFA: enrollment through the API with codes computed in-process, and logins with
//! `mfa_code`. A management account's users need MFA for anything but enrolling (U6), and
//! creating an organization needs an MFA session (A2).
//!
//! Each code is taken at `gw.clock.now()` after moving the clock 30 s, so no TOTP step is ever
//! offered twice for one user (U5 refuses a reused step).

use std::ops::Deref;

use chrono::{DateTime, Utc};
use http::StatusCode;
use tollgate::auth::{TotpSecret, totp};
use tollgate::clock::Clock;

use super::gateway::{Account, TestGateway};

/// An account whose owner has MFA on, logged in with an MFA code.
#[derive(Clone)]
pub struct MfaAccount {
    pub account: Account,
    /// The owner's TOTP secret, Base32.
    pub secret: String,
}

impl Deref for MfaAccount {
    type Target = Account;

    fn deref(&self) -> &Account {
        &self.account
    }
}

/// The 6-digit code for `secret` (Base32) at `now`, checked against the gateway's own
/// verifier so the helper and the gateway cannot drift apart.
pub fn totp_code(secret: &str, now: DateTime<Utc>) -> String {
    let bytes = totp_rs::Secret::Encoded(secret.to_owned())
        .to_bytes()
        .expect("base32 secret");
    let generator = totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        totp::DIGITS,
        0,
        totp::STEP_SECONDS,
        bytes,
        None,
        String::new(),
    )
    .expect("totp");
    let code = generator.generate(u64::try_from(now.timestamp()).expect("after 1970"));
    let parsed = TotpSecret::from_base32(secret).expect("secret the gateway accepts");
    assert!(
        totp::verify(&parsed, &code, now, None).is_ok(),
        "the helper's code is one the gateway accepts"
    );
    code
}

impl TestGateway {
    /// Signs up an account and turns MFA on for its owner; the returned client sends a token
    /// from a login with an MFA code (`mfa: true`).
    pub async fn mfa_owner(&self, name: &str) -> MfaAccount {
        let account = self.account(name).await;
        self.enroll_mfa(account).await
    }

    /// Turns MFA on for `account`'s owner (`POST .../mfa`, `.../mfa/verify`) and logs in again
    /// with a code.
    pub async fn enroll_mfa(&self, account: Account) -> MfaAccount {
        let base = format!("/accounts/{}/users/{}/mfa", account.id, account.owner);
        let r = account.client.post_json(&base, serde_json::json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "mfa enroll: {}", r.text());
        let secret = r.json()["secret"].as_str().expect("secret").to_owned();
        let code = totp_code(&secret, self.clock.now());
        let r = account
            .client
            .post_json(&format!("{base}/verify"), serde_json::json!({"code": code}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "mfa verify: {}", r.text());
        self.mfa_login(&MfaAccount { account, secret }).await
    }

    /// A fresh MFA session for the account's owner, 30 s later on the gateway's clock.
    pub async fn mfa_login(&self, account: &MfaAccount) -> MfaAccount {
        self.clock.advance(chrono::Duration::seconds(30));
        let code = totp_code(&account.secret, self.clock.now());
        let r = self
            .client
            .post_json(
                "/auth/login",
                serde_json::json!({
                    "account_id": account.id,
                    "user": account.owner,
                    "password": account.password,
                    "mfa_code": code,
                }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "mfa login: {}", r.text());
        assert_eq!(r.json()["mfa"], true, "{}", r.text());
        let token = r.json()["token"].as_str().expect("token").to_owned();
        MfaAccount {
            account: Account {
                client: self.client.with_token(&token),
                ..account.account.clone()
            },
            secret: account.secret.clone(),
        }
    }

    /// A fresh password-only session for the account's owner (e.g. after moving the clock
    /// past the token lifetime), on this gateway.
    pub async fn relogin(&self, account: &Account) -> Account {
        let token = self
            .login(&account.id, &account.owner, &account.password)
            .await;
        Account {
            client: self.client.with_token(&token),
            ..account.clone()
        }
    }
}

/// The 6-digit TOTP code for a Base32 `secret` at `unix` seconds, as `oathtool --totp` makes it.
/// Fails the test with an install hint when oathtool is missing.
pub fn oathtool_code(secret: &str, unix: i64) -> String {
    let output = std::process::Command::new("oathtool")
        .args(["--totp", "-b", secret, "-N", &format!("@{unix}")])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `oathtool` ({e}): install it (Debian/Ubuntu: apt-get install oathtool)"
            )
        });
    assert!(
        output.status.success(),
        "oathtool failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let code = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "unexpected oathtool output `{code}`"
    );
    code
}
