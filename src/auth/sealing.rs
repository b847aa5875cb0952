//! TOTP secrets at rest (issue 16 item 15): sealed with AES-256-GCM under a key kept beside the
//! signing keys, in `<data>/keys/mfa-secrets.key` (32 random bytes, mode 0600, in the 0700 key
//! directory). A fleet shares its key directory, so its instances share this key as they share
//! the signing keys; the first instance to start creates it (atomically: a hard link that only
//! one instance can make), the others read it.
//!
//! A sealed value is `v1:` and base64url of a fresh 96-bit nonce followed by the ciphertext and
//! its tag. The account id and the case-folded user name are the associated data, so a sealed
//! secret copied onto another user's row does not open. Values without the prefix are plain
//! text from before sealing; the store seals them once at startup (`seal_mfa_secrets`).

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead as _, AeadCore as _, KeyInit as _, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The key's file name in the key directory.
pub const KEY_FILE: &str = "mfa-secrets.key";
const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
const PREFIX: &str = "v1:";

/// Seals and opens TOTP secrets. `Debug` shows nothing of the key.
#[derive(Clone)]
pub struct SecretSealer {
    cipher: Aes256Gcm,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("mfa secret key `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("mfa secret key `{path}` is not {KEY_BYTES} bytes")]
    InvalidKeyFile { path: PathBuf },
    #[error(
        "a sealed mfa secret does not open with this key (another data dir's key, or a changed row)"
    )]
    Unseal,
    #[error("could not seal an mfa secret")]
    Seal,
}

// === impl SecretSealer ===

impl SecretSealer {
    /// Opens the key in `dir` (the signing keys' directory, which must exist and be private),
    /// creating it on first use.
    pub fn open(dir: &Path) -> Result<Self, SealError> {
        let path = dir.join(KEY_FILE);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SealError::Io { path, source }
        };
        if !path.exists() {
            let key = Aes256Gcm::generate_key(OsRng);
            let tmp = dir.join(format!(".{KEY_FILE}.{}.tmp", std::process::id()));
            {
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io(&tmp))?;
                file.write_all(&key[..]).map_err(io(&tmp))?;
                file.sync_all().map_err(io(&tmp))?;
            }
            // Only one instance of a fleet wins the link; the others use the winner's key.
            let linked = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        let mode = fs::metadata(&path).map_err(io(&path))?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SealError::InsecurePermissions { path, mode });
        }
        let bytes = fs::read(&path).map_err(io(&path))?;
        if bytes.len() != KEY_BYTES {
            return Err(SealError::InvalidKeyFile { path });
        }
        let cipher =
            Aes256Gcm::new_from_slice(&bytes).map_err(|_| SealError::InvalidKeyFile { path })?;
        Ok(Self { cipher })
    }

    /// Whether a stored value is sealed (else it is plain text from before sealing).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }

    /// Seals `secret` for the user `(account, user_key)`.
    pub fn seal(&self, secret: &str, account: &str, user_key: &str) -> Result<String, SealError> {
        let nonce = Aes256Gcm::generate_nonce(OsRng);
        let aad = associated_data(account, user_key);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Seal)?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Opens a value [`seal`](Self::seal) made for the same user; plain text passes through.
    pub fn open_value(
        &self,
        stored: &str,
        account: &str,
        user_key: &str,
    ) -> Result<String, SealError> {
        let Some(encoded) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| SealError::Unseal)?;
        if bytes.len() <= NONCE_BYTES {
            return Err(SealError::Unseal);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SealError::Unseal)?;
        let aad = associated_data(account, user_key);
        let plain = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Unseal)?;
        String::from_utf8(plain).map_err(|_| SealError::Unseal)
    }
}

impl fmt::Debug for SecretSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretSealer([redacted])")
    }
}

fn associated_data(account: &str, user_key: &str) -> Vec<u8> {
    format!("tollgate-mfa-v1\0{account}\0{user_key}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u3_sealed_secrets_open_only_for_their_user_and_the_key_file_is_private() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sealer = SecretSealer::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
        let sealed = sealer
            .seal(secret, "123456789012", "alice")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(SecretSealer::is_sealed(&sealed));
        assert!(!sealed.contains(secret));
        assert_ne!(
            sealed,
            sealer
                .seal(secret, "123456789012", "alice")
                .unwrap_or_else(|e| panic!("{e}")),
            "a fresh nonce each time"
        );
        let opened = sealer
            .open_value(&sealed, "123456789012", "alice")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opened, secret);
        assert!(sealer.open_value(&sealed, "123456789012", "bob").is_err());
        assert!(sealer.open_value(&sealed, "210987654321", "alice").is_err());
        // Plain text from before sealing passes through.
        assert_eq!(
            sealer
                .open_value(secret, "123456789012", "alice")
                .unwrap_or_default(),
            secret
        );
        // A second open (another instance of the fleet) reads the same key.
        let again = SecretSealer::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            again
                .open_value(&sealed, "123456789012", "alice")
                .unwrap_or_default(),
            secret
        );
        assert_eq!(format!("{again:?}"), "SecretSealer([redacted])");
    }
}
