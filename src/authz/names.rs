//! The Cedar names tollgate and its policies agree on: namespace, entity types, actions and
//! context keys. The only place these strings are spelled; the schema file must match them.

/// The Cedar namespace of every entity type and action.
pub const NAMESPACE: &str = "Tollgate";

pub const ORGANIZATION_TYPE: &str = "Tollgate::Organization";
pub const ACCOUNT_TYPE: &str = "Tollgate::Account";
pub const GROUP_TYPE: &str = "Tollgate::Group";
pub const USER_TYPE: &str = "Tollgate::User";
pub const SERVICE_TYPE: &str = "Tollgate::Service";
pub const ACTION_TYPE: &str = "Tollgate::Action";

/// The schema file, relative to the policies directory.
pub const SCHEMA_FILE: &str = "schema.cedarschema";
pub const DEFAULT_ACCOUNT_DIR: &str = "default-account";
pub const ACCOUNTS_DIR: &str = "accounts";
pub const ORGS_DIR: &str = "orgs";
pub const TESTS_DIR: &str = "tests";

/// The annotation every policy carries; decisions name policies by it.
pub const ID_ANNOTATION: &str = "id";

/// Context record keys (the schema's `RequestContext`).
pub mod context {
    pub const MFA: &str = "mfa";
    pub const SOURCE_IP: &str = "source_ip";
    pub const TIME: &str = "time";
    pub const FEATURE_SET: &str = "feature_set";
    pub const METHOD: &str = "method";
    pub const PATH: &str = "path";
    pub const SERVICE: &str = "service";
    pub const MONTH_TO_DATE_SPEND: &str = "month_to_date_spend";
}

/// `context.feature_set` of an account that is in no organization.
pub const FEATURE_SET_NONE: &str = "NONE";
pub const FEATURE_SET_ALL: &str = "ALL_FEATURES";
pub const FEATURE_SET_CONSOLIDATED_BILLING: &str = "CONSOLIDATED_BILLING";

/// The gateway's own API actions (SPEC §3, U10 and the handshake/organization extras). Every
/// tree must declare them; [`super::load_tree`] checks this on top of the route actions.
pub const API_ACTIONS: &[&str] = &[
    "org:CreateOrganization",
    "org:CreateAccount",
    "org:InviteAccount",
    "org:AcceptHandshake",
    "org:DeclineHandshake",
    "org:CancelHandshake",
    "org:EnableAllFeatures",
    "org:RemoveAccount",
    "org:LeaveOrganization",
    "org:DeleteOrganization",
    "org:Describe",
    "iam:CreateUser",
    "iam:UpdatePassword",
    "iam:ManageMfa",
    "iam:ManageAccessKeys",
    "iam:UpdatePasswordPolicy",
    "iam:GetPasswordPolicy",
    "iam:ManageGroups",
    "billing:ViewBill",
    "billing:FinalizeBill",
    "audit:ReadDecisions",
    "policy:Read",
    "policy:Reload",
];

/// The route actions of the shipped services (storage, support, compute).
pub const SHIPPED_ROUTE_ACTIONS: &[&str] = &[
    "storage:GetObject",
    "storage:PutObject",
    "storage:DeleteObject",
    "storage:ListObjects",
    "support:CreateCase",
    "support:DescribeCases",
    "compute:RunJob",
    "compute:DescribeJobs",
];

/// The shipped services; each also has `<service>:SignUp` and `<service>:ChangePlan`.
pub const SHIPPED_SERVICES: &[&str] = &["storage", "support", "compute"];

/// `<service>:SignUp` (S1).
pub fn signup_action(service: &str) -> String {
    format!("{service}:SignUp")
}

/// `<service>:ChangePlan` (S2).
pub fn change_plan_action(service: &str) -> String {
    format!("{service}:ChangePlan")
}

/// Every action of the shipped services, for callers that have no config (tests, `demo`).
pub fn shipped_service_actions() -> Vec<String> {
    let mut actions: Vec<String> = SHIPPED_ROUTE_ACTIONS
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    for service in SHIPPED_SERVICES {
        actions.push(signup_action(service));
        actions.push(change_plan_action(service));
    }
    actions
}
