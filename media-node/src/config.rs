//! Loading the node's config file (the contract type lives in bedside-crds).

use std::path::{Path, PathBuf};

use bedside_crds::node_config::{
    AuditSettings, AuditSinkSettings, CONFIG_VERSION, ConfigError, KeyFiles, MediaNodeConfig,
    MeetingSettings, NetworkSettings, TenantIdentity, TlsFiles,
};

/// The dev tenant's name: the audience of the dev token.
pub const DEV_TENANT: &str = "dev-clinic";
/// Where the embedded default's material lives: nowhere, it is made in memory at start-up.
const GENERATED: &str = "(generated in memory at start-up)";

/// The embedded dev default: one tenant on 127.0.0.1 with the BAA's locked settings, so a
/// developer's first run behaves like production in everything but the certificate.
pub fn dev_default() -> MediaNodeConfig {
    let loopback = std::net::Ipv4Addr::LOCALHOST;
    MediaNodeConfig {
        version: CONFIG_VERSION,
        tenant: TenantIdentity {
            name: DEV_TENANT.into(),
            display_name: "bedside (development)".into(),
        },
        meetings: MeetingSettings::default(),
        network: NetworkSettings {
            signaling_listen: (loopback, 8443).into(),
            media_listen: (loopback, 3478).into(),
            media_loops: None,
            advertised_media_address: Some((loopback, 3478).into()),
            advertised_media_address_dir: None,
            metrics_listen: (loopback, 9091).into(),
            client_limits: Default::default(),
            relay: None,
        },
        tls: TlsFiles {
            cert_file: GENERATED.into(),
            key_file: GENERATED.into(),
        },
        keys: KeyFiles {
            join_token_key_file: GENERATED.into(),
            audit_hmac_key_file: GENERATED.into(),
        },
        audit: AuditSettings {
            retention_days: bedside_crds::policy::MIN_AUDIT_RETENTION_DAYS,
            // Per process: the dev key is new at every start, so is the dev chain.
            buffer_dir: std::env::temp_dir()
                .join(format!("bedside-dev-audit-{}", std::process::id())),
            sinks: vec![AuditSinkSettings::Stdout],
            buffer_bytes: u64::from(bedside_crds::tenant::DEFAULT_AUDIT_BUFFER_MIB) << 20,
            when_buffer_full: Default::default(),
        },
        // On a dev node, `--api-credentials DIR` serves the visits API.
        api: None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Invalid { path: PathBuf, source: ConfigError },
}

/// Reads and validates a config; a node never starts on a config that unlocks a locked setting.
pub fn load(path: &Path) -> Result<MediaNodeConfig, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    MediaNodeConfig::from_yaml(&text).map_err(|source| LoadError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_default_is_a_valid_locked_config_on_loopback() {
        let config = dev_default();
        config
            .validate()
            .expect("the dev default passes the same checks as a rendered config");
        assert!(config.network.signaling_listen.ip().is_loopback());
        assert!(config.network.media_listen.ip().is_loopback());
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let err = load(Path::new("/nonexistent/bedside.yaml")).expect_err("missing");
        assert!(
            err.to_string().contains("/nonexistent/bedside.yaml"),
            "{err}"
        );
    }

    #[test]
    fn an_unlocked_config_file_is_refused_with_the_field_and_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.yaml");
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/node-config/mercy-clinic.yaml"),
        )
        .expect("example config");
        load_text_ok(&path, &example);
        std::fs::write(
            &path,
            example.replace("recording: Disabled", "recording: Enabled"),
        )
        .expect("write");
        let err = load(&path).expect_err("unlocked");
        let text = err.to_string();
        assert!(text.contains("meetings.recording"), "{text}");
        assert!(text.contains("PHI"), "{text}");
    }

    fn load_text_ok(path: &Path, text: &str) {
        std::fs::write(path, text).expect("write");
        load(path).expect("the example config is valid");
    }
}
