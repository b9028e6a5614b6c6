//! TLS for signaling and the web client: rustls on aws-lc-rs, TLS 1.2 and 1.3, ECDHE with
//! AES-GCM only (45 CFR 164.312(e)(1) transmission security).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
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

/// The only suites offered: ECDHE key exchange (implicit in TLS 1.3) with AES-GCM.
pub fn crypto_provider() -> CryptoProvider {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        ..rustls::crypto::aws_lc_rs::default_provider()
    }
}

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

/// What a TLS client trusts.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// Exactly the CA certificates in this PEM (a sink's own CA).
    Ca(&'a [u8]),
    /// The system's CA store (a SIEM with a public certificate).
    System,
}

/// A TLS client under the same policy as the server: TLS 1.2/1.3, ECDHE with AES-GCM only.
pub fn client_config(trust: Trust<'_>) -> Result<Arc<rustls::ClientConfig>, NodeError> {
    let mut roots = rustls::RootCertStore::empty();
    match trust {
        Trust::Ca(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert =
                    cert.map_err(|e| NodeError::Tls(format!("the CA file is not valid PEM: {e}")))?;
                roots.add(cert).map_err(|e| {
                    NodeError::Tls(format!("the CA certificate is not usable: {e}"))
                })?;
            }
            if roots.is_empty() {
                return Err(NodeError::Tls("the CA file holds no certificate".into()));
            }
        }
        Trust::System => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(NodeError::Tls(
                    "no system CA certificates (install ca-certificates)".into(),
                ));
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| NodeError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
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
