//! TLS for signaling and the web client: rustls on aws-lc-rs, TLS 1.2 and 1.3, ECDHE with
//! AES-GCM only (45 CFR 164.312(e)(1) transmission security).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::NodeError;

/// A certificate chain and its key, PEM.
#[derive(Clone)]
pub struct TlsMaterial {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// A self-signed certificate for 127.0.0.1 and localhost, made at start-up (dev default and
    /// tests); its key never touches the disk.
    pub fn self_signed() -> Result<Self, NodeError> {
        let cert = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .map_err(|e| NodeError::Tls(format!("cannot make a self-signed certificate: {e}")))?;
        Ok(Self {
            cert_pem: cert.cert.pem().into_bytes(),
            key_pem: cert.signing_key.serialize_pem().into_bytes(),
        })
    }
}

/// The only suites offered: ECDHE key exchange (implicit in TLS 1.3) with AES-GCM, the same
/// policy as the audit sinks' client.
pub use bedside_audit::delivery::tls::crypto_provider;

pub fn server_config(material: &TlsMaterial) -> Result<Arc<rustls::ServerConfig>, NodeError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&material.cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| NodeError::Tls(format!("the TLS certificate is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(NodeError::Tls(
            "the TLS certificate file holds no certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&material.key_pem)
        .map_err(|e| NodeError::Tls(format!("the TLS key is not a valid PEM private key: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| NodeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| NodeError::Tls(format!("the TLS key does not fit the certificate: {e}")))?;
    // WebSocket upgrades need HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aes_gcm_suites_are_offered() {
        let provider = crypto_provider();
        for suite in &provider.cipher_suites {
            let name = format!("{:?}", suite.suite());
            assert!(name.contains("AES_") && name.contains("GCM"), "{name}");
        }
    }

    #[test]
    fn a_self_signed_certificate_makes_a_server_config() {
        let material = TlsMaterial::self_signed().expect("self-signed");
        server_config(&material).expect("config");
    }

    #[test]
    fn a_broken_key_is_refused_with_a_reason() {
        let mut material = TlsMaterial::self_signed().expect("self-signed");
        material.key_pem = b"not a key".to_vec();
        let err = server_config(&material).expect_err("broken key");
        assert!(err.to_string().contains("TLS key"), "{err}");
    }
}
