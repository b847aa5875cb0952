//! TOTP second factor (SPEC U5, RFC 6238): SHA-1, 6 digits, 30-second steps, one step of
//! clock drift either way, and no code accepted twice.
//!
//! Pure: the caller stores the secret and the last accepted step per user, and passes the
//! current time in. Codes are compared as 6-character strings in constant time. Secrets are
//! never logged: [`TotpSecret`]'s `Debug` is redacted.

use std::fmt;

use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use super::secret::Secret;
use crate::ids::{AccountId, UserName};

/// The issuer shown by authenticator apps.
pub const ISSUER: &str = "tollgate";
/// Seconds per time step.
pub const STEP_SECONDS: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Steps of drift accepted on either side of the current one (RFC 6238 recommends one).
pub const ALLOWED_DRIFT_STEPS: u64 = 1;
/// Bytes of a generated secret: 160 bits, the RFC 4226 recommendation.
pub const SECRET_BYTES: usize = 20;
/// The shortest secret accepted when loading one (RFC 4226's minimum, 128 bits).
const MIN_SECRET_BYTES: usize = 16;

/// A TOTP shared secret (raw bytes; Base32 on the wire and in the store). Equality only in
/// tests: production code never compares secrets.
#[derive(Clone)]
#[cfg_attr(test, derive(PartialEq, Eq))]
pub struct TotpSecret(Vec<u8>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    #[error("mfa code must be exactly 6 digits")]
    Malformed,
    #[error("mfa code does not match")]
    Mismatch,
    #[error("mfa code was already used")]
    Replayed,
    #[error("totp secret is not Base32 of at least 128 bits")]
    InvalidSecret,
    #[error("time is before the unix epoch")]
    BeforeEpoch,
}

// === impl TotpSecret ===

impl TotpSecret {
    /// A fresh random 160-bit secret.
    pub fn generate() -> Self {
        let bytes: [u8; SECRET_BYTES] = rand::random();
        Self(bytes.to_vec())
    }

    /// Reads a stored Base32 secret (RFC 4648, padding optional).
    pub fn from_base32(encoded: &str) -> Result<Self, TotpError> {
        let bytes = totp_rs::Secret::Encoded(encoded.trim_end_matches('=').to_owned())
            .to_bytes()
            .map_err(|_| TotpError::InvalidSecret)?;
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(TotpError::InvalidSecret);
        }
        Ok(Self(bytes))
    }

    /// The Base32 form (no padding) that users type into authenticators and the store keeps.
    pub fn to_base32(&self) -> Secret {
        match totp_rs::Secret::Raw(self.0.clone()).to_encoded() {
            totp_rs::Secret::Encoded(s) => Secret::new(s),
            totp_rs::Secret::Raw(_) => Secret::new(String::new()),
        }
    }

    /// `otpauth://totp/tollgate:<account-id>%2F<user>?secret=...&issuer=tollgate`, the URI that
    /// authenticator apps import (as a QR code). It contains the secret.
    pub fn otpauth_uri(&self, account: &AccountId, user: &UserName) -> Result<Secret, TotpError> {
        let label = format!("{account}/{user}");
        let totp = self.totp(Some(label))?;
        Ok(Secret::new(totp.get_url()))
    }

    fn totp(&self, label: Option<String>) -> Result<TOTP, TotpError> {
        TOTP::new(
            Algorithm::SHA1,
            DIGITS,
            0,
            STEP_SECONDS,
            self.0.clone(),
            Some(ISSUER.to_owned()),
            label.unwrap_or_default(),
        )
        .map_err(|_| TotpError::InvalidSecret)
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([redacted])")
    }
}

/// The RFC 6238 time step of `now`: `floor(unix seconds / 30)`.
pub fn step_at(now: DateTime<Utc>) -> Result<u64, TotpError> {
    let seconds = u64::try_from(now.timestamp()).map_err(|_| TotpError::BeforeEpoch)?;
    Ok(seconds / STEP_SECONDS)
}

/// The code an authenticator shows at `now` (for `tollgate totp` and the demo).
pub fn code_at(secret: &TotpSecret, now: DateTime<Utc>) -> Result<String, TotpError> {
    let step = step_at(now)?;
    Ok(secret
        .totp(None)?
        .generate(step.saturating_mul(STEP_SECONDS)))
}

/// Checks `code` at `now` and returns the step it was accepted for, which the caller stores as
/// the user's new `last_accepted_step`. A code is accepted for the current step or one step
/// either side, and only if that step is later than `last_accepted_step` (no replay, and no
/// code older than one already used).
pub fn verify(
    secret: &TotpSecret,
    code: &str,
    now: DateTime<Utc>,
    last_accepted_step: Option<u64>,
) -> Result<u64, TotpError> {
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpError::Malformed);
    }
    let current = step_at(now)?;
    let totp = secret.totp(None)?;
    let first = current.saturating_sub(ALLOWED_DRIFT_STEPS);
    let last = current.saturating_add(ALLOWED_DRIFT_STEPS);
    // Compute every candidate (no early exit), then take the latest step that matched.
    let mut matched: Option<u64> = None;
    for step in first..=last {
        let expected = totp.generate(step.saturating_mul(STEP_SECONDS));
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            matched = Some(step);
        }
    }
    match (matched, last_accepted_step) {
        (None, _) => Err(TotpError::Mismatch),
        (Some(step), Some(used)) if step <= used => Err(TotpError::Replayed),
        (Some(step), _) => Ok(step),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod code_tests {
    use super::*;

    #[test]
    fn code_at_matches_the_rfc_vectors_and_verifies() {
        let secret = TotpSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        let at = |t: i64| DateTime::from_timestamp(t, 0).unwrap();
        assert_eq!(code_at(&secret, at(59)).unwrap(), "287082");
        assert_eq!(code_at(&secret, at(1_111_111_109)).unwrap(), "081804");
        let code = code_at(&secret, at(1_700_000_000)).unwrap();
        assert!(verify(&secret, &code, at(1_700_000_000), None).is_ok());
    }
}
