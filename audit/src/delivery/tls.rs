//! The TLS client the sinks use: TLS 1.2/1.3 with ECDHE and AES-GCM only (aws-lc-rs), trusting
//! the sink's CA or the system's roots.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Whom a client trusts.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// A PEM bundle: the sink's own CA.
    Ca(&'a [u8]),
    /// The system's CA store (a SIEM with a public certificate).
    System,
}

/// ECDHE with AES-GCM, nothing else: the suites HIPAA's transmission security guidance
/// (NIST SP 800-52r2) accepts and that every current SIEM offers.
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

/// A TLS client config; the error says what is wrong with the trust material.
pub fn client_config(trust: Trust<'_>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match trust {
        Trust::Ca(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("the CA file is not valid PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("the CA certificate is not usable: {e}"))?;
            }
            if roots.is_empty() {
                return Err("the CA file holds no certificate".into());
            }
        }
        Trust::System => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no system CA certificates (install ca-certificates)".into());
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_the_reason() {
        let err = client_config(Trust::Ca(b"not pem")).expect_err("no certificate");
        assert!(err.contains("no certificate"), "{err}");
    }

    #[test]
    fn only_aes_gcm_suites_are_offered() {
        for suite in crypto_provider().cipher_suites {
            let name = format!("{:?}", suite.suite());
            assert!(name.contains("AES") && name.contains("GCM"), "{name}");
        }
    }
}
