//! Ed25519 signing keys for tokens (SPEC U7): created on first use, rotated on demand, kept
//! verifying after rotation until every token they signed has expired, published as JWKS.
//!
//! Keys live in a directory the caller chooses (e.g. `<data_dir>/keys/`, mode 0700), one
//! PKCS#8 DER file per key (mode 0600) named `ed25519-<created unix ms>-<kid>.pk8`. The
//! creation times order the keys: the newest is active, and a key is retired when its successor
//! was created. So the file names are the whole state; there is no metadata file to corrupt.
//! Key files with looser permissions are refused, as ssh refuses a readable private key; a
//! directory that is too open is tightened to 0700.
//!
//! This module does not sign or verify tokens (see `token`), and never logs key material.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use jsonwebtoken::{DecodingKey, EncodingKey};
use parking_lot::RwLock;
use sha2::{Digest as _, Sha256};

/// A key id: the first 16 hex digits of the SHA-256 of the raw public key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kid(String);

/// The signing keys, newest (active) last. Shared by reference; rotation takes a write lock
/// that is never held across an `.await` (there is none in this module).
pub struct KeyRing {
    dir: PathBuf,
    /// How long a retired key keeps verifying: the longest lifetime of any token it signed.
    max_token_ttl: Duration,
    keys: RwLock<Vec<KeyEntry>>,
}

/// The active key, ready to sign with.
#[derive(Clone)]
pub struct ActiveKey {
    pub kid: Kid,
    pub encoding: EncodingKey,
    /// The same key, already expanded: jsonwebtoken re-parses the PKCS#8 DER and recomputes
    /// the public key on every `encode` (about as costly as the signature itself), so tokens
    /// are signed with this instead.
    pub signing: Arc<SigningKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key directory `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is readable by others (mode {mode:o}); run `chmod {want:o} {path}`")]
    InsecurePermissions { path: PathBuf, mode: u32, want: u32 },
    #[error("key file `{path}` is not an Ed25519 PKCS#8 key")]
    InvalidKeyFile { path: PathBuf },
    #[error("key file `{path}` does not hold the key its name says")]
    KidMismatch { path: PathBuf },
    #[error("could not encode a new key: {0}")]
    Encode(String),
}

#[derive(Clone)]
struct KeyEntry {
    kid: Kid,
    created_at: DateTime<Utc>,
    path: PathBuf,
    public: [u8; 32],
    encoding: EncodingKey,
    signing: Arc<SigningKey>,
    decoding: DecodingKey,
}

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
const FILE_PREFIX: &str = "ed25519-";
const FILE_SUFFIX: &str = ".pk8";

// === impl Kid ===

impl Kid {
    fn of_public_key(public: &[u8; 32]) -> Self {
        let digest = Sha256::digest(public);
        let mut hex = hex::encode(digest);
        hex.truncate(16);
        Self(hex)
    }

    /// Accepts exactly 16 lowercase hex digits; anything else (paths, SQL, URLs, huge strings)
    /// is refused before it can be looked up, stored or echoed.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl KeyRing ===

impl KeyRing {
    /// Opens the key directory (creating it, mode 0700), loads every key, drops keys whose
    /// tokens have all expired, and creates the first key if there is none.
    pub fn open(
        dir: impl Into<PathBuf>,
        max_token_ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Self, KeyError> {
        let dir = dir.into();
        ensure_private_dir(&dir)?;
        let mut keys = load_keys(&dir)?;
        if keys.is_empty() {
            keys.push(create_key(&dir, now, None)?);
        }
        let ring = Self {
            dir,
            max_token_ttl,
            keys: RwLock::new(keys),
        };
        ring.prune(now)?;
        Ok(ring)
    }

    /// The key new tokens are signed with.
    pub fn active(&self) -> Option<ActiveKey> {
        self.keys.read().last().map(|k| ActiveKey {
            kid: k.kid.clone(),
            encoding: k.encoding.clone(),
            signing: k.signing.clone(),
        })
    }

    /// The key to verify a token signed by `kid` at `now`: the active key, or a retired key
    /// whose successor was created less than `max_token_ttl` ago.
    pub fn decoding_key(&self, kid: &Kid, now: DateTime<Utc>) -> Option<DecodingKey> {
        let keys = self.keys.read();
        let index = keys.iter().position(|k| &k.kid == kid)?;
        match keys.get(index + 1) {
            Some(successor) if successor.created_at + self.max_token_ttl <= now => None,
            _ => keys.get(index).map(|k| k.decoding.clone()),
        }
    }

    /// Whether a token signed by `kid` would still be verified at `now` (the verified-token
    /// cache asks this on every hit, so a key past its grace stops a cached token at once).
    pub fn accepts(&self, kid: &Kid, now: DateTime<Utc>) -> bool {
        let keys = self.keys.read();
        let Some(index) = keys.iter().position(|k| &k.kid == kid) else {
            return false;
        };
        !matches!(keys.get(index + 1), Some(successor) if successor.created_at + self.max_token_ttl <= now)
    }

    /// Makes a new active key; older keys keep verifying until their grace ends.
    pub fn rotate(&self, now: DateTime<Utc>) -> Result<Kid, KeyError> {
        let newest = self.keys.read().last().map(|k| k.created_at);
        let key = create_key(&self.dir, now, newest)?;
        let kid = key.kid.clone();
        self.keys.write().push(key);
        self.prune(now)?;
        Ok(kid)
    }

    /// Deletes retired keys whose grace (`retired_at + max_token_ttl`) has passed.
    pub fn prune(&self, now: DateTime<Utc>) -> Result<(), KeyError> {
        let mut keys = self.keys.write();
        // A key is expired when its successor was created at least `max_token_ttl` ago;
        // keys are sorted, so the expired ones are a prefix.
        let mut expired = 0;
        for pair in keys.windows(2) {
            match pair {
                [_, successor] if successor.created_at + self.max_token_ttl <= now => {
                    expired += 1;
                }
                _ => break,
            }
        }
        for key in keys.drain(..expired) {
            fs::remove_file(&key.path).map_err(|source| KeyError::Io {
                path: key.path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Every key still able to verify at `now`, as a JWKS document (RFC 8037 OKP keys).
    pub fn jwks(&self, now: DateTime<Utc>) -> serde_json::Value {
        let keys = self.keys.read();
        let live = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| match keys.get(i + 1) {
                Some(successor) => successor.created_at + self.max_token_ttl > now,
                None => true,
            });
        let jwks: Vec<serde_json::Value> = live
            .map(|(_, k)| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(k.public),
                    "kid": k.kid.as_str(),
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": jwks })
    }

    /// The ids of all loaded keys, oldest first.
    pub fn kids(&self) -> Vec<Kid> {
        self.keys.read().iter().map(|k| k.kid.clone()).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("dir", &self.dir)
            .field("kids", &self.kids())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ActiveKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

fn ensure_private_dir(dir: &Path) -> Result<(), KeyError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_error(dir))?;
    // A directory made by someone else may be more open than ours would be. Tightening it
    // never weakens anything, so do that rather than refuse to start; key files that were
    // exposed are another matter (see `check_mode`).
    if check_mode(dir, DIR_MODE).is_err() {
        tracing::warn!(dir = %dir.display(), "key directory was accessible to others; setting mode 0700");
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io_error(dir))?;
    }
    check_mode(dir, DIR_MODE)
}

/// Refuses a file or directory that group or others can access at all.
fn check_mode(path: &Path, want: u32) -> Result<(), KeyError> {
    let mode = fs::metadata(path)
        .map_err(io_error(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_owned(),
            mode,
            want,
        });
    }
    Ok(())
}

fn load_keys(dir: &Path) -> Result<Vec<KeyEntry>, KeyError> {
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        let Some((created_at, kid)) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_file_name)
        else {
            // Not ours (or a temporary file from an interrupted write): leave it alone.
            continue;
        };
        check_mode(&path, FILE_MODE)?;
        let der = fs::read(&path).map_err(io_error(&path))?;
        let signing = SigningKey::from_pkcs8_der(&der)
            .map_err(|_| KeyError::InvalidKeyFile { path: path.clone() })?;
        let entry = entry_for(&signing, &der, created_at, path.clone())?;
        if entry.kid != kid {
            return Err(KeyError::KidMismatch { path });
        }
        keys.push(entry);
    }
    keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
    Ok(keys)
}

fn parse_file_name(name: &str) -> Option<(DateTime<Utc>, Kid)> {
    let rest = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    let (millis, kid) = rest.split_once('-')?;
    let created_at = DateTime::from_timestamp_millis(millis.parse().ok()?)?;
    Some((created_at, Kid::parse(kid)?))
}

/// Generates a key and writes it (0600, write to a temporary name then rename, so a crash
/// never leaves a half-written key under a real name). Creation times strictly increase, so a
/// rotation within the same millisecond as the previous key still orders after it.
fn create_key(
    dir: &Path,
    now: DateTime<Utc>,
    newest: Option<DateTime<Utc>>,
) -> Result<KeyEntry, KeyError> {
    let created_at = match newest {
        Some(newest) if newest >= now => newest + Duration::milliseconds(1),
        _ => now,
    };
    let signing = SigningKey::generate(&mut rand::rngs::OsRng);
    let der = signing
        .to_pkcs8_der()
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    let kid = Kid::of_public_key(&signing.verifying_key().to_bytes());
    let name = format!(
        "{FILE_PREFIX}{}-{kid}{FILE_SUFFIX}",
        created_at.timestamp_millis()
    );
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(io_error(&tmp))?;
        file.write_all(der.as_bytes()).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    entry_for(&signing, der.as_bytes(), created_at, path)
}

fn entry_for(
    signing: &SigningKey,
    pkcs8_der: &[u8],
    created_at: DateTime<Utc>,
    path: PathBuf,
) -> Result<KeyEntry, KeyError> {
    let public = signing.verifying_key().to_bytes();
    let decoding = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(public))
        .map_err(|_| KeyError::InvalidKeyFile { path: path.clone() })?;
    Ok(KeyEntry {
        kid: Kid::of_public_key(&public),
        created_at,
        path,
        public,
        encoding: EncodingKey::from_ed_der(pkcs8_der),
        signing: Arc::new(signing.clone()),
        decoding,
    })
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    reason = "serde_json::Value indexing yields Null instead of panicking"
)]
mod tests;
