//! A real Kubernetes control plane on loopback: etcd + kube-apiserver (+ optionally
//! kube-controller-manager), started per test and stopped by PID, even when the test fails.
//!
//! There is no scheduler or kubelet: Deployments get ReplicaSets and Pods (with the controller
//! manager) but Pods stay Pending, so a test that needs ready replicas writes status itself.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::{HarnessError, binaries};

const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// What to start beside etcd and the API server.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClusterOptions {
    /// Garbage collection, namespace deletion, Deployment -> ReplicaSet -> Pod.
    pub controller_manager: bool,
}

/// A running control plane. Dropping it stops every process it started.
pub struct TestCluster {
    processes: Processes,
    kubeconfig: PathBuf,
    client: Client,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

/// The started processes and their working directory; dropping it kills them by PID.
#[derive(Debug)]
struct Processes {
    dir: tempfile::TempDir,
    children: Vec<(&'static str, Child)>,
}

fn free_port() -> Result<u16, HarnessError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(HarnessError::io("find a free loopback port"))?;
    Ok(listener
        .local_addr()
        .map_err(HarnessError::io("read the port"))?
        .port())
}

fn random_token() -> String {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(std::process::id());
    let b = RandomState::new().hash_one(Instant::now());
    format!("{a:016x}{b:016x}")
}

/// Kills a child when the test process dies, however it dies (a panic in another thread, a
/// nextest timeout's SIGKILL), so no etcd or API server outlives its test.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl TestCluster {
    /// The suites' cluster: the one `BEDSIDE_TEST_KUBECONFIG` names (a newer cluster, e.g.
    /// kind, where CEL rules run too), else a fresh v1.20 control plane on loopback.
    pub async fn start(options: ClusterOptions) -> Result<Self, HarnessError> {
        // Ports are picked free and then bound by etcd and the API server: in between, another
        // test's outgoing connection can take one. Such a start is tried again on new ports.
        let mut attempts = 3;
        loop {
            match Self::start_once(options).await {
                Err(HarnessError::Exited { log, .. })
                    if attempts > 1 && log.contains("address already in use") =>
                {
                    attempts -= 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(options: ClusterOptions) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("bedside-cluster-")
            .tempdir()
            .map_err(HarnessError::io("create the cluster's temp dir"))?;
        let mut processes = Processes {
            dir,
            children: Vec::new(),
        };
        let external = std::env::var_os("BEDSIDE_TEST_KUBECONFIG").map(PathBuf::from);
        let kubeconfig = match external.clone() {
            Some(path) => path,
            None => processes.start_control_plane()?,
        };
        let client = client_for(&kubeconfig).await?;
        let mut cluster = TestCluster {
            processes,
            kubeconfig,
            client,
        };
        cluster.wait_ready().await?;
        if options.controller_manager && external.is_none() {
            let kubeconfig = cluster.kubeconfig.clone();
            cluster.processes.start_controller_manager(&kubeconfig)?;
        }
        Ok(cluster)
    }

    /// A cluster some other harness runs (e.g. [`crate::pods::PodCluster`]): nothing is
    /// started or stopped here.
    pub async fn attach(kubeconfig: PathBuf) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("bedside-cluster-")
            .tempdir()
            .map_err(HarnessError::io("create the cluster's temp dir"))?;
        let client = client_for(&kubeconfig).await?;
        let mut cluster = TestCluster {
            processes: Processes {
                dir,
                children: Vec::new(),
            },
            kubeconfig,
            client,
        };
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// Like [`start`](Self::start), but a machine that cannot run a control plane at all (no
    /// etcd, no kube-apiserver and no way to build one) skips the calling test with a message,
    /// unless `BEDSIDE_REQUIRE_CLUSTER=1` (as CI sets it) makes that a failure: the same rule as
    /// every other skip ([`crate::run_or_skip`]).
    pub async fn start_or_skip(options: ClusterOptions) -> Option<Self> {
        match Self::start(options).await {
            Ok(cluster) => Some(cluster),
            Err(e @ HarnessError::MissingBinary { .. }) => {
                crate::run_or_skip(
                    "a Kubernetes control plane",
                    Some(e.to_string()),
                    "BEDSIDE_REQUIRE_CLUSTER",
                );
                None
            }
            Err(e) => panic!("start the test cluster: {e}"),
        }
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client for this cluster that authenticates with `token` instead of as admin.
    pub async fn client_with_token(&self, token: &str) -> Result<Client, HarnessError> {
        client_for(&self.kubeconfig_with_token(token)?).await
    }

    /// A kubeconfig file for this cluster that authenticates with `token`.
    pub fn kubeconfig_with_token(&self, token: &str) -> Result<PathBuf, HarnessError> {
        let text = fs::read_to_string(&self.kubeconfig)
            .map_err(HarnessError::io("read the kubeconfig"))?;
        let mut config: serde_yaml::Value =
            serde_yaml::from_str(&text).map_err(|e| HarnessError::Config(e.to_string()))?;
        if let Some(users) = config.get_mut("users").and_then(|u| u.as_sequence_mut()) {
            for user in users {
                if let Some(map) = user.as_mapping_mut() {
                    let mut auth = serde_yaml::Mapping::new();
                    auth.insert("token".into(), token.into());
                    map.insert("user".into(), serde_yaml::Value::Mapping(auth));
                }
            }
        }
        let path = self
            .processes
            .dir
            .path()
            .join(format!("kubeconfig-{}", random_token()));
        let text =
            serde_yaml::to_string(&config).map_err(|e| HarnessError::Config(e.to_string()))?;
        fs::write(&path, text).map_err(HarnessError::io("write a kubeconfig"))?;
        Ok(path)
    }

    /// `kubectl` aimed at this cluster.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new("kubectl");
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        command
    }

    /// The server's minor version, e.g. 20 for v1.20.2.
    pub async fn minor_version(&self) -> Result<u32, HarnessError> {
        let info = self
            .client
            .apiserver_version()
            .await
            .map_err(|e| HarnessError::Config(e.to_string()))?;
        info.minor
            .trim_end_matches('+')
            .parse()
            .map_err(|_| HarnessError::Config(format!("server minor version {:?}", info.minor)))
    }

    async fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let started = Instant::now();
        loop {
            if let Some((name, status)) = self.processes.first_exited() {
                return Err(HarnessError::Exited {
                    log: self.processes.log_tail(name),
                    name: name.into(),
                    status,
                });
            }
            // /readyz, not /version: CRDs can only be created once the post-start hooks ran.
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| HarnessError::Config(e.to_string()))?;
            if let Ok(body) = self.client.request_text(request).await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(HarnessError::NotReady {
                    after: READY_TIMEOUT,
                    log: self.processes.log_tail("kube-apiserver"),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The last lines a process logged, for a failure message.
    pub fn log_tail(&self, name: &str) -> String {
        self.processes.log_tail(name)
    }
}

impl Processes {
    fn spawn(
        &mut self,
        name: &'static str,
        program: &Path,
        args: &[String],
    ) -> Result<(), HarnessError> {
        let log = fs::File::create(self.dir.path().join(format!("{name}.log")))
            .map_err(HarnessError::io("create a process log"))?;
        let log_err = log
            .try_clone()
            .map_err(HarnessError::io("clone a process log"))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .map_err(HarnessError::io("start a control-plane process"))?;
        self.children.push((name, child));
        Ok(())
    }

    fn start_control_plane(&mut self) -> Result<PathBuf, HarnessError> {
        let etcd = binaries::etcd_binary()?;
        let apiserver = binaries::kube_binary("kube-apiserver")?;
        let d = self.dir.path().to_path_buf();
        let path = |name: &str| d.join(name).display().to_string();

        let (client_port, peer_port, secure_port) = (free_port()?, free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        self.spawn(
            "etcd",
            &etcd,
            &[
                format!("--data-dir={}", path("etcd")),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--log-level=warn".into(),
            ],
        )?;

        // Service-account signing key, made now: no key material lives in the repository.
        let key = rcgen::KeyPair::generate().map_err(|e| HarnessError::Config(e.to_string()))?;
        fs::write(d.join("sa.key"), key.serialize_pem())
            .map_err(HarnessError::io("write sa.key"))?;
        fs::write(d.join("sa.pub"), key.public_key_pem())
            .map_err(HarnessError::io("write sa.pub"))?;
        let token = random_token();
        fs::write(
            d.join("tokens.csv"),
            format!("{token},admin,admin,system:masters\n"),
        )
        .map_err(HarnessError::io("write tokens.csv"))?;
        fs::create_dir_all(d.join("certs")).map_err(HarnessError::io("create the cert dir"))?;

        self.spawn(
            "kube-apiserver",
            &apiserver,
            &[
                format!("--etcd-servers={client_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={secure_port}"),
                format!("--cert-dir={}", path("certs")),
                format!("--token-auth-file={}", path("tokens.csv")),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", path("sa.pub")),
                format!("--service-account-signing-key-file={}", path("sa.key")),
                // Room for the Services of the 10,000-tenant benchmark: a signaling and a media
                // Service per pod, LoadBalancers with externalTrafficPolicy Local, are 3 cluster
                // IPs and 6 node ports (a node port and a health-check node port each) per
                // 2-replica tenant, far more than the defaults hold. No kube-proxy here: nothing
                // binds these ports.
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--service-node-port-range=1024-65535".into(),
                "--endpoint-reconciler-type=none".into(),
                "--enable-priority-and-fairness=false".into(),
            ],
        )?;

        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{secure_port}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: admin, namespace: default}}\ncurrent-context: test\n"
        );
        let path = d.join("kubeconfig");
        fs::write(&path, kubeconfig).map_err(HarnessError::io("write the kubeconfig"))?;
        Ok(path)
    }

    fn start_controller_manager(&mut self, kubeconfig: &Path) -> Result<(), HarnessError> {
        let binary = binaries::kube_binary("kube-controller-manager")?;
        let d = self.dir.path().to_path_buf();
        let port = free_port()?;
        self.spawn(
            "kube-controller-manager",
            &binary,
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                "--leader-elect=false".into(),
                format!(
                    "--service-account-private-key-file={}",
                    d.join("sa.key").display()
                ),
                "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service,-route"
                    .into(),
            ],
        )
    }

    fn first_exited(&mut self) -> Option<(&'static str, String)> {
        self.children
            .iter_mut()
            .find_map(|(name, child)| match child.try_wait() {
                Ok(Some(status)) => Some((*name, status.to_string())),
                _ => None,
            })
    }

    fn log_tail(&self, name: &str) -> String {
        let text =
            fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

async fn client_for(kubeconfig: &Path) -> Result<Client, HarnessError> {
    let kubeconfig =
        Kubeconfig::read_from(kubeconfig).map_err(|e| HarnessError::Config(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| HarnessError::Config(e.to_string()))?;
    Client::try_from(config).map_err(|e| HarnessError::Config(e.to_string()))
}

impl Drop for Processes {
    fn drop(&mut self) {
        // Reverse order: the controller manager and API server before etcd.
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
