//! `bedside-audit verify FILE --key-file KEY`: checks a stored audit stream and names the first
//! broken record and why (altered, removed, reordered, wrong key). Exit 0 intact, 1 broken,
//! 2 unusable input.

use std::path::PathBuf;
use std::process::ExitCode;

use bedside_audit::{AuditKey, verify};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "bedside-audit",
    version,
    about = "Verify bedside audit records"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Verify a file of JSON-line audit records (`-` for stdin).
    Verify {
        file: PathBuf,
        /// The tenant's audit HMAC key (the `audit-hmac.key` of its key Secret).
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
    },
}

fn main() -> ExitCode {
    let Command::Verify { file, key_file } = Cli::parse().command;
    let key = match std::fs::read(&key_file)
        .map_err(|e| format!("{}: cannot read the key: {e}", key_file.display()))
        .and_then(|k| AuditKey::new(&k).map_err(|e| format!("{}: {e}", key_file.display())))
    {
        Ok(key) => key,
        Err(e) => {
            eprintln!("bedside-audit: {e}");
            return ExitCode::from(2);
        }
    };
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(&file)
    };
    let text = match text {
        Ok(text) => text,
        Err(e) => {
            eprintln!("bedside-audit: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match verify(text.lines(), &key) {
        Ok(v) => {
            println!(
                "{}: intact: {} records in {} chain(s), {} exact re-deliveries",
                file.display(),
                v.records(),
                v.chains.len(),
                v.duplicates()
            );
            for c in &v.chains {
                println!(
                    "  {}: {} records (seq {}..{}), {} checkpoint(s), {}",
                    c.node,
                    c.records,
                    c.first_seq.unwrap_or(0),
                    c.last_seq.unwrap_or(0),
                    c.checkpoints,
                    if c.closed {
                        "closed cleanly"
                    } else {
                        "open (the node still runs, or stopped without closing its chain)"
                    }
                );
            }
            ExitCode::SUCCESS
        }
        Err(broken) => {
            println!("{}: BROKEN: {broken}", file.display());
            ExitCode::FAILURE
        }
    }
}
