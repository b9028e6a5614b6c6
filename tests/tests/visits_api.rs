//! The visits API (`/api/v1/visits`) against a real media node over HTTPS, as a scheduling
//! system calls it: bookings whose links join, answers that match the committed OpenAPI
//! document (checked by a JSON Schema validator, and the document by an OpenAPI validator),
//! errors that name the field and never a value, credentials that rotate without a restart,
//! rates per credential and per address, and an audit record for every call.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bedside_crds::node_config::ApiSettings;
use bedside_tests::https::{Https, Reply};
use bedside_tests::media::{Signal, TestNode, wait_until_async};
use serde_json::{Value, json};

/// A fresh credential (made now: no credential lives in the repository).
fn credential() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A node serving the API with the credentials in `dir`, at `rate` calls per second each.
async fn api_node(dir: &Path, rate: u32) -> TestNode {
    let dir = dir.to_path_buf();
    TestNode::start_with(move |c| {
        c.api = Some(ApiSettings {
            credentials_dir: dir,
            requests_per_second: rate,
        });
    })
    .await
}

fn url(node: &TestNode, path: &str) -> String {
    format!("{}{path}", node.https_base())
}

fn booking() -> Value {
    json!({
        "durationMinutes": 30,
        "host": "Practitioner/dr-7",
        "participants": [{"reference": "Patient/8c1f2a", "role": "patient"}],
    })
}

/// Where `value` departs from a schema of the committed OpenAPI document.
fn departures(value: &Value, schema: &str) -> Vec<String> {
    let mut document: Value =
        serde_json::from_str(bedside_media_node::api::OPENAPI).expect("the OpenAPI document");
    document["$ref"] = json!(format!("#/components/schemas/{schema}"));
    let validator = jsonschema::validator_for(&document).expect("a JSON Schema");
    validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn matches_the_document(value: &Value, schema: &str) {
    let errors = departures(value, schema);
    assert!(errors.is_empty(), "{schema}: {errors:?}\n{value:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduling_system_books_a_visit_whose_links_join_and_every_call_is_audited() {
    let creds = tempfile::tempdir().expect("dir");
    let secret = credential();
    std::fs::write(creds.path().join("epic-prod"), &secret).expect("write");
    let mut node = api_node(creds.path(), 100).await;
    let https = Https::trusting(&node.cert_pem);
    let visits = url(&node, "/api/v1/visits");

    let reply = https
        .call("POST", &visits, Some(&secret), Some(&booking()))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    matches_the_document(&reply.json, "Visit");
    let mut altered = reply.json.clone();
    altered["passcode"] = json!("12-34");
    assert!(
        !departures(&altered, "Visit").is_empty(),
        "the schema check bites"
    );
    let id = reply.json["id"].as_str().expect("an id").to_string();
    assert_eq!(
        reply.headers["location"],
        format!("/api/v1/visits/{id}").as_str()
    );
    let link = reply.json["host"]["link"].as_str().expect("host link");
    assert!(
        link.starts_with(&node.https_base()),
        "the links point at the endpoint the call reached: {link}"
    );
    let passcode = reply.json["passcode"].as_str().expect("passcode");
    let (room, token) = bedside_crds::join::parse_link(link).expect("a link");
    let mut host = Signal::connect(&node).await;
    let joined = host.join_with(&room, &token, Some(passcode)).await;
    assert_eq!(joined["type"], "joined", "the host's link joins: {joined}");

    let fhir = https
        .call(
            "POST",
            &format!("{visits}?format=fhir"),
            Some(&secret),
            Some(&booking()),
        )
        .await;
    assert_eq!(fhir.status, 201, "{}", fhir.text);
    matches_the_document(&fhir.json, "FhirAppointments");
    assert_eq!(fhir.json["r5"]["resourceType"], "Appointment");

    let status = https
        .call("GET", &format!("{visits}/{id}"), Some(&secret), None)
        .await;
    assert_eq!(status.status, 200, "{}", status.text);
    matches_the_document(&status.json, "VisitStatus");
    assert_eq!(
        status.json["inProgress"], true,
        "the host is in: {}",
        status.text
    );
    assert_eq!(status.json["cancelled"], false);

    // Alone, outside Kubernetes, a node cannot share a cancellation: it says so.
    let alone = https
        .call(
            "POST",
            &format!("{visits}/{id}/cancel"),
            Some(&secret),
            Some(&json!({"until": "2099-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(alone.status, 503, "{}", alone.text);
    assert_eq!(alone.json["error"]["code"], "not-available");
    let reissue = https
        .call(
            "POST",
            &format!("{visits}/{id}/reissue"),
            Some(&secret),
            Some(&booking()),
        )
        .await;
    assert_eq!(reissue.status, 503, "{}", reissue.text);
    matches_the_document(&reissue.json, "Error");

    let audit = node.audit_lines();
    let booked: Vec<&String> = audit
        .iter()
        .filter(|l| l.contains("\"visit-booked\""))
        .collect();
    assert_eq!(booked.len(), 2, "each booking on record: {audit:#?}");
    assert!(
        booked[0].contains("\"user\":\"epic-prod\"")
            && booked[0].contains("\"role\":\"scheduler\"")
            && booked[0].contains("\"auth\":\"api-credential\"")
            && booked[0].contains(&format!("\"room\":\"{id}\"")),
        "who booked which visit: {}",
        booked[0]
    );
    assert!(
        audit.iter().any(|l| l.contains("\"visit-read\"")),
        "the read on record"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("\"visit-cancelled\"") && l.contains("not-available")),
        "the refused cancellation on record"
    );
    let all = audit.join("\n");
    assert!(
        !all.contains(&token) && !all.contains("token=") && !all.contains(&secret),
        "no link, token or credential in the audit trail"
    );
    host.close().await;
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_are_refused_naming_the_field_and_wrong_credentials_are_audited() {
    let creds = tempfile::tempdir().expect("dir");
    let secret = credential();
    std::fs::write(creds.path().join("epic-prod"), &secret).expect("write");
    let mut node = api_node(creds.path(), 100).await;
    let https = Https::trusting(&node.cert_pem);
    let visits = url(&node, "/api/v1/visits");
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut body = booking();
        edit(&mut body);
        body
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "a name where a reference belongs",
            with(&|b| b["participants"][0]["reference"] = json!("Jane Doe")),
            "participants[0].reference",
        ),
        (
            "a field the API does not have",
            with(&|b| b["patientName"] = json!("Jane Doe")),
            "patientName",
        ),
        (
            "a wrong type",
            with(&|b| b["durationMinutes"] = json!("Jane Doe")),
            "durationMinutes",
        ),
        (
            "a visit in the past",
            with(&|b| b["start"] = json!("2020-01-01T09:00:00Z")),
            "start",
        ),
        (
            "longer than maxDuration",
            with(&|b| b["durationMinutes"] = json!(9 * 60)),
            "durationMinutes",
        ),
    ];
    for (case, body, field) in cases {
        let reply = https
            .call("POST", &visits, Some(&secret), Some(&body))
            .await;
        assert_eq!(reply.status, 400, "{case}: {}", reply.text);
        matches_the_document(&reply.json, "Error");
        assert_eq!(
            reply.json["error"]["field"], field,
            "{case}: {}",
            reply.text
        );
        assert!(
            !reply.text.contains("Jane"),
            "{case}: a value echoed: {}",
            reply.text
        );
    }

    let none = https.call("POST", &visits, None, Some(&booking())).await;
    assert_eq!(none.status, 401, "{}", none.text);
    assert!(none.headers.contains_key("www-authenticate"));
    let wrong = https
        .call("POST", &visits, Some(&credential()), Some(&booking()))
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    matches_the_document(&wrong.json, "Error");
    let audit = node.audit_lines().join("\n");
    assert!(
        audit.contains("\"api-refused\"") && audit.contains("wrong-credential"),
        "a wrong credential is on record: {audit}"
    );
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_rotates_without_a_restart_and_the_old_one_is_refused_after() {
    let creds = tempfile::tempdir().expect("dir");
    let (old, new) = (credential(), credential());
    std::fs::write(creds.path().join("ehr-2026"), &old).expect("write");
    let mut node = api_node(creds.path(), 100).await;
    let https = Https::trusting(&node.cert_pem);
    let visits = url(&node, "/api/v1/visits");
    let books = async |credential: &str| {
        https
            .call("POST", &visits, Some(credential), Some(&booking()))
            .await
            .status
            == 201
    };
    assert!(books(&old).await);
    assert!(!books(&new).await, "not a credential yet");

    // The platform team adds the new credential to the Secret: both work.
    std::fs::write(creds.path().join("ehr-2027"), &new).expect("add");
    assert!(
        wait_until_async(Duration::from_secs(15), async || books(&new).await).await,
        "the new credential works without a restart"
    );
    assert!(books(&old).await, "and the old one still does");
    // The EHR has moved; the old credential is removed: refused from then on.
    std::fs::remove_file(creds.path().join("ehr-2026")).expect("retire");
    assert!(
        wait_until_async(Duration::from_secs(15), async || !books(&old).await).await,
        "the old credential is refused after the rotation"
    );
    assert!(books(&new).await);
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_credential_has_its_rate_and_an_address_trying_credentials_is_slowed() {
    let creds = tempfile::tempdir().expect("dir");
    let secret = credential();
    std::fs::write(creds.path().join("epic-prod"), &secret).expect("write");
    let mut node = api_node(creds.path(), 2).await;
    let https = Https::trusting(&node.cert_pem);
    let visits = url(&node, "/api/v1/visits");
    let mut statuses = Vec::new();
    let mut limited: Option<Reply> = None;
    for _ in 0..4 {
        let reply = https
            .call("POST", &visits, Some(&secret), Some(&booking()))
            .await;
        statuses.push(reply.status);
        if reply.status == 429 {
            limited = Some(reply);
        }
    }
    assert_eq!(&statuses[..2], [201, 201], "{statuses:?}");
    let limited = limited.expect("over 2 per second is refused");
    matches_the_document(&limited.json, "Error");
    assert!(
        limited.headers.contains_key("retry-after"),
        "{:?}",
        limited.headers
    );

    let mut wrong = Vec::new();
    for _ in 0..12 {
        wrong.push(
            https
                .call("POST", &visits, Some(&credential()), Some(&booking()))
                .await
                .status,
        );
    }
    assert_eq!(&wrong[..10], [401; 10], "{wrong:?}");
    assert_eq!(&wrong[10..], [429, 429], "{wrong:?}");
    let refused = node
        .audit_lines()
        .iter()
        .filter(|l| l.contains("\"api-refused\""))
        .count();
    assert_eq!(
        refused, 10,
        "the flood is counted, not sealed record by record"
    );
    node.shutdown(Duration::from_secs(2)).await;
}

fn openapi_validator_unavailable() -> Option<String> {
    let ok = Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|o| o.status.success());
    (!ok).then(|| {
        "the openapi-spec-validator Python package is not installed (scripts/test-deps.sh installs it)"
            .into()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_and_served_as_committed() {
    if !bedside_tests::run_or_skip(
        "OpenAPI validation",
        openapi_validator_unavailable(),
        "BEDSIDE_REQUIRE_TOOLS",
    ) {
        return;
    }
    let creds = tempfile::tempdir().expect("dir");
    let mut node = api_node(creds.path(), 100).await;
    let served = Https::trusting(&node.cert_pem)
        .call("GET", &url(&node, "/api/v1/openapi.json"), None, None)
        .await;
    assert_eq!(served.status, 200);
    let committed = bedside_tests::repo_root().join("media-node/api/visits-v1.openapi.json");
    assert_eq!(
        served.text,
        std::fs::read_to_string(&committed).expect("the committed document"),
        "the node serves the committed document"
    );
    let out = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&committed)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "a valid OpenAPI document: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    node.shutdown(Duration::from_secs(2)).await;
}
