//! `bedside-operator validate FILE...`: the CRD's verdict on tenant YAML, before `kubectl apply`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bedside_crds::validation::{TenantValidator, Violation};
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// YAML files (several documents each allowed); `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    /// The tenants as they are now (e.g. `kubectl get hct -A -o yaml`): tenants with the same
    /// namespace and name are checked as updates, so transition rules (such as a BAA reference
    /// changed without a new signing date) apply too.
    #[arg(long, value_name = "FILE")]
    old: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
enum InputError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML: {source}")]
    Yaml {
        path: String,
        source: serde_yaml::Error,
    },
}

/// Every object in a YAML text, tagged with the file it came from.
fn read_objects(path: &Path) -> Result<Vec<Value>, InputError> {
    let display = path.display().to_string();
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| InputError::Read {
                path: display.clone(),
                source,
            })?;
        text
    } else {
        std::fs::read_to_string(path).map_err(|source| InputError::Read {
            path: display.clone(),
            source,
        })?
    };
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value: Value =
            serde::Deserialize::deserialize(document).map_err(|source| InputError::Yaml {
                path: display.clone(),
                source,
            })?;
        // `kubectl get -o yaml` wraps objects in a List.
        match value.get("items").and_then(Value::as_array) {
            Some(items) if value.get("kind").and_then(Value::as_str) == Some("List") => {
                objects.extend(items.iter().cloned())
            }
            _ if value.is_null() => {}
            _ => objects.push(value),
        }
    }
    Ok(objects)
}

fn is_tenant(object: &Value) -> bool {
    object.get("kind").and_then(Value::as_str) == Some("HealthcareTenant")
        || object
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| v.starts_with("bedside.health/"))
}

fn key(object: &Value) -> (String, String) {
    let field = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (field("/metadata/namespace"), field("/metadata/name"))
}

pub fn run(args: &Args) -> ExitCode {
    let validator = match TenantValidator::new() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };

    let mut old_tenants = HashMap::new();
    if let Some(old) = &args.old {
        match read_objects(old) {
            Ok(objects) => {
                for object in objects.into_iter().filter(is_tenant) {
                    old_tenants.insert(key(&object), object);
                }
            }
            Err(e) => {
                eprintln!("error: --old {e}");
                return ExitCode::FAILURE;
            }
        }
    }

    let mut failed = false;
    let mut tenants_checked = 0usize;
    for path in &args.files {
        let objects = match read_objects(path) {
            Ok(objects) => objects,
            Err(e) => {
                println!("{e}");
                failed = true;
                continue;
            }
        };
        for (index, object) in objects.iter().enumerate() {
            if !is_tenant(object) {
                continue;
            }
            tenants_checked += 1;
            let (namespace, name) = key(object);
            let violations: Vec<Violation> = match old_tenants.get(&(namespace, name.clone())) {
                Some(old) => validator.validate_update(object, old),
                None => validator.validate(object),
            };
            let label = if name.is_empty() {
                format!("document {}", index + 1)
            } else {
                name
            };
            if violations.is_empty() {
                println!("{}: HealthcareTenant {label}: valid", path.display());
            } else {
                failed = true;
                println!(
                    "{}: HealthcareTenant {label}: {} violation(s)",
                    path.display(),
                    violations.len()
                );
                for violation in violations {
                    println!("  {violation}");
                }
            }
        }
    }

    if tenants_checked == 0 && !failed {
        println!("no HealthcareTenant found in the given files; nothing was validated");
        return ExitCode::FAILURE;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
