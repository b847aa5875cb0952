//! Who is calling: the bearer token checked (U7), the caller's current state read from the
//! store in one go (groups, organization, revocation, password age), and the rules that hold
//! for every authenticated request: logged-out tokens and tokens from before a password change
//! are refused; an enrollment-only token is good for MFA enrollment alone (U6); a management
//! account's user without MFA gets nothing else (U6), and a management user's token without
//! MFA (an access-key token) calls services but nothing of the JSON API (U6); an expired
//! password allows only a password change (U2).

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, StatusCode, header};

use crate::app::App;
use crate::auth::{Claims, PasswordPolicy, Scope};
use crate::server::rejection::Rejection;
use crate::store::accounts::{AccountStore, MfaState, PrincipalRecord};
use crate::upstream::headers::X_FORWARDED_FOR;

/// An authenticated caller, valid for one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Claims,
    pub principal: PrincipalRecord,
    pub source_ip: IpAddr,
    /// The password is past the account policy's maximum age.
    pub password_expired: bool,
}

/// What an endpoint accepts beyond a normal, fully authorized caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allow {
    /// The 10-minute MFA enrollment token (MFA endpoints only).
    pub enrollment_token: bool,
    /// A caller whose password expired (the password change endpoint only).
    pub expired_password: bool,
    /// A management-account user's token without MFA (an access-key token): good for service
    /// calls (`/svc/...`) and for logout, which only gives the token up; every other JSON API
    /// call refuses it (U6).
    pub management_without_mfa: bool,
}

// === impl Caller ===

impl Caller {
    pub fn is_management_account(&self) -> bool {
        self.principal
            .organization
            .as_ref()
            .is_some_and(|o| o.management_account == self.principal.user.account_id)
    }
}

/// Authenticates the request's bearer token.
pub async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    peer: SocketAddr,
    allow: Allow,
) -> Result<Caller, Rejection> {
    let token = bearer(headers)?;
    let now = app.clock.now();
    let claims = app.tokens.verify(token, now)?;
    match claims.scope {
        Scope::Service => {}
        Scope::MfaEnroll if allow.enrollment_token => {}
        Scope::MfaEnroll => {
            return Err(invalid_token(
                "this token is good only for enrolling MFA; enroll, then log in again",
            ));
        }
        Scope::Identity => {
            return Err(invalid_token(
                "identity tokens are for upstream services, not for calling tollgate",
            ));
        }
    }
    let principal = app
        .store
        .principal(
            &claims.account,
            &claims.user,
            &claims.jti,
            claims.access_key.as_ref(),
            now,
        )
        .await?
        .ok_or_else(|| invalid_token("the token's user no longer exists"))?;
    if principal.token_revoked {
        return Err(invalid_token("the token was logged out; log in again"));
    }
    if principal.access_key_deleted {
        return Err(invalid_token(
            "the access key this token was minted from was deleted; get a token with a current key",
        ));
    }
    if claims.issued_before(principal.user.tokens_valid_after) {
        return Err(invalid_token(
            "the token was issued before the user's last password change; log in again",
        ));
    }

    let is_management = principal
        .organization
        .as_ref()
        .is_some_and(|o| o.management_account == principal.user.account_id);
    let mfa_on = matches!(principal.user.mfa, MfaState::On { .. });
    if is_management && !mfa_on && !allow.enrollment_token {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "MfaEnrollmentRequired",
            "users of a management account must enroll MFA first: POST /accounts/{id}/users/{user}/mfa, then .../mfa/verify",
        ));
    }

    // Access-key tokens carry `mfa=false`; a management user's must not reach the API (U6),
    // where they could create accounts, invite, or read the organization's decisions.
    if is_management
        && !claims.mfa
        && claims.scope == Scope::Service
        && !allow.management_without_mfa
    {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "MfaRequired",
            "a management account's token without MFA (an access-key token) may call services only; for the API, log in with POST /auth/login and an MFA code",
        ));
    }

    let policy = app
        .store
        .password_policy(&principal.user.account_id)
        .await?;
    let policy = policy
        .and_then(|p| PasswordPolicy::new(p).ok())
        .unwrap_or_default()
        .effective(is_management);
    let password_expired = policy.is_expired(principal.user.password_changed_at, now);
    if password_expired && !allow.expired_password {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "PasswordExpired",
            "the password is past the account's maximum age; change it with PUT /accounts/{id}/users/{user}/password",
        ));
    }

    Ok(Caller {
        claims,
        principal,
        source_ip: client_ip(app, headers, peer),
        password_expired,
    })
}

pub fn bearer(headers: &HeaderMap) -> Result<&str, Rejection> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        Rejection::new(
            StatusCode::UNAUTHORIZED,
            "MissingToken",
            "send `Authorization: Bearer <token>`; get a token from POST /auth/login or POST /auth/token",
        )
    })?;
    // Two credentials are ambiguous: a proxy in front may have checked the other one.
    if headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(invalid_token("send exactly one Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| invalid_token("the Authorization header is not valid text"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(invalid_token("expected `Authorization: Bearer <token>`")),
    }
}

pub fn invalid_token(message: &str) -> Rejection {
    Rejection::new(StatusCode::UNAUTHORIZED, "InvalidToken", message)
}

/// The client address policies see (`source_ip`). From an untrusted peer, the peer. From a
/// trusted proxy, `X-Forwarded-For` is walked from the right (the entry the nearest proxy
/// wrote comes last): trusted proxies are stepped over, and the first untrusted address is the
/// client. An entry that is not a bare IP address (`ip:port`, `[v6]:port`, `unknown`, empty)
/// ends the walk at the last trusted address reached: whatever is left of it was written by
/// someone we do not trust, so it is never used (F2). Allocates nothing.
pub fn client_ip(app: &App, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
    let mut last_trusted = peer.ip();
    if !app.is_trusted_proxy(last_trusted) {
        return last_trusted;
    }
    for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(value) = value.to_str() else {
            return last_trusted;
        };
        for entry in value.rsplit(',') {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) if app.is_trusted_proxy(ip) => last_trusted = ip,
                Ok(ip) => return ip,
                Err(_) => return last_trusted,
            }
        }
    }
    last_trusted
}
