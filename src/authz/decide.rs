//! One decision: the account tier, then (when it binds) the organization tier, each evaluated
//! against its own small set, so the cost does not grow with the number of accounts.
//!
//! Fail closed: any evaluation error in a tier makes that tier Deny (Cedar skips an erroring
//! policy, so an erroring `forbid` would otherwise not deny), and a request that cannot be put to
//! Cedar at all (unknown action, out-of-range spend) is a Deny with the error, never a panic.

use cedar_policy::{AuthorizationError, Response};

use super::entities::{self, CedarInput};
use super::loader::{PolicySnapshot, TierPolicies};
use super::request::{FeatureSet, Request};

/// Allow or Deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allow,
    Deny,
}

/// Which tier denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Account,
    Organization,
}

/// The full answer to one [`Request`], with enough to log and explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// `None` on Allow; the account tier when both would deny.
    pub denied_by: Option<Tier>,
    pub account: TierOutcome,
    pub organization: OrgTier,
    /// The snapshot's content hash.
    pub policy_version: String,
}

/// What one tier said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierOutcome {
    pub verdict: Verdict,
    /// The policies that determined the verdict: the satisfied permits on Allow, the satisfied
    /// forbids on an explicit Deny, the erroring policies on a Deny caused by errors, empty when
    /// nothing permitted.
    pub determining: Vec<PolicyRef>,
    /// Every evaluation error, each naming its policy by file and `@id`.
    pub errors: Vec<String>,
}

/// A policy named the way users see it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyRef {
    pub file: String,
    pub id: String,
}

/// Whether the organization tier applied, and if so what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgTier {
    Applied(TierOutcome),
    NotApplied { reason: NotAppliedReason },
}

/// Why the organization tier did not bind (P3, P4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotAppliedReason {
    /// The principal's account is in no organization.
    NotInOrganization,
    /// The organization has only consolidated billing: guardrails are validated but never bind.
    ConsolidatedBillingOnly,
    /// Guardrails never bind the management account's users.
    ManagementAccount,
    /// The organization has no `orgs/<org-id>/` folder, or it holds no policies: full access.
    NoGuardrails,
}

// === impl Decision ===

impl Decision {
    pub fn is_allow(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// Every determining policy of both tiers.
    pub fn determining(&self) -> impl Iterator<Item = &PolicyRef> {
        let org = match &self.organization {
            OrgTier::Applied(o) => o.determining.as_slice(),
            OrgTier::NotApplied { .. } => &[],
        };
        self.account.determining.iter().chain(org)
    }

    /// Every error of both tiers.
    pub fn errors(&self) -> impl Iterator<Item = &String> {
        let org = match &self.organization {
            OrgTier::Applied(o) => o.errors.as_slice(),
            OrgTier::NotApplied { .. } => &[],
        };
        self.account.errors.iter().chain(org)
    }
}

// === impl Verdict, Tier, NotAppliedReason ===

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

impl Tier {
    /// The name in a 403's `denied_by`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Organization => "organization",
        }
    }
}

impl NotAppliedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotInOrganization => "not_in_organization",
            Self::ConsolidatedBillingOnly => "consolidated_billing_only",
            Self::ManagementAccount => "management_account",
            Self::NoGuardrails => "no_guardrails",
        }
    }
}

// === impl PolicySnapshot (decide) ===

impl PolicySnapshot {
    /// Decides `req`: Allow = account tier Allow AND (organization tier not binding OR its Allow).
    pub fn decide(&self, req: &Request) -> Decision {
        let input = entities::build(req, &self.names, &self.schema);
        let account = self.evaluate(self.account_policies(&req.principal.account), &input);
        let organization = match self.org_binding(req) {
            Ok(guardrails) => OrgTier::Applied(self.evaluate(guardrails, &input)),
            Err(reason) => OrgTier::NotApplied { reason },
        };
        self.finish(account, organization)
    }

    /// The guardrail set that binds this request, or why none does.
    fn org_binding(&self, req: &Request) -> Result<&TierPolicies, NotAppliedReason> {
        let org = req
            .organization
            .as_ref()
            .ok_or(NotAppliedReason::NotInOrganization)?;
        if org.feature_set != FeatureSet::AllFeatures {
            return Err(NotAppliedReason::ConsolidatedBillingOnly);
        }
        if org.management_account == req.principal.account {
            return Err(NotAppliedReason::ManagementAccount);
        }
        match self.org_policies(&org.id) {
            Some(set) if !set.is_empty() => Ok(set),
            _ => Err(NotAppliedReason::NoGuardrails),
        }
    }

    fn finish(&self, account: TierOutcome, organization: OrgTier) -> Decision {
        let denied_by = if account.verdict == Verdict::Deny {
            Some(Tier::Account)
        } else {
            match &organization {
                OrgTier::Applied(o) if o.verdict == Verdict::Deny => Some(Tier::Organization),
                _ => None,
            }
        };
        Decision {
            verdict: if denied_by.is_none() {
                Verdict::Allow
            } else {
                Verdict::Deny
            },
            denied_by,
            account,
            organization,
            policy_version: self.version.clone(),
        }
    }

    fn evaluate(
        &self,
        tier: &TierPolicies,
        input: &Result<CedarInput, entities::BuildError>,
    ) -> TierOutcome {
        match input {
            Ok(input) => {
                let response =
                    self.authorizer
                        .is_authorized(&input.request, &tier.set, &input.entities);
                outcome(tier, &response)
            }
            Err(e) => TierOutcome {
                verdict: Verdict::Deny,
                determining: Vec::new(),
                errors: vec![e.to_string()],
            },
        }
    }
}

fn policy_ref(tier: &TierPolicies, id: &str) -> PolicyRef {
    match tier.policy(id) {
        Some(info) => PolicyRef {
            file: info.file.clone(),
            id: info.id.clone(),
        },
        None => PolicyRef {
            file: String::new(),
            id: id.to_owned(),
        },
    }
}

fn outcome(tier: &TierPolicies, response: &Response) -> TierOutcome {
    let diagnostics = response.diagnostics();
    let mut errors = Vec::new();
    let mut erroring = Vec::new();
    for e in diagnostics.errors() {
        let AuthorizationError::PolicyEvaluationError(e) = e;
        let r = policy_ref(tier, e.policy_id().as_ref());
        errors.push(format!("policy `{}` in {}: {}", r.id, r.file, e.inner()));
        erroring.push(r);
    }
    let cedar_allows = response.decision() == cedar_policy::Decision::Allow;
    let (verdict, mut determining) = if !errors.is_empty() {
        (Verdict::Deny, erroring)
    } else {
        let reason = diagnostics
            .reason()
            .map(|id| policy_ref(tier, id.as_ref()))
            .collect();
        let verdict = if cedar_allows {
            Verdict::Allow
        } else {
            Verdict::Deny
        };
        (verdict, reason)
    };
    determining.sort();
    determining.dedup();
    TierOutcome {
        verdict,
        determining,
        errors,
    }
}
