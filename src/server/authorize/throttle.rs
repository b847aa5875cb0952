//! The deny throttle (`[audit] deny_rate`, issue 16 item 11): a principal whose calls keep being
//! denied is answered 429 `SlowDown` before Cedar runs, and writes no decision record.
//!
//! Each principal that was denied has a token bucket of `rate` tokens, refilled at `rate` a
//! second; a denial takes one. While its bucket is empty, the principal's calls are refused
//! before authorization, whatever they ask (whether a call would be allowed is only known by
//! deciding it, which is the cost being limited). Allowed calls take nothing, so a principal
//! that is not denied never meets this. Without it a user with no permissions wrote ~2,000
//! fsync'd decision records a second and slowed every other tenant down.
//!
//! Per instance and in memory: it protects this instance's decision log writer, and a bucket
//! forgotten on restart only lets `rate` more denials through. Buckets live in 16 shards, each
//! bounded: when a shard grows past [`SHARD_SOFT_LIMIT`], buckets that have refilled (which
//! change nothing) are dropped. Time comes from the caller (the injected clock).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

/// Buckets per shard beyond which full buckets are swept out.
pub const SHARD_SOFT_LIMIT: usize = 4096;
const SHARDS: usize = 16;
/// Tokens are counted in thousandths, so refill needs no floats.
const MILLI: u64 = 1000;

/// Who is throttled: an account's user (by its case-insensitive key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrincipalKey {
    pub account: String,
    pub user: String,
}

/// A refused call: how long until the principal's next call is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after_secs: u64,
    /// The first refusal of this principal in the current one-second window (log it).
    pub first_in_window: bool,
}

pub struct DenyThrottle {
    /// Denials a second per principal; 0 turns the throttle off.
    rate: u64,
    shards: [Mutex<HashMap<PrincipalKey, Bucket>>; SHARDS],
    hasher: std::collections::hash_map::RandomState,
    /// Buckets in all shards: 0 lets `check` skip the locks entirely.
    tracked: AtomicUsize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    refilled_at: DateTime<Utc>,
    /// The unix second of the last logged refusal.
    logged_second: i64,
}

// === impl DenyThrottle ===

impl DenyThrottle {
    pub fn new(rate: u32) -> Self {
        Self {
            rate: u64::from(rate),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            hasher: std::collections::hash_map::RandomState::new(),
            tracked: AtomicUsize::new(0),
        }
    }

    /// Before authorization: refuses the call if `principal` is out of denials at `now`.
    pub fn check(&self, principal: &PrincipalKey, now: DateTime<Utc>) -> Result<(), Throttled> {
        if self.rate == 0 || self.tracked.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let mut shard = self.shard(principal).lock();
        let Some(bucket) = shard.get_mut(principal) else {
            return Ok(());
        };
        bucket.refill(now, self.rate);
        if bucket.milli_tokens >= MILLI {
            return Ok(());
        }
        let missing = MILLI - bucket.milli_tokens;
        // `rate` tokens a second is `rate` thousandths a millisecond.
        let wait_ms = missing.div_ceil(self.rate);
        let second = now.timestamp();
        let first_in_window = bucket.logged_second != second;
        bucket.logged_second = second;
        Err(Throttled {
            retry_after_secs: wait_ms.div_ceil(1000).max(1),
            first_in_window,
        })
    }

    /// After a Deny: takes one token from `principal`'s bucket.
    pub fn denied(&self, principal: &PrincipalKey, now: DateTime<Utc>) {
        if self.rate == 0 {
            return;
        }
        let capacity = self.rate * MILLI;
        let mut shard = self.shard(principal).lock();
        if !shard.contains_key(principal) && shard.len() >= SHARD_SOFT_LIMIT {
            let before = shard.len();
            shard.retain(|_, bucket| {
                bucket.refill(now, self.rate);
                bucket.milli_tokens < capacity
            });
            self.tracked
                .fetch_sub(before - shard.len(), Ordering::Relaxed);
        }
        let bucket = shard.entry(principal.clone()).or_insert_with(|| {
            self.tracked.fetch_add(1, Ordering::Relaxed);
            Bucket {
                milli_tokens: capacity,
                refilled_at: now,
                logged_second: i64::MIN,
            }
        });
        bucket.refill(now, self.rate);
        bucket.milli_tokens = bucket.milli_tokens.saturating_sub(MILLI);
    }

    #[expect(
        clippy::indexing_slicing,
        reason = "the index is taken modulo the array's length"
    )]
    fn shard(&self, principal: &PrincipalKey) -> &Mutex<HashMap<PrincipalKey, Bucket>> {
        &self.shards[(self.hasher.hash_one(principal) as usize) % SHARDS]
    }
}

// === impl Bucket ===

impl Bucket {
    fn refill(&mut self, now: DateTime<Utc>, rate: u64) {
        let elapsed_ms = u64::try_from((now - self.refilled_at).num_milliseconds()).unwrap_or(0);
        if elapsed_ms == 0 {
            return;
        }
        self.milli_tokens = self
            .milli_tokens
            .saturating_add(elapsed_ms.saturating_mul(rate))
            .min(rate * MILLI);
        self.refilled_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str) -> PrincipalKey {
        PrincipalKey {
            account: "123456789012".into(),
            user: user.into(),
        }
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap_or_default()
    }

    #[test]
    fn d1_a_principal_past_its_denials_is_refused_until_a_token_refills() {
        let throttle = DenyThrottle::new(20);
        let dev = key("dev");
        for _ in 0..20 {
            assert!(throttle.check(&dev, at(0)).is_ok());
            throttle.denied(&dev, at(0));
        }
        let refused = throttle.check(&dev, at(0));
        assert_eq!(
            refused,
            Err(Throttled {
                retry_after_secs: 1,
                first_in_window: true
            })
        );
        // Logged once per window.
        assert!(matches!(
            throttle.check(&dev, at(10)),
            Err(Throttled {
                first_in_window: false,
                ..
            })
        ));
        assert!(throttle.check(&key("ops"), at(0)).is_ok(), "per principal");
        // One token is back after 1/20 s.
        assert!(throttle.check(&dev, at(50)).is_ok());
    }

    #[test]
    fn d1_full_buckets_are_swept_when_a_shard_grows() {
        let throttle = DenyThrottle::new(1);
        for i in 0..(SHARDS * SHARD_SOFT_LIMIT * 2) {
            throttle.denied(&key(&format!("u{i}")), at(i as i64 * 1000));
        }
        assert!(throttle.tracked.load(Ordering::Relaxed) <= SHARDS * (SHARD_SOFT_LIMIT + 1));
    }

    #[test]
    fn d1_a_zero_rate_turns_it_off() {
        let throttle = DenyThrottle::new(0);
        for _ in 0..100 {
            throttle.denied(&key("dev"), at(0));
        }
        assert!(throttle.check(&key("dev"), at(0)).is_ok());
    }
}
