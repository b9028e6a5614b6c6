//! Subcommands for people and scripts: offline checks, and booking visits.

pub mod evidence;
pub mod keys;
pub mod validate;
pub mod visit;

/// A command's outcome for the shell: its text on stdout, or `error: …` on stderr and exit
/// code 1.
pub fn finish<E: std::fmt::Display>(result: Result<String, E>) -> std::process::ExitCode {
    match result {
        Ok(text) => {
            println!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
