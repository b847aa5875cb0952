//! TLS to `https://` upstreams (SPEC O4): one rustls client configuration per service. The
//! upstream's chain must end in the service's `ca_file`, or in the system's roots when it names
//! none; `client_cert`/`client_key` make the gateway present a certificate (mutual TLS), so an
//! upstream can know the caller is the gateway. `X-Tollgate-Identity` stays the per-caller proof.
//!
//! Upstreams speak HTTP/1.1 to the gateway, over TLS as in the clear. Files are read once, at
//! start; a failure names the service and the file.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;

use crate::config::UpstreamTlsConfig;
use crate::server::tls::{TlsError, read_certs, read_pair};

/// Why a service's upstream TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("service `{service}`: {source}")]
    Files { service: String, source: TlsError },
    #[error("service `{service}`: `{path}` holds no usable CA certificate: {reason}")]
    BadCa {
        service: String,
        path: String,
        reason: String,
    },
    #[error(
        "service `{service}`: no system root certificates could be loaded ({reason}); install the `ca-certificates` package or set the service's `ca_file`"
    )]
    NoSystemRoots { service: String, reason: String },
    #[error(
        "service `{service}`: `client_cert` and `client_key` do not form a usable pair: {source}"
    )]
    ClientPair {
        service: String,
        source: rustls::Error,
    },
}

/// The rustls client configuration for `service`'s upstream: TLS 1.2 and 1.3 with the ring
/// provider's default suites, ALPN left to the connector.
pub fn client_config(
    service: &str,
    tls: &UpstreamTlsConfig,
) -> Result<ClientConfig, UpstreamTlsError> {
    let files = |source| UpstreamTlsError::Files {
        service: service.to_owned(),
        source,
    };
    let roots = match &tls.ca_file {
        Some(path) => ca_roots(service, path)?,
        None => system_roots(service)?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| UpstreamTlsError::ClientPair {
            service: service.to_owned(),
            source,
        })?
        .with_root_certificates(roots);
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let (certs, key) = read_pair(cert, key).map_err(files)?;
            builder.with_client_auth_cert(certs, key).map_err(|source| {
                UpstreamTlsError::ClientPair {
                    service: service.to_owned(),
                    source,
                }
            })
        }
        // Config checks the pair is whole; half a pair presents nothing.
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn ca_roots(service: &str, path: &Path) -> Result<rustls::RootCertStore, UpstreamTlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = read_certs(path).map_err(|source| UpstreamTlsError::Files {
        service: service.to_owned(),
        source,
    })?;
    for cert in certs {
        roots.add(cert).map_err(|e| UpstreamTlsError::BadCa {
            service: service.to_owned(),
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn system_roots(service: &str) -> Result<rustls::RootCertStore, UpstreamTlsError> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        let reason = match loaded.errors.first() {
            Some(e) => e.to_string(),
            None => "the system store is empty".to_owned(),
        };
        return Err(UpstreamTlsError::NoSystemRoots {
            service: service.to_owned(),
            reason,
        });
    }
    Ok(roots)
}
