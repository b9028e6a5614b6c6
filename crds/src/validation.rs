//! Offline validation of tenant YAML with exactly the rules of the CRD.
//!
//! The API server checks a custom resource in two passes: the OpenAPI schema (types, enums,
//! bounds, patterns, required fields) and then the CEL `x-kubernetes-validations`. Both run
//! here, in-process, from the very schema `HealthcareTenant::crd()` generates, so a pipeline
//! gets the same verdict `kubectl apply` would give on a current cluster, before applying.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use kube::CustomResourceExt;
use kube::core::cel;
use serde_json::{Map, Value};

use crate::HealthcareTenant;

const API_VERSION: &str = "bedside.health/v1alpha1";
const KIND: &str = "HealthcareTenant";

/// One broken rule: where, and what the person applying the YAML should know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Field path as Kubernetes prints it, e.g. `spec.audit.sinks[1].webhook.url`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ValidationSetupError {
    #[error("the CRD's own schema could not be compiled (a bug in bedside-crds): {0}")]
    Schema(String),
}

/// Validates HealthcareTenant objects against the CRD's schema and CEL rules.
pub struct TenantValidator {
    schema: Value,
    structural: jsonschema::Validator,
    /// The CEL rules compiled once; compiling them per object cost ~1 ms a tenant.
    rules: cel::CompiledSchema,
    cel: cel::Validator,
}

impl std::fmt::Debug for TenantValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantValidator").finish_non_exhaustive()
    }
}

impl TenantValidator {
    pub fn new() -> Result<Self, ValidationSetupError> {
        let crd = HealthcareTenant::crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| ValidationSetupError::Schema(e.to_string()))?
            .ok_or_else(|| ValidationSetupError::Schema("no openAPIV3Schema".into()))?;
        let structural = jsonschema::draft4::options()
            .should_validate_formats(true)
            .build(&with_type_meta(as_json_schema(&schema)))
            .map_err(|e| ValidationSetupError::Schema(e.to_string()))?;
        let rules = cel::compile_schema(&schema);
        if rules.has_errors() {
            let errors: Vec<String> = rules
                .compilation_errors()
                .iter()
                .map(|e| e.to_string())
                .collect();
            return Err(ValidationSetupError::Schema(errors.join("; ")));
        }
        Ok(Self {
            schema,
            structural,
            rules,
            cel: cel::Validator::new(),
        })
    }

    /// Checks a new object, as `kubectl create` would.
    pub fn validate(&self, object: &Value) -> Vec<Violation> {
        self.check(object, None)
    }

    /// Checks an update from `old` to `object`: also runs the transition rules (`oldSelf`).
    pub fn validate_update(&self, object: &Value, old: &Value) -> Vec<Violation> {
        self.check(object, Some(old))
    }

    fn check(&self, object: &Value, old: Option<&Value>) -> Vec<Violation> {
        let mut violations = type_meta_violations(object);
        if !object.is_object() {
            return violations;
        }
        // The API server drops nulls from non-nullable fields and applies defaults before it
        // validates; do the same so defaults (the locked values) are checked too.
        let object = cel::apply_defaults(&self.schema, &without_nulls(object));
        let old = old.map(|old| cel::apply_defaults(&self.schema, &without_nulls(old)));

        let structural: Vec<Violation> = self
            .structural
            .iter_errors(&object)
            .map(|e| structural_violation(&e))
            .collect();
        let mut cel = Vec::new();
        if let Err(errors) = self
            .cel
            .validate_compiled(&self.rules, &object, old.as_ref())
        {
            for error in errors.iter() {
                let path = error.field_path.trim_start_matches('.').to_string();
                // A rule that cannot even evaluate (`duration('15 minutes')`) on a field the
                // schema already refused adds noise, not information.
                let evaluation_failed = error.kind != cel::ErrorKind::ValidationFailure;
                if evaluation_failed && structural.iter().any(|v| v.path == path) {
                    continue;
                }
                cel.push(Violation {
                    path,
                    message: error.message.clone(),
                });
            }
        }
        violations.extend(structural);
        violations.extend(cel);
        violations
    }
}

fn type_meta_violations(object: &Value) -> Vec<Violation> {
    let mut violations = Vec::new();
    if !object.is_object() {
        violations.push(Violation {
            path: String::new(),
            message: "a HealthcareTenant must be a YAML mapping".into(),
        });
        return violations;
    }
    let field = |name: &str| object.get(name).and_then(Value::as_str);
    if field("apiVersion") != Some(API_VERSION) {
        violations.push(Violation {
            path: "apiVersion".into(),
            message: format!(
                "must be {API_VERSION}, found {}",
                field("apiVersion").unwrap_or("nothing")
            ),
        });
    }
    if field("kind") != Some(KIND) {
        violations.push(Violation {
            path: "kind".into(),
            message: format!(
                "must be {KIND}, found {}",
                field("kind").unwrap_or("nothing")
            ),
        });
    }
    match object.pointer("/metadata/name").and_then(Value::as_str) {
        None => violations.push(Violation {
            path: "metadata.name".into(),
            message: "Required value: every tenant needs a name".into(),
        }),
        Some(name) if !is_dns_subdomain(name) => violations.push(Violation {
            path: "metadata.name".into(),
            message: format!(
                "Invalid value: {name:?}: must be lower case letters, digits, '-' and '.', starting and ending with a letter or digit"
            ),
        }),
        Some(_) => {}
    }
    violations
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The CRD schema as plain JSON Schema: `nullable` becomes a null type, and objects that list
/// their properties refuse unknown ones (kubectl's default strict field validation reports
/// them instead of silently pruning a misspelled locked setting).
fn as_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: Map<String, Value> = map
                .iter()
                .map(|(k, v)| {
                    let v = match k.as_str() {
                        // `properties` maps names to schemas; everything else nests schemas.
                        "properties" => Value::Object(
                            v.as_object()
                                .into_iter()
                                .flatten()
                                .map(|(name, s)| (name.clone(), as_json_schema(s)))
                                .collect(),
                        ),
                        "default" | "enum" | "x-kubernetes-validations" => v.clone(),
                        _ => as_json_schema(v),
                    };
                    (k.clone(), v)
                })
                .collect();
            if out.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(t)) = out.get("type").cloned()
            {
                out.insert("type".into(), serde_json::json!([t, "null"]));
            }
            let preserves_unknown =
                out.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if out.contains_key("properties")
                && !out.contains_key("additionalProperties")
                && !preserves_unknown
            {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(as_json_schema).collect()),
        other => other.clone(),
    }
}

/// The derived schema describes spec and status; the API server adds the object's type meta.
fn with_type_meta(mut schema: Value) -> Value {
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for field in ["apiVersion", "kind"] {
            properties.insert(field.into(), serde_json::json!({"type": "string"}));
        }
        properties.insert("metadata".into(), serde_json::json!({"type": "object"}));
    }
    schema
}

/// `2190.0` -> `2190`: bounds are integers in our schema, whatever number type carries them.
fn number(value: &Value) -> String {
    match value.as_f64() {
        Some(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", n as i64),
        _ => value.to_string(),
    }
}

fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// `/spec/audit/sinks/0/url` -> `spec.audit.sinks[0].url`, the way kubectl prints paths.
fn field_path(pointer: &str) -> String {
    let mut path = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{segment}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment);
        }
    }
    path
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Phrases a schema error the way the API server does, so offline and online verdicts read alike.
fn structural_violation(error: &jsonschema::ValidationError<'_>) -> Violation {
    let path = field_path(&error.instance_path().to_string());
    let value = error.instance();
    let (path, message) = match error.kind() {
        ValidationErrorKind::Required { property } => (
            join(&path, property.as_str().unwrap_or_default()),
            "Required value".to_string(),
        ),
        ValidationErrorKind::Enum { options } => (path, unsupported(value, options)),
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let fields: Vec<String> = unexpected.iter().map(|u| format!("{u:?}")).collect();
            let hint = "check its spelling against `kubectl explain healthcaretenant.spec`";
            (path, format!("unknown field {}: {hint}", fields.join(", ")))
        }
        ValidationErrorKind::Maximum { limit } => (
            path,
            format!(
                "Invalid value: {value}: must be less than or equal to {}",
                number(limit)
            ),
        ),
        ValidationErrorKind::Minimum { limit } => (
            path,
            format!(
                "Invalid value: {value}: must be greater than or equal to {}",
                number(limit)
            ),
        ),
        ValidationErrorKind::MaxItems { limit } => {
            (path, format!("Too many: must have at most {limit} items"))
        }
        ValidationErrorKind::MinItems { limit } => (
            path,
            format!("Required value: must have at least {limit} item(s)"),
        ),
        ValidationErrorKind::MaxLength { limit } => (
            path,
            format!("Too long: may not be more than {limit} characters"),
        ),
        ValidationErrorKind::MinLength { limit } => (
            path,
            format!("Invalid value: {value}: must be at least {limit} character(s)"),
        ),
        ValidationErrorKind::Pattern { pattern } => (
            path,
            format!("Invalid value: {value}: should match '{pattern}'"),
        ),
        ValidationErrorKind::Format { format } => (
            path,
            format!("Invalid value: {value}: must be a {format} (e.g. 2026-01-15 for a date)"),
        ),
        ValidationErrorKind::Type { kind } => (path, wrong_type(value, kind)),
        ValidationErrorKind::MaxProperties { .. } | ValidationErrorKind::MinProperties { .. } => (
            path,
            format!("Invalid value: must set exactly one field ({error})"),
        ),
        _ => (path, error.to_string()),
    };
    Violation { path, message }
}

fn unsupported(value: &serde_json::Value, options: &serde_json::Value) -> String {
    let supported: Vec<String> = options
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| o.to_string())
        .collect();
    format!(
        "Unsupported value: {value}: supported values: {}",
        supported.join(", ")
    )
}

fn wrong_type(value: &serde_json::Value, kind: &TypeKind) -> String {
    let expected: Vec<String> = match kind {
        TypeKind::Single(t) => vec![t.to_string()],
        TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).collect(),
    };
    let expected: Vec<String> = expected.into_iter().filter(|t| t != "null").collect();
    format!(
        "Invalid value: {value}: must be of type {} (quote quantities and dates, e.g. cpu: \"1\")",
        expected.join(" or ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pointers_print_as_kubectl_field_paths() {
        assert_eq!(
            field_path("/spec/audit/sinks/0/url"),
            "spec.audit.sinks[0].url"
        );
        assert_eq!(field_path(""), "");
        assert_eq!(
            field_path("/metadata/annotations/a~1b"),
            "metadata.annotations.a/b"
        );
    }

    #[test]
    fn dns_subdomains_are_recognised() {
        assert!(is_dns_subdomain("mercy-clinic"));
        assert!(is_dns_subdomain("a.b-c"));
        assert!(!is_dns_subdomain("Mercy"));
        assert!(!is_dns_subdomain("-x"));
        assert!(!is_dns_subdomain(""));
    }

    #[test]
    fn nullable_fields_accept_null_and_objects_refuse_unknown_fields() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"a": {"type": "string", "nullable": true}}
        });
        let converted = as_json_schema(&schema);
        assert_eq!(
            converted["properties"]["a"]["type"],
            serde_json::json!(["string", "null"])
        );
        assert_eq!(converted["additionalProperties"], Value::Bool(false));
    }
}
