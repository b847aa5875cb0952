//! Accounts and their users (SPEC A1, U2, U5, U8, U9): signup, password policies, users,
//! passwords, MFA enrollment and access keys. Everything but signup is decided by Cedar, and
//! only ever inside the caller's own account: a path naming another account is refused before
//! any policy is consulted, so no policy can reach into another account.

use std::sync::Arc;

use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::api::auth::rfc3339;
use crate::api::own_account;
use crate::api::{self, ApiRequest};
use crate::app::App;
use crate::auth::access_key::MAX_ACCESS_KEYS_PER_USER;
use crate::auth::{
    AccessKeyId, ClientAddress, LoginSubject, PasswordPolicy, PasswordPolicyParams,
    PasswordPolicyRequest, Requester, Secret, TotpSecret, access_key, totp,
};
use crate::authz::{Resource, TargetUser};
use crate::body::Body;
use crate::ids::{self, AccountId, MAX_ACCOUNT_NAME, MAX_EMAIL, UserName};
use crate::server::authn::{self, Allow, Caller};
use crate::server::authorize::{self, Facts};
use crate::server::rejection::Rejection;
use crate::store::StoreError;
use crate::store::accounts::{AccessKeyRecord, AccountStore, MfaState, NewAccount, UserRecord};

/// A new account and its owner, as signup (A1) and member creation (A3) take it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewAccountRequest {
    name: String,
    email: String,
    owner_user: String,
    owner_password: String,
}

#[derive(Serialize)]
struct SignupResponse {
    account_id: String,
    name: String,
    owner_user: String,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PasswordPolicyDto {
    // Wide integers, so an out-of-range number is reported by name with the others (U2)
    // instead of failing deserialization on the first one that overflows a narrow type.
    #[serde(deserialize_with = "api::integral::deserialize")]
    min_length: i64,
    require_uppercase: bool,
    require_lowercase: bool,
    require_digit: bool,
    require_symbol: bool,
    #[serde(default, deserialize_with = "api::integral::option")]
    max_age_days: Option<i64>,
    #[serde(default, deserialize_with = "api::integral::option")]
    reuse_prevention: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUserRequest {
    user: String,
    password: String,
}

#[derive(Serialize)]
struct UserResponse {
    account_id: String,
    user: String,
    created_at: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangePasswordRequest {
    #[serde(default)]
    old_password: Option<String>,
    new_password: String,
}

#[derive(Serialize)]
struct MfaEnrollment {
    secret: String,
    otpauth_uri: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MfaCode {
    code: String,
}

#[derive(Serialize)]
struct AccessKeyCreated {
    access_key_id: String,
    secret: String,
    created_at: String,
}

#[derive(Serialize)]
struct AccessKeyListItem {
    access_key_id: String,
    created_at: String,
}

/// `POST /accounts` (A1): a standalone account and its owner user.
pub async fn signup(app: &Arc<App>, req: ApiRequest) -> Result<Response<Body>, Rejection> {
    if !app.config.accounts.open_signup {
        req.discard_body(app).await?;
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "SignupDisabled",
            "this gateway does not take new accounts; ask its operator",
        ));
    }
    let requester = Requester::account(req.client_ip(app));
    let body: NewAccountRequest = req.json(app).await?;
    let new = body.check(app, requester).await?;
    let (name, owner) = (new.name.clone(), new.owner.clone());
    let account_id = app.store.create_account(new, app.clock.now()).await?;
    tracing::info!(account = %account_id, "account created");
    api::json(
        StatusCode::CREATED,
        &SignupResponse {
            account_id: account_id.to_string(),
            name,
            owner_user: owner.to_string(),
        },
    )
}

// === impl NewAccountRequest ===

impl NewAccountRequest {
    /// Checks every field and hashes the owner's password, which must meet the default policy
    /// (a new account has no policy of its own yet).
    pub(crate) async fn check(
        self,
        app: &App,
        requester: Requester,
    ) -> Result<NewAccount, Rejection> {
        // Taken as sent: a name or address with spaces around it is refused, not trimmed, so
        // what is stored is what the client sent (and what the document's patterns say).
        let (name, email) = (self.name, self.email);
        if !ids::is_account_name(&name) {
            return Err(invalid_input(format!(
                "`name` must be 1 to {MAX_ACCOUNT_NAME} characters, without control characters or spaces at either end"
            )));
        }
        if !ids::is_email(&email) {
            return Err(invalid_input(format!(
                "`email` must be an address like `owner@example.com`, at most {MAX_EMAIL} characters, without spaces"
            )));
        }
        let owner = UserName::parse(&self.owner_user).map_err(|e| invalid_input(e.to_string()))?;
        let password = Secret::new(self.owner_password);
        PasswordPolicy::default().check(password.expose())?;
        let owner_password = app.hasher.hash(&password, requester).await?;
        Ok(NewAccount {
            name,
            email,
            owner,
            owner_password,
        })
    }
}

/// `GET /accounts/{id}/password-policy` (U2).
pub async fn get_password_policy(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
) -> Result<Response<Body>, Rejection> {
    let (caller, account) =
        api::caller_on_own_account(app, &req, account, "iam:GetPasswordPolicy").await?;
    let policy = effective_policy(app, &account, caller.is_management_account()).await?;
    api::json(StatusCode::OK, &PasswordPolicyDto::from(policy.params()))
}

/// `PUT /accounts/{id}/password-policy` (U2): ranges checked; a management account never goes
/// below the default floor.
pub async fn put_password_policy(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
) -> Result<Response<Body>, Rejection> {
    let (caller, account) =
        api::caller_on_own_account(app, &req, account, "iam:UpdatePasswordPolicy").await?;
    let body: PasswordPolicyDto = req.json(app).await?;
    let policy = PasswordPolicy::from_request(body.into())?;
    app.store
        .put_password_policy(&account, policy.params(), app.clock.now())
        .await?;
    let effective = policy.effective(caller.is_management_account());
    api::json(StatusCode::OK, &PasswordPolicyDto::from(effective.params()))
}

/// `POST /accounts/{id}/users` (U9).
pub async fn create_user(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
) -> Result<Response<Body>, Rejection> {
    let (caller, account) =
        api::caller_on_own_account(app, &req, account, "iam:CreateUser").await?;
    let requester = Requester::account(req.client_ip(app));
    let body: CreateUserRequest = req.json(app).await?;
    let user = UserName::parse(&body.user).map_err(|e| invalid_input(e.to_string()))?;
    let password = Secret::new(body.password);
    effective_policy(app, &account, caller.is_management_account())
        .await?
        .check(password.expose())?;
    let hash = app.hasher.hash(&password, requester).await?;
    let now = app.clock.now();
    match app.store.create_user(&account, &user, hash, now).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(Rejection::new(
                StatusCode::CONFLICT,
                "UserAlreadyExists",
                format!(
                    "account {account} already has a user named `{user}` (names ignore case); pick another name"
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    api::json(
        StatusCode::CREATED,
        &UserResponse {
            account_id: account.to_string(),
            user: user.to_string(),
            created_at: rfc3339(now),
        },
    )
}

/// `PUT /accounts/{id}/users/{user}/password` (U2, U9): by an administrator, or by the user
/// itself with its old password. The new password meets the account's policy (with the
/// management floor) and is none of the last `reuse_prevention` ones; every earlier token of
/// the user stops working.
pub async fn change_password(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
    user: &str,
) -> Result<Response<Body>, Rejection> {
    let allow = Allow {
        enrollment_token: false,
        expired_password: true,
        management_without_mfa: false,
    };
    let caller = authn::authenticate(app, &req.headers, req.peer, allow).await?;
    let account = own_account(&caller, account)?;
    let named = named_user(&account, user)?;
    let is_self = named.key() == caller.principal.user.name.key();
    if caller.password_expired && !is_self {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "PasswordExpired",
            "your password expired: change your own password before anything else",
        ));
    }
    let target = decided_user(app, &caller, "iam:UpdatePassword", &account, named, &req).await?;
    let ip = req.client_ip(app);
    let requester = Requester::account(ip);
    let body: ChangePasswordRequest = req.json(app).await?;
    let new_password = Secret::new(body.new_password);
    if is_self {
        // No old password is not the current password: the same 403 as a wrong one (it is no
        // guess, so it does not count toward the lock).
        let Some(old) = body.old_password.map(Secret::new) else {
            return Err(Rejection::new(
                StatusCode::FORBIDDEN,
                "InvalidCredentials",
                "changing your own password needs `old_password`, the current password",
            ));
        };
        // A wrong old password is a failed password attempt like a failed login (U4): a
        // stolen token must not buy unlimited guesses at the password through this endpoint.
        let now = app.clock.now();
        let subject = LoginSubject::of(&account, &target.name);
        let address = ClientAddress::new(ip);
        let attempts = app.store.login_attempts(&subject, address, now).await?;
        if attempts.is_locked(now) {
            return Err(crate::api::auth::locked(attempts, now));
        }
        let matched = app
            .hasher
            .verify(&old, Some(&target.password_hash), requester)
            .await?;
        if !matched {
            let rejection = crate::api::auth::failed_attempt(app, &subject, address, now).await?;
            if rejection.code == "UserLocked" {
                return Err(rejection);
            }
            return Err(Rejection::new(
                StatusCode::FORBIDDEN,
                "InvalidCredentials",
                "`old_password` is not the current password",
            ));
        }
    }
    let policy = effective_policy(app, &account, caller.is_management_account()).await?;
    policy.check(new_password.expose())?;
    let keep = usize::from(policy.reuse_prevention().unwrap_or(0));
    if keep > 0 {
        let mut recent = vec![target.password_hash.clone()];
        recent.extend(app.store.password_history(&account, &target.name).await?);
        recent.truncate(keep);
        if app
            .hasher
            .is_reused(&new_password, &recent, requester)
            .await?
        {
            return Err(Rejection::bad_request(
                "PasswordPolicyViolation",
                format!(
                    "the password needs to differ from the last {keep} passwords, as the account's password policy requires"
                ),
            ));
        }
    }
    let hash = app.hasher.hash(&new_password, requester).await?;
    app.store
        .change_password(&account, &target.name, hash, app.clock.now(), keep.max(1))
        .await?;
    Ok(api::no_content())
}

/// `POST /accounts/{id}/users/{user}/mfa` (U5): a new secret; MFA is on after `.../verify`.
pub async fn enroll_mfa(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
    user: &str,
) -> Result<Response<Body>, Rejection> {
    let caller = authenticate_for_mfa(app, &req).await?;
    let account = own_account(&caller, account)?;
    let named = named_user(&account, user)?;
    check_enrollment_token_scope(&caller, &named)?;
    let target = decided_user(app, &caller, "iam:ManageMfa", &account, named, &req).await?;
    req.discard_body(app).await?;
    if matches!(target.mfa, MfaState::On { .. }) {
        return Err(Rejection::new(
            StatusCode::CONFLICT,
            "MfaAlreadyEnabled",
            format!("user `{}` already has MFA on", target.name),
        ));
    }
    let secret = TotpSecret::generate();
    let uri = secret
        .otpauth_uri(&account, &target.name)
        .map_err(|e| Rejection::internal(&e))?;
    let encoded = secret.to_base32();
    app.store
        .begin_mfa(&account, &target.name, encoded.expose())
        .await?;
    api::json(
        StatusCode::OK,
        &MfaEnrollment {
            secret: encoded.expose().to_owned(),
            otpauth_uri: uri.expose().to_owned(),
        },
    )
}

/// `POST /accounts/{id}/users/{user}/mfa/verify` (U5): the first good code turns MFA on.
pub async fn verify_mfa(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
    user: &str,
) -> Result<Response<Body>, Rejection> {
    let caller = authenticate_for_mfa(app, &req).await?;
    let account = own_account(&caller, account)?;
    let named = named_user(&account, user)?;
    check_enrollment_token_scope(&caller, &named)?;
    let target = decided_user(app, &caller, "iam:ManageMfa", &account, named, &req).await?;
    let body: MfaCode = req.json(app).await?;
    let MfaState::Pending { secret } = &target.mfa else {
        return Err(Rejection::new(
            StatusCode::CONFLICT,
            "MfaNotPending",
            "there is no MFA enrollment to verify: start one with POST .../mfa",
        ));
    };
    let secret = TotpSecret::from_base32(secret).map_err(|e| Rejection::internal(&e))?;
    let step = totp::verify(&secret, &body.code, app.clock.now(), None).map_err(|_| {
        Rejection::new(
            StatusCode::UNAUTHORIZED,
            "InvalidMfaCode",
            "the code does not match; check the authenticator's time and send the current code",
        )
    })?;
    app.store.enable_mfa(&account, &target.name, step).await?;
    api::json(
        StatusCode::OK,
        &serde_json::json!({ "user": target.name.as_str(), "mfa": true }),
    )
}

/// `POST /accounts/{id}/users/{user}/access-keys` (U8): the secret is shown once.
pub async fn create_access_key(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
    user: &str,
) -> Result<Response<Body>, Rejection> {
    let caller = authn::authenticate(app, &req.headers, req.peer, Allow::default()).await?;
    let account = own_account(&caller, account)?;
    let named = named_user(&account, user)?;
    let target = decided_user(app, &caller, "iam:ManageAccessKeys", &account, named, &req).await?;
    req.discard_body(app).await?;
    let (id, secret) = access_key::generate();
    let now = app.clock.now();
    let record = AccessKeyRecord {
        id: id.clone(),
        account_id: account.clone(),
        user: target.name.clone(),
        secret_hash: access_key::hash_secret(&secret),
        created_at: now,
    };
    match app
        .store
        .create_access_key(record, MAX_ACCESS_KEYS_PER_USER)
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(Rejection::new(
                StatusCode::CONFLICT,
                "AccessKeyLimitExceeded",
                format!(
                    "user `{}` already has {MAX_ACCESS_KEYS_PER_USER} access keys; delete one first",
                    target.name
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    api::json(
        StatusCode::CREATED,
        &AccessKeyCreated {
            access_key_id: id.to_string(),
            secret: secret.expose().to_owned(),
            created_at: rfc3339(now),
        },
    )
}

/// `GET /accounts/{id}/users/{user}/access-keys`: ids and dates, never secrets.
pub async fn list_access_keys(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
    user: &str,
) -> Result<Response<Body>, Rejection> {
    let caller = authn::authenticate(app, &req.headers, req.peer, Allow::default()).await?;
    let account = own_account(&caller, account)?;
    let named = named_user(&account, user)?;
    let target = decided_user(app, &caller, "iam:ManageAccessKeys", &account, named, &req).await?;
    let keys = app.store.access_keys(&account, &target.name).await?;
    let items: Vec<AccessKeyListItem> = keys
        .into_iter()
        .map(|k| AccessKeyListItem {
            access_key_id: k.id.to_string(),
            created_at: rfc3339(k.created_at),
        })
        .collect();
    api::json(StatusCode::OK, &serde_json::json!({ "access_keys": items }))
}

/// `DELETE /accounts/{id}/users/{user}/access-keys/{key}` (U8): tokens from it stop at once
/// for new logins; tokens already issued live until they expire.
pub async fn delete_access_key(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
    user: &str,
    key: &str,
) -> Result<Response<Body>, Rejection> {
    let caller = authn::authenticate(app, &req.headers, req.peer, Allow::default()).await?;
    let account = own_account(&caller, account)?;
    let named = named_user(&account, user)?;
    let target = decided_user(app, &caller, "iam:ManageAccessKeys", &account, named, &req).await?;
    let missing = || {
        Rejection::not_found(
            "NoSuchAccessKey",
            format!(
                "user `{}` has no access key `{}`",
                target.name,
                key.chars().take(64).collect::<String>()
            ),
        )
    };
    let id = AccessKeyId::parse(key).map_err(|_| missing())?;
    if app
        .store
        .delete_access_key(&account, &target.name, &id)
        .await?
    {
        Ok(api::no_content())
    } else {
        Err(missing())
    }
}

/// MFA endpoints also take the enrollment-only token; an expired password allows only a
/// password change (U2), so not this.
async fn authenticate_for_mfa(app: &App, req: &ApiRequest) -> Result<Caller, Rejection> {
    let allow = Allow {
        enrollment_token: true,
        expired_password: false,
        management_without_mfa: false,
    };
    authn::authenticate(app, &req.headers, req.peer, allow).await
}

/// An enrollment-only token enrolls its own user and nobody else.
fn check_enrollment_token_scope(caller: &Caller, target: &UserName) -> Result<(), Rejection> {
    if caller.claims.scope == crate::auth::Scope::MfaEnroll
        && target.key() != caller.claims.user.key()
    {
        return Err(authn::invalid_token(
            "an enrollment token enrolls only its own user",
        ));
    }
    Ok(())
}

/// The user a path segment names. Clients percent-encode the `@`, `+`, `=` and `,` that user
/// names may hold, so the segment is decoded first. A segment that is no user name names
/// nobody, for every caller alike (it says nothing about which users exist); the echo in the
/// error is kept short.
fn named_user(account: &AccountId, user: &str) -> Result<UserName, Rejection> {
    let decoded = percent_encoding::percent_decode_str(user).decode_utf8_lossy();
    UserName::parse(&decoded).map_err(|_| no_such_user(account, &decoded))
}

/// Decides `action` on the user as named, and only then says whether it exists (STYLE 17): a
/// caller who may not act on the account's users gets the same logged 403 for every name, and
/// learns nothing about which users exist. The store is read before the decision only for the
/// target's `is_owner`, which a policy may test; a name nobody holds is no owner.
async fn decided_user(
    app: &App,
    caller: &Caller,
    action: &str,
    account: &AccountId,
    name: UserName,
    req: &ApiRequest,
) -> Result<UserRecord, Rejection> {
    let record = app.store.user(account, &name).await?;
    authorize::authorize(
        app,
        caller,
        Facts {
            action,
            resource: Resource::User(TargetUser {
                user: record.as_ref().map_or(name.clone(), |r| r.name.clone()),
                is_owner: record.as_ref().is_some_and(|r| r.is_owner),
            }),
            method: req.method.as_str(),
            path: &req.path,
        },
    )?;
    record.ok_or_else(|| no_such_user(account, name.as_str()))
}

fn no_such_user(account: &AccountId, name: &str) -> Rejection {
    let shown: String = name.chars().take(64).collect();
    Rejection::not_found(
        "NoSuchUser",
        format!("account {account} has no user `{shown}`"),
    )
}

async fn effective_policy(
    app: &App,
    account: &AccountId,
    is_management: bool,
) -> Result<PasswordPolicy, Rejection> {
    let stored = app.store.password_policy(account).await?;
    let policy = match stored {
        Some(params) => PasswordPolicy::new(params).map_err(|e| Rejection::internal(&e))?,
        None => PasswordPolicy::default(),
    };
    Ok(policy.effective(is_management))
}

fn invalid_input(message: impl Into<String>) -> Rejection {
    Rejection::bad_request("InvalidInput", message)
}

impl From<PasswordPolicyParams> for PasswordPolicyDto {
    fn from(p: PasswordPolicyParams) -> Self {
        Self {
            min_length: i64::from(p.min_length),
            require_uppercase: p.require_uppercase,
            require_lowercase: p.require_lowercase,
            require_digit: p.require_digit,
            require_symbol: p.require_symbol,
            max_age_days: p.max_age_days.map(i64::from),
            reuse_prevention: p.reuse_prevention.map(i64::from),
        }
    }
}

impl From<PasswordPolicyDto> for PasswordPolicyRequest {
    fn from(p: PasswordPolicyDto) -> Self {
        Self {
            min_length: p.min_length,
            require_uppercase: p.require_uppercase,
            require_lowercase: p.require_lowercase,
            require_digit: p.require_digit,
            require_symbol: p.require_symbol,
            max_age_days: p.max_age_days,
            reuse_prevention: p.reuse_prevention,
        }
    }
}
