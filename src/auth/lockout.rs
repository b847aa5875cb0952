//! Login lockout (SPEC U4): five failed logins in a row lock a user for 15 minutes.
//!
//! Pure state transitions over [`LoginAttempts`], which the caller stores per user and passes
//! back in with the current time. While locked, even the right password is refused (the caller
//! checks [`LoginAttempts::is_locked`] before verifying, so a locked user costs no Argon2 work).

use chrono::{DateTime, Duration, Utc};

/// Consecutive failures that lock a user.
pub const MAX_CONSECUTIVE_FAILURES: u32 = 5;
/// How long a lock lasts.
pub const LOCKOUT_DURATION: Duration = Duration::minutes(15);

/// A user's login failure state, as the store keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoginAttempts {
    pub consecutive_failures: u32,
    pub locked_until: Option<DateTime<Utc>>,
}

// === impl LoginAttempts ===

impl LoginAttempts {
    pub fn is_locked(&self, now: DateTime<Utc>) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }

    /// The state after a failed login at `now`. The failure that reaches
    /// [`MAX_CONSECUTIVE_FAILURES`] locks; once a lock has expired, counting starts again
    /// from this failure. Failures while locked do not extend the lock.
    pub fn after_failure(&self, now: DateTime<Utc>) -> Self {
        if self.is_locked(now) {
            return *self;
        }
        let previous = if self.locked_until.is_some() {
            0 // the lock expired: a fresh series
        } else {
            self.consecutive_failures
        };
        let failures = previous.saturating_add(1);
        if failures >= MAX_CONSECUTIVE_FAILURES {
            Self {
                consecutive_failures: failures,
                locked_until: Some(now + LOCKOUT_DURATION),
            }
        } else {
            Self {
                consecutive_failures: failures,
                locked_until: None,
            }
        }
    }

    /// The state after a successful login: nothing counted, nothing locked.
    pub fn after_success(&self) -> Self {
        Self::default()
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
            state = state.after_failure(now);
        }
        state
    }

    #[test]
    fn the_fifth_consecutive_failure_locks_for_fifteen_minutes() {
        let now = at(1_700_000_000);
        let four = fail(4, LoginAttempts::default(), now);
        assert_eq!(four.consecutive_failures, 4);
        assert!(!four.is_locked(now));
        let five = four.after_failure(now);
        assert!(five.is_locked(now));
        assert_eq!(five.locked_until, Some(now + Duration::minutes(15)));
        assert!(five.is_locked(now + Duration::minutes(15) - Duration::seconds(1)));
        assert!(!five.is_locked(now + Duration::minutes(15)));
    }

    #[test]
    fn failures_while_locked_do_not_extend_the_lock() {
        let now = at(1_700_000_000);
        let locked = fail(5, LoginAttempts::default(), now);
        let later = now + Duration::minutes(10);
        assert_eq!(locked.after_failure(later), locked);
    }

    #[test]
    fn a_success_resets_the_count() {
        let now = at(1_700_000_000);
        let four = fail(4, LoginAttempts::default(), now);
        let reset = four.after_success();
        assert_eq!(reset, LoginAttempts::default());
        assert!(!fail(4, reset, now).is_locked(now));
    }

    #[test]
    fn counting_restarts_after_a_lock_expires() {
        let now = at(1_700_000_000);
        let locked = fail(5, LoginAttempts::default(), now);
        let after = now + LOCKOUT_DURATION;
        let one = locked.after_failure(after);
        assert_eq!(one.consecutive_failures, 1);
        assert_eq!(one.locked_until, None);
        assert!(!one.is_locked(after));
        let relocked = fail(4, one, after);
        assert!(relocked.is_locked(after));
    }
}
