//! aiortc (Python) as a second independent WebRTC stack. The Python side owns the peer
//! connection (tests/peers/aiortc_peer.py); this side owns signaling to the node.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::media::{Signal, TestNode};

/// Why aiortc tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import aiortc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| {
        "python3 cannot import aiortc (pip install aiortc; scripts/test-deps.sh does it)".into()
    })
}

#[derive(Debug)]
pub struct AiortcPeer {
    child: Child,
    pub participant_id: String,
    /// The last stats line the Python side printed.
    pub stats: Arc<Mutex<Value>>,
    task: tokio::task::JoinHandle<()>,
}

impl AiortcPeer {
    pub async fn join(node: &TestNode, room: &str, token: &str) -> AiortcPeer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/aiortc_peer.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the aiortc peer");
        let mut stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let offer: Value = serde_json::from_str(
            &lines
                .next_line()
                .await
                .expect("read from aiortc")
                .expect("aiortc prints its offer"),
        )
        .expect("JSON offer");

        let mut signal = Signal::connect(node).await;
        let joined = signal.join(room, token).await;
        assert_eq!(joined["type"], "joined", "{joined}");
        let participant_id = joined["participantId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        signal
            .send(json!({"v": 1, "type": "offer", "sdp": offer["sdp"]}))
            .await;

        let stats = Arc::new(Mutex::new(Value::Null));
        let stats_task = stats.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = signal.recv_any() => {
                        let Some(m) = m else { break };
                        if m["type"] == "answer" || m["type"] == "offer" {
                            let line = json!({"type": m["type"], "sdp": m["sdp"]}).to_string() + "\n";
                            if stdin.write_all(line.as_bytes()).await.is_err() {
                                break;
                            }
                        }
                    }
                    line = lines.next_line() => {
                        let Ok(Some(line)) = line else { break };
                        let Ok(m) = serde_json::from_str::<Value>(&line) else { continue };
                        match m["type"].as_str() {
                            Some("answer") => {
                                signal.send(json!({"v": 1, "type": "answer", "sdp": m["sdp"]})).await;
                            }
                            Some("stats") => {
                                if let Ok(mut s) = stats_task.lock() {
                                    *s = m;
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            let _ = stdin.write_all(b"{\"type\":\"quit\"}\n").await;
            signal.close().await;
        });
        AiortcPeer {
            child,
            participant_id,
            stats,
            task,
        }
    }

    /// Video frames aiortc decoded from what the node forwarded, over all its video tracks.
    /// The last audio RTP payloads aiortc received, exactly as the node forwarded them.
    pub fn audio_payloads(&self) -> Vec<Vec<u8>> {
        let stats = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        stats["audioPayloads"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str())
                    .filter_map(|h| {
                        (0..h.len())
                            .step_by(2)
                            .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
                            .collect::<Option<Vec<u8>>>()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn video_frames(&self) -> u64 {
        let stats = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        stats["frames"]
            .as_object()
            .map(|f| {
                f.iter()
                    .filter(|(k, _)| k.starts_with("video"))
                    .filter_map(|(_, v)| v.as_u64())
                    .sum()
            })
            .unwrap_or(0)
    }

    pub async fn stop(mut self) {
        self.task.abort();
        let _ = self.child.kill().await;
    }
}
