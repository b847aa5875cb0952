//! `tollgate demo --tls`: a demo certificate authority and a server pair it signed, made with
//! rcgen into `<data>/tls/` on first start and reused after, so a client that trusts `ca.pem`
//! keeps trusting the demo across restarts. Never for production: the CA's key sits beside it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use super::{DemoError, write_file, write_private};

/// Where the demo's TLS files are.
#[derive(Debug, Clone)]
pub struct DemoTls {
    /// The demo CA's certificate: what `curl --cacert` is given.
    pub ca: PathBuf,
    /// The server's certificate chain (leaf, then the CA).
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The demo's pair in `dir`, made when missing, for `localhost` and `ip`.
pub fn ensure_pair(dir: &Path, ip: IpAddr) -> Result<DemoTls, DemoError> {
    let tls = DemoTls {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    if tls.ca.exists() && tls.cert.exists() && tls.key.exists() {
        return Ok(tls);
    }
    let setup =
        |e: rcgen::Error| DemoError::Setup(format!("cannot make the demo certificate: {e}"));
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(setup)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tollgate demo CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(setup)?)
        .map_err(setup)?;

    let mut names = vec!["localhost".to_owned(), ip.to_string()];
    if !ip.is_loopback() {
        names.push("127.0.0.1".to_owned());
    }
    let mut params = CertificateParams::new(names).map_err(setup)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "tollgate demo");
    let key = KeyPair::generate().map_err(setup)?;
    let leaf = params.signed_by(&key, &ca).map_err(setup)?;

    write_file(&tls.ca, &ca.pem())?;
    write_file(&tls.cert, &format!("{}{}", leaf.pem(), ca.pem()))?;
    write_private(&tls.key, &key.serialize_pem())?;
    Ok(tls)
}
