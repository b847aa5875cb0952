//! Decision cases as data (`policies/tests/*.toml`), run against a tree: the engine behind
//! `tollgate policy test`. The TOML shapes below are the file format; they stay private and are
//! converted to [`Request`]s explicitly.
//!
//! ```toml
//! [[case]]
//! name = "owner may read objects in its own account"
//! action = "storage:GetObject"
//! expect = "allow"                       # or "deny"
//! determining = ["owner-full-access"]    # @ids of both tiers; optional
//! denied_by = "organization"             # optional, only with expect = "deny"
//! principal = { account = "111111111111", user = "alice", is_owner = true, groups = [] }
//! organization = { id = "o-exampleorg", feature_set = "ALL_FEATURES", management_account = "999999999999" }
//! resource = { service = "storage" }     # or { account = "111111111111", organization = "o-..." }
//! context = { mfa = true, source_ip = "10.0.0.1", time = 1700000000, method = "GET", path = "/objects/a", month_to_date_spend = "12.50" }
//! ```

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;

use super::decide::{Tier, Verdict};
use super::loader::PolicySnapshot;
use super::request::{
    FeatureSet, OrgMembership, Principal, Request, RequestContext, Resource, TargetAccount,
};
use crate::ids::{AccountId, GroupName, OrgId, UserName};

/// The result of running every case file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyTestReport {
    pub cases: Vec<CaseResult>,
    /// Files that could not be read or parsed (their cases did not run).
    pub file_errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// Relative to the tests directory.
    pub file: String,
    pub name: String,
    /// Empty when the case passed.
    pub failures: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    case: Vec<RawCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    action: String,
    expect: String,
    determining: Option<Vec<String>>,
    denied_by: Option<String>,
    principal: RawPrincipal,
    organization: Option<RawOrg>,
    resource: RawResource,
    #[serde(default)]
    context: RawContext,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipal {
    account: String,
    #[serde(default)]
    account_name: Option<String>,
    user: String,
    #[serde(default)]
    is_owner: bool,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrg {
    id: String,
    feature_set: String,
    management_account: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    service: Option<String>,
    account: Option<String>,
    account_name: Option<String>,
    organization: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawContext {
    mfa: Option<bool>,
    source_ip: Option<String>,
    time: Option<i64>,
    method: Option<String>,
    path: Option<String>,
    month_to_date_spend: Option<String>,
}

// === impl PolicyTestReport ===

impl PolicyTestReport {
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.failures.is_empty()).count()
    }

    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    /// True when every case ran and passed.
    pub fn is_success(&self) -> bool {
        self.file_errors.is_empty() && self.failed() == 0
    }
}

impl std::fmt::Display for PolicyTestReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.file_errors {
            writeln!(f, "ERROR {e}")?;
        }
        for c in &self.cases {
            if c.failures.is_empty() {
                writeln!(f, "ok    {}: {}", c.file, c.name)?;
            } else {
                writeln!(f, "FAIL  {}: {}", c.file, c.name)?;
                for failure in &c.failures {
                    writeln!(f, "        {failure}")?;
                }
            }
        }
        write!(
            f,
            "{} passed, {} failed, {} file errors",
            self.passed(),
            self.failed(),
            self.file_errors.len()
        )
    }
}

/// The default case directory of a tree: `<policies>/tests`.
pub fn tests_dir(policies_dir: &Path) -> PathBuf {
    policies_dir.join(super::names::TESTS_DIR)
}

/// Runs every `*.toml` in `tests_dir` (sorted by name) against `snapshot`.
pub fn run_policy_tests(snapshot: &PolicySnapshot, tests_dir: &Path) -> PolicyTestReport {
    let mut report = PolicyTestReport::default();
    let mut files: Vec<PathBuf> = match fs::read_dir(tests_dir) {
        Ok(read) => read
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect(),
        Err(e) => {
            report
                .file_errors
                .push(format!("{}: cannot read: {e}", tests_dir.display()));
            return report;
        }
    };
    files.sort();
    for path in files {
        let file = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let raw: RawFile = match fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| toml::from_str(&text).map_err(|e| e.to_string()))
        {
            Ok(raw) => raw,
            Err(e) => {
                report.file_errors.push(format!("{file}: {e}"));
                continue;
            }
        };
        for case in raw.case {
            let failures = run_case(snapshot, &case);
            report.cases.push(CaseResult {
                file: file.clone(),
                name: case.name,
                failures,
            });
        }
    }
    report
}

fn run_case(snapshot: &PolicySnapshot, case: &RawCase) -> Vec<String> {
    let request = match to_request(case) {
        Ok(request) => request,
        Err(e) => return vec![format!("bad case: {e}")],
    };
    let expect = match case.expect.as_str() {
        "allow" => Verdict::Allow,
        "deny" => Verdict::Deny,
        other => {
            return vec![format!(
                "bad case: expect must be `allow` or `deny`, not `{other}`"
            )];
        }
    };
    let decision = snapshot.decide(&request);
    let mut failures = Vec::new();
    if decision.verdict != expect {
        failures.push(format!(
            "expected {}, got {} (denied by {:?}, errors {:?})",
            expect.as_str(),
            decision.verdict.as_str(),
            decision.denied_by.map(Tier::as_str),
            decision.errors().collect::<Vec<_>>()
        ));
    }
    if let Some(expected) = &case.determining {
        let mut expected = expected.clone();
        expected.sort();
        let mut got: Vec<String> = decision.determining().map(|p| p.id.clone()).collect();
        got.sort();
        if got != expected {
            failures.push(format!("expected determining {expected:?}, got {got:?}"));
        }
    }
    if let Some(expected) = &case.denied_by {
        let got = decision.denied_by.map(Tier::as_str);
        if got != Some(expected.as_str()) {
            failures.push(format!("expected denied_by `{expected}`, got {got:?}"));
        }
    }
    failures
}

fn to_request(case: &RawCase) -> Result<Request, String> {
    let p = &case.principal;
    let account = AccountId::parse(&p.account).map_err(|e| e.to_string())?;
    let groups = p
        .groups
        .iter()
        .map(|g| GroupName::parse(g).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let principal = Principal {
        account_name: p
            .account_name
            .clone()
            .unwrap_or_else(|| account.to_string()),
        account,
        user: UserName::parse(&p.user).map_err(|e| e.to_string())?,
        groups,
        is_owner: p.is_owner,
    };
    let organization = case
        .organization
        .as_ref()
        .map(|o| -> Result<OrgMembership, String> {
            Ok(OrgMembership {
                id: OrgId::parse(&o.id).map_err(|e| e.to_string())?,
                feature_set: FeatureSet::parse(&o.feature_set).ok_or_else(|| {
                    format!(
                        "feature_set must be ALL_FEATURES or CONSOLIDATED_BILLING, not `{}`",
                        o.feature_set
                    )
                })?,
                management_account: AccountId::parse(&o.management_account)
                    .map_err(|e| e.to_string())?,
            })
        })
        .transpose()?;
    let r = &case.resource;
    let resource = match (&r.service, &r.account) {
        (Some(name), None) => Resource::Service { name: name.clone() },
        (None, Some(id)) => {
            let id = AccountId::parse(id).map_err(|e| e.to_string())?;
            Resource::Account(TargetAccount {
                name: r.account_name.clone().unwrap_or_else(|| id.to_string()),
                id,
                organization: r
                    .organization
                    .as_deref()
                    .map(OrgId::parse)
                    .transpose()
                    .map_err(|e| e.to_string())?,
            })
        }
        _ => return Err("resource needs exactly one of `service` or `account`".to_owned()),
    };
    let c = &case.context;
    let context = RequestContext {
        mfa: c.mfa.unwrap_or(false),
        source_ip: match &c.source_ip {
            Some(ip) => IpAddr::from_str(ip).map_err(|e| format!("source_ip `{ip}`: {e}"))?,
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        },
        time: c.time.unwrap_or(1_700_000_000),
        method: c.method.clone().unwrap_or_else(|| "GET".to_owned()),
        path: c.path.clone().unwrap_or_else(|| "/".to_owned()),
        month_to_date_spend: match &c.month_to_date_spend {
            Some(s) => {
                Decimal::from_str(s).map_err(|e| format!("month_to_date_spend `{s}`: {e}"))?
            }
            None => Decimal::ZERO,
        },
    };
    Ok(Request {
        principal,
        organization,
        action: case.action.clone(),
        resource,
        context,
    })
}
