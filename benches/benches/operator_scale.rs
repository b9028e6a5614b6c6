//! 1,000 tenants against a real API server: how long until every one is provisioned as far as
//! v1.20 allows (children applied, status written), reconciles per second, and the operator's
//! peak RSS. Goal (issue 3): under 60 s and under 200 MiB on a 2-core machine.
//!
//! The operator runs as its release binary, as its own ServiceAccount, so its RSS is its own.
//! Run: `make bench` (builds the release binary first). `BEDSIDE_BENCH_TENANTS` sets the count.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bedside_benches::print_table;
use bedside_crds::HealthcareTenant;
use bedside_tests::media::cpu_secs;
use bedside_tests::operator::{ensure_namespace, install_crd, operator_token};
use bedside_tests::{ClusterOptions, TestCluster};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};

const NAMESPACES: usize = 10;

fn tenant(i: usize) -> HealthcareTenant {
    let doc = serde_json::json!({
        "apiVersion": "bedside.health/v1alpha1", "kind": "HealthcareTenant",
        "metadata": {"name": format!("clinic-{i:04}"), "namespace": format!("bench-{}", i % NAMESPACES)},
        "spec": {
            "displayName": format!("Clinic {i}"),
            "baa": {"reference": format!("BAA-{i:04}"), "signedOn": "2026-01-01"},
            "tls": {"secretName": "clinic-tls", "dnsNames": [format!("clinic-{i}.example")]},
            "audit": {"sinks": [{"stdout": {}}]},
        },
    });
    serde_json::from_value(doc).expect("a valid tenant")
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
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

fn reconciles(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("bedside_operator_reconciles_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
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
    install_crd(&cluster).await.expect("CRD");
    for n in 0..NAMESPACES {
        ensure_namespace(&cluster, &format!("bench-{n}"))
            .await
            .expect("namespace");
    }
    let kubeconfig = cluster
        .kubeconfig_with_token(&operator_token(&cluster).await.expect("token"))
        .expect("kubeconfig");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut operator = Command::new(&binary)
        .args([
            "run",
            "--no-leader-election",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("BEDSIDE_BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(std::env::temp_dir().join("bedside-operator-bench.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        )
        .spawn()
        .expect("start the operator");

    let mut processes = children_of_this_process();
    processes.retain(|(name, _)| name != "bedside-operato");
    processes.push(("bedside-operator".into(), operator.id()));
    let requests_before = api_requests(&cluster.client()).await;
    let cpu_before = CpuUse::now(&processes);
    let started = Instant::now();
    let client = cluster.client();
    futures::stream::iter(0..count)
        .map(|i| {
            let client = client.clone();
            async move {
                let t = tenant(i);
                let ns = t.metadata.namespace.clone().expect("namespace");
                Api::<HealthcareTenant>::namespaced(client, &ns)
                    .create(&PostParams::default(), &t)
                    .await
                    .expect("create tenant");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let created = started.elapsed();

    let tenants: Api<HealthcareTenant> = Api::all(client.clone());
    let configmaps: Api<ConfigMap> = Api::all(client.clone());
    let selector = ListParams::default().labels("app.kubernetes.io/managed-by=bedside-operator");
    let deadline = Duration::from_secs(600 * (count as u64).div_ceil(1000));
    let provisioned = loop {
        // The ConfigMaps first, by metadata only: listing 1,000 whole tenants every 250 ms
        // would load the API server the benchmark measures.
        let configs = configmaps
            .list_metadata(&selector)
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        let with_status = if configs < count {
            0
        } else {
            tenants
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|t| {
                            t.status
                                .as_ref()
                                .and_then(|s| s.observed_generation)
                                .is_some()
                        })
                        .count()
                })
                .unwrap_or(0)
        };
        if with_status >= count && configs >= count {
            break Some(started.elapsed());
        }
        if started.elapsed() > deadline {
            eprintln!(
                "gave up after {deadline:?}: {with_status} statuses, {configs} configs of {count}"
            );
            break None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let cpu = CpuUse::now(&processes).since(&cpu_before);
    let requests_after = api_requests(&cluster.client()).await;
    let rss = peak_rss_mib(operator.id());
    let metrics = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let _ = operator.kill();
    let _ = operator.wait();

    let total = provisioned.unwrap_or(deadline);
    let reconciled = reconciles(&metrics);
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
                "< 60 s".into(),
            ],
            vec!["reconciles".into(), format!("{reconciled:.0}"), "".into()],
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
