//! TLS at the edge (SPEC O4): HTTPS service calls metered once, certificate rotation without a
//! restart while open connections keep working, a bad pair keeping the old one, mutual TLS,
//! the handshake timeout and `plain_listen`. Certificates are made at test time (rcgen).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio_rustls::TlsConnector;
use tollgate::config::TlsConfig;
use tollgate::params;

use crate::support::{TestGateway, Upstream};

/// A test CA that signs server and client certificates.
pub(crate) struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { ca }
    }

    pub(crate) fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub(crate) fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A certificate for `localhost` and 127.0.0.1: (cert PEM, key PEM, cert DER).
    pub(crate) fn leaf(&self) -> (String, String, CertificateDer<'static>) {
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }
}

/// Writes a leaf pair into `dir` as `server.crt` / `server.key`; returns its DER.
fn write_pair(pki: &Pki, dir: &Path) -> CertificateDer<'static> {
    let (cert, key, der) = pki.leaf();
    // Written beside and renamed, as a rotation tool does.
    std::fs::write(dir.join("server.key.new"), key).unwrap();
    std::fs::write(dir.join("server.crt.new"), cert).unwrap();
    std::fs::rename(dir.join("server.key.new"), dir.join("server.key")).unwrap();
    std::fs::rename(dir.join("server.crt.new"), dir.join("server.crt")).unwrap();
    der
}

fn tls_config(dir: &Path, client_ca: Option<PathBuf>) -> TlsConfig {
    TlsConfig {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        client_ca,
        handshake_timeout: Duration::from_millis(800),
    }
}

/// A TLS client trusting `ca`, optionally presenting a client certificate.
fn connector(ca: CertificateDer<'static>, client: Option<(String, String)>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            use rustls::pki_types::pem::PemObject;
            let certs = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    TlsConnector::from(Arc::new(config))
}

/// An HTTPS/1.1 connection: the request sender and the server's leaf certificate.
async fn https(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<(SendRequest<Full<Bytes>>, CertificateDer<'static>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok((sender, leaf))
}

async fn call(
    sender: &mut SendRequest<Full<Bytes>>,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let bytes = match body {
        Some(v) => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    sender.ready().await.unwrap();
    let response = sender
        .send_request(builder.body(Full::new(bytes)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// Signs up `name` and logs its owner in over `sender`; returns the token.
async fn signup(sender: &mut SendRequest<Full<Bytes>>, name: &str) -> String {
    let (status, body) = call(
        sender,
        Method::POST,
        "/accounts",
        None,
        Some(serde_json::json!({"name": name, "email": format!("{name}@example.com"), "owner_user": "owner", "owner_password": "Owner-pass-1!"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let account = body["account_id"].as_str().unwrap().to_owned();
    let (status, body) = call(
        sender,
        Method::POST,
        "/auth/login",
        None,
        Some(serde_json::json!({"account_id": account, "user": "owner", "password": "Owner-pass-1!"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

async fn tls_gateway(upstream: &Upstream, dir: &Path, client_ca: Option<PathBuf>) -> TestGateway {
    let config = tls_config(dir, client_ca);
    TestGateway::builder(&upstream.url())
        .tweak(move |c| c.server.tls = Some(config))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o4_an_https_service_call_is_served_and_metered_exactly_once() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("o4 test CA");
    write_pair(&pki, dir.path());
    let gw = tls_gateway(&upstream, dir.path(), None).await;
    let (mut sender, _) = https(gw.addr, &connector(pki.ca_der(), None))
        .await
        .unwrap();
    let token = signup(&mut sender, "acme").await;
    let (status, body) = call(
        &mut sender,
        Method::GET,
        "/svc/storage/objects/a",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(upstream.count(), 1);
    let calls: i64 = crate::support::backend::TestDb(gw.database())
        .query_row(
            "SELECT COUNT(*) FROM ledger WHERE kind = 'call'",
            params![],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(calls, 1, "one HTTPS call, one ledger record");
    // Plain HTTP on the TLS address is refused: no request is answered in clear text.
    let plain = crate::support::client::raw(
        &gw.addr.to_string(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(!plain.contains("HTTP/1.1 200"), "{plain}");
    // TLS 1.1 and older are never offered: a TLS 1.2-only client still gets through.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der()).unwrap();
    let tls12 = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let (mut sender, _) = https(gw.addr, &TlsConnector::from(Arc::new(tls12)))
        .await
        .unwrap();
    let (status, _) = call(&mut sender, Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o4_a_rotated_certificate_is_served_without_a_restart_and_open_connections_keep_working() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("o4 rotation CA");
    let first = write_pair(&pki, dir.path());
    let gw = tls_gateway(&upstream, dir.path(), None).await;
    let connector = connector(pki.ca_der(), None);
    let (mut before, seen) = https(gw.addr, &connector).await.unwrap();
    assert_eq!(seen, first);
    assert_eq!(
        call(&mut before, Method::GET, "/healthz", None, None)
            .await
            .0,
        StatusCode::OK
    );

    // Rotation by file change: the watcher picks it up.
    let second = write_pair(&pki, dir.path());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, seen) = https(gw.addr, &connector).await.unwrap();
        if seen == second {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection opened before the rotation keeps working.
    assert_eq!(
        call(&mut before, Method::GET, "/healthz", None, None)
            .await
            .0,
        StatusCode::OK
    );

    // A bad pair keeps the old one, and is reported: metric and /readyz detail, still 200.
    std::fs::write(dir.path().join("server.key"), "not a key").unwrap();
    let tls = gw.app.tls.clone().unwrap();
    assert!(tls.reload(&gw.app.metrics).is_err());
    let (mut after, seen) = https(gw.addr, &connector).await.unwrap();
    assert_eq!(seen, second, "the last good certificate is still served");
    let (status, body) = call(&mut after, Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let detail = body["checks"]["tls"].as_str().unwrap();
    assert!(detail.contains("previous certificate"), "{detail}");
    assert!(detail.contains("server.key"), "{detail}");
    let metrics = gw.app.metrics.render();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("tollgate_tls_reloads_total{result=\"failure\"}")
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    assert_eq!(
        call(&mut before, Method::GET, "/healthz", None, None)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o4_client_ca_requires_a_client_certificate_signed_by_it() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("o4 server CA");
    write_pair(&pki, dir.path());
    let clients = Pki::new("o4 client CA");
    std::fs::write(dir.path().join("clients.pem"), clients.ca_pem()).unwrap();
    let gw = tls_gateway(&upstream, dir.path(), Some(dir.path().join("clients.pem"))).await;

    // No client certificate: no request is answered.
    let anonymous = connector(pki.ca_der(), None);
    let refused = match https(gw.addr, &anonymous).await {
        Err(_) => true,
        Ok((mut sender, _)) => {
            let request = Request::get("/healthz")
                .header("host", "localhost")
                .body(Full::new(Bytes::new()))
                .unwrap();
            sender.send_request(request).await.is_err()
        }
    };
    assert!(refused, "a client without a certificate was served");
    // A certificate from another CA: refused too.
    let (cert, key, _) = pki.leaf();
    let wrong = connector(pki.ca_der(), Some((cert, key)));
    let refused = match https(gw.addr, &wrong).await {
        Err(_) => true,
        Ok((mut sender, _)) => {
            let request = Request::get("/healthz")
                .header("host", "localhost")
                .body(Full::new(Bytes::new()))
                .unwrap();
            sender.send_request(request).await.is_err()
        }
    };
    assert!(refused, "a client certificate from another CA was accepted");
    // Signed by the client CA: served.
    let (cert, key, _) = clients.leaf();
    let good = connector(pki.ca_der(), Some((cert, key)));
    let (mut sender, _) = https(gw.addr, &good).await.unwrap();
    assert_eq!(
        call(&mut sender, Method::GET, "/healthz", None, None)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o4_a_client_that_never_finishes_the_handshake_is_cut_off() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("o4 handshake CA");
    write_pair(&pki, dir.path());
    let gw = tls_gateway(&upstream, dir.path(), None).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "a silent client kept its connection past the handshake timeout"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut after {:?}",
        started.elapsed()
    );
}

/// The address after `prefix` in the process output.
fn address_after(output: &str, prefix: &str) -> SocketAddr {
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{output}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

/// GET `path` in plain HTTP on `addr`; the status line and body.
async fn plain_get(addr: SocketAddr, path: &str) -> String {
    crate::support::client::raw(
        &addr.to_string(),
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o4_serve_speaks_tls_on_every_listen_address_with_a_plain_health_port_and_reloads_on_sighup()
 {
    use crate::support::process::{Process, policies, write_config};
    let upstream = Upstream::start().await;
    let temp = tempfile::tempdir().unwrap();
    let pki = Pki::new("o4 serve CA");
    write_pair(&pki, temp.path());
    let config = write_config(
        temp.path(),
        &temp.path().join("data"),
        &policies(),
        &upstream.url(),
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "listen = \"127.0.0.1:0\"",
            "listen = [\"127.0.0.1:0\", \"127.0.0.2:0\"]\nplain_listen = \"127.0.0.1:0\"",
        )
        .replacen(
            "\n[store]",
            &format!(
                "\n[server.tls]\ncert = {:?}\nkey = {:?}\n\n[store]",
                temp.path().join("server.crt").display().to_string(),
                temp.path().join("server.key").display().to_string()
            ),
            1,
        );
    assert!(text.contains("[server.tls]") && text.contains("plain_listen"));
    std::fs::write(&config, text).unwrap();
    let gateway = Process::start(&config, &[]);
    assert!(gateway.url.starts_with("https://"), "{}", gateway.url);
    let first: SocketAddr = gateway.url.trim_start_matches("https://").parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let output = loop {
        let output = gateway.output.lock().clone();
        if output.contains("(healthz, readyz, metrics only)")
            || std::time::Instant::now() > deadline
        {
            break output;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let second = address_after(&output, "tollgate: also listening on https://");
    let plain = address_after(&output, "tollgate: also listening on http://");
    assert_eq!(second.ip().to_string(), "127.0.0.2");

    let connector = connector(pki.ca_der(), None);
    for addr in [first, second] {
        let (mut sender, _) = https(addr, &connector).await.unwrap();
        assert_eq!(
            call(&mut sender, Method::GET, "/healthz", None, None)
                .await
                .0,
            StatusCode::OK
        );
    }
    // plain_listen: health, readiness and metrics only.
    assert!(
        plain_get(plain, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        plain_get(plain, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let metrics = plain_get(plain, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        !metrics.contains("tollgate_tls_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );
    let refused = plain_get(plain, "/auth/login").await;
    assert!(refused.starts_with("HTTP/1.1 404"), "{refused}");
    let refused = plain_get(plain, "/svc/storage/objects/a").await;
    assert!(refused.starts_with("HTTP/1.1 404"), "{refused}");

    // SIGHUP reloads the pair (no file changed, so only the signal can have done it).
    let status = std::process::Command::new("kill")
        .args(["-HUP", &gateway.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = plain_get(plain, "/metrics").await;
        if metrics.contains("tollgate_tls_reloads_total{result=\"success\"} 1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload TLS:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TLS connection that negotiated `h2` by ALPN.
async fn h2_tls(
    addr: SocketAddr,
    ca: CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "h2 negotiated by ALPN"
    );
    tls
}

async fn h2_call(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let method = if body.is_some() {
        Method::POST
    } else {
        Method::GET
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"));
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let bytes = match body {
        Some(v) => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    sender.ready().await.unwrap();
    let response = sender
        .send_request(builder.body(Full::new(bytes)).unwrap())
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o4_an_http2_service_call_is_served_and_metered_exactly_once_with_the_f_rules() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("o4 h2 CA");
    write_pair(&pki, dir.path());
    let gw = tls_gateway(&upstream, dir.path(), None).await;
    let tls = h2_tls(gw.addr, pki.ca_der()).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let (status, body) = h2_call(
        &mut sender,
        "/accounts",
        None,
        Some(serde_json::json!({"name": "acme", "email": "acme@example.com", "owner_user": "owner", "owner_password": "Owner-pass-1!"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let account = body["account_id"].as_str().unwrap().to_owned();
    let (status, body) = h2_call(
        &mut sender,
        "/auth/login",
        None,
        Some(serde_json::json!({"account_id": account, "user": "owner", "password": "Owner-pass-1!"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let (status, body) = h2_call(
        &mut sender,
        "/svc/storage/objects/a?x=1",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(upstream.count(), 1);
    assert_eq!(upstream.last().uri, "/objects/a?x=1");
    let calls: i64 = crate::support::backend::TestDb(gw.database())
        .query_row(
            "SELECT COUNT(*) FROM ledger WHERE kind = 'call'",
            params![],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(calls, 1, "one HTTP/2 call, one ledger record");
    // F1 holds on HTTP/2: an encoded slash is refused before routing, never forwarded.
    let (status, _) = h2_call(
        &mut sender,
        "/svc/storage/objects/a%2Fb",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // F2 holds: a client's identity header never reaches the upstream.
    sender.ready().await.unwrap();
    let request = Request::get("https://localhost/svc/storage/objects/b")
        .header("authorization", format!("Bearer {token}"))
        .header("x-tollgate-account", "999999999999")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = upstream.last();
    let forged = seen
        .headers
        .get_all("x-tollgate-account")
        .iter()
        .any(|v| v.to_str().unwrap_or_default().contains("999999999999"));
    assert!(
        !forged,
        "a client's X-Tollgate-Account reached the upstream over HTTP/2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o4_http2_caps_concurrent_streams_header_lists_and_rapid_resets() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("o4 h2 caps CA");
    write_pair(&pki, dir.path());
    let gw = tls_gateway(&upstream, dir.path(), None).await;

    // Concurrent streams: the server's SETTINGS cap them.
    let tls = h2_tls(gw.addr, pki.ca_der()).await;
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let request = Request::get("https://localhost/healthz").body(()).unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        client.current_max_send_streams(),
        tollgate::server::HTTP2_MAX_CONCURRENT_STREAMS as usize
    );

    // Header list size: a head over server.max_header_bytes is refused, never served.
    let big = "a".repeat(gw.app.config.server.max_header_bytes + 1024);
    let request = Request::get("https://localhost/healthz")
        .header("x-big", big)
        .body(())
        .unwrap();
    let refused = match client.send_request(request, true) {
        Err(_) => true,
        Ok((response, _)) => match response.await {
            Err(_) => true,
            Ok(r) => r.status() == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        },
    };
    assert!(refused, "an oversized HTTP/2 header list was served");

    // Rapid reset: streams opened and reset at once; the connection is closed with GOAWAY
    // long before a thousand.
    let tls = h2_tls(gw.addr, pki.ca_der()).await;
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let mut sent = 0;
    for _ in 0..1000 {
        client = match client.ready().await {
            Ok(c) => c,
            Err(_) => break,
        };
        let request = Request::post("https://localhost/auth/login")
            .body(())
            .unwrap();
        match client.send_request(request, false) {
            Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(_) => break,
        }
        sent += 1;
        tokio::task::yield_now().await;
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(
        sent < 1000 || matches!(ended, Ok(Ok(Err(_)))),
        "a rapid-reset flood of {sent} streams was never cut off"
    );
    // The gateway is still fine.
    let tls = h2_tls(gw.addr, pki.ca_der()).await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    assert_eq!(
        h2_call(&mut sender, "/healthz", None, None).await.0,
        StatusCode::OK
    );
}
