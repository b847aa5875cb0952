//! Integration tests: the real gateway on loopback, real upstream servers, real HTTP.
//! One file per area; `support` has the test gateway, the recording upstream and the client.
//! Test names start with the SPEC rule they cover.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

// Shared scaffolding: not every helper is used by every area at every moment.
#[allow(dead_code)]
mod support;

mod auth;
mod billing;
mod billing_audit;
mod caching;
mod config_errors;
mod connections;
mod decisions;
mod demo;
mod fleet;
mod flood;
mod forwarding;
mod groups;
mod hardening;
mod metering_faults;
mod openapi;
mod ops;
mod org;
mod pg_tls;
mod policies;
mod pricebook;
mod services;
mod tls;
mod upstream_tls;

/// O3: the whole behavioural suite again, every gateway on PostgreSQL. Runs this test binary
/// once more with `TOLLGATE_TEST_STORE=postgres`, in a fresh database created on the server of
/// `TOLLGATE_TEST_DATABASE_URL` and dropped afterwards; skipped with a notice when that variable
/// is unset (`.ci/run` sets it).
#[test]
fn o3_the_whole_suite_passes_on_postgresql() {
    const NAME: &str = "o3_the_whole_suite_passes_on_postgresql";
    if support::backend::on_postgres() {
        return; // this is the run on PostgreSQL
    }
    let Some(server) = tollgate::db::testing::postgres_url(NAME) else {
        return;
    };
    let database = format!("tollgate_it_{}", std::process::id());
    let admin = |sql: &str| {
        let mut client = tollgate::db::postgres::client(&server).unwrap_or_else(|e| panic!("{e}"));
        client
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    };
    admin(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"));
    admin(&format!("CREATE DATABASE {database}"));
    let url = with_dbname(&server, &database);
    let mut filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--") && a.parse::<u32>().is_err())
        .collect();
    filter.retain(|f| !NAME.contains(f.as_str()));
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(filter)
        .args(["--skip", NAME, "--test-threads", "2"])
        .env(support::backend::STORE_VAR, "postgres")
        .env(tollgate::db::testing::DATABASE_URL_VAR, &url)
        .output()
        .expect("run the suite again");
    admin(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = stdout
        .lines()
        .filter(|l| l.starts_with("test result:"))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("on PostgreSQL: {summary}");
    assert!(
        output.status.success(),
        "the suite failed on PostgreSQL ({url}):\n{stdout}\n{stderr}"
    );
    let passed: usize = summary
        .split_whitespace()
        .zip(summary.split_whitespace().skip(1))
        .filter(|(_, word)| *word == "passed;")
        .filter_map(|(n, _)| n.parse::<usize>().ok())
        .sum();
    let filtered = std::env::args().skip(1).any(|a| !a.starts_with("--"));
    assert!(
        filtered || passed >= 100,
        "the PostgreSQL run passed only {passed} tests: {summary}"
    );
}

/// `url` with its database name replaced by `database`.
fn with_dbname(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    let path_at = rest
        .find('/')
        .map_or(base.len(), |i| base.len() - rest.len() + i);
    let mut out = format!("{}/{database}", &base[..path_at]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}
