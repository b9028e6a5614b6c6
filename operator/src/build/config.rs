//! The media-node config rendered from a tenant. Locked settings are written as their locked
//! values whatever the tenant says (the CRD types cannot even hold an unlocked value).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use bedside_crds::HealthcareTenant;
use bedside_crds::node_config::{
    ApiSettings, AuditSettings, AuditSinkSettings, CONFIG_VERSION, DEFAULT_API_REQUESTS_PER_SECOND,
    KeyFiles, MediaEncryptionMode, MediaNodeConfig, MeetingSettings, NetworkSettings,
    RelaySettings, Requirement, Switch, TenantIdentity, TlsFiles,
};
use bedside_crds::tenant::{AuditDestination, MediaEncryptionPolicy};
use kube::ResourceExt;

use crate::names::{MEDIA_PORT, METRICS_PORT, SIGNALING_PORT};

pub const CONFIG_DIR: &str = "/etc/bedside/config";
pub const TLS_DIR: &str = "/etc/bedside/tls";
pub const KEYS_DIR: &str = "/etc/bedside/keys";
pub const SINKS_DIR: &str = "/etc/bedside/sinks";
pub const AUDIT_BUFFER_DIR: &str = "/var/lib/bedside/audit";
/// The addresses ConfigMap, mounted: one file per media pod with the address it advertises.
pub const ADDRESSES_DIR: &str = "/etc/bedside/addresses";
/// The tenant's `<tenant>-api` Secret, mounted: one file per visits API credential.
pub const API_DIR: &str = "/etc/bedside/api";
/// The credential the operator makes with the Secret; the platform team adds and removes
/// others (rotation).
pub const INITIAL_API_CREDENTIAL: &str = "initial";
/// Where a media pod reads the secret it shares with the tenant's TURN relay.
pub const RELAY_SECRET_DIR: &str = "/etc/bedside/relay";
/// The key of the shared secret in the relay Secret.
pub const RELAY_SECRET_KEY: &str = "secret";
pub const JOIN_TOKEN_KEY: &str = "join-token.key";
pub const AUDIT_HMAC_KEY: &str = "audit-hmac.key";

fn any_port(port: i32) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port as u16))
}

pub fn node_config(tenant: &HealthcareTenant) -> MediaNodeConfig {
    let spec = &tenant.spec;
    let sinks = spec
        .audit
        .sinks
        .iter()
        .enumerate()
        .filter_map(|(i, sink)| {
            Some(match sink.destination()? {
                AuditDestination::Stdout => AuditSinkSettings::Stdout,
                AuditDestination::Syslog(s) => AuditSinkSettings::Syslog {
                    address: s.address.clone(),
                    ca_file: format!("{SINKS_DIR}/{i}/ca.crt").into(),
                },
                AuditDestination::Webhook(w) => AuditSinkSettings::Webhook {
                    url: w.url.clone(),
                    token_file: format!("{SINKS_DIR}/{i}/token").into(),
                },
            })
        })
        .collect();
    MediaNodeConfig {
        version: CONFIG_VERSION,
        tenant: TenantIdentity {
            name: tenant.name_any(),
            display_name: spec.display_name.clone(),
        },
        meetings: MeetingSettings {
            recording: Switch::Disabled,
            chat_persistence: Switch::Disabled,
            waiting_room: Switch::Enabled,
            passcode: Requirement::Required,
            media_encryption: match spec.meetings.media_encryption {
                MediaEncryptionPolicy::Required => MediaEncryptionMode::Required,
                MediaEncryptionPolicy::EndToEnd => MediaEncryptionMode::EndToEnd,
            },
            idle_timeout: spec.meetings.idle_timeout,
            max_duration: spec.meetings.max_duration,
            max_participants: spec.meetings.max_participants,
        },
        network: NetworkSettings {
            signaling_listen: any_port(SIGNALING_PORT),
            media_listen: any_port(MEDIA_PORT),
            media_loops: None,
            // Each pod's own address, from the addresses ConfigMap: not in this file, so that
            // an address arriving or changing rolls no pod.
            advertised_media_address: None,
            advertised_media_address_dir: Some(ADDRESSES_DIR.into()),
            metrics_listen: any_port(METRICS_PORT),
            client_limits: Default::default(),
            relay: relay_settings(tenant),
        },
        tls: TlsFiles {
            cert_file: format!("{TLS_DIR}/tls.crt").into(),
            key_file: format!("{TLS_DIR}/tls.key").into(),
        },
        keys: KeyFiles {
            join_token_key_file: format!("{KEYS_DIR}/{JOIN_TOKEN_KEY}").into(),
            audit_hmac_key_file: format!("{KEYS_DIR}/{AUDIT_HMAC_KEY}").into(),
        },
        audit: AuditSettings {
            retention_days: spec.audit.retention_days,
            buffer_dir: AUDIT_BUFFER_DIR.into(),
            sinks,
            buffer_bytes: u64::from(spec.audit.buffer_mib) << 20,
            when_buffer_full: spec.audit.when_buffer_full,
        },
        api: Some(ApiSettings {
            credentials_dir: API_DIR.into(),
            requests_per_second: DEFAULT_API_REQUESTS_PER_SECOND,
        }),
    }
}

/// The TURN URL browsers are given, and the secret file the node derives credentials from.
/// TURN over TLS on 443 only: the relay is the last resort of networks that let nothing else
/// out; where UDP works, browsers reach the media node directly.
pub fn relay_settings(tenant: &HealthcareTenant) -> Option<RelaySettings> {
    let relay = tenant.spec.relay.as_ref()?;
    Some(RelaySettings {
        urls: vec![format!("turns:{}:443?transport=tcp", relay.hostname)],
        shared_secret_file: format!("{RELAY_SECRET_DIR}/{RELAY_SECRET_KEY}").into(),
    })
}

/// A stable hash of the rendered config text (SHA-256, hex): the same spec renders the same
/// text, so operator upgrades do not roll pods and drop live calls.
pub fn config_hash(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
