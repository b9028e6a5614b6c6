//! The tenant's TURN relay (coturn): its configuration file, rendered from what the tenant's
//! media nodes need. One definition, used by the relay the operator runs and by the tests that
//! start a real coturn from it.
//!
//! What keeps it from being an open relay: only credentials derived from the tenant's shared
//! secret (`use-auth-secret`, per join, expiring with the join token), only UDP allocations, and
//! only the tenant's media addresses as peers (every other address denied). The secret itself is
//! never in the file: coturn takes it as `--static-auth-secret`, from the Secret.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;

/// What shapes one tenant's relay.
#[derive(Debug, Clone)]
pub struct RelayServer {
    /// The tenant's name: coturn's realm, in every credential check.
    pub realm: String,
    /// Where coturn listens and relays from; `None`: every address of the pod.
    pub listen: Option<IpAddr>,
    /// TURN over TLS (the last resort of networks that let only TCP 443 out).
    pub tls_port: u16,
    /// TURN over UDP and plain TCP.
    pub port: u16,
    /// The UDP ports relayed media leaves from.
    pub relay_ports: RangeInclusive<u16>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The tenant's media addresses: the only peers the relay forwards to.
    pub peers: Vec<IpAddr>,
}

/// Modern TLS only, AES-GCM suites first (the same bar as the node's signaling).
const CIPHERS: &str = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256";

/// coturn's `turnserver.conf` for the relay.
pub fn coturn_config(relay: &RelayServer) -> String {
    let mut conf = format!(
        "# The TURN relay of tenant {realm}, rendered by bedside (docs/media-node.md#turn-relay).\n\
         realm={realm}\n\
         use-auth-secret\n\
         listening-port={port}\n\
         tls-listening-port={tls}\n\
         min-port={min}\n\
         max-port={max}\n\
         cert={cert}\n\
         pkey={key}\n\
         cipher-list=\"{CIPHERS}\"\n\
         no-tlsv1\n\
         no-tlsv1_1\n\
         no-dtls\n\
         no-tcp-relay\n\
         no-multicast-peers\n\
         no-cli\n\
         no-software-attribute\n\
         fingerprint\n\
         log-file=stdout\n\
         simple-log\n\
         denied-peer-ip=0.0.0.0-255.255.255.255\n\
         denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\n",
        realm = relay.realm,
        port = relay.port,
        tls = relay.tls_port,
        min = relay.relay_ports.start(),
        max = relay.relay_ports.end(),
        cert = relay.cert_file.display(),
        key = relay.key_file.display(),
    );
    if let Some(ip) = relay.listen {
        let _ = writeln!(conf, "listening-ip={ip}\nrelay-ip={ip}");
    }
    for peer in &relay.peers {
        let _ = writeln!(conf, "allowed-peer-ip={peer}");
    }
    // coturn refuses loopback peers outright unless told; only a node on loopback (a test, a
    // laptop) is one.
    if relay.peers.iter().any(IpAddr::is_loopback) {
        conf.push_str("allow-loopback-peers\n");
    }
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(peers: &[&str]) -> RelayServer {
        RelayServer {
            realm: "mercy".into(),
            listen: None,
            tls_port: 443,
            port: 3478,
            relay_ports: 49152..=49407,
            cert_file: "/etc/bedside/tls/tls.crt".into(),
            key_file: "/etc/bedside/tls/tls.key".into(),
            peers: peers.iter().map(|p| p.parse().expect("ip")).collect(),
        }
    }

    #[test]
    fn every_peer_is_denied_but_the_tenants_media_addresses() {
        let conf = coturn_config(&relay(&["203.0.113.7", "203.0.113.8"]));
        let lines: Vec<&str> = conf.lines().collect();
        for line in [
            "realm=mercy",
            "use-auth-secret",
            "tls-listening-port=443",
            "no-tcp-relay",
            "denied-peer-ip=0.0.0.0-255.255.255.255",
            "allowed-peer-ip=203.0.113.7",
            "allowed-peer-ip=203.0.113.8",
        ] {
            assert!(lines.contains(&line), "{line} in\n{conf}");
        }
        assert!(!conf.contains("allow-loopback-peers"), "{conf}");
        assert!(
            !conf.contains("static-auth-secret"),
            "the secret stays out of the file"
        );
    }

    #[test]
    fn a_node_on_loopback_is_the_only_case_that_allows_loopback_peers() {
        let conf = coturn_config(&relay(&["127.0.0.1"]));
        assert!(conf.lines().any(|l| l == "allow-loopback-peers"), "{conf}");
    }
}
