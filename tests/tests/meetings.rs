//! Meetings under a BAA, enforced by the media node over real signaling: the waiting room,
//! passcodes, host controls (admit, deny, lock, expel, mute, end) and what non-hosts may not
//! do. Every control is also an audit record.

use std::time::Duration;

use bedside_crds::join::Role;
use bedside_tests::media::{PeerOptions, RustPeer, Signal, TestNode, wait_until};
use serde_json::{Value, json};

const ROOM: &str = "visit-3";

async fn connect(node: &TestNode, user: &str, role: Role) -> (Signal, Value) {
    let mut s = Signal::connect(node).await;
    let reply = s
        .join_as(
            ROOM,
            &node.token(ROOM, user, role),
            &format!("Guest {user}"),
        )
        .await;
    (s, reply)
}

fn audited(node: &TestNode, action: &str) -> Vec<Value> {
    node.audit_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["action"] == action)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_wait_until_a_host_admits_them_and_non_hosts_cannot_act_as_hosts() {
    let mut node = TestNode::start().await;
    let (mut guest, reply) = connect(&node, "u-guest", Role::Participant).await;
    assert_eq!(reply["type"], "waiting", "{reply}");
    let guest_id = reply["participantId"].as_str().expect("id").to_string();

    // No media before admission.
    guest
        .send(json!({"v": 1, "type": "offer", "sdp": "v=0\r\n"}))
        .await;
    let refused = guest.recv().await.expect("an answer");
    assert_eq!(refused["code"], "waiting", "{refused}");

    // The host arrives and sees who waits, with the name they typed.
    let (mut host, reply) = connect(&node, "u-host", Role::Host).await;
    assert_eq!(reply["type"], "joined", "{reply}");
    let room = host.expect("waiting-room").await;
    assert_eq!(room["waiting"][0]["id"], guest_id.as_str(), "{room}");
    assert_eq!(room["waiting"][0]["displayName"], "Guest u-guest", "{room}");

    // A waiting participant cannot admit themselves or lock the room.
    guest
        .send(json!({"v": 1, "type": "admit", "participantId": guest_id}))
        .await;
    assert_eq!(guest.recv().await.expect("answer")["code"], "not-host");
    guest
        .send(json!({"v": 1, "type": "lock", "locked": true}))
        .await;
    assert_eq!(guest.recv().await.expect("answer")["code"], "not-host");

    host.send(json!({"v": 1, "type": "admit", "participantId": guest_id}))
        .await;
    let joined = guest.expect("joined").await;
    assert_eq!(joined["role"], "participant", "{joined}");
    assert_eq!(joined["participants"][0]["role"], "host", "{joined}");
    let emptied = host.expect("waiting-room").await;
    assert_eq!(emptied["waiting"], json!([]), "{emptied}");

    // An admitted participant is still not a host.
    for action in [
        json!({"v": 1, "type": "mute"}),
        json!({"v": 1, "type": "end"}),
        json!({"v": 1, "type": "expel", "participantId": "p1"}),
    ] {
        guest.send(action.clone()).await;
        let reply = guest.expect("error").await;
        assert_eq!(reply["code"], "not-host", "{action}: {reply}");
        assert_eq!(reply["fatal"], false, "{reply}");
    }
    assert_eq!(audited(&node, "waiting-room-enter").len(), 1);
    // Each join is on record with the role its token gave.
    let roles: Vec<(String, String)> = audited(&node, "join")
        .iter()
        .map(|r| {
            let field = |v: &Value| v.as_str().unwrap_or("<missing>").to_string();
            (field(&r["actor"]["user"]), field(&r["actor"]["role"]))
        })
        .collect();
    assert!(
        roles.contains(&("u-guest".into(), "participant".into())),
        "{roles:?}"
    );
    assert!(
        roles.contains(&("u-host".into(), "host".into())),
        "{roles:?}"
    );
    let admits = audited(&node, "admit");
    assert_eq!(
        admits
            .iter()
            .map(|r| (r["actor"]["user"].as_str(), r["outcome"]["result"].as_str()))
            .collect::<Vec<_>>(),
        [
            (Some("u-guest"), Some("failure")),
            (Some("u-host"), Some("success"))
        ],
        "the guest's try and the host's admission, each on record"
    );
    // Every host action a non-host tried is on record as refused, with who tried.
    for action in ["lock-meeting", "mute", "meeting-end", "expel"] {
        let records = audited(&node, action);
        assert!(
            records.iter().any(|r| r["outcome"]["result"] == "failure"
                && r["outcome"]["reason"] == "not-host"
                && r["actor"]["user"] == "u-guest"),
            "the guest's {action} is on record as refused: {records:?}"
        );
    }
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_lock_expel_and_end_are_felt_and_expelled_users_cannot_rejoin() {
    let mut node = TestNode::start().await;
    let (mut host, _) = connect(&node, "u-host", Role::Host).await;

    // Denied: told why, and the connection closes.
    let (mut denied, reply) = connect(&node, "u-denied", Role::Participant).await;
    let id = reply["participantId"].as_str().expect("id").to_string();
    host.expect("waiting-room").await;
    host.send(json!({"v": 1, "type": "deny", "participantId": id}))
        .await;
    let gone = denied.expect("error").await;
    assert_eq!(
        (gone["code"].as_str(), gone["fatal"].as_bool()),
        (Some("denied"), Some(true))
    );
    assert!(
        denied.recv().await.is_none(),
        "the node closed the connection"
    );

    // Expelled: removed, and a fresh token for the same user is refused.
    let (mut guest, reply) = connect(&node, "u-guest", Role::Participant).await;
    let id = reply["participantId"].as_str().expect("id").to_string();
    host.send(json!({"v": 1, "type": "admit", "participantId": id}))
        .await;
    guest.expect("joined").await;
    host.send(json!({"v": 1, "type": "expel", "participantId": id}))
        .await;
    assert_eq!(guest.expect("error").await["code"], "expelled");
    let (_again, reply) = connect(&node, "u-guest", Role::Participant).await;
    assert_eq!(reply["code"], "expelled", "{reply}");

    // Locked: nobody new, not even into the waiting room; then open again.
    host.send(json!({"v": 1, "type": "lock", "locked": true}))
        .await;
    assert_eq!(host.expect("locked").await["locked"], true);
    let (_late, reply) = connect(&node, "u-late", Role::Participant).await;
    assert_eq!(reply["code"], "meeting-locked", "{reply}");
    host.send(json!({"v": 1, "type": "lock", "locked": false}))
        .await;
    host.expect("locked").await;
    let (mut late, reply) = connect(&node, "u-late", Role::Participant).await;
    assert_eq!(reply["type"], "waiting", "{reply}");

    // Ended: everyone out, and the meeting stays over.
    host.send(json!({"v": 1, "type": "end"})).await;
    assert_eq!(host.expect("error").await["code"], "meeting-ended");
    assert_eq!(late.expect("error").await["code"], "meeting-ended");
    let (_after, reply) = connect(&node, "u-host", Role::Host).await;
    assert_eq!(reply["code"], "meeting-ended", "{reply}");

    for action in ["deny", "expel", "lock-meeting", "meeting-end"] {
        assert!(
            audited(&node, action)
                .iter()
                .any(|r| r["outcome"]["result"] == "success" && r["actor"]["role"] == "host"),
            "{action} is on record"
        );
    }
    let removed = audited(&node, "leave");
    assert!(
        removed.iter().any(|r| r["outcome"]["reason"] == "expelled"),
        "the expelled participant's leave says why: {removed:?}"
    );
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_passcode_is_refused_and_a_guessing_client_cools_down() {
    let mut node = TestNode::start().await;
    let token = node.token(ROOM, "u-guess", Role::Participant);
    let mut s = Signal::connect(&node).await;
    let reply = s.join_with(ROOM, &token, None).await;
    assert_eq!(reply["code"], "passcode-refused", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap_or_default()
            .contains("passcode"),
        "{reply}"
    );
    // Four more wrong guesses: the fifth failure starts the cool-down.
    let mut last = Value::Null;
    for guess in ["00000000", "11111111", "22222222", "33333333"] {
        let mut s = Signal::connect(&node).await;
        last = s.join_with(ROOM, &token, Some(guess)).await;
    }
    assert_eq!(last["code"], "passcode-cool-down", "{last}");
    // Now even the right passcode waits out the cool-down.
    let mut s = Signal::connect(&node).await;
    let reply = s.join_with(ROOM, &token, Some(&node.passcode(ROOM))).await;
    assert_eq!(reply["code"], "passcode-cool-down", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap_or_default()
            .contains("minute"),
        "{reply}"
    );
    assert_eq!(
        node.metric_where("bedside_media_joins_refused_total", "reason=\"passcode\"")
            .await,
        6.0
    );
    node.shutdown(Duration::from_secs(2)).await;
    // Each kind's first failure is on record as it happened; the rest of the minute are
    // counted into one record (`repeated`), sealed at the latest when the node stops.
    let failures = audited(&node, "passcode-failure");
    assert_eq!(failures[0]["outcome"]["reason"], "passcode-missing");
    assert_eq!(failures[1]["outcome"]["reason"], "passcode-wrong");
    let attempts = |reason: &str| {
        failures
            .iter()
            .filter(|r| r["outcome"]["reason"] == reason)
            .map(|r| r["outcome"]["repeated"].as_u64().unwrap_or(1))
            .sum::<u64>()
    };
    assert_eq!(
        (
            attempts("passcode-missing"),
            attempts("passcode-wrong"),
            attempts("cool-down")
        ),
        (1, 4, 1),
        "{failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_muted_participants_audio_stops_reaching_the_others() {
    let mut node = TestNode::start().await;
    let host_token = node.token(ROOM, "u-host", Role::Host);
    let host = RustPeer::join(&node, ROOM, &host_token, PeerOptions::receive_only()).await;
    let speaker_token = node.token(ROOM, "u-speaker", Role::Host);
    let mut speaker = RustPeer::join(&node, ROOM, &speaker_token, PeerOptions::default()).await;
    speaker.start_publishing();
    let speaker_id = speaker.participant_id.clone();
    assert!(
        wait_until(Duration::from_secs(20), || host.packets_from(&speaker_id)
            > 20)
        .await,
        "audio flows before the mute"
    );
    host.send(json!({"v": 1, "type": "mute", "participantId": speaker_id}))
        .await;
    assert!(
        wait_until(Duration::from_secs(5), || !speaker.saw("muted").is_empty()).await,
        "the speaker is told"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_mute = host.packets_from(&speaker_id);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        host.packets_from(&speaker_id),
        after_mute,
        "no audio is forwarded once muted"
    );
    assert_eq!(audited(&node, "mute").len(), 1);
    // Nobody else can unmute them: `unmute` names no one, so a host naming the speaker is
    // refused, and the speaker stays muted.
    host.send(json!({"v": 1, "type": "unmute", "participantId": speaker_id}))
        .await;
    assert!(
        wait_until(Duration::from_secs(5), || host
            .saw("error")
            .iter()
            .any(|e| e["code"] == "invalid-message"))
        .await,
        "an unmute naming someone else is refused"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        host.packets_from(&speaker_id),
        after_mute,
        "the speaker is still not heard"
    );
    // Only the speaker can unmute, and then their audio flows again.
    speaker.send(json!({"v": 1, "type": "unmute"})).await;
    assert!(
        wait_until(Duration::from_secs(10), || host.packets_from(&speaker_id)
            > after_mute + 20)
        .await,
        "audio flows again after the speaker unmutes"
    );
    node.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_stops_a_screen_share_and_only_a_host_can() {
    let mut node = TestNode::start().await;
    let host_token = node.token(ROOM, "u-host", Role::Host);
    let host = RustPeer::join(&node, ROOM, &host_token, PeerOptions::receive_only()).await;
    let load = bedside_tests::media::VideoLoad {
        bitrate_bps: 300_000,
        packet_bytes: 1_000,
    };
    let sharer_token = node.token(ROOM, "u-sharer", Role::Host);
    let mut sharer = RustPeer::join(&node, ROOM, &sharer_token, PeerOptions::screen(load)).await;
    sharer.start_video();
    let sharer_id = sharer.participant_id.clone();
    // Received tracks are keyed by their stream id: the sharer's screen is `<id>-screen`.
    let screen = format!("{sharer_id}-screen");
    assert!(
        wait_until(Duration::from_secs(20), || host.packets_from(&screen) > 20).await,
        "the screen reaches the host, as a screen: {:?}",
        host.publishers_heard()
    );
    let offers = host.saw("offer");
    assert!(
        offers.iter().any(|o| o["sdp"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("msid:{sharer_id}-screen "))),
        "the forwarded track is marked as a screen share: {offers:?}"
    );

    // A participant who is not a host cannot stop it.
    let (mut guest, reply) = connect(&node, "u-guest", Role::Participant).await;
    assert_eq!(reply["type"], "waiting");
    guest
        .send(json!({"v": 1, "type": "stop-share", "participantId": sharer_id}))
        .await;
    assert_eq!(guest.expect("error").await["code"], "not-host");

    host.send(json!({"v": 1, "type": "stop-share", "participantId": sharer_id}))
        .await;
    assert!(
        wait_until(Duration::from_secs(5), || !sharer
            .saw("share-stopped")
            .is_empty())
        .await,
        "the sharer is told"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = host.packets_from(&screen);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        host.packets_from(&screen),
        stopped_at,
        "nothing of the screen is forwarded once stopped"
    );
    let records = audited(&node, "stop-share");
    assert!(
        records.iter().any(|r| r["outcome"]["result"] == "success"),
        "the host's stop is on record: {records:?}"
    );
    assert!(
        records.iter().any(|r| r["outcome"]["result"] == "failure"
            && r["outcome"]["reason"] == "not-host"
            && r["actor"]["user"] == "u-guest"),
        "the guest's try is on record as refused: {records:?}"
    );
    node.shutdown(Duration::from_secs(2)).await;
}
