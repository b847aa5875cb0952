//! Unit tests for the authz module: loading, decisions, tiers, the store and policy tests.

#![allow(
    clippy::indexing_slicing,
    reason = "a test that indexes out of range fails, as it should"
)]

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

use super::*;
use crate::clock::{SharedClock, SystemClock};
use crate::ids::{AccountId, GroupName, OrgId, UserName};

const A: &str = "111111111111";
const B: &str = "222222222222";
const MGMT: &str = "999999999999";
const ORG: &str = "o-abcdefghij";

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn route_actions() -> Vec<String> {
    names::shipped_service_actions()
}

fn load(dir: &Path) -> Result<PolicySnapshot, LoadFailure> {
    let actions = route_actions();
    let required: Vec<&str> = actions.iter().map(String::as_str).collect();
    load_tree(dir, &required)
}

/// A temp tree with the shipped schema and owner policy plus `files` (relative path, text).
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = ok(tempfile::tempdir());
    write_tree(dir.path(), files);
    dir
}

fn write_tree(root: &Path, files: &[(&str, &str)]) {
    let schema = ok(fs::read_to_string(shipped_dir().join("schema.cedarschema")));
    let owner = ok(fs::read_to_string(
        shipped_dir().join("default-account/owner.cedar"),
    ));
    write(root, "schema.cedarschema", &schema);
    write(root, "default-account/owner.cedar", &owner);
    for (rel, text) in files {
        write(root, rel, text);
    }
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        ok(fs::create_dir_all(parent));
    }
    ok(fs::write(path, text));
}

fn acct(s: &str) -> AccountId {
    ok(AccountId::parse(s))
}

fn principal(account: &str, user: &str, is_owner: bool) -> Principal {
    Principal {
        account: acct(account),
        account_name: format!("acct-{account}"),
        user: ok(UserName::parse(user)),
        groups: Vec::new(),
        is_owner,
    }
}

fn context() -> RequestContext {
    RequestContext {
        mfa: false,
        source_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        time: 1_700_000_000,
        method: "GET".to_owned(),
        path: "/objects/a".to_owned(),
        month_to_date_spend: Decimal::ZERO,
    }
}

fn service_call(p: Principal, action: &str) -> Request {
    Request {
        principal: p,
        organization: None,
        action: action.to_owned(),
        resource: Resource::Service {
            name: action.split(':').next().unwrap_or_default().to_owned(),
        },
        context: context(),
    }
}

fn in_org(mut r: Request, feature_set: FeatureSet) -> Request {
    r.organization = Some(OrgMembership {
        id: ok(OrgId::parse(ORG)),
        feature_set,
        management_account: acct(MGMT),
    });
    r
}

fn on_account(p: Principal, action: &str, target: &str) -> Request {
    Request {
        principal: p,
        organization: None,
        action: action.to_owned(),
        resource: Resource::Account(TargetAccount {
            id: acct(target),
            name: format!("acct-{target}"),
            organization: None,
        }),
        context: context(),
    }
}

fn ids(outcome: &TierOutcome) -> Vec<&str> {
    outcome.determining.iter().map(|p| p.id.as_str()).collect()
}

fn expect_failure(dir: &Path) -> LoadFailure {
    match load(dir) {
        Ok(_) => panic!("tree should have been rejected"),
        Err(f) => f,
    }
}

fn find<'a>(f: &'a LoadFailure, needle: &str) -> &'a Diagnostic {
    f.diagnostics
        .iter()
        .find(|d| d.message.contains(needle))
        .unwrap_or_else(|| panic!("no diagnostic containing `{needle}` in {f}"))
}

const ALLOW_ALL: &str = "@id(\"full-access\")\npermit (principal, action, resource);\n";
const DENY_SIGNUP: &str = "@id(\"no-signup\")\nforbid (principal, action in [Tollgate::Action::\"storage:SignUp\", Tollgate::Action::\"support:SignUp\"], resource);\n";

// --- the shipped tree ---

#[test]
fn shipped_tree_loads_and_owner_may_act_in_own_account_only() {
    let snap = ok(load(&shipped_dir()));
    assert_eq!(snap.version().len(), 64);
    assert!(snap.sources().contains_key("schema.cedarschema"));
    assert!(snap.sources().contains_key("default-account/owner.cedar"));

    let d = snap.decide(&service_call(
        principal(A, "alice", true),
        "storage:GetObject",
    ));
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    assert_eq!(ids(&d.account), ["owner-full-access"]);
    assert_eq!(d.account.determining[0].file, "default-account/owner.cedar");
    assert_eq!(d.policy_version, snap.version());
    assert_eq!(
        d.organization,
        OrgTier::NotApplied {
            reason: NotAppliedReason::NotInOrganization
        }
    );

    let d = snap.decide(&service_call(
        principal(A, "bob", false),
        "storage:GetObject",
    ));
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.denied_by, Some(Tier::Account));
    assert!(d.account.determining.is_empty());

    let d = snap.decide(&on_account(
        principal(A, "alice", true),
        "iam:CreateUser",
        A,
    ));
    assert!(d.is_allow(), "{d:?}");
    let d = snap.decide(&on_account(
        principal(A, "alice", true),
        "iam:CreateUser",
        B,
    ));
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.denied_by, Some(Tier::Account));
}

#[test]
fn every_api_and_service_action_is_in_the_shipped_schema() {
    let snap = ok(load(&shipped_dir()));
    let user_actions = [
        "iam:UpdatePassword",
        "iam:ManageMfa",
        "iam:ManageAccessKeys",
    ];
    for action in names::API_ACTIONS {
        let mut request = on_account(principal(A, "alice", true), action, A);
        if user_actions.contains(action) {
            request.resource = Resource::User(TargetUser {
                user: UserName::parse("bob").unwrap(),
                is_owner: false,
            });
        }
        let d = snap.decide(&request);
        assert!(d.is_allow(), "{action}: {d:?}");
    }
    for action in route_actions() {
        let d = snap.decide(&service_call(principal(A, "alice", true), &action));
        assert!(d.is_allow(), "{action}: {d:?}");
    }
}

#[test]
fn users_manage_only_their_own_password_and_mfa_by_default() {
    let snap = ok(load(&shipped_dir()));
    let on_user = |action: &str, target: &str| {
        let mut request = on_account(principal(A, "bob", false), action, A);
        request.resource = Resource::User(TargetUser {
            user: UserName::parse(target).unwrap(),
            is_owner: false,
        });
        snap.decide(&request)
    };
    assert!(on_user("iam:UpdatePassword", "bob").is_allow());
    assert!(
        on_user("iam:ManageMfa", "BOB").is_allow(),
        "names compare by key"
    );
    assert!(!on_user("iam:UpdatePassword", "carol").is_allow());
    assert!(
        !on_user("iam:ManageAccessKeys", "bob").is_allow(),
        "keys need a grant"
    );
    let d = snap.decide(&on_account(
        principal(A, "bob", false),
        "iam:GetPasswordPolicy",
        A,
    ));
    assert!(d.is_allow(), "{d:?}");
    let d = snap.decide(&on_account(
        principal(A, "bob", false),
        "iam:GetPasswordPolicy",
        B,
    ));
    assert!(!d.is_allow(), "{d:?}");
}

#[test]
fn shipped_policy_test_cases_pass() {
    let snap = ok(load(&shipped_dir()));
    let report = run_policy_tests(&snap, &tests_dir(&shipped_dir()));
    assert!(report.is_success(), "{report}");
    assert!(report.cases.len() >= 8, "{report}");
}

#[test]
fn policy_test_runner_reports_failures() {
    let dir = tree(&[(
        "tests/wrong.toml",
        r#"
[[case]]
name = "wrongly expects allow"
action = "storage:GetObject"
expect = "allow"
determining = ["nope"]
principal = { account = "111111111111", user = "bob" }
resource = { service = "storage" }
"#,
    )]);
    write(dir.path(), "tests/broken.toml", "[[case]]\nname = 1\n");
    let snap = ok(load(dir.path()));
    let report = run_policy_tests(&snap, &tests_dir(dir.path()));
    assert!(!report.is_success());
    assert_eq!(report.failed(), 1);
    assert_eq!(report.cases[0].failures.len(), 2, "{report}");
    assert_eq!(report.file_errors.len(), 1, "{report}");
}

#[test]
fn unknown_action_is_a_deny_with_an_error() {
    let snap = ok(load(&shipped_dir()));
    let d = snap.decide(&service_call(principal(A, "alice", true), "storage:Nope"));
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.denied_by, Some(Tier::Account));
    assert_eq!(d.account.errors.len(), 1, "{d:?}");
    // A service action applied to an account is a schema mismatch, also a Deny.
    let d = snap.decide(&on_account(
        principal(A, "alice", true),
        "storage:GetObject",
        A,
    ));
    assert_eq!(d.verdict, Verdict::Deny);
    assert!(!d.account.errors.is_empty());
}

// --- tiers ---

#[test]
fn guardrail_binds_in_all_features_but_not_in_consolidated_billing() {
    let dir = tree(&[
        (&format!("orgs/{ORG}/base.cedar"), ALLOW_ALL),
        (&format!("orgs/{ORG}/deny.cedar"), DENY_SIGNUP),
    ]);
    let snap = ok(load(dir.path()));
    let req = service_call(principal(A, "alice", true), "storage:SignUp");

    let d = snap.decide(&in_org(req.clone(), FeatureSet::AllFeatures));
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.denied_by, Some(Tier::Organization));
    assert_eq!(d.account.verdict, Verdict::Allow);
    let OrgTier::Applied(org) = &d.organization else {
        panic!("org tier should apply: {d:?}")
    };
    assert_eq!(ids(org), ["no-signup"]);
    assert_eq!(org.determining[0].file, format!("orgs/{ORG}/deny.cedar"));

    let d = snap.decide(&in_org(req.clone(), FeatureSet::ConsolidatedBilling));
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(
        d.organization,
        OrgTier::NotApplied {
            reason: NotAppliedReason::ConsolidatedBillingOnly
        }
    );

    // Other actions pass both tiers.
    let d = snap.decide(&in_org(
        service_call(principal(A, "alice", true), "storage:GetObject"),
        FeatureSet::AllFeatures,
    ));
    assert!(d.is_allow(), "{d:?}");
    let OrgTier::Applied(org) = &d.organization else {
        panic!("org tier should apply")
    };
    assert_eq!(ids(org), ["full-access"]);
}

#[test]
fn management_account_is_exempt_from_guardrails() {
    let dir = tree(&[(&format!("orgs/{ORG}/deny.cedar"), DENY_SIGNUP)]);
    let snap = ok(load(dir.path()));
    let d = snap.decide(&in_org(
        service_call(principal(MGMT, "root", true), "storage:SignUp"),
        FeatureSet::AllFeatures,
    ));
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(
        d.organization,
        OrgTier::NotApplied {
            reason: NotAppliedReason::ManagementAccount
        }
    );
    // ... while a member is denied (no permit in the folder at all).
    let d = snap.decide(&in_org(
        service_call(principal(A, "alice", true), "storage:GetObject"),
        FeatureSet::AllFeatures,
    ));
    assert_eq!(d.denied_by, Some(Tier::Organization));
}

#[test]
fn org_without_folder_or_without_policies_is_full_access() {
    let dir = tree(&[("orgs/o-emptyempty/README.md", "nothing yet")]);
    let snap = ok(load(dir.path()));
    for org in [ORG, "o-emptyempty"] {
        let mut req = in_org(
            service_call(principal(A, "alice", true), "storage:GetObject"),
            FeatureSet::AllFeatures,
        );
        if let Some(o) = req.organization.as_mut() {
            o.id = ok(OrgId::parse(org));
        }
        let d = snap.decide(&req);
        assert!(d.is_allow(), "{d:?}");
        assert_eq!(
            d.organization,
            OrgTier::NotApplied {
                reason: NotAppliedReason::NoGuardrails
            }
        );
    }
}

#[test]
fn allow_list_guardrail_versus_forbid_guardrail() {
    let allow_list = "@id(\"storage-only\")\npermit (principal, action in Tollgate::Action::\"storage:*\", resource);\n";
    let dir = tree(&[(&format!("orgs/{ORG}/allow.cedar"), allow_list)]);
    let snap = ok(load(dir.path()));
    let member = |action: &str| {
        snap.decide(&in_org(
            service_call(principal(A, "alice", true), action),
            FeatureSet::AllFeatures,
        ))
    };
    assert!(member("storage:PutObject").is_allow());
    let d = member("compute:RunJob");
    assert_eq!(d.denied_by, Some(Tier::Organization));
    let OrgTier::Applied(org) = &d.organization else {
        panic!("should apply")
    };
    assert!(org.determining.is_empty(), "implicit deny names no policy");

    // The same intent as a deny-list: everything but compute.
    let deny_list = "@id(\"no-compute\")\nforbid (principal, action in Tollgate::Action::\"compute:*\", resource);\n";
    let dir = tree(&[
        (&format!("orgs/{ORG}/base.cedar"), ALLOW_ALL),
        (&format!("orgs/{ORG}/deny.cedar"), deny_list),
    ]);
    let snap = ok(load(dir.path()));
    let member = |action: &str| {
        snap.decide(&in_org(
            service_call(principal(A, "alice", true), action),
            FeatureSet::AllFeatures,
        ))
    };
    assert!(member("support:CreateCase").is_allow());
    let d = member("compute:DescribeJobs");
    assert_eq!(d.denied_by, Some(Tier::Organization));
    let OrgTier::Applied(org) = &d.organization else {
        panic!("should apply")
    };
    assert_eq!(ids(org), ["no-compute"]);
    // Guardrails only restrict: they never grant what the account tier denies.
    let d = snap.decide(&in_org(
        service_call(principal(A, "bob", false), "support:CreateCase"),
        FeatureSet::AllFeatures,
    ));
    assert_eq!(d.denied_by, Some(Tier::Account));
}

#[test]
fn another_accounts_files_cannot_affect_this_account() {
    let b_permit = "@id(\"everyone\")\npermit (principal, action, resource);\n";
    let b_forbid = "@id(\"nobody\")\nforbid (principal, action, resource);\n";
    let dir = tree(&[
        (&format!("accounts/{B}/permit.cedar"), b_permit),
        (&format!("accounts/{B}/forbid.cedar"), b_forbid),
    ]);
    let snap = ok(load(dir.path()));
    assert!(snap.uses_shared_default(&acct(A)));
    assert!(!snap.uses_shared_default(&acct(B)));
    // B's permit-everything does not help A's non-owner, B's forbid does not stop A's owner.
    let d = snap.decide(&service_call(
        principal(A, "bob", false),
        "storage:GetObject",
    ));
    assert_eq!(d.verdict, Verdict::Deny);
    let d = snap.decide(&service_call(
        principal(A, "alice", true),
        "storage:GetObject",
    ));
    assert!(d.is_allow(), "{d:?}");
    // B's own files apply to B.
    let d = snap.decide(&service_call(
        principal(B, "carol", true),
        "storage:GetObject",
    ));
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(ids(&d.account), ["nobody"]);
    assert_eq!(
        d.account.determining[0].file,
        format!("accounts/{B}/forbid.cedar")
    );
}

#[test]
fn groups_carry_permissions_and_context_is_usable() {
    let readers = r#"@id("readers-read")
permit (principal in Tollgate::Group::"111111111111/readers", action in [Tollgate::Action::"storage:GetObject", Tollgate::Action::"storage:ListObjects"], resource)
when { context.mfa && context.source_ip.isInRange(ip("10.0.0.0/8")) && context.month_to_date_spend.lessThan(decimal("100.00")) && context.service == "storage" && context.feature_set == "NONE" };
"#;
    let dir = tree(&[(&format!("accounts/{A}/readers.cedar"), readers)]);
    let snap = ok(load(dir.path()));
    let mut p = principal(A, "bob", false);
    p.groups.push(ok(GroupName::parse("readers")));
    let mut req = service_call(p.clone(), "storage:GetObject");
    req.context.mfa = true;
    let d = snap.decide(&req);
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(ids(&d.account), ["readers-read"]);

    let mut no_mfa = req.clone();
    no_mfa.context.mfa = false;
    assert!(!snap.decide(&no_mfa).is_allow());
    let mut far = req.clone();
    far.context.source_ip = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1));
    assert!(!snap.decide(&far).is_allow());
    let mut spent = req.clone();
    spent.context.month_to_date_spend = Decimal::new(10_001, 2);
    assert!(!snap.decide(&spent).is_allow());
    let mut write = req.clone();
    write.action = "storage:PutObject".to_owned();
    assert!(!snap.decide(&write).is_allow());
    let mut not_member = req;
    not_member.principal.groups.clear();
    assert!(!snap.decide(&not_member).is_allow());
}

#[test]
fn entity_chain_reaches_the_organization() {
    let in_org_policy = format!(
        "@id(\"org-members\")\npermit (principal in Tollgate::Organization::\"{ORG}\", action, resource in Tollgate::Organization::\"{ORG}\")\nwhen {{ principal.account.name == \"acct-{A}\" }};\n"
    );
    let dir = tree(&[(&format!("accounts/{A}/org.cedar"), in_org_policy.as_str())]);
    let snap = ok(load(dir.path()));
    let mut p = principal(A, "bob", false);
    p.groups.push(ok(GroupName::parse("devs")));
    let d = snap.decide(&in_org(
        service_call(p.clone(), "compute:RunJob"),
        FeatureSet::ConsolidatedBilling,
    ));
    assert!(d.is_allow(), "{d:?}");
    let d = snap.decide(&service_call(p, "compute:RunJob"));
    assert!(!d.is_allow());
}

#[test]
fn an_erroring_policy_denies_in_either_tier() {
    // context.time * 10^10 overflows a Long at runtime: Cedar skips the forbid and would allow.
    let overflow = "@id(\"overflowing-forbid\")\nforbid (principal, action, resource) when { context.time * 10000000000 > 0 };\n";
    let dir = tree(&[
        (&format!("orgs/{ORG}/base.cedar"), ALLOW_ALL),
        (&format!("orgs/{ORG}/bad.cedar"), overflow),
    ]);
    let snap = ok(load(dir.path()));
    let d = snap.decide(&in_org(
        service_call(principal(A, "alice", true), "storage:GetObject"),
        FeatureSet::AllFeatures,
    ));
    assert_eq!(d.verdict, Verdict::Deny, "{d:?}");
    assert_eq!(d.denied_by, Some(Tier::Organization));
    let OrgTier::Applied(org) = &d.organization else {
        panic!("should apply")
    };
    assert_eq!(ids(org), ["overflowing-forbid"]);
    assert_eq!(org.errors.len(), 1);
    assert!(
        org.errors[0].contains("overflowing-forbid"),
        "{:?}",
        org.errors
    );
    assert!(!org.errors[0].contains("policy0"));

    let dir = tree(&[(&format!("accounts/{A}/bad.cedar"), overflow)]);
    let snap = ok(load(dir.path()));
    let d = snap.decide(&service_call(
        principal(A, "alice", true),
        "storage:GetObject",
    ));
    assert_eq!(d.denied_by, Some(Tier::Account), "{d:?}");
    assert_eq!(d.errors().count(), 1);
}

#[test]
fn out_of_range_spend_is_a_deny_not_a_panic() {
    let snap = ok(load(&shipped_dir()));
    let mut req = service_call(principal(A, "alice", true), "storage:GetObject");
    req.context.month_to_date_spend = Decimal::MAX;
    let d = snap.decide(&req);
    assert_eq!(d.verdict, Verdict::Deny);
    assert!(!d.account.errors.is_empty());
}

// --- load errors ---

#[test]
fn duplicate_id_within_a_tier_is_rejected_naming_both_places() {
    let dup = "// a comment\n@id(\"owner-full-access\")\npermit (principal, action, resource);\n";
    let dir = tree(&[(&format!("accounts/{A}/dup.cedar"), dup)]);
    let f = expect_failure(dir.path());
    let d = find(&f, "duplicate @id `owner-full-access`");
    assert_eq!(
        d.file.as_deref(),
        Some(format!("accounts/{A}/dup.cedar").as_str())
    );
    assert_eq!(d.line, Some(2));
    assert!(d.message.contains("default-account/owner.cedar"), "{d}");

    // The same id in two different tiers is fine.
    let dir = tree(&[(&format!("orgs/{ORG}/a.cedar"), dup)]);
    assert!(load(dir.path()).is_ok());

    let two = format!("{ALLOW_ALL}\n{ALLOW_ALL}");
    let dir = tree(&[(&format!("orgs/{ORG}/a.cedar"), two.as_str())]);
    let f = expect_failure(dir.path());
    let d = find(&f, "duplicate @id `full-access`");
    assert_eq!(d.line, Some(4));
}

#[test]
fn missing_id_is_rejected_with_file_and_line() {
    let text = "@id(\"fine\")\npermit (principal, action, resource);\n\n// no id below\npermit (principal, action, resource);\n";
    let dir = tree(&[(&format!("accounts/{A}/noid.cedar"), text)]);
    let f = expect_failure(dir.path());
    let d = find(&f, "no `@id");
    assert_eq!(
        d.file.as_deref(),
        Some(format!("accounts/{A}/noid.cedar").as_str())
    );
    assert_eq!(d.line, Some(5));
    assert_eq!(d.column, Some(1));
}

#[test]
fn syntax_errors_report_line_and_column_and_all_problems() {
    let bad = "@id(\"a\")\npermit (principal, action, resource)\nwhen { context.mfa == };\n";
    let also_bad = "@id(\"b\")\nforbid (principal, action, resource) unless { true } oops;\n";
    let dir = tree(&[
        (&format!("accounts/{A}/bad.cedar"), bad),
        (&format!("orgs/{ORG}/also.cedar"), also_bad),
    ]);
    let f = expect_failure(dir.path());
    let d = f
        .diagnostics
        .iter()
        .find(|d| d.file.as_deref() == Some(&format!("accounts/{A}/bad.cedar")))
        .unwrap_or_else(|| panic!("{f}"));
    assert_eq!((d.line, d.column), (Some(3), Some(23)), "{d}");
    assert!(
        f.diagnostics.iter().any(
            |d| d.file.as_deref() == Some(&format!("orgs/{ORG}/also.cedar")) && d.line == Some(2)
        ),
        "{f}"
    );
}

#[test]
fn schema_violations_are_rejected_strictly_with_position() {
    let text =
        "@id(\"typo\")\npermit (principal, action, resource)\nwhen { principal.is_admin };\n";
    let dir = tree(&[(&format!("accounts/{A}/typo.cedar"), text)]);
    let f = expect_failure(dir.path());
    let d = find(&f, "policy `typo`");
    assert_eq!(
        d.file.as_deref(),
        Some(format!("accounts/{A}/typo.cedar").as_str())
    );
    assert_eq!(d.line, Some(3), "{d}");

    let text = "@id(\"no-such-action\")\npermit (principal, action == Tollgate::Action::\"storage:Explode\", resource);\n";
    let dir = tree(&[(&format!("orgs/{ORG}/x.cedar"), text)]);
    let f = expect_failure(dir.path());
    let d = find(&f, "policy `no-such-action`");
    assert_eq!(d.line, Some(2), "{d}");

    // Strict mode: comparing a String to a Long is an error, not a warning.
    let text = "@id(\"mixed\")\npermit (principal, action, resource) when { context.path == 3 };\n";
    let dir = tree(&[(&format!("orgs/{ORG}/y.cedar"), text)]);
    let f = expect_failure(dir.path());
    find(&f, "policy `mixed`");
}

#[test]
fn required_actions_must_exist_in_the_schema() {
    let snap_ok = load_tree(&shipped_dir(), &["storage:GetObject"]);
    assert!(snap_ok.is_ok());
    let f = match load_tree(&shipped_dir(), &["storage:GetObject", "storage:Teleport"]) {
        Ok(_) => panic!("should fail"),
        Err(f) => f,
    };
    let d = find(&f, "`storage:Teleport`");
    assert_eq!(d.file.as_deref(), Some("schema.cedarschema"));
    assert_eq!(f.diagnostics.len(), 1);
}

#[test]
fn schema_errors_and_missing_schema_are_reported() {
    let dir = tree(&[]);
    write(
        dir.path(),
        "schema.cedarschema",
        "namespace Tollgate {\n  entity User = {\n    name: Strin,\n  };\n}\n",
    );
    let f = expect_failure(dir.path());
    assert_eq!(
        f.diagnostics[0].file.as_deref(),
        Some("schema.cedarschema"),
        "{f}"
    );

    let dir = tree(&[]);
    ok(fs::remove_file(dir.path().join("schema.cedarschema")));
    let f = expect_failure(dir.path());
    find(&f, "missing schema");
}

#[test]
fn bad_folder_names_stray_files_and_templates_are_rejected() {
    let dir = tree(&[
        ("accounts/12345/x.cedar", ALLOW_ALL),
        ("orgs/o-UPPER/x.cedar", ALLOW_ALL),
        ("acounts/111111111111/x.cedar", ALLOW_ALL),
        ("stray.cedar", ALLOW_ALL),
        (&format!("accounts/{A}/nested/x.cedar"), ALLOW_ALL),
        (&format!("accounts/{A}/notes.md"), "ignored"),
        (
            &format!("accounts/{B}/t.cedar"),
            "@id(\"t\")\npermit (principal == ?principal, action, resource);\n",
        ),
    ]);
    let f = expect_failure(dir.path());
    find(&f, "`12345` is not an account id");
    find(&f, "`o-UPPER` is not an organization id");
    find(&f, "unexpected folder `acounts`");
    find(&f, "policy files belong in");
    find(&f, "nested folders");
    find(&f, "templates");
    assert_eq!(f.diagnostics.len(), 6, "{f}");
}

#[test]
fn non_utf8_files_and_symlinks_outside_the_tree_are_rejected() {
    let dir = tree(&[]);
    let path = dir.path().join(format!("accounts/{A}/latin1.cedar"));
    ok(fs::create_dir_all(ok(path.parent().ok_or("no parent"))));
    ok(fs::write(
        &path,
        b"@id(\"x\")\n// caf\xe9\npermit (principal, action, resource);\n",
    ));
    let outside = tree(&[]);
    let target = outside.path().join("evil.cedar");
    ok(fs::write(&target, ALLOW_ALL));
    ok(std::os::unix::fs::symlink(
        &target,
        dir.path().join(format!("accounts/{A}/link.cedar")),
    ));
    // A link that stays inside the tree is fine.
    ok(std::os::unix::fs::symlink(
        dir.path().join("default-account/owner.cedar"),
        dir.path()
            .join(format!("orgs/{ORG}/inside.cedar"))
            .as_path(),
    )
    .or_else(|_| {
        fs::create_dir_all(dir.path().join(format!("orgs/{ORG}")))?;
        std::os::unix::fs::symlink(
            dir.path().join("default-account/owner.cedar"),
            dir.path().join(format!("orgs/{ORG}/inside.cedar")),
        )
    }));
    let f = expect_failure(dir.path());
    let d = find(&f, "not valid UTF-8");
    assert_eq!((d.line, d.column), (Some(2), Some(7)), "{d}");
    find(&f, "outside the policies directory");
    assert_eq!(f.diagnostics.len(), 2, "{f}");
}

#[test]
fn version_is_a_content_hash() {
    let a = tree(&[(&format!("orgs/{ORG}/x.cedar"), ALLOW_ALL)]);
    let b = tree(&[(&format!("orgs/{ORG}/x.cedar"), ALLOW_ALL)]);
    let va = ok(load(a.path())).version().to_owned();
    assert_eq!(va, ok(load(b.path())).version());
    write(b.path(), "README.md", "ignored files do not count");
    assert_eq!(va, ok(load(b.path())).version());
    write(
        b.path(),
        &format!("orgs/{ORG}/x.cedar"),
        &format!("{ALLOW_ALL}\n"),
    );
    assert_ne!(va, ok(load(b.path())).version());
}

#[test]
fn explain_map_has_file_id_and_full_text() {
    let snap = ok(load(&shipped_dir()));
    let tier = snap.account_policies(&acct(A));
    let info = tier
        .policy("owner-full-access")
        .unwrap_or_else(|| panic!("missing"));
    assert_eq!(info.file, "default-account/owner.cedar");
    assert!(
        info.text.starts_with("@id(\"owner-full-access\")"),
        "{}",
        info.text
    );
    assert!(info.text.contains("resource in principal.account"));
    assert_eq!(info.line, 5);
}

#[test]
fn ten_thousand_accounts_load_and_a_decision_touches_one_small_set() {
    let dir = tree(&[]);
    for i in 0..10_000u64 {
        let id = format!("{:012}", 100_000_000_000 + i);
        write(
            dir.path(),
            &format!("accounts/{id}/p.cedar"),
            &format!(
                "@id(\"own-{i}\")\npermit (principal, action, resource) when {{ principal.name == \"u{i}\" }};\n"
            ),
        );
    }
    let started = Instant::now();
    let snap = ok(load(dir.path()));
    let took = started.elapsed();
    let id = acct("100000000042");
    assert_eq!(
        snap.account_policies(&id).len(),
        2,
        "default + its own, nothing else"
    );
    assert!(!snap.uses_shared_default(&id));
    assert_eq!(snap.account_policies(&acct(A)).len(), 1);
    let d = snap.decide(&service_call(
        principal("100000000042", "u42", false),
        "storage:GetObject",
    ));
    assert!(d.is_allow(), "{d:?}");
    assert_eq!(ids(&d.account), ["own-42"]);
    let d = snap.decide(&service_call(
        principal("100000000042", "u43", false),
        "storage:GetObject",
    ));
    assert!(!d.is_allow());
    eprintln!("10,000 accounts loaded in {took:?}");
}

// --- the store ---

fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

fn store_at(dir: &Path) -> PolicyStore {
    let actions = route_actions();
    let required: Vec<&str> = actions.iter().map(String::as_str).collect();
    ok(PolicyStore::open(dir, &required, clock()))
}

#[test]
fn broken_edit_keeps_the_last_good_snapshot() {
    let dir = tree(&[]);
    let store = store_at(dir.path());
    let good = store.load();
    write(
        dir.path(),
        &format!("accounts/{A}/bad.cedar"),
        "@id(\"x\")\npermit (principal, action, resource\n",
    );
    let f = match store.reload(ReloadTrigger::Api) {
        Ok(_) => panic!("should be rejected"),
        Err(f) => f,
    };
    assert_eq!(
        f.first().and_then(|d| d.file.as_deref()),
        Some(format!("accounts/{A}/bad.cedar").as_str())
    );
    assert_eq!(store.load().version(), good.version());
    let last = store
        .last_failure()
        .unwrap_or_else(|| panic!("failure remembered"));
    assert_eq!(last.trigger, ReloadTrigger::Api);
    assert_eq!(last.failure, f);
    assert_eq!(store.counters().attempts(), 1);
    assert_eq!(store.counters().failures(), 1);
    // Decisions still work on the old snapshot.
    assert!(
        store
            .load()
            .decide(&service_call(
                principal(A, "alice", true),
                "storage:GetObject"
            ))
            .is_allow()
    );

    // Fixing the file swaps in the new tree and clears the failure.
    write(
        dir.path(),
        &format!("accounts/{A}/bad.cedar"),
        "@id(\"x\")\nforbid (principal, action, resource);\n",
    );
    let new = ok(store.reload(ReloadTrigger::Signal));
    assert_ne!(new.version(), good.version());
    assert_eq!(store.load().version(), new.version());
    assert!(store.last_failure().is_none());
    assert_eq!(store.counters().attempts(), 2);
    assert_eq!(store.counters().failures(), 1);
    assert!(
        !store
            .load()
            .decide(&service_call(
                principal(A, "alice", true),
                "storage:GetObject"
            ))
            .is_allow()
    );
    // An unchanged tree keeps the same snapshot.
    let same = ok(store.reload(ReloadTrigger::Cli));
    assert!(Arc::ptr_eq(&same, &new));
}

#[test]
fn hammer_concurrent_decisions_during_reloads_never_see_a_mix() {
    // Tree 1: guardrail forbids storage; tree 2: the account forbids storage. Every decision must
    // be one of the two whole answers, matching the version it was made with.
    let t1 = tree(&[
        (&format!("orgs/{ORG}/base.cedar"), ALLOW_ALL),
        (
            &format!("orgs/{ORG}/no-storage.cedar"),
            "@id(\"org-no-storage\")\nforbid (principal, action in Tollgate::Action::\"storage:*\", resource);\n",
        ),
    ]);
    let t2 = tree(&[(
        &format!("accounts/{A}/no-storage.cedar"),
        "@id(\"acct-no-storage\")\nforbid (principal, action in Tollgate::Action::\"storage:*\", resource);\n",
    )]);
    let live = tree(&[]);
    let copy = |from: &Path| {
        let _ = fs::remove_dir_all(live.path().join("orgs"));
        let _ = fs::remove_dir_all(live.path().join("accounts"));
        for sub in ["orgs", "accounts"] {
            let src = from.join(sub);
            if src.exists() {
                copy_dir(&src, &live.path().join(sub));
            }
        }
    };
    copy(t1.path());
    let v1 = ok(load(t1.path())).version().to_owned();
    let v2 = ok(load(t2.path())).version().to_owned();
    let store = Arc::new(store_at(live.path()));
    assert_eq!(store.load().version(), v1);

    let stop = Arc::new(AtomicBool::new(false));
    let req = in_org(
        service_call(principal(A, "alice", true), "storage:GetObject"),
        FeatureSet::AllFeatures,
    );
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (store, stop, req) = (Arc::clone(&store), Arc::clone(&stop), req.clone());
            let (v1, v2) = (v1.clone(), v2.clone());
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let snap = store.load();
                    let d = snap.decide(&req);
                    assert_eq!(d.verdict, Verdict::Deny);
                    assert!(d.errors().next().is_none(), "{d:?}");
                    if d.policy_version == v1 {
                        assert_eq!(d.denied_by, Some(Tier::Organization), "{d:?}");
                        assert_eq!(d.account.verdict, Verdict::Allow);
                    } else {
                        assert_eq!(d.policy_version, v2);
                        assert_eq!(d.denied_by, Some(Tier::Account), "{d:?}");
                        assert_eq!(ids(&d.account), ["acct-no-storage"]);
                        assert_eq!(
                            d.organization,
                            OrgTier::NotApplied {
                                reason: NotAppliedReason::NoGuardrails
                            }
                        );
                    }
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    for i in 0..100 {
        let (from, expected) = if i % 2 == 0 {
            (t2.path(), &v2)
        } else {
            (t1.path(), &v1)
        };
        copy(from);
        let snap = ok(store.reload(ReloadTrigger::Cli));
        assert_eq!(snap.version(), expected.as_str());
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        total += w
            .join()
            .unwrap_or_else(|_| panic!("a decision thread failed"));
    }
    assert!(total > 0);
    assert_eq!(store.counters().failures(), 0);
    assert_eq!(store.counters().attempts(), 100);
}

fn copy_dir(from: &Path, to: &Path) {
    ok(fs::create_dir_all(to));
    for entry in ok(fs::read_dir(from)) {
        let entry = ok(entry);
        let target = to.join(entry.file_name());
        if ok(entry.file_type()).is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            ok(fs::copy(entry.path(), target));
        }
    }
}

#[test]
fn org_statuses_follow_feature_sets() {
    let dir = tree(&[
        (&format!("orgs/{ORG}/base.cedar"), ALLOW_ALL),
        ("orgs/o-cbcbcbcbcb/base.cedar", ALLOW_ALL),
        ("orgs/o-gonegonego/base.cedar", ALLOW_ALL),
        ("orgs/o-emptyempty/README.md", ""),
    ]);
    let store = store_at(dir.path());
    let statuses = store.org_statuses(|org| match org.as_str() {
        ORG | "o-emptyempty" => Some(FeatureSet::AllFeatures),
        "o-cbcbcbcbcb" => Some(FeatureSet::ConsolidatedBilling),
        _ => None,
    });
    let by_id = |id: &str| {
        statuses
            .iter()
            .find(|s| s.org_id.as_str() == id)
            .unwrap_or_else(|| panic!("{id} missing"))
            .status
    };
    assert_eq!(statuses.len(), 4);
    assert_eq!(by_id(ORG), OrgStatusKind::Active);
    assert_eq!(by_id("o-cbcbcbcbcb"), OrgStatusKind::Inactive);
    assert_eq!(by_id("o-gonegonego"), OrgStatusKind::Inactive);
    assert_eq!(by_id("o-emptyempty"), OrgStatusKind::Inactive);
}

#[test]
fn watcher_reloads_after_a_change() {
    let dir = tree(&[]);
    let store = Arc::new(store_at(dir.path()));
    let before = store.load().version().to_owned();
    let _watcher = ok(store.spawn_watcher());
    std::thread::sleep(Duration::from_millis(100));
    write(dir.path(), &format!("accounts/{A}/new.cedar"), ALLOW_ALL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.load().version() == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(store.load().version(), before, "watcher did not reload");
    assert!(store.load().has_account_folder(&acct(A)));
}

#[test]
fn spend_is_passed_as_an_exact_cedar_decimal() {
    assert_eq!(ok(entities::cedar_decimal(Decimal::new(1250, 2))), "12.5");
    assert_eq!(ok(entities::cedar_decimal(Decimal::new(7, 0))), "7.0");
    assert_eq!(
        ok(entities::cedar_decimal(Decimal::new(123_456, 5))),
        "1.2346"
    );
    assert_eq!(ok(entities::cedar_decimal(Decimal::new(-5, 1))), "-0.5");
    assert!(entities::cedar_decimal(Decimal::new(922_337_203_685_478, 0)).is_err());
}

#[test]
fn readme_examples_validate() {
    let readme = ok(fs::read_to_string(shipped_dir().join("README.md")));
    let blocks: Vec<&str> = readme
        .split("```cedar\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .collect();
    assert!(blocks.len() >= 8, "found {} cedar blocks", blocks.len());
    for (i, block) in blocks.iter().enumerate() {
        let dir = tree(&[(&format!("orgs/{ORG}/example{i}.cedar"), block)]);
        if let Err(f) = load(dir.path()) {
            panic!("README example {i} does not validate:\n{block}\n{f}");
        }
    }
}
