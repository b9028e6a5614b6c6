//! 1,000 tenants against a real API server: how long until every one is provisioned as far as
//! v1.20 allows (children applied, status written), reconciles per second, and the operator's
//! peak RSS. Goal (issues 3 and 23): under 30 s and under 200 MiB on a 2-core machine; at 10,000
//! tenants (`BEDSIDE_BENCH_TENANTS=10000`) under 500 MiB.
//!
//! The operator runs as its release binary, as its own ServiceAccount, so its RSS is its own.
//! Run: `make bench` (builds the release binary first). `BEDSIDE_BENCH_TENANTS` sets the count.

use std::time::{Duration, Instant};

use bedside_benches::{fleet, print_table};
use bedside_tests::media::cpu_secs;
use bedside_tests::operator::counter_sum;
use bedside_tests::{ClusterOptions, TestCluster};

/// Reconciles that checked a tenant's children, by where they were read.
fn children_checks(metrics: &str, source: &str) -> f64 {
    let sample = format!("bedside_operator_children_checks_total{{source=\"{source}\"}}");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The processes this benchmark started (the API server, etcd), by name, so their CPU can be
/// read beside the operator's.
fn children_of_this_process() -> Vec<(String, u32)> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let name = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?.to_string();
            let ppid = stat
                .get(stat.rfind(')')? + 2..)?
                .split_whitespace()
                .nth(1)?;
            (ppid == me).then_some((name, pid))
        })
        .collect()
}

/// Where the CPU went while the tenants were provisioned: seconds per process.
struct CpuUse(Vec<(String, u32, f64)>);

impl CpuUse {
    fn now(processes: &[(String, u32)]) -> Self {
        Self(
            processes
                .iter()
                .map(|(name, pid)| (name.clone(), *pid, cpu_secs(*pid).unwrap_or(0.0)))
                .collect(),
        )
    }

    fn since(&self, before: &CpuUse) -> Vec<(String, f64)> {
        self.0
            .iter()
            .zip(&before.0)
            .map(|((name, _, after), (_, _, start))| (name.clone(), after - start))
            .collect()
    }
}

/// The API server's requests by verb and resource, from its own metrics.
async fn api_requests(client: &kube::Client) -> Vec<(String, f64)> {
    let request = http::Request::get("/metrics").body(Vec::new());
    let Ok(text) = (match request {
        Ok(r) => client.request_text(r).await,
        Err(_) => return Vec::new(),
    }) else {
        return Vec::new();
    };
    let mut counts: std::collections::BTreeMap<String, f64> = Default::default();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            Some(line[start..].split('"').next()?.to_string())
        };
        let (Some(verb), Some(resource)) = (label("verb"), label("resource")) else {
            continue;
        };
        let n: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *counts.entry(format!("{verb} {resource}")).or_default() += n;
    }
    let mut counts: Vec<(String, f64)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.total_cmp(&a.1));
    counts
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::var("BEDSIDE_BENCH_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let binary = target.join("release/bedside-operator");
    if !binary.is_file() {
        eprintln!(
            "{} is missing: run `make bench`, which builds it first",
            binary.display()
        );
        std::process::exit(1);
    }
    let cluster = TestCluster::start(ClusterOptions::default())
        .await
        .expect("test cluster");
    fleet::prepare(&cluster).await;
    let log = std::env::temp_dir().join("bedside-operator-bench.log");
    let operator = fleet::OperatorProcess::start(&cluster, &binary, &log).await;

    let mut processes = children_of_this_process();
    processes.retain(|(name, _)| name != "bedside-operato");
    processes.push(("bedside-operator".into(), operator.pid()));
    let requests_before = api_requests(&cluster.client()).await;
    let cpu_before = CpuUse::now(&processes);
    let started = Instant::now();
    let client = cluster.client();
    fleet::create_tenants(&client, count).await;
    let created = started.elapsed();
    let deadline = Duration::from_secs(600 * (count as u64).div_ceil(1000));
    let provisioned = fleet::provisioned(&client, count, started, deadline).await;
    let cpu = CpuUse::now(&processes).since(&cpu_before);
    let requests_after = api_requests(&cluster.client()).await;
    let rss = bedside_benches::proc_status_kib(operator.pid(), "VmHWM:").map(|kib| kib / 1024.0);
    let metrics = operator.metrics().await;
    drop(operator);

    let total = provisioned.unwrap_or(deadline);
    let reconciled = counter_sum(&metrics, "bedside_operator_reconciles_total");
    print_table(
        &format!(
            "Operator at scale: {count} tenants, kube-apiserver v1.20.2 + etcd on this machine"
        ),
        &[
            vec!["measure".into(), "value".into(), "goal".into()],
            vec![
                "tenants created (client side)".into(),
                format!("{created:.1?}"),
                "".into(),
            ],
            vec![
                "all provisioned (children + status)".into(),
                provisioned
                    .map(|d| format!("{d:.1?}"))
                    .unwrap_or_else(|| format!("not within {deadline:?}")),
                "< 30 s".into(),
            ],
            vec!["reconciles".into(), format!("{reconciled:.0}"), "".into()],
            vec![
                "children confirmed from the watch caches / read from the API server".into(),
                format!(
                    "{:.0} / {:.0}",
                    children_checks(&metrics, "cache"),
                    children_checks(&metrics, "api")
                ),
                "".into(),
            ],
            vec![
                "reconciles per second".into(),
                format!("{:.0}", reconciled / total.as_secs_f64()),
                "".into(),
            ],
            vec![
                "operator peak RSS".into(),
                rss.map(|r| format!("{r:.0} MiB"))
                    .unwrap_or_else(|| "unknown".into()),
                "< 200 MiB".into(),
            ],
        ],
    );
    let wall = total.as_secs_f64();
    println!("\nWhere the CPU went while provisioning ({wall:.1} s of wall time, 2 cores):");
    for (name, secs) in &cpu {
        println!(
            "  {name:<24} {secs:>7.1} CPU s  ({:.0}% of one core)",
            100.0 * secs / wall
        );
    }
    println!("\nAPI requests during provisioning, per tenant (verb resource):");
    for (what, after) in requests_after.iter().take(20) {
        let before = requests_before
            .iter()
            .find(|(w, _)| w == what)
            .map(|(_, n)| *n)
            .unwrap_or(0.0);
        let per_tenant = (after - before) / count as f64;
        if per_tenant >= 0.05 {
            println!("  {what:<40} {per_tenant:>6.2}");
        }
    }
}
