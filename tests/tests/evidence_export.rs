//! `bedside-operator evidence export|verify` against a real API server with the real
//! OpenReports and BreakGlass CRDs and the operator: the export holds the tenant's evaluated
//! controls, BAA, emergency access and audit chains (records sealed with the tenant's own
//! audit key), it verifies offline, an edited byte is named by the part it changed, and the
//! page renders in Chromium with its controls table.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use bedside_audit::chain::{AuditKey, Chain};
use bedside_audit::event::{Action, Actor, AuditEvent, AuthMethod, OpaqueId, Outcome, Place};
use bedside_crds::break_glass::BreakGlass;
use bedside_tests::browser::{self, Driver, Netns};
use bedside_tests::media::workspace_binary;
use bedside_tests::operator::{
    RunningOperator, create_lakeside_tenant, ensure_namespace, eventually, install_crd,
    install_thirdparty_crds, tenant_key,
};
use bedside_tests::{ClusterOptions, TestCluster};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};

const NS: &str = "tenant-export";
const TENANT: &str = "lakeside-behavioral";
const WAIT: Duration = Duration::from_secs(60);

fn operator_cli(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(workspace_binary("bedside-operator"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("run bedside-operator")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A media node's chain for the tenant, sealed with its audit key: joins and a checkpoint.
fn records(key: &[u8]) -> String {
    let mut chain = Chain::new(AuditKey::new(key).expect("the audit key"), None);
    let now = jiff::Timestamp::now();
    let mut text = String::new();
    for (i, action) in [Action::Join, Action::Checkpoint, Action::BreakGlassJoin]
        .into_iter()
        .enumerate()
    {
        let event = AuditEvent {
            tenant: OpaqueId::new(TENANT).expect("id"),
            actor: Actor {
                user: Some(OpaqueId::new("practitioner.dr-9").expect("id")),
                role: None,
                auth: AuthMethod::JoinToken,
            },
            action,
            outcome: Outcome::success(),
            place: Place {
                node: OpaqueId::new("lakeside-behavioral-media-0").expect("id"),
                room: Some(OpaqueId::new("visit-5e1f").expect("id")),
                client_ip: None,
                media_path: None,
                break_glass: None,
            },
        };
        let at = now - jiff::SignedDuration::from_mins(30 - i as i64);
        text.push_str(&chain.append(event, at).expect("sealed").1);
        text.push('\n');
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_verifies_offline_names_an_edited_byte_and_its_page_renders() {
    let Some(cluster) = TestCluster::start_or_skip(ClusterOptions::default()).await else {
        return;
    };
    install_crd(&cluster).await.expect("the CRDs");
    if !install_thirdparty_crds(&cluster).await.expect("the CRDs") {
        return;
    }
    ensure_namespace(&cluster, NS).await.expect("namespace");
    let ca = rcgen::generate_simple_self_signed(vec!["siem.example".into()])
        .expect("a CA")
        .cert
        .pem();
    create_lakeside_tenant(&cluster, NS, &ca, json!([{"stdout": {}}])).await;
    let _operator = RunningOperator::start(&cluster, "op-export", false)
        .await
        .expect("operator");
    let grant: BreakGlass = serde_json::from_value(json!({
        "apiVersion": "bedside.health/v1alpha1", "kind": "BreakGlass",
        "metadata": {"name": "dr-9-chest-pain", "namespace": NS},
        "spec": {"tenant": TENANT, "visit": "visit-5e1f", "clinician": "Practitioner/dr-9",
                 "requestedBy": "Practitioner/dr-9", "incident": "INC-2041", "ttlMinutes": 15,
                 "reason": "the host dropped out while the patient reported chest pain"},
    }))
    .expect("a BreakGlass");
    Api::<BreakGlass>::namespaced(cluster.client(), NS)
        .create(&PostParams::default(), &grant)
        .await
        .expect("create a BreakGlass");
    // The operator's evaluation is in its Report; the tenant's audit key in its Secret.
    let resource = ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("openreports.io", "v1alpha1", "Report"),
        "reports",
    );
    let reports: Api<DynamicObject> = Api::namespaced_with(cluster.client(), NS, &resource);
    eventually("the tenant's compliance Report", WAIT, || async {
        reports
            .get_opt("lakeside-behavioral-hipaa")
            .await
            .ok()
            .flatten()
    })
    .await;
    let audit_key = tenant_key(&cluster, NS, TENANT, "audit-hmac.key").await;

    let dir = tempfile::tempdir().expect("dir");
    let records_file = dir.path().join("siem.jsonl");
    std::fs::write(&records_file, records(&audit_key)).expect("records");
    let key = dir.path().join("signing.key");
    let kubeconfig = cluster.kubeconfig();
    let out = operator_cli(
        kubeconfig,
        &["evidence", "keygen", "--out", &key.to_string_lossy()],
    );
    assert!(out.status.success(), "{}", said(&out));
    let export = dir.path().join("export");
    let from = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(2)).to_string();
    let out = operator_cli(
        kubeconfig,
        &[
            "evidence",
            "export",
            "--tenant",
            TENANT,
            "-n",
            NS,
            "--from",
            &from,
            "--records",
            &records_file.to_string_lossy(),
            "--signing-key",
            &key.to_string_lossy(),
            "--out",
            &export.to_string_lossy(),
        ],
    );
    assert!(out.status.success(), "{}", said(&out));
    let evidence: Value =
        serde_json::from_slice(&std::fs::read(export.join("evidence.json")).expect("evidence"))
            .expect("json");
    assert!(
        evidence["controls"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["check"] == "agreement-in-force")),
        "the evaluated controls: {}",
        evidence["controls"]
    );
    assert_eq!(
        evidence["baa"]["reference"], "LBH/BAA/2025-117",
        "{}",
        evidence["baa"]
    );
    assert_eq!(evidence["breakGlass"][0]["incident"], "INC-2041");
    let chains = &evidence["auditChains"];
    assert_eq!(chains["verified"], true, "{chains}");
    assert_eq!(chains["chains"][0]["head"]["seq"], 3, "{chains}");
    assert_eq!(chains["chains"][0]["checkpoints"][0]["seq"], 2, "{chains}");
    assert_eq!(chains["actions"]["break-glass-join"], 1, "{chains}");

    // Offline, against the public key the auditor was given.
    let public = format!("{}.pub", key.display());
    let verify = |folder: &Path| {
        operator_cli(
            Path::new("/nonexistent"),
            &[
                "evidence",
                "verify",
                &folder.to_string_lossy(),
                "--public-key",
                &public,
            ],
        )
    };
    let out = verify(&export);
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("verified"), "{}", said(&out));

    // One byte edited in the emergency access entry: named, the rest not.
    let edited = dir.path().join("edited");
    std::fs::create_dir(&edited).expect("dir");
    for name in [
        "evidence.json",
        "report.html",
        "manifest.json",
        "manifest.sig",
    ] {
        std::fs::copy(export.join(name), edited.join(name)).expect("copy");
    }
    let text = std::fs::read_to_string(edited.join("evidence.json")).expect("read");
    std::fs::write(
        edited.join("evidence.json"),
        text.replacen("INC-2041", "INC-2042", 1),
    )
    .expect("edit");
    let out = verify(&edited);
    assert!(!out.status.success(), "an edited export must not verify");
    assert!(
        said(&out).contains("breakGlass[0].incident was altered"),
        "{}",
        said(&out)
    );
    assert!(!said(&out).contains("controls"), "{}", said(&out));

    // The page an auditor opens: drawn by Chromium, with the controls table.
    if !browser::require_or_skip() {
        return;
    }
    let page = format!("file://{}", export.join("report.html").display());
    let netns = Netns::create();
    netns.run(move || async move {
        let driver = Driver::start().await;
        let client = driver.browser().await;
        client
            .set_window_size(1280, 2400)
            .await
            .expect("a window the page fits in");
        client.goto(&page).await.expect("open the page");
        let rows = client
            .execute(
                "return document.querySelectorAll('#controls tbody tr').length;",
                vec![],
            )
            .await
            .expect("count the rows");
        assert!(rows.as_u64().unwrap_or(0) >= 10, "controls rows: {rows}");
        browser::save_screenshot(&client, "evidence-export").await;
        let table = client
            .find(fantoccini::Locator::Css("#controls"))
            .await
            .expect("the controls table");
        let png = table.screenshot().await.expect("a screenshot of the table");
        let (width, height, dark) = inked(&png);
        assert!(
            width > 300 && height > 200,
            "the table is drawn: {width}x{height}"
        );
        assert!(
            dark > 1000,
            "the table has text and borders: {dark} dark pixels"
        );
        let _ = client.close().await;
    });
}

/// A PNG's size and how many of its pixels are dark (text, borders).
fn inked(png_bytes: &[u8]) -> (u32, u32, usize) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buffer = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buffer).expect("a frame");
    let channels = info.color_type.samples();
    let dark = buffer[..info.buffer_size()]
        .chunks(channels)
        .filter(|px| px.iter().take(3).all(|&c| c < 128))
        .count();
    (info.width, info.height, dark)
}
