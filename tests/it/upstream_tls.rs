//! TLS to upstreams (SPEC O4): an `https://` upstream is verified against the service's
//! `ca_file`, a wrong certificate is refused with 502 `UpstreamUnavailable` (the reason in the
//! log, never in the body), and `client_cert`/`client_key` give mutual TLS. The upstreams here
//! are real HTTPS servers on loopback with certificates made at test time (rcgen).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tollgate::config::UpstreamTlsConfig;
use tollgate::params;

use crate::support::TestGateway;
use crate::tls::Pki;

/// An HTTPS upstream on loopback that counts the requests it answered.
struct TlsUpstream {
    addr: SocketAddr,
    answered: Arc<AtomicUsize>,
}

impl TlsUpstream {
    /// Serves a leaf signed by `pki`; with `client_ca`, only clients presenting a certificate
    /// signed by it complete the handshake.
    async fn start(pki: &Pki, client_ca: Option<&Pki>) -> Self {
        let (cert, key, _) = pki.leaf();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.ca_der()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(certs, key).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answered = Arc::new(AtomicUsize::new(0));
        let count = answered.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |_req| {
                        count.fetch_add(1, Ordering::SeqCst);
                        async {
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from_static(b"{\"over\":\"tls\"}")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, answered }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

/// Writes `pki`'s CA, and a client pair it signed, into `dir`; returns the service TLS keys.
fn tls_keys(dir: &Path, trust: &Pki, client: Option<&Pki>) -> UpstreamTlsConfig {
    std::fs::write(dir.join("ca.pem"), trust.ca_pem()).unwrap();
    let (client_cert, client_key) = match client {
        Some(pki) => {
            let (cert, key, _) = pki.leaf();
            std::fs::write(dir.join("client.crt"), cert).unwrap();
            std::fs::write(dir.join("client.key"), key).unwrap();
            (Some(dir.join("client.crt")), Some(dir.join("client.key")))
        }
        None => (None, None),
    };
    UpstreamTlsConfig {
        ca_file: Some(dir.join("ca.pem")),
        client_cert,
        client_key,
    }
}

async fn gateway(upstream: &TlsUpstream, tls: UpstreamTlsConfig) -> TestGateway {
    TestGateway::builder(&upstream.url())
        .tweak(move |c| {
            for service in &mut c.services {
                service.tls = Some(tls.clone());
            }
        })
        .start()
        .await
}

fn calls_metered(gw: &TestGateway) -> i64 {
    crate::support::backend::TestDb(gw.database())
        .query_row(
            "SELECT COUNT(*) FROM ledger WHERE kind = 'call'",
            params![],
            |r| r.get(0),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o4_an_https_upstream_trusted_by_ca_file_is_served_and_metered_once() {
    let pki = Pki::new("o4 upstream CA");
    let upstream = TlsUpstream::start(&pki, None).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&upstream, tls_keys(dir.path(), &pki, None)).await;
    let account = gw.account("acme").await;

    let r = account.client.get("/svc/storage/objects/a").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json()["over"],
        "tls",
        "the answer came from the HTTPS upstream"
    );
    assert_eq!(upstream.answered(), 1);
    assert_eq!(
        calls_metered(&gw),
        1,
        "one call over TLS, one ledger record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o4_an_upstream_certificate_from_another_ca_is_refused_with_502_and_no_tls_detail() {
    let real = Pki::new("o4 upstream CA");
    let other = Pki::new("o4 some other CA");
    let upstream = TlsUpstream::start(&real, None).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&upstream, tls_keys(dir.path(), &other, None)).await;
    let account = gw.account("acme").await;

    let r = account.client.get("/svc/storage/objects/a").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.error_code(), "UpstreamUnavailable");
    let body = r.text().to_lowercase();
    for detail in ["certificate", "issuer", "unknown", "rustls", "x509"] {
        assert!(
            !body.contains(detail),
            "the body names a TLS reason: {body}"
        );
    }
    assert_eq!(
        upstream.answered(),
        0,
        "no request crossed an unverified connection"
    );
    assert_eq!(calls_metered(&gw), 0, "an unserved call is not billed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o4_mutual_tls_to_an_upstream_presents_the_gateways_client_certificate() {
    let server = Pki::new("o4 upstream CA");
    let clients = Pki::new("o4 gateway client CA");
    let upstream = TlsUpstream::start(&server, Some(&clients)).await;

    // With the pair: the upstream accepts the gateway.
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&upstream, tls_keys(dir.path(), &server, Some(&clients))).await;
    let account = gw.account("acme").await;
    let r = account.client.get("/svc/storage/objects/a").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(upstream.answered(), 1);

    // Without it: the upstream ends the handshake, the client gets 502.
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(&upstream, tls_keys(dir.path(), &server, None)).await;
    let account = gw.account("acme").await;
    let r = account.client.get("/svc/storage/objects/a").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.error_code(), "UpstreamUnavailable");
    assert_eq!(
        upstream.answered(),
        1,
        "no request without the client certificate"
    );
}
