//! Shared pieces of bedside's benchmarks: results are printed as aligned tables so a run can
//! be pasted into an issue or docs/ as is.

use std::time::{Duration, Instant};

pub mod fleet;
pub mod load;

/// A benchmark's output is its figures: an in-process node logs warnings only (the tests'
/// default also prints its picture decisions), unless `RUST_LOG` says otherwise. Called before
/// the first node.
pub fn log_figures_only() {
    bedside_tests::media::log_by_default("warn");
}

/// Runs `f` for at least `budget`: calls per second and the mean time per call. `f` returns
/// something derived from its work so the optimiser cannot drop it.
pub fn rate(budget: Duration, mut f: impl FnMut() -> usize) -> (f64, Duration) {
    let started = Instant::now();
    let mut calls = 0u32;
    let mut sink = 0usize;
    while started.elapsed() < budget {
        sink = sink.wrapping_add(f());
        calls += 1;
    }
    std::hint::black_box(sink);
    let elapsed = started.elapsed();
    (f64::from(calls) / elapsed.as_secs_f64(), elapsed / calls)
}

/// The `p` quantile (0..=1) of sorted durations, in microseconds.
pub fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    // A figure from no samples would be published as a measured zero.
    assert!(
        !sorted.is_empty(),
        "no samples were taken: nothing to report (the benchmark failed)"
    );
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// The `q` quantile (0 to 1) of `sorted`, rounded down to a sample; `None` without samples (a
/// table shows those as not measured).
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[(last as f64 * q) as usize])
}

/// The release build of the media node: `BEDSIDE_MEDIA_NODE_BIN`, or the shared target dir's.
pub fn media_node_binary() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("BEDSIDE_MEDIA_NODE_BIN") {
        return std::path::PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release/bedside-media-node")
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`), if the process is readable.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// Prints a titled table; the first row is the header.
pub fn print_table(title: &str, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    println!("\n{title}");
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
            .collect();
        println!("| {} |", cells.join(" | "));
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            println!("|-{}-|", rule.join("-|-"));
        }
    }
}

/// Replaces the table between `<!-- {marker}:begin -->` and `<!-- {marker}:end -->` in
/// docs/benchmarks.md, so the published figures are the last run's.
pub fn write_docs_table(marker: &str, table: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
    let Ok(doc) = std::fs::read_to_string(&path) else {
        return;
    };
    let (begin, end) = (
        format!("<!-- {marker}:begin -->"),
        format!("<!-- {marker}:end -->"),
    );
    let (Some(b), Some(e)) = (doc.find(&begin), doc.find(&end)) else {
        eprintln!("docs/benchmarks.md has no {marker} markers; not updated");
        return;
    };
    let updated = format!("{}{begin}\n{table}{}", &doc[..b], &doc[e..]);
    if std::fs::write(&path, updated).is_ok() {
        println!("written to docs/benchmarks.md");
    }
}
