//! Audit throughput and the latency auditing adds to a join.
//!
//! Records are sealed through the real delivery path (`bedside_audit::delivery`): the chain
//! (SHA-256 + HMAC-SHA-256), the stdout sink's writer (here /dev/null, so the pipe's reader
//! does not set the pace), and for the syslog rows a disk-backed buffer (appended and synced
//! per record) drained over TLS by a real rsyslog on loopback. Reported: records per second
//! sealed, records per second delivered to rsyslog, and the time `Auditor::record` takes, which
//! is what a join waits for (the join path checks the buffers and calls it once, synchronously).
//!
//! The goal (issue 6): >= 10,000 records/s per node, and < 1 ms added to a join at p99.
//! Run with `make bench` or `cargo bench -p bedside-benches --bench audit_throughput`.

use std::time::{Duration, Instant};

use bedside_audit::delivery::{self, AuditMetrics, NetworkSink, Who};
use bedside_audit::event::{Action, ActorRole, AuthMethod};
use bedside_benches::{percentile_us, print_table};
use bedside_tests::rsyslog::{self, Rsyslog};

const RECORDS: usize = 50_000;

/// What the sink received, measured only when all of it arrived.
enum Delivered {
    NoNetworkSink,
    Rate(f64),
    Incomplete(usize),
}

impl Delivered {
    fn cell(&self) -> String {
        match self {
            Delivered::NoNetworkSink => "-".to_string(),
            Delivered::Rate(d) => format!("{d:.0}"),
            Delivered::Incomplete(got) => {
                format!("n/a: {got} of {RECORDS} delivered within 120 s")
            }
        }
    }
}

struct Row {
    sinks: &'static str,
    sealed_per_sec: f64,
    delivered_per_sec: Delivered,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

async fn run(label: &'static str, syslog: Option<&Rsyslog>) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sinks = Vec::new();
    if let Some(sink) = syslog {
        sinks.push((
            1,
            NetworkSink::Syslog {
                address: format!("127.0.0.1:{}", sink.port),
                ca_pem: std::fs::read(&sink.ca_file).expect("ca"),
            },
        ));
    }
    let already = syslog.map_or(0, |s| s.received().len());
    let metrics =
        AuditMetrics::new(&prometheus::Registry::new(), "bench-clinic", "bench-node").expect("m");
    let devnull = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let auditor = delivery::start(
        delivery::Plan {
            key: &[7u8; 32],
            tenant: "bench-clinic",
            node: "bench-node",
            app: "bedside-media-node",
            out: Some(Box::new(std::io::BufWriter::new(devnull))),
            buffer_dir: dir.path(),
            chain_tail: dir.path().join("chain-tail.json"),
            sinks,
            buffer_bytes: 1 << 30,
            when_buffer_full: delivery::BufferFullPolicy::RefuseJoins,
            checkpoint_interval: Duration::from_secs(60),
        },
        &metrics,
    )
    .expect("auditor");
    let who = Who {
        user: Some("u-7f3a9c".into()),
        role: Some(ActorRole::Participant),
        auth: AuthMethod::JoinToken,
    };
    let ip = Some("127.0.0.1".parse().expect("ip"));
    let mut took = Vec::with_capacity(RECORDS);
    let started = Instant::now();
    for _ in 0..RECORDS {
        let t = Instant::now();
        // What a join does: the buffer check, then the record.
        assert!(!auditor.refuses_joins());
        auditor.record(&who, Action::Join, None, Some("visit-42"), ip);
        took.push(t.elapsed());
    }
    let sealing = started.elapsed();
    let delivered_per_sec = match syslog {
        Some(sink) => {
            let deadline = Instant::now() + Duration::from_secs(120);
            while sink.received().len() < already + RECORDS && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let got = sink.received().len() - already;
            // A partial count is not a rate: say what arrived instead of publishing it as one.
            if got < RECORDS {
                Delivered::Incomplete(got)
            } else {
                Delivered::Rate(got as f64 / started.elapsed().as_secs_f64())
            }
        }
        None => Delivered::NoNetworkSink,
    };
    took.sort_unstable();
    Row {
        sinks: label,
        sealed_per_sec: RECORDS as f64 / sealing.as_secs_f64(),
        delivered_per_sec,
        p50_us: percentile_us(&took, 0.50),
        p99_us: percentile_us(&took, 0.99),
        max_us: percentile_us(&took, 1.0),
    }
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| sinks | records sealed per second | delivered per second | record (join adds) p50 / p99 / max |\n|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.0} | {} | {:.1} µs / {:.1} µs / {:.0} µs |\n",
            r.sinks,
            r.sealed_per_sec,
            r.delivered_per_sec.cell(),
            r.p50_us,
            r.p99_us,
            r.max_us
        ));
    }
    out
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut rows = vec![run("chain + stdout", None).await];
        match rsyslog::unavailable() {
            Some(why) => eprintln!("syslog rows skipped: {why}"),
            None => {
                let dir = tempfile::tempdir().expect("tempdir");
                let sink = Rsyslog::start(dir.path()).await;
                rows.push(run("chain + stdout + syslog (TLS, buffered)", Some(&sink)).await);
            }
        }
        let mut printed = vec![vec![
            "sinks".to_string(),
            "sealed/s".into(),
            "delivered/s".into(),
            "record p50".into(),
            "record p99".into(),
            "record max".into(),
        ]];
        for r in &rows {
            printed.push(vec![
                r.sinks.to_string(),
                format!("{:.0}", r.sealed_per_sec),
                r.delivered_per_sec.cell(),
                format!("{:.1} µs", r.p50_us),
                format!("{:.1} µs", r.p99_us),
                format!("{:.0} µs", r.max_us),
            ]);
        }
        print_table(
            &format!("Audit: {RECORDS} join records through the delivery path"),
            &printed,
        );
        bedside_benches::write_docs_table("audit_throughput", &table(&rows));
    });
}
