//! `bedside-operator`: the Kubernetes operator for HealthcareTenant, and the offline tools a
//! platform team runs in its pipelines.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "bedside-operator",
    version,
    about = "Operator for bedside HealthcareTenants"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the HealthcareTenant CustomResourceDefinition as YAML.
    Crd,
    /// Check tenant YAML offline with exactly the CRD's rules (schema + CEL).
    ///
    /// Prints every violation with its field path; exits 1 on any violation or unreadable
    /// file, 0 when every HealthcareTenant is valid. Other kinds of objects are skipped.
    Validate(cli::validate::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", bedside_crds::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Validate(args) => cli::validate::run(&args),
    }
}
