//! `tollgate ledger verify [--config FILE]` (SPEC M7): walks the ledger's hash chain from
//! genesis on a read-only connection (safe while a gateway writes) and prints either the records
//! checked and the head, or the first altered, inserted or missing record; exit 1 on a break.

use clap::Subcommand;

use crate::chain;
use crate::cli::{ConfigArg, exit};
use crate::config::Config;
use crate::journal::{VerifyError, verify_ledger};

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Verify the ledger's hash chain.
    Verify(ConfigArg),
}

pub fn run(command: LedgerCommand) -> u8 {
    match command {
        LedgerCommand::Verify(args) => verify(&args),
    }
}

fn verify(args: &ConfigArg) -> u8 {
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tollgate: {e}");
            return exit::USAGE;
        }
    };
    let db = match crate::db::Database::open_existing(&config.store) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("tollgate: {e}");
            return exit::SOFTWARE;
        }
    };
    match verify_ledger(&db) {
        Ok(summary) => {
            println!(
                "ok: ledger verified, {} records checked, head seq {} hash {}",
                summary.records,
                summary.head_seq,
                chain::to_hex(&summary.head_hash)
            );
            exit::OK
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
