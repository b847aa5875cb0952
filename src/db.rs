//! One SQL interface over the two databases the store runs on: embedded SQLite (the default)
//! and PostgreSQL (a fleet of instances, SPEC O3).
//!
//! Store, journal and audit code write their statements once, against [`Conn`]: parameters are
//! `?1`, `?2`… (or `?` in order), values are [`Value`]s, rows are read with [`Row::get`]. For
//! PostgreSQL the placeholders are rewritten to `$1`, `$2`… and prepared statements are cached
//! per connection. Statements must be portable: `ON CONFLICT … DO NOTHING` rather than
//! `INSERT OR IGNORE`, sums cast to `BIGINT`, no `rowid` unless the PostgreSQL table has a column
//! of that name. Where the dialects cannot meet, branch on [`Conn::dialect`].
//!
//! Every call is blocking: run it on the blocking pool or a dedicated thread, never on a reactor
//! thread.
//!
//! # Transactions
//! [`Conn::transaction`] issues `BEGIN`/`COMMIT` itself; a [`Tx`] rolls back when dropped
//! uncommitted. [`Behavior::Immediate`] takes the database's single write lock from the first
//! statement (SQLite `BEGIN IMMEDIATE`; PostgreSQL a transaction-scoped advisory lock shared by
//! every instance), so read-modify-write sequences are serialized across the whole fleet.
//! [`Behavior::Journal`] is the same with its own lock, held only by journal writers.

pub mod postgres;
pub mod sqlite;
pub mod testing;

use std::cell::Cell;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

pub use self::postgres::PgDatabase;
pub use self::sqlite::SqliteDatabase;

/// Which SQL the connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A value bound to a parameter or read from a column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// Why a statement failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// `query_row` found no row.
    #[error("no row returned")]
    NoRows,
    /// A uniqueness, foreign-key or check constraint refused the write.
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// The database is down, unreachable, locked, full or read-only.
    #[error("{0}")]
    Unavailable(String),
    /// A column held something the reader did not expect.
    #[error("unexpected column value: {0}")]
    Type(String),
}

/// How a transaction begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Locks are taken as statements need them.
    Deferred,
    /// The database's write lock from the first statement (module docs).
    Immediate,
    /// The journal writers' lock from the first statement: one journal batch at a time across
    /// every instance, so the hash chains stay linear.
    Journal,
    /// One consistent read-only view for several statements.
    Snapshot,
}

/// Converts a Rust value into a [`Value`] parameter.
pub trait ToValue {
    fn to_value(&self) -> Value;
}

/// Reads a Rust value out of a [`Value`] column.
pub trait FromValue: Sized {
    fn from_value(value: Value) -> Result<Self, DbError>;
}

/// `params![a, b]`: the parameters of a statement, in order.
#[macro_export]
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::db::ToValue]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::db::ToValue),+] as &[&dyn $crate::db::ToValue]
    };
}
pub use crate::params;

/// One row of a result, read by column index.
pub struct Row<'a>(RowInner<'a>);

enum RowInner<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a ::postgres::Row),
}

/// A connection to either database. Methods take `&self`; a connection is used by one thread
/// at a time.
pub struct Conn(ConnInner);

enum ConnInner {
    Sqlite(rusqlite::Connection),
    Postgres(Box<std::cell::RefCell<postgres::Pooled>>),
}

/// A transaction on a [`Conn`]; it derefs to the connection, so every query method works on
/// it. Dropped without [`Tx::commit`], it rolls back.
pub struct Tx<'a> {
    conn: &'a Conn,
    open: Cell<bool>,
}

/// A shared handle to the database the store runs on.
#[derive(Clone)]
pub enum Database {
    Sqlite(Arc<SqliteDatabase>),
    Postgres(Arc<PgDatabase>),
}

// === impl Conn ===

impl Conn {
    pub fn dialect(&self) -> Dialect {
        match &self.0 {
            ConnInner::Sqlite(_) => Dialect::Sqlite,
            ConnInner::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs one statement; returns the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn ToValue]) -> Result<usize, DbError> {
        match &self.0 {
            ConnInner::Sqlite(c) => sqlite::execute(c, sql, params),
            ConnInner::Postgres(c) => c.borrow_mut().execute(sql, params),
        }
    }

    /// Runs several statements without parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<(), DbError> {
        match &self.0 {
            ConnInner::Sqlite(c) => c.execute_batch(sql).map_err(sqlite::error),
            ConnInner::Postgres(c) => c.borrow_mut().batch(sql),
        }
    }

    /// The first row, mapped by `f`; [`DbError::NoRows`] if there is none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut f = Some(f);
        let mut out = None;
        self.for_each::<DbError>(sql, params, |row| {
            if let Some(f) = f.take() {
                out = Some(f(row)?);
            }
            Ok(false)
        })?;
        out.ok_or(DbError::NoRows)
    }

    /// Every row, mapped by `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        mut f: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        let mut out = Vec::new();
        self.for_each::<DbError>(sql, params, |row| {
            out.push(f(row)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Streams rows through `f` until it returns `false` or an error, without holding them all.
    pub fn for_each<E: From<DbError>>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnMut(&Row<'_>) -> Result<bool, E>,
    ) -> Result<(), E> {
        match &self.0 {
            ConnInner::Sqlite(c) => sqlite::for_each(c, sql, params, f),
            ConnInner::Postgres(c) => c.borrow_mut().for_each(sql, params, f),
        }
    }

    /// Begins a transaction (module docs). Nesting is refused by the database.
    pub fn transaction(&self, behavior: Behavior) -> Result<Tx<'_>, DbError> {
        match &self.0 {
            ConnInner::Sqlite(c) => sqlite::begin(c, behavior)?,
            ConnInner::Postgres(c) => c.borrow_mut().begin(behavior)?,
        }
        Ok(Tx {
            conn: self,
            open: Cell::new(true),
        })
    }

    /// Runs `f` holding the session-level lock `name` (PostgreSQL: an advisory lock of this
    /// schema, so instances doing the same thing take turns; SQLite: nothing, the file's write
    /// lock is enough).
    pub fn with_session_lock<T>(
        &self,
        name: &str,
        f: impl FnOnce() -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let ConnInner::Postgres(c) = &self.0 else {
            return f();
        };
        c.borrow_mut().session_lock(name)?;
        let result = f();
        let unlocked = c.borrow_mut().session_unlock(name);
        let out = result?;
        unlocked?;
        Ok(out)
    }

    /// Whether a transaction is open on this connection.
    pub fn in_transaction(&self) -> bool {
        match &self.0 {
            ConnInner::Sqlite(c) => !c.is_autocommit(),
            ConnInner::Postgres(c) => c.borrow().in_transaction(),
        }
    }

    /// Rows changed on this connection since it opened (SQLite only; the caller cache of the
    /// embedded store keys on it).
    pub fn total_changes(&self) -> Option<u64> {
        match &self.0 {
            ConnInner::Sqlite(c) => Some(c.total_changes()),
            ConnInner::Postgres(_) => None,
        }
    }

    /// Whether the connection is known to be dead (PostgreSQL: the server closed it); the
    /// owner should open a new one.
    pub fn is_broken(&self) -> bool {
        match &self.0 {
            ConnInner::Sqlite(_) => false,
            ConnInner::Postgres(c) => c.borrow().is_closed(),
        }
    }

    /// The SQLite connection underneath, for the few settings that exist only there.
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.0 {
            ConnInner::Sqlite(c) => Some(c),
            ConnInner::Postgres(_) => None,
        }
    }

    fn end(&self, sql: &str) -> Result<(), DbError> {
        match &self.0 {
            ConnInner::Sqlite(c) => c.execute_batch(sql).map_err(sqlite::error),
            ConnInner::Postgres(c) => c.borrow_mut().end(sql),
        }
    }
}

// === impl Tx ===

impl Tx<'_> {
    pub fn commit(self) -> Result<(), DbError> {
        self.open.set(false);
        self.conn.end("COMMIT")
    }
}

impl Deref for Tx<'_> {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open.get() {
            // A failed rollback leaves nothing to undo: the connection aborted it already.
            let _ = self.conn.end("ROLLBACK");
        }
    }
}

// === impl Row ===

impl Row<'_> {
    pub fn get<T: FromValue>(&self, idx: usize) -> Result<T, DbError> {
        T::from_value(self.value(idx)?)
    }

    pub fn value(&self, idx: usize) -> Result<Value, DbError> {
        match &self.0 {
            RowInner::Sqlite(r) => sqlite::value(r, idx),
            RowInner::Postgres(r) => postgres::value(r, idx),
        }
    }
}

// === impl Database ===

impl Database {
    pub fn dialect(&self) -> Dialect {
        match self {
            Database::Sqlite(_) => Dialect::Sqlite,
            Database::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The database of a store that a gateway has already created, for the CLI subcommands
    /// (nothing is created or migrated). SQLite: `tollgate.db` in the data dir must exist.
    pub fn open_existing(config: &crate::config::StoreConfig) -> Result<Database, DbError> {
        use crate::config::StoreKind;
        match &config.kind {
            StoreKind::Sqlite => {
                let path = config.data_dir.join(sqlite::DB_FILE);
                if !path.exists() {
                    return Err(DbError::Unavailable(format!(
                        "no store at `{}`; start the gateway once with this config",
                        path.display()
                    )));
                }
                Ok(Database::Sqlite(Arc::new(SqliteDatabase::new(path))))
            }
            StoreKind::Postgres { url, password, .. } => Ok(Database::Postgres(Arc::new(
                PgDatabase::open(url, password.as_deref(), 4)?,
            ))),
        }
    }

    /// A connection of its own (SQLite: a new one; PostgreSQL: one from the pool, returned when
    /// dropped).
    pub fn connect(&self) -> Result<Conn, DbError> {
        match self {
            Database::Sqlite(db) => db.connect(),
            Database::Postgres(db) => db.connect(),
        }
    }

    /// A connection for reading only (SQLite opens it read-only).
    pub fn reader(&self) -> Result<Conn, DbError> {
        match self {
            Database::Sqlite(db) => db.reader(),
            Database::Postgres(db) => db.connect(),
        }
    }

    /// Where the data lives, for messages (never carries a password).
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(db) => format!("`{}`", db.path().display()),
            Database::Postgres(db) => db.describe(),
        }
    }

    /// Several gateway instances may write this database at once: in-process caches of its
    /// rows must not be trusted across requests.
    pub fn is_shared(&self) -> bool {
        matches!(self, Database::Postgres(_))
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

// === impl DbError ===

impl DbError {
    /// A stored value that does not parse as what the column should hold.
    pub fn corrupt(what: impl fmt::Display) -> Self {
        DbError::Type(what.to_string())
    }
}

/// `.optional()` on a single-row result: no row becomes `None`.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>, DbError>;
}

impl<T> OptionalExtension<T> for Result<T, DbError> {
    fn optional(self) -> Result<Option<T>, DbError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

// === impl ToValue ===

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Integer(*self)
    }
}

impl ToValue for i32 {
    fn to_value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}

impl ToValue for u32 {
    fn to_value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}

impl ToValue for u8 {
    fn to_value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}

impl ToValue for u16 {
    fn to_value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}

impl ToValue for u64 {
    fn to_value(&self) -> Value {
        // Counters and sequence numbers stay far below i64::MAX; saturate rather than wrap.
        Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToValue for usize {
    fn to_value(&self) -> Value {
        Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

// === impl FromValue ===

impl FromValue for Value {
    fn from_value(value: Value) -> Result<Self, DbError> {
        Ok(value)
    }
}

impl FromValue for i64 {
    fn from_value(value: Value) -> Result<Self, DbError> {
        match value {
            Value::Integer(i) => Ok(i),
            other => Err(DbError::Type(format!(
                "expected an integer, found {other:?}"
            ))),
        }
    }
}

impl FromValue for u32 {
    fn from_value(value: Value) -> Result<Self, DbError> {
        let i = i64::from_value(value)?;
        u32::try_from(i).map_err(|_| DbError::Type(format!("{i} does not fit in u32")))
    }
}

impl FromValue for u8 {
    fn from_value(value: Value) -> Result<Self, DbError> {
        let i = i64::from_value(value)?;
        u8::try_from(i).map_err(|_| DbError::Type(format!("{i} does not fit in u8")))
    }
}

impl FromValue for u16 {
    fn from_value(value: Value) -> Result<Self, DbError> {
        let i = i64::from_value(value)?;
        u16::try_from(i).map_err(|_| DbError::Type(format!("{i} does not fit in u16")))
    }
}

impl FromValue for u64 {
    fn from_value(value: Value) -> Result<Self, DbError> {
        let i = i64::from_value(value)?;
        u64::try_from(i).map_err(|_| DbError::Type(format!("{i} is negative")))
    }
}

impl FromValue for bool {
    fn from_value(value: Value) -> Result<Self, DbError> {
        Ok(i64::from_value(value)? != 0)
    }
}

impl FromValue for f64 {
    fn from_value(value: Value) -> Result<Self, DbError> {
        match value {
            Value::Real(f) => Ok(f),
            Value::Integer(i) => Ok(i as f64),
            other => Err(DbError::Type(format!("expected a number, found {other:?}"))),
        }
    }
}

impl FromValue for String {
    fn from_value(value: Value) -> Result<Self, DbError> {
        match value {
            Value::Text(s) => Ok(s),
            other => Err(DbError::Type(format!("expected text, found {other:?}"))),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: Value) -> Result<Self, DbError> {
        match value {
            Value::Blob(b) => Ok(b),
            Value::Text(s) => Ok(s.into_bytes()),
            other => Err(DbError::Type(format!("expected bytes, found {other:?}"))),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Value) -> Result<Self, DbError> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

#[cfg(test)]
mod tests;
