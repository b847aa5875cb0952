//! Login lockout (SPEC U4, issue 16 item 8): failures count per (user, client address).
//!
//! - Five failures in a row from one [`ClientAddress`] lock that address out of that user for
//!   15 minutes, even with the right password. A series idle for 15 minutes is forgotten, and a
//!   success from the address clears it.
//! - Fifty failures within 15 minutes, from any addresses, lock the user for everyone for 15
//!   minutes. So a stranger can lock a user out of the stranger's own addresses, but the user
//!   only by spending fifty password checks in a quarter of an hour, which the password queue
//!   (per-address fairness, `auth::password`) makes slow.
//! - Failures while locked are not counted and do not extend the lock (they cost no hashing:
//!   the caller checks [`LoginAttempts::is_locked`] before verifying).
//!
//! Counting does not depend on whether the user exists: the key is the [`LoginSubject`], the
//! (account, user) pair as sent, so an unknown user is counted and locked exactly like a real
//! one and the answers reveal nothing. Everything here is pure state over times passed in; the
//! store keeps the state (on a fleet's shared database, so all instances see one count) in a
//! table bounded to [`TABLE_CAPACITY`] rows, least recently failed first out.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use crate::ids::{AccountId, UserName};

/// Consecutive failures from one address that lock that address out of the user.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 5;
/// Failures within [`FAILURE_WINDOW`], from any addresses, that lock the user for everyone.
pub const MAX_USER_FAILURES: u32 = 50;
/// The window of [`MAX_USER_FAILURES`], and how long an idle series is remembered.
pub const FAILURE_WINDOW: Duration = Duration::minutes(15);
/// How long a lock lasts.
pub const LOCKOUT_DURATION: Duration = Duration::minutes(15);
/// Most (subject, address) rows the store keeps; past it the least recently failed go first.
pub const TABLE_CAPACITY: usize = 100_000;

/// Whom a login names: the account id and user name as sent, whether or not they exist.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LoginSubject(String);

/// The failures of one (subject, address) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressAttempts {
    pub consecutive_failures: u32,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub locked_until: Option<DateTime<Utc>>,
}

/// A login subject's state as seen from one address: that address's series, and the lock
/// of the user as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoginAttempts {
    pub address: AddressAttempts,
    pub user_locked_until: Option<DateTime<Utc>>,
}

/// Which lock refuses a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// This address is locked out of this user.
    Address { until: DateTime<Utc> },
    /// The user is locked for every address.
    User { until: DateTime<Utc> },
}

// === impl LoginSubject ===

impl LoginSubject {
    /// The subject of a login for `account` and `user` as sent. A valid pair is
    /// `{account}/{user in lower case}` (user names ignore case, U1); anything else, which no
    /// user can have, is a SHA-256 of both, so a huge or odd input is a short key.
    pub fn new(account: &str, user: &str) -> Self {
        match (AccountId::parse(account), UserName::parse(user)) {
            (Ok(account), Ok(user)) => Self::of(&account, &user),
            _ => {
                let mut digest = Sha256::new();
                digest.update(account.as_bytes());
                digest.update([0]);
                digest.update(user.to_ascii_lowercase().as_bytes());
                Self(format!("?{}", hex::encode(digest.finalize())))
            }
        }
    }

    /// The subject of an existing user.
    pub fn of(account: &AccountId, user: &UserName) -> Self {
        Self(format!("{}/{}", account.as_str(), user.key()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LoginSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl AddressAttempts ===

impl AddressAttempts {
    pub fn is_locked(&self, now: DateTime<Utc>) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    /// The state as it stands at `now`: an expired lock, or a series idle for
    /// [`FAILURE_WINDOW`], is forgotten.
    pub fn current(&self, now: DateTime<Utc>) -> Self {
        if self.is_locked(now) {
            return *self;
        }
        let lock_ended = self.locked_until.is_some();
        let idle = self
            .last_failure_at
            .is_none_or(|last| now - last >= FAILURE_WINDOW);
        if lock_ended || idle {
            Self::default()
        } else {
            *self
        }
    }

    /// Whether the store may drop this row at `now` without changing any answer.
    pub fn is_forgotten(&self, now: DateTime<Utc>) -> bool {
        self.current(now) == Self::default()
    }

    fn after_failure(&self, now: DateTime<Utc>) -> Self {
        let failures = self.current(now).consecutive_failures.saturating_add(1);
        Self {
            consecutive_failures: failures,
            last_failure_at: Some(now),
            locked_until: (failures >= MAX_CONSECUTIVE_FAILURES).then(|| now + LOCKOUT_DURATION),
        }
    }
}

// === impl LoginAttempts ===

impl LoginAttempts {
    /// The lock that refuses a login at `now`, if any (the user-wide one first).
    pub fn lock(&self, now: DateTime<Utc>) -> Option<Lock> {
        match (self.user_locked_until, self.address.locked_until) {
            (Some(until), _) if now < until => Some(Lock::User { until }),
            (_, Some(until)) if now < until => Some(Lock::Address { until }),
            _ => None,
        }
    }

    pub fn is_locked(&self, now: DateTime<Utc>) -> bool {
        self.lock(now).is_some()
    }

    /// The state after a failed login at `now`; `user_failures` is how many failures of the
    /// subject from any addresses fall within the last [`FAILURE_WINDOW`], this one included.
    /// The failure that reaches a limit locks; failures while locked change nothing.
    pub fn after_failure(&self, now: DateTime<Utc>, user_failures: u32) -> Self {
        if self.is_locked(now) {
            return *self;
        }
        Self {
            address: self.address.after_failure(now),
            user_locked_until: if user_failures >= MAX_USER_FAILURES {
                Some(now + LOCKOUT_DURATION)
            } else {
                self.user_locked_until.filter(|until| now < *until)
            },
        }
    }

    /// The state after a successful login from this address: its series is cleared. (A
    /// success is only possible while nothing is locked.)
    pub fn after_success(&self) -> Self {
        Self {
            address: AddressAttempts::default(),
            user_locked_until: self.user_locked_until,
        }
    }
}

// === impl Lock ===

impl Lock {
    pub fn until(&self) -> DateTime<Utc> {
        match self {
            Lock::Address { until } | Lock::User { until } => *until,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(unix, 0).unwrap_or_else(|| panic!("bad time {unix}"))
    }

    fn fail(times: u32, mut state: LoginAttempts, now: DateTime<Utc>) -> LoginAttempts {
        for _ in 0..times {
            state = state.after_failure(now, 1);
        }
        state
    }

    #[test]
    fn u4_the_fifth_failure_from_an_address_locks_it_for_fifteen_minutes() {
        let now = at(1_700_000_000);
        let four = fail(4, LoginAttempts::default(), now);
        assert_eq!(four.address.consecutive_failures, 4);
        assert!(!four.is_locked(now));
        let five = four.after_failure(now, 5);
        assert_eq!(
            five.lock(now),
            Some(Lock::Address {
                until: now + Duration::minutes(15)
            })
        );
        assert!(five.is_locked(now + Duration::minutes(15) - Duration::seconds(1)));
        assert!(!five.is_locked(now + Duration::minutes(15)));
    }

    #[test]
    fn u4_failures_while_locked_do_not_extend_the_lock() {
        let now = at(1_700_000_000);
        let locked = fail(5, LoginAttempts::default(), now);
        let later = now + Duration::minutes(10);
        assert_eq!(locked.after_failure(later, 99), locked);
    }

    #[test]
    fn u4_a_success_resets_the_address_series() {
        let now = at(1_700_000_000);
        let four = fail(4, LoginAttempts::default(), now);
        let reset = four.after_success();
        assert_eq!(reset, LoginAttempts::default());
        assert!(!fail(4, reset, now).is_locked(now));
    }

    #[test]
    fn u4_counting_restarts_after_a_lock_expires_or_a_quiet_quarter_hour() {
        let now = at(1_700_000_000);
        let locked = fail(5, LoginAttempts::default(), now);
        let after = now + LOCKOUT_DURATION;
        let one = locked.after_failure(after, 1);
        assert_eq!(one.address.consecutive_failures, 1);
        assert!(!one.is_locked(after));
        let four = fail(4, LoginAttempts::default(), now);
        let later = now + FAILURE_WINDOW;
        assert_eq!(four.after_failure(later, 1).address.consecutive_failures, 1);
        assert!(four.address.is_forgotten(later));
        assert!(!four.address.is_forgotten(later - Duration::seconds(1)));
    }

    #[test]
    fn u4_fifty_failures_within_the_window_lock_the_user() {
        let now = at(1_700_000_000);
        let state = LoginAttempts::default().after_failure(now, 49);
        assert!(!state.is_locked(now));
        let state = LoginAttempts::default().after_failure(now, 50);
        assert_eq!(
            state.lock(now),
            Some(Lock::User {
                until: now + LOCKOUT_DURATION
            })
        );
        // A success elsewhere does not lift it.
        assert!(state.after_success().is_locked(now));
    }

    #[test]
    fn u4_subjects_ignore_user_case_and_hash_what_no_user_can_be() {
        let a = LoginSubject::new("123456789012", "Owner");
        assert_eq!(a.as_str(), "123456789012/owner");
        assert_eq!(a, LoginSubject::new("123456789012", "owner"));
        let odd = LoginSubject::new("not-an-id", &"x".repeat(10_000));
        assert!(odd.as_str().starts_with('?'));
        assert_eq!(odd.as_str().len(), 65);
        assert_ne!(odd, LoginSubject::new("not-an-id", "y"));
    }
}
