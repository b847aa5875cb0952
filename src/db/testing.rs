//! Databases for tests: a fresh SQLite file, or a fresh schema on the PostgreSQL server named
//! by `TOLLGATE_TEST_DATABASE_URL` (CI sets it; without it PostgreSQL tests are skipped with a
//! notice), and the CA of that server's TLS certificate (`TOLLGATE_TEST_PG_TLS_CA`).

use rand::Rng;

/// The variable that names the PostgreSQL server for tests.
pub const DATABASE_URL_VAR: &str = "TOLLGATE_TEST_DATABASE_URL";

/// The server URL for PostgreSQL tests, or `None` (and a notice on stderr) when unset.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // Written to stderr itself, not through `eprintln!`, so the test harness does not
            // capture it: a skip must be visible.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "NOTICE: skipping the PostgreSQL part of `{test}`: {DATABASE_URL_VAR} is not set"
            );
            None
        }
    }
}

/// Creates an empty schema with a random name on `url`'s server and returns a URL whose
/// connections use it (through `search_path`), and the schema's name (for [`drop_schema`]).
pub fn fresh_schema(url: &str) -> Result<(String, String), String> {
    let schema = format!("tg_test_{:016x}", rand::thread_rng().r#gen::<u64>());
    let mut client = super::postgres::client(url).map_err(|e| e.to_string())?;
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .map_err(|e| e.to_string())?;
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok((
        format!("{url}{separator}options=-csearch_path%3D{schema}"),
        schema,
    ))
}

/// Drops a schema made by [`fresh_schema`] with everything in it.
pub fn drop_schema(url: &str, schema: &str) {
    let dropped = super::postgres::client(url)
        .map_err(|e| e.to_string())
        .and_then(|mut c| {
            c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .map_err(|e| e.to_string())
        });
    if let Err(e) = dropped {
        eprintln!("could not drop test schema {schema}: {e}");
    }
}

/// The variable that names the CA certificate (PEM) of the PostgreSQL test server's TLS
/// certificate, which names `localhost` and 127.0.0.1 (`.ci/run` makes both, SPEC O4).
pub const PG_TLS_CA_VAR: &str = "TOLLGATE_TEST_PG_TLS_CA";

/// The CA file for PostgreSQL TLS tests, or `None` (and a notice on stderr) when unset. Under
/// `CI=true` a missing variable fails the test instead: CI must not skip them silently.
pub fn postgres_tls_ca(test: &str) -> Option<std::path::PathBuf> {
    match std::env::var(PG_TLS_CA_VAR) {
        Ok(path) if !path.is_empty() => Some(path.into()),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("`{test}` needs {PG_TLS_CA_VAR} under CI=true (`.ci/run` sets it)")
        }
        _ => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "NOTICE: skipping `{test}`: {PG_TLS_CA_VAR} is not set"
            );
            None
        }
    }
}
