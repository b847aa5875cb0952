//! Login failure counters on SQL (SPEC U4; rules in `auth::lockout`): where they live so that
//! every instance of a fleet counts the same failures.
//!
//! Two tables, for existing and unknown users alike (keyed by [`LoginSubject`]):
//! - `login_failures (subject, address)`: each address's series and lock; the row with address
//!   `*` holds the user-wide lock. Rows are dropped once they no longer change any answer
//!   (a quiet quarter hour, lock over), and the table never holds more than
//!   [`crate::auth::lockout::TABLE_CAPACITY`] rows: past it, the least recently failed go first.
//! - `login_failure_times (subject, at)`: one row per failure of the last 15 minutes, for the
//!   user-wide count. Older rows are dropped with every failure recorded; a locked subject adds
//!   none, so it holds at most the failures the password queue let through in 15 minutes.
//!
//! Each change is one exclusive transaction (SQLite `BEGIN IMMEDIATE`, PostgreSQL the schema's
//! write lock), so racing failures on any instance all count. These tables are not read by any
//! cached answer, so writing them does not empty the caller cache (`SqlStore::call_uncached`):
//! a login flood must not make every other request read its caller again.

use chrono::{DateTime, Utc};

use crate::auth::ClientAddress;
use crate::auth::lockout::{AddressAttempts, FAILURE_WINDOW, LoginAttempts, LoginSubject};
use crate::db::{Behavior, Conn, OptionalExtension, params};
use crate::store::StoreError;
use crate::store::accounts::RecordedFailure;

use super::{from_ms, to_ms};

/// The `address` of the row holding the user-wide lock.
const USER_ROW: &str = "*";

/// The state of `subject` as seen from `address`.
pub fn attempts(
    conn: &Conn,
    subject: &LoginSubject,
    address: ClientAddress,
    now: DateTime<Utc>,
) -> Result<LoginAttempts, StoreError> {
    let address = read_row(conn, subject, &address.to_string())?.unwrap_or_default();
    let user = read_row(conn, subject, USER_ROW)?.unwrap_or_default();
    Ok(LoginAttempts {
        address: address.current(now),
        user_locked_until: user.locked_until.filter(|until| now < *until),
    })
}

/// Records a failure of `subject` from `address` at `now`, keeping at most `capacity` rows.
pub fn record_failure(
    conn: &Conn,
    subject: &LoginSubject,
    address: ClientAddress,
    now: DateTime<Utc>,
    capacity: usize,
) -> Result<RecordedFailure, StoreError> {
    let tx = conn.transaction(Behavior::Immediate)?;
    forget_old(&tx, now)?;
    let before = attempts(&tx, subject, address, now)?;
    if before.is_locked(now) {
        return Ok(RecordedFailure {
            before,
            after: before,
        });
    }
    tx.execute(
        "INSERT INTO login_failure_times (subject, at) VALUES (?1, ?2)",
        params![subject.as_str(), to_ms(now)],
    )?;
    let recent: i64 = tx.query_row(
        "SELECT COUNT(*) FROM login_failure_times WHERE subject = ?1 AND at > ?2",
        params![subject.as_str(), to_ms(now - FAILURE_WINDOW)],
        |r| r.get(0),
    )?;
    let after = before.after_failure(now, u32::try_from(recent).unwrap_or(u32::MAX));
    let key = address.to_string();
    let existed = read_row(&tx, subject, &key)?.is_some();
    write_row(&tx, subject, &key, after.address)?;
    if after.user_locked_until != before.user_locked_until {
        let user = AddressAttempts {
            consecutive_failures: 0,
            last_failure_at: Some(now),
            locked_until: after.user_locked_until,
        };
        write_row(&tx, subject, USER_ROW, user)?;
    }
    if !existed {
        evict_beyond(&tx, capacity)?;
    }
    tx.commit()?;
    Ok(RecordedFailure { before, after })
}

/// Clears the series of `subject` from `address` after a successful login, unless a lock
/// holds at `now` (then the locked state comes back unchanged).
pub fn record_success(
    conn: &Conn,
    subject: &LoginSubject,
    address: ClientAddress,
    now: DateTime<Utc>,
) -> Result<LoginAttempts, StoreError> {
    let tx = conn.transaction(Behavior::Immediate)?;
    let stored = attempts(&tx, subject, address, now)?;
    if stored.is_locked(now) {
        return Ok(stored);
    }
    let key = address.to_string();
    if read_row(&tx, subject, &key)?.is_some() {
        tx.execute(
            "DELETE FROM login_failures WHERE subject = ?1 AND address = ?2",
            params![subject.as_str(), key],
        )?;
        tx.commit()?;
    }
    Ok(stored.after_success())
}

fn read_row(
    conn: &Conn,
    subject: &LoginSubject,
    address: &str,
) -> Result<Option<AddressAttempts>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT failures, last_failure_at, locked_until FROM login_failures
             WHERE subject = ?1 AND address = ?2",
            params![subject.as_str(), address],
            |r| {
                Ok(AddressAttempts {
                    consecutive_failures: u32::try_from(r.get::<i64>(0)?).unwrap_or(u32::MAX),
                    last_failure_at: Some(from_ms(r.get(1)?)),
                    locked_until: r.get::<Option<i64>>(2)?.map(from_ms),
                })
            },
        )
        .optional()?)
}

fn write_row(
    conn: &Conn,
    subject: &LoginSubject,
    address: &str,
    state: AddressAttempts,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO login_failures (subject, address, failures, last_failure_at, locked_until)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (subject, address) DO UPDATE SET failures = excluded.failures,
            last_failure_at = excluded.last_failure_at, locked_until = excluded.locked_until",
        params![
            subject.as_str(),
            address,
            i64::from(state.consecutive_failures),
            state.last_failure_at.map(to_ms).unwrap_or_default(),
            state.locked_until.map(to_ms)
        ],
    )?;
    Ok(())
}

/// Drops what no longer changes an answer: series quiet for the window whose lock (if any)
/// is over, and failure times older than the window.
fn forget_old(conn: &Conn, now: DateTime<Utc>) -> Result<(), StoreError> {
    let quiet_since = to_ms(now - FAILURE_WINDOW);
    conn.execute(
        "DELETE FROM login_failures
         WHERE last_failure_at <= ?1 AND (locked_until IS NULL OR locked_until <= ?2)",
        params![quiet_since, to_ms(now)],
    )?;
    conn.execute(
        "DELETE FROM login_failure_times WHERE at <= ?1",
        params![quiet_since],
    )?;
    Ok(())
}

/// Keeps at most `capacity` rows: the least recently failed go first.
fn evict_beyond(conn: &Conn, capacity: usize) -> Result<(), StoreError> {
    let rows: i64 = conn.query_row("SELECT COUNT(*) FROM login_failures", params![], |r| {
        r.get(0)
    })?;
    let excess = rows - i64::try_from(capacity).unwrap_or(i64::MAX);
    if excess > 0 {
        conn.execute(
            "DELETE FROM login_failures WHERE (subject, address) IN
                (SELECT subject, address FROM login_failures
                 ORDER BY last_failure_at, subject, address LIMIT ?1)",
            params![excess],
        )?;
        tracing::warn!(
            evicted = excess,
            capacity,
            "the login failure table is full: the least recently failed entries were dropped"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::SqlStore;
    use std::net::IpAddr;

    fn address(s: &str) -> ClientAddress {
        ClientAddress::new(s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}")))
    }

    #[tokio::test]
    async fn u4_the_table_is_bounded_and_the_least_recently_failed_go_first() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = SqlStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let outcome = store
            .call(|conn| {
                let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
                let from = address("192.0.2.1");
                let subjects: Vec<_> = (0..4)
                    .map(|i| LoginSubject::new("123456789012", &format!("user{i}")))
                    .collect();
                for (i, subject) in subjects.iter().enumerate() {
                    let at = now + chrono::Duration::seconds(i as i64);
                    record_failure(conn, subject, from, at, 3)?;
                }
                let later = now + chrono::Duration::seconds(10);
                let rows: i64 =
                    conn.query_row("SELECT COUNT(*) FROM login_failures", params![], |r| {
                        r.get(0)
                    })?;
                let first = attempts(conn, &subjects[0], from, later)?;
                let last = attempts(conn, &subjects[3], from, later)?;
                Ok((rows, first, last))
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (rows, first, last) = outcome;
        assert_eq!(rows, 3);
        assert_eq!(first.address.consecutive_failures, 0, "evicted");
        assert_eq!(last.address.consecutive_failures, 1);
    }
}
