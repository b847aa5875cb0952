//! Login and tokens (SPEC U4–U8): `POST /auth/login`, `POST /auth/token` (access keys),
//! `POST /auth/logout`, and the public keys at `GET /.well-known/jwks.json`.
//!
//! Login answers the same 401 `InvalidCredentials` for an unknown account, an unknown user and a
//! wrong password, and spends one Argon2 verification in each case, so neither the answer nor
//! its timing tells them apart. Failures are counted per (user as sent, client address) in the
//! store, for unknown users too (`auth::lockout`); a locked answer skips the verification and
//! waits instead, as long as a verification takes now, so it costs the same time as any other
//! without filling the password queue.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::api::{self, ApiRequest};
use crate::app::App;
use crate::auth::{
    AccessKeyId, ClientAddress, IssuedToken, Lock, LoginAttempts, LoginSubject, Requester, Secret,
    TotpSecret, access_key, totp,
};
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
    let started = tokio::time::Instant::now();
    let request_id = req.request_id.clone();
    let ip = req.client_ip(app);
    let address = ClientAddress::new(ip);
    let body: LoginRequest = req.json(app).await?;
    // A full password queue refuses before any store work: a flood's refused logins are cheap.
    app.hasher.check_room(Requester::login(ip))?;
    let password = Secret::new(body.password);
    let now = app.clock.now();
    let subject = LoginSubject::new(&body.account_id, &body.user);

    let ids = AccountId::parse(&body.account_id)
        .ok()
        .zip(UserName::parse(&body.user).ok());
    let user = match &ids {
        Some((account, user)) => app.store.user(account, user).await?,
        None => None,
    };
    let attempts = app.store.login_attempts(&subject, address, now).await?;
    if attempts.is_locked(now) {
        // As long as a password check would have taken: by waiting, not hashing (U4).
        tokio::time::sleep_until(started + app.hasher.typical_login_check()).await;
        return Err(locked(attempts, now));
    }
    // Unknown account or user: the same work (a dummy hash) and the same answer.
    let matched = app
        .hasher
        .verify(
            &password,
            user.as_ref().map(|u| &u.password_hash),
            Requester::login(ip),
        )
        .await?;
    let Some(user) = user.filter(|_| matched) else {
        return Err(failed_attempt(app, &subject, address, now).await?);
    };
    // Failures racing this login may have locked it while the password was checked: look
    // again, so a burst of parallel guesses gets no more answers than a lock allows.
    let fresh = app.store.login_attempts(&subject, address, now).await?;
    if fresh.is_locked(now) {
        return Err(locked(fresh, now));
    }

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
                let rejection = failed_attempt(app, &subject, address, now).await?;
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
        .record_login_success(&subject, address, now)
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

/// Counts a failed attempt of `subject` from `address` (U4): the fifth in a row from one
/// address locks that address out, the fiftieth within 15 minutes from anywhere locks the user.
/// Counted in the store against the state at that moment, so concurrent failures all count.
/// The answer is 401 `InvalidCredentials`, or 429 `UserLocked` once locked.
pub(crate) async fn failed_attempt(
    app: &App,
    subject: &LoginSubject,
    address: ClientAddress,
    now: DateTime<Utc>,
) -> Result<Rejection, Rejection> {
    app.metrics.login_failures.inc();
    let recorded = app
        .store
        .record_login_failure(subject, address, now)
        .await?;
    if recorded.engaged_a_lock(now) {
        app.metrics.lockouts.inc();
        match recorded.after.lock(now) {
            Some(Lock::User { .. }) => tracing::warn!(
                %address,
                "a user (or a name that is no user) is locked for every address after repeated login failures"
            ),
            _ => tracing::warn!(
                %address,
                "an address is locked out of a user (or a name that is no user) after repeated login failures"
            ),
        }
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
    let lock = attempts.lock(now);
    let until = lock.map_or(now, |l| l.until());
    let message = match lock {
        Some(Lock::User { .. }) => format!(
            "too many failed logins for this user: it is locked until {}; try again then",
            rfc3339(until)
        ),
        _ => format!(
            "too many failed logins for this user from your address: locked until {}; try again then",
            rfc3339(until)
        ),
    };
    let mut rejection = Rejection::new(StatusCode::TOO_MANY_REQUESTS, "UserLocked", message);
    rejection.retry_after_secs = Some((until - now).num_seconds().max(1) as u64);
    rejection
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}
