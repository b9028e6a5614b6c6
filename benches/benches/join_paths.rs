//! Join to first frame in Chromium, by the path the media takes: UDP, and ICE-TCP from a
//! network that drops every UDP datagram to the node (iptables in the benchmark's own network
//! namespace). Two Chromiums with fake cameras; the clinician is in the room, the patient
//! presses Join, and the page itself times the press to the first decoded frame of the
//! clinician's video (getStats every 20 ms), so WebDriver round trips are not in the figure.
//!
//! Goal (issue 15): every path under 2 s at p50 on loopback.
//!
//! Run: `cargo bench -p bedside-benches --bench join_paths` (root, Chromium and chromedriver:
//! `make test-deps`).

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
    if (decoded) return done({ms: performance.now() - t0, protocol: s.transport && s.transport.protocol});
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

fn main() {
    if let Some(why) = browser::unavailable() {
        println!("join_paths: skipped: {why}");
        return;
    }
    let netns = Netns::create();
    netns.run(|| async {
        let node = TestNode::start().await;
        let media = node.running.as_ref().expect("an in-process node").media;
        let driver = Driver::start().await;
        let (clinician, patient) = (driver.browser().await, driver.browser().await);
        let mut rows = vec![vec![
            "path".to_string(),
            "p50".into(),
            "max".into(),
            "calls".into(),
        ]];
        for path in ["udp", "tcp"] {
            let port = media.port().to_string();
            let _dropped = (path == "tcp").then(|| {
                IptablesRule::insert(&["INPUT", "-p", "udp", "--dport", &port, "-j", "DROP"])
            });
            // One call first to warm the browsers up, not counted.
            let _ = one_call(&node, (&clinician, &patient), &format!("warm-{path}")).await;
            let mut took = Vec::new();
            for call in 0..CALLS {
                let room = format!("bench-{path}-{call}");
                let (d, protocol) = one_call(&node, (&clinician, &patient), &room).await;
                assert_eq!(protocol, path, "{room} took the {path} path");
                took.push(d);
            }
            took.sort();
            rows.push(vec![
                path.to_string(),
                format!("{} ms", took[CALLS / 2].as_millis()),
                format!("{} ms", took[CALLS - 1].as_millis()),
                CALLS.to_string(),
            ]);
        }
        print_table(
            "Join to first frame in Chromium, by media path (loopback)",
            &rows,
        );
        let mut table = String::from("| path | p50 | max | calls |\n|---|---|---|---|\n");
        for row in &rows[1..] {
            table.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        write_docs_table("join_paths", &table);
        for b in [clinician, patient] {
            let _ = b.close().await;
        }
    });
}
