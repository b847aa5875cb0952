//! Password hashing and verification with Argon2id (SPEC U3, U4, U2 reuse prevention).
//!
//! Argon2id costs ~15 ms of CPU per hash or verify (REFERENCE.md), so it never runs on the async
//! executor: each call takes a permit from a semaphore, which bounds how many cores password
//! work may occupy, and then runs on one of as many dedicated worker threads. Dedicated threads
//! rather than tokio's blocking pool: each hash allocates 19 MiB, and the allocator keeps freed
//! memory in per-thread arenas, so hashing on whichever of hundreds of blocking threads is free
//! made a login flood grow the process by gigabytes (docs/benchmarks.md); a fixed set of threads
//! bounds it to about `permits` x 19 MiB. Parameters are the argon2 crate's
//! defaults (m = 19456 KiB, t = 2, p = 1: the OWASP baseline); a stored hash carries its own
//! parameters, so raising them later still verifies old hashes.
//!
//! Unknown users are verified against a dummy hash computed once, so a login for a user that does
//! not exist costs the same as a wrong password (U4). This module does not know where hashes are
//! stored, and never logs a password or a hash.

use std::fmt;
use std::sync::Arc;

use argon2::password_hash::{
    PasswordHash as PhcHash, PasswordHasher as _, PasswordVerifier as _, SaltString,
};
use argon2::{Algorithm, Argon2};
use tokio::sync::{OnceCell, Semaphore};

use super::secret::Secret;

/// The longest password accepted, in bytes. Argon2 would take more, but a cap keeps a single
/// request from buying unbounded hashing work, and 256 bytes is far beyond any human password.
pub const MAX_PASSWORD_BYTES: usize = 256;

/// A unit of password work for a hashing thread.
type Job = Box<dyn FnOnce() + Send>;

/// An Argon2id hash in PHC string form (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`): what the
/// store keeps instead of a password. `Debug` hides it: a hash is offline-crackable material.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

/// Hashes and verifies passwords on `permits` dedicated threads, at most `permits` at a time.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// Work for the hashing threads; they exit when the last hasher clone is dropped.
    jobs: std::sync::mpsc::Sender<Job>,
    /// Verified against when the user does not exist, so that case costs a real verify.
    dummy: Arc<OnceCell<PasswordHash>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("stored password hash is not an argon2id PHC string")]
    MalformedHash,
    #[error("argon2 failed: {0}")]
    Argon2(String),
    #[error("password hashing task failed: {0}")]
    Worker(String),
}

// === impl PasswordHash ===

impl PasswordHash {
    /// Wraps a PHC string read back from the store, checking that it is Argon2id.
    pub fn from_phc(phc: impl Into<String>) -> Result<Self, PasswordError> {
        let phc = phc.into();
        let parsed = PhcHash::new(&phc).map_err(|_| PasswordError::MalformedHash)?;
        if parsed.algorithm != Algorithm::Argon2id.ident() || parsed.hash.is_none() {
            return Err(PasswordError::MalformedHash);
        }
        Ok(Self(phc))
    }

    /// The PHC string, for the store.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash([redacted])")
    }
}

// === impl PasswordHasher ===

impl PasswordHasher {
    /// `permits` bounds concurrent Argon2 work (a count of 0 is treated as 1, since 0 would
    /// block every login forever). Use about the number of cores that may be spent on logins.
    pub fn new(permits: usize) -> Self {
        let permits = permits.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(parking_lot::Mutex::new(queue));
        for i in 0..permits {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tollgate-argon2-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = queue.lock().recv();
                        match job {
                            // A panicking job must not take the thread (and every later
                            // login) with it; its caller sees the dropped result instead.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            Err(_) => break,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Self {
            permits: Arc::new(Semaphore::new(permits)),
            jobs,
            dummy: Arc::new(OnceCell::new()),
        }
    }

    /// Hashes a new password with a fresh random salt.
    pub async fn hash(&self, password: &Secret) -> Result<PasswordHash, PasswordError> {
        check_length(password)?;
        let password = password.clone();
        self.run(move || hash_blocking(&password)).await?
    }

    /// Whether `password` matches `stored`. With `None` (the user does not exist) it still
    /// verifies against a dummy hash, so the time taken does not reveal that, and returns false.
    pub async fn verify(&self, password: &Secret, stored: Option<&PasswordHash>) -> bool {
        if check_length(password).is_err() {
            return false;
        }
        let (stored, known_user) = match stored {
            Some(stored) => (stored.clone(), true),
            None => match self.dummy_hash().await {
                Ok(dummy) => (dummy, false),
                Err(error) => {
                    tracing::warn!(%error, "could not compute the dummy password hash");
                    return false;
                }
            },
        };
        let password = password.clone();
        match self.run(move || verify_blocking(&password, &stored)).await {
            Ok(matched) => matched && known_user,
            Err(error) => {
                tracing::warn!(%error, "password verification did not run");
                false
            }
        }
    }

    /// Whether `candidate` matches any of `history` (U2 `reuse_prevention`). The caller passes
    /// the current hash and the previous ones, newest first, cut to the policy's count.
    pub async fn is_reused(
        &self,
        candidate: &Secret,
        history: &[PasswordHash],
    ) -> Result<bool, PasswordError> {
        check_length(candidate)?;
        if history.is_empty() {
            return Ok(false);
        }
        let candidate = candidate.clone();
        let history = history.to_vec();
        // One permit for the whole scan: the caller is an authenticated user changing a
        // password, so finishing early on a match reveals nothing.
        self.run(move || {
            history
                .iter()
                .any(|stored| verify_blocking(&candidate, stored))
        })
        .await
    }

    /// Computes the dummy hash now, so the first unknown-user login is not slower than others.
    pub async fn warm_up(&self) -> Result<(), PasswordError> {
        self.dummy_hash().await.map(|_| ())
    }

    async fn dummy_hash(&self) -> Result<PasswordHash, PasswordError> {
        self.dummy
            .get_or_try_init(|| async {
                let random: [u8; 32] = rand::random();
                self.hash(&Secret::new(hex::encode(random))).await
            })
            .await
            .cloned()
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        // Held until the work ends: it bounds CPU and memory, not just queueing.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| PasswordError::Worker(e.to_string()))?;
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(work());
            }))
            .map_err(|_| PasswordError::Worker("the hashing threads are gone".into()))?;
        result
            .await
            .map_err(|_| PasswordError::Worker("the hashing thread failed".into()))
    }
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("available_permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

fn check_length(password: &Secret) -> Result<(), PasswordError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

fn hash_blocking(password: &Secret) -> Result<PasswordHash, PasswordError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| PasswordError::Argon2(e.to_string()))?;
    let hash = Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map_err(|e| PasswordError::Argon2(e.to_string()))?;
    Ok(PasswordHash(hash.to_string()))
}

fn verify_blocking(password: &Secret, stored: &PasswordHash) -> bool {
    match PhcHash::new(stored.as_str()) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
