//! The tenant examples in `examples/` and the invalid ones in `examples/invalid/`, with the
//! verdicts their headers promise.

use std::path::{Path, PathBuf};

use serde_json::Value;

pub fn examples_dir() -> PathBuf {
    crate::repo_root().join("examples")
}

/// The `.yaml` files directly in `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

pub fn valid_tenant_files() -> Vec<PathBuf> {
    yaml_files(&examples_dir())
}

pub fn invalid_tenant_files() -> Vec<PathBuf> {
    yaml_files(&examples_dir().join("invalid"))
}

/// Every document of a YAML file, as JSON values.
pub fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", path.display()))
        })
        .collect()
}

/// An `.update.yaml` example holds the stored object, then the update.
pub fn is_update(path: &Path) -> bool {
    path.to_string_lossy().ends_with(".update.yaml")
}

/// `# expect: <path>: <message prefix>` lines.
pub fn expected_violations(path: &Path) -> Vec<(String, String)> {
    header_lines(path, "# expect: ")
        .into_iter()
        .map(|e| {
            let (field, message) = e
                .split_once(": ")
                .unwrap_or_else(|| panic!("{}: `# expect: <path>: <message>`", path.display()));
            (field.to_string(), message.to_string())
        })
        .collect()
}

/// The field path a v1.20 API server names when it rejects the example by its OpenAPI schema,
/// or None when only CEL (which 1.20 cannot run) refuses it.
pub fn rejected_by_schema_at(path: &Path) -> Option<String> {
    header_lines(path, "# apiserver-1.20 rejects: ")
        .into_iter()
        .next()
}

fn header_lines(path: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(str::to_string)
        .collect()
}
