//! `tollgate bill --month YYYY-MM [--payer ID] [--format json|csv|table] [--config FILE]`
//! (SPEC O1, M4): the bills of a month, computed exactly as `GET /billing/bills/{month}` computes
//! them, from the store on disk (read-only snapshots: it works while a gateway runs on it).
//!
//! Without `--payer`, every payer of the month, by account id: JSON prints an array, CSV one
//! header and every bill's rows, the table one block per bill.

use std::sync::Arc;

use clap::ValueEnum;

use crate::api::billing::bill_json;
use crate::billing::{BillingMonth, export};
use crate::bills::{Bills, Statement};
use crate::cli::{ConfigArg, exit};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::ids::AccountId;
use crate::org::OrgService;
use crate::store::sql::SqlStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Csv,
    Table,
}

#[derive(Debug, clap::Args)]
pub struct BillArgs {
    /// The month, `YYYY-MM` (UTC).
    #[arg(long)]
    pub month: String,
    /// Only this payer's bill (a 12-digit account id).
    #[arg(long)]
    pub payer: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(args: BillArgs) -> u8 {
    let Ok(month) = BillingMonth::parse(&args.month) else {
        eprintln!(
            "tollgate: `--month {}` is not a month; use YYYY-MM",
            args.month
        );
        return exit::USAGE;
    };
    let payer = match args.payer.as_deref().map(AccountId::parse).transpose() {
        Ok(p) => p,
        Err(_) => {
            eprintln!("tollgate: `--payer` must be a 12-digit account id");
            return exit::USAGE;
        }
    };
    let config = match Config::load(&args.config.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tollgate: {e}");
            return exit::USAGE;
        }
    };
    if let Err(e) = crate::db::Database::open_existing(&config.store) {
        eprintln!("tollgate: {e}");
        return exit::SOFTWARE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate: cannot start the runtime: {e}");
            return exit::SOFTWARE;
        }
    };
    runtime.block_on(async move {
        match statements(&config, month, payer).await {
            Ok(statements) => {
                print!("{}", render(&statements, args.format, payer_given(&args)));
                exit::OK
            }
            Err(message) => {
                eprintln!("tollgate: {message}");
                exit::SOFTWARE
            }
        }
    })
}

fn payer_given(args: &BillArgs) -> bool {
    args.payer.is_some()
}

async fn statements(
    config: &Config,
    month: BillingMonth,
    payer: Option<AccountId>,
) -> Result<Vec<Statement>, String> {
    let store_config = config.store.clone();
    let store = tokio::task::spawn_blocking(move || SqlStore::open_config(&store_config))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let orgs = OrgService::new(Arc::new(store.clone()));
    let bills = Bills::new(&store, &orgs, config).map_err(|e| e.to_string())?;
    let now = SystemClock.now();
    let payers = match payer {
        Some(p) => vec![p],
        None => bills.payers(month, now).await.map_err(|e| e.to_string())?,
    };
    let mut out = Vec::with_capacity(payers.len());
    for p in payers {
        out.push(
            bills
                .statement(&p, month, now)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(out)
}

fn render(statements: &[Statement], format: Format, single: bool) -> String {
    match format {
        Format::Json => {
            let dtos: Vec<_> = statements.iter().map(|s| bill_json(s, &[])).collect();
            let text = match (single, dtos.first()) {
                (true, Some(one)) => serde_json::to_string_pretty(one),
                _ => serde_json::to_string_pretty(&dtos),
            };
            format!("{}\n", text.unwrap_or_default())
        }
        Format::Csv => {
            let mut out = String::new();
            for (i, s) in statements.iter().enumerate() {
                let csv = export::to_csv(&s.bill);
                if i == 0 {
                    out.push_str(&csv);
                } else {
                    // Every bill's rows under the one header.
                    out.push_str(csv.split_once("\r\n").map_or("", |(_, rows)| rows));
                }
            }
            if statements.is_empty() {
                out.push_str(&export::CSV_COLUMNS.join(","));
                out.push_str("\r\n");
            }
            out
        }
        Format::Table => {
            let mut out = String::new();
            for s in statements {
                out.push_str(&export::to_table(&s.bill));
                if let Some(seal) = &s.seal {
                    out.push_str(&format!("content hash: {}\n", seal.content_hash));
                }
                out.push('\n');
            }
            if statements.is_empty() {
                out.push_str("no bills for this month\n");
            }
            out
        }
    }
}
