//! TLS for signaling and the web client: rustls on aws-lc-rs, TLS 1.2 and 1.3, ECDHE with
//! AES-GCM only (45 CFR 164.312(e)(1) transmission security).
//!
//! The certificate is served from [`ServedCertificate`], which a task refreshes from the
//! mounted Secret: cert-manager renews, the kubelet swaps the files, and the next handshake
//! gets the new certificate while connections already open go on (TLS keys are per connection).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::NodeError;
pub use crate::reload::Reload;

/// A certificate chain and its key, PEM.
#[derive(Clone, PartialEq, Eq)]
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

/// The certificate chain and key, checked: valid PEM, at least one certificate, a key that
/// fits it.
fn certified_key(material: &TlsMaterial) -> Result<CertifiedKey, NodeError> {
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
    CertifiedKey::from_der(certs, key, &crypto_provider())
        .map_err(|e| NodeError::Tls(format!("the TLS key does not fit the certificate: {e}")))
}

/// Where a rendered config mounts the certificate and its key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub(crate) fn read(&self) -> Result<TlsMaterial, NodeError> {
        use crate::node::read;
        Ok(TlsMaterial {
            cert_pem: read("the TLS certificate", &self.cert)?,
            key_pem: read("the TLS key", &self.key)?,
        })
    }
}

/// The certificate new handshakes get, replaceable while the node runs.
pub struct ServedCertificate {
    files: Option<TlsFiles>,
    state: RwLock<Served>,
}

struct Served {
    material: TlsMaterial,
    key: Arc<CertifiedKey>,
    /// The certificate served before the last replacement: pods of a tenant see a renewal
    /// at slightly different times, and trust each other across it.
    previous: Option<CertificateDer<'static>>,
    /// Material refused last: reported once, not at every read.
    refused: Option<TlsMaterial>,
}

impl std::fmt::Debug for ServedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedCertificate")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServedCertificate {
    /// Serves `material`; with `files`, [`ServedCertificate::reload`] reads them again.
    pub fn new(material: TlsMaterial, files: Option<TlsFiles>) -> Result<Arc<Self>, NodeError> {
        let key = Arc::new(certified_key(&material)?);
        Ok(Arc::new(Self {
            files,
            state: RwLock::new(Served {
                material,
                key,
                previous: None,
                refused: None,
            }),
        }))
    }

    /// Serves `material` from the next handshake on, if it differs and is valid; invalid
    /// material (a half-written pair, a wrong key) leaves the current certificate in place
    /// and is refused once (offered again, it is `Unchanged`).
    pub fn offer(&self, material: TlsMaterial) -> Result<Reload, NodeError> {
        {
            let mut served = self.state.write().unwrap_or_else(|p| p.into_inner());
            if served.material == material {
                served.refused = None;
                return Ok(Reload::Unchanged);
            }
            if served.refused.as_ref() == Some(&material) {
                return Ok(Reload::Unchanged);
            }
        }
        let checked = certified_key(&material);
        let mut served = self.state.write().unwrap_or_else(|p| p.into_inner());
        let key = match checked {
            Ok(key) => Arc::new(key),
            Err(e) => {
                served.refused = Some(material);
                return Err(e);
            }
        };
        served.previous = served
            .key
            .end_entity_cert()
            .ok()
            .map(|c| c.clone().into_owned());
        served.key = key;
        served.material = material;
        served.refused = None;
        Ok(Reload::Replaced)
    }

    /// Reads the mounted files again (nothing to do for a generated certificate).
    pub fn reload(&self) -> Result<Reload, NodeError> {
        match &self.files {
            Some(files) => self.offer(files.read()?),
            None => Ok(Reload::Unchanged),
        }
    }

    /// The mount holds material that was refused: the node serves an older certificate.
    pub fn mount_refused(&self) -> bool {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .refused
            .is_some()
    }

    /// The certificate served now, or the one before it.
    pub fn is_ours(&self, certificate: &CertificateDer<'_>) -> bool {
        let served = self.state.read().unwrap_or_else(|p| p.into_inner());
        let current = served.key.end_entity_cert().ok();
        current.is_some_and(|c| c.as_ref() == certificate.as_ref())
            || served
                .previous
                .as_ref()
                .is_some_and(|c| c.as_ref() == certificate.as_ref())
    }
}

impl ResolvesServerCert for ServedCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.state
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .key
                .clone(),
        )
    }
}

/// Reads the files every [`RELOAD_INTERVAL`](crate::reload::RELOAD_INTERVAL) until
/// `shutdown`; logs and counts each outcome.
pub async fn keep_fresh(
    served: Arc<ServedCertificate>,
    metrics: TlsMetrics,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let outcome = |result| {
        match result {
            Ok(Reload::Unchanged) => {}
            Ok(Reload::Replaced) => {
                tracing::info!("TLS certificate renewed: new connections get the new one");
                metrics.reloads.with_label_values(&["replaced"]).inc();
            }
            Err(e) => {
                tracing::warn!(error = %e, "the mounted TLS certificate cannot be used; still serving the previous one");
                metrics.reloads.with_label_values(&["refused"]).inc();
            }
        }
        metrics.refused.set(i64::from(served.mount_refused()));
    };
    crate::reload::every_interval(shutdown, || served.reload(), outcome).await;
}

/// What an SRE sees of certificate renewals.
#[derive(Clone, Debug)]
pub struct TlsMetrics {
    reloads: prometheus::IntCounterVec,
    refused: prometheus::IntGauge,
}

impl TlsMetrics {
    pub const NAMES: [&str; 2] = [
        "bedside_media_tls_certificate_reloads_total",
        "bedside_media_tls_certificate_refused",
    ];

    pub fn new(
        registry: &prometheus::Registry,
        tenant: &str,
        node: &str,
    ) -> Result<Self, prometheus::Error> {
        let opts = |name: &str, help: &str| {
            prometheus::Opts::new(name, help)
                .const_label("tenant", tenant)
                .const_label("node", node)
        };
        let reloads = prometheus::IntCounterVec::new(
            opts(
                Self::NAMES[0],
                "Mounted TLS certificates read after start, by outcome: replaced (served from the next handshake) or refused (invalid; the current one stays)",
            ),
            &["outcome"],
        )?;
        let refused = prometheus::IntGauge::with_opts(opts(
            Self::NAMES[1],
            "1 while the mounted certificate cannot be used (e.g. its key does not fit) and the node serves an older one",
        ))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        Ok(Self { reloads, refused })
    }
}

pub fn server_config(
    served: Arc<ServedCertificate>,
) -> Result<Arc<rustls::ServerConfig>, NodeError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| NodeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(served);
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

    fn der(material: &TlsMaterial) -> CertificateDer<'static> {
        CertificateDer::pem_slice_iter(&material.cert_pem)
            .next()
            .expect("a certificate")
            .expect("PEM")
    }

    #[test]
    fn a_self_signed_certificate_makes_a_server_config() {
        let material = TlsMaterial::self_signed().expect("self-signed");
        let served = ServedCertificate::new(material, None).expect("served");
        server_config(served).expect("config");
    }

    #[test]
    fn a_broken_key_is_refused_with_a_reason() {
        let mut material = TlsMaterial::self_signed().expect("self-signed");
        material.key_pem = b"not a key".to_vec();
        let err = ServedCertificate::new(material, None).expect_err("broken key");
        assert!(err.to_string().contains("TLS key"), "{err}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let mut material = TlsMaterial::self_signed().expect("self-signed");
        material.key_pem = TlsMaterial::self_signed().expect("other").key_pem;
        let err = ServedCertificate::new(material, None).expect_err("mismatch");
        assert!(err.to_string().contains("does not fit"), "{err}");
    }

    #[test]
    fn a_renewal_is_served_and_the_previous_certificate_stays_trusted() {
        let first = TlsMaterial::self_signed().expect("first");
        let second = TlsMaterial::self_signed().expect("second");
        let served = ServedCertificate::new(first.clone(), None).expect("served");
        assert_eq!(
            served.offer(first.clone()).expect("same"),
            Reload::Unchanged
        );
        assert_eq!(served.offer(second.clone()).expect("new"), Reload::Replaced);
        assert!(served.is_ours(&der(&second)) && served.is_ours(&der(&first)));
        let third = TlsMaterial::self_signed().expect("third");
        served.offer(third.clone()).expect("newer");
        assert!(
            !served.is_ours(&der(&first)),
            "only one renewal back is trusted"
        );
    }

    #[test]
    fn a_half_written_renewal_leaves_the_current_certificate_in_place() {
        let first = TlsMaterial::self_signed().expect("first");
        let served = ServedCertificate::new(first.clone(), None).expect("served");
        let mut torn = TlsMaterial::self_signed().expect("second");
        torn.key_pem = first.key_pem.clone();
        assert!(served.offer(torn.clone()).is_err());
        assert_eq!(served.offer(torn).expect("seen"), Reload::Unchanged);
        assert!(served.is_ours(&der(&first)) && served.mount_refused());
        // Put right (the Secret fixed, or the renewal finished): nothing refused any more.
        assert_eq!(served.offer(first).expect("same"), Reload::Unchanged);
        assert!(!served.mount_refused());
    }
}
