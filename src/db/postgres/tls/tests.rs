use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::client::danger::ServerCertVerifier as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::*;

const BASE: &str = "postgres://tollgate@db.internal:5432/ledger";

fn parse(query: &str) -> Result<PgTlsSettings, PgTlsError> {
    PgTlsSettings::from_url(&format!("{BASE}?{query}"))
}

#[test]
fn prefer_is_the_default_and_the_url_is_left_alone() {
    let s = PgTlsSettings::from_url(BASE).unwrap();
    assert_eq!(s.mode(), SslMode::Prefer);
    assert_eq!(s.root(), None);
    assert_eq!(s.url(), BASE);
    assert_eq!(s.verification(), Verification::None);
    let s = parse("application_name=x&options=-csearch_path%3Dtg").unwrap();
    assert_eq!(s.mode(), SslMode::Prefer);
    assert_eq!(
        s.url(),
        format!("{BASE}?application_name=x&options=-csearch_path%3Dtg")
    );
}

#[test]
fn each_mode_is_read_and_taken_out_of_the_url() {
    let cases = [
        ("disable", SslMode::Disable, Verification::None),
        ("prefer", SslMode::Prefer, Verification::None),
        ("require", SslMode::Require, Verification::None),
        ("verify-ca", SslMode::VerifyCa, Verification::Chain),
        ("verify-full", SslMode::VerifyFull, Verification::Full),
    ];
    for (name, mode, verification) in cases {
        let s = parse(&format!(
            "connect_timeout=3&sslmode={name}&sslrootcert=/etc/ca.pem&options=-cx"
        ))
        .unwrap();
        assert_eq!(s.mode(), mode, "{name}");
        assert_eq!(s.mode().as_str(), name);
        assert_eq!(
            s.url(),
            format!("{BASE}?connect_timeout=3&options=-cx"),
            "{name}"
        );
        let expected = match mode {
            // libpq: a root file makes `prefer` and `require` check the chain.
            SslMode::Prefer | SslMode::Require => Verification::Chain,
            _ => verification,
        };
        assert_eq!(s.verification(), expected, "{name}");
        assert_eq!(
            s.root(),
            Some(&RootCert::File(PathBuf::from("/etc/ca.pem")))
        );
        let bare = PgTlsSettings::from_url(&format!("{BASE}?sslmode={name}"));
        match mode {
            SslMode::VerifyCa | SslMode::VerifyFull => assert!(
                matches!(bare, Err(PgTlsError::NoRootCert { .. })),
                "{name} without a root: {bare:?}"
            ),
            _ => {
                let bare = bare.unwrap();
                assert_eq!(bare.url(), BASE);
                assert_eq!(bare.verification(), verification, "{name}");
            }
        }
    }
    assert_eq!(
        parse("sslmode=require").unwrap().mode().wire(),
        ::postgres::config::SslMode::Require
    );
    assert_eq!(
        parse("sslmode=verify-full&sslrootcert=x")
            .unwrap()
            .mode()
            .wire(),
        ::postgres::config::SslMode::Require
    );
    assert_eq!(
        parse("sslmode=disable").unwrap().mode().wire(),
        ::postgres::config::SslMode::Disable
    );
}

#[test]
fn bad_settings_are_refused_with_what_to_do() {
    let message = |query: &str| parse(query).unwrap_err().to_string();
    assert!(message("sslmode=verify_full").contains("unknown `sslmode=verify_full`"));
    assert!(message("sslmode=allow").contains("expected `disable`, `prefer`"));
    assert!(
        message("sslmode=verify-full").contains("needs `sslrootcert=FILE`"),
        "{}",
        message("sslmode=verify-full")
    );
    assert!(message("sslmode=require&sslrootcert=system").contains("needs `sslmode=verify-full`"));
    assert!(message("sslmode=prefer&sslmode=require").contains("`sslmode` appears more than once"));
    assert!(
        message("sslrootcert=a&sslrootcert=b").contains("`sslrootcert` appears more than once")
    );
    assert!(
        message("sslcert=client.pem").contains("`sslcert` in the PostgreSQL URL is not supported")
    );
    assert!(message("sslkey=client.key").contains("not supported"));
}

#[test]
fn sslrootcert_system_means_verify_full_and_paths_are_decoded() {
    let s = parse("sslrootcert=system").unwrap();
    assert_eq!(s.mode(), SslMode::VerifyFull);
    assert_eq!(s.root(), Some(&RootCert::System));
    let s = parse("sslmode=verify-full&sslrootcert=system").unwrap();
    assert_eq!(s.verification(), Verification::Full);
    let s = parse("sslmode=verify-ca&sslrootcert=%2Fetc%2Fmy%20ca.pem").unwrap();
    assert_eq!(
        s.root(),
        Some(&RootCert::File(PathBuf::from("/etc/my ca.pem")))
    );
    // Empty means none, as in libpq.
    assert!(matches!(
        parse("sslmode=verify-ca&sslrootcert="),
        Err(PgTlsError::NoRootCert { .. })
    ));
    // A key=value string is tokio-postgres's to read.
    let kv = PgTlsSettings::from_url("host=db sslmode=require").unwrap();
    assert_eq!(kv.url(), "host=db sslmode=require");
}

/// A test CA.
fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, name: &str) -> CertificateDer<'static> {
    let params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params
        .signed_by(&KeyPair::generate().unwrap(), ca)
        .unwrap()
        .der()
        .clone()
}

#[test]
fn root_files_are_read_at_setup_and_bad_ones_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let s = parse(&format!(
        "sslmode=verify-full&sslrootcert={}",
        missing.display()
    ))
    .unwrap();
    let e = s.client_config().unwrap_err().to_string();
    assert!(
        e.contains("cannot read `sslrootcert` file") && e.contains("missing.pem"),
        "{e}"
    );

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let s = parse(&format!(
        "sslmode=verify-ca&sslrootcert={}",
        empty.display()
    ))
    .unwrap();
    let e = s.client_config().unwrap_err().to_string();
    assert!(e.contains("holds no PEM certificate"), "{e}");

    let good = dir.path().join("ca.pem");
    std::fs::write(&good, ca("unit CA").pem()).unwrap();
    for mode in ["prefer", "require", "verify-ca", "verify-full"] {
        let s = parse(&format!("sslmode={mode}&sslrootcert={}", good.display())).unwrap();
        s.client_config().unwrap();
    }
    // `disable` never reads the file, and `require` without one needs none.
    let s = parse(&format!(
        "sslmode=disable&sslrootcert={}",
        missing.display()
    ))
    .unwrap();
    s.client_config().unwrap();
    parse("sslmode=require").unwrap().client_config().unwrap();
}

#[test]
fn verify_ca_checks_the_chain_but_not_the_name() {
    let trusted = ca("trusted");
    let other = ca("other");
    let mut roots = RootCertStore::empty();
    roots.add(trusted.der().clone()).unwrap();
    let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    let verifier = ChainOnly {
        roots: Arc::new(roots),
        algorithms,
    };
    let name = ServerName::try_from("db.internal").unwrap();
    let now = UnixTime::now();
    verifier
        .verify_server_cert(&leaf(&trusted, "db.internal"), &[], &name, &[], now)
        .unwrap();
    verifier
        .verify_server_cert(&leaf(&trusted, "elsewhere.example"), &[], &name, &[], now)
        .expect("verify-ca does not compare names");
    let refused = verifier
        .verify_server_cert(&leaf(&other, "db.internal"), &[], &name, &[], now)
        .unwrap_err();
    assert!(
        matches!(
            refused,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{refused:?}"
    );
    // Anything at all is accepted without a root, as libpq's `require` does.
    NoVerification { algorithms }
        .verify_server_cert(&leaf(&other, "x"), &[], &name, &[], now)
        .unwrap();
}
