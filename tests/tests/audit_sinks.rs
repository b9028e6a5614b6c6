//! Audit delivery to a real sink: rsyslog over TLS (RFC 5424, RFC 5425 framing) receives every
//! record the node seals, in a chain `bedside-audit verify` accepts, across a sink outage.

use std::time::Duration;

use bedside_crds::join::Role;
use bedside_crds::node_config::{AuditSettings, AuditSinkSettings, BufferFullPolicy};
use bedside_tests::media::{Signal, TestNode, sign, wait_until, wait_until_async};
use bedside_tests::rsyslog::{self, Rsyslog};

fn rsyslog_or_skip() -> bool {
    bedside_tests::run_or_skip("rsyslog", rsyslog::unavailable(), "BEDSIDE_REQUIRE_TOOLS")
}

/// A join and a leave (two records), or a refused join (one).
async fn visit(node: &TestNode, user: &str, forged: bool) {
    let mut s = Signal::connect(node).await;
    let token = if forged {
        sign(&node.tenant, &[4u8; 32], "visit-9", user, Role::Host, 600)
    } else {
        node.token("visit-9", user, Role::Host)
    };
    let _ = s.join("visit-9", &token).await;
    s.close().await;
}

/// A syslog sink whose certificate the configured CA did not sign is never sent a record:
/// the node reports it down and keeps the records buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syslog_sink_with_an_untrusted_certificate_gets_nothing() {
    if !rsyslog_or_skip() {
        return;
    }
    let (dir, other_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let sink = Rsyslog::start(dir.path()).await;
    // Another rsyslog's CA: a valid CA, but not the one that signed this sink's certificate.
    let impostor_ca = Rsyslog::start(other_dir.path()).await.ca_file.clone();
    assert_ne!(
        std::fs::read(&impostor_ca).expect("ca"),
        std::fs::read(&sink.ca_file).expect("ca")
    );
    let address = format!("127.0.0.1:{}", sink.port);
    let copied = dir.path().join("untrusted-ca.pem");
    std::fs::copy(&impostor_ca, &copied).expect("copy the CA");
    let mut node = TestNode::start_with(move |c| {
        c.audit.sinks.push(AuditSinkSettings::Syslog {
            address,
            ca_file: copied,
        });
    })
    .await;
    for i in 0..3 {
        visit(&node, &format!("u-{i}"), false).await;
    }
    assert!(
        wait_until_async(Duration::from_secs(10), || async {
            node.audit_health().await["sinks"][0]["state"] == "down"
        })
        .await,
        "the sink is reported down: {}",
        node.audit_health().await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        sink.received().is_empty(),
        "records reached a sink the node cannot authenticate: {:?}",
        sink.received()
    );
    let health = node.audit_health().await;
    assert!(
        health["sinks"][0]["bufferedBytes"].as_u64().unwrap_or(0) > 0,
        "the records wait in the buffer: {health}"
    );
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_every_record_across_an_outage_in_a_chain_that_verifies() {
    if !rsyslog_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sink = Rsyslog::start(dir.path()).await;
    let address = format!("127.0.0.1:{}", sink.port);
    let ca_file = sink.ca_file.clone();
    let mut node = TestNode::start_with(move |c| {
        c.audit
            .sinks
            .push(AuditSinkSettings::Syslog { address, ca_file });
    })
    .await;

    for i in 0..3 {
        visit(&node, &format!("u-before-{i}"), i == 2).await;
    }
    assert!(
        wait_until(Duration::from_secs(10), || sink.received().len() >= 5).await,
        "records reach rsyslog: {:?}",
        sink.received()
    );

    // The sink dies; the node keeps auditing; the sink comes back.
    sink.kill();
    for i in 0..3 {
        visit(&node, &format!("u-during-{i}"), false).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    sink.restart().await;
    let key = bedside_audit::AuditKey::new(&node.audit_key).expect("key");
    // The node also seals the sink's failure and its recovery: wait for all of it.
    assert!(
        wait_until(Duration::from_secs(20), || {
            let sealed = node.audit_lines().len() as u64;
            let messages: Vec<String> = sink.received().into_iter().map(|(_, m)| m).collect();
            bedside_audit::verify(messages.iter().map(String::as_str), &key)
                .is_ok_and(|v| v.chains.first().and_then(|c| c.last_seq) == Some(sealed))
                && messages.iter().any(|m| m.contains("\"sink-recovered\""))
        })
        .await,
        "every record arrives after the outage: {:#?}",
        sink.received()
    );
    let sealed = node.audit_lines().len();
    assert!(sealed >= 13, "the node sealed {sealed} records");
    let received = sink.received();
    // The outage itself is on the record, with the sink and the reason.
    assert!(
        received
            .iter()
            .any(|(sd, _)| sd.contains("action=\"sink-failure\"")
                && sd.contains("reason=\"syslog-1-")),
        "the outage is audited"
    );
    let messages: Vec<String> = received.iter().map(|(_, m)| m.clone()).collect();
    let verified = bedside_audit::verify(messages.iter().map(String::as_str), &key)
        .expect("what rsyslog stored verifies");
    assert_eq!(verified.chains.len(), 1, "one node, one chain");
    assert_eq!(
        verified.chains[0].first_seq,
        Some(1),
        "nothing lost at the start"
    );
    assert_eq!(
        verified.records(),
        sealed,
        "every sealed record, once (plus exact re-deliveries)"
    );
    eprintln!(
        "{} records, {} re-delivered after the outage",
        verified.records(),
        verified.duplicates()
    );
    // RFC 5424 structured data carries the fields a SIEM indexes.
    let (sd, _) = &received[0];
    assert!(sd.contains("bedside@32473"), "{sd}");
    assert!(sd.contains(&format!("tenant=\"{}\"", node.tenant)), "{sd}");
    assert!(
        sd.contains("seq=\"1\"") && sd.contains("action=\"join\""),
        "{sd}"
    );
    assert!(
        received
            .iter()
            .any(|(sd, _)| sd.contains("action=\"token-refused\"")
                && sd.contains("result=\"failure\"")),
        "the refused join is there"
    );
    node.shutdown(Duration::from_secs(2)).await;
}

mod webhook {
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    /// A local HTTPS receiver: keeps each record's exact text, checks the bearer token, and
    /// answers with whatever status the test sets (an outage is a 503).
    #[derive(Clone, Default)]
    pub struct Receiver {
        pub records: Arc<Mutex<Vec<String>>>,
        pub token: Arc<Mutex<String>>,
        pub status: Arc<AtomicU16>,
    }

    async fn ingest(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
        let expected = format!(
            "Bearer {}",
            r.token.lock().map(|t| t.clone()).unwrap_or_default()
        );
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            return StatusCode::UNAUTHORIZED;
        }
        let status = r.status.load(Ordering::Relaxed);
        if status != 200 {
            return StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        }
        let Ok(batch) = serde_json::from_str::<Vec<Box<serde_json::value::RawValue>>>(&body) else {
            return StatusCode::BAD_REQUEST;
        };
        if let Ok(mut records) = r.records.lock() {
            records.extend(batch.into_iter().map(|raw| raw.get().to_string()));
        }
        StatusCode::NO_CONTENT
    }

    /// Starts the receiver; returns its URL and the CA that signed its certificate.
    pub async fn start(receiver: Receiver) -> (String, Vec<u8>) {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("cert");
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
            cert.pem().into_bytes(),
            key.serialize_pem().into_bytes(),
        )
        .await
        .expect("tls");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let app = axum::Router::new()
            .route("/ingest", axum::routing::post(ingest))
            .with_state(receiver);
        let server = axum_server::from_tcp_rustls(listener, tls).expect("server");
        tokio::spawn(async move {
            let _ = server.serve(app.into_make_service()).await;
        });
        (
            format!("https://127.0.0.1:{port}/ingest"),
            ca.pem().into_bytes(),
        )
    }
}

/// A node whose webhook sink is a local receiver expecting `token` and answering `status`.
async fn node_with_webhook(
    token: &str,
    status: u16,
    edit_audit: impl FnOnce(&mut AuditSettings) + Send + 'static,
) -> (TestNode, webhook::Receiver, tempfile::TempDir) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let receiver = webhook::Receiver::default();
    *receiver.token.lock().expect("lock") = token.into();
    receiver
        .status
        .store(status, std::sync::atomic::Ordering::Relaxed);
    let (url, ca) = webhook::start(receiver.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).expect("token");
    let node = TestNode::start_custom(
        move |c| {
            c.audit
                .sinks
                .push(AuditSinkSettings::Webhook { url, token_file });
            edit_audit(&mut c.audit);
        },
        move |setup| setup.webhook_ca = Some(ca),
    )
    .await;
    (node, receiver, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_every_record_across_an_outage_and_a_wrong_token_is_a_sink_failure() {
    use std::sync::atomic::Ordering;
    let (mut node, receiver, _dir) = node_with_webhook("siem-token-1", 200, |_| {}).await;
    let delivered = || receiver.records.lock().map(|r| r.len()).unwrap_or(0);

    visit(&node, "u-a", false).await;
    assert!(
        wait_until(Duration::from_secs(10), || delivered() >= 2).await,
        "first records arrive"
    );

    // An outage: the SIEM answers 503 while the node keeps auditing.
    receiver.status.store(503, Ordering::Relaxed);
    visit(&node, "u-b", false).await;
    visit(&node, "u-c", true).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(delivered(), 2, "nothing is acknowledged during the outage");
    assert!(
        node.metric_where("bedside_audit_sink_failures_total", "reason=\"rejected\"")
            .await
            > 0.0
    );
    assert_eq!(
        node.metric_where("bedside_audit_sink_up", "type=\"webhook\"")
            .await,
        0.0
    );
    assert!(
        node.metric("bedside_audit_buffer_bytes").await > 0.0,
        "records wait on disk"
    );

    // A wrong token is a sink failure with its own reason.
    receiver.status.store(200, Ordering::Relaxed);
    *receiver.token.lock().expect("lock") = "rotated-token".into();
    let mut unauthorized = 0.0;
    for _ in 0..50 {
        unauthorized = node
            .metric_where(
                "bedside_audit_sink_failures_total",
                "reason=\"unauthorized\"",
            )
            .await;
        if unauthorized > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        unauthorized > 0.0,
        "a refused token shows as an unauthorized sink failure"
    );

    // Fixed: everything buffered arrives, exactly once, and the chain verifies.
    *receiver.token.lock().expect("lock") = "siem-token-1".into();
    // The node also seals the sink's failure and its recovery: wait for all of it.
    assert!(
        wait_until(Duration::from_secs(20), || {
            let records = receiver
                .records
                .lock()
                .map(|r| r.clone())
                .unwrap_or_default();
            records.len() >= node.audit_lines().len()
                && records.iter().any(|r| r.contains("\"sink-recovered\""))
        })
        .await,
        "{} of {} delivered",
        delivered(),
        node.audit_lines().len()
    );
    let sealed = node.audit_lines().len();
    let records = receiver.records.lock().expect("lock").clone();
    for reason in ["webhook-1-rejected", "webhook-1-unauthorized"] {
        assert!(
            records
                .iter()
                .any(|r| r.contains("\"sink-failure\"") && r.contains(reason)),
            "the failure {reason} is audited: {records:#?}"
        );
    }
    let key = bedside_audit::AuditKey::new(&node.audit_key).expect("key");
    let verified = bedside_audit::verify(records.iter().map(String::as_str), &key)
        .expect("what the SIEM got verifies");
    assert_eq!(
        (verified.records(), verified.duplicates()),
        (sealed, 0),
        "acknowledged batches are not resent"
    );
    assert_eq!(
        node.metric_where("bedside_audit_sink_up", "type=\"webhook\"")
            .await,
        1.0
    );
    assert_eq!(node.metric("bedside_audit_buffer_bytes").await, 0.0);
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_are_refused_while_an_audit_sink_cannot_keep_up_and_resume_after() {
    use std::sync::atomic::Ordering;
    // A few records' worth of buffer, so the test fills it quickly.
    let (mut node, receiver, _dir) = node_with_webhook("t", 503, |a| a.buffer_bytes = 1_500).await;

    let mut refused = None;
    for i in 0..20 {
        let mut s = Signal::connect(&node).await;
        let reply = s
            .join(
                "visit-9",
                &node.token("visit-9", &format!("u-{i}"), Role::Host),
            )
            .await;
        s.close().await;
        if reply["type"] == "error" {
            refused = Some(reply);
            break;
        }
    }
    let refused = refused.expect("joins stop while nothing is delivered");
    assert_eq!(refused["code"], "not-available", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("audit log"),
        "{refused}"
    );
    assert_eq!(
        node.metric_where(
            "bedside_media_joins_refused_total",
            "reason=\"audit_unavailable\""
        )
        .await,
        1.0
    );

    // The sink recovers: the backlog drains and visits start again.
    receiver.status.store(200, Ordering::Relaxed);
    let mut joined = false;
    for _ in 0..50 {
        let mut s = Signal::connect(&node).await;
        let reply = s
            .join("visit-9", &node.token("visit-9", "u-later", Role::Host))
            .await;
        s.close().await;
        if reply["type"] == "joined" {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(joined, "joins resume once the audit sink has caught up");
    node.shutdown(Duration::from_secs(2)).await;
}

/// Joins as one user; whether the node let them in.
async fn joins(node: &TestNode, user: &str) -> bool {
    let mut s = Signal::connect(node).await;
    let reply = s
        .join("visit-9", &node.token("visit-9", user, Role::Host))
        .await;
    s.close().await;
    reply["type"] == "joined"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_keeps_serving_admits_joins_past_a_full_buffer_up_to_twice_its_size() {
    let (mut node, _receiver, _dir) = node_with_webhook("t", 503, |a| {
        a.buffer_bytes = 2_000;
        a.when_buffer_full = BufferFullPolicy::KeepServing;
    })
    .await;
    let health = node.audit_health().await;
    assert_eq!(health["whenBufferFull"], "KeepServing", "{health}");
    assert_eq!(health["bufferFull"], false, "{health}");

    // Past the buffer's size: still serving, and saying so.
    let mut i = 0;
    while !node.audit_health().await["bufferFull"]
        .as_bool()
        .unwrap_or(false)
    {
        assert!(
            joins(&node, &format!("u-{i}")).await,
            "joins go on below the size"
        );
        i += 1;
        assert!(i < 50, "the buffer never filled");
    }
    assert!(
        joins(&node, "u-past-full").await,
        "KeepServing admits past a full buffer"
    );
    assert_eq!(node.metric("bedside_audit_buffer_full").await, 1.0);
    assert_eq!(node.metric("bedside_audit_refusing_joins").await, 0.0);
    let health = node.audit_health().await;
    assert_eq!(health["sinks"][0]["state"], "down", "{health}");
    assert_eq!(health["sinks"][0]["reason"], "rejected", "{health}");

    // At twice the size joins stop anyway: past it, records would be lost.
    let mut refused = false;
    for j in 0..50 {
        if !joins(&node, &format!("u-more-{j}")).await {
            refused = true;
            break;
        }
    }
    assert!(refused, "joins stop at twice the buffer");
    let health = node.audit_health().await;
    assert_eq!(health["refusingJoins"], true, "{health}");
    // Refused at twice the size (4,000 bytes), give or take the last join's records: not
    // before (the policy is to keep serving) and not long after (records would be lost).
    let buffered = health["sinks"][0]["bufferedBytes"]
        .as_u64()
        .expect("the report counts the buffered bytes");
    assert!(
        (3_200..=5_000).contains(&buffered),
        "joins stopped with {buffered} bytes buffered; the bound is 2 x 2,000: {health}"
    );
    assert_eq!(node.metric("bedside_audit_refusing_joins").await, 1.0);
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_carries_checkpoints_and_ends_in_a_closing_record_on_a_clean_stop() {
    let mut node = TestNode::start_custom(
        |_| {},
        |setup| {
            setup.checkpoint_interval = Duration::from_millis(300);
        },
    )
    .await;
    visit(&node, "u-1", false).await;
    let checkpoints = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("\"action\":\"checkpoint\""))
            .count()
    };
    // The visit's leave, then a checkpoint as the chain's newest record.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let lines = node.audit_lines();
            lines.iter().any(|l| l.contains("\"action\":\"leave\""))
                && lines
                    .last()
                    .is_some_and(|l| l.contains("\"action\":\"checkpoint\""))
        })
        .await,
        "a checkpoint after the visit: {:#?}",
        node.audit_lines()
    );
    let before = checkpoints(&node.audit_lines());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        checkpoints(&node.audit_lines()),
        before,
        "no checkpoint while nothing happens"
    );
    let key = bedside_audit::AuditKey::new(&node.audit_key).expect("key");
    let lines = node.audit_lines();
    let open = bedside_audit::verify(lines.iter().map(String::as_str), &key).expect("intact");
    assert!(!open.chains[0].closed, "a running node's chain is open");

    node.shutdown(Duration::from_secs(2)).await;
    let lines = node.audit_lines();
    let closed = bedside_audit::verify(lines.iter().map(String::as_str), &key).expect("intact");
    assert_eq!(
        (closed.chains[0].checkpoints, closed.chains[0].closed),
        (before, true),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_records_buffered_delivers_them_after_it_restarts() {
    if !rsyslog_or_skip() {
        return;
    }
    let binary = bedside_tests::media::workspace_binary("bedside-media-node");
    let sink_dir = tempfile::tempdir().expect("tempdir");
    let mut sink = Rsyslog::start(sink_dir.path()).await;
    sink.kill();
    let address = format!("127.0.0.1:{}", sink.port);
    let ca_file = sink.ca_file.clone();
    let with_syslog = move |c: &mut bedside_crds::node_config::MediaNodeConfig| {
        c.audit.sinks = vec![AuditSinkSettings::Syslog { address, ca_file }];
    };
    // One node's files (keys, config, audit buffer) across both of its lives.
    let node_dir = tempfile::tempdir().expect("tempdir");
    let material = bedside_media_node::node::NodeSetup::generated(
        bedside_media_node::config::dev_default(),
        "node-killed".into(),
    )
    .expect("node material");

    let mut node = bedside_tests::media::TestNode::spawn_in(
        &binary,
        node_dir.path(),
        &material,
        "warn",
        with_syslog.clone(),
    )
    .await;
    for i in 0..4 {
        visit(&node, &format!("u-before-kill-{i}"), false).await;
    }
    assert!(
        wait_until(Duration::from_secs(5), || {
            // The sink's failure, then four joins and leaves.
            std::fs::read_to_string(node_dir.path().join("audit/sink-0.jsonl"))
                .is_ok_and(|t| t.lines().count() == 9)
        })
        .await,
        "records wait in the buffer"
    );
    node.kill();
    assert!(
        sink.received().is_empty(),
        "nothing was delivered before the kill"
    );

    // The sink is back, and so is the node, on the same buffer: everything arrives.
    sink.restart().await;
    let mut node = bedside_tests::media::TestNode::spawn_in(
        &binary,
        node_dir.path(),
        &material,
        "warn",
        with_syslog,
    )
    .await;
    visit(&node, "u-after-restart", false).await;
    let key = bedside_audit::AuditKey::new(&material.audit_key).expect("key");
    let users = |messages: &[String], user: &str, action: &str| {
        messages
            .iter()
            .any(|m| m.contains(&format!("\"user\":\"{user}\"")) && m.contains(action))
    };
    assert!(
        wait_until(Duration::from_secs(20), || {
            let messages: Vec<String> = sink.received().into_iter().map(|(_, m)| m).collect();
            users(&messages, "u-after-restart", "\"leave\"")
        })
        .await,
        "the restarted node delivers: {:#?}",
        sink.received()
    );
    let messages: Vec<String> = sink.received().into_iter().map(|(_, m)| m).collect();
    for i in 0..4 {
        let user = format!("u-before-kill-{i}");
        assert!(
            users(&messages, &user, "\"join\"") && users(&messages, &user, "\"leave\""),
            "{user}'s join and leave survived the kill: {messages:#?}"
        );
    }
    let verified = bedside_audit::verify(messages.iter().map(String::as_str), &key)
        .expect("both lives form one intact chain");
    assert_eq!(verified.chains.len(), 1, "{verified:?}");
    let chain = &verified.chains[0];
    assert_eq!(
        (chain.first_seq, chain.last_seq),
        (Some(1), Some(11)),
        "9 records before the kill, 2 after, one sequence: {verified:?}"
    );
    assert!(!chain.closed, "the kill left no closing record");
    node.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_display_name_reaches_the_room_and_no_record_log_line_or_metric() {
    let binary = bedside_tests::media::workspace_binary("bedside-media-node");
    let dir = tempfile::tempdir().expect("tempdir");
    let material = bedside_media_node::node::NodeSetup::generated(
        bedside_media_node::config::dev_default(),
        "node-privacy".into(),
    )
    .expect("node material");
    // Everything at trace, the most an SRE chasing a problem could turn on.
    let mut node = TestNode::spawn_in(&binary, dir.path(), &material, "trace", |_| {}).await;
    let (jane, john) = ("Zelda Quintanilla-Okafor", "Bartholomew Ngata");

    let mut a = Signal::connect(&node).await;
    let joined = a
        .join_as("visit-7", &node.token("visit-7", "u-a", Role::Host), jane)
        .await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let mut b = Signal::connect(&node).await;
    let joined = b
        .join_as("visit-7", &node.token("visit-7", "u-b", Role::Host), john)
        .await;
    assert_eq!(
        joined["participants"][0]["displayName"], jane,
        "the room shows the name: {joined}"
    );
    let seen = a.expect("participant-joined").await;
    assert_eq!(seen["participant"]["displayName"], john, "{seen}");
    // Refusals carry no name back into logs either: a forged token, an oversized name.
    let mut c = Signal::connect(&node).await;
    let forged = sign(&node.tenant, &[9u8; 32], "visit-7", "u-c", Role::Host, 600);
    let refused = c.join_as("visit-7", &forged, jane).await;
    assert_eq!(refused["type"], "error", "{refused}");
    let mut d = Signal::connect(&node).await;
    let too_long = format!("{jane} {}", "x".repeat(80));
    let refused = d
        .join_as(
            "visit-7",
            &node.token("visit-7", "u-d", Role::Host),
            &too_long,
        )
        .await;
    assert_eq!(refused["code"], "invalid-message", "{refused}");
    let metrics = node.metrics().await;
    a.close().await;
    b.close().await;
    node.shutdown(Duration::from_secs(5)).await;

    let audit = std::fs::read_to_string(dir.path().join("stdout.log")).expect("audit");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).expect("log");
    assert!(
        audit.contains("\"u-a\"") && audit.contains("\"join\""),
        "the audit stream has the joins: {audit}"
    );
    assert!(log.lines().count() > 5, "the log is there at trace: {log}");
    for name in [jane, john] {
        for (what, text) in [
            ("audit record", &audit),
            ("log line", &log),
            ("metric", &metrics),
        ] {
            for part in name.split(' ') {
                assert!(
                    !text.contains(part),
                    "{part:?} from a typed name appears in a {what}"
                );
            }
        }
    }
}

/// An idle node costs almost nothing, whatever its audit sinks: a stdout-only node once spun
/// more than a core in the task that records sink transitions. The bound (0.3 s of CPU over
/// 10 idle seconds) sits two orders of magnitude from both that bug and from noise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_uses_almost_no_cpu_with_each_audit_sink_setup() {
    if !rsyslog_or_skip() {
        return;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let binary = bedside_tests::media::workspace_binary("bedside-media-node");
    let dir = tempfile::tempdir().expect("tempdir");
    let syslog = Rsyslog::start(dir.path()).await;
    let receiver = webhook::Receiver::default();
    *receiver.token.lock().expect("lock") = "idle-token".into();
    receiver
        .status
        .store(200, std::sync::atomic::Ordering::Relaxed);
    let (url, ca) = webhook::start(receiver.clone()).await;
    // The binary trusts the system's roots for webhooks: point them at the test CA.
    let ca_file = dir.path().join("webhook-ca.pem");
    std::fs::write(&ca_file, &ca).expect("ca");
    let token_file = dir.path().join("webhook-token");
    std::fs::write(&token_file, "idle-token\n").expect("token");

    let setups: [(&str, Vec<AuditSinkSettings>); 3] = [
        ("stdout only", vec![AuditSinkSettings::Stdout]),
        (
            "stdout + syslog",
            vec![
                AuditSinkSettings::Stdout,
                AuditSinkSettings::Syslog {
                    address: format!("127.0.0.1:{}", syslog.port),
                    ca_file: syslog.ca_file.clone(),
                },
            ],
        ),
        (
            "stdout + webhook",
            vec![
                AuditSinkSettings::Stdout,
                AuditSinkSettings::Webhook { url, token_file },
            ],
        ),
    ];
    let mut nodes = Vec::new();
    for (name, sinks) in setups {
        let node_dir = tempfile::tempdir().expect("tempdir");
        let material = bedside_media_node::node::NodeSetup::generated(
            bedside_media_node::config::dev_default(),
            format!("idle-{}", nodes.len()),
        )
        .expect("node material");
        let network_sinks = sinks.len() - 1;
        let node = TestNode::spawn_in_env(
            &binary,
            node_dir.path(),
            &material,
            "warn",
            &[("SSL_CERT_FILE", ca_file.as_os_str())],
            move |c| c.audit.sinks = sinks,
        )
        .await;
        // A record through every sink first, so the idle node is one whose sinks work.
        visit(&node, "u-before-idle", false).await;
        nodes.push((name, node, node_dir, network_sinks));
    }
    for (name, node, _, sinks) in &nodes {
        let mut up = false;
        for _ in 0..100 {
            let health = node.audit_health().await;
            let states: Vec<&serde_json::Value> = health["sinks"]
                .as_array()
                .map(|a| a.iter().map(|s| &s["state"]).collect())
                .unwrap_or_default();
            if states.len() == *sinks && states.iter().all(|s| *s == "up") {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            up,
            "{name}: the sinks deliver: {}",
            node.audit_health().await
        );
    }

    let before: Vec<f64> = nodes
        .iter()
        .map(|(name, node, ..)| cpu_of(name, node))
        .collect();
    tokio::time::sleep(Duration::from_secs(10)).await;
    for ((name, node, ..), before) in nodes.iter().zip(before) {
        let used = cpu_of(name, node) - before;
        assert!(
            used < 0.3,
            "{name}: an idle node used {used:.2} s of CPU in 10 s (bound 0.3 s)"
        );
    }
    for (_, mut node, ..) in nodes {
        node.shutdown(Duration::from_secs(2)).await;
    }
}

fn cpu_of(name: &str, node: &TestNode) -> f64 {
    bedside_tests::media::cpu_secs(node.pid())
        .unwrap_or_else(|| panic!("{name}: /proc/{}/stat is readable", node.pid()))
}

/// A replacement started on the buffers of a node that still runs (a StatefulSet pod
/// force-deleted while its container stops) waits for it: the chain goes on from the
/// predecessor's last record and never forks into two records under one sequence number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_waits_for_its_predecessor_and_the_chain_does_not_fork() {
    let binary = bedside_tests::media::workspace_binary("bedside-media-node");
    let node_dir = tempfile::tempdir().expect("tempdir");
    let material = bedside_media_node::node::NodeSetup::generated(
        bedside_media_node::config::dev_default(),
        "node-replaced".into(),
    )
    .expect("node material");
    let stdout_sink = |_: &mut bedside_crds::node_config::MediaNodeConfig| {};
    let mut first =
        TestNode::spawn_in(&binary, node_dir.path(), &material, "warn", stdout_sink).await;
    assert!(serves(&first), "the first node serves");
    let mut second =
        TestNode::spawn_in(&binary, node_dir.path(), &material, "warn", stdout_sink).await;
    assert!(
        !serves(&second),
        "the replacement must not serve while its predecessor still writes the chain"
    );
    visit(&first, "u-predecessor", false).await;
    first.kill();
    assert!(
        wait_until(Duration::from_secs(10), || serves(&second)).await,
        "the replacement serves once its predecessor is gone"
    );
    visit(&second, "u-replacement", false).await;
    second.shutdown(Duration::from_secs(5)).await;

    let log = std::fs::read_to_string(node_dir.path().join("stderr.log")).expect("log");
    assert!(
        log.contains("still held by another process"),
        "the replacement said why it waited: {log}"
    );
    let records = std::fs::read_to_string(node_dir.path().join("stdout.log")).expect("records");
    let key = bedside_audit::AuditKey::new(&material.audit_key).expect("key");
    let verified = bedside_audit::verify(records.lines(), &key)
        .unwrap_or_else(|broken| panic!("one chain across both processes: {broken}\n{records}"));
    assert_eq!(verified.chains.len(), 1, "{verified:?}");
    let chain = &verified.chains[0];
    assert_eq!(chain.first_seq, Some(1), "{verified:?}");
    assert!(
        chain.closed,
        "the replacement closed the chain: {verified:?}"
    );
    for user in ["u-predecessor", "u-replacement"] {
        assert!(
            records.contains(&format!("\"user\":\"{user}\"")),
            "{user}'s join is in the chain: {records}"
        );
    }
}

fn serves(node: &TestNode) -> bool {
    std::net::TcpStream::connect_timeout(&node.signaling, Duration::from_millis(200)).is_ok()
}

/// The disk that holds the audit log is full: no visit starts without its record, and the
/// client is told why instead of joining an unaudited call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_whose_record_cannot_be_kept_is_undone_and_refused() {
    let mut node =
        TestNode::start_custom(|_| {}, |setup| setup.audit_file = Some("/dev/full".into())).await;
    for attempt in ["first", "second"] {
        let mut s = Signal::connect(&node).await;
        let token = node.token("visit-9", &format!("u-{attempt}"), Role::Host);
        let answer = s.join("visit-9", &token).await;
        assert_eq!(answer["code"], "not-available", "{attempt}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap_or_default()
                .contains("audit log cannot be kept"),
            "{answer}"
        );
        s.close().await;
    }
    assert!(
        wait_until_async(Duration::from_secs(5), || async {
            node.metric("bedside_media_participants").await == 0.0
        })
        .await,
        "nobody is in a call"
    );
    assert_eq!(
        node.metric_where(
            "bedside_media_joins_refused_total",
            "reason=\"audit_unavailable\""
        )
        .await,
        2.0
    );
    node.shutdown(Duration::from_secs(2)).await;
}
