//! TLS for XMPP (§1.4): STARTTLS nonzas and rustls configuration with the ring provider.

use crate::error::XmppError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// The namespace of the STARTTLS nonzas.
pub const TLS_NS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// The CN's features after its header in TLS mode.
pub const FEATURES_STARTTLS: &str = "<stream:features><starttls xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"><required/></starttls></stream:features>";
/// The agent's request.
pub const STARTTLS: &str = "<starttls xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"/>";
/// The CN's go-ahead.
pub const PROCEED: &str = "<proceed xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"/>";

fn tls_err(context: &str, e: impl std::fmt::Display) -> XmppError {
    XmppError::Tls(format!("{context}: {e}"))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses every certificate in a PEM buffer.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, XmppError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err("certificate PEM", e))?;
    if certs.is_empty() {
        return Err(XmppError::Tls("no certificate in PEM".into()));
    }
    Ok(certs)
}

/// Parses the first private key in a PEM buffer.
pub fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, XmppError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| tls_err("private key PEM", e))
}

fn roots(ca_pem: &[u8]) -> Result<rustls::RootCertStore, XmppError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_from_pem(ca_pem)? {
        roots.add(c).map_err(|e| tls_err("CA certificate", e))?;
    }
    Ok(roots)
}

/// Agent side: trust `ca_pem`, present `cert_pem`/`key_pem` when given (mutual TLS).
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<Arc<rustls::ClientConfig>, XmppError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions", e))?
        .with_root_certificates(roots(ca_pem)?);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(certs_from_pem(cert)?, key_from_pem(key)?)
            .map_err(|e| tls_err("client certificate", e))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// CN side: present `cert_pem`/`key_pem`; when `client_ca_pem` is given, require and verify
/// a client certificate signed by it (mutual TLS).
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: Option<&[u8]>,
) -> Result<Arc<rustls::ServerConfig>, XmppError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions", e))?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| tls_err("client verifier", e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs_from_pem(cert_pem)?, key_from_pem(key_pem)?)
        .map_err(|e| tls_err("server certificate", e))?;
    Ok(Arc::new(config))
}

/// The rustls / tokio-rustls versions this crate uses, so users build configs that fit.
pub use rustls;
pub use tokio_rustls;
