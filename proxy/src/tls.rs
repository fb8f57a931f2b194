//! TLS plumbing shared by listeners, backend legs, checks, peers and the admin API (rustls, ring).

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {reason}")]
    Certs { path: String, reason: String },
    #[error("cannot read private key from {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("{0}")]
    Rustls(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Certs {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate found".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // Never echo key material: only the path and the kind of failure.
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(ca)? {
        store.add(cert).map_err(|e| TlsError::Certs {
            path: ca.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(store))
}

/// A server config; with `client_ca`, clients must present a certificate chaining to it.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                .build()
                .map_err(|e| TlsError::Rustls(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| TlsError::Rustls(format!("certificate {}: {e}", cert.display())))?;
    Ok(Arc::new(config))
}

/// A client config trusting `ca`, presenting `cert`/`key` when given.
pub fn client_config(
    ca: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider())
        .build()
        .map_err(|e| TlsError::Rustls(format!("CA {}: {e}", ca.display())))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_webpki_verifier(verifier);
    let config = match (cert, key) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(load_certs(c)?, load_key(k)?)
            .map_err(|e| TlsError::Rustls(format!("client certificate {}: {e}", c.display())))?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name to verify in a peer's certificate: a configured name or the IP address.
pub fn server_name(configured: Option<&str>, ip: std::net::IpAddr) -> ServerName<'static> {
    configured
        .and_then(|n| ServerName::try_from(n.to_string()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(ip.into()))
}

/// The subject common name of a DER certificate, if it has one (bounded DER walk, no panic).
pub fn subject_cn(cert: &[u8]) -> Option<String> {
    let (cert_body, _) = der_take(cert, 0x30)?;
    let (mut tbs, _) = der_take(cert_body, 0x30)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_skip(tbs)?; // version
    }
    tbs = der_skip(tbs)?; // serialNumber
    tbs = der_skip(tbs)?; // signature
    tbs = der_skip(tbs)?; // issuer
    tbs = der_skip(tbs)?; // validity
    let (mut subject, _) = der_take(tbs, 0x30)?;
    let mut cn = None;
    while !subject.is_empty() {
        let (mut rdn, rest) = der_take(subject, 0x31)?;
        subject = rest;
        while !rdn.is_empty() {
            let (atv, rest) = der_take(rdn, 0x30)?;
            rdn = rest;
            let (oid, value) = der_take(atv, 0x06)?;
            if oid == [0x55, 0x04, 0x03] {
                let tag = *value.first()?;
                let (text, _) = der_take(value, tag)?;
                cn = Some(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    cn
}

/// Splits one TLV with the expected tag off `input`: (contents, rest).
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *input.first()? != tag {
        return None;
    }
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*input.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    let body = input.get(header..end)?;
    Some((body, input.get(end..)?))
}

fn der_skip(input: &[u8]) -> Option<&[u8]> {
    let tag = *input.first()?;
    der_take(input, tag).map(|(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn extracts_cn_from_a_real_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["switch-7.example".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tor-switch-7");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_cn(cert.der()).as_deref(), Some("tor-switch-7"));
    }

    proptest! {
        #[test]
        fn cn_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = subject_cn(&bytes);
        }
    }
}
