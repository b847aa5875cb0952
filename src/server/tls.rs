//! TLS at the edge (SPEC O4): the rustls server configuration built from `[server.tls]`, held
//! behind an `ArcSwap` so a new certificate and key apply to new handshakes while connections
//! opened before keep the pair they started with.
//!
//! A reload (file change or SIGHUP) reads and checks the whole pair first; a bad pair keeps the
//! one being served and is reported like a bad policy tree: a log line, the
//! `tollgate_tls_reloads_total{result="failure"}` metric and a `tls` detail in `/readyz`, which
//! still answers 200. TLS 1.2 and 1.3 only, with rustls' default cipher suites (ring provider).
//! This module must not read or write HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher as _};
use parking_lot::Mutex;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Quiet time after the last file event before the pair is read again (editors and `cp` write
/// in several steps).
const WATCH_DEBOUNCE: Duration = Duration::from_millis(200);

/// Why a certificate and key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("`{path}` holds no PEM certificate; expected `-----BEGIN CERTIFICATE-----` blocks")]
    NoCertificate { path: String },
    #[error("`{path}` holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}")]
    BadKey { path: String, reason: String },
    #[error("`{path}` holds no usable CA certificate: {reason}")]
    BadClientCa { path: String, reason: String },
    #[error("the certificate and key do not form a usable pair: {0}")]
    Pair(rustls::Error),
}

/// The edge's TLS state: the pair being served and the last reload's outcome.
pub struct EdgeTls {
    config: TlsConfig,
    current: ArcSwap<ServerConfig>,
    last_error: Mutex<Option<String>>,
}

/// Keeps the certificate watcher alive; dropping it stops watching.
pub struct TlsWatcher {
    _watcher: notify::RecommendedWatcher,
}

// === impl EdgeTls ===

impl EdgeTls {
    /// Loads the pair of `config`; a bad pair at start is an error (the gateway does not start).
    pub fn load(config: TlsConfig) -> Result<Arc<Self>, TlsError> {
        let server = build(&config)?;
        Ok(Arc::new(Self {
            config,
            current: ArcSwap::from_pointee(server),
            last_error: Mutex::new(None),
        }))
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    pub fn handshake_timeout(&self) -> Duration {
        self.config.handshake_timeout
    }

    /// Reads the pair again and serves it from the next handshake on; on failure the pair being
    /// served stays and the error is kept for `/readyz`.
    pub fn reload(&self, metrics: &crate::metrics::Metrics) -> Result<(), TlsError> {
        match build(&self.config) {
            Ok(server) => {
                self.current.store(Arc::new(server));
                *self.last_error.lock() = None;
                metrics.tls_reload(true);
                tracing::info!(cert = %self.config.cert.display(), "TLS certificate and key reloaded");
                Ok(())
            }
            Err(e) => {
                *self.last_error.lock() = Some(e.to_string());
                metrics.tls_reload(false);
                tracing::warn!(error = %e, "TLS reload rejected; the certificate being served stays");
                Err(e)
            }
        }
    }

    /// `ok`, or why the last reload was rejected (the old pair is still served).
    pub fn status(&self) -> String {
        match &*self.last_error.lock() {
            None => "ok".to_owned(),
            Some(e) => format!("serving the previous certificate; last reload rejected: {e}"),
        }
    }

    /// Reloads when the certificate, key or client CA file changes.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        metrics: crate::metrics::SharedMetrics,
    ) -> Result<TlsWatcher, notify::Error> {
        let (tx, rx) = mpsc::channel::<()>();
        let files: Vec<PathBuf> = [
            Some(&self.config.cert),
            Some(&self.config.key),
            self.config.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
        .collect();
        let watched = files.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    Ok(e) => {
                        !e.kind.is_access()
                            && (e.paths.is_empty()
                                || e.paths.iter().any(|p| watched.iter().any(|w| w == p)))
                    }
                    Err(_) => true,
                };
                if relevant {
                    let _ = tx.send(());
                }
            })?;
        // Watch the directories: a rotation by rename replaces the file itself.
        let mut dirs: Vec<&Path> = files.iter().filter_map(|f| f.parent()).collect();
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        let tls = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("tollgate-tls-watch".to_owned())
            .spawn(move || {
                while rx.recv().is_ok() {
                    if !crate::debounce::settled(&rx, WATCH_DEBOUNCE) {
                        return;
                    }
                    let Some(tls) = tls.upgrade() else { return };
                    // Logged and recorded by `reload`.
                    let _ = tls.reload(&metrics);
                }
            })
            .map_err(notify::Error::io)?;
        Ok(TlsWatcher { _watcher: watcher })
    }
}

impl std::fmt::Debug for EdgeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeTls")
            .field("cert", &self.config.cert)
            .finish_non_exhaustive()
    }
}

/// The rustls server configuration of `config`: TLS 1.2 and 1.3, the ring provider's default
/// suites, ALPN `http/1.1`, and client certificates checked against `client_ca` when set.
fn build(config: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let (certs, key) = read_pair(&config.cert, &config.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Pair)?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let bad = |reason: String| TlsError::BadClientCa {
                path: path.display().to_string(),
                reason,
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(TlsError::Pair)?;
    // HTTP/2 first, as clients expect; HTTP/1.1 for the rest (O4).
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server)
}

pub(crate) fn read_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs = read_certs(cert)?;
    let bytes = read(key)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::BadKey {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok((certs, key))
}

pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}
