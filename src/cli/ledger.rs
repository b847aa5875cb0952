//! `tollgate ledger verify|head|accept-truncation [--config FILE]` (SPEC M7, issue 17 item 6).
//!
//! `verify` walks the ledger's hash chain from genesis on a read-only connection (safe while a
//! gateway writes) and compares the ledger with its witnesses (`journal::audit_ledger`): it
//! prints the records checked and the head, or every record, seal or count that is missing or
//! changed; exit 1 on any finding. `--expect-head SEQ:HASH` proves that a head kept earlier is
//! still in the ledger. `head` prints the head as `SEQ:HASH` to keep. `accept-truncation
//! --through SEQ` is the operator's acknowledgement of records cut off the end: it records who
//! and when, and lets the gateway append again.

use clap::{Args, Subcommand};

use crate::chain::{self, Hash};
use crate::cli::{ConfigArg, exit};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::db::Database;
use crate::journal::{AcceptError, VerifyError, accept_truncation, audit_ledger, ledger_head};

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Verify the ledger's hash chain, its length and its FINAL seals.
    Verify(VerifyArgs),
    /// Print the ledger's head as `SEQ:HASH` (keep it to prove later that nothing was cut).
    Head(ConfigArg),
    /// Acknowledge that the ledger ends at record SEQ although records after it are missing,
    /// so the gateway appends again. Records who and when.
    AcceptTruncation(AcceptArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// A head printed earlier by `tollgate ledger head`: the ledger must still hold it.
    #[arg(long, value_name = "SEQ:HASH")]
    pub expect_head: Option<String>,
}

#[derive(Debug, Args)]
pub struct AcceptArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The record the ledger ends at now (its head).
    #[arg(long, value_name = "SEQ")]
    pub through: u64,
    /// Who acknowledges the loss (default: the login name from `$USER`).
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
}

pub fn run(command: LedgerCommand) -> u8 {
    match command {
        LedgerCommand::Verify(args) => verify(&args),
        LedgerCommand::Head(args) => head(&args),
        LedgerCommand::AcceptTruncation(args) => accept(&args),
    }
}

fn open(args: &ConfigArg) -> Result<Database, u8> {
    let config = Config::load(&args.config).map_err(|e| {
        eprintln!("tollgate: {e}");
        exit::USAGE
    })?;
    Database::open_existing(&config.store).map_err(|e| {
        eprintln!("tollgate: {e}");
        exit::SOFTWARE
    })
}

/// Parses `SEQ:HASH`.
fn parse_head(value: &str) -> Option<(u64, Hash)> {
    let (seq, hash) = value.split_once(':')?;
    Some((seq.parse().ok()?, chain::parse_hash(hash).ok()?))
}

fn verify(args: &VerifyArgs) -> u8 {
    let expect = match args.expect_head.as_deref().map(parse_head) {
        None => None,
        Some(Some(head)) => Some(head),
        Some(None) => {
            eprintln!(
                "tollgate: `--expect-head` must be SEQ:HASH as `tollgate ledger head` prints it"
            );
            return exit::USAGE;
        }
    };
    let db = match open(&args.config) {
        Ok(db) => db,
        Err(code) => return code,
    };
    match audit_ledger(&db, expect) {
        Ok(audit) => {
            for loss in &audit.accepted {
                println!(
                    "note: {} acknowledged at {} that the ledger ends at record {}: records {} to {} were lost (ledger mark {})",
                    loss.actor,
                    loss.at.to_rfc3339(),
                    loss.through_seq,
                    loss.through_seq + 1,
                    loss.witnessed_seq,
                    loss.mark
                );
            }
            for seal in &audit.adopted {
                println!(
                    "note: the FINAL seal of the {} bill of payer {} predates ledger marks; the gateway adopted it as found when it first opened the upgraded store at {} (ledger mark {})",
                    seal.month,
                    seal.payer,
                    seal.at.to_rfc3339(),
                    seal.mark
                );
            }
            if audit.problems.is_empty() {
                println!(
                    "ok: ledger verified, {} records checked, head seq {} hash {}; {} ledger marks checked",
                    audit.chain.records,
                    audit.chain.head_seq,
                    chain::to_hex(&audit.chain.head_hash),
                    audit.marks
                );
                exit::OK
            } else {
                for problem in &audit.problems {
                    println!("BROKEN: ledger {problem}");
                }
                exit::FAILED
            }
        }
        Err(VerifyError::Broken(b)) => {
            println!("BROKEN: ledger {b}");
            exit::FAILED
        }
        Err(VerifyError::Journal(e)) => {
            eprintln!("tollgate: cannot verify the ledger: {e}");
            exit::SOFTWARE
        }
    }
}

fn head(args: &ConfigArg) -> u8 {
    let db = match open(args) {
        Ok(db) => db,
        Err(code) => return code,
    };
    match ledger_head(&db) {
        Ok(head) => {
            println!("{}:{}", head.seq, chain::to_hex(&head.hash));
            exit::OK
        }
        Err(e) => {
            eprintln!("tollgate: cannot read the ledger's head: {e}");
            exit::SOFTWARE
        }
    }
}

fn accept(args: &AcceptArgs) -> u8 {
    let actor = args
        .by
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_default();
    let db = match open(&args.config) {
        Ok(db) => db,
        Err(code) => return code,
    };
    match accept_truncation(&db, args.through, &actor, SystemClock.now()) {
        Ok(loss) => {
            println!(
                "accepted: the ledger ends at record {}; records {} to {} are acknowledged lost by {} at {} (ledger mark {}); the gateway appends again",
                loss.through_seq,
                loss.through_seq + 1,
                loss.witnessed_seq,
                loss.actor,
                loss.at.to_rfc3339(),
                loss.mark
            );
            exit::OK
        }
        Err(e @ (AcceptError::Journal(_) | AcceptError::Broken(_))) => {
            eprintln!("tollgate: {e}");
            exit::FAILED
        }
        Err(e) => {
            eprintln!("tollgate: {e}");
            exit::USAGE
        }
    }
}
