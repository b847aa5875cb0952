//! The plain input of a decision: who asks, in which organization, for what action on which
//! resource, with which context. Built by the caller from its own state; knows no HTTP or SQL.

use std::net::IpAddr;

use rust_decimal::Decimal;

use crate::ids::{AccountId, GroupName, OrgId, UserName};

/// One authorization question.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub principal: Principal,
    /// The organization the principal's account is a member of, if any.
    pub organization: Option<OrgMembership>,
    /// The Cedar action id exactly as the route or API names it, e.g. `storage:GetObject`.
    pub action: String,
    pub resource: Resource,
    pub context: RequestContext,
}

/// The authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub account: AccountId,
    pub account_name: String,
    pub user: UserName,
    /// The user's groups in its own account; the user is `in` each of them.
    pub groups: Vec<GroupName>,
    pub is_owner: bool,
}

/// The principal's organization at the time of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgMembership {
    pub id: OrgId,
    pub feature_set: FeatureSet,
    pub management_account: AccountId,
}

/// An organization's feature set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureSet {
    AllFeatures,
    ConsolidatedBilling,
}

/// What the action is applied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A service call: the service entity `<caller-account>/<service>`, inside the caller's
    /// account.
    Service { name: String },
    /// An API call: the account whose state is read or changed (the caller's own account for
    /// organization actions).
    Account(TargetAccount),
    /// An API call on one user of the principal's own account (its password, MFA, keys).
    User(TargetUser),
}

/// The user an API call targets; always in the principal's own account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUser {
    pub user: UserName,
    pub is_owner: bool,
}

/// The account an API call targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetAccount {
    pub id: AccountId,
    pub name: String,
    /// The organization the target account is a member of, if any.
    pub organization: Option<OrgId>,
}

/// The request facts policies may use (`context.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestContext {
    pub mfa: bool,
    pub source_ip: IpAddr,
    /// Unix seconds.
    pub time: i64,
    pub method: String,
    pub path: String,
    /// The account's charges this UTC month. Cedar decimals have four places; more are rounded.
    pub month_to_date_spend: Decimal,
}

// === impl FeatureSet ===

impl FeatureSet {
    /// The name policies see in `context.feature_set` and `Organization.feature_set`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllFeatures => super::names::FEATURE_SET_ALL,
            Self::ConsolidatedBilling => super::names::FEATURE_SET_CONSOLIDATED_BILLING,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            super::names::FEATURE_SET_ALL => Some(Self::AllFeatures),
            super::names::FEATURE_SET_CONSOLIDATED_BILLING => Some(Self::ConsolidatedBilling),
            _ => None,
        }
    }
}

impl std::fmt::Display for FeatureSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Resource ===

impl Resource {
    /// The caller's own account as the resource (organization actions, own-account API calls).
    pub fn own_account(principal: &Principal, organization: Option<&OrgMembership>) -> Self {
        Self::Account(TargetAccount {
            id: principal.account.clone(),
            name: principal.account_name.clone(),
            organization: organization.map(|o| o.id.clone()),
        })
    }

    /// The service name for `context.service`, `""` for API calls.
    pub fn service_name(&self) -> &str {
        match self {
            Self::Service { name } => name,
            Self::Account(_) | Self::User(_) => "",
        }
    }
}
