//! The command line: one file per subcommand under `cli/`. `main` parses, then calls `run`.

pub mod bill;
pub mod decisions;
pub mod demo;
pub mod ledger;
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
    /// Run the gateway with demo services and a demo organization, and print a walkthrough.
    Demo(demo::DemoArgs),
    /// Print the current code of a TOTP secret.
    Totp(demo::TotpArgs),
    /// Print the bills of a month.
    Bill(bill::BillArgs),
    /// Check the ledger.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
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
        Command::Demo(args) => demo::run(args),
        Command::Totp(args) => demo::totp(args),
        Command::Bill(args) => bill::run(args),
        Command::Ledger(command) => ledger::run(command),
        Command::Decisions(command) => decisions::run(command),
    }
}
