//! `tollgate decisions explain|verify|prune`: the decision log for security review (D3, D5),
//! read from the data dir of the config, also while a gateway runs on it (SQLite WAL readers see
//! a consistent snapshot; prune deletes in short transactions the writer waits for).
//!
//! Exit codes: 0 ok; 1 the chain is broken or the request id is unknown; 64 bad config or
//! usage; 70 the store cannot be read.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Subcommand;

use crate::audit::explain::{TextSource, org_reason_text};
use crate::audit::{self, AuditError, Explanation, TierResult};
use crate::authz::{self, Tier, Verdict};
use crate::chain;
use crate::cli::{ConfigArg, exit};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, parse_duration};
use crate::db::Database;
use crate::journal::{DecisionKind, VerifyError, open_reader};

#[derive(Debug, Subcommand)]
pub enum DecisionsCommand {
    /// Explain a logged decision: each tier's result and the full text of each determining
    /// policy as it was at that decision's policy version.
    Explain(ExplainArgs),
    /// Verify the decision log's hash chain; exit 1 naming the first broken record.
    Verify(ConfigArg),
    /// Remove decision records older than the retention, leaving a checkpoint that verify
    /// starts from.
    Prune(PruneArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The request id (the `request_id` of a response or of `GET /decisions`).
    pub request_id: String,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Remove records older than this age, e.g. `90d` (default: `[audit] retention`).
    #[arg(long)]
    pub older_than: Option<String>,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(command: DecisionsCommand) -> u8 {
    match command {
        DecisionsCommand::Explain(args) => explain(&args),
        DecisionsCommand::Verify(args) => verify(&args),
        DecisionsCommand::Prune(args) => prune(&args),
    }
}

/// The config and the database it names, or the exit code.
pub fn open_config(path: &Path) -> Result<(Config, Database), u8> {
    let config = Config::load(path).map_err(|e| {
        eprintln!("tollgate: {e}");
        exit::USAGE
    })?;
    let db = Database::open_existing(&config.store).map_err(|e| {
        eprintln!("tollgate: {e}");
        exit::SOFTWARE
    })?;
    Ok((config, db))
}

fn explain(args: &ExplainArgs) -> u8 {
    let (config, db) = match open_config(&args.config.config) {
        Ok(v) => v,
        Err(code) => return code,
    };
    // The current tree, only as a fallback for versions that predate the archive.
    let current = authz::load_tree(&config.policies.dir, &config.route_actions()).ok();
    let current = current.as_ref().map(|s| (s.version(), s.sources()));
    let result = open_reader(&db)
        .map_err(AuditError::from)
        .and_then(|conn| audit::explain(&conn, &args.request_id, current));
    match result {
        Ok(explanations) if explanations.is_empty() => {
            eprintln!(
                "tollgate: no decision with request id `{}` in the log",
                args.request_id
            );
            exit::FAILED
        }
        Ok(explanations) => {
            let total = explanations.len();
            for (i, e) in explanations.iter().enumerate() {
                if total > 1 {
                    println!("--- decision {} of {total} for this request id ---", i + 1);
                }
                print!("{}", render_explanation(e));
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("tollgate: cannot read the decision log: {e}");
            exit::SOFTWARE
        }
    }
}

/// The text `explain` prints for one decision.
pub fn render_explanation(e: &Explanation) -> String {
    let r = &e.record;
    let mut out = String::new();
    let line = |out: &mut String, label: &str, value: &str| {
        let _ = writeln!(out, "{label:<16}{value}");
    };
    line(
        &mut out,
        "request id",
        r.request_id.as_deref().unwrap_or("-"),
    );
    line(
        &mut out,
        "time",
        &format!("{}  (log record {})", time(r.time), r.seq),
    );
    line(
        &mut out,
        "kind",
        match r.kind {
            DecisionKind::Service => "service call",
            DecisionKind::Api => "API call",
            DecisionKind::Reload => "policy reload",
        },
    );
    let account = r
        .account_id
        .as_ref()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let principal = match &e.request {
        Some(req) => format!(
            "{account}/{}  (account \"{}\"{}{})",
            req.principal.user,
            req.principal.account_name,
            if req.principal.is_owner {
                ", owner"
            } else {
                ""
            },
            if req.principal.groups.is_empty() {
                String::new()
            } else {
                let groups: Vec<&str> = req.principal.groups.iter().map(|g| g.as_str()).collect();
                format!(", groups {}", groups.join(", "))
            }
        ),
        None => format!("{account}/{}", r.user_name.as_deref().unwrap_or("-")),
    };
    line(&mut out, "principal", &principal);
    line(&mut out, "action", &r.action);
    line(&mut out, "resource", &r.resource);
    if let Some(req) = &e.request {
        line(
            &mut out,
            "request",
            &format!(
                "{} {} from {}, mfa {}, month-to-date spend {}",
                req.context.method,
                req.context.path,
                req.context.source_ip,
                if req.context.mfa { "yes" } else { "no" },
                req.context.month_to_date_spend
            ),
        );
        if let Some(org) = &req.organization {
            line(
                &mut out,
                "organization",
                &format!(
                    "{} ({}, management account {})",
                    org.id, org.feature_set, org.management_account
                ),
            );
        }
    }
    let decision = match (r.decision, r.denied_by) {
        (Some(Verdict::Allow), _) => "Allow".to_owned(),
        (Some(Verdict::Deny), Some(Tier::Organization)) => {
            "Deny (denied by the organization tier)".to_owned()
        }
        (Some(Verdict::Deny), _) => "Deny (denied by the account tier)".to_owned(),
        (None, _) => "-".to_owned(),
    };
    line(&mut out, "decision", &decision);
    let source = match e.source {
        TextSource::Archive { intact: true } => "archived; sources match the version hash",
        TextSource::Archive { intact: false } => {
            "archived, but the archived sources do NOT match the version hash: the archive was altered"
        }
        TextSource::CurrentTree => {
            "not archived; texts from the current tree, which has this version"
        }
        TextSource::Missing => "not archived and not the current tree: policy texts unavailable",
    };
    line(
        &mut out,
        "policy version",
        &format!("{}  ({source})", r.policy_version),
    );
    out.push('\n');
    render_tier(&mut out, "account tier", &e.account_tier, None);
    out.push('\n');
    match &e.organization_tier {
        Some(tier) => render_tier(
            &mut out,
            "organization tier",
            tier,
            Some(org_reason_text(e.org_reason())),
        ),
        None => {
            let _ = writeln!(
                out,
                "organization tier: did not apply: {} ({})",
                org_reason_text(e.org_reason()),
                e.org_reason().unwrap_or("-")
            );
        }
    }
    out
}

fn render_tier(out: &mut String, name: &str, tier: &TierResult, applied: Option<&str>) {
    let verdict = match tier.verdict {
        Verdict::Allow => "Allow",
        Verdict::Deny => "Deny",
    };
    let _ = writeln!(out, "{name}: {verdict}");
    if let Some(why) = applied {
        let _ = writeln!(out, "  applied: {why}");
    }
    if tier.policies.is_empty() {
        let _ = writeln!(
            out,
            "  no determining policy{}",
            if tier.verdict == Verdict::Deny && tier.errors.is_empty() {
                ": nothing permits it (default deny)"
            } else {
                ""
            }
        );
    }
    for p in &tier.policies {
        let _ = writeln!(out, "  {}  @id(\"{}\")", p.file, p.id);
        match &p.text {
            Some(text) => {
                for l in text.lines() {
                    let _ = writeln!(out, "    | {l}");
                }
            }
            None => {
                let _ = writeln!(out, "    (text unavailable at this version)");
            }
        }
    }
    if tier.errors.is_empty() {
        let _ = writeln!(out, "  errors: none");
    } else {
        let _ = writeln!(out, "  errors (an evaluation error denies):");
        for err in &tier.errors {
            let _ = writeln!(out, "    - {err}");
        }
    }
}

fn verify(args: &ConfigArg) -> u8 {
    let (_, db) = match open_config(&args.config) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let result = open_reader(&db)
        .map_err(AuditError::from)
        .and_then(|conn| audit::verify_chain(&conn));
    match result {
        Ok(report) => {
            let s = report.summary;
            let first = report.checkpoint.map_or(1, |c| c.through_seq + 1);
            if s.records == 0 {
                println!("ok: the decision log is empty");
            } else {
                println!(
                    "ok: {} decision records verified (seq {first}..{}); head seq {} hash {}",
                    s.records,
                    s.head_seq,
                    s.head_seq,
                    chain::to_hex(&s.head_hash)
                );
            }
            if let Some(c) = report.checkpoint {
                println!(
                    "    records through seq {} were pruned (last at {}); verified from checkpoint hash {}",
                    c.through_seq,
                    time(c.pruned_at),
                    chain::to_hex(&c.through_hash)
                );
            }
            exit::OK
        }
        Err(AuditError::Verify(VerifyError::Broken(b))) => {
            println!("BROKEN: decision log {b}");
            exit::FAILED
        }
        Err(e) => {
            eprintln!("tollgate: cannot verify the decision log: {e}");
            exit::SOFTWARE
        }
    }
}

fn prune(args: &PruneArgs) -> u8 {
    let (config, db) = match open_config(&args.config.config) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let retention = match (&args.older_than, config.audit.retention) {
        (Some(v), _) => match parse_duration(v) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("tollgate: --older-than: {e}");
                return exit::USAGE;
            }
        },
        (None, Some(d)) => d,
        (None, None) => {
            eprintln!(
                "tollgate: `[audit] retention` is \"forever\" in the config: give --older-than (e.g. 90d) to prune anyway"
            );
            return exit::USAGE;
        }
    };
    let now = SystemClock.now();
    let cutoff = now - crate::config::chrono_duration(retention);
    match audit::prune(&db, cutoff, now) {
        Ok(report) => {
            println!(
                "pruned {} decision records older than {}",
                report.removed,
                time(cutoff)
            );
            if let Some(c) = report.checkpoint {
                println!(
                    "checkpoint: seq {} hash {}  (keep this line outside the data dir)",
                    c.through_seq,
                    chain::to_hex(&c.through_hash)
                );
            }
            let s = report.remaining.summary;
            println!(
                "remaining: {} records verified; head seq {} hash {}",
                s.records,
                s.head_seq,
                chain::to_hex(&s.head_hash)
            );
            exit::OK
        }
        Err(AuditError::Verify(VerifyError::Broken(b))) => {
            println!("BROKEN: decision log {b}; nothing was pruned");
            exit::FAILED
        }
        Err(e) => {
            eprintln!("tollgate: cannot prune the decision log: {e}");
            exit::SOFTWARE
        }
    }
}

/// A time as the CLI prints it.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
