//! Loading the node's config file (the contract type lives in bedside-crds).

use std::path::{Path, PathBuf};

use bedside_crds::node_config::{ConfigError, MediaNodeConfig};

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
