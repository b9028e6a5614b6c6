//! Audit delivery to a real sink: rsyslog over TLS (RFC 5424, RFC 5425 framing) receives every
//! record the node seals, in a chain `bedside-audit verify` accepts, across a sink outage.

use std::time::Duration;

use bedside_crds::node_config::AuditSinkSettings;
use bedside_media_node::token::Role;
use bedside_tests::media::{Signal, TestNode, sign, wait_until};
use bedside_tests::rsyslog::{self, Rsyslog};

fn rsyslog_or_skip() -> bool {
    match rsyslog::unavailable() {
        None => true,
        Some(why) if std::env::var("BEDSIDE_REQUIRE_TOOLS").as_deref() == Ok("1") => {
            panic!("{why}")
        }
        Some(why) => {
            eprintln!("SKIP: {why}");
            false
        }
    }
}

/// A join and a leave (two records), or a refused join (one).
async fn visit(node: &TestNode, user: &str, forged: bool) {
    let mut s = Signal::connect(node).await;
    let token = if forged {
        sign(
            &node.tenant,
            &[4u8; 32],
            "visit-9",
            user,
            Role::Participant,
            600,
        )
    } else {
        node.token("visit-9", user, Role::Participant)
    };
    let _ = s.join("visit-9", &token).await;
    s.close().await;
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
    let sealed = node.audit_lines().len();
    assert!(sealed >= 11, "the node sealed {sealed} records");
    let key = bedside_audit::AuditKey::new(&node.audit_key).expect("key");
    assert!(
        wait_until(Duration::from_secs(20), || {
            let messages: Vec<String> = sink.received().into_iter().map(|(_, m)| m).collect();
            bedside_audit::verify(messages.iter().map(String::as_str), &key)
                .is_ok_and(|v| v.last_seq == Some(sealed as u64))
        })
        .await,
        "every record arrives after the outage: {:#?}",
        sink.received()
    );
    let received = sink.received();
    let messages: Vec<String> = received.iter().map(|(_, m)| m.clone()).collect();
    let verified = bedside_audit::verify(messages.iter().map(String::as_str), &key)
        .expect("what rsyslog stored verifies");
    assert_eq!(verified.first_seq, Some(1), "nothing lost at the start");
    assert_eq!(
        verified.records, sealed,
        "every sealed record, once (plus exact re-deliveries)"
    );
    eprintln!(
        "{} records, {} re-delivered after the outage",
        verified.records, verified.duplicates
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
