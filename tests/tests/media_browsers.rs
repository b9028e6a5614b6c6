//! Real browsers through the served web client: three headless Chromiums with fake cameras
//! hold a call through the node; each decodes video from both others over AEAD_AES_256_GCM;
//! one leaves and the others are told; a browser with a bad token is refused.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bedside_crds::join::Role;
use bedside_crds::visit;
use bedside_tests::browser::{self, Driver, Netns};
use bedside_tests::media::{TestNode, sign, wait_until};
use bedside_tests::picture::{self, top_sent, top_sent_in};
use fantoccini::{Client, Locator};
use serde_json::Value;

/// The link a clinic sends: the room in the query; token and passcode in the fragment.
fn link(node: &TestNode, room: &str, token: &str) -> String {
    node.link(room, token)
}

async fn open(client: &Client, node: &TestNode, room: &str, token: &str) {
    open_url(client, &link(node, room, token), None).await;
}

/// Opens the client at `url`, types `name` if given, and presses Join.
async fn open_url(client: &Client, url: &str, name: Option<&str>) {
    client.goto(url).await.expect("open the web client");
    if let Some(name) = name {
        client
            .execute(
                "document.getElementById('name').value = arguments[0];",
                vec![Value::String(name.to_string())],
            )
            .await
            .expect("type a name");
    }
    click(client, "#join").await;
}

/// Runs `body` inside a network namespace of its own (only `lo`), with a media node and
/// chromedriver started there; skips (or fails, with `BEDSIDE_REQUIRE_BROWSERS=1`) where the
/// browsers cannot run.
fn with_a_node_and_browsers(body: impl AsyncFnOnce(&TestNode, &Driver) + Send + 'static) {
    if !browser::require_or_skip() {
        return;
    }
    let netns = Netns::create();
    netns.run(|| async move {
        let node = TestNode::start().await;
        let driver = Driver::start().await;
        body(&node, &driver).await;
    });
}

/// Video frames decoded per inbound video stream, and the transport's ciphers.
fn decoded_video(stats: &Value) -> Vec<u64> {
    stats["inbound"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["kind"] == "video")
                .map(|s| s["framesDecoded"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_for<F>(within: Duration, what: &str, mut check: F)
where
    F: AsyncFnMut() -> Result<(), String>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(()) => return,
            Err(last) if start.elapsed() > within => {
                panic!("{what}: not within {within:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Waits until each browser has decoded more than 30 frames of another's video.
async fn each_decodes_video(browsers: &[Client], what: &str) {
    for (i, b) in browsers.iter().enumerate() {
        wait_for(
            Duration::from_secs(60),
            &format!("browser {i} decodes {what}"),
            async || {
                let stats = browser::stats(b).await;
                if decoded_video(&stats).iter().any(|f| *f > 30) {
                    Ok(())
                } else {
                    Err(format!("{stats} {}", browser::state(b).await))
                }
            },
        )
        .await;
    }
}

#[test]
fn three_browsers_hold_an_encrypted_call_and_see_each_other_leave() {
    if !browser::require_or_skip() {
        return;
    }
    let netns = Netns::create();
    netns.run(|| async {
        let mut node = TestNode::start().await;
        let driver = Driver::start().await;
        let mut browsers = Vec::new();
        for user in ["u-clinician", "u-patient", "u-interpreter"] {
            let client = driver.browser().await;
            let token = node.token("visit-1", user, Role::Host);
            open(&client, &node, "visit-1", &token).await;
            browsers.push(client);
        }

        // Each browser decodes video from both others, and frames keep coming.
        for (i, b) in browsers.iter().enumerate() {
            wait_for(
                Duration::from_secs(60),
                &format!("browser {i} decodes two videos"),
                async || {
                    let stats = browser::stats(b).await;
                    let decoded = decoded_video(&stats);
                    if decoded.iter().filter(|f| **f > 10).count() >= 2 {
                        Ok(())
                    } else {
                        Err(stats.to_string())
                    }
                },
            )
            .await;
        }
        let before: Vec<u64> = decoded_video(&browser::stats(&browsers[0]).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after: Vec<u64> = decoded_video(&browser::stats(&browsers[0]).await);
        assert!(
            after.iter().sum::<u64>() > before.iter().sum::<u64>() + 10,
            "video keeps flowing: {before:?} -> {after:?}"
        );

        // The browser's own view of the crypto: SRTP AEAD_AES_256_GCM, DTLS with ECDHE + AES-GCM.
        for b in &browsers {
            let stats = browser::stats(b).await;
            let transport = &stats["transport"];
            assert_eq!(browser::srtp_profile(&stats), "AEAD_AES_256_GCM", "{stats}");
            let dtls = transport["dtlsCipher"].as_str().unwrap_or_default();
            assert!(
                dtls.contains("ECDHE") && dtls.contains("AES") && dtls.contains("GCM"),
                "{dtls}"
            );
            // Where UDP works, the call takes it (the TCP candidate ranks lower).
            assert_eq!(transport["protocol"], "udp", "{stats}");
            let state = browser::state(b).await;
            assert_eq!(state["mediaConnected"], true, "{state}");
            assert_eq!(state["mediaPath"], "udp", "{state}");
            assert!(
                state["status"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("AEAD_AES_256_GCM")
            );
        }
        // The node's view agrees: three connections under the policy, none refused.
        assert_eq!(node.metric("bedside_media_connections_total").await, 3.0);
        assert_eq!(
            node.metric_where(
                "bedside_media_connection_failures_total",
                "reason=\"encryption_policy\""
            )
            .await,
            0.0
        );

        // The third leaves; the other two are told and drop its tile.
        let leaver = browser::state(&browsers[2]).await["participantId"]
            .as_str()
            .expect("the third browser knows its participant id")
            .to_string();
        let tile = format!(".tile[data-participant='{leaver}']");
        for b in &browsers[..2] {
            let tiles = b.find_all(Locator::Css(&tile)).await.expect("WebDriver");
            assert_eq!(
                tiles.len(),
                1,
                "the others show the third's tile before it leaves"
            );
        }
        // On loopback every tile says the connection is good, from the browser's own figures.
        for b in &browsers {
            wait_for(Duration::from_secs(20), "good connections shown", async || {
                let state = browser::state(b).await;
                let shown = run_js(
                    b,
                    "return Array.from(document.querySelectorAll('.tile .quality')).map(q => q.dataset.level);",
                )
                .await;
                let good = state["quality"].as_object().is_some_and(|q| {
                    q.len() == 2 && q.values().all(|v| v == "good")
                });
                if good && shown == serde_json::json!(["good", "good"]) {
                    Ok(())
                } else {
                    Err(format!("{} shown {shown}", state["quality"]))
                }
            })
            .await;
        }
        // Leave asks first; Stay keeps the visit, Leave leaves.
        click(&browsers[2], "#leave").await;
        let asked = run_js(
            &browsers[2],
            "return document.getElementById('leave-confirm').open;",
        )
        .await;
        assert_eq!(asked, true, "Leave asks before leaving");
        click(&browsers[2], "#leave-no").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            browser::state(&browsers[2]).await["closed"],
            false,
            "Stay stays"
        );
        click(&browsers[2], "#leave").await;
        click(&browsers[2], "#leave-yes").await;
        for b in &browsers[..2] {
            wait_for(Duration::from_secs(10), "the others are told", async || {
                let state = browser::state(b).await;
                let still_listed = state["participants"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|id| id == leaver.as_str()));
                let told = state["events"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|t| t == "participant-left"));
                if told && !still_listed {
                    Ok(())
                } else {
                    Err(state.to_string())
                }
            })
            .await;
            let tiles = b.find_all(Locator::Css(&tile)).await.expect("WebDriver");
            assert!(tiles.is_empty(), "the leaver's video tile is gone");
        }

        // A browser with a forged token is refused and says why.
        let intruder = driver.browser().await;
        let forged = sign(&node.tenant, &[9u8; 32], "visit-1", "u-x", Role::Host, 600);
        open(&intruder, &node, "visit-1", &forged).await;
        wait_for(
            Duration::from_secs(10),
            "the bad token is refused",
            async || {
                let state = browser::state(&intruder).await;
                let refused = state["errors"].as_array().is_some_and(|e| {
                    e.iter()
                        .any(|m| m.as_str().unwrap_or_default().starts_with("token-refused"))
                });
                if refused
                    && state["status"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("not valid")
                {
                    Ok(())
                } else {
                    Err(state.to_string())
                }
            },
        )
        .await;
        assert_eq!(node.metric("bedside_media_participants").await, 2.0);

        // The link's secrets leave the address bar and history once read; a reload of the tab
        // still rejoins. The page does not call hop-by-hop encryption "end to end".
        let page = |b: &Client| {
            let b = b.clone();
            async move {
                b.execute(
                    "return {href: location.href, length: history.length, \
                     notice: document.getElementById('notice').textContent};",
                    vec![],
                )
                .await
                .expect("read the page")
            }
        };
        let seen = page(&browsers[0]).await;
        let href = seen["href"].as_str().unwrap_or_default();
        assert!(!href.contains('#') && !href.contains("token"), "{seen}");
        let notice = seen["notice"].as_str().unwrap_or_default();
        assert!(
            notice.contains("AES-256") && !notice.contains("end to end"),
            "{seen}"
        );
        browsers[0].refresh().await.expect("reload");
        click(&browsers[0], "#join").await;
        wait_for(
            Duration::from_secs(30),
            "the reloaded tab rejoins",
            async || {
                let state = browser::state(&browsers[0]).await;
                if state["mediaConnected"] == true {
                    Ok(())
                } else {
                    Err(state.to_string())
                }
            },
        )
        .await;

        // A token in the query string (where servers and history keep it) is never used.
        let careless = driver.browser().await;
        let token = node.token("visit-1", "u-careless", Role::Host);
        let url = format!("{}/?room=visit-1&token={token}", node.https_base());
        careless.goto(&url).await.expect("open");
        click(&careless, "#join").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let state = browser::state(&careless).await;
        assert!(state["participantId"].is_null(), "{state}");
        assert!(
            state["status"]
                .as_str()
                .unwrap_or_default()
                .contains("not safe"),
            "{state}"
        );

        for b in browsers {
            let _ = b.close().await;
        }
        let _ = intruder.close().await;
        let _ = careless.close().await;
        node.shutdown(Duration::from_secs(2)).await;
    });
}

/// A visit's media node dies (killed: no goodbye) and its replacement comes up at the same
/// address, as a pod's does: both browsers join again by themselves, with the link and
/// passcode they had, and decode each other's video again; nobody clicks anything.
/// Hospital guest Wi-Fi and many clinic firewalls let no UDP through. With every UDP packet
/// to the node's media port dropped (iptables, in this test's own namespace), two browsers
/// still hold an encrypted call: ICE-TCP on the same port, AES-256-GCM as over UDP.
#[test]
fn browsers_on_a_network_that_blocks_udp_hold_the_call_over_ice_tcp() {
    if !browser::require_or_skip() {
        return;
    }
    let netns = Netns::create();
    netns.run(|| async {
        let node = TestNode::start().await;
        let media = node.running.as_ref().expect("an in-process node").media;
        let port = media.port().to_string();
        // This thread runs inside the test's namespace, and so does what it starts.
        let _blocked =
            browser::IptablesRule::insert(&["INPUT", "-p", "udp", "--dport", &port, "-j", "DROP"]);
        let driver = Driver::start().await;
        let mut browsers = Vec::new();
        // Both hosts: no waiting room to admit from in this test.
        for (user, role) in [("u-clinician", Role::Host), ("u-patient", Role::Host)] {
            let client = driver.browser().await;
            let token = node.token("visit-tcp", user, role);
            open(&client, &node, "visit-tcp", &token).await;
            browsers.push(client);
        }
        each_decodes_video(&browsers, "video over TCP").await;
        for b in &browsers {
            let stats = browser::stats(b).await;
            let transport = &stats["transport"];
            assert_eq!(transport["protocol"], "tcp", "{stats}");
            assert_eq!(browser::srtp_profile(&stats), "AEAD_AES_256_GCM", "{stats}");
            let state = browser::state(b).await;
            assert_eq!(state["mediaPath"], "tcp", "{state}");
            let status = state["status"].as_str().unwrap_or_default();
            assert!(status.contains("over TCP"), "the page says so: {status}");
        }
        let by_path = |path: &'static str| {
            node.metric_where(
                "bedside_media_sessions_by_path_total",
                match path {
                    "tcp" => "path=\"tcp\"",
                    _ => "path=\"udp\"",
                },
            )
        };
        assert_eq!(
            by_path("tcp").await,
            2.0,
            "the node counts two TCP sessions"
        );
        assert_eq!(by_path("udp").await, 0.0);
        assert!(node.metric("bedside_media_ice_tcp_connections").await >= 2.0);
        // The audit trail says how each participant's media went.
        let connected: Vec<serde_json::Value> = node
            .audit_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["action"] == "media-connected")
            .collect();
        let users: BTreeSet<&str> = connected
            .iter()
            .filter(|r| r["place"]["mediaPath"] == "tcp")
            .filter_map(|r| r["actor"]["user"].as_str())
            .collect();
        assert_eq!(
            users,
            BTreeSet::from(["u-clinician", "u-patient"]),
            "{connected:?}"
        );
    });
}

/// How much audio energy arrived from the others over `window` (0 when they are silent).
async fn heard_over(client: &Client, window: Duration) -> f64 {
    let energy = async || {
        browser::stats(client).await["inbound"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["kind"] == "audio")
            .filter_map(|s| s["totalAudioEnergy"].as_f64())
            .sum::<f64>()
    };
    let before = energy().await;
    tokio::time::sleep(window).await;
    energy().await - before
}

/// The mean brightness (0-255) of the other participant's video as this page shows it.
async fn brightness_of_the_other(client: &Client) -> f64 {
    client
        .execute(
            "const v = document.querySelector('.tile:not([data-participant^=\"self\"]) video');\
             if (!v || !v.videoWidth) return -1;\
             const c = document.createElement('canvas'); c.width = 64; c.height = 36;\
             const g = c.getContext('2d'); g.drawImage(v, 0, 0, 64, 36);\
             const d = g.getImageData(0, 0, 64, 36).data; let sum = 0;\
             for (let i = 0; i < d.length; i += 4) sum += (d[i] + d[i + 1] + d[i + 2]) / 3;\
             return sum / (d.length / 4);",
            vec![],
        )
        .await
        .ok()
        .and_then(|v| v.as_f64())
        .unwrap_or(-1.0)
}

#[test]
fn a_participant_mutes_their_microphone_and_turns_off_their_camera_and_the_other_side_notices() {
    with_a_node_and_browsers(async |node, driver| {
        let mut browsers = Vec::new();
        for user in ["u-patient", "u-clinician"] {
            let client = driver.browser().await;
            let token = node.token("visit-self", user, Role::Host);
            open(&client, node, "visit-self", &token).await;
            browsers.push(client);
        }
        each_decodes_video(&browsers, "the other's camera").await;
        let (me, other) = (&browsers[0], &browsers[1]);
        let window = Duration::from_secs(2);
        assert!(heard_over(other, window).await > 0.0, "heard before muting");
        click(me, "#mic").await;
        let state = browser::state(me).await;
        assert_eq!(state["micOn"], false, "{state}");
        // Silence within a few seconds (what was already on its way still plays out on a
        // loaded machine), and it lasts.
        wait_for(
            Duration::from_secs(10),
            "silence while I am muted",
            async || {
                let muted = heard_over(other, window).await;
                if muted < 1e-6 {
                    Ok(())
                } else {
                    Err(format!("{muted}"))
                }
            },
        )
        .await;
        let muted = heard_over(other, window).await;
        assert!(muted < 1e-6, "silence while I am muted: {muted}");
        click(me, "#mic").await;
        wait_for(
            Duration::from_secs(10),
            "heard again after unmuting",
            async || {
                let heard = heard_over(other, window).await;
                if heard > 0.0 {
                    Ok(())
                } else {
                    Err(format!("{heard}"))
                }
            },
        )
        .await;
        // The camera: the other side sees my picture, then black, then my picture again.
        let seen = async |what: &str, check: fn(f64) -> bool| {
            wait_for(Duration::from_secs(10), what, async || {
                let b = brightness_of_the_other(other).await;
                if check(b) {
                    Ok(())
                } else {
                    Err(format!("brightness {b}"))
                }
            })
            .await;
        };
        seen("my picture", |b| b > 20.0).await;
        click(me, "#camera").await;
        assert_eq!(browser::state(me).await["cameraOn"], false);
        seen("black while my camera is off", |b| (0.0..5.0).contains(&b)).await;
        click(me, "#camera").await;
        seen("my picture again", |b| b > 20.0).await;
        // The call went on throughout: neither side reconnected.
        for b in &browsers {
            assert_eq!(browser::state(b).await["reconnects"], 0);
        }
    });
}

#[test]
fn browsers_rejoin_by_themselves_when_their_media_node_dies() {
    if !browser::require_or_skip() {
        return;
    }
    let netns = Netns::create();
    netns.run(|| async {
        let binary = bedside_tests::media::workspace_binary("bedside-media-node");
        let dir = tempfile::tempdir().expect("tempdir");
        let material = bedside_media_node::node::NodeSetup::generated(
            bedside_media_node::config::dev_default(),
            "node-dies".into(),
        )
        .expect("node material");
        let mut node = TestNode::spawn_in(&binary, dir.path(), &material, "warn", |_| {}).await;
        let driver = Driver::start().await;
        let mut browsers = Vec::new();
        for user in ["u-clinician", "u-patient"] {
            let client = driver.browser().await;
            let token = node.token("visit-rejoin", user, Role::Host);
            open(&client, &node, "visit-rejoin", &token).await;
            browsers.push(client);
        }
        let decodes_the_other = async |b: &Client, above: u64| -> Result<(), String> {
            let stats = browser::stats(b).await;
            if decoded_video(&stats).iter().any(|f| *f > above) {
                Ok(())
            } else {
                Err(stats.to_string())
            }
        };
        for b in &browsers {
            wait_for(Duration::from_secs(60), "video before", async || {
                decodes_the_other(b, 10).await
            })
            .await;
        }

        // Killed, and started again on the same ports with the same keys.
        let signaling = node.signaling;
        let media = bedside_media_node::config::load(&dir.path().join("node.yaml"))
            .expect("the node's config")
            .network
            .media_listen;
        node.kill();
        let killed = Instant::now();
        let _node = TestNode::spawn_in(&binary, dir.path(), &material, "warn", |c| {
            c.network.signaling_listen = signaling;
            c.network.media_listen = media;
            c.network.advertised_media_address = Some(media);
        })
        .await;
        for b in &browsers {
            wait_for(
                Duration::from_secs(30),
                "video again, without a click",
                async || {
                    let state = browser::state(b).await;
                    let joins = state["events"]
                        .as_array()
                        .map(|e| e.iter().filter(|t| *t == "joined").count())
                        .unwrap_or(0);
                    if joins < 2 || state["mediaConnected"] != true {
                        return Err(state.to_string());
                    }
                    decodes_the_other(b, 10).await
                },
            )
            .await;
        }
        println!(
            "browsers back in the visit {:?} after the node died",
            killed.elapsed()
        );
        for b in browsers {
            let state = browser::state(&b).await;
            assert_eq!(state["closed"], false, "{state}");
            let _ = b.close().await;
        }
    });
}

#[test]
fn aiortc_and_a_browser_exchange_video_through_the_node() {
    if !browser::require_or_skip() {
        return;
    }
    if !bedside_tests::run_or_skip(
        "aiortc",
        bedside_tests::aiortc::unavailable(),
        "BEDSIDE_REQUIRE_BROWSERS",
    ) {
        return;
    }
    let netns = Netns::create();
    netns.run(|| async {
        let mut node = TestNode::start().await;
        let driver = Driver::start().await;
        let chromium = driver.browser().await;
        let token = node.token("interop", "u-browser", Role::Host);
        open(&chromium, &node, "interop", &token).await;
        let token = node.token("interop", "u-aiortc", Role::Host);
        let aiortc = bedside_tests::aiortc::AiortcPeer::join(&node, "interop", &token).await;

        wait_for(
            Duration::from_secs(60),
            "Chromium decodes aiortc's video",
            async || {
                let stats = browser::stats(&chromium).await;
                if decoded_video(&stats).iter().any(|f| *f > 10) {
                    Ok(())
                } else {
                    Err(stats.to_string())
                }
            },
        )
        .await;
        wait_for(
            Duration::from_secs(60),
            "aiortc decodes Chromium's video",
            async || {
                let frames = aiortc.video_frames();
                if frames > 10 {
                    Ok(())
                } else {
                    Err(format!(
                        "{frames} frames; {}",
                        aiortc
                            .stats
                            .lock()
                            .map(|s| s.to_string())
                            .unwrap_or_default()
                    ))
                }
            },
        )
        .await;
        assert_eq!(node.metric("bedside_media_connections_total").await, 2.0);

        aiortc.stop().await;
        let _ = chromium.close().await;
        node.shutdown(Duration::from_secs(2)).await;
    });
}

/// Every label value on every series of a /metrics page.
fn label_values(metrics: &str) -> Vec<String> {
    let mut values = Vec::new();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, _)) = rest.rsplit_once('}') else {
            continue;
        };
        for pair in labels.split(',') {
            if let Some((_, v)) = pair.split_once('=') {
                values.push(v.trim_matches('"').to_string());
            }
        }
    }
    values
}

#[test]
fn prometheus_scrapes_plausible_quality_series_during_a_browser_call() {
    if !browser::require_or_skip() {
        return;
    }
    if !bedside_tests::run_or_skip(
        "Prometheus",
        bedside_tests::prometheus::unavailable(),
        "BEDSIDE_REQUIRE_TOOLS",
    ) {
        return;
    }
    let netns = Netns::create();
    netns.run(|| async {
        let mut node = TestNode::start().await;
        let prometheus =
            bedside_tests::prometheus::Prometheus::start(&[node.metrics_addr]).await;
        let driver = Driver::start().await;
        let users = ["u-7f3a9c", "u-b41e02"];
        let mut browsers = Vec::new();
        for user in users {
            let client = driver.browser().await;
            let token = node.token("visit-42", user, Role::Host);
            open(&client, &node, "visit-42", &token).await;
            browsers.push(client);
        }
        for b in &browsers {
            wait_for(Duration::from_secs(60), "video decodes", async || {
                let stats = browser::stats(b).await;
                if decoded_video(&stats).iter().any(|f| *f > 10) {
                    Ok(())
                } else {
                    Err(stats.to_string())
                }
            })
            .await;
        }

        // Prometheus has scraped the call: the series SREs alert on exist with plausible values.
        wait_for(Duration::from_secs(30), "Prometheus sees the call", async || {
            let participants = prometheus.value("bedside_media_participants").await;
            let rtt_samples = prometheus.value("bedside_media_rtt_seconds_count").await;
            if participants == Some(2.0) && rtt_samples.is_some_and(|n| n >= 4.0) {
                Ok(())
            } else {
                Err(format!("participants {participants:?}, rtt samples {rtt_samples:?}"))
            }
        })
        .await;
        let q = async |expr: &str| {
            prometheus
                .value(expr)
                .await
                .unwrap_or_else(|| panic!("no single series for {expr}"))
        };
        assert_eq!(q("bedside_media_rooms").await, 1.0);
        // Bytes keep rising both ways (no fixed rate: CI machines are busy, browsers adapt).
        for direction in ["sent", "received"] {
            let expr = format!(r#"bedside_media_bytes_total{{direction="{direction}"}}"#);
            let before = q(&expr).await;
            wait_for(Duration::from_secs(20), "bytes rising", async || {
                let now = prometheus.value(&expr).await.unwrap_or(0.0);
                if now > before + 1_000.0 {
                    Ok(())
                } else {
                    Err(format!("{direction}: {before} -> {now}"))
                }
            })
            .await;
        }
        // The median, as the dashboard shows it: a mean is carried off by the few samples a
        // starved browser's late congestion feedback gives, on a CI machine running other calls.
        let rtt = q("histogram_quantile(0.5, bedside_media_rtt_seconds_bucket)").await;
        let buckets: Vec<String> = prometheus
            .query("bedside_media_rtt_seconds_bucket")
            .await
            .iter()
            .map(|(series, n)| format!("le {}: {n}", series["le"]))
            .collect();
        assert!(
            rtt > 0.0 && rtt < 0.1,
            "median RTT on loopback: {rtt} s; samples by bucket: {buckets:?}"
        );
        for direction in ["ingress", "egress"] {
            let loss = q(&format!(
                r#"bedside_media_packet_loss_ratio_sum{{direction="{direction}"}} / bedside_media_packet_loss_ratio_count{{direction="{direction}"}}"#
            ))
            .await;
            assert!(loss < 0.02, "{direction} loss on loopback: {loss}");
        }
        assert_eq!(
            q(r#"bedside_media_srtp_sessions_total{profile="AEAD_AES_256_GCM"}"#).await,
            2.0
        );
        assert_eq!(q("sum(bedside_media_connection_failures_total)").await, 0.0);
        // The browsers' quality reports (every 5 s): what they decode, in plausible figures,
        // and what they estimate they can send.
        wait_for(Duration::from_secs(30), "quality reports from both", async || {
            let reports = prometheus.value("bedside_media_quality_reports_total").await;
            let heights = prometheus
                .value("bedside_media_received_video_height_pixels_count")
                .await;
            let estimates = prometheus.value("bedside_media_send_estimate_bps_count").await;
            if [reports, heights, estimates].iter().all(|n| n.is_some_and(|n| n >= 2.0)) {
                Ok(())
            } else {
                Err(format!("reports {reports:?}, heights {heights:?}, estimates {estimates:?}"))
            }
        })
        .await;
        let height = q("bedside_media_received_video_height_pixels_sum / bedside_media_received_video_height_pixels_count").await;
        // The test pages ask for a 320x180 camera; simulcast layers are a half and a quarter.
        assert!((40.0..=180.0).contains(&height), "mean decoded height: {height}");
        let fps = q("bedside_media_received_video_fps_sum / bedside_media_received_video_fps_count").await;
        assert!(fps > 0.0 && fps <= 60.0, "mean decoded frame rate: {fps}");
        let estimate = q("bedside_media_send_estimate_bps_sum / bedside_media_send_estimate_bps_count").await;
        assert!(estimate > 30_000.0, "mean send estimate: {estimate}");
        let freezes = q("bedside_media_video_freezes_total").await;
        assert!(freezes >= 0.0, "the freeze counter the alert reads is there");
        assert!(q("bedside_media_join_seconds_count").await >= 2.0);
        assert!(q("process_resident_memory_bytes").await > 0.0);

        // No label anywhere names a participant, a user, the room or a display name.
        let mut identifiers: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        identifiers.push("visit-42".into());
        for b in &browsers {
            let state = browser::state(b).await;
            identifiers.push(state["participantId"].as_str().unwrap_or_default().to_string());
        }
        let values = label_values(&node.metrics().await);
        assert!(values.iter().any(|v| v == "test-clinic"), "labels are parsed");
        for id in &identifiers {
            assert!(!id.is_empty());
            assert!(
                !values.iter().any(|v| v.contains(id.as_str())),
                "a metric label carries {id}"
            );
        }
        let series = prometheus.query(r#"{__name__=~"bedside_.*"}"#).await;
        assert!(series.len() > 20, "{} series", series.len());
        for (labels, _) in series {
            let text = labels.to_string();
            for id in &identifiers {
                assert!(!text.contains(id.as_str()), "series {text} carries {id}");
            }
        }

        for b in browsers {
            let _ = b.close().await;
        }
        node.shutdown(Duration::from_secs(2)).await;
    });
}

/// Opens the client as a participant who types `name` before joining.
async fn open_as(client: &Client, node: &TestNode, room: &str, token: &str, name: &str) {
    open_url(client, &link(node, room, token), Some(name)).await;
}

/// Clicks what `css` finds. The page rebuilds lists (the waiting room) on every change, so an
/// element found a moment ago may be gone: like a person, the click goes to the new one.
async fn click(client: &Client, css: &str) {
    for attempt in 1.. {
        let element = client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        // A button the page enables once its script has run (Join): a click before would be lost.
        for _ in 0..50 {
            if element.is_enabled().await.unwrap_or(true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match element.click().await {
            Ok(()) => return,
            Err(e) if attempt < 5 && e.to_string().contains("stale element") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("click {css}: {e}"),
        }
    }
}

/// Inbound audio bytes per stream.
fn audio_bytes(stats: &Value) -> Vec<u64> {
    stats["inbound"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["kind"] == "audio")
                .map(|s| s["bytesReceived"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

async fn errors_contain(b: &Client, code: &str) -> Result<(), String> {
    let state = browser::state(b).await;
    let seen = state["errors"].as_array().is_some_and(|e| {
        e.iter()
            .any(|e| e.as_str().unwrap_or_default().starts_with(code))
    });
    if seen { Ok(()) } else { Err(state.to_string()) }
}

#[test]
fn a_clinician_admits_patients_from_the_waiting_room_then_mutes_expels_locks_and_ends() {
    if !browser::require_or_skip() {
        return;
    }
    let netns = Netns::create();
    netns.run(|| async {
        let mut node = TestNode::start().await;
        let driver = Driver::start().await;
        let room = "visit-9";
        let host = driver.browser().await;
        open(
            &host,
            &node,
            room,
            &node.token(room, "u-clinician", Role::Host),
        )
        .await;
        wait_for(Duration::from_secs(30), "the clinician is in", async || {
            let state = browser::state(&host).await;
            if state["role"] == "host" {
                Ok(())
            } else {
                Err(state.to_string())
            }
        })
        .await;

        // Two patients: each waits, and the clinician sees their typed names.
        let mut patients = Vec::new();
        for (user, name) in [("u-pat-a", "Ada Patient"), ("u-pat-b", "Bo Patient")] {
            let b = driver.browser().await;
            open_as(
                &b,
                &node,
                room,
                &node.token(room, user, Role::Participant),
                name,
            )
            .await;
            patients.push(b);
        }
        let mut ids = Vec::new();
        for p in &patients {
            wait_for(Duration::from_secs(30), "a patient waits", async || {
                let state = browser::state(p).await;
                let status = state["status"].as_str().unwrap_or_default();
                if state["waiting"] == true && status.contains("waiting room") {
                    Ok(())
                } else {
                    Err(state.to_string())
                }
            })
            .await;
            let state = browser::state(p).await;
            assert_eq!(
                state["mediaConnected"], false,
                "no media while waiting: {state}"
            );
            ids.push(state["participantId"].as_str().expect("id").to_string());
        }
        wait_for(Duration::from_secs(10), "the waiting list", async || {
            let list = host
                .find(Locator::Css("#waiting-list"))
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            if list.contains("Ada Patient") && list.contains("Bo Patient") {
                Ok(())
            } else {
                Err(list)
            }
        })
        .await;

        for id in &ids {
            click(
                &host,
                &format!("#waiting-list li[data-participant='{id}'] button.admit"),
            )
            .await;
        }
        for (i, b) in std::iter::once(&host).chain(&patients).enumerate() {
            wait_for(
                Duration::from_secs(60),
                &format!("browser {i} decodes two videos"),
                async || {
                    let stats = browser::stats(b).await;
                    if decoded_video(&stats).iter().filter(|f| **f > 10).count() >= 2 {
                        Ok(())
                    } else {
                        Err(stats.to_string())
                    }
                },
            )
            .await;
        }

        // Mute patient A: one of the clinician's two audio streams stops growing.
        click(
            &host,
            &format!(".tile[data-participant='{}'] button.mute", ids[0]),
        )
        .await;
        wait_for(Duration::from_secs(10), "patient A is told", async || {
            let state = browser::state(&patients[0]).await;
            if state["muted"] == true {
                Ok(())
            } else {
                Err(state.to_string())
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = audio_bytes(&browser::stats(&host).await);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = audio_bytes(&browser::stats(&host).await);
        let growing = before.iter().zip(&after).filter(|(b, a)| a > b).count();
        assert_eq!(
            growing, 1,
            "only patient B's audio still flows: {before:?} -> {after:?}"
        );
        // The one voice the clinician hears is outlined as the speaker.
        wait_for(Duration::from_secs(10), "patient B is the speaker", async || {
            let state = browser::state(&host).await;
            let outlined = run_js(&host, "return Array.from(document.querySelectorAll('.tile.speaking')).map(t => t.dataset.participant);").await;
            if state["activeSpeaker"] == ids[1].as_str() && outlined == serde_json::json!([ids[1]]) {
                Ok(())
            } else {
                Err(format!("{} outlined {outlined}", state["activeSpeaker"]))
            }
        })
        .await;
        // Speaker view: the one speaking fills the row, the others line up small; grid again
        // makes everyone the same size.
        let widths = async |client: &Client| {
            run_js(client, "return Array.from(document.querySelectorAll('.tile')).map(t => [t.dataset.participant, t.classList.contains('featured'), Math.round(t.getBoundingClientRect().width)]);").await
        };
        click(&host, "#layout").await;
        wait_for(Duration::from_secs(5), "the speaker fills the row", async || {
            let tiles = widths(&host).await;
            let list = tiles.as_array().cloned().unwrap_or_default();
            let width = |t: &Value| t[2].as_f64().unwrap_or(0.0);
            let featured: Vec<&Value> = list.iter().filter(|t| t[1] == true).collect();
            let others = list.iter().filter(|t| t[1] != true).map(width).fold(0.0, f64::max);
            if featured.len() == 1 && featured[0][0] == ids[1].as_str() && width(featured[0]) > 2.0 * others {
                Ok(())
            } else {
                Err(tiles.to_string())
            }
        })
        .await;
        assert_eq!(
            run_js(&host, "return document.getElementById('layout').getAttribute('aria-pressed');").await,
            "true"
        );
        browser::save_screenshot(&host, "speaker-view").await;
        click(&host, "#layout").await;
        let tiles = widths(&host).await;
        let sizes: Vec<i64> = tiles
            .as_array()
            .map(|l| l.iter().filter_map(|t| t[2].as_i64()).collect())
            .unwrap_or_default();
        assert!(
            sizes.len() >= 3 && sizes.iter().all(|w| *w == sizes[0]),
            "grid view: every tile the same size: {tiles}"
        );
        // Roles come from the node: the patients see who the host is; the host lists who is in
        // the visit, each with Mute and Remove.
        let host_id = browser::state(&host).await["participantId"].clone();
        let badges = run_js(
            &patients[0],
            "return Array.from(document.querySelectorAll('.tile .role')).map(b => [b.parentElement.dataset.participant, b.textContent]);",
        )
        .await;
        assert_eq!(badges, serde_json::json!([[host_id, "Host"]]), "only the host wears a badge");
        let listed = run_js(
            &host,
            "return Array.from(document.querySelectorAll('#people-list li')).map(li => [li.dataset.participant, li.querySelectorAll('button.mute, button.expel').length]);",
        )
        .await;
        assert_eq!(
            listed,
            serde_json::json!([[ids[0], 2], [ids[1], 2]]),
            "both patients listed with Mute and Remove"
        );

        // Expel patient B: disconnected, and the same link cannot get back in.
        click(
            &host,
            &format!(".tile[data-participant='{}'] button.expel", ids[1]),
        )
        .await;
        wait_for(
            Duration::from_secs(10),
            "patient B is removed",
            async || errors_contain(&patients[1], "expelled").await,
        )
        .await;
        open(
            &patients[1],
            &node,
            room,
            &node.token(room, "u-pat-b", Role::Participant),
        )
        .await;
        wait_for(
            Duration::from_secs(10),
            "patient B cannot rejoin",
            async || errors_contain(&patients[1], "expelled").await,
        )
        .await;

        // Lock: a newcomer is refused, not even put in the waiting room.
        click(&host, "#lock").await;
        wait_for(Duration::from_secs(10), "locked", async || {
            let state = browser::state(&host).await;
            if state["locked"] == true {
                Ok(())
            } else {
                Err(state.to_string())
            }
        })
        .await;
        let late = driver.browser().await;
        open(
            &late,
            &node,
            room,
            &node.token(room, "u-late", Role::Participant),
        )
        .await;
        wait_for(
            Duration::from_secs(10),
            "a newcomer is refused",
            async || errors_contain(&late, "meeting-locked").await,
        )
        .await;

        // End: everyone still in is told and disconnected.
        click(&host, "#end").await;
        for b in [&host, &patients[0]] {
            wait_for(Duration::from_secs(10), "the meeting ended", async || {
                errors_contain(b, "meeting-ended").await?;
                let state = browser::state(b).await;
                if state["closed"] == true {
                    Ok(())
                } else {
                    Err(state.to_string())
                }
            })
            .await;
        }
        node.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn chat_reaches_the_room_and_no_file_log_or_metric_of_the_node() {
    if !browser::require_or_skip() {
        return;
    }
    let netns = Netns::create();
    netns.run(|| async {
        // The node binary in its own process, logging everything, so its output can be searched.
        let dir = tempfile::tempdir().expect("tempdir");
        let material = bedside_media_node::node::NodeSetup::generated(
            bedside_media_node::config::dev_default(),
            "node-chat".into(),
        )
        .expect("node material");
        let binary = bedside_tests::media::workspace_binary("bedside-media-node");
        let mut node = TestNode::spawn_in(&binary, dir.path(), &material, "trace", |_| {}).await;
        let driver = Driver::start().await;
        let room = "visit-chat";
        let browsers = [driver.browser().await, driver.browser().await];
        for (b, user) in browsers.iter().zip(["u-one", "u-two"]) {
            open(b, &node, room, &node.token(room, user, Role::Host)).await;
        }
        for b in &browsers {
            wait_for(Duration::from_secs(60), "media up", async || {
                let state = browser::state(b).await;
                if state["mediaConnected"] == true {
                    Ok(())
                } else {
                    Err(state.to_string())
                }
            })
            .await;
        }
        let secret = "Chest pain since Tuesday; allergic to penicillin";
        wait_for(
            Duration::from_secs(20),
            "the chat reaches the other browser",
            async || {
                browsers[0]
                    .execute(
                        "return window.bedside.chat(arguments[0]);",
                        vec![Value::String(secret.into())],
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let got = browsers[1]
                    .execute("return window.bedside.state.chat.map(c => c.text);", vec![])
                    .await
                    .map_err(|e| e.to_string())?;
                if got
                    .as_array()
                    .is_some_and(|a| a.iter().any(|t| t == secret))
                {
                    Ok(())
                } else {
                    Err(got.to_string())
                }
            },
        )
        .await;
        let text = browsers[1]
            .find(Locator::Css("#chat-log"))
            .await
            .expect("chat log")
            .text()
            .await
            .expect("text");
        assert!(text.contains(secret), "shown on screen: {text}");
        let metrics = node.metrics().await;
        assert!(
            metrics.contains("bedside_media_chat_messages_total"),
            "chat is counted"
        );
        node.shutdown(Duration::from_secs(5)).await;

        // Nowhere on the node's side: not its log (at trace), its audit stream, its buffers
        // or its metrics.
        let mut files = vec![];
        let mut stack = vec![dir.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).expect("dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path)
                } else {
                    files.push(path)
                }
            }
        }
        assert!(files.iter().any(|f| f.ends_with("stderr.log")), "{files:?}");
        for file in &files {
            let bytes = std::fs::read(file).expect("read");
            let text = String::from_utf8_lossy(&bytes);
            for word in ["penicillin", "Chest pain"] {
                let line = text.lines().find(|l| l.contains(word)).unwrap_or_default();
                assert!(
                    !text.contains(word),
                    "{word:?} is in {}: {}",
                    file.display(),
                    line.chars().take(300).collect::<String>()
                );
            }
        }
        assert!(!metrics.contains("penicillin"));
    });
}

#[test]
fn end_to_end_mode_decodes_in_the_browsers_and_not_on_the_way() {
    if !browser::require_or_skip() {
        return;
    }
    if !bedside_tests::run_or_skip(
        "aiortc",
        bedside_tests::aiortc::unavailable(),
        "BEDSIDE_REQUIRE_BROWSERS",
    ) {
        return;
    }
    let netns = Netns::create();
    netns.run(|| async {
        let mut node = TestNode::start_with(|c| {
            c.meetings.media_encryption = bedside_crds::node_config::MediaEncryptionMode::EndToEnd;
        })
        .await;
        let driver = Driver::start().await;
        let room = "visit-e2e";
        // The secret travels only in the links' fragments, shared by the host out of band.
        let secret = "correct-horse-battery-staple-7731";
        let mut browsers = Vec::new();
        for user in ["u-clinician", "u-patient"] {
            let b = driver.browser().await;
            let token = node.token(room, user, Role::Host);
            open_url(
                &b,
                &format!("{}&e2e={secret}", link(&node, room, &token)),
                None,
            )
            .await;
            browsers.push(b);
        }
        each_decodes_video(&browsers, "the other's video").await;
        for b in &browsers {
            assert_eq!(browser::state(b).await["endToEnd"], true);
        }

        // A third stack in the room sees exactly what the node forwards: every frame it gets
        // from the browsers is sealed with AES-256-GCM under the key derived from the shared
        // secret (which never reached the node); without that key nothing opens.
        let eavesdropper = bedside_tests::aiortc::AiortcPeer::join(
            &node,
            room,
            &node.token(room, "u-eavesdropper", Role::Host),
        )
        .await;
        assert!(
            wait_until(Duration::from_secs(20), || eavesdropper
                .audio_payloads()
                .len()
                >= 32)
            .await,
            "the node forwards the browsers' audio to a third party"
        );
        let payloads = eavesdropper.audio_payloads();
        let right = e2e_key(secret, room);
        let wrong = e2e_key("another-secret", room);
        // Audio frames are one packet each: 1 clear byte | ciphertext + tag | 12-byte IV.
        let opened = payloads.iter().filter(|p| opens(&right, p)).count();
        assert_eq!(
            opened,
            payloads.len(),
            "every frame is sealed under the participants' key"
        );
        assert_eq!(
            payloads.iter().filter(|p| opens(&wrong, p)).count(),
            0,
            "and under no other"
        );
        // ...while the browsers keep decoding.
        let before = decoded_video(&browser::stats(&browsers[0]).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = decoded_video(&browser::stats(&browsers[0]).await);
        assert!(
            after.iter().sum::<u64>() > before.iter().sum::<u64>(),
            "{before:?} -> {after:?}"
        );
        eavesdropper.stop().await;
        node.shutdown(Duration::from_secs(2)).await;
    });
}

/// The key the web client derives: HKDF-SHA-256(secret, salt "bedside-e2e", info room).
fn e2e_key(secret: &str, room: &str) -> [u8; 32] {
    use aws_lc_rs::hkdf;
    struct Len32;
    impl hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let mut key = [0u8; 32];
    hkdf::Salt::new(hkdf::HKDF_SHA256, b"bedside-e2e")
        .extract(secret.as_bytes())
        .expand(&[room.as_bytes()], Len32)
        .and_then(|okm| okm.fill(&mut key))
        .expect("hkdf");
    key
}

/// Whether a one-packet frame opens under `key` (1 clear byte, as for audio).
fn opens(key: &[u8; 32], payload: &[u8]) -> bool {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    if payload.len() < 1 + 16 + 12 {
        return false;
    }
    let (body, iv) = payload.split_at(payload.len() - 12);
    let Ok(nonce) = Nonce::try_assume_unique_for_key(iv) else {
        return false;
    };
    let Ok(unbound) = UnboundKey::new(&AES_256_GCM, key) else {
        return false;
    };
    let mut sealed = body[1..].to_vec();
    LessSafeKey::new(unbound)
        .open_in_place(nonce, Aad::from(&body[..1]), &mut sealed)
        .is_ok()
}

/// A patient's page for a booked visit: "not opened yet" with when (Join disabled) before the
/// window, "your clinician will let you in" in the waiting room, "this visit has ended" after.
#[test]
fn a_patients_visit_page_says_too_early_waiting_open_elsewhere_and_ended() {
    if !browser::require_or_skip() {
        return;
    }
    let netns = Netns::create();
    netns.run(|| async {
        let mut node = TestNode::start().await;
        let driver = Driver::start().await;
        let book = |start: jiff::Timestamp| {
            let policy = visit::VisitPolicy {
                tenant: node.tenant.clone(),
                base_url: node.https_base(),
                max_duration: Duration::from_secs(3600),
                max_participants: 4,
                opens_before: visit::DEFAULT_OPENS_BEFORE,
                grace: visit::DEFAULT_GRACE,
            };
            let request = visit::VisitRequest {
                start,
                duration: Duration::from_secs(1800),
                host: "Practitioner/dr-7".into(),
                invitees: vec![visit::Invitee {
                    reference: "Patient/8c1f2a".into(),
                    role: visit::InviteeRole::Patient,
                }],
            };
            let id = visit::new_visit_id().expect("id");
            visit::book(
                &request,
                &policy,
                &node.join_key,
                &id,
                jiff::Timestamp::now(),
            )
            .expect("booked")
        };
        let page = |b: &Client, name: &'static str, title: &'static str| {
            let b = b.clone();
            async move {
                wait_for(Duration::from_secs(15), name, async || {
                    let state = browser::state(&b).await;
                    if state["page"] == name && state["visitTitle"] == title {
                        Ok(())
                    } else {
                        Err(state.to_string())
                    }
                })
                .await;
                browser::state(&b).await
            }
        };

        // Tomorrow's visit: the page says so and when, before anyone presses Join.
        let early = book(jiff::Timestamp::now() + Duration::from_secs(24 * 3600));
        let patient = driver.browser().await;
        patient
            .goto(&early.invitees[0].link)
            .await
            .expect("open the link");
        let state = page(&patient, "too-early", "This visit has not opened yet").await;
        assert_eq!(state["joinDisabled"], true, "{state}");
        assert!(
            state["visitDetail"]
                .as_str()
                .is_some_and(|d| d.contains("Your visit is on") && d.contains("opens at")),
            "{state}"
        );

        // Today's visit: the patient types the passcode the clinic texted and waits.
        let now = book(jiff::Timestamp::now());
        patient
            .goto(&now.invitees[0].link)
            .await
            .expect("open the link");
        patient
            .execute(
                "document.getElementById('passcode').value = arguments[0];",
                vec![Value::String(now.passcode.clone())],
            )
            .await
            .expect("type the passcode");
        click(&patient, "#join").await;
        page(&patient, "waiting", "Your clinician will let you in").await;

        // The same link opened on a phone: the phone waits, the laptop says where the visit went
        // and stays out (no reconnecting, which would take the visit back).
        let phone = driver.browser().await;
        phone
            .goto(&now.invitees[0].link)
            .await
            .expect("open the link");
        phone
            .execute(
                "document.getElementById('passcode').value = arguments[0];",
                vec![Value::String(now.passcode.clone())],
            )
            .await
            .expect("type the passcode");
        click(&phone, "#join").await;
        page(&phone, "waiting", "Your clinician will let you in").await;
        let state = page(&patient, "elsewhere", "This visit is open somewhere else").await;
        assert!(
            state["visitDetail"]
                .as_str()
                .is_some_and(|d| d.contains("another device")),
            "{state}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            browser::state(&phone).await["page"],
            "waiting",
            "the laptop did not take the visit back"
        );

        // A link past its window.
        let ended = driver.browser().await;
        let token = sign(
            &node.tenant,
            &node.join_key,
            "visit-old",
            "patient.1",
            Role::Participant,
            -3600,
        );
        ended
            .goto(&node.link("visit-old", &token))
            .await
            .expect("open the link");
        let state = page(&ended, "ended", "This visit has ended").await;
        assert_eq!(state["joinDisabled"], true, "{state}");

        for b in [patient, phone, ended] {
            let _ = b.close().await;
        }
        node.shutdown(Duration::from_secs(2)).await;
    });
}

/// A network that lets nothing out but TCP 443 to the clinic's relay (a hospital guest Wi-Fi):
/// no UDP and no TCP reach the node's media port from the browsers, and the relay's UDP port is
/// closed too. Both browsers hold the call through the tenant's TURN relay (coturn, as the
/// operator configures it) over TLS, still AES-256-GCM end to end with the node; the page, the
/// node's metrics and the audit trail say `relay`.
#[test]
fn browsers_that_may_reach_only_the_relay_over_tls_hold_the_call_through_it() {
    if !browser::require_or_skip() || !bedside_tests::turn::require_or_skip() {
        return;
    }
    let netns = Netns::create();
    netns.run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (coturn, node, port, relay) = node_with_relay(dir.path()).await;
        // Only the relay may send to the node's media port; the browsers reach the relay on
        // TLS 443 alone.
        let _rules = [
            &[
                "INPUT", "-p", "udp", "--dport", &port, "!", "-s", &relay, "-j", "DROP",
            ][..],
            &["INPUT", "-p", "tcp", "--dport", &port, "-j", "DROP"],
            &[
                "INPUT", "-p", "udp", "-d", &relay, "--dport", "3478", "-j", "DROP",
            ],
        ]
        .map(browser::IptablesRule::insert);
        let driver = Driver::start().await;
        let mut browsers = Vec::new();
        for (user, role) in [("u-clinician", Role::Host), ("u-patient", Role::Host)] {
            let client = driver.browser().await;
            let token = node.token("visit-relay", user, role);
            open(&client, &node, "visit-relay", &token).await;
            browsers.push(client);
        }
        each_decodes_video(&browsers, "video through the relay").await;
        for b in &browsers {
            let stats = browser::stats(b).await;
            let transport = &stats["transport"];
            assert_eq!(transport["localType"], "relay", "{stats}\n{}", coturn.log());
            assert_eq!(transport["relayProtocol"], "tls", "{stats}");
            assert_eq!(browser::srtp_profile(&stats), "AEAD_AES_256_GCM", "{stats}");
            let state = browser::state(b).await;
            assert_eq!(state["mediaPath"], "relay", "{state}");
            let status = state["status"].as_str().unwrap_or_default();
            assert!(status.contains("relay"), "the page says so: {status}");
        }
        let relayed = node
            .metric_where("bedside_media_sessions_by_path_total", "path=\"relay\"")
            .await;
        assert_eq!(relayed, 2.0, "the node counts two relayed sessions");
        // Every session is relayed: nearly all the node's media bytes went through the relay
        // (all but the checks and handshakes before media connected).
        for direction in ["received", "sent"] {
            let label = format!("direction=\"{direction}\"");
            let relayed = node
                .metric_where("bedside_media_relayed_bytes_total", &label)
                .await;
            let all = node.metric_where("bedside_media_bytes_total", &label).await;
            assert!(
                relayed > 50_000.0 && relayed >= 0.8 * all,
                "{direction}: {relayed} of {all} bytes relayed"
            );
        }
        let connected: BTreeSet<String> = node
            .audit_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["action"] == "media-connected" && r["place"]["mediaPath"] == "relay")
            .filter_map(|r| r["actor"]["user"].as_str().map(String::from))
            .collect();
        assert_eq!(connected.len(), 2, "{connected:?}");
    });
}

/// One page per user in `room` at full quality (not the test pages' small picture), each
/// in a window of the size given beside it ("width,height"); `edit` changes each Chromium's
/// flags.
async fn full_size_pages(
    driver: &Driver,
    node: &TestNode,
    room: &str,
    users: &[(&str, &str)],
    edit: impl Fn(&mut Vec<String>),
) -> Vec<Client> {
    let mut pages = Vec::new();
    for (user, size) in users {
        let page = driver
            .browser_with(|args| {
                edit(args);
                args.push(format!("--window-size={size}"));
            })
            .await;
        let token = node.token(room, user, Role::Host);
        let full = node.link(room, &token).replacen("&quality=low", "", 1);
        open_url(&page, &full, None).await;
        pages.push(page);
    }
    pages
}

/// A clinician and a patient, each in a desktop-size window: two tiles side by side, each
/// showing the full 720-line picture.
const TWO_IN_A_CALL: &[(&str, &str)] = &[("u-clinician", "1920,1080"), ("u-patient", "1920,1080")];

/// Chromium's fake camera at `fps` frames a second (its default is 20).
fn fake_camera_at(fps: u32) -> impl Fn(&mut Vec<String>) {
    move |args| {
        for arg in args.iter_mut() {
            if arg == "--use-fake-device-for-media-stream" {
                *arg = format!("--use-fake-device-for-media-stream=fps={fps}");
            }
        }
    }
}

/// A tile shrunk to a thumbnail gets a thumbnail's picture: the patient's browser says how
/// large it shows the clinician (`view`), and the node sends the lowest simulcast layer
/// (320 px of the 1280 px camera) however much bandwidth there is; grown again, the picture
/// grows back within seconds.
#[test]
fn a_thumbnail_tile_receives_a_thumbnail_picture_and_a_large_one_the_full_picture() {
    with_a_node_and_browsers(async |node, driver| {
        let browsers = full_size_pages(driver, node, "visit-tiles", TWO_IN_A_CALL, |_| {}).await;
        each_decodes_video(&browsers, "each other's video").await;
        let width = async || -> u64 {
            let stats = browser::stats(&browsers[1]).await;
            stats["inbound"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| x["kind"] == "video")
                .filter_map(|x| x["frameWidth"].as_u64())
                .max()
                .unwrap_or(0)
        };
        let large = async |within: u64, what: &str| {
            let start = Instant::now();
            // Said on failure: whether the clinician's browser sent more than 320 px then.
            wait_for(Duration::from_secs(within), what, async || {
                match width().await {
                    w if w > 320 => Ok(()),
                    w => {
                        let (sent, reason) = top_sent(&browsers[0]).await;
                        Err(format!(
                            "{w} px; the clinician's browser sends {sent} px ({reason})"
                        ))
                    }
                }
            })
            .await;
            println!("{what}: {:?}", start.elapsed());
        };
        large(
            40,
            "the patient gets more than the lowest layer on a clean link",
        )
        .await;
        let resize = |css: &str| {
            format!(
                "document.querySelectorAll('.tile').forEach((t) => {{ t.style.cssText = '{css}'; }}); return true;"
            )
        };
        run_js(&browsers[1], &resize("width: 120px; max-width: 120px;")).await;
        wait_for(
            Duration::from_secs(15),
            "a thumbnail's picture",
            async || match width().await {
                w if w > 0 && w <= 320 => Ok(()),
                w => Err(format!("{w} px")),
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let held = width().await;
        assert!(
            held > 0 && held <= 320,
            "the thumbnail keeps the small picture: {held} px"
        );
        run_js(&browsers[1], &resize("")).await;
        // The node pads the patient's link up to the next layer (`Layers::sustain_bps`), so
        // its estimate grows back at once instead of waiting for the estimator's own probes
        // (0.5-1.1 s here with the machine's two cores kept busy, 0.6-6.8 s before; once 40 s).
        large(15, "the full picture again once the tile is large").await;
    });
}

/// Issue 19's clean link: within 5 s of joining each side decodes the other at 1280 px, then
/// for 30 s it keeps getting the top layer the other side sends, at 24 fps or more, without a
/// freeze, and the node switches each side's layer at most once.
///
/// Two Chromiums each encoding three layers of a 1280x720 camera take most of this machine's
/// two cores, so the test runs alone (.config/nextest.toml), and what the publishing browser
/// decides for itself is told apart from what the node decides: a browser short of CPU scales
/// its own camera down (`qualityLimitationReason: cpu`, 1280 -> 960 px on every layer); the
/// receiver then decodes 960 px from the top layer, which is no layer change of the node's.
///
/// Before the node restarted collapsed estimates (`recovery.rs`) this failed about one run in
/// five: a receiving Chromium that stalls for a moment makes the node's estimate of its link
/// collapse, and the node moved it to 640 px for 1-15 s.
#[test]
fn on_a_clean_link_each_side_gets_the_top_layer_at_once_and_keeps_it_for_30_seconds() {
    const TOP: u64 = 1280;
    with_a_node_and_browsers(async |node, driver| {
        let pages = full_size_pages(
            driver,
            node,
            "visit-clean",
            TWO_IN_A_CALL,
            fake_camera_at(30),
        )
        .await;
        let joined = Instant::now();
        let mut reached = [None; 2];
        let mut sent_top = [None; 2];
        let mut limited = [BTreeSet::new(), BTreeSet::new()];
        while reached.contains(&None) && joined.elapsed() < Duration::from_secs(15) {
            // One reading per page for what it sends and what it decodes: each WebDriver round
            // trip on this busy machine takes 100-200 ms, and the 2 s allowed below is timed
            // from readings no further apart than that.
            let mut readings = Vec::with_capacity(2);
            for page in &pages {
                readings.push((browser::stats(page).await, joined.elapsed()));
            }
            for i in 0..2 {
                let (sending, read_at) = &readings[1 - i];
                let (width, reason) = top_sent_in(sending);
                if width < TOP {
                    limited[i].insert(reason);
                } else if sent_top[i].is_none() {
                    sent_top[i] = Some(*read_at);
                }
                let (decoding, read_at) = &readings[i];
                if reached[i].is_none()
                    && browser::decoding_in(decoding).is_some_and(|d| d.width >= TOP)
                {
                    reached[i] = Some(*read_at);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for i in 0..2 {
            let reached = reached[i]
                .unwrap_or_else(|| panic!("side {i} got no {TOP} px picture in 15 s; the other's encoder sent it from {:?}, was limited by {:?}", sent_top[i], limited[i]));
            // A publisher's encoder that is itself late to send its top layer (its own
            // estimate still growing) gets 2 s from then: the node's part is the forwarding.
            let sent = sent_top[i].unwrap_or(reached);
            let allowed = Duration::from_secs(5).max(sent + Duration::from_secs(2));
            println!(
                "side {i}: {TOP} px after {reached:?} (sent from {sent:?}, limited by {:?})",
                limited[i]
            );
            assert!(
                reached <= allowed,
                "side {i} decoded {TOP} px only after {reached:?}; the other side sent it from {sent:?}"
            );
        }

        let switches = async || {
            node.metric("bedside_media_simulcast_layer_switches_total")
                .await
        };
        let switches_before = switches().await;
        let mut freezes_before = [(0, 0.0); 2];
        for (i, page) in pages.iter().enumerate() {
            freezes_before[i] = browser::decoding(page)
                .await
                .map_or((0, 0.0), |d| (d.freezes, d.frozen));
        }
        let mut fps = [Vec::new(), Vec::new()];
        let mut below_sent = [0u32; 2];
        let mut widths = [BTreeSet::new(), BTreeSet::new()];
        let mut sent_before = [TOP; 2];
        let mut freezes = [(0, 0.0); 2];
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            for i in 0..2 {
                let (sent, _) = top_sent(&pages[1 - i]).await;
                let seen = browser::decoding(&pages[i]).await.expect("video goes on");
                // A new size the publisher chose takes a frame or two to arrive: a sample
                // counts as short only below what it sent now and half a second before.
                if seen.width < sent.min(sent_before[i]) {
                    below_sent[i] += 1;
                    println!(
                        "{:?}: side {i} decodes {} px, the other sends {sent}",
                        joined.elapsed(),
                        seen.width
                    );
                }
                sent_before[i] = sent;
                widths[i].insert((seen.width, sent));
                fps[i].push(seen.fps);
                let (count, frozen) = freezes_before[i];
                freezes[i] = (seen.freezes - count, seen.frozen - frozen);
            }
        }
        let switched = switches().await - switches_before;
        // Why the node moved, when it did.
        for name in [
            "send_queue_holds",
            "keyframes_for_loss",
            "estimate_restarts",
            "estimate_floors",
            "estimate_reprobes",
            "probes_for_move_up",
        ] {
            println!(
                "bedside_media_{name}_total {}",
                node.metric(&format!("bedside_media_{name}_total")).await
            );
        }
        for i in 0..2 {
            let mean = fps[i].iter().sum::<f64>() / fps[i].len() as f64;
            println!(
                "side {i}: {mean:.1} fps, {} freezes ({:.2} s in all), {} samples below the top layer sent, (decoded, sent) widths {:?}",
                freezes[i].0, freezes[i].1, below_sent[i], widths[i]
            );
            assert!(
                mean >= 24.0,
                "side {i} played {mean:.1} fps on a clean link"
            );
            assert!(
                freezes[i].1 < 0.5,
                "side {i} froze for {:.2} s in all on a clean link ({} freezes)",
                freezes[i].1,
                freezes[i].0
            );
            assert!(
                below_sent[i] <= 2,
                "side {i} decoded less than the top layer sent for {} of 60 half-seconds: {:?}",
                below_sent[i],
                widths[i]
            );
        }
        println!("the node switched layers {switched} times in 30 s");
        assert!(
            switched <= 2.0,
            "the node switched layers {switched} times in 30 s on a clean link (at most once a side)"
        );
    });
}

/// Issue 19's shaped link: the patient's media port limited to 600 kbit/s each way (tc htb and
/// tbf, a queue of up to 313 ms each way) for 15 s, then freed (its capacity returns, what its
/// queues hold is delivered). What the patient receives steps down to a lower layer within 2 s,
/// never stops for more than 1 s, and is back on the top layer the clinician's browser sends
/// within 10 s of the freeing (issue 19's goals; that layer is 1280 px unless the clinician's
/// browser scaled its camera down for CPU, as in the clean-link test); what the clinician
/// receives of the patient (the patient's own browser's uplink estimate decides what it sends)
/// keeps playing. docs/benchmarks.md has the runs behind these figures: 10 of 10 back within
/// 10 s on 2026-12-07 (thirty-sixth session), the stall over 1 s by a few ms in 1 run of 39;
/// the second try in .config/nextest.toml covers such a run.
///
/// Both are read inside the pages every 100 ms (a WebDriver round trip takes a few hundred ms
/// here); the node's part is its layer choice for the patient (docs/media-node.md: simulcast,
/// congestion, recovery). The picture bench runs the same spell five times for its figures.
#[test]
fn a_600_kbit_link_steps_the_patient_down_within_2_s_without_a_freeze_and_back_up_once_freed() {
    const LIMITED_FOR: Duration = Duration::from_secs(15);
    with_a_node_and_browsers(async |node, driver| {
        let pages = full_size_pages(
            driver,
            node,
            "visit-shaped",
            TWO_IN_A_CALL,
            fake_camera_at(30),
        )
        .await;
        let pair = [&pages[0], &pages[1]];
        if let Err(e) = picture::settle(pair, Duration::from_secs(40)).await {
            panic!("before the link is limited: {e}");
        }
        let (spells, limited_at) = picture::limit_then_free(pair, "600kbit", LIMITED_FOR).await;
        println!("limited at {limited_at}");
        // Frames decoded from the limit on, by the page's own readings (they end at the freeing).
        let frames_while_limited = |spell: &picture::Spell| {
            let from = spell.sampled_before.as_secs_f64() * 1000.0;
            let mut limited = spell.samples.iter().filter(|s| s.at_ms >= from);
            let first = limited.next().map_or(0, |s| s.frames);
            limited
                .next_back()
                .map_or(0, |s| s.frames.saturating_sub(first))
        };
        for (spell, who) in spells.iter().zip([
            "the clinician (the patient's uplink)",
            "the patient (its downlink)",
        ]) {
            println!(
                "{who}: down after {:?} in the page, longest stall {:?}, back after {:?} (at {} px sent); {} frames while limited",
                spell.in_page.down,
                spell.in_page.longest_stall,
                spell.back,
                spell.back_sent,
                frames_while_limited(spell)
            );
        }
        let [clinician, patient] = &spells;
        let down = patient
            .in_page
            .down
            .expect("the patient's picture stepped down on a 600 kbit/s link");
        assert!(
            down <= picture::GOAL_DOWN,
            "the patient's picture stepped down only after {down:?}"
        );
        let stall = patient.in_page.longest_stall;
        assert!(
            stall <= picture::GOAL_STALL,
            "the patient's picture stood still for {stall:?} on the limited link"
        );
        let back = patient
            .back
            .expect("the patient's picture is back on the top layer once the link is freed");
        assert!(
            back <= picture::GOAL_BACK,
            "the patient's picture came back to the top layer only {back:?} after the link was freed"
        );
        // The patient's own browser decides what it sends up a failing uplink; the node
        // forwards what arrives: the clinician's picture of the patient goes on.
        let moving = frames_while_limited(clinician);
        // 24 fps in a first run; 10 fps is a picture that plays, if poorly.
        assert!(
            moving >= 150,
            "the clinician's picture of the patient nearly stopped on the patient's limited link: {moving} frames in {LIMITED_FOR:?}"
        );
    });
}

/// Issue 19's third case: three in a visit, the patient on a slow link (600 kbit/s each way,
/// tc on their media port). The node gives the patient lower layers of the others and keeps
/// their video playing; the clinician and the family member, whose links are clean, keep
/// getting each other's top layer without a freeze: one slow link costs only its owner.
///
/// Three Chromiums encoding 1280x720 simulcast share two cores, so the top layer is what the
/// publisher's encoder sends (`top_sent`), as in the clean-link test, and each window is wide
/// enough for three 720-line tiles side by side.
#[test]
fn three_in_a_visit_one_on_a_600_kbit_link_and_the_other_two_keep_their_top_layer() {
    const SAMPLES: usize = 30;
    with_a_node_and_browsers(async |node, driver| {
        // The pair's windows are wide enough for three 720-line tiles side by side; the
        // patient's, smaller, costs the shared cores less (its link takes less anyway).
        let three = [
            ("u-clinician", "2560,1440"),
            ("u-family", "2560,1440"),
            ("u-patient", "1920,1080"),
        ];
        // 10 frames a second: three encoders of 1280x720 simulcast at 20 froze every picture.
        let pages = full_size_pages(driver, node, "visit-three", &three, fake_camera_at(10)).await;
        let mut ids = Vec::new();
        for page in &pages {
            let mut id = None;
            wait_for(Duration::from_secs(30), "each page joins", async || {
                id = browser::state(page).await["participantId"]
                    .as_str()
                    .map(String::from);
                id.as_ref()
                    .map(|_| ())
                    .ok_or_else(|| "no participant id yet".to_string())
            })
            .await;
            ids.extend(id);
        }
        // Each page's stats, read once a sample: getStats is dear for browsers short of CPU.
        let read_all = async || {
            let mut all = Vec::new();
            for page in &pages {
                all.push(browser::stats(page).await);
            }
            all
        };
        // The clinician (0) and the family member (1) watch each other; the patient (2) both.
        let pair = [(0, 1), (1, 0)];
        // A call's first seconds are the clean-link test's: here the pair first holds its
        // top layers for five readings in a row (about 7 s), then the patient's link slows.
        let mut held = 0;
        wait_for(
            Duration::from_secs(60),
            "the clinician and the family member hold each other's top layer for 5 readings",
            async || {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let stats = read_all().await;
                for (i, from) in pair {
                    let (sent, reason) = top_sent_in(&stats[from]);
                    match browser::decoding_from(&stats[i], &ids[from]) {
                        Some(d) if d.width > 0 && d.width >= sent => {}
                        d => {
                            held = 0;
                            return Err(format!(
                                "page {i}: {d:?}, {from} sends {sent} px ({reason})"
                            ));
                        }
                    }
                }
                held += 1;
                if held >= 5 {
                    Ok(())
                } else {
                    Err(format!("held for {held} readings"))
                }
            },
        )
        .await;
        let port = browser::media_port(&read_all().await[2]).expect("the patient's media port");

        let _slow = browser::ShapedLink::new(port, "600kbit");
        // (frames, width, frozen seconds) of what page i decodes of `from`, at each sample.
        let mut samples: Vec<Vec<(u64, u64, f64)>> = Vec::new();
        let mut sent = Vec::new();
        for _ in 0..SAMPLES {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let stats = read_all().await;
            sent.push([top_sent_in(&stats[0]).0, top_sent_in(&stats[1]).0]);
            samples.push(
                WATCHING
                    .iter()
                    .map(|&(i, from, _)| {
                        browser::decoding_from(&stats[i], &ids[from])
                            .map_or((0, 0, 0.0), |d| (d.frames, d.width, d.frozen))
                    })
                    .collect(),
            );
        }
        let (first, middle, last) = (&samples[0], &samples[SAMPLES / 2], &samples[SAMPLES - 1]);
        for (n, &(i, from, what)) in WATCHING.iter().enumerate() {
            let fps = (last[n].0 - first[n].0) as f64 / (SAMPLES - 1) as f64;
            let frozen = last[n].2 - first[n].2;
            let widths: BTreeSet<u64> = samples.iter().map(|s| s[n].1).collect();
            println!("{what}: {fps:.1} fps, frozen {frozen:.2} s, widths {widths:?}");
            assert!(
                last[n].0 > middle[n].0 + 20,
                "{what}: the video stopped: {:?}",
                (middle[n], last[n])
            );
            if from == 2 || i == 2 {
                continue;
            }
            // A size the publisher just chose takes a frame or two to arrive: a sample is
            // short only below what it sent then and a second before.
            let below = (1..SAMPLES)
                .filter(|&k| samples[k][n].1 < sent[k][from].min(sent[k - 1][from]))
                .count();
            let pairs: BTreeSet<(u64, u64)> = (0..SAMPLES)
                .map(|k| (samples[k][n].1, sent[k][from]))
                .collect();
            println!(
                "{what}: {below} of {SAMPLES} samples below the top layer sent; (decoded, sent) {pairs:?}"
            );
            // Three Chromiums on two cores: a receiver that stalls may still make its
            // estimate collapse once (`recovery.rs` restarts it at most once in 5 s), which
            // costs a few seconds of the middle layer (0-6 samples in five runs). Before the node
            // took the link's own loss over the receiver reports', which count what the
            // patient's uplink lost, the slow link cost the pair their top layer for 15-27.
            assert!(
                below <= 8,
                "{what} got less than the top layer sent in {below} of {SAMPLES} samples: {pairs:?}"
            );
            // At 10 frames a second Chromium counts a freeze from 250 ms without a frame.
            assert!(
                frozen < 1.0,
                "{what} froze for {frozen:.2} s while the patient's link was slow"
            );
            assert!(
                fps >= 8.0,
                "{what} played {fps:.1} fps while the patient's link was slow"
            );
        }
        for n in 0..2 {
            let (what, width) = (WATCHING[n].2, last[n].1);
            assert!(
                width < 1280,
                "{what}: the 600 kbit/s link carries {width} px"
            );
        }
    });
}

/// Who watches whom in the three-party test: (page, the page it watches, in words).
const WATCHING: [(usize, usize, &str); 6] = [
    (2, 0, "the patient watching the clinician"),
    (2, 1, "the patient watching the family member"),
    (0, 1, "the clinician watching the family member"),
    (1, 0, "the family member watching the clinician"),
    (0, 2, "the clinician watching the patient"),
    (1, 2, "the family member watching the patient"),
];

/// 5% of packets lost at random both ways (the clinician's uplink to the node and the patient's
/// downlink from it, iptables `statistic` on the test namespace): the video keeps playing at its
/// frame rate, frozen at most a fifth of the time, because the receivers ask again (NACK) and get the packets
/// again (RTX: the clinician's browser for the node, the node for the patient).
#[test]
fn five_percent_random_loss_each_way_is_repaired_and_the_video_keeps_playing() {
    with_a_node_and_browsers(async |node, driver| {
        let browsers = two_hosts_in_a_call(driver, node, "visit-lossy").await;
        let port = |stats: &Value| {
            browser::media_port(stats)
                .map(|p| p.to_string())
                .unwrap_or_else(|| panic!("a media port: {stats}"))
        };
        let (clinician_port, patient_port) = (
            port(&browser::stats(&browsers[0]).await),
            port(&browser::stats(&browsers[1]).await),
        );
        // What the patient's browser says of the clinician's video: frames, seconds frozen
        // (the browser's own freeze measure), NACKs sent.
        let video = async || -> (u64, f64, u64) {
            let stats = browser::stats(&browsers[1]).await;
            let inbound: Vec<&Value> = stats["inbound"]
                .as_array()
                .map(|v| v.iter().filter(|x| x["kind"] == "video").collect())
                .unwrap_or_default();
            let sum = |field: &str| {
                inbound
                    .iter()
                    .filter_map(|x| x[field].as_u64())
                    .sum::<u64>()
            };
            let frozen = inbound
                .iter()
                .filter_map(|x| x["freezeSeconds"].as_f64())
                .sum::<f64>();
            (sum("framesDecoded"), frozen, sum("nackCount"))
        };
        let nacks_before = node
            .metric_where("bedside_media_feedback_total", "kind=\"nack\"")
            .await;
        let lossy = [
            &[
                "OUTPUT",
                "-p",
                "udp",
                "--sport",
                &clinician_port,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                "0.05",
                "-j",
                "DROP",
            ][..],
            &[
                "INPUT",
                "-p",
                "udp",
                "--dport",
                &patient_port,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                "0.05",
                "-j",
                "DROP",
            ],
        ]
        .map(browser::IptablesRule::insert);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (frames, frozen, nacks) = video().await;
        tokio::time::sleep(Duration::from_secs(15)).await;
        let (frames_after, frozen_after, nacks_after) = video().await;
        drop(lossy);
        let fps = (frames_after - frames) as f64 / 15.0;
        assert!(
            fps >= 10.0,
            "the clinician's video plays on at {fps:.1} fps through 5% loss"
        );
        // Frozen at most a fifth of the time (a busy machine's decoder stalls count too: CI
        // runs other browsers beside this one).
        let frozen = frozen_after - frozen;
        assert!(
            frozen <= 3.0,
            "frozen for {frozen:.1} s of 15 s through 5% loss"
        );
        assert!(
            nacks_after > nacks,
            "the patient's browser asked again: {nacks} -> {nacks_after}"
        );
        let nacks_at_node = node
            .metric_where("bedside_media_feedback_total", "kind=\"nack\"")
            .await;
        assert!(
            nacks_at_node > nacks_before,
            "the node got the patient's NACKs: {nacks_before} -> {nacks_at_node}"
        );
    });
}

/// The pre-call connectivity check tells a patient in plain words which paths reach the node,
/// before joining: every path on an open network; TCP and the relay once UDP to the node is
/// blocked (and to ask IT for UDP to the node's address); only the clinic's relay when no UDP
/// and no TCP reach the node; nothing, naming the node's address and the relay's, when the
/// relay is blocked too. A check joins no room and is on no one's screen.
#[test]
fn the_pre_call_check_says_which_paths_reach_the_node_and_what_to_ask_it_to_open() {
    if !browser::require_or_skip() || !bedside_tests::turn::require_or_skip() {
        return;
    }
    let netns = Netns::create();
    netns.run(|| async {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_coturn, node, port, relay) = node_with_relay(dir.path()).await;
        let driver = Driver::start().await;
        let patient = driver.browser().await;
        let token = node.token("visit-check", "u-patient", Role::Participant);
        patient
            .goto(&link(&node, "visit-check", &token))
            .await
            .expect("open the web client");

        let said = check_connection(&patient).await;
        assert_eq!(said.0, "udp tcp relay", "{said:?}");
        assert!(said.1.contains("directly"), "{said:?}");

        let _no_udp = browser::IptablesRule::insert(&[
            "INPUT", "-p", "udp", "--dport", &port, "!", "-s", &relay, "-j", "DROP",
        ]);
        let said = check_connection(&patient).await;
        assert_eq!(said.0, "tcp relay", "{said:?}");
        let ask = format!("UDP port {port} to 127.0.0.1");
        assert!(
            said.1.contains("blocks UDP") && said.1.contains(&ask),
            "{said:?}"
        );

        let _no_tcp =
            browser::IptablesRule::insert(&["INPUT", "-p", "tcp", "--dport", &port, "-j", "DROP"]);
        let said = check_connection(&patient).await;
        assert_eq!(said.0, "relay", "{said:?}");
        assert!(
            said.1.contains("relay") && said.1.contains("TCP port 443"),
            "{said:?}"
        );

        let _no_relay = [
            &[
                "INPUT", "-p", "tcp", "-d", &relay, "--dport", "443", "-j", "DROP",
            ][..],
            &[
                "INPUT", "-p", "udp", "-d", &relay, "--dport", "3478", "-j", "DROP",
            ],
        ]
        .map(browser::IptablesRule::insert);
        let said = check_connection(&patient).await;
        assert_eq!(said.0, "", "{said:?}");
        let ask = format!("UDP and TCP port {port} to 127.0.0.1");
        assert!(
            said.1.contains("cannot get through") && said.1.contains(&ask),
            "{said:?}"
        );
        assert!(
            said.1.contains(&format!("TCP port 443 to {relay}")),
            "{said:?}"
        );

        // Four checks, up to three paths each; nobody joined anything.
        let checks = node.metric("bedside_media_connection_checks_total").await;
        assert!((10.0..=12.0).contains(&checks), "{checks} checks answered");
        assert!(
            !node
                .audit_lines()
                .iter()
                .any(|l| l.contains("\"action\":\"join\"")),
            "a check is not a join"
        );
        let state = browser::state(&patient).await;
        assert_eq!(state["participantId"], Value::Null, "{state}");
    });
}

/// Presses "Check my connection" and waits for the verdict: (the paths that worked, the text).
async fn check_connection(client: &Client) -> (String, String) {
    click(client, "#check").await;
    let mut verdict = (String::new(), String::new());
    wait_for(Duration::from_secs(40), "the connection check's verdict", async || {
        let now = run_js(
            client,
            "const out = document.getElementById('check-result');\
             return {busy: document.getElementById('check').disabled, paths: out.dataset.paths || '', text: out.textContent};",
        )
        .await;
        if now["busy"] == true {
            return Err(now.to_string());
        }
        verdict = (
            now["paths"].as_str().unwrap_or_default().to_string(),
            now["text"].as_str().unwrap_or_default().to_string(),
        );
        Ok(())
    })
    .await;
    verdict
}

/// A node on loopback that hands out the tenant's relay (coturn, as the operator configures
/// it), with the node's media port and the relay's address, for firewall rules.
async fn node_with_relay(
    dir: &std::path::Path,
) -> (bedside_tests::turn::Coturn, TestNode, String, String) {
    let (coturn, settings) = bedside_tests::turn::start_for_loopback_node(dir).await;
    let node = TestNode::start_with(|c| c.network.relay = Some(settings)).await;
    let media = node.running.as_ref().expect("an in-process node").media;
    let port = media.port().to_string();
    (
        coturn,
        node,
        port,
        bedside_tests::turn::relay_ip().to_string(),
    )
}

/// Runs `script` in the page and returns what it returns.
async fn run_js(client: &Client, script: &str) -> Value {
    client
        .execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// The device ids a picker offers.
async fn picker_options(client: &Client, id: &str) -> Vec<String> {
    let options = run_js(
        client,
        &format!("return Array.from(document.getElementById('{id}').options).map(o => o.value);"),
    )
    .await;
    serde_json::from_value(options).unwrap_or_default()
}

/// Chooses `device` in picker `id` as a person would (a change event).
async fn choose(client: &Client, id: &str, device: &str) {
    client
        .execute(
            "const s = document.getElementById(arguments[0]); s.value = arguments[1];\
             s.dispatchEvent(new Event('change'));",
            vec![Value::from(id), Value::from(device)],
        )
        .await
        .expect("choose a device");
}

/// Before joining, a patient sees their own camera and their microphone's level, and picks
/// the third of three cameras; in the call they switch back to the first: the node gets the new
/// camera's video on the same connection (no reconnect), and the clinician keeps decoding it.
#[test]
fn a_patient_checks_camera_and_microphone_before_joining_and_switches_camera_mid_call() {
    with_a_node_and_browsers(async |node, driver| {
        let clinician = driver.browser().await;
        let patient = driver
            .browser_with(|args| {
                for a in args.iter_mut() {
                    if a == "--use-fake-device-for-media-stream" {
                        // The second fake camera is a depth camera (Y16), the third an ordinary one.
                        *a = "--use-fake-device-for-media-stream=device-count=3".into();
                    }
                }
            })
            .await;
        let token = node.token("visit-devices", "u-patient", Role::Host);
        patient
            .goto(&link(node, "visit-devices", &token))
            .await
            .expect("open the link");
        // The preview plays and the meter moves (Chromium's fake microphone beeps).
        let mut loudest = 0.0f64;
        wait_for(
            Duration::from_secs(20),
            "the preview and the level meter",
            async || {
                let width = run_js(
                    &patient,
                    "return document.getElementById('preview').videoWidth;",
                )
                .await;
                let level = browser::state(&patient).await["level"]
                    .as_f64()
                    .unwrap_or(0.0);
                loudest = loudest.max(level);
                if width.as_u64().unwrap_or(0) > 0 && loudest > 0.01 {
                    Ok(())
                } else {
                    Err(format!("preview width {width}, loudest level {loudest}"))
                }
            },
        )
        .await;
        let cameras = picker_options(&patient, "camera-select").await;
        assert_eq!(cameras.len(), 3, "three fake cameras offered: {cameras:?}");
        assert!(!picker_options(&patient, "mic-select").await.is_empty());
        choose(&patient, "camera-select", &cameras[2]).await;
        wait_for(
            Duration::from_secs(10),
            "the preview follows the pick",
            async || {
                let state = browser::state(&patient).await;
                let previewed = run_js(
                    &patient,
                    "const t = document.getElementById('preview').srcObject.getVideoTracks()[0];\
                 return t && t.readyState === 'live' ? t.getSettings().deviceId : null;",
                )
                .await;
                if state["devices"]["camera"] == cameras[2].as_str()
                    && previewed == cameras[2].as_str()
                {
                    Ok(())
                } else {
                    Err(format!("{state} previewed {previewed}"))
                }
            },
        )
        .await;

        open(
            &clinician,
            node,
            "visit-devices",
            &node.token("visit-devices", "u-clinician", Role::Host),
        )
        .await;
        click(&patient, "#join").await;
        let browsers = [clinician, patient];
        each_decodes_video(&browsers, "video").await;
        let [clinician, patient] = browsers;
        let stats = browser::stats(&patient).await;
        assert_eq!(stats["sending"]["camera"], cameras[2].as_str(), "{stats}");

        choose(&patient, "camera-select", &cameras[0]).await;
        wait_for(
            Duration::from_secs(10),
            "the node gets the first camera",
            async || {
                let stats = browser::stats(&patient).await;
                if stats["sending"]["camera"] == cameras[0].as_str() {
                    Ok(())
                } else {
                    Err(stats.to_string())
                }
            },
        )
        .await;
        let before: u64 = decoded_video(&browser::stats(&clinician).await)
            .iter()
            .sum();
        wait_for(
            Duration::from_secs(20),
            "the clinician keeps decoding",
            async || {
                let now: u64 = decoded_video(&browser::stats(&clinician).await)
                    .iter()
                    .sum();
                if now > before + 30 {
                    Ok(())
                } else {
                    Err(format!("{before} -> {now} frames"))
                }
            },
        )
        .await;
        let state = browser::state(&patient).await;
        assert_eq!(
            state["reconnects"], 0,
            "the call was never dropped: {state}"
        );
        assert_eq!(state["devices"]["camera"], cameras[0].as_str(), "{state}");
    });
}

/// A patient without a usable camera (or who would rather not show one) ticks "audio only":
/// the clinician hears them and receives no video from them, and the patient still sees the
/// clinician.
#[test]
fn a_patient_who_joins_with_audio_only_is_heard_and_sends_no_video() {
    with_a_node_and_browsers(async |node, driver| {
        let (clinician, patient) = (driver.browser().await, driver.browser().await);
        let token = node.token("visit-audio", "u-patient", Role::Host);
        patient
            .goto(&link(node, "visit-audio", &token))
            .await
            .expect("open the link");
        click(&patient, "#audio-only").await;
        wait_for(Duration::from_secs(10), "audio only chosen", async || {
            let state = browser::state(&patient).await;
            let hidden = run_js(
                &patient,
                "return document.getElementById('preview').hidden;",
            )
            .await;
            if state["audioOnly"] == true && hidden == true {
                Ok(())
            } else {
                Err(format!("{state} preview hidden {hidden}"))
            }
        })
        .await;
        open(
            &clinician,
            node,
            "visit-audio",
            &node.token("visit-audio", "u-clinician", Role::Host),
        )
        .await;
        click(&patient, "#join").await;
        each_decodes_video(std::slice::from_ref(&patient), "the clinician's video").await;
        wait_for(
            Duration::from_secs(20),
            "the clinician hears the patient",
            async || {
                let stats = browser::stats(&clinician).await;
                let heard = audio_bytes(&stats).iter().any(|b| *b > 5_000);
                if heard {
                    Ok(())
                } else {
                    Err(stats.to_string())
                }
            },
        )
        .await;
        let stats = browser::stats(&clinician).await;
        assert!(
            decoded_video(&stats).iter().all(|f| *f == 0),
            "no video from an audio-only patient: {stats}"
        );
        let camera_button = run_js(
            &patient,
            "return document.getElementById('camera').disabled;",
        )
        .await;
        assert_eq!(camera_button, true, "nothing to turn on or off");
        assert!(browser::stats(&patient).await["sending"]["camera"].is_null());
    });
}

/// A browser that refuses the camera and microphone: the page says, in plain words, where to
/// allow them, before the patient even tries to join.
#[test]
fn a_browser_that_refuses_the_camera_gets_plain_help() {
    with_a_node_and_browsers(async |node, driver| {
        let patient = driver
            .browser_with(|args| {
                args.retain(|a| a != "--use-fake-ui-for-media-stream");
                args.push("--deny-permission-prompts".into());
            })
            .await;
        let token = node.token("visit-denied", "u-patient", Role::Host);
        patient
            .goto(&link(node, "visit-denied", &token))
            .await
            .expect("open the link");
        wait_for(Duration::from_secs(15), "the help shows", async || {
            let state = browser::state(&patient).await;
            let shown = run_js(
                &patient,
                "return !document.getElementById('device-help').hidden;",
            )
            .await;
            let help = state["deviceHelp"].as_str().unwrap_or_default().to_string();
            if shown == true
                && help.contains("allow Camera and Microphone")
                && help.contains("reload this page")
            {
                Ok(())
            } else {
                Err(format!("{state}"))
            }
        })
        .await;
    });
}

/// WCAG 2.1 A and AA, checked by axe-core inside Chromium on every page of a visit: before
/// joining, the waiting room, the host's call with its waiting list, the patient's call, and a
/// visit that has ended. Zero violations; each page is saved as a screenshot artifact.
#[test]
fn every_page_of_a_visit_passes_axe_core_wcag_2_1_aa() {
    every_page_passes_axe_in("en");
}

/// The same pages in Spanish (the browser's language), the ended page included.
#[test]
fn every_page_of_a_visit_passes_axe_core_wcag_2_1_aa_in_spanish() {
    every_page_passes_axe_in("es");
}

/// The patient uses the keyboard only: Tab from the top of the page reaches Join, Enter joins.
fn every_page_passes_axe_in(lang: &'static str) {
    if !browser::require_or_skip() {
        return;
    }
    let axe = match browser::axe_source() {
        Ok(axe) => axe,
        Err(why) => {
            bedside_tests::run_or_skip("accessibility check", Some(why), "BEDSIDE_REQUIRE_TOOLS");
            return;
        }
    };
    let netns = Netns::create();
    netns.run(move || async move {
        let node = TestNode::start().await;
        let driver = Driver::start().await;
        let language = move |args: &mut Vec<String>| {
            args.push(format!("--lang={lang}"));
            args.push(format!("--accept-lang={lang}"));
        };
        let (clinician, patient, late) = (
            driver.browser_with(language).await,
            driver.browser_with(language).await,
            driver.browser_with(language).await,
        );
        let mut found = Vec::new();
        let mut check = async |client: &Client, page: &str| {
            browser::save_screenshot(client, &format!("a11y-{lang}-{page}")).await;
            let shown = run_js(client, "return document.documentElement.lang;").await;
            if shown != lang {
                found.push(format!("{page}: the page is in {shown}, not {lang}"));
            }
            for violation in browser::accessibility_violations(client, &axe).await {
                found.push(format!("{page}: {violation}"));
            }
        };
        open(
            &clinician,
            &node,
            "visit-a11y",
            &node.token("visit-a11y", "u-clinician", Role::Host),
        )
        .await;
        patient
            .goto(&link(
                &node,
                "visit-a11y",
                &node.token("visit-a11y", "u-patient", Role::Participant),
            ))
            .await
            .expect("open the link");
        shows_the_preview(&patient).await;
        check(&patient, "pre-join").await;
        join_by_keyboard(&patient).await;
        wait_for(Duration::from_secs(15), "the waiting room", async || {
            let state = browser::state(&patient).await;
            if state["page"] == "waiting" {
                Ok(())
            } else {
                Err(state.to_string())
            }
        })
        .await;
        check(&patient, "waiting").await;
        wait_for(
            Duration::from_secs(15),
            "the host sees who waits",
            async || {
                let state = browser::state(&clinician).await;
                if state["waitingRoom"]
                    .as_array()
                    .is_some_and(|w| !w.is_empty())
                {
                    Ok(())
                } else {
                    Err(state.to_string())
                }
            },
        )
        .await;
        check(&clinician, "in-call-host").await;
        click(&clinician, "#waiting-list .admit").await;
        let browsers = [clinician, patient];
        each_decodes_video(&browsers, "video").await;
        check(&browsers[1], "in-call-patient").await;
        let expired = sign(
            &node.tenant,
            &node.join_key,
            "visit-a11y",
            "u-late",
            Role::Participant,
            -120,
        );
        late.goto(&link(&node, "visit-a11y", &expired))
            .await
            .expect("open the link");
        wait_for(Duration::from_secs(10), "the ended page", async || {
            let state = browser::state(&late).await;
            if state["page"] == "ended" {
                Ok(())
            } else {
                Err(state.to_string())
            }
        })
        .await;
        check(&late, "ended").await;
        assert!(
            found.is_empty(),
            "WCAG 2.1 AA violations ({lang}):\n{}",
            found.join("\n")
        );
    });
}

/// Tab from the top of the page until Join has the focus (it must, within the page's controls),
/// then Enter.
async fn join_by_keyboard(client: &Client) {
    const TAB: &str = "\u{e004}";
    const ENTER: &str = "\u{e007}";
    run_js(
        client,
        "document.activeElement && document.activeElement.blur(); return null;",
    )
    .await;
    for _ in 0..20 {
        let focused = client.active_element().await.expect("the focused element");
        if focused.attr("id").await.ok().flatten().as_deref() == Some("join") {
            focused.send_keys(ENTER).await.expect("press Enter");
            return;
        }
        focused.send_keys(TAB).await.expect("press Tab");
    }
    panic!("Tab never reached the Join button");
}

/// Waits until the page previews the camera, before joining.
async fn shows_the_preview(client: &Client) {
    wait_for(Duration::from_secs(15), "the preview", async || {
        let width = run_js(
            client,
            "return document.getElementById('preview').videoWidth;",
        )
        .await;
        if width.as_u64().unwrap_or(0) > 0 {
            Ok(())
        } else {
            Err(width.to_string())
        }
    })
    .await;
}

/// Whether the page is wider than the screen (a phone user would have to scroll sideways).
async fn scrolls_sideways(client: &Client) -> Value {
    run_js(
        client,
        "const d = document.documentElement;\
         return d.scrollWidth > d.clientWidth ? `${d.scrollWidth} > ${d.clientWidth}` : false;",
    )
    .await
}

/// A patient on a phone (Chromium's mobile emulation, 360 px wide): the page before joining
/// and the call itself fit the screen, with no sideways scrolling, and Leave is on screen.
#[test]
fn on_a_360_pixel_phone_the_visit_fits_the_screen() {
    with_a_node_and_browsers(async |node, driver| {
        let (clinician, phone) = (driver.browser().await, driver.phone().await);
        phone
            .goto(&link(
                node,
                "visit-phone",
                &node.token("visit-phone", "u-patient", Role::Host),
            ))
            .await
            .expect("open the link");
        shows_the_preview(&phone).await;
        let width = run_js(&phone, "return window.innerWidth;").await;
        assert_eq!(width, 360, "the emulated phone is 360 px wide");
        browser::save_screenshot(&phone, "phone-pre-join").await;
        assert_eq!(scrolls_sideways(&phone).await, false, "before joining");
        open(
            &clinician,
            node,
            "visit-phone",
            &node.token("visit-phone", "u-clinician", Role::Host),
        )
        .await;
        click(&phone, "#join").await;
        let browsers = [clinician, phone];
        each_decodes_video(&browsers, "video").await;
        let phone = &browsers[1];
        browser::save_screenshot(phone, "phone-in-call").await;
        assert_eq!(scrolls_sideways(phone).await, false, "in the call");
        let leave = run_js(
            phone,
            "const r = document.getElementById('leave').getBoundingClientRect();\
             return r.right <= window.innerWidth && r.width > 0;",
        )
        .await;
        assert_eq!(leave, true, "Leave is on the screen");
        click(phone, "#layout").await;
        browser::save_screenshot(phone, "phone-speaker-view").await;
        assert_eq!(scrolls_sideways(phone).await, false, "in speaker view");
    });
}

/// A patient whose browser speaks Spanish gets the visit in Spanish, the node's refusals
/// included; the pages stay WCAG 2.1 AA in Spanish; the patient can switch to English.
#[test]
fn a_spanish_speaking_patient_gets_the_visit_in_spanish_and_can_switch_to_english() {
    if !browser::require_or_skip() {
        return;
    }
    let axe = match browser::axe_source() {
        Ok(axe) => axe,
        Err(why) => {
            bedside_tests::run_or_skip("accessibility check", Some(why), "BEDSIDE_REQUIRE_TOOLS");
            return;
        }
    };
    let netns = Netns::create();
    netns.run(|| async move {
        let node = TestNode::start().await;
        let driver = Driver::start().await;
        let spanish = |args: &mut Vec<String>| {
            args.push("--lang=es".into());
            args.push("--accept-lang=es".into());
        };
        let patient = driver.browser_with(spanish).await;
        let text = async |client: &Client, id: &str| {
            run_js(client, &format!("return document.getElementById('{id}').textContent;")).await
        };
        patient
            .goto(&link(&node, "visita", &node.token("visita", "u-patient", Role::Participant)))
            .await
            .expect("open the link");
        assert_eq!(run_js(&patient, "return document.documentElement.lang;").await, "es");
        let title = run_js(&patient, "return document.title;").await;
        assert!(
            title.as_str().is_some_and(|t| t.ends_with("· consulta por video")),
            "the tab's title in Spanish: {title}"
        );
        assert_eq!(text(&patient, "join").await, "Entrar a la consulta");
        let mut found = browser::accessibility_violations(&patient, &axe).await;
        browser::save_screenshot(&patient, "es-pre-join").await;
        click(&patient, "#join").await;
        wait_for(Duration::from_secs(15), "la sala de espera", async || {
            let state = browser::state(&patient).await;
            if state["visitTitle"] == "Su profesional de salud le dará paso" {
                Ok(())
            } else {
                Err(state.to_string())
            }
        })
        .await;
        found.extend(browser::accessibility_violations(&patient, &axe).await);
        browser::save_screenshot(&patient, "es-waiting").await;
        assert!(found.is_empty(), "WCAG 2.1 AA violations in Spanish:\n{}", found.join("\n"));

        // Switched to English on the page: everything shown is said again in English.
        patient
            .execute(
                "const s = document.getElementById('language'); s.value = 'en';\
                 s.dispatchEvent(new Event('change'));",
                vec![],
            )
            .await
            .expect("switch language");
        let state = browser::state(&patient).await;
        assert_eq!(state["visitTitle"], "Your clinician will let you in", "{state}");
        assert_eq!(text(&patient, "leave").await, "Leave");
        assert_eq!(run_js(&patient, "return document.documentElement.lang;").await, "en");

        // The node's refusal, in Spanish for a Spanish reader.
        let intruder = driver.browser_with(spanish).await;
        let forged = sign(&node.tenant, &[9u8; 32], "visita", "u-x", Role::Host, 600);
        open(&intruder, &node, "visita", &forged).await;
        wait_for(Duration::from_secs(10), "el rechazo en español", async || {
            let status = browser::state(&intruder).await["status"].clone();
            if status == "Este enlace no es válido para esta consulta. Pida a la clínica un enlace nuevo." {
                Ok(())
            } else {
                Err(status.to_string())
            }
        })
        .await;
    });
}

/// Two browsers in `room`, both hosts (no waiting room), each decoding the other's video.
async fn two_hosts_in_a_call(driver: &Driver, node: &TestNode, room: &str) -> Vec<Client> {
    let mut browsers = Vec::new();
    for user in ["u-clinician", "u-patient"] {
        let client = driver.browser().await;
        open(&client, node, room, &node.token(room, user, Role::Host)).await;
        browsers.push(client);
    }
    each_decodes_video(&browsers, "video").await;
    browsers
}

/// Every video frame the page decoded so far.
async fn decoded_frames(b: &Client) -> u64 {
    decoded_video(&browser::stats(b).await).iter().sum()
}

/// A network blip: every packet between one browser and the node's media port is dropped for
/// 5 s (iptables in the test's namespace), then let through again. The call comes back by itself,
/// without anyone clicking and without the page rejoining: the other side decodes the browser's
/// video again.
#[test]
fn a_five_second_network_drop_heals_without_user_action() {
    if !browser::require_or_skip() {
        return;
    }
    let netns = Netns::create();
    netns.run(|| async {
        let node = TestNode::start().await;
        let media = node.running.as_ref().expect("an in-process node").media;
        let driver = Driver::start().await;
        let browsers = two_hosts_in_a_call(&driver, &node, "visit-blip").await;
        {
            let port = media.port().to_string();
            let _cut = [
                &["INPUT", "-p", "udp", "--dport", &port, "-j", "DROP"][..],
                &["INPUT", "-p", "udp", "--sport", &port, "-j", "DROP"],
            ]
            .map(browser::IptablesRule::insert);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let during = decoded_frames(&browsers[0]).await;
            tokio::time::sleep(Duration::from_secs(4)).await;
            let later = decoded_frames(&browsers[0]).await;
            assert!(
                later <= during + 5,
                "the cut holds: {during} -> {later} frames"
            );
        }
        let restored = decoded_frames(&browsers[0]).await;
        wait_for(Duration::from_secs(20), "video flows again", async || {
            let now = decoded_frames(&browsers[0]).await;
            if now > restored + 30 {
                Ok(())
            } else {
                Err(format!("{restored} -> {now}"))
            }
        })
        .await;
        for b in &browsers {
            let state = browser::state(b).await;
            assert_eq!(
                state["reconnects"], 0,
                "healed in place, no rejoin: {state}"
            );
        }
    });
}

/// A longer cut of the media port, UDP and TCP: the page shows a banner
/// that says the connection was interrupted and that nothing needs doing (in the page's
/// language, WCAG 2.1 AA), restarts ICE over the signaling that survived, and once the network
/// is back the call resumes without a rejoin; the node counts the restart.
#[test]
fn a_path_that_stays_cut_comes_back_through_an_ice_restart_with_a_banner() {
    if !browser::require_or_skip() {
        return;
    }
    let axe = browser::axe_source();
    if let Err(why) = &axe {
        bedside_tests::run_or_skip(
            "the banner's accessibility check",
            Some(why.clone()),
            "BEDSIDE_REQUIRE_TOOLS",
        );
    }
    let netns = Netns::create();
    netns.run(|| async move {
        let node = TestNode::start().await;
        let media = node.running.as_ref().expect("an in-process node").media;
        let driver = Driver::start().await;
        let browsers = two_hosts_in_a_call(&driver, &node, "visit-restart").await;
        {
            let port = media.port().to_string();
            // UDP and ICE-TCP alike (a restart would otherwise find its way over TCP).
            let _cut = [
                &["INPUT", "-p", "udp", "--dport", &port, "-j", "DROP"][..],
                &["INPUT", "-p", "udp", "--sport", &port, "-j", "DROP"],
                &["INPUT", "-p", "tcp", "--dport", &port, "-j", "DROP"],
                &["INPUT", "-p", "tcp", "--sport", &port, "-j", "DROP"],
            ]
            .map(browser::IptablesRule::insert);
            wait_for(
                Duration::from_secs(12),
                "the banner and a restart",
                async || {
                    let state = browser::state(&browsers[0]).await;
                    let said = state["banner"].as_str().unwrap_or_default();
                    if said.starts_with("Your connection was interrupted")
                        && state["iceRestarts"].as_u64() >= Some(1)
                    {
                        Ok(())
                    } else {
                        Err(state.to_string())
                    }
                },
            )
            .await;
            browser::save_screenshot(&browsers[0], "connection-interrupted").await;
            if let Ok(axe) = &axe {
                let found = browser::accessibility_violations(&browsers[0], axe).await;
                assert!(found.is_empty(), "the banner is WCAG 2.1 AA: {found:?}");
            }
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
        let restored = decoded_frames(&browsers[0]).await;
        wait_for(Duration::from_secs(30), "video flows again", async || {
            let now = decoded_frames(&browsers[0]).await;
            if now > restored + 30 {
                Ok(())
            } else {
                Err(format!("{restored} -> {now}"))
            }
        })
        .await;
        wait_for(Duration::from_secs(10), "the banner goes", async || {
            let state = browser::state(&browsers[0]).await;
            if state["banner"].is_null() {
                Ok(())
            } else {
                Err(state.to_string())
            }
        })
        .await;
        let state = browser::state(&browsers[0]).await;
        assert_eq!(state["reconnects"], 0, "healed by ICE, no rejoin: {state}");
        let restarts = bedside_tests::operator::counter_sum(
            &node.metrics().await,
            "bedside_media_ice_restarts_total",
        );
        assert!(restarts >= 1.0, "the node counts the restart: {restarts}");
    });
}

/// Three in a visit, one of them (the interpreter) on a link limited to 100 kbit/s both ways
/// (tc on the namespace's loopback, matched on that browser's media port): the clinician and
/// the patient keep the picture they had of each other, at its size and still moving. (What the
/// interpreter sees on such a link is issue 19's open part: at 100 kbit/s its videos nearly
/// stop; docs/benchmarks.md has the 600 kbit/s figures.)
#[test]
fn one_participant_on_a_slow_link_does_not_degrade_the_others() {
    with_a_node_and_browsers(async |node, driver| {
        let mut browsers = Vec::new();
        for user in ["u-clinician", "u-patient", "u-interpreter"] {
            let client = driver.browser().await;
            open(
                &client,
                node,
                "visit-slow",
                &node.token("visit-slow", user, Role::Host),
            )
            .await;
            browsers.push(client);
        }
        let mut ids = Vec::new();
        for (i, b) in browsers.iter().enumerate() {
            wait_for(
                Duration::from_secs(60),
                &format!("browser {i} decodes two videos"),
                async || {
                    let decoded = decoded_video(&browser::stats(b).await);
                    if decoded.iter().filter(|f| **f > 10).count() >= 2 {
                        Ok(())
                    } else {
                        Err(format!("{decoded:?}"))
                    }
                },
            )
            .await;
            ids.push(
                browser::state(b).await["participantId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        // The width each of the clinician and the patient decodes the other at, sampled.
        let widths = async |phase: Duration| {
            let mut seen = [Vec::new(), Vec::new()];
            let end = Instant::now() + phase;
            while Instant::now() < end {
                for (i, other) in [(0, 1), (1, 0)] {
                    let stats = browser::stats(&browsers[i]).await;
                    let width = stats["inbound"]
                        .as_array()
                        .and_then(|v| {
                            v.iter()
                                .find(|x| x["kind"] == "video" && x["from"] == ids[other].as_str())
                        })
                        .and_then(|x| x["frameWidth"].as_u64())
                        .unwrap_or(0);
                    seen[i].push(width);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            seen.map(|mut w| {
                w.sort_unstable();
                w[w.len() / 2]
            })
        };
        // What the interpreter receives per second (all media), unshaped and shaped.
        let received = async || -> u64 {
            let stats = browser::stats(&browsers[2]).await;
            stats["inbound"]
                .as_array()
                .map(|v| v.iter().filter_map(|x| x["bytesReceived"].as_u64()).sum())
                .unwrap_or(0)
        };
        let start_bytes = received().await;
        let before = widths(Duration::from_secs(5)).await;
        let unshaped_bps = (received().await - start_bytes) * 8 / 5;
        assert!(
            before.iter().all(|w| *w > 0),
            "decoding each other: {before:?}"
        );
        let stats = browser::stats(&browsers[2]).await;
        let port = browser::media_port(&stats)
            .unwrap_or_else(|| panic!("the interpreter's media port: {stats}"));
        let inbound = |stats: &Value| stats["inbound"].as_array().map(|v| v.len()).unwrap_or(0);
        assert!(
            inbound(&stats) >= 2,
            "the interpreter receives both: {stats}"
        );
        let (during, moving) = {
            let _slow = browser::ShapedLink::new(port, "100kbit");
            tokio::time::sleep(Duration::from_secs(3)).await;
            let shaped_from = received().await;
            let frames_from = [
                decoded_frames(&browsers[0]).await,
                decoded_frames(&browsers[1]).await,
            ];
            let during = widths(Duration::from_secs(8)).await;
            let shaped_bps = (received().await - shaped_from) * 8 / 8;
            assert!(
                shaped_bps < 100_000 && shaped_bps * 100 < unshaped_bps * 85,
                "the link is slow: {unshaped_bps} bit/s received before, {shaped_bps} bit/s limited"
            );
            let frames_to = [
                decoded_frames(&browsers[0]).await,
                decoded_frames(&browsers[1]).await,
            ];
            (
                during,
                [frames_to[0] - frames_from[0], frames_to[1] - frames_from[1]],
            )
        };
        for (i, who) in ["the clinician", "the patient"].iter().enumerate() {
            assert!(
                during[i] >= before[i],
                "{who} decoded the other at {} px, then {} px while the interpreter's link was slow",
                before[i],
                during[i]
            );
            // 8 s of the other's video at 10 fps or more (the interpreter's counts too, little).
            assert!(
                moving[i] > 80,
                "{who}'s video keeps moving: {} frames in 8 s",
                moving[i]
            );
        }
    });
}
