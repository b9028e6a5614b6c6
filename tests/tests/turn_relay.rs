//! The tenant's TURN relay (coturn, configured by the operator's renderer) is no open relay:
//! it serves the credentials a media node hands out with `joined`, and refuses an expired one,
//! one derived from another tenant's secret, and relaying toward anything but the tenant's
//! media addresses.

use std::net::SocketAddr;

use bedside_crds::join::Role;
use bedside_media_node::relay::credential;
use bedside_tests::browser::Netns;
use bedside_tests::media::{Signal, TestNode, now_secs};
use bedside_tests::turn::{self, TurnClient};

#[test]
fn the_relay_takes_only_live_credentials_of_its_tenant_and_relays_only_to_its_media_nodes() {
    if !turn::require_or_skip() {
        return;
    }
    let netns = Netns::create();
    netns.run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (coturn, settings) = turn::start_for_loopback_node(dir.path()).await;
        let node = TestNode::start_with(|c| c.network.relay = Some(settings.clone())).await;
        let media = node.running.as_ref().expect("in-process node").media;
        let server = coturn.udp_address();

        // What a browser gets with `joined`: the relay's URLs and a credential for this join.
        let mut signal = Signal::connect(&node).await;
        let joined = signal
            .join("visit-relay", &node.token("visit-relay", "u-1", Role::Host))
            .await;
        assert_eq!(joined["type"], "joined", "{joined}");
        let ice = &joined["iceServers"][0];
        assert_eq!(ice["urls"][0], settings.urls[0], "{joined}");
        let username = ice["username"].as_str().expect("a username");
        let password = ice["credential"].as_str().expect("a credential");
        let (expiry, id) = username.split_once(':').expect("EXPIRY:ID");
        let expiry: u64 = expiry.parse().expect("a timestamp");
        assert!(expiry > now_secs(), "expires in the future: {username}");
        assert_eq!(
            id, joined["participantId"],
            "the opaque participant id, no name"
        );

        let mut browser = TurnClient::new(server, username, password);
        let relayed = browser
            .allocate()
            .unwrap_or_else(|e| panic!("the node's credential allocates: {e}\n{}", coturn.log()));
        browser
            .permit(relayed, media)
            .unwrap_or_else(|e| panic!("the media node is a permitted peer: {e}"));
        // Anything else on this host, on another address: refused (the port-level rule is the
        // tenant's NetworkPolicy, which lets the relay reach only the media port).
        for elsewhere in ["127.0.0.5:3478", "127.0.0.3:443", "10.0.0.1:22"] {
            let peer: SocketAddr = elsewhere.parse().expect("addr");
            let refused = browser.permit(relayed, peer).expect_err(elsewhere);
            assert!(refused.contains("403"), "{elsewhere}: {refused}");
        }

        let secret = std::fs::read(&settings.shared_secret_file).expect("secret");
        let refusals = [
            (
                "an expired credential",
                credential(&secret, now_secs() - 60, "p-old"),
            ),
            (
                "a credential whose expiry was moved",
                (format!("{}:{id}", expiry + 3600), password.to_string()),
            ),
            (
                "another tenant's credential",
                credential(&[7u8; 32], now_secs() + 600, "p-other"),
            ),
        ];
        for (what, (username, password)) in refusals {
            let refused = TurnClient::new(server, &username, &password)
                .allocate()
                .expect_err(what);
            assert!(refused.contains("401"), "{what}: {refused}");
        }
        signal.close().await;
    });
}
