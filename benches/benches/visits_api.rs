//! Visits booked per second through the visits API on one media node, as a scheduling system
//! books a day's appointments: HTTPS (TLS 1.3, kept-alive connections), a bearer credential,
//! the booking checked and one link signed per person, an audit record per call. The node and
//! the clients share this machine's cores, so the figure is a floor for a node of its own.
//!
//! Prints visits/s for 1, 8 and 32 concurrent callers, with latency at p50/p99.
//!
//! Run: `cargo bench -p bedside-benches --bench visits_api`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bedside_benches::{percentile_us, print_table};
use bedside_crds::node_config::ApiSettings;
use bedside_tests::https::Https;
use bedside_tests::media::TestNode;
use serde_json::json;

const BUDGET: Duration = Duration::from_secs(5);
const MAX_CALLERS: usize = 32;

fn main() {
    bedside_benches::log_figures_only();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    // A credential per caller (made now), so that each caller's rate is its own.
    let creds = tempfile::tempdir().expect("dir");
    let secrets: Vec<Arc<String>> = (0..MAX_CALLERS)
        .map(|i| {
            let mut secret = [0u8; 32];
            aws_lc_rs::rand::fill(&mut secret).expect("randomness");
            let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(creds.path().join(format!("bench-ehr-{i}")), &secret)
                .expect("credential");
            Arc::new(secret)
        })
        .collect();
    let dir = creds.path().to_path_buf();
    let mut node = TestNode::start_with(move |c| {
        c.api = Some(ApiSettings {
            credentials_dir: dir,
            // The bench measures the node, not the limit.
            requests_per_second: bedside_crds::node_config::MAX_API_REQUESTS_PER_SECOND,
        });
    })
    .await;
    let url = Arc::new(format!("{}/api/v1/visits", node.https_base()));
    let booking = Arc::new(json!({
        "durationMinutes": 30,
        "host": "Practitioner/dr-7",
        "participants": [{"reference": "Patient/8c1f2a", "role": "patient"}],
    }));
    let mut rows = vec![vec![
        "callers".to_string(),
        "visits/s".to_string(),
        "p50".to_string(),
        "p99".to_string(),
    ]];
    for callers in [1, 8, MAX_CALLERS] {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for secret in secrets.iter().take(callers) {
            let (https, url, secret, booking) = (
                Https::trusting(&node.cert_pem),
                url.clone(),
                secret.clone(),
                booking.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut took = Vec::new();
                while started.elapsed() < BUDGET {
                    let t = Instant::now();
                    let reply = https
                        .call("POST", &url, Some(&secret), Some(&booking))
                        .await;
                    assert_eq!(reply.status, 201, "{}", reply.text);
                    took.push(t.elapsed());
                }
                took
            }));
        }
        let mut took = Vec::new();
        for task in tasks {
            took.extend(task.await.expect("caller"));
        }
        let elapsed = started.elapsed().as_secs_f64();
        took.sort();
        rows.push(vec![
            callers.to_string(),
            format!("{:.0}", took.len() as f64 / elapsed),
            format!("{:.2} ms", percentile_us(&took, 0.50) / 1000.0),
            format!("{:.2} ms", percentile_us(&took, 0.99) / 1000.0),
        ]);
    }
    print_table(
        "Visits booked through the API on one node (HTTPS, credential, audit), this machine's 2 cores shared with the callers",
        &rows,
    );
    node.shutdown(Duration::from_secs(2)).await;
}
