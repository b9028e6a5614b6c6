//! Shared pieces of bedside's benchmarks: results are printed as aligned tables so a run can
//! be pasted into an issue or docs/ as is.

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
