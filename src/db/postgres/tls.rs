//! TLS to PostgreSQL (SPEC O4): libpq's `sslmode` and `sslrootcert`, read from the store URL,
//! and the rustls client configuration they stand for.
//!
//! The modes mean what they mean to libpq: `disable` never encrypts; `prefer` (the default)
//! encrypts when the server offers TLS and goes on in the clear when it does not; `require`
//! always encrypts; `verify-ca` also checks that the server's certificate chains to
//! `sslrootcert`; `verify-full` also checks that it names the host. As with libpq, `prefer` and
//! `require` verify the chain when an `sslrootcert` file is given, and `sslrootcert=system`
//! (the operating system's roots) implies `verify-full` and refuses a weaker mode.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and no `sslrootcert`: the TLS
//! keys are taken out of the URL here and the rest is handed over untouched. This module opens
//! no connection and must not log the URL (it may carry user names and options).

use std::path::PathBuf;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// libpq's `sslmode`, as far as tollgate implements it (`allow` is not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Where the CA certificates that `sslrootcert` names come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
    /// The operating system's trust store (`sslrootcert=system`).
    System,
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Encrypted, but any certificate is accepted (libpq's `require` without a root file).
    None,
    /// The certificate must chain to a root; the host name is not compared.
    Chain,
    /// The certificate must chain to a root and name the host.
    Full,
}

/// The TLS settings of a PostgreSQL URL, and the URL without them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTlsSettings {
    mode: SslMode,
    root: Option<RootCert>,
    /// The URL with `sslmode` and `sslrootcert` taken out, for tokio-postgres.
    url: String,
}

/// Why a PostgreSQL URL's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PgTlsError {
    #[error(
        "unknown `sslmode={0}` in the PostgreSQL URL; expected `disable`, `prefer`, `require`, `verify-ca` or `verify-full`"
    )]
    UnknownMode(String),
    #[error("`{key}` appears more than once in the PostgreSQL URL; keep one")]
    Duplicate { key: String },
    #[error(
        "`sslmode={mode}` verifies the server's certificate and needs `sslrootcert=FILE` (the CA's PEM file) or `sslrootcert=system` in the PostgreSQL URL"
    )]
    NoRootCert { mode: &'static str },
    #[error(
        "`sslrootcert=system` needs `sslmode=verify-full` (its default), not `sslmode={mode}`: the system's roots vouch for names, so the name must be checked"
    )]
    SystemNeedsVerifyFull { mode: &'static str },
    #[error(
        "`{key}` in the PostgreSQL URL is not supported: tollgate presents no client certificate and reads no revocation list; remove it"
    )]
    Unsupported { key: String },
    #[error("cannot read `sslrootcert` file `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "`sslrootcert` file `{path}` holds no PEM certificate; expected `-----BEGIN CERTIFICATE-----` blocks"
    )]
    NoCertificate { path: String },
    #[error("`sslrootcert` file `{path}` holds no usable CA certificate: {reason}")]
    BadRootCert { path: String, reason: String },
    #[error(
        "`sslrootcert=system`: no certificate could be loaded from the system's trust store{0}"
    )]
    NoSystemRoots(String),
    #[error("TLS to PostgreSQL cannot be set up: {0}")]
    Rustls(#[from] rustls::Error),
}

/// libpq TLS keys tollgate does not implement; refused by name rather than as unknown options.
const UNSUPPORTED: &[&str] = &[
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslcertmode",
];

// === impl SslMode ===

impl SslMode {
    fn parse(value: &str) -> Result<Self, PgTlsError> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            other => Err(PgTlsError::UnknownMode(other.to_owned())),
        }
    }

    /// The name in the URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether to ask the server for TLS and whether to go on
    /// without it. Verification is the connector's business.
    pub fn wire(self) -> ::postgres::config::SslMode {
        use ::postgres::config::SslMode as Wire;
        match self {
            Self::Disable => Wire::Disable,
            Self::Prefer => Wire::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => Wire::Require,
        }
    }
}

// === impl PgTlsSettings ===

impl PgTlsSettings {
    /// Reads `sslmode` and `sslrootcert` from the query of `url` (a `postgres://` URL) and
    /// refuses combinations libpq refuses. A key=value connection string is passed through
    /// with the default mode: tokio-postgres reads its `sslmode` itself.
    pub fn from_url(url: &str) -> Result<Self, PgTlsError> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) if is_url(url) => (base, query),
            _ => {
                return Ok(Self {
                    mode: SslMode::Prefer,
                    root: None,
                    url: url.to_owned(),
                });
            }
        };
        let mut mode = None;
        let mut root = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode_str(value).decode_utf8_lossy();
            match key {
                "sslmode" => {
                    let parsed = SslMode::parse(&value)?;
                    if mode.replace(parsed).is_some() {
                        return Err(PgTlsError::Duplicate { key: key.into() });
                    }
                }
                "sslrootcert" => {
                    let parsed = match value.as_ref() {
                        "system" => RootCert::System,
                        path => RootCert::File(PathBuf::from(path)),
                    };
                    if root.replace(parsed).is_some() {
                        return Err(PgTlsError::Duplicate { key: key.into() });
                    }
                }
                _ if UNSUPPORTED.contains(&key) => {
                    return Err(PgTlsError::Unsupported { key: key.into() });
                }
                _ => kept.push(pair),
            }
        }
        // An empty `sslrootcert=` means none, as in libpq.
        root = root.filter(|r| !matches!(r, RootCert::File(p) if p.as_os_str().is_empty()));
        let mode = match (mode, &root) {
            (None, Some(RootCert::System)) => SslMode::VerifyFull,
            (Some(m), Some(RootCert::System)) if m != SslMode::VerifyFull => {
                return Err(PgTlsError::SystemNeedsVerifyFull { mode: m.as_str() });
            }
            (Some(m @ (SslMode::VerifyCa | SslMode::VerifyFull)), None) => {
                return Err(PgTlsError::NoRootCert { mode: m.as_str() });
            }
            (mode, _) => mode.unwrap_or(SslMode::Prefer),
        };
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok(Self { mode, root, url })
    }

    pub fn mode(&self) -> SslMode {
        self.mode
    }

    pub fn root(&self) -> Option<&RootCert> {
        self.root.as_ref()
    }

    /// The URL without the keys tokio-postgres does not know.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What is checked of the server's certificate: libpq's rules, under which a root file
    /// turns `prefer` and `require` into `verify-ca`.
    pub fn verification(&self) -> Verification {
        match (self.mode, &self.root) {
            (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, None) => {
                Verification::None
            }
            (SslMode::VerifyCa, _) | (SslMode::Prefer | SslMode::Require, Some(_)) => {
                Verification::Chain
            }
            (SslMode::VerifyFull, _) => Verification::Full,
        }
    }

    /// The rustls client configuration for these settings: TLS 1.2 and 1.3 with the ring
    /// provider's defaults, checking what [`Self::verification`] says. Reads the root file
    /// (or the system's store) now, so a bad one stops the start.
    pub fn client_config(&self) -> Result<ClientConfig, PgTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let verification = self.verification();
        let roots = match (&self.root, verification) {
            (_, Verification::None) | (None, _) => None,
            (Some(root), _) => Some(Arc::new(load_roots(root)?)),
        };
        let config = match (verification, roots) {
            (Verification::Full, Some(roots)) => builder.with_root_certificates(roots),
            (Verification::Chain, Some(roots)) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly {
                    roots,
                    algorithms: provider.signature_verification_algorithms,
                })),
            // `from_url` makes sure the verifying modes have roots: only `None` is left.
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification {
                    algorithms: provider.signature_verification_algorithms,
                })),
        };
        Ok(config.with_no_client_auth())
    }
}

fn is_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn load_roots(root: &RootCert) -> Result<RootCertStore, PgTlsError> {
    let mut roots = RootCertStore::empty();
    match root {
        RootCert::File(path) => {
            let display = || path.display().to_string();
            let bytes = std::fs::read(path).map_err(|source| PgTlsError::Read {
                path: display(),
                source,
            })?;
            let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
                .filter_map(Result::ok)
                .collect();
            if certs.is_empty() {
                return Err(PgTlsError::NoCertificate { path: display() });
            }
            for cert in certs {
                roots.add(cert).map_err(|e| PgTlsError::BadRootCert {
                    path: display(),
                    reason: e.to_string(),
                })?;
            }
        }
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let reasons: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                let reasons = if reasons.is_empty() {
                    String::new()
                } else {
                    format!(": {}", reasons.join("; "))
                };
                return Err(PgTlsError::NoSystemRoots(reasons));
            }
        }
    }
    Ok(roots)
}

/// `verify-ca`: the chain up to a root is checked, the host name is not (libpq's meaning).
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// `require` without a root file: encrypted, any certificate accepted, as libpq does. The
/// handshake signature is still checked, so the session belongs to the certificate's key.
#[derive(Debug)]
struct NoVerification {
    algorithms: WebPkiSupportedAlgorithms,
}

// === impl ChainOnly ===

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

// === impl NoVerification ===

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
