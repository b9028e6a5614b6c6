//! Real browsers for the media tests: headless Chromium with a fake camera, driven through
//! chromedriver, inside a network namespace that has only `lo` (TESTBED.md: this machine's
//! eth0 must never carry test traffic). The whole test body runs on a thread that has entered
//! that namespace, so the in-process media node, chromedriver and Chromium all share its
//! loopback and nothing else.

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

/// Why browser tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    for (path, package) in [
        ("/usr/bin/chromium", "chromium"),
        ("/usr/bin/chromedriver", "chromium-driver"),
        ("/usr/sbin/ip", "iproute2"),
    ] {
        if !std::path::Path::new(path).exists() {
            return Some(format!(
                "{path} is missing (apt-get install {package}; scripts/test-deps.sh does it)"
            ));
        }
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("network namespaces need root".into());
    }
    None
}

/// Skips (prints why) unless BEDSIDE_REQUIRE_BROWSERS=1, where a missing browser fails.
pub fn require_or_skip() -> bool {
    crate::run_or_skip("browser test", unavailable(), "BEDSIDE_REQUIRE_BROWSERS")
}

/// A loopback-only network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A namespace for a test's own processes (its node, browsers, relays). The first one a
    /// process creates sweeps those a killed test run left ([`sweep_stale`]).
    pub fn create() -> Netns {
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(sweep_stale);
        Netns::named(OWN_PREFIX)
    }

    /// A namespace for a pod cluster. Left to the cluster's own sweep (`pods.rs`), which runs
    /// its teardown inside it before deleting it: killed from outside, its containers' mounts
    /// and cgroups would stay behind.
    pub fn create_for_cluster() -> Netns {
        Netns::named(CLUSTER_PREFIX)
    }

    fn named(prefix: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]);
        run(&[
            "ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up",
        ]);
        Netns { name }
    }

    /// A namespace created earlier (by another process), to run commands in; dropping it
    /// deletes it, as for one created here.
    pub fn existing(name: String) -> Netns {
        Netns { name }
    }

    /// Whether the process that created the namespace `name` still runs; a name
    /// [`Netns::create`] or [`Netns::create_for_cluster`] did not make counts as alive: it is
    /// not ours to remove. Asked of a name, not a `Netns`: dropping one deletes it.
    pub fn creator_alive(name: &str) -> bool {
        creator(name).is_none_or(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }

    /// Adds a veth pair with both ends inside the namespace, `a` and `b` each with its
    /// address (a /24), for software that will not use loopback (Janus's ICE). Traffic
    /// between the two addresses is local, so it still takes the loopback path.
    pub fn add_veth(&self, (a, a_ip): (&str, &str), (b, b_ip): (&str, &str)) {
        let ip = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &self.name, "ip"];
            all.extend_from_slice(args);
            run(&all);
        };
        ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
        for (dev, addr) in [(a, a_ip), (b, b_ip)] {
            ip(&["addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["link", "set", dev, "up"]);
        }
    }

    /// A command that runs inside the namespace. `nsenter --net`, not `ip netns exec`: that
    /// remounts /sys, and a kubelet then finds no cgroup mounts.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/var/run/netns/{}", self.name))
            .arg(program);
        command
    }

    /// Runs `body` on a new thread inside the namespace, with its own tokio runtime.
    pub fn run<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let path = PathBuf::from("/var/run/netns").join(&self.name);
        let handle = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open the namespace");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("enter the namespace");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                // Worker threads are spawned from this thread and inherit its namespace.
                .build()
                .expect("runtime");
            runtime.block_on(body());
        });
        if let Err(panic) = handle.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The names [`Netns`] gives: `<prefix>-<pid of the creating process>-<n>`.
const OWN_PREFIX: &str = "bedside";
const CLUSTER_PREFIX: &str = "bedside-pods";

/// The process that created a namespace [`Netns`] named, if it did.
fn creator(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix(CLUSTER_PREFIX)
        .or_else(|| name.strip_prefix(OWN_PREFIX))?;
    let (pid, n) = rest.strip_prefix('-')?.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Removes the namespaces of test processes that were killed (a stopped `cargo nextest`, an
/// interrupted bench) with what still runs in them: a chromedriver and its Chromiums live in
/// their own process group and outlive the test, and two forgotten Chromiums encoding 720p
/// take the CPU the next picture-quality test measures with. Pod clusters' namespaces are
/// left to their own sweep.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for name in entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
    {
        // Names not ours count as alive.
        if name.starts_with(CLUSTER_PREFIX) || Netns::creator_alive(&name) {
            continue;
        }
        let pids = Command::new("ip").args(["netns", "pids", &name]).output();
        let pids = pids.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let pids = pids.unwrap_or_default();
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        eprintln!("removing the namespace {name} a killed test run left, and its processes");
        drop(Netns::existing(name));
    }
}

/// An iptables rule in the calling thread's network namespace (a test's own), deleted on drop:
/// e.g. a network that lets no UDP out.
#[derive(Debug)]
pub struct IptablesRule {
    rule: Vec<String>,
}

impl IptablesRule {
    /// `rule` as `iptables -I` takes it: the chain first, then the match and target.
    pub fn insert(rule: &[&str]) -> IptablesRule {
        let rule: Vec<String> = rule.iter().map(|s| s.to_string()).collect();
        let added = Command::new("iptables")
            .arg("-I")
            .args(&rule)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            added,
            "iptables -I {} in the test's namespace",
            rule.join(" ")
        );
        IptablesRule { rule }
    }
}

impl Drop for IptablesRule {
    fn drop(&mut self) {
        let _ = Command::new("iptables").arg("-D").args(&self.rule).status();
    }
}

/// One browser's link shaped on the test namespace's loopback (tc): what is sent to its media
/// `port` and what it sends from it are each limited to `rate` (e.g. `600kbit`) with a queue
/// of their own, as a slow link's two directions each have their own buffer; everything else
/// flows as before. Removed on drop. (htb and tbf: the qdiscs this machine's kernel has; netem is
/// not among them.)
#[derive(Debug)]
pub struct ShapedLink;

/// What a freed [`ShapedLink`] carries: far more than any call sends, so nothing waits.
const FREED_RATE: &str = "10gbit";
/// The shaped link's two directions: each one's htb class and tbf queue, and which end of its
/// packets is the browser's media port.
const DIRECTIONS: [(u16, &str); 2] = [(30, "dport"), (40, "sport")];

/// One direction's class and queue at `rate` (`verb`: `add` or `change`): the class carries at
/// most `rate`, and its tbf queue lets 16 kB through at once and holds 100 ms of `rate` on top
/// of that burst: 23.5 kB at 600 kbit/s, which a packet crosses in 313 ms once it is full
/// (measured with a paced UDP stream in a namespace of its own, 2026-12-07).
fn direction(verb: &str, class: u16, rate: &str) -> [String; 2] {
    [
        format!("class {verb} dev lo parent 1: classid 1:{class} htb rate {rate} ceil {rate}"),
        format!(
            "qdisc {verb} dev lo parent 1:{class} handle {class}: tbf rate {rate} burst 16kb latency 100ms"
        ),
    ]
}

impl ShapedLink {
    pub fn new(port: u16, rate: &str) -> ShapedLink {
        let mut steps = vec![
            "qdisc add dev lo root handle 1: htb default 10".to_string(),
            "class add dev lo parent 1: classid 1:10 htb rate 10gbit quantum 60000".into(),
        ];
        // Downlink (to the port) and uplink (from it): one class and one queue each, so the
        // browser's own upload never waits in the queue its incoming media and feedback use.
        for (class, end) in DIRECTIONS {
            steps.extend(direction("add", class, rate));
            steps.push(format!(
                "filter add dev lo parent 1: protocol ip prio 1 u32 match ip {end} {port} 0xffff flowid 1:{class}"
            ));
        }
        // Made first, so that a step that fails removes the ones before it.
        let link = ShapedLink;
        for step in &steps {
            tc(step);
        }
        link
    }

    /// The link's capacity returns: both directions carry [`FREED_RATE`] from now on, and what
    /// their queues hold is delivered, as on a real link whose capacity comes back. Dropping
    /// the shaping instead deletes the queues with what they hold (up to 23.5 kB each way), a
    /// loss no real link shows the moment it is freed: in the shaped-link test's slow way-backs
    /// it came right before the node moved the patient down once more (traces, 2026-12-07).
    pub fn free(&self) {
        for (class, _) in DIRECTIONS {
            let [class_step, queue] = direction("change", class, FREED_RATE);
            // htb sizes a class's quantum from its rate, too large at 10 Gbit/s (it warns).
            tc(&format!("{class_step} quantum 60000"));
            tc(&queue);
        }
    }
}

/// One `tc` command in the calling thread's namespace (a test's own).
fn tc(step: &str) {
    let done = Command::new("tc")
        .args(step.split(' '))
        .status()
        .is_ok_and(|s| s.success());
    assert!(done, "tc {step} in the test's namespace");
}

impl Drop for ShapedLink {
    fn drop(&mut self) {
        let _ = Command::new("tc")
            .args(["qdisc", "del", "dev", "lo", "root"])
            .status();
    }
}

fn run(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(status.success(), "{} failed", args.join(" "));
}

/// chromedriver on the namespace's loopback; killed on drop.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    pub port: u16,
    _profiles: tempfile::TempDir,
}

impl Driver {
    /// Must be called from inside [`Netns::run`].
    pub async fn start() -> Driver {
        let port = free_port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            // Its own process group, so Drop can kill every Chromium it started, even when
            // a failing test never closes its sessions.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver {
            child,
            port,
            _profiles: tempfile::tempdir().expect("profiles dir"),
        }
    }

    /// A new headless Chromium with a fake camera and microphone.
    pub async fn browser(&self) -> Client {
        self.browser_with(|_| {}).await
    }

    /// Like [`Driver::browser`], with its command line edited (e.g. two fake cameras:
    /// `--use-fake-device-for-media-stream=device-count=2`).
    pub async fn browser_with(&self, edit: impl FnOnce(&mut Vec<String>)) -> Client {
        self.session(edit, None).await
    }

    /// A phone: Chromium's mobile emulation of a 360 x 740 screen (the narrowest common
    /// Android width) with touch.
    pub async fn phone(&self) -> Client {
        let phone = json!({"deviceMetrics": {"width": 360, "height": 740, "pixelRatio": 3.0, "touch": true}});
        self.session(|_| {}, Some(phone)).await
    }

    async fn session(
        &self,
        edit: impl FnOnce(&mut Vec<String>),
        mobile_emulation: Option<Value>,
    ) -> Client {
        let profile = tempfile::Builder::new()
            .prefix("chromium-")
            .tempdir_in(self._profiles.path())
            .expect("profile")
            .keep();
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            "--allow-loopback-in-peer-connection",
            "--autoplay-policy=no-user-gesture-required",
        ]
        .map(String::from)
        .into();
        args.push(format!("--user-data-dir={}", profile.display()));
        edit(&mut args);
        let mut caps = json!({
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        });
        if let Some(emulation) = mobile_emulation {
            caps["goog:chromeOptions"]["mobileEmulation"] = emulation;
        }
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        // Chromium now and then exits as it starts on a loaded 2-core machine ("Chrome
        // instance exited", a clean-clone CI run of 2026-12-06): it is started once more.
        let mut attempts = 1;
        loop {
            let session = ClientBuilder::rustls()
                .expect("webdriver client")
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{}", self.port))
                .await;
            match session {
                Ok(client) => return client,
                Err(e) if attempts < 3 => {
                    eprintln!("Chromium did not start ({e}); starting it again");
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => panic!("a Chromium session after {attempts} attempts: {e:?}"),
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `window.bedside.stats()` of a page running the web client.
pub async fn stats(client: &Client) -> Value {
    client
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             window.bedside.stats().then(done, (e) => done({error: String(e)}));",
            vec![],
        )
        .await
        .unwrap_or(Value::Null)
}

/// What a page decodes of the other side's video, from its largest incoming video stream.
#[derive(Debug, Clone, Copy)]
pub struct Decoding {
    /// 0 until the first frame is decoded.
    pub width: u64,
    pub fps: f64,
    /// Freezes its browser counted, and their length in all.
    pub freezes: u64,
    pub frozen: f64,
    pub frames: u64,
}

/// The page's [`Decoding`]; `None` while it receives no video.
pub async fn decoding(page: &Client) -> Option<Decoding> {
    decoding_in(&stats(page).await)
}

/// [`decoding`] from one reading of [`stats`].
pub fn decoding_in(stats: &Value) -> Option<Decoding> {
    largest_video(stats, |_| true)
}

/// What one reading of [`stats`] says the page decodes of one participant's video (their id
/// in the room); `None` while none of theirs arrives. (A test that reads several figures at
/// once reads the stats once: each `getStats` costs the browser's busy cores.)
pub fn decoding_from(stats: &Value, participant: &str) -> Option<Decoding> {
    largest_video(stats, |v| v["from"] == participant)
}

fn largest_video(stats: &Value, keep: impl Fn(&Value) -> bool) -> Option<Decoding> {
    let video = stats["inbound"]
        .as_array()?
        .iter()
        .filter(|v| v["kind"] == "video" && keep(v))
        .max_by_key(|v| v["frameWidth"].as_u64().unwrap_or(0))?;
    Some(Decoding::of(video))
}

impl Decoding {
    /// From one `inbound` entry of [`stats`].
    fn of(video: &Value) -> Decoding {
        let whole = |key: &str| video[key].as_u64().unwrap_or(0);
        let number = |key: &str| video[key].as_f64().unwrap_or(0.0);
        Decoding {
            width: whole("frameWidth"),
            fps: number("framesPerSecond"),
            freezes: whole("freezeCount"),
            frozen: number("freezeSeconds"),
            frames: whole("framesDecoded"),
        }
    }
}

/// The local port of the page's media transport, from one reading of [`stats`]: what a test
/// shapes or drops to slow that page's link.
pub fn media_port(stats: &Value) -> Option<u16> {
    stats["transport"]["localPort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
}

/// The SRTP protection profile of the page's media transport, from [`stats`], by its IANA
/// name: Chromium reported `SRTP_AEAD_AES_256_GCM` up to some versions and `AEAD_AES_256_GCM`
/// (the name RFC 7714 registers) in others (Debian's 148, 2026-12-06).
pub fn srtp_profile(stats: &Value) -> &str {
    let cipher = stats["transport"]["srtpCipher"]
        .as_str()
        .unwrap_or_default();
    cipher.strip_prefix("SRTP_").unwrap_or(cipher)
}

/// One in-page reading of a page's largest incoming video ([`sample_decoding`]).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub struct Sampled {
    /// Milliseconds since sampling started, on the page's clock.
    pub at_ms: f64,
    pub width: u64,
    pub frames: u64,
}

/// Starts reading the page's largest incoming video every `every` inside the page itself,
/// where a WebDriver round trip per reading (a few hundred ms on a busy machine) does not
/// blur the timing; [`decoding_samples`] stops it and returns what it read.
pub async fn sample_decoding(client: &Client, every: Duration) {
    client
        .execute(
            "const every = arguments[0]; const t0 = performance.now(); window.__samples = [];\
             clearInterval(window.__sampler);\
             window.__sampler = setInterval(() => window.bedside.stats().then((s) => {\
               const v = (s.inbound || []).filter((x) => x.kind === 'video')\
                 .sort((a, b) => (b.frameWidth || 0) - (a.frameWidth || 0))[0];\
               if (v) window.__samples.push({at_ms: performance.now() - t0,\
                 width: v.frameWidth || 0, frames: v.framesDecoded || 0});\
             }, () => {}), every);",
            vec![Value::from(every.as_millis() as u64)],
        )
        .await
        .expect("start sampling in the page");
}

/// Stops [`sample_decoding`] and returns its readings, oldest first.
pub async fn decoding_samples(client: &Client) -> Vec<Sampled> {
    let samples = client
        .execute(
            "clearInterval(window.__sampler); return window.__samples || [];",
            vec![],
        )
        .await
        .unwrap_or(Value::Null);
    serde_json::from_value(samples).unwrap_or_default()
}

/// `window.bedside.state` as JSON (Maps become objects).
pub async fn state(client: &Client) -> Value {
    client
        .execute(
            "const s = window.bedside.state;\
             return {participantId: s.participantId, participants: Array.from(s.participants.keys()),\
                     events: s.events, errors: s.errors, mediaConnected: s.mediaConnected, mediaPath: s.mediaPath,\
                     role: s.role, waiting: s.waiting, waitingRoom: s.waitingRoom, locked: s.locked,\
                     muted: s.muted, micOn: s.micOn, cameraOn: s.cameraOn, closed: s.closed, endToEnd: s.endToEnd, reconnects: s.reconnects,\
                     devices: s.devices, level: s.level, audioOnly: s.audioOnly, deviceHelp: s.deviceHelp,\
                     activeSpeaker: s.activeSpeaker, quality: s.quality, layout: s.layout,\
                     banner: document.getElementById('banner').hidden ? null : document.getElementById('banner').textContent,\
                     interruptions: s.interruptions, iceRestarts: s.iceRestarts, title: document.title,\
                     page: s.page, visitTitle: document.getElementById('visit-title').textContent,\
                     visitDetail: document.getElementById('visit-detail').textContent,\
                     joinDisabled: document.getElementById('join').disabled,\
                     status: document.getElementById('status').textContent};",
            vec![],
        )
        .await
        .unwrap_or(Value::Null)
}

/// axe-core's script (npm `axe-core`, which `make test-deps` puts in target/npm), or why not.
pub fn axe_source() -> Result<String, String> {
    let path = std::env::var_os("BEDSIDE_AXE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target/npm/node_modules/axe-core/axe.min.js"));
    std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "axe-core not found at {} ({e}); run `make test-deps` (npm install axe-core)",
            path.display()
        )
    })
}

/// The WCAG 2.1 A and AA violations axe-core finds on the page as it is now: one line per
/// rule, with the elements it names.
pub async fn accessibility_violations(client: &Client, axe: &str) -> Vec<String> {
    // The library runs as the WebDriver script itself: the page's CSP allows no eval and no
    // inline script, and needs no loosening for this.
    let script = format!(
        "{axe}\n;const done = arguments[arguments.length - 1];\
         axe.run(document, {{runOnly: {{type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}}}})\
         .then((r) => done(r.violations.map((v) => `${{v.id}} (${{v.impact}}): ${{v.help}} at ${{v.nodes.map((n) => n.target.join(' ')).join(', ')}}`)),\
               (e) => done([`axe failed: ${{e}}`]));"
    );
    let found = client
        .execute_async(&script, vec![])
        .await
        .unwrap_or_else(|e| Value::from(vec![format!("axe could not run: {e}")]));
    serde_json::from_value(found).unwrap_or_default()
}

/// Saves what `client` shows as `<name>.png` among the test artifacts
/// (`$BEDSIDE_ARTIFACTS_DIR`, else target/test-artifacts), and returns its path.
pub async fn save_screenshot(client: &Client, name: &str) -> PathBuf {
    let dir = std::env::var_os("BEDSIDE_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target/test-artifacts"));
    std::fs::create_dir_all(&dir).expect("artifacts folder");
    let png = client.screenshot().await.expect("a screenshot");
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write the screenshot");
    path
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn a_namespace_names_the_process_that_created_it() {
        assert_eq!(creator("bedside-4242-0"), Some(4242));
        assert_eq!(creator("bedside-pods-4242-3"), Some(4242));
        assert_eq!(creator("cni-1234-5678"), None, "not ours");
        assert_eq!(creator("bedside-x-1"), None);
        assert_eq!(creator("bedside-17"), None);
        assert!(Netns::creator_alive(&format!(
            "bedside-{}-0",
            std::process::id()
        )));
        assert!(Netns::creator_alive("someone-elses"), "not ours to remove");
    }

    #[test]
    fn a_namespace_a_killed_test_run_left_is_removed_with_what_runs_in_it() {
        let missing =
            (!nix::unistd::geteuid().is_root()).then(|| "network namespaces need root".to_string());
        if !crate::run_or_skip("namespace sweep", missing, "BEDSIDE_REQUIRE_BROWSERS") {
            return;
        }
        // A process that is gone, as a killed test run's is.
        let mut gone = Command::new("true").spawn().expect("run true");
        let pid = gone.id();
        gone.wait().expect("true exits");
        let name = format!("{OWN_PREFIX}-{pid}-0");
        run(&["ip", "netns", "add", &name]);
        // What it left running there, as a chromedriver outlives its test.
        let mut left = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{name}"))
            .args(["sleep", "600"])
            .spawn()
            .expect("start a process in the namespace");
        let inside = || {
            let out = Command::new("ip").args(["netns", "pids", &name]).output();
            out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&left.id().to_string()))
        };
        for _ in 0..50 {
            if inside() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(inside(), "the process entered the namespace");
        // A pod cluster's namespace is left to its own sweep, which tears the cluster down.
        let cluster = format!("{CLUSTER_PREFIX}-{pid}-0");
        run(&["ip", "netns", "add", &cluster]);

        sweep_stale();

        let status = left.wait().expect("the process ends");
        assert_eq!(status.signal(), Some(9), "killed: {status:?}");
        let netns = Path::new("/var/run/netns");
        assert!(!netns.join(&name).exists(), "the namespace is gone");
        assert!(
            netns.join(&cluster).exists(),
            "the cluster's is not ours to remove"
        );
        drop(Netns::existing(cluster));
    }
}
