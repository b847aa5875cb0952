//! [`super::Conn`] on SQLite: one file in the data dir, WAL mode, `synchronous=FULL`, so a
//! committed transaction survives a power cut.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::{Behavior, Conn, ConnInner, DbError, Row, RowInner, ToValue, Value};

/// The database file inside the data dir.
pub const DB_FILE: &str = "tollgate.db";

/// How long a statement waits for another connection's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The database file; connections are opened on demand.
#[derive(Debug)]
pub struct SqliteDatabase {
    path: PathBuf,
}

// === impl SqliteDatabase ===

impl SqliteDatabase {
    /// The database in `path` (which must exist; the store creates it with its permissions).
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A read-write connection with the settings every connection must share.
    pub fn connect(&self) -> Result<Conn, DbError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.cannot_open(e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;",
        )
        .map_err(error)?;
        Ok(Conn(ConnInner::Sqlite(conn)))
    }

    /// A read-only connection.
    pub fn reader(&self) -> Result<Conn, DbError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.cannot_open(e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
        Ok(Conn(ConnInner::Sqlite(conn)))
    }

    fn cannot_open(&self, e: rusqlite::Error) -> DbError {
        DbError::Unavailable(format!("cannot open `{}`: {e}", self.path.display()))
    }
}

// === free functions ===

pub(super) fn execute(
    conn: &Connection,
    sql: &str,
    params: &[&dyn ToValue],
) -> Result<usize, DbError> {
    let mut stmt = conn.prepare_cached(sql).map_err(error)?;
    bind(&mut stmt, params)?;
    stmt.raw_execute().map_err(error)
}

pub(super) fn for_each<E: From<DbError>>(
    conn: &Connection,
    sql: &str,
    params: &[&dyn ToValue],
    mut f: impl FnMut(&Row<'_>) -> Result<bool, E>,
) -> Result<(), E> {
    let mut stmt = conn.prepare_cached(sql).map_err(error)?;
    bind(&mut stmt, params)?;
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next().map_err(error)? {
        if !f(&Row(RowInner::Sqlite(row)))? {
            break;
        }
    }
    Ok(())
}

pub(super) fn begin(conn: &Connection, behavior: Behavior) -> Result<(), DbError> {
    let sql = match behavior {
        Behavior::Deferred | Behavior::Snapshot => "BEGIN DEFERRED",
        // One database file has one write lock: the journal's is the same lock.
        Behavior::Immediate | Behavior::Journal => "BEGIN IMMEDIATE",
    };
    conn.execute_batch(sql).map_err(error)
}

pub(super) fn value(row: &rusqlite::Row<'_>, idx: usize) -> Result<Value, DbError> {
    Ok(match row.get_ref(idx).map_err(error)? {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(
            std::str::from_utf8(t)
                .map_err(|e| DbError::Type(format!("column {idx}: {e}")))?
                .to_owned(),
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    })
}

fn bind(stmt: &mut rusqlite::CachedStatement<'_>, params: &[&dyn ToValue]) -> Result<(), DbError> {
    let expected = stmt.parameter_count();
    if expected != params.len() {
        return Err(DbError::Type(format!(
            "the statement takes {expected} parameters, {} were given",
            params.len()
        )));
    }
    for (i, p) in params.iter().enumerate() {
        let value = match p.to_value() {
            Value::Null => rusqlite::types::Value::Null,
            Value::Integer(i) => rusqlite::types::Value::Integer(i),
            Value::Real(f) => rusqlite::types::Value::Real(f),
            Value::Text(s) => rusqlite::types::Value::Text(s),
            Value::Blob(b) => rusqlite::types::Value::Blob(b),
        };
        stmt.raw_bind_parameter(i + 1, value).map_err(error)?;
    }
    Ok(())
}

/// Maps a SQLite error onto [`DbError`]: constraint violations apart, everything is the store
/// being unavailable (locked, full, read-only, gone).
pub(super) fn error(e: rusqlite::Error) -> DbError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            DbError::Constraint(e.to_string())
        }
        rusqlite::Error::QueryReturnedNoRows => DbError::NoRows,
        rusqlite::Error::InvalidColumnType(..) | rusqlite::Error::FromSqlConversionFailure(..) => {
            DbError::Type(e.to_string())
        }
        _ => DbError::Unavailable(e.to_string()),
    }
}
