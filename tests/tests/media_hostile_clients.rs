//! Hostile and broken clients against one real node while a real call runs: each is held to
//! its network's share (connections, join attempts), a flood of bad tokens becomes a couple of
//! counted audit records instead of one per attempt, and the call next door keeps its media.
//! Another loopback address stands for another client network.

use std::net::IpAddr;
use std::time::Duration;

use bedside_crds::join::Role;
use bedside_tests::media::{PeerOptions, RustPeer, Signal, TestNode, sign, wait_until};
use serde_json::Value;

const FLOW: Duration = Duration::from_secs(20);

async fn call(node: &TestNode) -> (RustPeer, RustPeer) {
    let mut peers = Vec::new();
    for user in ["u-c", "u-p"] {
        let token = node.token("steady", user, Role::Host);
        let mut peer = RustPeer::join(node, "steady", &token, PeerOptions::default()).await;
        peer.start_publishing();
        peers.push(peer);
    }
    let patient = peers.pop().expect("patient");
    let clinician = peers.pop().expect("clinician");
    assert!(
        wait_until(FLOW, || clinician.packets_from(&patient.participant_id)
            > 10)
        .await,
        "the call is up"
    );
    (clinician, patient)
}

async fn still_flowing(clinician: &RustPeer, patient: &RustPeer) {
    let before = clinician.packets_from(&patient.participant_id);
    assert!(
        wait_until(Duration::from_secs(5), || clinician
            .packets_from(&patient.participant_id)
            > before + 20)
        .await,
        "the call next door keeps its media"
    );
}

/// A client of another network (127.0.0.2) joins a visit of its own.
async fn another_network_joins(node: &TestNode) -> Signal {
    let mut other = Signal::try_connect_from(node, Some(IpAddr::from([127, 0, 0, 2])))
        .await
        .expect("another network connects");
    let token = node.token("next-door", "u-o", Role::Host);
    assert_eq!(other.join("next-door", &token).await["type"], "joined");
    other
}

fn refused(metrics: &str, reason: &str) -> f64 {
    let prefix = "bedside_media_joins_refused_total{";
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&format!("reason=\"{reason}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_past_its_share_of_connections_is_refused_and_others_still_join() {
    let mut node = TestNode::start_with(|c| {
        c.network.client_limits.connections_per_network = 6;
    })
    .await;
    let (clinician, patient) = call(&node).await;

    // The call holds two of 127.0.0.1's six; four more fit, the next is refused.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(Signal::connect(&node).await);
    }
    let Err(refusal) = Signal::try_connect(&node).await else {
        panic!("a seventh connection from the network is refused");
    };
    assert!(
        refusal.contains("429"),
        "HTTP 429 Too Many Requests: {refusal}"
    );

    // Another network is not affected, and can join a visit.
    let _other = another_network_joins(&node).await;

    // A closed connection gives its place back.
    held.pop();
    let mut again = None;
    for _ in 0..50 {
        if let Ok(s) = Signal::try_connect(&node).await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "the freed place is taken again");
    let metrics = node.metrics().await;
    assert!(refused(&metrics, "network_connections") >= 1.0, "counted");
    assert!(
        metrics.contains("bedside_media_signaling_connections"),
        "the open connections are a gauge"
    );
    still_flowing(&clinician, &patient).await;
    clinician.leave().await;
    patient.leave().await;
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_flood_is_rate_limited_and_audited_as_counted_records() {
    let mut node = TestNode::start_with(|c| {
        c.network.client_limits.join_attempts_per_minute = 10;
    })
    .await;
    let (clinician, patient) = call(&node).await;
    let attempts_by_call = 2;

    let forged = sign(&node.tenant, &[3u8; 32], "steady", "u-x", Role::Host, 600);
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..60 {
        let mut s = Signal::connect(&node).await;
        let reply = s.join("steady", &forged).await;
        *codes
            .entry(reply["code"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        if reply["code"] == "too-many-attempts" {
            assert!(
                reply["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("try again in"),
                "{reply}"
            );
        }
    }
    let verified = 10 - attempts_by_call;
    assert_eq!(
        codes,
        [
            ("token-refused".to_string(), verified),
            ("too-many-attempts".to_string(), 60 - verified)
        ]
        .into(),
        "only the network's attempts per minute are even verified"
    );

    // Another network still joins while 127.0.0.1 is held back.
    let other = another_network_joins(&node).await;
    still_flowing(&clinician, &patient).await;
    let metrics = node.metrics().await;
    assert_eq!(refused(&metrics, "rate_limited"), (60 - verified) as f64);

    drop(other);
    clinician.leave().await;
    patient.leave().await;
    node.shutdown(Duration::from_secs(2)).await;

    // 60 refusals, 4 records: each kind's first as it happened, the rest counted into one.
    let lines = node.audit_lines();
    let key = bedside_audit::AuditKey::new(&node.audit_key).expect("key");
    bedside_audit::verify(lines.iter().map(String::as_str), &key).expect("an intact chain");
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let of = |reason: &str| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| r["outcome"]["reason"] == reason)
            .collect()
    };
    let forged_records = of("token-forged");
    let limited_records = of("rate-limited");
    assert_eq!(forged_records.len(), 2, "{forged_records:?}");
    assert_eq!(limited_records.len(), 2, "{limited_records:?}");
    let repeated = |records: &[&Value]| {
        records
            .iter()
            .map(|r| r["outcome"]["repeated"].as_u64().unwrap_or(1))
            .sum::<u64>()
    };
    assert_eq!(repeated(&forged_records), verified as u64);
    assert_eq!(repeated(&limited_records), (60 - verified) as u64);
    assert!(
        limited_records
            .iter()
            .all(|r| r["place"]["clientIp"] == "127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_client_flooding_messages_is_closed_and_the_call_next_door_goes_on() {
    let mut node = TestNode::start().await;
    let (clinician, patient) = call(&node).await;
    let mut flooder = another_network_joins(&node).await;
    // Far faster than any browser: each unmute costs the media loop a command.
    let mut sent = 0;
    for _ in 0..500 {
        if !flooder
            .try_send_text(r#"{"v":1,"type":"unmute"}"#.to_string())
            .await
        {
            break;
        }
        sent += 1;
    }
    let mut closing = None;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_secs(5), flooder.recv_any()).await
    {
        if message["code"] == "too-many-messages" {
            closing = Some(message);
            break;
        }
    }
    let closing = closing.unwrap_or_else(|| panic!("no too-many-messages after {sent} messages"));
    assert_eq!(closing["fatal"], true, "{closing}");
    assert!(
        closing["message"]
            .as_str()
            .unwrap_or_default()
            .contains("20 messages a second"),
        "{closing}"
    );
    still_flowing(&clinician, &patient).await;
    clinician.leave().await;
    patient.leave().await;
    node.shutdown(Duration::from_secs(2)).await;
}

/// Opens a TCP connection from `source` to the node's signaling port and sends nothing: a TLS
/// handshake that never starts.
async fn raw_socket(node: &TestNode, source: IpAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::new(source, 0))
        .expect("bind a loopback source");
    socket.connect(node.signaling).await.expect("connect")
}

/// Whether the node closed `stream` (read gives end of file or an error) within a second.
async fn closed_by_the_node(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_start_tls_are_held_to_the_networks_share_before_the_handshake() {
    let mut node = TestNode::start_with(|c| {
        c.network.client_limits.connections_per_network = 3;
    })
    .await;
    let (clinician, patient) = call(&node).await;
    let hostile = IpAddr::from([127, 0, 0, 3]);

    // Twice the signaling share in TCP sockets (6) are held, waiting for the handshake timeout.
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(raw_socket(&node, hostile).await);
    }
    for socket in &mut held {
        assert!(
            !closed_by_the_node(socket).await,
            "a socket within the share stays open"
        );
    }
    // The next is closed at once, before any TLS: and so is a real client from that network.
    let mut over = raw_socket(&node, hostile).await;
    assert!(
        closed_by_the_node(&mut over).await,
        "a socket past the share is closed at once"
    );
    assert!(
        Signal::try_connect_from(&node, Some(hostile))
            .await
            .is_err(),
        "no TLS for the network while it holds its share"
    );

    // Another network, and the call in progress, are unaffected.
    let _other = another_network_joins(&node).await;
    still_flowing(&clinician, &patient).await;

    // Closed sockets give their places back.
    held.clear();
    let mut again = None;
    for _ in 0..50 {
        if let Ok(s) = Signal::try_connect_from(&node, Some(hostile)).await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        again.is_some(),
        "the network connects again once its sockets closed"
    );
    let metrics = node.metrics().await;
    assert!(
        refused(&metrics, "network_connections") >= 2.0,
        "counted: {}",
        refused(&metrics, "network_connections")
    );
    clinician.leave().await;
    patient.leave().await;
    node.shutdown(Duration::from_secs(2)).await;
}
