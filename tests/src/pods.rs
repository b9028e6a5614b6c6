//! A real single-node Kubernetes that runs pods (kubelet + containerd + kube-proxy + a CNI
//! bridge, all v1.20.2), inside a network namespace this harness creates, so pod and Service
//! addresses, iptables rules and node ports never touch the host's interfaces. Started by
//! `tests/scripts/podcluster/up.sh`, torn down by `down.sh` when dropped, even after a failure.
//!
//! One such cluster per machine at a time (containerd's socket is /run/containerd): the suites
//! that use it run one at a time (.config/nextest.toml, test group `pod-cluster`).

use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::browser::Netns;
use crate::{HarnessError, binaries};

/// The addresses the harness's "cloud" hands out, routed to the node inside the namespace.
pub const LOAD_BALANCER_NET: &str = "10.99.0";

/// The programs the cluster needs beside the Kubernetes binaries.
const TOOLS: &[&str] = &[
    "containerd",
    "runc",
    "ctr",
    "etcd",
    "iptables",
    "conntrack",
    "gcc",
    "curl",
    "openssl",
    "nsenter",
];

/// Why no pod-running cluster can start here, or `None` when it can.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("a kubelet and network namespaces need root".into());
    }
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|tool| !on_path(tool))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "missing {} (scripts/test-deps.sh installs them)",
            missing.join(", ")
        ));
    }
    if !Path::new("/usr/lib/cni/bridge").is_file() {
        return Some(
            "missing the CNI plugins (apt-get install containernetworking-plugins)".into(),
        );
    }
    None
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Skips (saying why) unless `BEDSIDE_REQUIRE_CLUSTER=1`, where a missing part fails.
pub fn require_or_skip() -> bool {
    crate::run_or_skip(
        "pod-running cluster",
        unavailable(),
        "BEDSIDE_REQUIRE_CLUSTER",
    )
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// A running cluster; dropping it tears everything down.
#[derive(Debug)]
pub struct PodCluster {
    netns: Netns,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl PodCluster {
    /// Brings the cluster up (about 30 s): the Kubernetes binaries come from the testbed cache
    /// or a source build ([`binaries::kube_binary`]).
    pub fn start() -> Result<PodCluster, HarnessError> {
        sweep_stale();
        let dir = tempfile::Builder::new()
            .prefix("bedside-pods-")
            .tempdir()
            .map_err(|source| HarnessError::Io {
                action: "create the cluster's state dir",
                source,
            })?;
        let bin = dir.path().join("k8s-bin");
        std::fs::create_dir_all(&bin).map_err(|source| HarnessError::Io {
            action: "create the binaries folder",
            source,
        })?;
        for name in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
        ] {
            let found = binaries::kube_binary(name)?;
            std::os::unix::fs::symlink(&found, bin.join(name)).map_err(|source| {
                HarnessError::Io {
                    action: "link a Kubernetes binary",
                    source,
                }
            })?;
        }
        let netns = Netns::create_for_cluster();
        // Read by the next run's sweep if this process dies before its drop.
        std::fs::write(dir.path().join(NETNS_FILE), &netns.name).map_err(|source| {
            HarnessError::Io {
                action: "record the cluster's namespace",
                source,
            }
        })?;
        let state = dir.path().join("state");
        let output = netns
            .command("bash")
            .arg(scripts().join("podcluster/up.sh"))
            .arg(&state)
            .env("BIN", &bin)
            .output()
            .map_err(|source| HarnessError::Io {
                action: "run tests/scripts/podcluster/up.sh",
                source,
            })?;
        let cluster = PodCluster {
            netns,
            kubeconfig: state.join("kubeconfig"),
            dir,
        };
        if !output.status.success() {
            return Err(HarnessError::Exited {
                name: "tests/scripts/podcluster/up.sh".into(),
                status: output.status.to_string(),
                log: format!(
                    "{}\n{}\nkubelet: {}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr),
                    cluster.log_tail("kubelet")
                ),
            });
        }
        Ok(cluster)
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs `body` inside the cluster's network namespace, on a runtime of its own: clients of
    /// the cluster (kube, test peers, the operator) must live there.
    pub fn run<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        self.netns.run(body)
    }

    /// Packs `programs` into an image named `reference`, each at /usr/local/bin/<its name>, the
    /// first as the entrypoint, and imports it into the cluster's containerd.
    pub fn load_image(&self, reference: &str, programs: &[&Path]) -> Result<(), HarnessError> {
        let tar = self
            .dir
            .path()
            .join(format!("{}.tar", reference.replace(['/', ':'], "_")));
        // /usr/local/bin/<name>, never the build path: a pod's /tmp emptyDir would hide a
        // binary built under /tmp (a clean clone there did exactly that).
        let inside = |program: &Path| {
            let name = program
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("program");
            format!("/usr/local/bin/{name}")
        };
        let entrypoint = serde_json::json!([inside(programs[0])]).to_string();
        let mut pack = Command::new("python3");
        pack.arg(scripts().join("mkimage.py"))
            .arg(&tar)
            .arg(reference)
            .args(["--entrypoint", &entrypoint, "--user", "65532:65532"]);
        for program in programs {
            pack.arg("--bin")
                .arg(format!("{}:{}", program.display(), inside(program)));
        }
        check("pack the image (tests/scripts/mkimage.py)", pack)?;
        let mut import = Command::new("ctr");
        import.args(["-n", "k8s.io", "images", "import"]).arg(&tar);
        check("import the image into containerd", import)
    }

    /// `count` PersistentVolumes of `capacity` without a StorageClass, on the node's disk
    /// (hostPath): what a tenant's claims bind to here, where no provisioner runs. Each is
    /// owned by the media pods' user, as a provisioner's volume would be writable by it.
    pub fn provide_volumes(&self, count: usize, capacity: &str) -> Result<(), HarnessError> {
        let mut manifests = String::new();
        for i in 0..count {
            let path = self.dir.path().join(format!("volumes/pv-{i}"));
            std::fs::create_dir_all(&path).map_err(|source| HarnessError::Io {
                action: "create a volume's folder",
                source,
            })?;
            std::os::unix::fs::chown(&path, Some(65532), Some(65532)).map_err(|source| {
                HarnessError::Io {
                    action: "give a volume's folder to the pods' user",
                    source,
                }
            })?;
            let volume = serde_json::json!({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": format!("local-pv-{i}")},
                "spec": {
                    "capacity": {"storage": capacity},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": path, "type": "Directory"},
                },
            });
            manifests.push_str(&volume.to_string());
            manifests.push('\n');
        }
        let mut create = self.kubectl();
        create.args(["create", "-f", "-"]);
        check_with_input("create the PersistentVolumes", create, &manifests)
    }

    /// `kubectl` aimed at this cluster, run inside its namespace.
    pub fn kubectl(&self) -> Command {
        let mut command = self.netns.command("kubectl");
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        command
    }

    /// The last lines a cluster component logged (`kubelet`, `kas`, `proxy`, ...).
    pub fn log_tail(&self, name: &str) -> String {
        let path = self.dir.path().join(format!("state/logs/{name}.log"));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// What a cloud's load balancer controller does: every LoadBalancer Service gets an IP of its
/// own in its status, and (here, inside the test's namespace) a route to the node, where
/// kube-proxy forwards it to the Service's pods.
pub fn play_the_cloud(client: kube::Client) -> tokio::task::JoinHandle<()> {
    let routed = std::process::Command::new("ip")
        .args([
            "route",
            "replace",
            &format!("{LOAD_BALANCER_NET}.0/24"),
            "dev",
            "kbr0",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(routed, "route the load balancer addresses to the node");
    tokio::spawn(async move {
        let services: Api<Service> = Api::all(client);
        let mut next = 1;
        loop {
            for service in services
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
            {
                let wants =
                    service.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
                let has = service
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|l| l.ingress.as_ref())
                    .is_some_and(|i| !i.is_empty());
                if !wants || has {
                    continue;
                }
                let (Some(name), Some(namespace)) =
                    (service.metadata.name, service.metadata.namespace)
                else {
                    continue;
                };
                let ip = format!("{LOAD_BALANCER_NET}.{next}");
                next += 1;
                let _ = Api::<Service>::namespaced(services.clone().into_client(), &namespace)
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(
                            json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}),
                        ),
                    )
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

fn check(action: &'static str, mut command: Command) -> Result<(), HarnessError> {
    let output = command
        .output()
        .map_err(|source| HarnessError::Io { action, source })?;
    succeeded(action, output)
}

fn check_with_input(
    action: &'static str,
    mut command: Command,
    input: &str,
) -> Result<(), HarnessError> {
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| HarnessError::Io { action, source })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|source| HarnessError::Io { action, source })?;
    }
    let output = child
        .wait_with_output()
        .map_err(|source| HarnessError::Io { action, source })?;
    succeeded(action, output)
}

fn succeeded(action: &'static str, output: std::process::Output) -> Result<(), HarnessError> {
    if output.status.success() {
        Ok(())
    } else {
        Err(HarnessError::Exited {
            name: action.into(),
            status: output.status.to_string(),
            log: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// The file in a cluster's folder that names its network namespace.
const NETNS_FILE: &str = "netns";

/// Tears down what a test process that was killed (a stopped `cargo nextest`, a CI timeout)
/// left running: its kubelet, containerd and API server would hold containerd's socket, and
/// the next cluster could not start. A cluster is stale when the process that created its
/// namespace (`bedside-pods-<pid>-<n>`, [`Netns::create_for_cluster`]) is gone.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for dir in entries.flatten().map(|e| e.path()) {
        let is_cluster = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("bedside-pods-"));
        let Some(netns) = is_cluster
            .then(|| std::fs::read_to_string(dir.join(NETNS_FILE)).ok())
            .flatten()
            .map(|name| name.trim().to_string())
        else {
            continue;
        };
        if Netns::creator_alive(&netns) {
            continue;
        }
        // Dropped after its teardown: the namespace is deleted with it.
        let netns = Netns::existing(netns);
        eprintln!(
            "tearing down a cluster a killed test run left: {}",
            dir.display()
        );
        tear_down(&netns, &dir.join("state"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Runs `down.sh` on a cluster's state, inside its namespace, if it got as far as having one.
fn tear_down(netns: &Netns, state: &Path) {
    if state.exists() {
        let _ = netns
            .command("bash")
            .arg(scripts().join("podcluster/down.sh"))
            .arg(state)
            .output();
    }
}

impl Drop for PodCluster {
    fn drop(&mut self) {
        tear_down(&self.netns, &self.dir.path().join("state"));
    }
}
