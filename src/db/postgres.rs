//! [`super::Conn`] on PostgreSQL: a pool of connections to one server shared by a fleet of
//! gateway instances (SPEC O3).
//!
//! Statements are written with SQLite's `?N` placeholders and rewritten to `$N` once per
//! connection, then prepared and cached by their text. Values convert to the type the server
//! inferred for each parameter, so integers bind to `BIGINT` as well as to `INTEGER` or `TEXT`
//! columns. Columns of type `NUMERIC` are refused: cast sums to `BIGINT` in the statement.
//!
//! Transactions are plain `BEGIN`/`COMMIT` at `READ COMMITTED`; the exclusive behaviours take a
//! transaction-scoped advisory lock right after `BEGIN`, so they serialize across instances the
//! way SQLite's single write lock serializes connections. Advisory locks are per database, so
//! their keys are derived from the schema the connection works in: deployments in different
//! schemas of one database do not wait for each other.
//!
//! Every connection, pooled or not, is opened by a [`Connector`], which honours the URL's
//! `sslmode` and `sslrootcert` (SPEC O4, [`tls`]).

pub mod tls;

use std::collections::HashMap;
use std::error::Error;
use std::str::FromStr;
use std::time::Duration;

use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use ::postgres::{Client, Config, Statement};
use bytes::BytesMut;
use tokio_postgres_rustls::MakeRustlsConnect;

use self::tls::{PgTlsSettings, SslMode};
use super::{Behavior, Conn, ConnInner, DbError, Row, RowInner, ToValue, Value};

/// The advisory lock of [`Behavior::Immediate`] transactions.
const WRITE_LOCK: &str = "write";
/// The advisory lock of [`Behavior::Journal`] transactions.
const JOURNAL_LOCK: &str = "journal";

/// Session settings of every connection: how long a statement waits for a lock, and at most
/// runs.
const LOCK_WAIT: &str = "SET lock_timeout = '5s'; SET statement_timeout = '60s'";

/// Prepared statements kept per connection; beyond it the cache starts over.
const STATEMENT_CACHE: usize = 512;

/// The server and its pool.
pub struct PgDatabase {
    pool: r2d2::Pool<Manager>,
    describe: String,
    mode: SslMode,
}

/// How to reach the server: its settings from the URL and the TLS its `sslmode` asks for.
/// The one way tollgate opens a PostgreSQL connection.
#[derive(Clone)]
pub struct Connector {
    config: Config,
    mode: SslMode,
    tls: MakeRustlsConnect,
}

/// Opens connections for the pool.
#[derive(Debug)]
pub struct Manager {
    connector: Connector,
}

/// A failed connection, shown with its causes: the pool keeps only the text of the last one,
/// and "error performing TLS handshake" alone does not say which certificate was refused.
#[derive(Debug)]
pub struct ConnectError(::postgres::Error);

/// One pooled connection and its statement cache. The client is `None` only while dropping.
pub struct PgConn {
    client: Option<Client>,
    /// The schema of this connection (`current_schema()`), which scopes its advisory locks.
    schema: String,
    statements: HashMap<String, Statement>,
    in_transaction: bool,
}

pub(super) type Pooled = r2d2::PooledConnection<Manager>;

// === impl PgDatabase ===

impl PgDatabase {
    /// A pool of at most `pool_size` connections to `url`, with `password` if given. Nothing
    /// connects until the first use, but the URL's TLS settings and root certificates are
    /// checked now.
    pub fn open(url: &str, password: Option<&str>, pool_size: u32) -> Result<Self, DbError> {
        let mut connector = Connector::new(url)?;
        if let Some(password) = password {
            connector.config.password(password);
        }
        let describe = describe(&connector.config);
        let mode = connector.mode;
        let pool = r2d2::Pool::builder()
            .max_size(pool_size.max(1))
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(5))
            .build_unchecked(Manager { connector });
        Ok(Self {
            pool,
            describe,
            mode,
        })
    }

    /// A connection from the pool; it goes back when dropped.
    pub fn connect(&self) -> Result<Conn, DbError> {
        let pooled = self.pool.get().map_err(|e| {
            let e = e.to_string();
            // A refused certificate says which settings to look at.
            let hint = if e.contains("TLS") || e.contains("certificate") {
                format!(
                    " (with `sslmode={}`: check `sslrootcert` in the URL and the server's certificate)",
                    self.mode.as_str()
                )
            } else {
                String::new()
            };
            DbError::Unavailable(format!(
                "cannot reach PostgreSQL at {}: {e}{hint}",
                self.describe
            ))
        })?;
        Ok(Conn(ConnInner::Postgres(Box::new(
            std::cell::RefCell::new(pooled),
        ))))
    }

    /// `user@host:port/database`, without the password.
    pub fn describe(&self) -> String {
        self.describe.clone()
    }
}

/// One connection to `url` outside any pool (administration, tests), with the same TLS as the
/// pool's.
pub fn client(url: &str) -> Result<Client, DbError> {
    let connector = Connector::new(url)?;
    connector.connect().map_err(|e| {
        DbError::Unavailable(format!(
            "cannot reach PostgreSQL at {}: {e}",
            describe(&connector.config)
        ))
    })
}

fn describe(config: &Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            ::postgres::config::Host::Tcp(h) => h.clone(),
            ::postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

// === impl Connector ===

impl Connector {
    /// The settings of `url`, with `sslmode` and `sslrootcert` applied; reads the root
    /// certificates now.
    pub fn new(url: &str) -> Result<Self, DbError> {
        let settings = PgTlsSettings::from_url(url).map_err(tls_error)?;
        let tls = MakeRustlsConnect::new(settings.client_config().map_err(tls_error)?);
        let mut config = Config::from_str(settings.url())
            .map_err(|e| DbError::Unavailable(format!("invalid PostgreSQL URL: {e}")))?;
        config.ssl_mode(settings.mode().wire());
        config.application_name("tollgate");
        config.connect_timeout(Duration::from_secs(5));
        Ok(Self {
            config,
            mode: settings.mode(),
            tls,
        })
    }

    /// A new connection, encrypted and checked as `sslmode` says.
    pub fn connect(&self) -> Result<Client, ConnectError> {
        self.config.connect(self.tls.clone()).map_err(ConnectError)
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the config: it may hold the password.
        f.debug_struct("Connector")
            .field("server", &describe(&self.config))
            .field("sslmode", &self.mode)
            .finish_non_exhaustive()
    }
}

// === impl ConnectError ===

impl From<::postgres::Error> for ConnectError {
    fn from(e: ::postgres::Error) -> Self {
        Self(e)
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl Error for ConnectError {}

fn tls_error(e: tls::PgTlsError) -> DbError {
    DbError::Unavailable(e.to_string())
}

// === impl Manager ===

impl r2d2::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = ConnectError;

    fn connect(&self) -> Result<PgConn, ConnectError> {
        let mut client = self.connector.connect()?;
        // Like SQLite's busy timeout: a lock held elsewhere fails the statement after a while
        // (the call is refused, 503) rather than hanging it.
        client.batch_execute(LOCK_WAIT)?;
        let schema: Option<String> = client.query_one("SELECT current_schema()", &[])?.get(0);
        Ok(PgConn {
            client: Some(client),
            schema: schema.unwrap_or_default(),
            statements: HashMap::new(),
            in_transaction: false,
        })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), ConnectError> {
        match conn.client.as_mut() {
            Some(client) => client.simple_query("").map(|_| ()).map_err(ConnectError),
            None => Ok(()),
        }
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        // A connection handed back inside a transaction (a panic mid-way) is not reused.
        conn.is_closed() || conn.in_transaction
    }
}

// === impl PgConn ===

impl PgConn {
    fn client(&mut self) -> Result<&mut Client, DbError> {
        self.client
            .as_mut()
            .ok_or_else(|| DbError::Unavailable("the PostgreSQL connection is closed".into()))
    }

    pub(super) fn execute(&mut self, sql: &str, params: &[&dyn ToValue]) -> Result<usize, DbError> {
        let stmt = self.statement(sql)?;
        let values = values(params);
        let n = self
            .client()?
            .execute(&stmt, &refs(&values))
            .map_err(error)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub(super) fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.client()?.batch_execute(sql).map_err(error)
    }

    pub(super) fn for_each<E: From<DbError>>(
        &mut self,
        sql: &str,
        params: &[&dyn ToValue],
        mut f: impl FnMut(&Row<'_>) -> Result<bool, E>,
    ) -> Result<(), E> {
        let stmt = self.statement(sql)?;
        let values = values(params);
        let mut rows = self
            .client()?
            .query_raw(&stmt, values.iter().map(|v| v as &dyn ToSql))
            .map_err(error)?;
        while let Some(row) = rows.next().map_err(error)? {
            if !f(&Row(RowInner::Postgres(&row)))? {
                break;
            }
        }
        Ok(())
    }

    pub(super) fn begin(&mut self, behavior: Behavior) -> Result<(), DbError> {
        let sql = match behavior {
            Behavior::Deferred => "BEGIN".to_owned(),
            Behavior::Immediate => format!(
                "BEGIN; SELECT pg_advisory_xact_lock({})",
                self.lock_key(WRITE_LOCK)
            ),
            Behavior::Journal => format!(
                "BEGIN; SELECT pg_advisory_xact_lock({})",
                self.lock_key(JOURNAL_LOCK)
            ),
            Behavior::Snapshot => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".to_owned(),
        };
        self.client()?.batch_execute(&sql).map_err(error)?;
        self.in_transaction = true;
        Ok(())
    }

    pub(super) fn end(&mut self, sql: &str) -> Result<(), DbError> {
        let result = self
            .client()
            .and_then(|c| c.batch_execute(sql).map_err(error));
        self.in_transaction = false;
        result
    }

    /// Takes the session-level advisory lock `name` (waiting without a timeout), runs `f`,
    /// releases it.
    pub(super) fn session_lock(&mut self, name: &str) -> Result<(), DbError> {
        let key = self.lock_key(name);
        self.batch(&format!(
            "SET lock_timeout = 0; SELECT pg_advisory_lock({key}); {LOCK_WAIT}"
        ))
    }

    pub(super) fn session_unlock(&mut self, name: &str) -> Result<(), DbError> {
        let key = self.lock_key(name);
        self.batch(&format!("SELECT pg_advisory_unlock({key})"))
    }

    /// The advisory lock key of `name` in this connection's schema.
    fn lock_key(&self, name: &str) -> i64 {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("tollgate\0{}\0{name}", self.schema));
        let mut key = [0u8; 8];
        key.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
        i64::from_be_bytes(key)
    }

    pub(super) fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.as_ref().is_none_or(Client::is_closed)
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = self.client()?.prepare(&placeholders(sql)).map_err(error)?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Closing a client blocks on its own runtime, which panics on a thread that drives a
        // tokio runtime (a pool dropped with the app): close it on a thread of its own.
        if let Some(client) = self.client.take() {
            let _ = std::thread::Builder::new()
                .name("tollgate-pg-close".into())
                .spawn(move || drop(client));
        }
    }
}

// === free functions ===

/// Rewrites SQLite placeholders (`?3`, or `?` meaning one more than the largest so far) to
/// PostgreSQL's `$3`, leaving string literals and quoted names alone.
pub fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut largest = 0u32;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                let n = digits.parse::<u32>().unwrap_or(largest + 1);
                largest = largest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            None => out.push(c),
        }
    }
    out
}

pub(super) fn value(row: &::postgres::Row, idx: usize) -> Result<Value, DbError> {
    row.try_get::<_, Value>(idx)
        .map_err(|e| DbError::Type(format!("column {idx}: {e}")))
}

fn values(params: &[&dyn ToValue]) -> Vec<Value> {
    params.iter().map(|p| p.to_value()).collect()
}

fn refs(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

fn error(e: ::postgres::Error) -> DbError {
    use ::postgres::error::SqlState;
    let constraint = [
        SqlState::UNIQUE_VIOLATION,
        SqlState::FOREIGN_KEY_VIOLATION,
        SqlState::CHECK_VIOLATION,
        SqlState::NOT_NULL_VIOLATION,
        SqlState::EXCLUSION_VIOLATION,
    ];
    let message = match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {}", db.message()),
        None => format!("PostgreSQL: {e}"),
    };
    match e.code() {
        Some(code) if constraint.contains(code) => DbError::Constraint(message),
        _ => DbError::Unavailable(message),
    }
}

type BoxError = Box<dyn Error + Sync + Send>;

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                _ => i.to_string().as_str().to_sql(ty, out),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::FLOAT8 => f.to_sql(ty, out),
                _ => f.to_string().as_str().to_sql(ty, out),
            },
            Value::Text(s) => match *ty {
                Type::INT8 => s.parse::<i64>()?.to_sql(ty, out),
                Type::INT4 => s.parse::<i32>()?.to_sql(ty, out),
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => s.as_str().to_sql(ty, out),
            },
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(match *ty {
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Integer(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT2 => Value::Integer(i64::from(i16::from_sql(ty, raw)?)),
            Type::BOOL => Value::Integer(i64::from(bool::from_sql(ty, raw)?)),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f64::from(f32::from_sql(ty, raw)?)),
            Type::BYTEA => Value::Blob(<Vec<u8>>::from_sql(ty, raw)?),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Value::Text(String::from_sql(ty, raw)?)
            }
            _ => return Err(format!("column type {ty} is not supported; cast it").into()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn rewrites_numbered_and_bare_placeholders_outside_quotes() {
        assert_eq!(
            placeholders("SELECT a FROM t WHERE b = ?1 AND c = ?2 OR d = ?1"),
            "SELECT a FROM t WHERE b = $1 AND c = $2 OR d = $1"
        );
        assert_eq!(
            placeholders("x IN (?, ?) AND y = ? LIMIT ?"),
            "x IN ($1, $2) AND y = $3 LIMIT $4"
        );
        assert_eq!(placeholders("a = '?' AND b = ?1"), "a = '?' AND b = $1");
        assert_eq!(placeholders("\"we?ird\" = ?2"), "\"we?ird\" = $2");
    }
}
