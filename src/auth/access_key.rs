//! Access keys for programs (SPEC U8): an id like `TGAK` + 16 upper-case letters or digits, and
//! a 40-character secret shown once. Only a hash of the secret is stored.
//!
//! The secret is 30 random bytes (240 bits) in base64url, so it cannot be guessed or
//! brute-forced: a fast hash (SHA-256) is enough, unlike passwords, which need Argon2 because
//! people choose them. The store, the per-user limit and revocation are the caller's.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::secret::Secret;

/// At most this many access keys per user (U8).
pub const MAX_ACCESS_KEYS_PER_USER: usize = 2;
/// The fixed prefix of every access key id.
pub const ACCESS_KEY_ID_PREFIX: &str = "TGAK";
/// Every access key id, as `docs/openapi.json` states it.
pub const ACCESS_KEY_ID_PATTERN: &str = "^TGAK[A-Z0-9]{16}$";
const ID_RANDOM_CHARS: usize = 16;
const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// 30 bytes = 240 bits, exactly 40 base64url characters.
const SECRET_BYTES: usize = 30;
const SECRET_CHARS: usize = 40;

/// An access key id, e.g. `TGAKQ7Z3M9X2B4N8C1V5`. Not secret: it names the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccessKeyId(String);

/// SHA-256 of an access key secret, lowercase hex: what the store keeps.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKeySecretHash(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessKeyError {
    #[error("access key id must be `TGAK` and 16 upper-case letters or digits")]
    MalformedId,
    #[error("stored access key hash is not 64 lowercase hex digits")]
    MalformedHash,
}

/// A new key: its id and its secret, which the caller shows once and then forgets.
pub fn generate() -> (AccessKeyId, Secret) {
    let mut rng = rand::rngs::OsRng;
    let random: String = (0..ID_RANDOM_CHARS)
        .map(|_| {
            let i = rng.gen_range(0..ID_ALPHABET.len());
            ID_ALPHABET.get(i).copied().map_or('0', char::from)
        })
        .collect();
    let id = AccessKeyId(format!("{ACCESS_KEY_ID_PREFIX}{random}"));
    let mut bytes = [0u8; SECRET_BYTES];
    rng.fill(&mut bytes);
    (id, Secret::new(URL_SAFE_NO_PAD.encode(bytes)))
}

/// The hash to store for `secret`.
pub fn hash_secret(secret: &Secret) -> AccessKeySecretHash {
    AccessKeySecretHash(hex::encode(Sha256::digest(secret.expose().as_bytes())))
}

/// Whether `secret` is the one `stored` was made from, compared in constant time.
pub fn verify_secret(secret: &Secret, stored: &AccessKeySecretHash) -> bool {
    // Refusing other lengths early leaks nothing: every real secret has this length.
    if secret.len() != SECRET_CHARS {
        return false;
    }
    let candidate = hash_secret(secret);
    candidate.0.as_bytes().ct_eq(stored.0.as_bytes()).into()
}

// === impl AccessKeyId ===

impl AccessKeyId {
    pub fn parse(s: &str) -> Result<Self, AccessKeyError> {
        let rest = s
            .strip_prefix(ACCESS_KEY_ID_PREFIX)
            .ok_or(AccessKeyError::MalformedId)?;
        if rest.len() == ID_RANDOM_CHARS && rest.bytes().all(|b| ID_ALPHABET.contains(&b)) {
            Ok(Self(s.to_owned()))
        } else {
            Err(AccessKeyError::MalformedId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccessKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl AccessKeySecretHash ===

impl AccessKeySecretHash {
    /// Wraps a hash read back from the store.
    pub fn from_hex(hex: &str) -> Result<Self, AccessKeyError> {
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(hex.to_owned()))
        } else {
            Err(AccessKeyError::MalformedHash)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessKeySecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessKeySecretHash([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_and_secrets_have_the_documented_shape() {
        let (id, secret) = generate();
        assert_eq!(id.as_str().len(), 20);
        assert!(id.as_str().starts_with("TGAK"));
        assert_eq!(AccessKeyId::parse(id.as_str()), Ok(id.clone()));
        assert_eq!(secret.expose().len(), 40);
        let decoded = URL_SAFE_NO_PAD.decode(secret.expose()).unwrap_or_default();
        assert_eq!(decoded.len(), 30, "240 random bits");
        let (other_id, other_secret) = generate();
        assert_ne!(id, other_id);
        assert_ne!(secret.expose(), other_secret.expose());
    }

    #[test]
    fn ids_are_parsed_strictly() {
        for bad in [
            "",
            "TGAK",
            "TGAKabcdefghijklmnop",
            "AKIA0123456789ABCDEF",
            "TGAK0123456789ABCDE",
            "TGAK0123456789ABCDEFG",
        ] {
            assert_eq!(
                AccessKeyId::parse(bad),
                Err(AccessKeyError::MalformedId),
                "{bad}"
            );
        }
        assert!(AccessKeyId::parse("TGAK0123456789ABCDEF").is_ok());
    }

    #[test]
    fn only_the_hash_is_kept_and_it_verifies_the_secret() {
        let (_, secret) = generate();
        let stored = hash_secret(&secret);
        assert_eq!(stored.as_str().len(), 64);
        assert!(!stored.as_str().contains(secret.expose()));
        assert!(verify_secret(&secret, &stored));
        let (_, other) = generate();
        assert!(!verify_secret(&other, &stored));
        assert!(!verify_secret(&Secret::new(""), &stored));
        let reloaded =
            AccessKeySecretHash::from_hex(stored.as_str()).unwrap_or_else(|e| panic!("{e}"));
        assert!(verify_secret(&secret, &reloaded));
        assert_eq!(format!("{stored:?}"), "AccessKeySecretHash([redacted])");
        assert!(AccessKeySecretHash::from_hex("xyz").is_err());
        assert_eq!(
            hash_secret(&Secret::new("abc")).as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
