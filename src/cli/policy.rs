//! `tollgate policy validate|test [DIR]` and `tollgate policy impact --draft DIR`: the same
//! loader the gateway uses, offline.
//!
//! `validate` parses every file, validates it strictly against the schema and checks that every
//! route action of the config exists; it prints each problem as `file:line:column: message` and
//! exits 1. `test` also runs the decision cases in `<DIR>/tests/*.toml`. `impact` validates a
//! draft the same way, then replays the logged decisions of a window against it (D4) and lists
//! every decision that would change; it reads the data dir of the config, also while a gateway
//! runs on it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::json;

use crate::audit::{self, ImpactReport, impact};
use crate::authz::{self, PolicySnapshot, Verdict, names};
use crate::billing::Money;
use crate::cli::decisions::{open_config, time};
use crate::cli::exit;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::journal::open_reader;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse and validate a policy tree against its schema and the config's routes.
    Validate(TreeArgs),
    /// Validate a tree, then run its decision cases (`<DIR>/tests/*.toml`).
    Test(TreeArgs),
    /// Replay logged decisions against a draft tree and list every decision that would change.
    Impact(ImpactArgs),
}

#[derive(Debug, clap::Args)]
pub struct ImpactArgs {
    /// The draft policy tree (a copy of the policies dir with your edits).
    #[arg(long)]
    pub draft: PathBuf,
    /// The window to replay: an age like `24h` or `30d`, or an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// `table` for people, `json` for machines.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// The operator configuration (its data dir holds the decision log).
    #[arg(
        long,
        short = 'c',
        default_value = "config/tollgate.toml",
        env = "TOLLGATE_CONFIG"
    )]
    pub config: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct TreeArgs {
    /// The policy tree (default: `[policies] dir` of the config).
    pub dir: Option<PathBuf>,
    /// The operator configuration, for the route actions every tree must declare.
    #[arg(
        long,
        short = 'c',
        default_value = "config/tollgate.toml",
        env = "TOLLGATE_CONFIG"
    )]
    pub config: PathBuf,
}

pub fn run(command: PolicyCommand) -> u8 {
    match command {
        PolicyCommand::Validate(args) => match load(&args) {
            Ok(snapshot) => {
                println!(
                    "ok: {} is valid (version {})",
                    tree_dir(&args).display(),
                    snapshot.version()
                );
                exit::OK
            }
            Err(code) => code,
        },
        PolicyCommand::Impact(args) => impact(&args),
        PolicyCommand::Test(args) => {
            let snapshot = match load(&args) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let dir = authz::tests_dir(&tree_dir(&args));
            let report = authz::run_policy_tests(&snapshot, &dir);
            println!("{report}");
            if report.is_success() {
                exit::OK
            } else {
                exit::FAILED
            }
        }
    }
}

fn tree_dir(args: &TreeArgs) -> PathBuf {
    args.dir
        .clone()
        .unwrap_or_else(|| match Config::load(&args.config) {
            Ok(config) => config.policies.dir,
            Err(_) => PathBuf::from("policies"),
        })
}

fn load(args: &TreeArgs) -> Result<PolicySnapshot, u8> {
    load_dir(&tree_dir(args), &args.config)
}

fn load_dir(dir: &Path, config: &Path) -> Result<PolicySnapshot, u8> {
    let dir = dir.to_owned();
    // Without a readable config, check the shipped services' actions.
    let config = Config::load(config).or_else(|_| Config::embedded_default().map_err(|_| ()));
    let actions: Vec<String> = match &config {
        Ok(config) => config
            .route_actions()
            .iter()
            .map(|a| (*a).to_owned())
            .collect(),
        Err(()) => names::SHIPPED_ROUTE_ACTIONS
            .iter()
            .map(|a| (*a).to_owned())
            .collect(),
    };
    let required: Vec<&str> = actions.iter().map(String::as_str).collect();
    authz::load_tree(&dir, &required).map_err(|failure| {
        eprintln!(
            "{} problem(s) in {}:",
            failure.diagnostics.len(),
            dir.display()
        );
        for diagnostic in &failure.diagnostics {
            eprintln!("  {diagnostic}");
        }
        exit::FAILED
    })
}

fn impact(args: &ImpactArgs) -> u8 {
    let (_, db) = match open_config(&args.config) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let now = SystemClock.now();
    let Some(since) = parse_since(&args.since, now) else {
        eprintln!(
            "tollgate: --since must be an age like `24h` or an RFC 3339 time, got `{}`",
            args.since
        );
        return exit::USAGE;
    };
    // The draft is validated exactly as a reload would validate it; a bad one stops here.
    let draft = match load_dir(&args.draft, &args.config) {
        Ok(s) => s,
        Err(code) => {
            eprintln!("the draft would be rejected by a reload; nothing was replayed");
            return code;
        }
    };
    let conn = match open_reader(&db) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tollgate: cannot read the decision log: {e}");
            return exit::SOFTWARE;
        }
    };
    let total = impact::count_decisions(&conn, Some(since), None).unwrap_or(0);
    let tty = std::io::stderr().is_terminal();
    if total >= 10_000 {
        eprintln!("replaying {total} decisions since {} ...", time(since));
    }
    let report = audit::replay(&conn, &draft, Some(since), None, |done| {
        if total >= 10_000 && (tty || done.is_multiple_of(50_000) || done == total) {
            let end = if tty { "\r" } else { "\n" };
            eprint!("  replayed {done} of {total}{end}");
        }
    });
    if tty && total >= 10_000 {
        eprintln!();
    }
    match report {
        Ok(report) => {
            match args.format {
                Format::Table => print!("{}", render_impact(&report, &args.draft)),
                Format::Json => println!("{}", impact_json(&report)),
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("tollgate: cannot replay the decision log: {e}");
            exit::SOFTWARE
        }
    }
}

fn parse_since(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&Utc));
    }
    let age = crate::config::parse_duration(value).ok()?;
    now.checked_sub_signed(chrono::Duration::from_std(age).ok()?)
}

/// An amount in cents (half away from zero); a non-zero amount under a cent shows as `<0.01`.
fn cents(m: Money) -> String {
    let rounded = m.round_cents();
    if rounded.is_zero() && !m.is_zero() {
        "<0.01".to_owned()
    } else {
        rounded.to_string()
    }
}

/// An exact ledger sum, shown to at most 10 decimals.
fn exact(m: Money) -> String {
    let d = m
        .as_decimal()
        .round_dp_with_strategy(10, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
        .normalize();
    Money::from_decimal(d).to_string()
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Allow => "Allow",
        Verdict::Deny => "Deny",
    }
}

/// Left-aligned columns, each as wide as its widest cell.
fn table(rows: &[Vec<String>], right: &[usize]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from("  ");
        for (c, cell) in row.iter().enumerate() {
            let w = widths.get(c).copied().unwrap_or(0);
            if right.contains(&c) {
                line.push_str(&format!("{cell:>w$}  "));
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn render_impact(r: &ImpactReport, draft: &Path) -> String {
    let mut out = format!(
        "draft {} is valid (version {})\nreplayed {} decisions logged since {}",
        draft.display(),
        r.draft_version,
        r.replayed,
        r.since.map(time).unwrap_or_else(|| "the start".to_owned()),
    );
    if r.unreplayable > 0 {
        out.push_str(&format!(
            " ({} could not be replayed: their stored request does not parse)",
            r.unreplayable
        ));
    }
    out.push_str("\n\n");
    if r.flips.is_empty() {
        out.push_str("no logged decision would change.\n");
    } else {
        out.push_str("would change, by account and action:\n");
        let mut rows = vec![vec![
            "ACCOUNT".to_owned(),
            "ACTION".to_owned(),
            "CHANGE".to_owned(),
            "DECISIONS".to_owned(),
            "BILLED (USD)".to_owned(),
        ]];
        for g in &r.groups {
            rows.push(vec![
                g.account.to_string(),
                g.action.clone(),
                format!("{} -> {}", verdict(g.before), verdict(g.after)),
                g.count.to_string(),
                cents(g.billed),
            ]);
        }
        out.push_str(&table(&rows, &[3, 4]));
        out.push_str("\ndecisions that would change (oldest first):\n");
        let mut rows = vec![vec![
            "TIME".to_owned(),
            "REQUEST ID".to_owned(),
            "PRINCIPAL".to_owned(),
            "ACTION".to_owned(),
            "CHANGE".to_owned(),
            "BILLED".to_owned(),
            "DRAFT'S DETERMINING POLICIES".to_owned(),
        ]];
        for f in &r.flips {
            let determining: Vec<String> = f
                .determining
                .iter()
                .map(|p| format!("{}@{}", p.file, p.id))
                .collect();
            let by = match f.denied_by {
                Some(t) => format!("denied by {}: ", t.as_str()),
                None => String::new(),
            };
            rows.push(vec![
                time(f.time),
                f.request_id.clone().unwrap_or_else(|| "-".to_owned()),
                format!("{}/{}", f.account, f.user),
                f.action.clone(),
                format!("{} -> {}", verdict(f.before), verdict(f.after)),
                cents(f.billed),
                if determining.is_empty() {
                    format!("{by}no policy permits it")
                } else {
                    format!("{by}{}", determining.join(", "))
                },
            ]);
        }
        out.push_str(&table(&rows, &[5]));
        out.push('\n');
    }
    out.push_str(&format!(
        "summary: {} of {} decisions would change ({} Allow -> Deny, {} Deny -> Allow); billed amount of the affected calls: {} USD{}\n",
        r.flips.len(),
        r.replayed,
        r.allow_to_deny,
        r.deny_to_allow,
        cents(r.billed),
        if r.billed.is_whole_cents() {
            String::new()
        } else {
            format!(" (exactly {})", exact(r.billed))
        }
    ));
    out
}

fn impact_json(r: &ImpactReport) -> serde_json::Value {
    json!({
        "draft_version": r.draft_version,
        "since": r.since.map(time),
        "until": r.until.map(time),
        "replayed": r.replayed,
        "unreplayable": r.unreplayable,
        "changed": r.flips.len(),
        "allow_to_deny": r.allow_to_deny,
        "deny_to_allow": r.deny_to_allow,
        "billed": r.billed.to_string(),
        "groups": r.groups.iter().map(|g| json!({
            "account": g.account.as_str(),
            "action": g.action,
            "before": verdict(g.before),
            "after": verdict(g.after),
            "count": g.count,
            "billed": g.billed.to_string(),
        })).collect::<Vec<_>>(),
        "decisions": r.flips.iter().map(|f| json!({
            "seq": f.seq,
            "time": time(f.time),
            "request_id": f.request_id,
            "account": f.account.as_str(),
            "user": f.user,
            "action": f.action,
            "resource": f.resource,
            "before": verdict(f.before),
            "after": verdict(f.after),
            "denied_by": f.denied_by.map(|t| t.as_str()),
            "determining": f.determining.iter().map(|p| json!({"file": p.file, "id": p.id})).collect::<Vec<_>>(),
            "billed": f.billed.to_string(),
        })).collect::<Vec<_>>(),
    })
}
