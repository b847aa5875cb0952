//! Bearer tokens (SPEC U7, U6) and the identity header for upstreams: Ed25519-signed JWTs.
//!
//! Issuing signs with the key ring's active key and names it in `kid`. Verifying never lets
//! the token choose how it is checked (RFC 8725): the size is capped before parsing, the header
//! is decoded here and must say `alg: EdDSA` with a well-formed `kid` of a key in the ring, the
//! signature is checked with that pinned key, and time claims are checked against the injected
//! `now` (jsonwebtoken's own clock checks are off). `iss` and `aud` must match exactly.
//!
//! Revocation is the caller's: it keeps logged-out `jti`s until their `exp`, a per-user
//! "tokens valid after" instant set on password change (see [`Claims::issued_before`]), and
//! for a token minted from an access key (`akid`), whether that key still exists.
//!
//! # The verified-token cache
//! An Ed25519 verification costs ~33 us, more than the rest of a request's gateway CPU; a client
//! sends the same token for up to an hour. [`TokenIssuer::verify`] therefore remembers the claims
//! of each token it verified, keyed by the exact token text, and on a repeat call only re-checks
//! what can change with time: `exp`/`nbf` against `now` (an entry dies at its `exp`) and that the
//! signing key is still accepted (rotation grace). A token is cached only after it passed every
//! check, so a cached token is one that would verify again. Logout and password change are not
//! properties of the token: the caller checks them on every request against the store (see
//! `server::authn`), and logout also [forgets](TokenIssuer::forget) the token here. The cache is
//! bounded ([`TOKEN_CACHE_CAPACITY`] entries of tokens up to [`TOKEN_CACHE_MAX_TOKEN_BYTES`]):
//! when full, expired entries go, and if none have expired the cache starts over.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use dashmap::DashMap;
use ed25519_dalek::Signer as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use super::access_key::AccessKeyId;
use super::keys::{KeyRing, Kid};
use super::secret::Secret;
use crate::ids::{AccountId, RequestId, UserName};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Most tokens the verified-token cache holds (about 1 KiB each at most: ~16 MiB worst case).
pub const TOKEN_CACHE_CAPACITY: usize = 16 * 1024;
/// Longer tokens are verified every time, never cached (ours are ~400 bytes).
pub const TOKEN_CACHE_MAX_TOKEN_BYTES: usize = 1024;
/// Lifetime of the enrollment-only token a management-account user without MFA gets (U6).
pub const MFA_ENROLLMENT_TTL: Duration = Duration::minutes(10);
/// Tolerated clock difference between gateway instances for `iat` and `nbf` (not for `exp`).
pub const CLOCK_SKEW: Duration = Duration::seconds(60);

/// What a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A normal token: service calls and the API.
    Service,
    /// Only enrolling MFA (U6).
    MfaEnroll,
    /// The `X-Tollgate-Identity` header tollgate sends upstream; never accepted by tollgate.
    Identity,
}

/// The verified contents of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub issuer: String,
    pub audience: String,
    pub user: UserName,
    pub account: AccountId,
    pub mfa: bool,
    /// Millisecond precision (from the `iat_ms` claim), so a password change and a login in
    /// the same second are told apart.
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub jti: String,
    pub scope: Scope,
    /// The request an identity token was made for.
    pub request_id: Option<RequestId>,
    /// The access key a token from `POST /auth/token` was minted from (`akid`): the token dies
    /// with the key (U8).
    pub access_key: Option<AccessKeyId>,
}

/// A freshly signed token and what the caller needs to answer and to revoke it later.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: Secret,
    pub jti: String,
    pub expires_at: DateTime<Utc>,
}

/// Signs and verifies tokens for one issuer and default audience.
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    keys: Arc<KeyRing>,
    issuer: String,
    audience: String,
    ttl: Duration,
    verified: Arc<DashMap<Box<str>, Verified>>,
}

/// A token that passed every check, and what must be re-checked on each use.
#[derive(Debug, Clone)]
struct Verified {
    claims: Claims,
    not_before: Option<DateTime<Utc>>,
    kid: Kid,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("token is not a well-formed jwt")]
    Malformed,
    #[error("token algorithm `{alg}` is not allowed, only `EdDSA`")]
    AlgorithmNotAllowed { alg: String },
    #[error("token header has no `kid`")]
    MissingKeyId,
    #[error("token `kid` is not 16 lowercase hex digits")]
    MalformedKeyId,
    #[error("unknown signing key `{kid}`")]
    UnknownKey { kid: Kid },
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token issuer is not this gateway")]
    WrongIssuer,
    #[error("token audience is not `{expected}`")]
    WrongAudience { expected: String },
    #[error("token expired at {expired_at}")]
    Expired { expired_at: DateTime<Utc> },
    #[error("token is not valid before {valid_from}")]
    NotYetValid { valid_from: DateTime<Utc> },
    #[error("an identity token cannot authenticate to the gateway")]
    WrongScope,
    #[error("no active signing key")]
    NoActiveKey,
    #[error("could not sign token: {0}")]
    Signing(String),
}

/// The JWT claims as they travel: the only serde type of this module, converted explicitly.
#[derive(Serialize, Deserialize)]
struct WireClaims {
    iss: String,
    aud: String,
    sub: String,
    acct: String,
    mfa: bool,
    iat: i64,
    exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    jti: String,
    scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    akid: Option<String>,
}

/// The header fields looked at before anything else is trusted.
#[derive(Deserialize)]
struct WireHeader {
    alg: serde_json::Value,
    #[serde(default)]
    kid: Option<serde_json::Value>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

// === impl Scope ===

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::MfaEnroll => "mfa-enroll",
            Self::Identity => "identity",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "service" => Some(Self::Service),
            "mfa-enroll" => Some(Self::MfaEnroll),
            "identity" => Some(Self::Identity),
            _ => None,
        }
    }
}

// === impl Claims ===

impl Claims {
    /// Whether the token was issued no later than `tokens_valid_after` (the user's last
    /// password change), so it must be refused (U7). Compared to the millisecond, and a token
    /// of the very same millisecond is refused too: a login stamps its token with the instant
    /// it started, before it read the password hash, so a login that checked the old password
    /// while the change committed gets a token that is not after the change. The price is that
    /// a login with the new password in the change's own millisecond must log in again.
    pub fn issued_before(&self, tokens_valid_after: DateTime<Utc>) -> bool {
        self.issued_at <= tokens_valid_after
    }
}

// === impl TokenIssuer ===

impl TokenIssuer {
    /// `issuer` goes in `iss`, `audience` in `aud` of normal tokens; `ttl` is their lifetime.
    /// The key ring's `max_token_ttl` must be at least `ttl`.
    pub fn new(
        keys: Arc<KeyRing>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
            ttl,
            verified: Arc::new(DashMap::new()),
        }
    }

    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// A normal token (`scope: service`) for a user who has just authenticated.
    pub fn issue(
        &self,
        account: &AccountId,
        user: &UserName,
        mfa: bool,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, TokenError> {
        let draft = Draft {
            audience: &self.audience,
            account,
            user,
            mfa,
            scope: Scope::Service,
            request_id: None,
            access_key: None,
            ttl: self.ttl,
        };
        self.sign(draft, now)
    }

    /// A normal token without MFA for a program that presented access key `key` (U8). It
    /// names the key (`akid`), so that deleting the key ends the token.
    pub fn issue_for_access_key(
        &self,
        account: &AccountId,
        user: &UserName,
        key: &AccessKeyId,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, TokenError> {
        let draft = Draft {
            audience: &self.audience,
            account,
            user,
            mfa: false,
            scope: Scope::Service,
            request_id: None,
            access_key: Some(key),
            ttl: self.ttl,
        };
        self.sign(draft, now)
    }

    /// The 10-minute token that only allows enrolling MFA (U6).
    pub fn issue_mfa_enrollment(
        &self,
        account: &AccountId,
        user: &UserName,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, TokenError> {
        let draft = Draft {
            audience: &self.audience,
            account,
            user,
            mfa: false,
            scope: Scope::MfaEnroll,
            request_id: None,
            access_key: None,
            ttl: MFA_ENROLLMENT_TTL,
        };
        self.sign(draft, now)
    }

    /// The `X-Tollgate-Identity` token for one forwarded request: who the verified `caller`
    /// is, for `service_audience` only, naming the request (`rid`). Upstreams verify it with
    /// the JWKS; tollgate itself refuses it.
    pub fn issue_identity(
        &self,
        caller: &Claims,
        request_id: &RequestId,
        service_audience: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, TokenError> {
        let draft = Draft {
            audience: service_audience,
            account: &caller.account,
            user: &caller.user,
            mfa: caller.mfa,
            scope: Scope::Identity,
            request_id: Some(request_id),
            access_key: None,
            ttl,
        };
        self.sign(draft, now)
    }

    /// Verifies a bearer token presented to the gateway, through the verified-token cache
    /// (module docs). The caller still checks revocation (`jti`, [`Claims::issued_before`]) and
    /// the scope it needs.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, TokenError> {
        if let Some(hit) = self.verified.get(token) {
            let Verified {
                claims,
                not_before,
                kid,
            } = hit.value();
            if check_times(claims, *not_before, now).is_ok() && self.keys.accepts(kid, now) {
                return Ok(claims.clone());
            }
            drop(hit);
            // Expired, or its key's grace ended: verify in full, which says why.
            self.verified.remove(token);
        }
        let verified = self.verify_for(token, &self.audience, now)?;
        if verified.claims.scope == Scope::Identity {
            return Err(TokenError::WrongScope);
        }
        let claims = verified.claims.clone();
        if token.len() <= TOKEN_CACHE_MAX_TOKEN_BYTES {
            if self.verified.len() >= TOKEN_CACHE_CAPACITY {
                self.verified
                    .retain(|_, v| check_times(&v.claims, v.not_before, now).is_ok());
                if self.verified.len() >= TOKEN_CACHE_CAPACITY {
                    self.verified.clear();
                }
            }
            self.verified.insert(token.into(), verified);
        }
        Ok(claims)
    }

    /// Verifies in full, never using or filling the cache (benches and tests compare the two).
    pub fn verify_uncached(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, TokenError> {
        let claims = self.verify_for(token, &self.audience, now)?.claims;
        if claims.scope == Scope::Identity {
            return Err(TokenError::WrongScope);
        }
        Ok(claims)
    }

    /// Drops `token` from the verified-token cache (logout). Revocation does not depend on it
    /// (the store's revoked `jti`s are checked on every request), but a logged-out token has no
    /// business staying in memory.
    pub fn forget(&self, token: &str) {
        self.verified.remove(token);
    }

    /// Tokens in the verified-token cache (tests, diagnostics).
    pub fn cached_tokens(&self) -> usize {
        self.verified.len()
    }

    fn verify_for(
        &self,
        token: &str,
        audience: &str,
        now: DateTime<Utc>,
    ) -> Result<Verified, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let kid = pinned_kid(header)?;
        let key = self
            .keys
            .decoding_key(&kid, now)
            .ok_or_else(|| TokenError::UnknownKey { kid: kid.clone() })?;

        let mut validation = Validation::new(Algorithm::EdDSA);
        // Time is checked below against the injected clock, never the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[audience]);
        let wire = jsonwebtoken::decode::<WireClaims>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience {
                    expected: audience.to_owned(),
                },
                _ => TokenError::Malformed,
            })?
            .claims;
        // Exact, whatever jsonwebtoken accepts (it also takes arrays, which the wire type
        // already refuses).
        if wire.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if wire.aud != audience {
            return Err(TokenError::WrongAudience {
                expected: audience.to_owned(),
            });
        }
        let (claims, not_before) = claims_from_wire(wire)?;
        check_times(&claims, not_before, now)?;
        Ok(Verified {
            claims,
            not_before,
            kid,
        })
    }

    fn sign(&self, draft: Draft<'_>, now: DateTime<Utc>) -> Result<IssuedToken, TokenError> {
        let active = self.keys.active().ok_or(TokenError::NoActiveKey)?;
        let expires_at = now + draft.ttl;
        let jti = hex::encode(rand::random::<[u8; 16]>());
        let wire = WireClaims {
            iss: self.issuer.clone(),
            aud: draft.audience.to_owned(),
            sub: draft.user.to_string(),
            acct: draft.account.to_string(),
            mfa: draft.mfa,
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
            nbf: None,
            jti: jti.clone(),
            scope: draft.scope.as_str().to_owned(),
            rid: draft.request_id.map(ToString::to_string),
            iat_ms: Some(now.timestamp_millis()),
            akid: draft.access_key.map(ToString::to_string),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(active.kid.to_string());
        // What `jsonwebtoken::encode` produces, signed with the pre-expanded key (see
        // `ActiveKey::signing`): base64url(JSON header) . base64url(JSON claims) . signature.
        let signing_error = |e: serde_json::Error| TokenError::Signing(e.to_string());
        let header_json = serde_json::to_vec(&header).map_err(signing_error)?;
        let claims_json = serde_json::to_vec(&wire).map_err(signing_error)?;
        let mut token = String::with_capacity((header_json.len() + claims_json.len()) * 4 / 3 + 96);
        URL_SAFE_NO_PAD.encode_string(&header_json, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims_json, &mut token);
        let signature = active.signing.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(IssuedToken {
            token: Secret::new(token),
            jti,
            expires_at: DateTime::from_timestamp(wire.exp, 0).unwrap_or(expires_at),
        })
    }
}

/// What differs between the kinds of token.
struct Draft<'a> {
    audience: &'a str,
    account: &'a AccountId,
    user: &'a UserName,
    mfa: bool,
    scope: Scope,
    request_id: Option<&'a RequestId>,
    access_key: Option<&'a AccessKeyId>,
    ttl: Duration,
}

/// Decodes the header ourselves and returns the `kid` only if `alg` is exactly `EdDSA`.
fn pinned_kid(encoded_header: &str) -> Result<Kid, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded_header)
        .map_err(|_| TokenError::Malformed)?;
    let header: WireHeader = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    match header.alg.as_str() {
        Some("EdDSA") => {}
        other => {
            return Err(TokenError::AlgorithmNotAllowed {
                alg: printable_alg(other),
            });
        }
    }
    // No extension is understood, so any critical one means "do not accept" (RFC 7515 4.1.11).
    if header.crit.is_some() {
        return Err(TokenError::Malformed);
    }
    let kid = header.kid.ok_or(TokenError::MissingKeyId)?;
    kid.as_str()
        .and_then(Kid::parse)
        .ok_or(TokenError::MalformedKeyId)
}

/// The `alg` to name in an error: short alphanumerics only, so nothing odd is echoed.
fn printable_alg(alg: Option<&str>) -> String {
    match alg {
        Some(a)
            if !a.is_empty() && a.len() <= 16 && a.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            a.to_owned()
        }
        _ => "(unprintable)".to_owned(),
    }
}

/// Converts checked wire claims into domain types; returns `nbf` too, for `check_times`.
fn claims_from_wire(wire: WireClaims) -> Result<(Claims, Option<DateTime<Utc>>), TokenError> {
    let user = UserName::parse(&wire.sub).map_err(|_| TokenError::Malformed)?;
    let account = AccountId::parse(&wire.acct).map_err(|_| TokenError::Malformed)?;
    let scope = Scope::parse(&wire.scope).ok_or(TokenError::Malformed)?;
    let request_id = match wire.rid {
        Some(rid) => Some(RequestId::parse(&rid).map_err(|_| TokenError::Malformed)?),
        None => None,
    };
    let access_key = match wire.akid {
        Some(id) => Some(AccessKeyId::parse(&id).map_err(|_| TokenError::Malformed)?),
        None => None,
    };
    let issued_at = match wire.iat_ms {
        // The precise instant must agree with `iat`, or the token is not one of ours.
        Some(ms) if ms.div_euclid(1000) == wire.iat => DateTime::from_timestamp_millis(ms),
        Some(_) => None,
        None => DateTime::from_timestamp(wire.iat, 0),
    }
    .ok_or(TokenError::Malformed)?;
    let expires_at = DateTime::from_timestamp(wire.exp, 0).ok_or(TokenError::Malformed)?;
    let not_before = match wire.nbf {
        Some(nbf) => Some(DateTime::from_timestamp(nbf, 0).ok_or(TokenError::Malformed)?),
        None => None,
    };
    if wire.jti.is_empty() || wire.jti.len() > 64 {
        return Err(TokenError::Malformed);
    }
    let claims = Claims {
        issuer: wire.iss,
        audience: wire.aud,
        user,
        account,
        mfa: wire.mfa,
        issued_at,
        expires_at,
        jti: wire.jti,
        scope,
        request_id,
        access_key,
    };
    Ok((claims, not_before))
}

/// `exp` is strict (a token is dead at its `exp`); `iat` and `nbf` allow [`CLOCK_SKEW`].
fn check_times(
    claims: &Claims,
    not_before: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), TokenError> {
    if now >= claims.expires_at {
        return Err(TokenError::Expired {
            expired_at: claims.expires_at,
        });
    }
    let valid_from = not_before.map_or(claims.issued_at, |nbf| nbf.max(claims.issued_at));
    if valid_from > now + CLOCK_SKEW {
        return Err(TokenError::NotYetValid { valid_from });
    }
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing yields Null instead of panicking"
)]
mod tests;
