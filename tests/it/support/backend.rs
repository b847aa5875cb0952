//! Which store the suite runs on (SPEC O3). `cargo test` runs every test on SQLite; the test
//! `o3_the_whole_suite_passes_on_postgresql` runs this same binary again with
//! `TOLLGATE_TEST_STORE=postgres`, in a database of its own on the server named by
//! `TOLLGATE_TEST_DATABASE_URL`, so the one suite covers both backends without a copy of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tollgate::config::StoreKind;
use tollgate::db::testing::{DATABASE_URL_VAR, fresh_schema};
use tollgate::db::{Conn, Database, DbError, PgDatabase, Row, SqliteDatabase, ToValue, Value};

/// `postgres` in a child run of the suite.
pub const STORE_VAR: &str = "TOLLGATE_TEST_STORE";

/// Whether this run's gateways store on PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var(STORE_VAR).is_ok_and(|v| v == "postgres")
}

/// For tests of SQLite itself (its files, its locks): true (and a notice) on PostgreSQL, where
/// the test does not apply.
pub fn sqlite_only(test: &str) -> bool {
    if on_postgres() {
        eprintln!("`{test}` checks the embedded SQLite store; skipped on PostgreSQL");
    }
    on_postgres()
}

/// The store of a gateway whose local files (keys) live in `data_dir`: SQLite in it, or on
/// PostgreSQL a schema bound to it, the same one each time that data dir starts again (restart
/// tests), recorded next to it.
pub fn store_kind(data_dir: &Path) -> StoreKind {
    if !on_postgres() {
        return StoreKind::Sqlite;
    }
    StoreKind::Postgres {
        url: schema_url(data_dir),
        password: None,
        pool_size: 4,
    }
}

/// The `[store]` lines of a config file for `data_dir` (for tests that start the binary).
pub fn store_toml(data_dir: &Path) -> String {
    let dir = format!("data_dir = {:?}", data_dir.display().to_string());
    match store_kind(data_dir) {
        StoreKind::Sqlite => format!("kind = \"sqlite\"\n{dir}"),
        StoreKind::Postgres { url, .. } => format!("kind = \"postgres\"\nurl = {url:?}\n{dir}"),
    }
}

fn schema_url(data_dir: &Path) -> String {
    let record = PathBuf::from(format!("{}.pgschema", data_dir.display()));
    if let Ok(url) = std::fs::read_to_string(&record) {
        return url;
    }
    let server = std::env::var(DATABASE_URL_VAR)
        .unwrap_or_else(|_| panic!("{STORE_VAR}=postgres needs {DATABASE_URL_VAR}"));
    let (url, _schema) = off_runtime(|| fresh_schema(&server)).expect("create a test schema");
    if let Some(parent) = record.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&record, &url).expect("record the test schema");
    url
}

/// The database a gateway with local files in `data_dir` stores in (see [`store_kind`]).
pub fn database(data_dir: &Path) -> Database {
    match store_kind(data_dir) {
        StoreKind::Sqlite => Database::Sqlite(Arc::new(SqliteDatabase::new(
            data_dir.join(tollgate::db::sqlite::DB_FILE),
        ))),
        StoreKind::Postgres { url, .. } => Database::Postgres(Arc::new(
            PgDatabase::open(&url, None, 2).expect("open the test schema"),
        )),
    }
}

/// Another session holding the journal tables' write lock until dropped: SQLite `BEGIN
/// EXCLUSIVE`, PostgreSQL `LOCK TABLE ... IN EXCLUSIVE MODE` (readers still read).
pub struct WriteLock {
    release: Option<std::sync::mpsc::Sender<()>>,
    holder: Option<std::thread::JoinHandle<()>>,
}

/// Takes the lock and returns once it is held.
pub fn hold_write_lock(db: Database) -> WriteLock {
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let conn = db.connect().expect("connect");
        let lock = match db.dialect() {
            tollgate::db::Dialect::Sqlite => "BEGIN EXCLUSIVE",
            tollgate::db::Dialect::Postgres => {
                "BEGIN; LOCK TABLE ledger, decisions, meta IN EXCLUSIVE MODE"
            }
        };
        conn.execute_batch(lock).expect("lock");
        locked_tx.send(()).expect("signal");
        let _ = release_rx.recv_timeout(std::time::Duration::from_secs(60));
        conn.execute_batch("COMMIT").expect("unlock");
    });
    locked_rx.recv().expect("locked");
    WriteLock {
        release: Some(release_tx),
        holder: Some(holder),
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(h) = self.holder.take() {
            let _ = h.join();
        }
    }
}

/// Runs `f` on a thread of its own, outside the test's runtime (database calls block, and the
/// PostgreSQL client refuses to block inside a runtime), and returns what it returns.
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("database thread"))
}

/// Runs `f` on a connection to `db`, off the runtime (see [`off_runtime`]).
pub fn query<T: Send>(db: &Database, f: impl FnOnce(&Conn) -> T + Send) -> T {
    off_runtime(|| f(&db.connect().expect("connect to the test database")))
}

/// The gateway's database for test code that runs on a runtime: each call runs off it.
pub struct TestDb(pub Database);

impl TestDb {
    pub fn query_row<T: Send>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnOnce(&Row<'_>) -> Result<T, DbError> + Send,
    ) -> Result<T, DbError> {
        let values = values(params);
        query(&self.0, |c| c.query_row(sql, &refs(&values), f))
    }

    pub fn query_map<T: Send>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnMut(&Row<'_>) -> Result<T, DbError> + Send,
    ) -> Result<Vec<T>, DbError> {
        let values = values(params);
        query(&self.0, |c| c.query_map(sql, &refs(&values), f))
    }

    pub fn execute(&self, sql: &str, params: &[&dyn ToValue]) -> Result<usize, DbError> {
        let values = values(params);
        query(&self.0, |c| c.execute(sql, &refs(&values)))
    }
}

fn values(params: &[&dyn ToValue]) -> Vec<Value> {
    params.iter().map(|p| p.to_value()).collect()
}

fn refs(values: &[Value]) -> Vec<&dyn ToValue> {
    values.iter().map(|v| v as &dyn ToValue).collect()
}

/// The shipped config text with its `[store]` pointed at this run's backend for `data_dir`.
pub fn with_store(shipped: &str, data_dir: &Path) -> String {
    assert!(shipped.contains("kind = \"sqlite\"") && shipped.contains("data_dir = \"data\""));
    shipped.replacen("kind = \"sqlite\"", "", 1).replacen(
        "data_dir = \"data\"",
        &store_toml(data_dir),
        1,
    )
}
