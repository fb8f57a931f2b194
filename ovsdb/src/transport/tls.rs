//! TLS as OVS uses it: both ends present a certificate signed by a CA they
//! share, and both verify the peer's chain against that CA. Like OVS, the
//! client does not match the server's name against its certificate: switches
//! are reached by IP and their certificates rarely carry one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// PEM files for one end of a TLS connection.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct TlsFiles {
    /// This end's certificate chain.
    pub cert: PathBuf,
    /// This end's private key.
    pub key: PathBuf,
    /// The CA that signs the peers' certificates.
    pub ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate found"));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_err(path, format!("no usable private key: {e}")))
}

fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| file_err(path, e))?;
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsFiles {
    /// A server config that requires and verifies a client certificate.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let roots = load_roots(&self.ca)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(load_certs(&self.cert)?, load_key(&self.key)?)
            .map_err(|e| file_err(&self.key, e))?;
        Ok(Arc::new(config))
    }

    /// A client config that presents our certificate and verifies the
    /// server's chain against the CA (not its name, as OVS does).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let roots = load_roots(&self.ca)?;
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnlyVerifier { inner }))
            .with_client_auth_cert(load_certs(&self.cert)?, load_key(&self.key)?)
            .map_err(|e| file_err(&self.key, e))?;
        Ok(Arc::new(config))
    }
}

/// Verifies the chain up to our CA and ignores the name the server was
/// reached by.
#[derive(Debug)]
struct ChainOnlyVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => Ok(v),
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The subject common name of a DER certificate, for identifying a peer by
/// its certificate. Walks just enough DER to reach the subject.
pub fn subject_common_name(cert: &CertificateDer<'_>) -> Option<String> {
    der::subject_cn(cert.as_ref())
}

mod der {
    //! Minimal DER reading: tag, length, contents. Anything unexpected is None.

    fn read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let mut len = 0usize;
            for &b in &rest[..n] {
                len = (len << 8) | b as usize;
            }
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const CONTEXT_0: u8 = 0xa0;
    /// 2.5.4.3, id-at-commonName.
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];

    pub fn subject_cn(cert: &[u8]) -> Option<String> {
        let (tag, cert, _) = read(cert)?;
        if tag != SEQUENCE {
            return None;
        }
        let (tag, tbs, _) = read(cert)?;
        if tag != SEQUENCE {
            return None;
        }
        let mut rest = tbs;
        // version [0] is optional; then serial, signature, issuer, validity, subject.
        let (tag, _, after) = read(rest)?;
        if tag == CONTEXT_0 {
            rest = after;
        }
        for _ in 0..4 {
            let (_, _, after) = read(rest)?;
            rest = after;
        }
        let (tag, mut subject, _) = read(rest)?;
        if tag != SEQUENCE {
            return None;
        }
        let mut cn = None;
        while !subject.is_empty() {
            let (tag, mut rdn, after) = read(subject)?;
            subject = after;
            if tag != SET {
                return None;
            }
            while !rdn.is_empty() {
                let (_, attr, after) = read(rdn)?;
                rdn = after;
                let (tag, oid, value) = read(attr)?;
                if tag == OID && oid == CN_OID {
                    let (_, v, _) = read(value)?;
                    cn = Some(String::from_utf8_lossy(v).into_owned());
                }
            }
        }
        cn
    }
}
