//! The SRE side: alert rules fire and stay silent as `promtool test rules` says, every dashboard
//! query parses, and every metric a dashboard or a rule names is one the node or the operator
//! actually exports.

use std::collections::BTreeSet;
use std::process::Command;

use bedside_tests::repo_root as repo;
use serde_json::Value;

/// promtool, or a skip (a failure when BEDSIDE_REQUIRE_TOOLS=1, as in CI).
fn promtool() -> Option<&'static str> {
    let missing = Command::new("promtool")
        .arg("--version")
        .output()
        .is_err()
        .then(|| {
            "promtool is missing (apt-get install prometheus; scripts/test-deps.sh does it)"
                .to_string()
        });
    bedside_tests::run_or_skip("promtool", missing, "BEDSIDE_REQUIRE_TOOLS").then_some("promtool")
}

fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{tool} {}:\n{text}", args.join(" "));
    text
}

fn dashboard() -> Value {
    let text =
        std::fs::read_to_string(repo().join("charts/bedside/monitoring/dashboards/bedside.json"))
            .expect("dashboard JSON");
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// Every PromQL expression in the dashboard, with Grafana variables replaced by a regex.
fn dashboard_exprs() -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in dashboard()["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                exprs.push(
                    expr.replace("$tenant", ".*")
                        .replace("$node", ".*")
                        .replace("$media_job", ".*"),
                );
            }
        }
    }
    exprs
}

fn rule_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("charts/bedside/monitoring/alerts.yaml"))
        .expect("alerts");
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("alerts YAML");
    rules["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|r| r["expr"].as_str().map(str::to_string))
        .collect()
}

/// Metric names in PromQL: identifiers that start like ours (labels and functions do not).
fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut current = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            current.push(c);
        } else {
            if current.starts_with("bedside_") || current.starts_with("process_") {
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| current.strip_suffix(s))
                    .unwrap_or(&current)
                    .to_string();
                names.insert(base);
            }
            current.clear();
        }
    }
    names
}

#[test]
fn every_alert_fires_on_its_input_and_stays_silent_otherwise() {
    let Some(promtool) = promtool() else { return };
    let checked = run(
        promtool,
        &["check", "rules", "charts/bedside/monitoring/alerts.yaml"],
    );
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run(
        promtool,
        &[
            "test",
            "rules",
            "charts/bedside/monitoring/alerts_test.yaml",
        ],
    );
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every alert in the rules has at least one firing case in the test file.
    let rules = std::fs::read_to_string(repo().join("charts/bedside/monitoring/alerts.yaml"))
        .expect("rules");
    let tests = std::fs::read_to_string(repo().join("charts/bedside/monitoring/alerts_test.yaml"))
        .expect("tests");
    let tests: serde_yaml::Value = serde_yaml::from_str(&tests).expect("tests YAML");
    // Every alert has a case where it fires and one where it stays silent (a rule that
    // always fires would pass the first alone).
    let cases: Vec<serde_yaml::Value> = tests["tests"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|t| {
            t["alert_rule_test"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let alerts_where = |fires: bool| -> BTreeSet<String> {
        cases
            .iter()
            .filter(|c| c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()) == fires)
            .filter_map(|c| c["alertname"].as_str().map(str::to_string))
            .collect()
    };
    let (fired, silent) = (alerts_where(true), alerts_where(false));
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(fired.contains(name), "no test makes {name} fire");
            assert!(silent.contains(name), "no test shows {name} silent");
        }
    }
}

#[test]
fn every_dashboard_query_parses() {
    let Some(promtool) = promtool() else { return };
    let exprs = dashboard_exprs();
    assert!(
        exprs.len() >= 20,
        "the dashboard has {} queries",
        exprs.len()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(expr).expect("quote")
        ));
    }
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, rules).expect("write");
    let file = file.to_string_lossy().to_string();
    let checked = run(promtool, &["check", "rules", &file]);
    assert!(checked.contains("SUCCESS"), "{checked}");
}

#[test]
fn every_metric_a_dashboard_or_alert_uses_is_exported() {
    let registry = prometheus::Registry::new();
    let node = bedside_media_node::sfu::EngineStats::new(&registry, "t", "n").expect("stats");
    let audit =
        bedside_audit::delivery::AuditMetrics::new(&registry, "t", "n").expect("audit metrics");
    let operator = bedside_operator::metrics::Metrics::new();
    let exported: BTreeSet<String> = node
        .metric_names()
        .into_iter()
        .chain(audit.metric_names())
        .chain(operator.metric_names())
        .chain(bedside_media_node::tls::TlsMetrics::NAMES.map(String::from))
        .collect();
    let mut used = BTreeSet::new();
    for expr in dashboard_exprs().iter().chain(rule_exprs().iter()) {
        used.extend(metric_names_in(expr));
    }
    assert!(used.len() > 15, "{used:?}");
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "used by a dashboard or alert but exported by nothing: {missing:?}"
    );
}
