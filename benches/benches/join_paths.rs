//! Join to first frame in Chromium, by the path the media takes: UDP; ICE-TCP from a network
//! that drops every UDP datagram to the node; and TURN over TLS through the tenant's relay
//! (coturn, configured as the operator renders it) from a network that lets only TCP 443 to
//! the relay out (iptables in the benchmark's own network namespace). Two Chromiums with fake cameras; the clinician is in the room, the patient
//! presses Join, and the page itself times the press to the first decoded frame of the
//! clinician's video (getStats every 20 ms), so WebDriver round trips are not in the figure.
//!
//! Goal (issue 15): every path under 2 s at p50 on loopback.
//!
//! It also measures what relaying costs: coturn's CPU per relayed 1.5 Mbit/s stream, over a
//! call held through the relay for a while.
//!
//! Run: `cargo bench -p bedside-benches --bench join_paths` (root, Chromium, chromedriver and
//! coturn: `make test-deps`).

use std::time::Duration;

use bedside_benches::{print_table, write_docs_table};
use bedside_crds::join::Role;
use bedside_tests::browser::{self, Driver, IptablesRule, Netns};
use bedside_tests::media::TestNode;

const CALLS: usize = 10;

/// Waits for the page's Join button, then presses it and answers with the milliseconds to
/// the first decoded remote video frame and the transport's protocol.
const JOIN_TO_FIRST_FRAME: &str = r#"
const done = arguments[arguments.length - 1];
const started = performance.now();
const ready = () => {
  const join = document.getElementById('join');
  if (!join || join.disabled) {
    if (performance.now() - started > 10000) return done({error: 'no Join button in 10 s'});
    return setTimeout(ready, 10);
  }
  const t0 = performance.now();
  join.click();
  const poll = async () => {
    // null until the page has a peer connection
    const s = (await window.bedside.stats().catch(() => null)) || {};
    const decoded = (s.inbound || []).some((x) => x.kind === 'video' && x.framesDecoded > 0);
    const t = s.transport || {};
    const path = t.localType === 'relay' ? `turn-${t.relayProtocol}` : t.protocol;
    if (decoded) return done({ms: performance.now() - t0, protocol: path});
    if (performance.now() - t0 > 20000) return done({error: 'no frame in 20 s', stats: s});
    setTimeout(poll, 20);
  };
  poll();
};
ready();
"#;

async fn one_call(
    node: &TestNode,
    (clinician, patient): (&fantoccini::Client, &fantoccini::Client),
    room: &str,
) -> (Duration, String) {
    let link = |user: &str| node.link(room, &node.token(room, user, Role::Host));
    clinician
        .goto(&link("u-clinician"))
        .await
        .expect("open the clinician's link");
    let _ = clinician
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             document.getElementById('join').click(); done(null);",
            vec![],
        )
        .await;
    patient
        .goto(&link("u-patient"))
        .await
        .expect("open the patient's link");
    let answer = patient
        .execute_async(JOIN_TO_FIRST_FRAME, vec![])
        .await
        .expect("the page's timing");
    let ms = answer["ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("join to first frame in {room}: {answer}"));
    let protocol = answer["protocol"].as_str().unwrap_or("?").to_string();
    for page in [clinician, patient] {
        page.goto("about:blank").await.expect("leave the call");
    }
    (Duration::from_secs_f64(ms / 1000.0), protocol)
}

/// Ten timed calls (after a warm-up) that must take `path`; its row of the table.
async fn timed_calls(
    node: &TestNode,
    browsers: (&fantoccini::Client, &fantoccini::Client),
    path: &str,
) -> Vec<String> {
    let _ = one_call(node, browsers, &format!("warm-{path}")).await;
    let mut took = Vec::new();
    for call in 0..CALLS {
        let room = format!("bench-{path}-{call}");
        let (d, protocol) = one_call(node, browsers, &room).await;
        assert_eq!(protocol, path, "{room} took the {path} path");
        took.push(d);
    }
    took.sort();
    vec![
        path.to_string(),
        format!("{} ms", took[CALLS / 2].as_millis()),
        format!("{} ms", took[CALLS - 1].as_millis()),
        CALLS.to_string(),
    ]
}

/// coturn's CPU per relayed 1.5 Mbit/s stream, as a share of one core: a call held through the
/// relay, its CPU and the node's relayed bytes read over `WINDOW`.
async fn relay_cpu(
    node: &TestNode,
    coturn: &bedside_tests::turn::Coturn,
    (clinician, patient): (&fantoccini::Client, &fantoccini::Client),
) -> (f64, f64) {
    const WINDOW: Duration = Duration::from_secs(15);
    for (page, user) in [(clinician, "u-clinician"), (patient, "u-patient")] {
        let link = node.link("relay-cpu", &node.token("relay-cpu", user, Role::Host));
        page.goto(&link).await.expect("open the link");
        let _ = page
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 document.getElementById('join').click(); done(null);",
                vec![],
            )
            .await;
    }
    // Past the bandwidth estimate's ramp, onto the top layer.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let relayed = || async { node.metric("bedside_media_relayed_bytes_total").await };
    let cpu = || bedside_tests::media::cpu_secs(coturn.pid()).unwrap_or(0.0);
    let (bytes_before, cpu_before) = (relayed().await, cpu());
    tokio::time::sleep(WINDOW).await;
    let (bytes_after, cpu_after) = (relayed().await, cpu());
    for page in [clinician, patient] {
        page.goto("about:blank").await.expect("leave the call");
    }
    let mbits = (bytes_after - bytes_before) * 8.0 / WINDOW.as_secs_f64() / 1e6;
    let core_share = (cpu_after - cpu_before) / WINDOW.as_secs_f64();
    let streams = mbits / 1.5;
    assert!(
        mbits > 0.1,
        "the call went through the relay: {mbits:.2} Mbit/s"
    );
    (mbits, 100.0 * core_share / streams)
}

fn main() {
    bedside_benches::log_figures_only();
    if let Some(why) = browser::unavailable().or_else(bedside_tests::turn::unavailable) {
        println!("join_paths: skipped: {why}");
        return;
    }
    let netns = Netns::create();
    netns.run(|| async {
        let node = TestNode::start().await;
        let media = node.running.as_ref().expect("an in-process node").media;
        let driver = Driver::start().await;
        let (clinician, patient) = (driver.browser().await, driver.browser().await);
        let browsers = (&clinician, &patient);
        let mut rows = vec![vec![
            "path".to_string(),
            "p50".into(),
            "max".into(),
            "calls".into(),
        ]];
        rows.push(timed_calls(&node, browsers, "udp").await);
        {
            let port = media.port().to_string();
            let _dropped =
                IptablesRule::insert(&["INPUT", "-p", "udp", "--dport", &port, "-j", "DROP"]);
            rows.push(timed_calls(&node, browsers, "tcp").await);
        }
        // The relay's node: the same node settings, plus the tenant's relay.
        let dir = tempfile::tempdir().expect("tempdir");
        let (coturn, settings) = bedside_tests::turn::start_for_loopback_node(dir.path()).await;
        let relayed = TestNode::start_with(|c| c.network.relay = Some(settings)).await;
        let port = relayed
            .running
            .as_ref()
            .expect("an in-process node")
            .media
            .port()
            .to_string();
        let relay = bedside_tests::turn::relay_ip().to_string();
        let _only_443 = [
            &["INPUT", "-p", "udp", "--dport", &port, "!", "-s", &relay, "-j", "DROP"][..],
            &["INPUT", "-p", "tcp", "--dport", &port, "-j", "DROP"],
            &["INPUT", "-p", "udp", "-d", &relay, "--dport", "3478", "-j", "DROP"],
        ]
        .map(IptablesRule::insert);
        rows.push(timed_calls(&relayed, browsers, "turn-tls").await);
        let (mbits, per_stream) = relay_cpu(&relayed, &coturn, browsers).await;
        print_table(
            "Join to first frame in Chromium, by media path (loopback)",
            &rows,
        );
        println!(
            "relay: {mbits:.2} Mbit/s relayed, coturn {per_stream:.2}% of a core per 1.5 Mbit/s stream"
        );
        let mut table = String::from("| path | p50 | max | calls |\n|---|---|---|---|\n");
        for row in &rows[1..] {
            table.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        table.push_str(&format!(
            "\nRelay cost: coturn used {per_stream:.2}% of one core per relayed 1.5 Mbit/s stream \
             ({mbits:.2} Mbit/s relayed over 15 s of a two-person call).\n"
        ));
        write_docs_table("join_paths", &table);
        for b in [clinician, patient] {
            let _ = b.close().await;
        }
    });
}
