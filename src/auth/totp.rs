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
mod tests {
    use super::*;

    /// The RFC 6238 SHA-1 secret `12345678901234567890` in Base32.
    const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    fn at(unix: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(unix, 0).unwrap_or_else(|| panic!("bad time {unix}"))
    }

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_base32(RFC_SECRET).unwrap_or_else(|e| panic!("{e}"))
    }

    fn code_at(secret: &TotpSecret, unix: i64) -> String {
        let totp = secret.totp(None).unwrap_or_else(|e| panic!("{e}"));
        totp.generate(u64::try_from(unix).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn rfc_6238_vectors_verify_at_their_step() {
        let secret = rfc_secret();
        for (unix, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ] {
            let step =
                verify(&secret, code, at(unix), None).unwrap_or_else(|e| panic!("{unix}: {e}"));
            assert_eq!(step, u64::try_from(unix).unwrap_or_default() / 30, "{unix}");
        }
    }

    #[test]
    fn one_step_of_drift_is_accepted_two_are_not() {
        let secret = rfc_secret();
        let now = 1_234_567_890;
        let step = u64::try_from(now).unwrap_or_default() / 30;
        for (offset, ok) in [
            (-60, false),
            (-30, true),
            (0, true),
            (30, true),
            (60, false),
        ] {
            let code = code_at(&secret, now + offset);
            let result = verify(&secret, &code, at(now), None);
            if ok {
                let expected = step.checked_add_signed(offset / 30).unwrap_or_default();
                assert_eq!(result, Ok(expected), "offset {offset}");
            } else {
                assert_eq!(result, Err(TotpError::Mismatch), "offset {offset}");
            }
        }
    }

    #[test]
    fn a_code_is_never_accepted_twice_nor_an_older_one() {
        let secret = rfc_secret();
        let now = 1_234_567_890;
        let code = code_at(&secret, now);
        let step = verify(&secret, &code, at(now), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            verify(&secret, &code, at(now), Some(step)),
            Err(TotpError::Replayed)
        );
        // The previous step's code is still in the window but older than the accepted one.
        let older = code_at(&secret, now - 30);
        assert_eq!(
            verify(&secret, &older, at(now), Some(step)),
            Err(TotpError::Replayed)
        );
        // The next step's code is newer: accepted.
        let newer = code_at(&secret, now + 30);
        assert_eq!(
            verify(&secret, &newer, at(now + 30), Some(step)),
            Ok(step + 1)
        );
    }

    #[test]
    fn anything_but_six_ascii_digits_is_refused() {
        let secret = rfc_secret();
        for bad in [
            "",
            "12345",
            "1234567",
            "00592a",
            " 05924",
            "٠٠٥٩٢٤",
            "005924\n",
            "+05924",
        ] {
            assert_eq!(
                verify(&secret, bad, at(1_234_567_890), None),
                Err(TotpError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn generated_secrets_are_160_bit_base32_and_make_an_otpauth_uri() {
        let secret = TotpSecret::generate();
        assert_eq!(secret.0.len(), 20);
        let b32 = secret.to_base32();
        assert_eq!(b32.expose().len(), 32);
        assert!(
            b32.expose()
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
        assert_eq!(TotpSecret::from_base32(b32.expose()), Ok(secret.clone()));
        assert_ne!(TotpSecret::generate(), secret);
        assert_eq!(format!("{secret:?}"), "TotpSecret([redacted])");

        let account = AccountId::parse("123456789012").unwrap_or_else(|e| panic!("{e}"));
        let user = UserName::parse("alice").unwrap_or_else(|e| panic!("{e}"));
        let uri = secret
            .otpauth_uri(&account, &user)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            uri.expose(),
            format!(
                "otpauth://totp/tollgate:123456789012%2Falice?secret={}&issuer=tollgate",
                b32.expose()
            )
        );
        assert_eq!(
            TotpSecret::from_base32("AAAA"),
            Err(TotpError::InvalidSecret)
        );
        assert_eq!(
            TotpSecret::from_base32("not base32!"),
            Err(TotpError::InvalidSecret)
        );
    }

    /// A code from a standard authenticator (oathtool, with its clock pinned) verifies.
    #[test]
    fn codes_from_oathtool_verify() {
        let secret = TotpSecret::generate();
        let b32 = secret.to_base32();
        for unix in [1_700_000_000_i64, 1_700_000_029, 2_000_000_000] {
            let when = at(unix).format("%Y-%m-%d %H:%M:%S UTC").to_string();
            let output = std::process::Command::new("oathtool")
                .args(["--totp", "-b", "--now", &when, b32.expose()])
                .output()
                .unwrap_or_else(|e| {
                    panic!("could not run `oathtool` ({e}); install it: apt-get install oathtool")
                });
            assert!(output.status.success(), "oathtool failed: {output:?}");
            let code = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            let step = verify(&secret, &code, at(unix), None)
                .unwrap_or_else(|e| panic!("oathtool code {code} at {when}: {e}"));
            assert_eq!(step, u64::try_from(unix).unwrap_or_default() / 30);
        }
    }
}
