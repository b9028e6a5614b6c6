//! The media node against an independent WebRTC stack (the `webrtc` crate), on loopback:
//! forwarding across participants and rooms, room isolation, token and cipher refusals,
//! malformed signaling, leave and shutdown notices.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bedside_crds::join::Role;
use bedside_tests::browser::Netns;
use bedside_tests::janus::{JanusPeer, JanusServer, Stack};
use bedside_tests::load_peer::LoadPeer;
use bedside_tests::media::{PeerOptions, RustPeer, Signal, TestNode, VideoLoad, sign, wait_until};
use serde_json::json;
use webrtc::peer_connection::SrtpProtectionProfile;

const FLOW: Duration = Duration::from_secs(20);

async fn peer(node: &TestNode, room: &str, user: &str) -> RustPeer {
    let token = node.token(room, user, Role::Host);
    let mut p = RustPeer::join(node, room, &token, PeerOptions::default()).await;
    p.start_publishing();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_flows_between_everyone_in_a_room_and_never_across_rooms() {
    let mut node = TestNode::start().await;
    // The two rooms live on different media loops of the node (one per core).
    let (a, b) = bedside_tests::media::rooms_on_different_loops("room");
    let a1 = peer(&node, &a, "u-a1").await;
    let a2 = peer(&node, &a, "u-a2").await;
    let a3 = peer(&node, &a, "u-a3").await;
    let b1 = peer(&node, &b, "u-b1").await;
    let b2 = peer(&node, &b, "u-b2").await;
    let room_a = [&a1, &a2, &a3];
    let room_b = [&b1, &b2];

    let all_flowing = wait_until(FLOW, || {
        room_a.iter().all(|p| {
            room_a
                .iter()
                .filter(|o| o.participant_id != p.participant_id)
                .all(|o| p.packets_from(&o.participant_id) > 20)
        }) && room_b.iter().all(|p| {
            room_b
                .iter()
                .filter(|o| o.participant_id != p.participant_id)
                .all(|o| p.packets_from(&o.participant_id) > 20)
        })
    })
    .await;
    for p in room_a.iter().chain(room_b.iter()) {
        eprintln!("{} heard {:?}", p.participant_id, p.publishers_heard());
    }
    assert!(
        all_flowing,
        "every participant hears every other in its room"
    );

    // Whose media it is: the payload names its publisher, end to end through the node.
    let tag = a1.last_payload_from(&a2.participant_id);
    assert!(
        tag.starts_with(format!("from:{};", a2.participant_id).as_bytes()),
        "a1 got a2's payload intact: {:?}",
        String::from_utf8_lossy(&tag)
    );
    // Isolation: nobody hears anyone outside their room, and nobody hears themselves.
    for p in room_a {
        for o in room_b {
            assert_eq!(p.packets_from(&o.participant_id), 0, "room-a hears room-b");
            assert_eq!(o.packets_from(&p.participant_id), 0, "room-b hears room-a");
        }
        assert_eq!(p.packets_from(&p.participant_id), 0, "echo of own media");
    }
    // Every connection completed DTLS under the policy and the node says which profile.
    for p in room_a.iter().chain(room_b.iter()) {
        let connected = p.saw("media-connected");
        assert_eq!(connected.len(), 1, "{}", p.participant_id);
        assert_eq!(connected[0]["srtpProfile"], "AEAD_AES_256_GCM");
    }
    assert_eq!(node.metric("bedside_media_connections_total").await, 5.0);
    assert_eq!(
        node.metric_where(
            "bedside_media_srtp_sessions_total",
            "profile=\"AEAD_AES_256_GCM\""
        )
        .await,
        5.0
    );
    assert_eq!(node.metric("bedside_media_participants").await, 5.0);
    assert_eq!(node.metric("bedside_media_loops").await, 2.0);
    // The node's gauges add up both loops' rooms (each loop's share, refreshed every 500 ms).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(node.metric("bedside_media_rooms").await, 2.0);
    assert_eq!(node.metric("bedside_media_publishers").await, 5.0);
    assert_eq!(
        node.metric("bedside_media_receive_dropped_total").await,
        0.0
    );

    for p in [a1, a2, a3, b1, b2] {
        p.leave().await;
    }
    node.shutdown(Duration::from_secs(2)).await;
}

/// The benchmarks' cheaper load generator (str0m peers in RTP mode, `LoadPeer`) through a
/// real node: each publisher's stamped packets reach the subscribers of its own room, nearly
/// all of them (NACK repairs what loopback drops), and none reach the room next door. A
/// generator that silently lost packets or crossed rooms would publish false figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_str0m_load_generator_delivers_each_publishers_packets_to_its_room_only() {
    let mut node = TestNode::start().await;
    let (a, b) = bedside_tests::media::rooms_on_different_loops("load");
    // A tenth of the benchmarks' rate: the node here is a debug build.
    let load = VideoLoad {
        bitrate_bps: 150_000,
        packet_bytes: VideoLoad::BROWSER_PACKET_PAYLOAD,
    };
    let join = |room: &str, user: &str, video: Option<VideoLoad>| {
        let token = node.token(room, user, Role::Host);
        let room = room.to_string();
        let node = &node;
        async move { LoadPeer::join(node, &room, &token, video).await }
    };
    let pub_a = join(&a, "pub-a", Some(load)).await;
    let pub_b = join(&b, "pub-b", Some(load)).await;
    let subs_a = [
        join(&a, "sub-a1", None).await,
        join(&a, "sub-a2", None).await,
    ];
    let sub_b = join(&b, "sub-b", None).await;
    let stamped = |peer: &LoadPeer, from: &LoadPeer| {
        peer.received
            .lock()
            .map(|r| r.stamped.get(&from.participant_id).copied().unwrap_or(0))
            .unwrap_or(0)
    };
    assert!(
        wait_until(FLOW, || subs_a.iter().all(|s| stamped(s, &pub_a) > 5)
            && stamped(&sub_b, &pub_b) > 5)
        .await,
        "each room's subscribers receive its publisher's packets"
    );

    let sent_before = pub_a.video_sent.load(std::sync::atomic::Ordering::Relaxed);
    let received_before: Vec<u64> = subs_a.iter().map(|s| stamped(s, &pub_a)).collect();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sent = pub_a.video_sent.load(std::sync::atomic::Ordering::Relaxed) - sent_before;
    for (s, before) in subs_a.iter().zip(received_before) {
        let received = stamped(s, &pub_a) - before;
        // Packets in flight at the window's edges: a few either way.
        assert!(
            received + 3 >= sent && received <= sent + 3,
            "{} received {received} of {sent} packets",
            s.participant_id
        );
        let r = s.received.lock().expect("lock");
        assert!(!r.latencies_us.is_empty(), "delays are measured");
        assert_eq!(
            r.stamped.get(&pub_b.participant_id),
            None,
            "nothing from room b"
        );
    }
    assert_eq!(
        sub_b
            .received
            .lock()
            .map(|r| r.stamped.get(&pub_a.participant_id).copied())
            .expect("lock"),
        None,
        "nothing from room a"
    );
    for p in [pub_a, pub_b, sub_b].into_iter().chain(subs_a) {
        p.leave().await;
    }
    node.shutdown(Duration::from_secs(2)).await;
}

/// The same generator through Janus, the side-by-side benchmark's peer SFU: a str0m publisher's
/// stamped packets reach both str0m subscribers, nearly all of them. The benchmark's Janus rows
/// then carry the same load as its bedside rows, or this fails.
#[test]
fn the_str0m_load_generator_carries_a_publishers_packets_through_janus() {
    let unavailable = bedside_tests::janus::unavailable();
    if !bedside_tests::run_or_skip("Janus's peers", unavailable, "BEDSIDE_REQUIRE_TOOLS") {
        return;
    }
    let netns = Netns::create();
    netns.add_veth(("v0", "10.99.0.1"), ("v1", "10.99.0.2"));
    netns.run(|| async {
        let ip = Ipv4Addr::new(10, 99, 0, 1);
        let server = JanusServer::start("v0", ip).await;
        let load = VideoLoad {
            bitrate_bps: 150_000,
            packet_bytes: VideoLoad::BROWSER_PACKET_PAYLOAD,
        };
        let stack = Stack::Str0m(ip, load);
        let publisher = JanusPeer::publish(&server, 1000, &stack).await;
        let subs = [
            JanusPeer::subscribe(&server, 1000, publisher.feed, &stack).await,
            JanusPeer::subscribe(&server, 1000, publisher.feed, &stack).await,
        ];
        let stamped = |peer: &JanusPeer| {
            peer.received()
                .lock()
                .map(|r| r.stamped.values().sum::<u64>())
                .unwrap_or(0)
        };
        assert!(
            wait_until(FLOW, || subs.iter().all(|s| stamped(s) > 5)).await,
            "Janus's subscribers receive the publisher's packets; Janus's log:\n{}",
            server.log_tail()
        );
        let sent_before = publisher.video_sent().load(Ordering::Relaxed);
        let received_before: Vec<u64> = subs.iter().map(stamped).collect();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let sent = publisher.video_sent().load(Ordering::Relaxed) - sent_before;
        assert!(sent > 50, "the publisher sent {sent} packets in 4 s");
        for (s, before) in subs.iter().zip(received_before) {
            let received = stamped(s) - before;
            // Packets in flight at the window's edges: a few either way.
            assert!(
                received + 3 >= sent && received <= sent + 3,
                "a subscriber received {received} of {sent} packets through Janus"
            );
        }
        for peer in subs.into_iter().chain([publisher]) {
            peer.leave().await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_others_are_told_when_someone_leaves_and_their_media_stops() {
    let mut node = TestNode::start().await;
    let a = peer(&node, "visit", "u-a").await;
    let b = peer(&node, "visit", "u-b").await;
    assert!(
        wait_until(FLOW, || a.packets_from(&b.participant_id) > 10).await,
        "media flows before the leave"
    );
    let b_id = b.participant_id.clone();
    b.leave().await;
    assert!(
        wait_until(Duration::from_secs(5), || {
            a.saw("participant-left")
                .iter()
                .any(|m| m["participantId"] == b_id.as_str() && m["reason"] == "left")
        })
        .await,
        "a is told that b left: {:?}",
        a.messages.lock().map(|m| m.clone()).unwrap_or_default()
    );
    let before = a.packets_from(&b_id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        a.packets_from(&b_id),
        before,
        "no media from b after it left"
    );
    assert!(
        wait_until(Duration::from_secs(5), || a.saw("offer").len() >= 2).await,
        "the node renegotiates to stop b's tracks"
    );
    a.leave().await;
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_for_another_tenant_room_key_or_time_are_refused() {
    let mut node = TestNode::start().await;
    let mut other_key = vec![7u8; 32];
    other_key[0] = 1;
    let cases = [
        (
            "expired",
            sign(
                &node.tenant,
                &node.join_key,
                "visit",
                "u-1",
                Role::Host,
                -3600,
            ),
            "has ended",
        ),
        (
            "another tenant",
            sign(
                "other-clinic",
                &node.join_key,
                "visit",
                "u-1",
                Role::Host,
                600,
            ),
            "not valid for this clinic",
        ),
        (
            "another room",
            sign(
                &node.tenant,
                &node.join_key,
                "other-visit",
                "u-1",
                Role::Host,
                600,
            ),
            "another meeting",
        ),
        (
            "forged",
            sign(&node.tenant, &other_key, "visit", "u-1", Role::Host, 600),
            "signature",
        ),
        (
            "a name as user id",
            sign(
                &node.tenant,
                &node.join_key,
                "visit",
                "Jane Doe",
                Role::Host,
                600,
            ),
            "opaque id",
        ),
        (
            "a name's shape as user id",
            sign(
                &node.tenant,
                &node.join_key,
                "visit",
                "jane.doe",
                Role::Host,
                600,
            ),
            "opaque id",
        ),
        ("garbage", "not-a-jwt".to_string(), "malformed"),
    ];
    for (case, token, words) in cases {
        let mut s = Signal::connect(&node).await;
        let reply = s.join("visit", &token).await;
        assert_eq!(reply["type"], "error", "{case}: {reply}");
        // An ended visit has its own code, so the landing page can say so.
        let code = if case == "expired" {
            "token-expired"
        } else {
            "token-refused"
        };
        assert_eq!(reply["code"], code, "{case}: {reply}");
        assert_eq!(reply["fatal"], true, "{case}");
        assert!(
            reply["message"]
                .as_str()
                .unwrap_or_default()
                .contains(words),
            "{case}: {reply}"
        );
        assert!(
            s.recv().await.is_none(),
            "{case}: the node closes the connection"
        );
    }
    assert_eq!(node.metric("bedside_media_participants").await, 0.0);
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_cannot_do_aes_256_gcm_is_refused_with_a_reason() {
    let mut node = TestNode::start().await;
    let token = node.token("visit", "u-old", Role::Host);
    let old = RustPeer::join(
        &node,
        "visit",
        &token,
        PeerOptions {
            srtp_profiles: Some(vec![SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80]),
            ..PeerOptions::default()
        },
    )
    .await;
    assert!(
        wait_until(FLOW, || !old.saw("error").is_empty()).await,
        "the node tells the peer why"
    );
    let error = &old.saw("error")[0];
    assert_eq!(error["code"], "media-encryption-refused", "{error}");
    assert_eq!(error["fatal"], true);
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("AEAD_AES_256_GCM"),
        "{error}"
    );
    assert!(old.saw("media-connected").is_empty());
    assert_eq!(
        node.metric_where(
            "bedside_media_connection_failures_total",
            "reason=\"encryption_policy\""
        )
        .await,
        1.0
    );
    assert_eq!(node.metric("bedside_media_connections_total").await, 0.0);
    // And the refusal is on record: who, and why.
    assert!(
        wait_until(Duration::from_secs(5), || node
            .audit_lines()
            .iter()
            .any(|l| l.contains("media-refused")))
        .await,
        "the refusal reaches the audit trail"
    );
    let records: Vec<serde_json::Value> = node
        .audit_lines()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let refused = records
        .iter()
        .find(|r| r["action"] == "media-refused")
        .unwrap_or_else(|| panic!("no media-refused record: {records:?}"));
    assert_eq!(refused["actor"]["user"], "u-old", "{refused}");
    assert_eq!(refused["outcome"]["result"], "failure", "{refused}");
    assert_eq!(
        refused["outcome"]["reason"], "encryption-policy",
        "{refused}"
    );

    // A peer that offers AES-256-GCM among others gets it.
    let token = node.token("visit", "u-new", Role::Host);
    let new = RustPeer::join(
        &node,
        "visit",
        &token,
        PeerOptions {
            srtp_profiles: Some(vec![
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
            ]),
            ..PeerOptions::default()
        },
    )
    .await;
    assert!(
        wait_until(FLOW, || !new.saw("media-connected").is_empty()).await,
        "a capable peer connects"
    );
    assert_eq!(node.metric("bedside_media_connections_total").await, 1.0);
    old.leave().await;
    new.leave().await;
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_signaling_gets_clear_errors_and_other_rooms_keep_flowing() {
    let mut node = TestNode::start().await;
    let a = peer(&node, "steady", "u-a").await;
    let b = peer(&node, "steady", "u-b").await;
    assert!(wait_until(FLOW, || a.packets_from(&b.participant_id) > 10).await);

    let corpus: Vec<(String, &str)> = vec![
        ("{".into(), "malformed-json"),
        ("null".into(), "invalid-message"),
        ("[]".into(), "invalid-message"),
        ("\"join\"".into(), "invalid-message"),
        (r#"{"type":"join"}"#.into(), "unsupported-version"),
        (r#"{"v":99,"type":"join"}"#.into(), "unsupported-version"),
        (r#"{"v":"1","type":"join"}"#.into(), "unsupported-version"),
        (r#"{"v":1}"#.into(), "invalid-message"),
        (r#"{"v":1,"type":42}"#.into(), "invalid-message"),
        (r#"{"v":1,"type":"🎥"}"#.into(), "unknown-type"),
        (r#"{"v":1,"type":"offer","sdp":"v=0"}"#.into(), "join-first"),
        (r#"{"v":1,"type":"answer","sdp":"x"}"#.into(), "join-first"),
        (
            r#"{"v":1,"type":"candidate","candidate":"x"}"#.into(),
            "join-first",
        ),
        (
            r#"{"v":1,"type":"join","room":"","token":"t"}"#.into(),
            "invalid-message",
        ),
        (
            format!(
                r#"{{"v":1,"type":"join","room":"{}","token":"t"}}"#,
                "r".repeat(500)
            ),
            "invalid-message",
        ),
        ("\u{0}\u{1}\u{2}".into(), "malformed-json"),
        (
            format!("{}1{}", "[".repeat(200), "]".repeat(200)),
            "malformed-json",
        ),
    ];
    let mut s = Signal::connect(&node).await;
    for (input, code) in &corpus {
        s.send_text(input.clone()).await;
        let reply = s
            .recv()
            .await
            .expect("the node answers, it does not hang up");
        assert_eq!(reply["type"], "error", "{input:.60}: {reply}");
        assert_eq!(reply["code"], *code, "{input:.60}: {reply}");
        assert_eq!(reply["fatal"], false, "{input:.60}");
        assert!(!reply["message"].as_str().unwrap_or_default().is_empty());
    }
    s.send_binary(vec![0xff; 64]).await;
    let reply = s.recv().await.expect("binary frames get an answer");
    assert_eq!(reply["code"], "binary-frame");

    // After a valid join: SDP garbage and wrong order are errors, not crashes.
    let token = node.token("fuzz", "u-f", Role::Host);
    assert_eq!(s.join("fuzz", &token).await["type"], "joined");
    for (input, code) in [
        (
            json!({"v":1,"type":"offer","sdp":"this is not sdp"}),
            "invalid-sdp",
        ),
        (
            json!({"v":1,"type":"answer","sdp":"v=0\r\n"}),
            "invalid-sdp",
        ),
        (
            json!({"v":1,"type":"candidate","candidate":"candidate:garbage"}),
            "join-first",
        ),
        (
            json!({"v":1,"type":"join","room":"fuzz","token":token}),
            "already-joined",
        ),
    ] {
        s.send(input.clone()).await;
        let reply = s.recv().await.expect("answer");
        assert_eq!(reply["code"], code, "{input}: {reply}");
    }

    // A frame over 64 KiB is not read, joined or not: that one connection closes with a
    // reason, nothing else notices.
    for joined in [true, false] {
        let mut huge = if joined {
            std::mem::replace(&mut s, Signal::connect(&node).await)
        } else {
            Signal::connect(&node).await
        };
        let _ = huge
            .try_send_text(format!(
                r#"{{"v":1,"type":"offer","sdp":"{}"}}"#,
                "a".repeat(200_000)
            ))
            .await;
        let mut replies = 0;
        while let Some(m) = huge.recv().await {
            assert_eq!(m["code"], "too-large", "{m}");
            assert_eq!(m["fatal"], true, "{m}");
            assert!(
                !m["message"].as_str().unwrap_or_default().contains("aaaa"),
                "{m}"
            );
            replies += 1;
        }
        // The reason may be lost to a reset while the client is still writing the frame.
        assert!(
            replies <= 1,
            "at most one reason, then the connection closes"
        );
    }

    // The room next door never noticed.
    let before = a.packets_from(&b.participant_id);
    assert!(
        wait_until(Duration::from_secs(5), || a.packets_from(&b.participant_id)
            > before + 20)
        .await,
        "other rooms keep flowing"
    );
    a.leave().await;
    b.leave().await;
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_every_client_and_finishes_within_the_grace_period() {
    let mut node = TestNode::start().await;
    let a = peer(&node, "visit", "u-a").await;
    let b = peer(&node, "visit", "u-b").await;
    assert!(wait_until(FLOW, || a.packets_from(&b.participant_id) > 5).await);
    let grace = Duration::from_secs(3);
    let started = std::time::Instant::now();
    node.shutdown(grace).await;
    // Within the grace itself, not merely bounded by the forced stop that follows it.
    assert!(
        started.elapsed() <= grace,
        "shutdown took {:?} with a grace of {grace:?}",
        started.elapsed()
    );
    for p in [&a, &b] {
        wait_until(Duration::from_secs(2), || !p.saw("closing").is_empty()).await;
        let closing = p.saw("closing");
        assert_eq!(closing.len(), 1, "{} was told", p.participant_id);
        assert!(
            closing[0]["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("shutting down")
        );
    }
    a.leave().await;
    b.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_leaves_and_refusals_are_audited_in_a_chain_that_verifies() {
    let mut node = TestNode::start().await;
    let a = peer(&node, "visit-7", "u-clinician-1").await;
    let b = peer(&node, "visit-7", "u-patient-2").await;
    assert!(wait_until(FLOW, || a.packets_from(&b.participant_id) > 5).await);
    let mut intruder = Signal::connect(&node).await;
    let forged = sign(&node.tenant, &[3u8; 32], "visit-7", "u-x", Role::Host, 600);
    assert_eq!(
        intruder.join("visit-7", &forged).await["code"],
        "token-refused"
    );
    b.leave().await;
    assert!(
        wait_until(Duration::from_secs(5), || node.audit_lines().len() >= 4).await,
        "{:?}",
        node.audit_lines()
    );

    let lines = node.audit_lines();
    let key = bedside_audit::AuditKey::new(&node.audit_key).expect("key");
    let verified = bedside_audit::verify(lines.iter().map(String::as_str), &key)
        .expect("the node's records form an intact chain");
    assert_eq!(verified.chains[0].first_seq, Some(1));
    let records: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let find = |action: &str, user: Option<&str>| {
        records
            .iter()
            .find(|r| r["action"] == action && user.is_none_or(|u| r["actor"]["user"] == u))
    };
    let join = find("join", Some("u-clinician-1")).expect("a's join");
    assert_eq!(join["tenant"], node.tenant.as_str());
    assert_eq!(join["place"]["room"], "visit-7");
    assert_eq!(join["place"]["clientIp"], "127.0.0.1");
    assert_eq!(join["actor"]["auth"], "join-token");
    assert_eq!(join["outcome"]["result"], "success");
    assert!(find("leave", Some("u-patient-2")).is_some(), "b's leave");
    // Once its media flowed, the path it took is on record too.
    let connected = find("media-connected", Some("u-clinician-1")).expect("a's media");
    assert_eq!(connected["place"]["mediaPath"], "udp", "{connected}");
    assert_eq!(connected["place"]["room"], "visit-7");
    assert_eq!(connected["outcome"]["result"], "success");
    let refused = find("token-refused", None).expect("the forged token");
    assert_eq!(refused["outcome"]["reason"], "token-forged");
    assert!(
        refused["actor"].get("user").is_none(),
        "an unverified claim is not a user"
    );
    // Wrong key: the verifier says so.
    let other = bedside_audit::AuditKey::new(&[9u8; 32]).expect("key");
    assert!(bedside_audit::verify(lines.iter().map(String::as_str), &other).is_err());

    a.leave().await;
    node.shutdown(Duration::from_secs(2)).await;
}

/// The page a patient opens: HTTPS with HSTS and the hardening headers, and the TLS listener
/// takes TLS 1.2 and 1.3 and refuses older versions (a client offering only TLS 1.0-1.1 gets an
/// alert from the node: the refusal is the node's, not the client library's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_client_is_served_over_tls_1_2_or_1_3_only_with_hsts() {
    let mut node = TestNode::start().await;
    let https = bedside_tests::https::Https::trusting(&node.cert_pem);
    let page = https
        .call("GET", &format!("{}/", node.https_base()), None, None)
        .await;
    assert_eq!(page.status, 200);
    let header = |name: &str| {
        page.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let hsts = header("strict-transport-security");
    let max_age: u64 = hsts
        .strip_prefix("max-age=")
        .and_then(|v| v.split(';').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no HSTS max-age: {hsts:?}"));
    assert!(
        max_age >= 365 * 24 * 3600,
        "HSTS for at least a year: {hsts}"
    );
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("cache-control"), "no-store");

    // Python's ssl (OpenSSL) can still offer old versions when told to: ask for each.
    let probe = |min: &str, max: &str| {
        let script = format!(
            "import socket, ssl, sys\n\
             c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n\
             c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n\
             c.set_ciphers('ALL:@SECLEVEL=0')\n\
             c.minimum_version = ssl.TLSVersion.{min}; c.maximum_version = ssl.TLSVersion.{max}\n\
             s = socket.create_connection(('{}', {}), timeout=5)\n\
             try:\n    t = c.wrap_socket(s); print('OK', t.version())\n\
             except ssl.SSLError as e:\n    print('REFUSED', e.reason)\n",
            node.signaling.ip(),
            node.signaling.port()
        );
        let out = std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3 (scripts/test-deps.sh installs it)");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(probe("TLSv1_2", "TLSv1_2"), "OK TLSv1.2");
    assert_eq!(probe("TLSv1_3", "TLSv1_3"), "OK TLSv1.3");
    let old = probe("TLSv1", "TLSv1_1");
    assert!(
        old.starts_with("REFUSED") && old.contains("ALERT"),
        "TLS 1.0-1.1 is refused by an alert from the node: {old}"
    );
    node.shutdown(Duration::from_secs(2)).await;
}

/// A Secret volume as the kubelet writes it: files behind `..data`, a symlink swapped in one
/// rename when the Secret changes, so a reader sees the old pair or the new one.
struct SecretMount {
    dir: tempfile::TempDir,
    version: u32,
}

impl SecretMount {
    fn new(cert_pem: &[u8], key_pem: &[u8]) -> SecretMount {
        let mut mount = SecretMount {
            dir: tempfile::tempdir().expect("mount dir"),
            version: 0,
        };
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), mount.dir.path().join(name))
                .expect("file link");
        }
        mount.write(cert_pem, key_pem);
        mount
    }

    fn write(&mut self, cert_pem: &[u8], key_pem: &[u8]) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        let root = self.dir.path();
        std::fs::create_dir(root.join(&version)).expect("version dir");
        std::fs::write(root.join(&version).join("tls.crt"), cert_pem).expect("cert");
        std::fs::write(root.join(&version).join("tls.key"), key_pem).expect("key");
        std::os::unix::fs::symlink(&version, root.join("..data_tmp")).expect("data link");
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
    }

    fn files(&self) -> bedside_media_node::tls::TlsFiles {
        bedside_media_node::tls::TlsFiles {
            cert: self.dir.path().join("tls.crt"),
            key: self.dir.path().join("tls.key"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_reaches_new_connections_while_the_call_goes_on() {
    let mut mount = None;
    let mut node = TestNode::start_custom(
        |_| {},
        |setup| {
            let m = SecretMount::new(&setup.tls.cert_pem, &setup.tls.key_pem);
            setup.tls_files = Some(m.files());
            mount = Some(m);
        },
    )
    .await;
    let mut mount = mount.expect("mounted");
    let first_pem = node.cert_pem.clone();
    let a = peer(&node, "rotation", "u-a").await;
    let b = peer(&node, "rotation", "u-b").await;
    let flowing = |floor: u64| {
        a.packets_from(&b.participant_id) > floor && b.packets_from(&a.participant_id) > floor
    };
    assert!(wait_until(FLOW, || flowing(20)).await, "the call has media");

    // cert-manager renews; the kubelet swaps the files.
    let renewed = bedside_media_node::tls::TlsMaterial::self_signed().expect("renewal");
    mount.write(&renewed.cert_pem, &renewed.key_pem);
    node.cert_pem = renewed.cert_pem.clone();
    let mut served_new = false;
    for _ in 0..60 {
        if Signal::try_connect(&node).await.is_ok() {
            served_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(served_new, "a new connection gets the renewed certificate");
    node.cert_pem = first_pem;
    let refused = Signal::try_connect(&node)
        .await
        .expect_err("old certificate");
    assert!(refused.contains("certificate"), "{refused}");
    assert_eq!(
        node.metric_where(
            "bedside_media_tls_certificate_reloads_total",
            "outcome=\"replaced\""
        )
        .await,
        1.0
    );

    // The call that started before goes on: its media, and its signaling (a host's lock
    // reaches the other participant over the connection opened under the old certificate).
    let (heard_a, heard_b) = (
        a.packets_from(&b.participant_id),
        b.packets_from(&a.participant_id),
    );
    assert!(
        wait_until(FLOW, || a.packets_from(&b.participant_id) > heard_a + 50
            && b.packets_from(&a.participant_id) > heard_b + 50)
        .await,
        "media keeps flowing across the renewal"
    );
    a.send(json!({"v": 1, "type": "lock", "locked": true}))
        .await;
    assert!(
        wait_until(Duration::from_secs(5), || !b.saw("locked").is_empty()).await,
        "signaling opened before the renewal still carries messages"
    );
    assert!(a.signaling_open() && b.signaling_open());

    // A renewal caught half-written (a key that does not fit) is refused; the renewed
    // certificate stays in service.
    let other = bedside_media_node::tls::TlsMaterial::self_signed().expect("other");
    mount.write(&other.cert_pem, &renewed.key_pem);
    assert!(
        bedside_tests::media::wait_until_async(Duration::from_secs(15), || async {
            node.metric_where(
                "bedside_media_tls_certificate_reloads_total",
                "outcome=\"refused\"",
            )
            .await
                >= 1.0
        })
        .await,
        "a key that does not fit its certificate is refused"
    );
    assert_eq!(
        node.metric("bedside_media_tls_certificate_refused").await,
        1.0
    );
    node.cert_pem = renewed.cert_pem;
    Signal::try_connect(&node)
        .await
        .expect("the renewed certificate is still served");

    a.leave().await;
    b.leave().await;
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_of_the_old_and_the_new_join_key_work_across_a_rotation_without_a_restart() {
    let mount = tempfile::tempdir().expect("mount");
    let files = bedside_media_node::keys::KeyFiles::beside(mount.path().join("join-token.key"));
    let mut old_key = Vec::new();
    let mut node = TestNode::start_custom(
        |_| {},
        |setup| {
            std::fs::write(&files.current, &setup.join_key).expect("key");
            setup.join_key_files = Some(files.clone());
            old_key = setup.join_key.clone();
        },
    )
    .await;
    let new_key = vec![0x5a; 32];
    let token = |key: &[u8], user: &str| {
        let claims = bedside_crds::join::JoinClaims {
            sub: user.into(),
            aud: node.tenant.clone(),
            room: "visit".into(),
            role: Role::Host,
            exp: bedside_tests::media::now_secs() + 600,
            nbf: None,
            start: None,
            generation: None,
            break_glass: None,
        };
        bedside_crds::join::issue(&claims, key).expect("issued")
    };
    let passcode = |key: &[u8]| bedside_crds::join::passcode(key, "visit");
    let join = |token: String, passcode: String| {
        let node = &node;
        async move {
            let mut s = Signal::connect(node).await;
            let answer = s.join_with("visit", &token, Some(&passcode)).await;
            s.close().await;
            answer
        }
    };
    assert_eq!(
        join(token(&old_key, "u-1"), passcode(&old_key)).await["type"],
        "joined"
    );

    // The rotation: the current key moves aside, a new one is current.
    std::fs::write(&files.previous, &old_key).expect("previous");
    std::fs::write(&files.current, &new_key).expect("current");
    // The first link of the new key makes the node read its keys again.
    assert_eq!(
        join(token(&new_key, "u-2"), passcode(&new_key)).await["type"],
        "joined"
    );
    // A link sent before the rotation still works, with the passcode sent with it.
    assert_eq!(
        join(token(&old_key, "u-3"), passcode(&old_key)).await["type"],
        "joined"
    );
    let wrong = join(token(&old_key, "u-4"), passcode(&new_key)).await;
    assert_eq!(wrong["code"], "passcode-refused", "{wrong}");
    let rotated = node
        .audit_lines()
        .into_iter()
        .filter(|l| l.contains("\"join-key-rotated\""))
        .collect::<Vec<_>>();
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    assert!(rotated[0].contains(&bedside_crds::join::key_id(&new_key)));
    assert!(
        !rotated[0].contains(&format!("{:?}", new_key)),
        "no key in a record"
    );

    // The previous key retired: its links are refused once the node has read its keys.
    std::fs::remove_file(&files.previous).expect("retired");
    assert!(
        bedside_tests::media::wait_until_async(Duration::from_secs(15), || async {
            join(token(&old_key, "u-5"), passcode(&old_key)).await["code"] == "token-refused"
        })
        .await,
        "a retired key's links are refused"
    );
    node.shutdown(Duration::from_secs(2)).await;
}
