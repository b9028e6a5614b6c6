//! `bedside-media-node`: the encrypted SFU clinicians and patients join from a browser.
//!
//! This release carries the config contract and join-token verification; `check-config` tells
//! an operator whether a node would accept a config, before the media path lands.

use bedside_media_node::config;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "bedside-media-node",
    version,
    about = "Encrypted WebRTC SFU for video visits"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check media-node config files the way the node does at start-up: exits 1, naming every
    /// offending field, when a file unlocks a BAA-locked setting or breaks a bound.
    CheckConfig {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::CheckConfig { files } => {
            let mut ok = true;
            for file in files {
                match config::load(&file) {
                    Ok(config) => println!(
                        "{}: valid config for tenant {}",
                        file.display(),
                        config.tenant.name
                    ),
                    Err(e) => {
                        ok = false;
                        println!("{e}");
                    }
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
