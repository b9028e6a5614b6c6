//! The media encryption policy, enforced inside the DTLS stack.
//!
//! str0m's default provider lets DTLS negotiate ChaCha20 suites and any SRTP profile the peer
//! offers. A BAA asks for AES-256, so this wraps the provider: DTLS may only use ECDHE with
//! AES-GCM, and a handshake that ends on an SRTP profile outside the policy never yields keys
//! (no media can flow) and fails the connection with a reason the node reports to the client.

use std::sync::Arc;
use std::time::Instant;

use dimpl::crypto::{Dtls12CipherSuite, Dtls13CipherSuite};
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
    SrtpProfile,
};
use str0m::crypto::{CryptoError, CryptoProvider};

/// ECDHE key exchange, AES-GCM only; AES-256 preferred.
const DTLS12_SUITES: &[Dtls12CipherSuite] = &[
    Dtls12CipherSuite::ECDHE_ECDSA_AES256_GCM_SHA384,
    Dtls12CipherSuite::ECDHE_ECDSA_AES128_GCM_SHA256,
];
const DTLS13_SUITES: &[Dtls13CipherSuite] = &[
    Dtls13CipherSuite::AES_256_GCM_SHA384,
    Dtls13CipherSuite::AES_128_GCM_SHA256,
];

/// The SRTP profile every BAA-locked connection completes with, by its name in metrics,
/// messages and evidence.
pub const AEAD_AES_256_GCM: &str = "AEAD_AES_256_GCM";

/// What the node lets SRTP use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrtpPolicy {
    /// AEAD_AES_256_GCM only: what every BAA-locked tenant gets.
    Aes256GcmOnly,
}

impl SrtpPolicy {
    pub fn allows(self, profile: SrtpProfile) -> bool {
        match self {
            SrtpPolicy::Aes256GcmOnly => profile == SrtpProfile::AEAD_AES_256_GCM,
        }
    }

    /// The SRTP protection profiles a connection may complete with.
    pub fn profiles(self) -> &'static [&'static str] {
        match self {
            SrtpPolicy::Aes256GcmOnly => &[AEAD_AES_256_GCM],
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            SrtpPolicy::Aes256GcmOnly => "SRTP AEAD_AES_256_GCM",
        }
    }
}

/// The sentence a refused peer (and the log) gets.
pub fn refusal_reason(policy: SrtpPolicy) -> String {
    format!(
        "media encryption refused: this node requires DTLS with ECDHE and AES-GCM and {}; \
         the client did not negotiate them (use a current Chrome, Edge, Firefox or Safari)",
        policy.describe()
    )
}

/// A crypto provider for str0m that applies `policy`; built once per process.
pub fn provider(policy: SrtpPolicy) -> Arc<CryptoProvider> {
    let base = str0m::crypto::from_feature_flags();
    let dtls: &'static PolicyDtlsProvider = match policy {
        SrtpPolicy::Aes256GcmOnly => &AES256_ONLY,
    };
    Arc::new(CryptoProvider {
        dtls_provider: dtls,
        ..base
    })
}

static AES256_ONLY: PolicyDtlsProvider = PolicyDtlsProvider {
    policy: SrtpPolicy::Aes256GcmOnly,
    dtls12: DTLS12_SUITES,
    dtls13: DTLS13_SUITES,
};

/// A peer's provider that offers only these DTLS suites: the tests' browser whose suites the
/// node must refuse.
#[cfg(test)]
pub(crate) fn peer_offering(
    dtls12: &'static [Dtls12CipherSuite],
    dtls13: &'static [Dtls13CipherSuite],
) -> Arc<CryptoProvider> {
    let dtls: &'static PolicyDtlsProvider = Box::leak(Box::new(PolicyDtlsProvider {
        policy: SrtpPolicy::Aes256GcmOnly,
        dtls12,
        dtls13,
    }));
    Arc::new(CryptoProvider {
        dtls_provider: dtls,
        ..str0m::crypto::from_feature_flags()
    })
}

#[derive(Debug)]
struct PolicyDtlsProvider {
    policy: SrtpPolicy,
    dtls12: &'static [Dtls12CipherSuite],
    dtls13: &'static [Dtls13CipherSuite],
}

impl DtlsProvider for PolicyDtlsProvider {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let mut builder = dimpl::Config::builder()
            .with_crypto_provider(dimpl::crypto::aws_lc_rs::default_provider())
            // ICE has already proven return routability; cookies would only add a round trip.
            .use_server_cookie(false)
            .dtls12_cipher_suites(self.dtls12)
            .dtls13_cipher_suites(self.dtls13);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        let config = Arc::new(
            builder
                .build()
                .map_err(|e| CryptoError::Other(format!("DTLS config: {e}")))?,
        );
        let cert = dimpl::DtlsCertificate {
            certificate: cert.certificate.clone(),
            private_key: cert.private_key.clone(),
        };
        let dtls = match dtls_version {
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            _ => dimpl::Dtls::new_12(config, cert, now),
        };
        Ok(Box::new(PolicyDtls {
            dtls,
            policy: self.policy,
            refused: None,
            connected: Held::No,
        }))
    }
}

struct PolicyDtls {
    dtls: dimpl::Dtls,
    policy: SrtpPolicy,
    /// Set once the handshake settled on a profile outside the policy.
    refused: Option<SrtpProfile>,
    connected: Held,
}

/// Where dimpl's "Connected" output is on its way to str0m.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    No,
    Waiting,
    Released,
    Delivered,
}

impl std::fmt::Debug for PolicyDtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyDtls")
            .field("policy", &self.policy)
            .field("refused", &self.refused)
            .field("connected", &self.connected)
            .finish()
    }
}

impl PolicyDtls {
    fn check(&self) -> Result<(), DtlsImplError> {
        match self.refused {
            // dimpl has no "SRTP profile" error; a fatal security error ends the connection.
            Some(_) => Err(DtlsImplError::SecurityError(
                dimpl::SecurityError::NoMutuallyAcceptableCipherSuite,
            )),
            None => Ok(()),
        }
    }
}

impl DtlsInstance for PolicyDtls {
    fn set_active(&mut self, active: bool) {
        self.dtls.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.check()?;
        self.dtls.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        if self.refused.is_some() {
            return self.dtls.poll_output(buf);
        }
        // "Connected" is held back until the SRTP profile has passed the policy, so a refused
        // peer is never reported as connected.
        if self.connected == Held::Released {
            self.connected = Held::Delivered;
            return DtlsOutput::Connected;
        }
        {
            match self.dtls.poll_output(buf) {
                DtlsOutput::Connected if self.connected == Held::No => {
                    self.connected = Held::Waiting;
                    // Ask to be polled again right away: the keying material comes next.
                    DtlsOutput::Timeout(Instant::now())
                }
                DtlsOutput::KeyingMaterial(_, profile) if !self.policy.allows(profile) => {
                    tracing::warn!(
                        negotiated = ?profile,
                        required = self.policy.describe(),
                        "{}",
                        refusal_reason(self.policy)
                    );
                    self.refused = Some(profile);
                    // The keys are dropped here, so SRTP is never set up for this peer.
                    let _ = self.dtls.close();
                    DtlsOutput::Timeout(Instant::now())
                }
                DtlsOutput::KeyingMaterial(km, profile) => {
                    if self.connected == Held::Waiting {
                        self.connected = Held::Released;
                    }
                    DtlsOutput::KeyingMaterial(km, profile)
                }
                other => other,
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.check()?;
        self.dtls.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.check()?;
        self.dtls.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.dtls.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.dtls.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.dtls.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.dtls.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.dtls.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aes_256_gcm_passes_the_baa_policy() {
        let policy = SrtpPolicy::Aes256GcmOnly;
        assert!(policy.allows(SrtpProfile::AEAD_AES_256_GCM));
        assert!(!policy.allows(SrtpProfile::AEAD_AES_128_GCM));
        assert!(!policy.allows(SrtpProfile::AES128_CM_SHA1_80));
    }

    #[test]
    fn the_dtls_suites_are_ecdhe_aes_gcm_only() {
        let config = dimpl::Config::builder()
            .with_crypto_provider(dimpl::crypto::aws_lc_rs::default_provider())
            .dtls12_cipher_suites(DTLS12_SUITES)
            .dtls13_cipher_suites(DTLS13_SUITES)
            .build()
            .expect("config");
        let suites: Vec<_> = config.dtls12_cipher_suites().map(|s| s.suite()).collect();
        assert_eq!(suites.len(), 2, "{suites:?}");
        assert!(
            !suites.contains(&Dtls12CipherSuite::ECDHE_ECDSA_CHACHA20_POLY1305_SHA256),
            "ChaCha20 must not be offered"
        );
        assert_eq!(config.dtls13_cipher_suites().count(), 2);
    }
}
