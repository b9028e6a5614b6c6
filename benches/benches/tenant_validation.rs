//! How fast `bedside-operator validate` checks tenants: a platform team's pipeline may check
//! hundreds of tenant files on every merge. Prints tenants per second for a valid tenant and
//! for one that breaks several rules (CEL messages are built only on failure).
//!
//! Run: `cargo bench -p bedside-benches --bench tenant_validation`

use std::path::Path;
use std::time::{Duration, Instant};

use bedside_benches::{print_table, rate as measure};
use bedside_crds::validation::TenantValidator;
use serde_json::Value;

fn load(path: &str) -> Value {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn main() {
    let started = Instant::now();
    let validator = TenantValidator::new().expect("validator");
    let setup = started.elapsed();

    let valid = load("examples/mercy-clinic.yaml");
    let mut invalid = valid.clone();
    invalid["spec"]["meetings"]["recording"] = "Enabled".into();
    invalid["spec"]["meetings"]["idleTimeout"] = "30m".into();
    invalid["spec"]["audit"]["retentionDays"] = 365.into();

    let budget = Duration::from_secs(3);
    let (valid_rate, valid_each) = measure(budget, || validator.validate(&valid).len());
    let (invalid_rate, invalid_each) = measure(budget, || validator.validate(&invalid).len());

    print_table(
        "Offline tenant validation (schema + CEL), one core",
        &[
            vec!["case".into(), "tenants/s".into(), "per tenant".into()],
            vec![
                "valid tenant (mercy-clinic)".into(),
                format!("{valid_rate:.0}"),
                format!("{valid_each:.2?}"),
            ],
            vec![
                "tenant breaking 3 rules".into(),
                format!("{invalid_rate:.0}"),
                format!("{invalid_each:.2?}"),
            ],
        ],
    );
    println!("validator set-up (CRD schema compiled once): {setup:.2?}");
}
