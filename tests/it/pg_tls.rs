//! TLS to PostgreSQL (SPEC O4): `sslmode` and `sslrootcert` in the store URL, against the test
//! server of `TOLLGATE_TEST_DATABASE_URL`, whose certificate names `localhost` and 127.0.0.1 and
//! is signed by the CA in `TOLLGATE_TEST_PG_TLS_CA` (`.ci/run` makes both and turns TLS on).
//! Without the server these skip with a notice; without the CA too, except under `CI=true`,
//! where they fail. They run in the SQLite run of the suite only: the PostgreSQL run would
//! repeat them unchanged.

use std::path::Path;
use std::sync::Arc;

use http::StatusCode;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tollgate::app::App;
use tollgate::clock::ManualClock;
use tollgate::config::{Config, StoreKind};
use tollgate::db::testing::{drop_schema, fresh_schema, postgres_tls_ca, postgres_url};
use tollgate::params;

use crate::support::backend::{TestDb, off_runtime, on_postgres};
use crate::support::gateway::shipped_policies;
use crate::support::{TestGateway, Upstream};

/// The test server's URL and its TLS CA, or `None` when the test is skipped.
fn server(test: &str) -> Option<(String, String)> {
    if on_postgres() {
        eprintln!("`{test}` runs in the SQLite run of the suite");
        return None;
    }
    let url = postgres_url(test)?;
    let ca = postgres_tls_ca(test)?;
    assert!(ca.is_file(), "{} is not a file", ca.display());
    Some((url, ca.display().to_string()))
}

/// `url` with `params` added to its query.
fn with_params(url: &str, params: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{params}")
}

/// `sslrootcert=` for `path`, percent-encoded as a URL carries it.
fn rootcert(path: &str) -> String {
    format!(
        "sslrootcert={}",
        utf8_percent_encode(path, NON_ALPHANUMERIC)
    )
}

/// Whether a connection to `url` is encrypted, as the server sees it; or why it failed.
fn encrypted(url: &str) -> Result<bool, String> {
    let url = url.to_owned();
    off_runtime(move || {
        let mut client = tollgate::db::postgres::client(&url).map_err(|e| e.to_string())?;
        client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .map(|row| row.get::<_, bool>(0))
            .map_err(|e| e.to_string())
    })
}

/// A CA the test server's certificate is not signed by, written to `dir`.
fn wrong_ca(dir: &Path) -> String {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "not the server's CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let path = dir.join("wrong-ca.pem");
    std::fs::write(&path, ca.pem()).unwrap();
    path.display().to_string()
}

/// `url` with its host replaced by `host`, the TCP connection still going to 127.0.0.1
/// (`hostaddr`): the certificate is then checked against a name it does not carry.
fn as_host(url: &str, host: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((user, hostport)) => (format!("{user}@"), hostport),
        None => (String::new(), authority),
    };
    let port = hostport.rsplit_once(':').map_or("", |(_, p)| p);
    let port = if port.is_empty() {
        String::new()
    } else {
        format!(":{port}")
    };
    with_params(
        &format!("{scheme}://{user}{host}{port}{path}"),
        "hostaddr=127.0.0.1",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o4_postgres_verify_full_with_the_right_ca_serves_a_call_metered_once() {
    const NAME: &str = "o4_postgres_verify_full_with_the_right_ca_serves_a_call_metered_once";
    let Some((server, ca)) = server(NAME) else {
        return;
    };
    let (scoped, schema) = off_runtime(|| fresh_schema(&server)).unwrap();
    let url = with_params(&scoped, &format!("sslmode=verify-full&{}", rootcert(&ca)));
    let upstream = Upstream::start().await;
    let store_url = url.clone();
    let mut gw = TestGateway::builder(&upstream.url())
        .tweak(move |c| {
            c.store.kind = StoreKind::Postgres {
                url: store_url,
                password: None,
                pool_size: 4,
            }
        })
        .start()
        .await;
    let acme = gw.account("acme").await;
    let r = acme.client.get("/svc/storage/objects/a").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(upstream.count(), 1);
    let db = TestDb(gw.database());
    let calls: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM ledger WHERE kind = 'call'",
            params![],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(calls, 1, "one call over a TLS store, one ledger record");
    let ssl: bool = db
        .query_row(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            params![],
            |r| r.get(0),
        )
        .unwrap();
    assert!(ssl, "the gateway's connections are encrypted");
    gw.shutdown().await;
    drop(gw);
    off_runtime(|| drop_schema(&server, &schema));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o4_postgres_verify_full_with_a_wrong_ca_refuses_to_start() {
    const NAME: &str = "o4_postgres_verify_full_with_a_wrong_ca_refuses_to_start";
    let Some((server, _)) = server(NAME) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wrong = wrong_ca(dir.path());
    let mut config = Config::embedded_default().unwrap();
    config.policies.dir = shipped_policies();
    config.store.data_dir = dir.path().join("data");
    config.store.kind = StoreKind::Postgres {
        url: with_params(
            &server,
            &format!("sslmode=verify-full&{}", rootcert(&wrong)),
        ),
        password: None,
        pool_size: 2,
    };
    let started = App::build(config, Arc::new(ManualClock::starting_now())).await;
    let error = match started {
        Ok(_) => panic!("a gateway started on a server its CA does not vouch for"),
        Err(e) => e.to_string(),
    };
    eprintln!("refused as expected: {error}");
    assert!(
        error.contains("cannot open the store")
            && error.contains("invalid peer certificate: UnknownIssuer")
            && error.contains("sslmode=verify-full")
            && error.contains("sslrootcert"),
        "{error}"
    );
}

#[test]
fn o4_postgres_require_encrypts_and_checks_the_chain_only_with_a_root_file() {
    const NAME: &str = "o4_postgres_require_encrypts_and_checks_the_chain_only_with_a_root_file";
    let Some((server, ca)) = server(NAME) else {
        return;
    };
    assert_eq!(
        encrypted(&with_params(&server, "sslmode=require")),
        Ok(true)
    );
    let with_ca = with_params(&server, &format!("sslmode=require&{}", rootcert(&ca)));
    assert_eq!(encrypted(&with_ca), Ok(true));
    // As libpq: with a root file, `require` is `verify-ca`.
    let dir = tempfile::tempdir().unwrap();
    let wrong = with_params(
        &server,
        &format!("sslmode=require&{}", rootcert(&wrong_ca(dir.path()))),
    );
    let refused = encrypted(&wrong).unwrap_err();
    assert!(refused.contains("UnknownIssuer"), "{refused}");
}

#[test]
fn o4_postgres_disable_connects_in_the_clear() {
    let Some((server, _)) = server("o4_postgres_disable_connects_in_the_clear") else {
        return;
    };
    assert_eq!(
        encrypted(&with_params(&server, "sslmode=disable")),
        Ok(false)
    );
}

#[test]
fn o4_postgres_prefer_is_the_default_and_encrypts_when_the_server_offers_tls() {
    const NAME: &str = "o4_postgres_prefer_is_the_default_and_encrypts_when_the_server_offers_tls";
    let Some((server, ca)) = server(NAME) else {
        return;
    };
    let plain = server
        .split_once('?')
        .map_or(server.as_str(), |(base, _)| base)
        .to_owned();
    assert_eq!(encrypted(&plain), Ok(true), "no sslmode means prefer");
    assert_eq!(encrypted(&with_params(&plain, "sslmode=prefer")), Ok(true));
    let with_ca = with_params(&plain, &format!("sslmode=prefer&{}", rootcert(&ca)));
    assert_eq!(encrypted(&with_ca), Ok(true));
}

#[test]
fn o4_postgres_verify_ca_checks_the_chain_and_verify_full_the_host_name() {
    const NAME: &str = "o4_postgres_verify_ca_checks_the_chain_and_verify_full_the_host_name";
    let Some((server, ca)) = server(NAME) else {
        return;
    };
    let root = rootcert(&ca);
    assert_eq!(
        encrypted(&with_params(
            &server,
            &format!("sslmode=verify-full&{root}")
        )),
        Ok(true)
    );
    // The same server under a name its certificate does not carry.
    let renamed = as_host(&server, "pg.tollgate.invalid");
    assert_eq!(
        encrypted(&with_params(&renamed, &format!("sslmode=verify-ca&{root}"))),
        Ok(true),
        "verify-ca does not compare the host name"
    );
    let refused = encrypted(&with_params(
        &renamed,
        &format!("sslmode=verify-full&{root}"),
    ))
    .unwrap_err();
    assert!(refused.contains("certificate"), "{refused}");
    let dir = tempfile::tempdir().unwrap();
    let wrong = rootcert(&wrong_ca(dir.path()));
    let refused =
        encrypted(&with_params(&server, &format!("sslmode=verify-ca&{wrong}"))).unwrap_err();
    assert!(refused.contains("UnknownIssuer"), "{refused}");
}

/// Needs no server: bad TLS settings in `store.url` are config errors naming the key.
#[test]
fn o4_postgres_bad_tls_settings_in_the_url_are_config_errors() {
    let shipped = include_str!("../../config/tollgate.toml");
    let with_url = |url: &str| {
        shipped.replacen(
            "kind = \"sqlite\"",
            &format!("kind = \"postgres\"\nurl = \"{url}\""),
            1,
        )
    };
    let problems = |url: &str| match Config::parse(&with_url(url)) {
        Ok(_) => panic!("`{url}` accepted"),
        Err(problems) => problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    };
    let base = "postgres://tollgate@db.internal:5432/ledger";
    let cases = [
        ("sslmode=verify-full", "sslrootcert=FILE"),
        ("sslmode=verify_full", "unknown `sslmode=verify_full`"),
        (
            "sslmode=require&sslrootcert=system",
            "needs `sslmode=verify-full`",
        ),
        (
            "sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
            "cannot read `sslrootcert` file `/nonexistent/ca.pem`",
        ),
        ("sslcert=client.pem", "`sslcert`"),
    ];
    for (query, expected) in cases {
        let text = problems(&format!("{base}?{query}"));
        assert!(
            text.contains("store.url") && text.contains(expected),
            "{query}:\n{text}"
        );
    }
    let ok = format!("{base}?sslmode=require");
    assert!(Config::parse(&with_url(&ok)).is_ok());
}
