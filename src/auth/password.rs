//! Password hashing and verification with Argon2id (SPEC U3, U4, U2 reuse prevention), and the
//! queue in front of it.
//!
//! Argon2id costs ~15 ms of CPU per hash or verify (REFERENCE.md), so it never runs on the async
//! executor: it runs on a fixed set of dedicated threads. Dedicated threads rather than tokio's
//! blocking pool: each hash allocates 19 MiB, and the allocator keeps freed memory in
//! per-thread arenas, so hashing on whichever of hundreds of blocking threads is free made a
//! login flood grow the process by gigabytes (docs/benchmarks.md); a fixed set of threads
//! bounds it to about threads x 19 MiB. Parameters are the argon2 crate's defaults (m = 19456
//! KiB, t = 2, p = 1: the OWASP baseline); a stored hash carries its own parameters, so raising
//! them later still verifies old hashes.
//!
//! # The queue (issue 16, item 5)
//! A login flood must not starve everyone else's password work. Work waits in one of two
//! [`Lane`]s: `Login` (password checks of `POST /auth/login`) and `Account` (sign-ups, new users,
//! password changes). `login_threads` threads serve the login lane first and take account work
//! when no login waits; one more thread serves only the account lane, so password changes and
//! sign-ups keep a hashing slot of their own whatever logins do. Within a lane, work is queued
//! per [`ClientAddress`] and served round-robin, one job per address per turn, so one address
//! cannot push the others back. A lane holds at most `capacity` waiting jobs, and one address at
//! most `per_address` of them; past that the work is refused at once with
//! [`PasswordError::Busy`] (429 `SlowDown` with `Retry-After`), and costs nothing. Work whose
//! caller went away (the client hung up) is skipped when its turn comes.
//!
//! Unknown users are verified against a dummy hash computed once, so a login for a user that does
//! not exist costs the same as a wrong password (U4). This module does not know where hashes are
//! stored, and never logs a password or a hash.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{
    PasswordHash as PhcHash, PasswordHasher as _, PasswordVerifier as _, SaltString,
};
use argon2::{Algorithm, Argon2};
use parking_lot::{Condvar, Mutex};

use super::client_address::ClientAddress;
use super::secret::Secret;

/// The longest password accepted, in bytes. Argon2 would take more, but a cap keeps a single
/// request from buying unbounded hashing work. 512 bytes: the policies' cap of 128 characters
/// (`password_policy::MAX_PASSWORD_CHARS`) at UTF-8's 4 bytes a character.
pub const MAX_PASSWORD_BYTES: usize = 512;

/// A unit of password work for a hashing thread.
type Job = Box<dyn FnOnce(&Shared) + Send>;

/// An Argon2id hash in PHC string form (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`): what the
/// store keeps instead of a password. `Debug` hides it: a hash is offline-crackable material.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

/// Which share of the hashing threads a piece of work waits for (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// `POST /auth/login`.
    Login,
    /// Sign-ups, new users, password changes.
    Account,
}

/// Who asks for password work: its lane and the client address it queues under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requester {
    lane: Lane,
    address: ClientAddress,
}

/// How much work may wait, per lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Waiting jobs in one lane, all addresses together.
    pub capacity: usize,
    /// Waiting jobs of one client address in one lane.
    pub per_address: usize,
}

/// Hashes and verifies passwords on dedicated threads, through the fair, bounded queue.
#[derive(Clone)]
pub struct PasswordHasher {
    shared: Arc<Shared>,
    /// Stops the threads when the last clone goes.
    _closer: Arc<Closer>,
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
    /// The lane, or this address's share of it, is full.
    #[error("too much password work is waiting; retry in {retry_after_secs} s")]
    Busy { retry_after_secs: u64 },
}

struct Shared {
    queue: Mutex<Lanes>,
    work: Condvar,
    closed: AtomicBool,
    limits: QueueLimits,
    login_threads: usize,
    /// Counts refused work (the `/metrics` family `password_queue_rejections`).
    rejections: prometheus_client::metrics::counter::Counter,
    /// Verified against when the user does not exist, so that case costs a real verify.
    dummy: OnceLock<PasswordHash>,
    /// Moving averages (1/8 weight) in nanoseconds: the run time of one job, and the time from
    /// submitting a login verification to its result (queueing included).
    job_nanos: AtomicU64,
    login_wait_nanos: AtomicU64,
}

#[derive(Default)]
struct Lanes {
    login: FairQueue,
    account: FairQueue,
}

/// Jobs per client address, served round-robin.
#[derive(Default)]
struct FairQueue {
    waiting: HashMap<ClientAddress, VecDeque<Job>>,
    /// Addresses with waiting work, in the order of their next turn.
    turns: VecDeque<ClientAddress>,
    len: usize,
}

/// Which lanes a hashing thread serves.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// Logins first, account work when no login waits.
    Shared,
    /// Account work only: the slot logins can never take.
    AccountOnly,
}

struct Closer(Arc<Shared>);

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

// === impl Requester ===

impl Requester {
    /// A login's password check from `ip`.
    pub fn login(ip: IpAddr) -> Self {
        Self {
            lane: Lane::Login,
            address: ClientAddress::new(ip),
        }
    }

    /// A sign-up, new user or password change from `ip`.
    pub fn account(ip: IpAddr) -> Self {
        Self {
            lane: Lane::Account,
            address: ClientAddress::new(ip),
        }
    }

    /// Work the operator's own tooling asks for (the demo's setup), not a client.
    pub fn operator() -> Self {
        Self::account(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    pub fn lane(&self) -> Lane {
        self.lane
    }
}

// === impl QueueLimits ===

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            capacity: 64,
            per_address: 8,
        }
    }
}

// === impl PasswordHasher ===

impl PasswordHasher {
    /// `login_threads` threads hash for logins (0 is treated as 1, since 0 would block every
    /// login forever), and one more only for account work. The dummy hash for unknown users is
    /// computed at once.
    pub fn new(
        login_threads: usize,
        limits: QueueLimits,
        rejections: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        let login_threads = login_threads.max(1);
        let limits = QueueLimits {
            capacity: limits.capacity.max(1),
            per_address: limits.per_address.clamp(1, limits.capacity.max(1)),
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Lanes::default()),
            work: Condvar::new(),
            closed: AtomicBool::new(false),
            limits,
            login_threads,
            rejections,
            dummy: OnceLock::new(),
            job_nanos: AtomicU64::new(0),
            login_wait_nanos: AtomicU64::new(0),
        });
        let roles = std::iter::repeat_n(Role::Shared, login_threads).chain([Role::AccountOnly]);
        for (i, role) in roles.enumerate() {
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tollgate-argon2-{i}"))
                .spawn(move || shared.serve(role));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        // The dummy hash, so the first unknown-user login is not slower than the others. On a
        // login thread: the account thread allocates its 19 MiB only when account work comes.
        {
            let job: Job = Box::new(|shared: &Shared| {
                let _ = shared.dummy_hash();
            });
            let operator = Requester::operator().address;
            let _ = shared.queue.lock().login.push(operator, job, limits);
            // A thread may already be waiting: wake it, or the job (and, with a lane of one,
            // every login refused behind it) would wait for the next push.
            shared.work.notify_all();
        }
        Self {
            _closer: Arc::new(Closer(shared.clone())),
            shared,
        }
    }

    /// Hashes a new password with a fresh random salt.
    pub async fn hash(
        &self,
        password: &Secret,
        requester: Requester,
    ) -> Result<PasswordHash, PasswordError> {
        check_length(password)?;
        let password = password.clone();
        self.run(requester, move |_| hash_blocking(&password))
            .await?
    }

    /// Whether `password` matches `stored`. With `None` (the user does not exist) it still
    /// verifies against a dummy hash, so the time taken does not reveal that, and returns false.
    /// A password over the length cap is false without any work.
    pub async fn verify(
        &self,
        password: &Secret,
        stored: Option<&PasswordHash>,
        requester: Requester,
    ) -> Result<bool, PasswordError> {
        if check_length(password).is_err() {
            return Ok(false);
        }
        let password = password.clone();
        let stored = stored.cloned();
        let submitted = Instant::now();
        let result = self
            .run(requester, move |shared| match stored {
                Some(stored) => Ok(verify_blocking(&password, &stored)),
                None => shared.dummy_hash().map(|dummy| {
                    // The same work as for a real user; the answer is no regardless.
                    let _ = verify_blocking(&password, &dummy);
                    false
                }),
            })
            .await?;
        if requester.lane == Lane::Login {
            average(&self.shared.login_wait_nanos, submitted.elapsed());
        }
        result
    }

    /// Whether `candidate` matches any of `history` (U2 `reuse_prevention`). The caller passes
    /// the current hash and the previous ones, newest first, cut to the policy's count.
    pub async fn is_reused(
        &self,
        candidate: &Secret,
        history: &[PasswordHash],
        requester: Requester,
    ) -> Result<bool, PasswordError> {
        check_length(candidate)?;
        if history.is_empty() {
            return Ok(false);
        }
        let candidate = candidate.clone();
        let history = history.to_vec();
        // One job for the whole scan: the caller is an authenticated user changing a
        // password, so finishing early on a match reveals nothing.
        self.run(requester, move |_| {
            history
                .iter()
                .any(|stored| verify_blocking(&candidate, stored))
        })
        .await
    }

    /// Whether `requester` would be queued now; refuses as a full queue would. A caller checks
    /// this before any other work for a request that will need hashing, so that a refused
    /// request costs next to nothing (the queue may still be full by the time it submits).
    pub fn check_room(&self, requester: Requester) -> Result<(), PasswordError> {
        let lanes = self.shared.queue.lock();
        let lane = match requester.lane {
            Lane::Login => &lanes.login,
            Lane::Account => &lanes.account,
        };
        if lane.has_room(requester.address, self.shared.limits) {
            return Ok(());
        }
        let waiting = lane.len;
        drop(lanes);
        self.shared.rejections.inc();
        Err(PasswordError::Busy {
            retry_after_secs: self.shared.retry_after(requester.lane, waiting),
        })
    }

    /// How long a login's password check takes now, queueing included (a moving average):
    /// what an answer that skips the check waits, so that it takes as long (U4).
    pub fn typical_login_check(&self) -> Duration {
        let measured = self.shared.login_wait_nanos.load(Ordering::Relaxed);
        if measured > 0 {
            return Duration::from_nanos(measured);
        }
        // No login checked yet since start (a lock from before a restart): one job's time.
        Duration::from_nanos(
            self.shared
                .job_nanos
                .load(Ordering::Relaxed)
                .max(15_000_000),
        )
    }

    async fn run<T: Send + 'static>(
        &self,
        requester: Requester,
        work: impl FnOnce(&Shared) -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |shared: &Shared| {
            // The caller went away (its client hung up): nobody needs this work.
            if done.is_closed() {
                return;
            }
            let started = Instant::now();
            let value = work(shared);
            average(&shared.job_nanos, started.elapsed());
            let _ = done.send(value);
        });
        {
            let mut lanes = self.shared.queue.lock();
            let lane = match requester.lane {
                Lane::Login => &mut lanes.login,
                Lane::Account => &mut lanes.account,
            };
            if lane
                .push(requester.address, job, self.shared.limits)
                .is_err()
            {
                let waiting = lane.len;
                drop(lanes);
                self.shared.rejections.inc();
                return Err(PasswordError::Busy {
                    retry_after_secs: self.shared.retry_after(requester.lane, waiting),
                });
            }
        }
        self.shared.work.notify_all();
        result
            .await
            .map_err(|_| PasswordError::Worker("the hashing thread failed".into()))
    }
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lanes = self.shared.queue.lock();
        f.debug_struct("PasswordHasher")
            .field("login_waiting", &lanes.login.len)
            .field("account_waiting", &lanes.account.len)
            .finish_non_exhaustive()
    }
}

// === impl Shared ===

impl Shared {
    /// A hashing thread: takes the next job its role may run, runs it, repeats until closed.
    fn serve(&self, role: Role) {
        loop {
            let job = {
                let mut lanes = self.queue.lock();
                loop {
                    if self.closed.load(Ordering::Acquire) {
                        return;
                    }
                    let next = match role {
                        Role::Shared => lanes.login.pop().or_else(|| lanes.account.pop()),
                        Role::AccountOnly => lanes.account.pop(),
                    };
                    match next {
                        Some(job) => break job,
                        None => self.work.wait(&mut lanes),
                    }
                }
            };
            // A panicking job must not take the thread (and every later login) with it; its
            // caller sees the dropped result instead.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(self)));
        }
    }

    fn dummy_hash(&self) -> Result<PasswordHash, PasswordError> {
        if let Some(dummy) = self.dummy.get() {
            return Ok(dummy.clone());
        }
        let random: [u8; 32] = rand::random();
        let hash = hash_blocking(&Secret::new(hex::encode(random)))?;
        Ok(self.dummy.get_or_init(|| hash).clone())
    }

    /// Seconds until `waiting` jobs ahead in `lane` are likely done (at least 1).
    fn retry_after(&self, lane: Lane, waiting: usize) -> u64 {
        let threads = match lane {
            Lane::Login => self.login_threads,
            Lane::Account => 1,
        } as u64;
        let job = self.job_nanos.load(Ordering::Relaxed).max(15_000_000);
        let nanos = (waiting as u64 + 1).saturating_mul(job) / threads.max(1);
        nanos.div_ceil(1_000_000_000).max(1)
    }
}

// === impl FairQueue ===

impl FairQueue {
    /// Queues `job` for `address`, or gives it back when the lane or the address's share is
    /// full.
    fn push(&mut self, address: ClientAddress, job: Job, limits: QueueLimits) -> Result<(), Job> {
        if !self.has_room(address, limits) {
            return Err(job);
        }
        let waiting = self.waiting.entry(address).or_default();
        if waiting.is_empty() {
            self.turns.push_back(address);
        }
        waiting.push_back(job);
        self.len += 1;
        Ok(())
    }

    fn has_room(&self, address: ClientAddress, limits: QueueLimits) -> bool {
        self.len < limits.capacity
            && self
                .waiting
                .get(&address)
                .is_none_or(|waiting| waiting.len() < limits.per_address)
    }

    /// The next address's oldest job; that address goes to the back of the line.
    fn pop(&mut self) -> Option<Job> {
        let address = self.turns.pop_front()?;
        let waiting = self.waiting.get_mut(&address)?;
        let job = waiting.pop_front();
        if waiting.is_empty() {
            self.waiting.remove(&address);
        } else {
            self.turns.push_back(address);
        }
        if job.is_some() {
            self.len -= 1;
        }
        job
    }
}

// === impl Closer ===

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.work.notify_all();
    }
}

/// Folds `sample` into the moving average in `into` (weight 1/8; the first sample sets it).
fn average(into: &AtomicU64, sample: Duration) {
    let sample = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
    let _ = into.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
        Some(if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        })
    });
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
