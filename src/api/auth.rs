//! Login and tokens (SPEC U4–U8): `POST /auth/login`, `POST /auth/token` (access keys),
//! `POST /auth/logout`, and the public keys at `GET /.well-known/jwks.json`.
//!
//! Login answers the same 401 `InvalidCredentials` for an unknown account, an unknown user and a
//! wrong password, and spends one Argon2 verification in each case, so neither the answer nor
//! its timing tells them apart.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::api::{self, ApiRequest};
use crate::app::App;
use crate::auth::{AccessKeyId, IssuedToken, LoginAttempts, Secret, TotpSecret, access_key, totp};
use crate::body::Body;
use crate::ids::{AccountId, UserName};
use crate::server::authn::{self, Allow};
use crate::server::rejection::Rejection;
use crate::store::accounts::{AccountStore, MfaState, UserRecord};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    account_id: String,
    user: String,
    password: String,
    #[serde(default)]
    mfa_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessKeyRequest {
    access_key_id: String,
    secret: String,
}

#[derive(Serialize)]
struct TokenResponse {
    token: String,
    expires_at: String,
    account_id: String,
    user: String,
    mfa: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    password_expired: bool,
}

#[derive(Serialize)]
struct EnrollmentRequired<'a> {
    error: ErrorObject<'a>,
    request_id: &'a str,
    enrollment_token: String,
    expires_at: String,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: &'a str,
    message: &'a str,
}

pub fn jwks(app: &Arc<App>) -> Result<Response<Body>, Rejection> {
    api::json(StatusCode::OK, &app.tokens.keys().jwks(app.clock.now()))
}

/// `POST /auth/login` (U4, U5, U6).
pub async fn login(app: &Arc<App>, req: ApiRequest) -> Result<Response<Body>, Rejection> {
    let request_id = req.request_id.clone();
    let body: LoginRequest = req.json(app).await?;
    let password = Secret::new(body.password);
    let now = app.clock.now();

    let ids = AccountId::parse(&body.account_id)
        .ok()
        .zip(UserName::parse(&body.user).ok());
    let user = match &ids {
        Some((account, user)) => app.store.user(account, user).await?,
        None => None,
    };
    let Some(user) = user else {
        // Unknown account or user: the same work and the same answer as a wrong password.
        app.hasher.verify(&password, None).await;
        app.metrics.login_failures.inc();
        return Err(invalid_credentials());
    };
    if user.attempts.is_locked(now) {
        return Err(locked(user.attempts, now));
    }
    if !app
        .hasher
        .verify(&password, Some(&user.password_hash))
        .await
    {
        return Err(failed_attempt(app, &user, now).await?);
    }
    // Failures racing this login may have locked the user while the password was checked:
    // look again, so a burst of parallel guesses gets no more answers than a lock allows.
    let fresh = app
        .store
        .user(&user.account_id, &user.name)
        .await?
        .ok_or_else(invalid_credentials)?;
    if fresh.attempts.is_locked(now) {
        return Err(locked(fresh.attempts, now));
    }
    let user = fresh;

    let mfa = match &user.mfa {
        MfaState::On { secret, last_step } => {
            let Some(code) = body.mfa_code.as_deref() else {
                return Err(Rejection::new(
                    StatusCode::UNAUTHORIZED,
                    "MfaRequired",
                    "this user has MFA on: send `mfa_code` with the current code from the authenticator",
                ));
            };
            let secret = TotpSecret::from_base32(secret).map_err(|e| Rejection::internal(&e))?;
            let accepted = match totp::verify(&secret, code, now, *last_step) {
                Ok(step) => {
                    app.store
                        .accept_mfa_step(&user.account_id, &user.name, step)
                        .await?
                }
                Err(_) => false,
            };
            if !accepted {
                let rejection = failed_attempt(app, &user, now).await?;
                if rejection.code == "UserLocked" {
                    return Err(rejection);
                }
                return Err(invalid_mfa_code());
            }
            true
        }
        MfaState::Off | MfaState::Pending { .. } => false,
    };
    // Clears the count, unless a racing failure locked the user in the meantime.
    let attempts = app
        .store
        .record_login_success(&user.account_id, &user.name, now)
        .await?;
    if attempts.is_locked(now) {
        return Err(locked(attempts, now));
    }

    let organization = app.store.organization_of(&user.account_id).await?;
    let is_management = organization.is_some_and(|o| o.management_account == user.account_id);
    if is_management && !mfa {
        let issued = app
            .tokens
            .issue_mfa_enrollment(&user.account_id, &user.name, now)?;
        let message = "users of a management account must use MFA: enroll with this token (good for 10 minutes and nothing else) at POST /accounts/{id}/users/{user}/mfa and .../mfa/verify, then log in with `mfa_code`";
        let body = EnrollmentRequired {
            error: ErrorObject {
                code: "MfaEnrollmentRequired",
                message,
            },
            request_id: request_id.as_str(),
            enrollment_token: issued.token.expose().to_owned(),
            expires_at: rfc3339(issued.expires_at),
        };
        return api::json(StatusCode::FORBIDDEN, &body);
    }

    let password_expired = password_expired(app, &user, is_management, now).await?;
    let issued = app.tokens.issue(&user.account_id, &user.name, mfa, now)?;
    token_response(&user, issued, mfa, password_expired)
}

/// `POST /auth/token` (U8): a token for an access key, with `mfa = false`.
pub async fn token(app: &Arc<App>, req: ApiRequest) -> Result<Response<Body>, Rejection> {
    let body: AccessKeyRequest = req.json(app).await?;
    let secret = Secret::new(body.secret);
    let now = app.clock.now();
    let record = match AccessKeyId::parse(&body.access_key_id) {
        Ok(id) => app.store.access_key(&id).await?,
        Err(_) => None,
    };
    let valid = record
        .as_ref()
        .is_some_and(|key| access_key::verify_secret(&secret, &key.secret_hash));
    let Some(key) = record.filter(|_| valid) else {
        app.metrics.login_failures.inc();
        return Err(Rejection::new(
            StatusCode::UNAUTHORIZED,
            "InvalidCredentials",
            "the access key id or secret is wrong, or the key was deleted",
        ));
    };
    let user = app
        .store
        .user(&key.account_id, &key.user)
        .await?
        .ok_or_else(invalid_credentials)?;
    let organization = app.store.organization_of(&user.account_id).await?;
    let is_management = organization.is_some_and(|o| o.management_account == user.account_id);
    if is_management && !matches!(user.mfa, MfaState::On { .. }) {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "MfaEnrollmentRequired",
            "users of a management account must enroll MFA before their access keys give tokens",
        ));
    }
    let password_expired = password_expired(app, &user, is_management, now).await?;
    let issued = app
        .tokens
        .issue_for_access_key(&user.account_id, &user.name, &key.id, now)?;
    token_response(&user, issued, false, password_expired)
}

/// `POST /auth/logout` (U7): the token is refused from now on.
pub async fn logout(app: &Arc<App>, req: ApiRequest) -> Result<Response<Body>, Rejection> {
    let allow = Allow {
        enrollment_token: true,
        expired_password: true,
        management_without_mfa: true,
    };
    let caller = authn::authenticate(app, &req.headers, req.peer, allow).await?;
    let token = authn::bearer(&req.headers).map(str::to_owned).ok();
    req.discard_body(app).await?;
    app.store
        .revoke_token(
            &caller.claims.jti,
            caller.claims.expires_at,
            app.clock.now(),
        )
        .await?;
    if let Some(token) = token {
        app.tokens.forget(&token);
    }
    Ok(api::no_content())
}

async fn password_expired(
    app: &App,
    user: &UserRecord,
    is_management: bool,
    now: DateTime<Utc>,
) -> Result<bool, Rejection> {
    let policy = app.store.password_policy(&user.account_id).await?;
    let policy = policy
        .and_then(|p| crate::auth::PasswordPolicy::new(p).ok())
        .unwrap_or_default()
        .effective(is_management);
    Ok(policy.is_expired(user.password_changed_at, now))
}

/// Counts a failed attempt; the fifth in a row locks the user. Counted in the store against
/// the state at that moment, so concurrent failures all count. The answer is 401
/// `InvalidCredentials`, or 429 `UserLocked` once the user is locked.
pub(crate) async fn failed_attempt(
    app: &App,
    user: &UserRecord,
    now: DateTime<Utc>,
) -> Result<Rejection, Rejection> {
    app.metrics.login_failures.inc();
    let recorded = app
        .store
        .record_login_failure(&user.account_id, &user.name, now)
        .await?;
    if recorded.locked_the_user(now) {
        app.metrics.lockouts.inc();
        tracing::warn!(account = %user.account_id, user = %user.name, "user locked after repeated login failures");
    }
    if recorded.after.is_locked(now) {
        return Ok(locked(recorded.after, now));
    }
    Ok(invalid_credentials())
}

fn token_response(
    user: &UserRecord,
    issued: IssuedToken,
    mfa: bool,
    password_expired: bool,
) -> Result<Response<Body>, Rejection> {
    api::json(
        StatusCode::OK,
        &TokenResponse {
            token: issued.token.expose().to_owned(),
            expires_at: rfc3339(issued.expires_at),
            account_id: user.account_id.to_string(),
            user: user.name.to_string(),
            mfa,
            password_expired,
        },
    )
}

fn invalid_credentials() -> Rejection {
    Rejection::new(
        StatusCode::UNAUTHORIZED,
        "InvalidCredentials",
        "the account id, user name or password is wrong",
    )
}

fn invalid_mfa_code() -> Rejection {
    Rejection::new(
        StatusCode::UNAUTHORIZED,
        "InvalidMfaCode",
        "the MFA code is wrong or was already used; wait for the next code and try again",
    )
}

pub(crate) fn locked(attempts: LoginAttempts, now: DateTime<Utc>) -> Rejection {
    let until = attempts.locked_until.unwrap_or(now);
    let mut rejection = Rejection::new(
        StatusCode::TOO_MANY_REQUESTS,
        "UserLocked",
        format!(
            "too many failed logins: the user is locked until {}; try again then",
            rfc3339(until)
        ),
    );
    rejection.retry_after_secs = Some((until - now).num_seconds().max(1) as u64);
    rejection
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}
