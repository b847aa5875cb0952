//! `tollgate policy validate|test [DIR]`: the same loader the gateway uses, offline.
//!
//! `validate` parses every file, validates it strictly against the schema and checks that every
//! route action of the config exists; it prints each problem as `file:line:column: message` and
//! exits 1. `test` also runs the decision cases in `<DIR>/tests/*.toml`.

use std::path::PathBuf;

use clap::Subcommand;

use crate::authz::{self, PolicySnapshot, names};
use crate::cli::exit;
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse and validate a policy tree against its schema and the config's routes.
    Validate(TreeArgs),
    /// Validate a tree, then run its decision cases (`<DIR>/tests/*.toml`).
    Test(TreeArgs),
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
    let dir = tree_dir(args);
    // Without a readable config, check the shipped services' actions.
    let config = Config::load(&args.config).or_else(|_| Config::embedded_default().map_err(|_| ()));
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
