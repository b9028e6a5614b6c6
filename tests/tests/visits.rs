//! Visits booked with `bedside-operator visit create` against a real media node: the links it
//! prints join (the patient waits, the host admits), links outside their window are refused
//! with words a patient understands, bad bookings name their field, and the FHIR output is a
//! valid R5 and R4B Appointment by the `fhir.resources` models (a real validator, not a
//! string comparison).

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bedside_tests::media::{Signal, TestNode, workspace_binary};
use serde_json::{Value, json};

/// Runs `bedside-operator visit create` for `node`'s tenant with its key in a file.
fn book(node: &TestNode, extra: &[&str]) -> Output {
    let mut key = tempfile::NamedTempFile::new().expect("a key file");
    key.write_all(&node.join_key).expect("write the key");
    let key_path = key.path().to_string_lossy().to_string();
    let base = node.https_base();
    let mut args = vec![
        "visit",
        "create",
        "--tenant",
        &node.tenant,
        "--key-file",
        &key_path,
        "--url",
        &base,
    ];
    args.extend_from_slice(extra);
    Command::new(workspace_binary("bedside-operator"))
        .args(&args)
        .output()
        .expect("run bedside-operator visit create")
}

fn booked(node: &TestNode, extra: &[&str]) -> Value {
    let out = book(node, extra);
    assert!(
        out.status.success(),
        "booking failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// The room and token a link carries (query and fragment).
fn room_and_token(link: &str) -> (String, String) {
    bedside_crds::join::parse_link(link).expect("a visit link")
}

async fn join(node: &TestNode, link: &str, passcode: &str, name: &str) -> (Signal, Value) {
    let (room, token) = room_and_token(link);
    let mut s = Signal::connect(node).await;
    s.send(json!({"v": 1, "type": "join", "room": room, "token": token,
        "passcode": passcode, "displayName": name}))
        .await;
    let reply = s.recv().await.expect("a reply to join");
    (s, reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booked_visits_links_join_the_patient_waits_and_the_host_admits() {
    let mut node = TestNode::start().await;
    let visit = booked(
        &node,
        &[
            "--host",
            "Practitioner/dr-7",
            "--patient",
            "Patient/8c1f2a",
            "--duration",
            "20m",
            "-o",
            "json",
        ],
    );
    let passcode = visit["passcode"].as_str().expect("passcode");
    let patient_link = visit["invitees"][0]["link"].as_str().expect("patient link");
    let host_link = visit["host"]["link"].as_str().expect("host link");
    assert!(
        !patient_link.contains(passcode),
        "the passcode travels apart from the link"
    );

    let (mut patient, reply) = join(&node, patient_link, passcode, "Patient").await;
    assert_eq!(reply["type"], "waiting", "the patient waits: {reply}");
    let (mut host, reply) = join(&node, host_link, passcode, "Dr Seven").await;
    assert_eq!(reply["type"], "joined", "{reply}");
    assert_eq!(reply["role"], "host", "{reply}");
    let waiting = host.expect("waiting-room").await;
    let id = waiting["waiting"][0]["id"].clone();
    host.send(json!({"v": 1, "type": "admit", "participantId": id}))
        .await;
    let joined = patient.expect("joined").await;
    assert_eq!(joined["role"], "participant", "{joined}");

    // The audit trail names each person by their pseudonymous reference.
    let audit = node.audit_lines().join("\n");
    assert!(
        audit.contains("practitioner.dr-7"),
        "host in the audit trail"
    );
    assert!(
        audit.contains("patient.8c1f2a"),
        "patient in the audit trail"
    );
    node.shutdown(Duration::from_secs(2)).await;
}

/// A patient link admits one person at a time: opened again (a reload, a second device), the
/// newer connection takes the patient's place, admitted as before, and the older one is told
/// why; the host sees one patient, and the audit trail records the take-over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_opened_again_takes_the_persons_place_and_the_older_window_is_told_why() {
    let mut node = TestNode::start().await;
    let visit = booked(
        &node,
        &[
            "--host",
            "Practitioner/dr-7",
            "--patient",
            "Patient/8c1f2a",
            "-o",
            "json",
        ],
    );
    let passcode = visit["passcode"].as_str().expect("passcode");
    let patient_link = visit["invitees"][0]["link"].as_str().expect("patient link");
    let host_link = visit["host"]["link"].as_str().expect("host link");
    let (mut host, _) = join(&node, host_link, passcode, "Dr Seven").await;
    let (mut laptop, reply) = join(&node, patient_link, passcode, "Patient").await;
    assert_eq!(reply["type"], "waiting", "{reply}");
    let waiting = host.expect("waiting-room").await;
    let id = waiting["waiting"][0]["id"].clone();
    host.send(json!({"v": 1, "type": "admit", "participantId": id}))
        .await;
    laptop.expect("joined").await;

    let (_phone, reply) = join(&node, patient_link, passcode, "Patient").await;
    assert_eq!(
        reply["type"], "joined",
        "the patient, admitted once, is back in on the newer device: {reply}"
    );
    let told = laptop.expect("error").await;
    assert_eq!(told["code"], "link-opened-elsewhere", "{told}");
    assert_eq!(told["fatal"], true, "{told}");
    assert!(
        told["message"]
            .as_str()
            .is_some_and(|m| m.contains("another window or on another device")),
        "{told}"
    );
    let left = host.expect("participant-left").await;
    assert_eq!(
        left["participantId"], id,
        "the older connection left: {left}"
    );
    let audit = node.audit_lines().join("\n");
    assert!(
        audit.lines().any(|l| l.contains("\"leave\"")
            && l.contains("link-opened-elsewhere")
            && l.contains("patient.8c1f2a")),
        "the take-over is on record: {audit}"
    );
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_before_its_window_is_refused_with_when_to_come_back() {
    let mut node = TestNode::start().await;
    let tomorrow = jiff::Timestamp::now() + Duration::from_secs(24 * 3600);
    let start = tomorrow.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let visit = booked(
        &node,
        &[
            "--start",
            &start,
            "--host",
            "Practitioner/dr-7",
            "--patient",
            "Patient/8c1f2a",
            "-o",
            "json",
        ],
    );
    let passcode = visit["passcode"].as_str().expect("passcode");
    let link = visit["invitees"][0]["link"].as_str().expect("patient link");
    let (_s, reply) = join(&node, link, passcode, "Patient").await;
    assert_eq!(reply["code"], "visit-not-open-yet", "{reply}");
    assert_eq!(reply["fatal"], true, "{reply}");
    let message = reply["message"].as_str().unwrap_or_default();
    let opens = jiff::Timestamp::from_second(tomorrow.as_second() - 15 * 60)
        .expect("a time")
        .strftime("%Y-%m-%d %H:%M UTC")
        .to_string();
    assert!(
        message.contains("not opened yet") && message.contains(&opens),
        "the patient is told when to come back ({opens}): {message}"
    );
    assert!(
        node.metric_where(
            "bedside_media_joins_refused_total",
            "\"token_not_open_yet\""
        )
        .await
            >= 1.0,
        "counted"
    );
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bookings_are_refused_naming_the_field() {
    let mut node = TestNode::start().await;
    let crowd: Vec<String> = (0..60).map(|n| format!("Patient/p-{n}")).collect();
    let mut crowd_args = vec!["--host", "Practitioner/dr-7"];
    for p in &crowd {
        crowd_args.extend_from_slice(&["--patient", p.as_str()]);
    }
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "a visit in the past",
            vec![
                "--start",
                "2020-01-01T09:00:00Z",
                "--host",
                "Practitioner/dr-7",
                "--patient",
                "Patient/1",
            ],
            "start: ",
        ),
        (
            "longer than maxDuration",
            vec![
                "--duration",
                "9h",
                "--host",
                "Practitioner/dr-7",
                "--patient",
                "Patient/1",
            ],
            "duration: ",
        ),
        (
            "a name where a reference belongs",
            vec!["--host", "Practitioner/dr-7", "--patient", "Jane Doe"],
            "participants[0].reference: ",
        ),
        (
            "a patient as host",
            vec!["--host", "Patient/1", "--patient", "Patient/2"],
            "host: ",
        ),
        ("more than maxParticipants", crowd_args, "participants: "),
    ];
    for (case, args, field) in cases {
        let out = book(&node, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case}: accepted");
        assert!(
            stderr.contains(field),
            "{case}: the error names {field}: {stderr}"
        );
        assert!(!stderr.contains("Jane"), "{case}: a name echoed: {stderr}");
        assert!(out.stdout.is_empty(), "{case}: no links printed");
    }
    node.shutdown(Duration::from_secs(2)).await;
}

/// Checks the `-o fhir` output with the `fhir.resources` models: R5 Appointment and R4B
/// Appointment (with HL7's cross-version virtualService extension).
const VALIDATE_FHIR: &str = r#"
import json, sys
from fhir.resources.appointment import Appointment
from fhir.resources.R4B.appointment import Appointment as AppointmentR4B
out = json.load(sys.stdin)
r5 = Appointment.model_validate(out["r5"])
r4 = AppointmentR4B.model_validate(out["r4"])
service = r5.virtualService[0]
ext = {e.url: e for e in r4.extension[0].extension}
print(json.dumps({
    "r5_address": service.addressUrl,
    "r5_session_key": service.sessionKey,
    "r5_channel": service.channelType.code,
    "r5_participants": len(r5.participant),
    "r4_address": ext["addressUrl"].valueUrl,
    "r4_extension": r4.extension[0].url,
}))
"#;

fn fhir_unavailable() -> Option<String> {
    let ok = Command::new("python3")
        .args(["-c", "import fhir.resources"])
        .output()
        .is_ok_and(|o| o.status.success());
    (!ok).then(|| {
        "the fhir.resources Python package is not installed (scripts/test-deps.sh installs it)"
            .into()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fhir_output_is_a_valid_r5_and_r4b_appointment() {
    if !bedside_tests::run_or_skip(
        "FHIR validation",
        fhir_unavailable(),
        "BEDSIDE_REQUIRE_TOOLS",
    ) {
        return;
    }
    let mut node = TestNode::start().await;
    let args = [
        "--host",
        "Practitioner/dr-7",
        "--patient",
        "Patient/8c1f2a",
        "--interpreter",
        "Practitioner/int-3",
    ];
    let json_out = booked(&node, &[&args[..], &["-o", "json"]].concat());
    let fhir = book(&node, &[&args[..], &["-o", "fhir"]].concat());
    assert!(
        fhir.status.success(),
        "{}",
        String::from_utf8_lossy(&fhir.stderr)
    );
    let mut python = Command::new("python3")
        .args(["-c", VALIDATE_FHIR])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    python
        .stdin
        .take()
        .expect("stdin")
        .write_all(&fhir.stdout)
        .expect("feed the validator");
    let checked = python.wait_with_output().expect("the validator");
    assert!(
        checked.status.success(),
        "fhir.resources refused the output: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let seen: Value = serde_json::from_slice(&checked.stdout).expect("validator JSON");
    assert_eq!(seen["r5_channel"], "bedside");
    assert_eq!(seen["r5_participants"], 3, "host, patient, interpreter");
    assert_eq!(
        seen["r4_extension"],
        bedside_crds::visit::fhir::R4_VIRTUAL_SERVICE_EXTENSION
    );
    // Two bookings are two visits; what matters is the shape: a patient link for the node.
    let address = seen["r5_address"].as_str().unwrap_or_default();
    assert!(
        address.starts_with(&format!("{}/?room=visit-", node.https_base())),
        "{address}"
    );
    assert_eq!(seen["r4_address"], seen["r5_address"]);
    assert_eq!(seen["r5_session_key"].as_str().map(str::len), Some(8));
    assert!(
        json_out["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("visit-"))
    );
    node.shutdown(Duration::from_secs(2)).await;
}

/// Runs `bedside-operator visit cancel` with the kubeconfig given, naming the visit by a link.
fn cancel(kubeconfig: &std::path::Path, node: &TestNode, link: &str) -> Output {
    let mut key = tempfile::NamedTempFile::new().expect("a key file");
    key.write_all(&node.join_key).expect("write the key");
    Command::new(workspace_binary("bedside-operator"))
        .args(["visit", "cancel", "--tenant", &node.tenant, "-n", CLINIC_NS])
        .args(["--link", link, "--key-file"])
        .arg(key.path())
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("run bedside-operator visit cancel")
}

const CLINIC_NS: &str = "clinic";

/// Two media node processes of one tenant sharing room placement through a real API server
/// (as two pods do; the pod-running suites prove the pods themselves): a visit held on one is
/// cancelled with `visit cancel` and a link, its call ends for both participants with words
/// they understand, and its links are refused on both nodes, also on a node started after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_visit_ends_on_the_node_holding_it_and_its_links_are_refused_everywhere() {
    let Some(cluster) =
        bedside_tests::TestCluster::start_or_skip(bedside_tests::ClusterOptions::default()).await
    else {
        return;
    };
    bedside_tests::operator::ensure_namespace(&cluster, CLINIC_NS)
        .await
        .expect("namespace");
    let binary = workspace_binary("bedside-media-node");
    let first = bedside_media_node::node::NodeSetup::generated(
        bedside_media_node::config::dev_default(),
        "clinic-media-0".into(),
    )
    .expect("node material");
    // The second pod of the same tenant: the same keys and certificate, its own name.
    let second = bedside_media_node::node::NodeSetup {
        node_name: "clinic-media-1".into(),
        ..first.clone()
    };
    let env = [
        ("POD_NAMESPACE", std::ffi::OsStr::new(CLINIC_NS)),
        ("POD_IP", std::ffi::OsStr::new("127.0.0.1")),
        ("KUBECONFIG", cluster.kubeconfig().as_os_str()),
    ];
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    // Both serve the visits API with one credential (made now).
    let creds = tempfile::tempdir().expect("dir");
    let mut secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).expect("randomness");
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(creds.path().join("ehr"), &secret).expect("credential");
    let with_api = |c: &mut bedside_crds::node_config::MediaNodeConfig| {
        c.api = Some(bedside_crds::node_config::ApiSettings {
            credentials_dir: creds.path().to_path_buf(),
            requests_per_second: 100,
        });
    };
    let start =
        |material, dir| TestNode::spawn_in_env(&binary, dir, material, "info", &env, with_api);
    let mut a = start(&first, dirs[0].path()).await;
    let mut b = start(&second, dirs[1].path()).await;

    let visit = booked(
        &a,
        &[
            "--host",
            "Practitioner/dr-7",
            "--patient",
            "Patient/8c1f2a",
            "-o",
            "json",
        ],
    );
    let passcode = visit["passcode"].as_str().expect("passcode");
    let patient_link = visit["invitees"][0]["link"].as_str().expect("patient link");
    let host_link = visit["host"]["link"].as_str().expect("host link");
    // One through each node: placement brings both to the node holding the room.
    let (mut host, reply) = join(&a, host_link, passcode, "Dr Seven").await;
    assert_eq!(reply["type"], "joined", "{reply}");
    let (mut patient, reply) = join(&b, patient_link, passcode, "Patient").await;
    assert_eq!(reply["type"], "waiting", "{reply}");
    let id = host.expect("waiting-room").await["waiting"][0]["id"].clone();
    host.send(json!({"v": 1, "type": "admit", "participantId": id}))
        .await;
    patient.expect("joined").await;

    let out = cancel(cluster.kubeconfig(), &a, patient_link);
    assert!(
        out.status.success(),
        "visit cancel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("cancelled"), "{said}");
    for (who, signal) in [("host", &mut host), ("patient", &mut patient)] {
        let told = signal.expect("error").await;
        assert_eq!(told["code"], "visit-cancelled", "{who}: {told}");
        assert!(
            told["message"]
                .as_str()
                .is_some_and(|m| m.contains("cancelled this visit")),
            "{who}: {told}"
        );
    }
    // Cancelling again is not an error.
    let again = cancel(cluster.kubeconfig(), &a, patient_link);
    assert!(
        again.status.success() && String::from_utf8_lossy(&again.stdout).contains("already"),
        "{again:?}"
    );

    // Refused on both nodes, and on a node started after the cancellation.
    b.kill();
    let b = start(&second, dirs[1].path()).await;
    for (node, link) in [(&a, host_link), (&b, patient_link), (&b, host_link)] {
        let (_s, reply) = join(node, link, passcode, "Again").await;
        assert_eq!(reply["code"], "visit-cancelled", "{reply}");
        assert_eq!(reply["fatal"], true, "{reply}");
    }
    let records = |dir: &tempfile::TempDir| {
        std::fs::read_to_string(dir.path().join("stdout.log")).unwrap_or_default()
    };
    let all = format!("{}{}", records(&dirs[0]), records(&dirs[1]));
    assert!(
        all.lines()
            .any(|l| l.contains("\"meeting-end\"") && l.contains("visit-cancelled")),
        "the node holding the call records why it ended: {all}"
    );
    assert!(
        all.lines()
            .any(|l| l.contains("\"token-refused\"") && l.contains("visit-cancelled")),
        "refused links are on record: {all}"
    );

    // The same through the visits API: booked on one node, cancelled through the other, and
    // both say so.
    let https = bedside_tests::https::Https::trusting(&a.cert_pem);
    let booked = https
        .call(
            "POST",
            &format!("{}/api/v1/visits", b.https_base()),
            Some(&secret),
            Some(&json!({"durationMinutes": 30, "host": "Practitioner/dr-7",
                "participants": [{"reference": "Patient/8c1f2a", "role": "patient"}]})),
        )
        .await;
    assert_eq!(booked.status, 201, "{}", booked.text);
    let id = booked.json["id"].as_str().expect("id");
    let cancelled = https
        .call(
            "POST",
            &format!("{}/api/v1/visits/{id}/cancel", a.https_base()),
            Some(&secret),
            Some(&json!({"until": booked.json["window"]["closes"]})),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    assert_eq!(cancelled.json["cancelled"], true);
    let status_on_b = format!("{}/api/v1/visits/{id}", b.https_base());
    let seen = bedside_tests::media::wait_until_async(Duration::from_secs(10), async || {
        https
            .call("GET", &status_on_b, Some(&secret), None)
            .await
            .json["cancelled"]
            == true
    })
    .await;
    assert!(seen, "the other node knows the visit is cancelled");
    let link = booked.json["invitees"][0]["link"].as_str().expect("link");
    let passcode = booked.json["passcode"].as_str().expect("passcode");
    let (_s, reply) = join(&b, link, passcode, "Patient").await;
    assert_eq!(reply["code"], "visit-cancelled", "{reply}");

    links_reissued_through_the_api_and_the_cli(&a, &b, &https, &secret, cluster.kubeconfig()).await;
    a.shutdown(Duration::from_secs(2)).await;
}

/// A visit's links reissued through the API on one node, then with `visit reissue`: each time
/// the older links are refused on the other node (`link-replaced`) and the new ones join, with
/// the same id and passcode.
async fn links_reissued_through_the_api_and_the_cli(
    a: &TestNode,
    b: &TestNode,
    https: &bedside_tests::https::Https,
    secret: &str,
    kubeconfig: &std::path::Path,
) {
    let body = json!({"durationMinutes": 30, "host": "Practitioner/dr-7",
        "participants": [{"reference": "Patient/8c1f2a", "role": "patient"}]});
    let visits = format!("{}/api/v1/visits", b.https_base());
    let booked = https.call("POST", &visits, Some(secret), Some(&body)).await;
    assert_eq!(booked.status, 201, "{}", booked.text);
    let id = booked.json["id"].as_str().expect("id");
    let passcode = booked.json["passcode"].as_str().expect("passcode");
    let first = booked.json["invitees"][0]["link"].as_str().expect("link");
    let reissued = https
        .call(
            "POST",
            &format!("{}/api/v1/visits/{id}/reissue", a.https_base()),
            Some(secret),
            Some(&body),
        )
        .await;
    assert_eq!(reissued.status, 200, "{}", reissued.text);
    assert_eq!(
        (
            &reissued.json["id"],
            &reissued.json["passcode"],
            &reissued.json["generation"]
        ),
        (&booked.json["id"], &booked.json["passcode"], &json!(1))
    );
    let second = reissued.json["invitees"][0]["link"].as_str().expect("link");
    assert!(
        bedside_tests::media::wait_until_async(Duration::from_secs(10), || {
            replaced(b, first, passcode)
        })
        .await,
        "the first link is refused on the other node once reissued"
    );
    let (_s, reply) = join(b, second, passcode, "Patient").await;
    assert_eq!(reply["type"], "waiting", "the new link joins: {reply}");

    // The same with the CLI, the platform's way: issue 2 replaces issue 1.
    let mut key = tempfile::NamedTempFile::new().expect("a key file");
    key.write_all(&a.join_key).expect("write the key");
    let out = Command::new(workspace_binary("bedside-operator"))
        .args([
            "visit", "reissue", "--id", id, "--tenant", &a.tenant, "-n", CLINIC_NS,
        ])
        .args([
            "--host",
            "Practitioner/dr-7",
            "--patient",
            "Patient/8c1f2a",
            "-o",
            "json",
        ])
        .args(["--url", &a.https_base(), "--key-file"])
        .arg(key.path())
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("run bedside-operator visit reissue");
    assert!(
        out.status.success(),
        "visit reissue: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let third: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(third["generation"], 2, "{third}");
    assert!(
        bedside_tests::media::wait_until_async(Duration::from_secs(10), || {
            replaced(a, second, passcode)
        })
        .await,
        "the API's links are refused once the CLI reissued"
    );
    let link = third["invitees"][0]["link"].as_str().expect("link");
    let (_s, reply) = join(a, link, passcode, "Patient").await;
    assert_eq!(reply["type"], "waiting", "the newest link joins: {reply}");
}

/// Whether `link` is refused as replaced by a newer issue.
async fn replaced(node: &TestNode, link: &str, passcode: &str) -> bool {
    let (_s, reply) = join(node, link, passcode, "Patient").await;
    reply["code"] == "link-replaced"
}
