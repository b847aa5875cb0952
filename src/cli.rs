//! The command line: one file per subcommand under `cli/`. `main` parses, then calls `run`.

pub mod decisions;
pub mod policy;
pub mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit codes, following sysexits where one fits.
pub mod exit {
    pub const OK: u8 = 0;
    /// A check failed (verify found a break, validate found errors).
    pub const FAILED: u8 = 1;
    /// The configuration or the command line is wrong (EX_USAGE).
    pub const USAGE: u8 = 64;
    /// A runtime failure: store, bind, I/O.
    pub const SOFTWARE: u8 = 70;
}

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A policy-enforcing access gateway with consolidated billing"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(serve::ServeArgs),
    /// Check policy trees offline, and a draft's impact on logged decisions.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Review the decision log: explain a decision, verify the chain, prune old records.
    #[command(subcommand)]
    Decisions(decisions::DecisionsCommand),
}

/// `--config FILE`, shared by every subcommand that reads state.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The operator configuration file.
    #[arg(
        long,
        short = 'c',
        default_value = "config/tollgate.toml",
        env = "TOLLGATE_CONFIG"
    )]
    pub config: PathBuf,
}

/// Runs the parsed command, returning the process exit code.
pub fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Policy(command) => policy::run(command),
        Command::Decisions(command) => decisions::run(command),
    }
}
