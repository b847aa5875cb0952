//! Explaining one logged decision (D3): each tier's result, its determining policies with the
//! full text they had *at the decision's policy version* (from the archive), its errors, and
//! whether and why the organization tier applied.
//!
//! The text comes from the archived tree of the decision's version. If that version was never
//! archived (a log older than the archive), the current tree is used only when its version is
//! the same one; otherwise the text is reported missing, never guessed from a newer tree.

use std::collections::BTreeMap;

use crate::db::Conn;

use super::AuditError;
use super::archive::{archived_tree, policy_text};
use crate::authz::{PolicyRef, Request, Tier, Verdict};
use crate::journal::{DecisionKind, DecisionRecord, decision_by_request_id};

/// One decision, explained.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    pub record: DecisionRecord,
    /// The Cedar request as decided (`None` if it does not parse back).
    pub request: Option<Request>,
    pub account_tier: TierResult,
    /// `None` when the organization tier did not apply; see [`Explanation::org_reason`].
    pub organization_tier: Option<TierResult>,
    /// Where the policy texts came from.
    pub source: TextSource,
}

/// One tier's result and the policies that determined it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierResult {
    pub verdict: Verdict,
    pub policies: Vec<PolicyText>,
    pub errors: Vec<String>,
}

/// A determining policy and its text at the decision's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyText {
    pub file: String,
    pub id: String,
    /// `None` when the version's sources are not available.
    pub text: Option<String>,
}

/// Where the texts of an explanation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextSource {
    /// The archive; `intact` = its sources hash to the version.
    Archive { intact: bool },
    /// The version was not archived, but the current tree has that very version.
    CurrentTree,
    /// Neither: texts are missing.
    Missing,
}

// === free functions ===

/// Every decision logged under `request_id` (oldest first), explained. Reload records are left
/// out. `current` is the current tree's version and sources, the fallback for an unarchived
/// version.
pub fn explain(
    conn: &Conn,
    request_id: &str,
    current: Option<(&str, &BTreeMap<String, String>)>,
) -> Result<Vec<Explanation>, AuditError> {
    let records = decision_by_request_id(conn, request_id)?;
    let mut out = Vec::new();
    for record in records
        .into_iter()
        .filter(|r| r.kind != DecisionKind::Reload)
    {
        let archived = archived_tree(conn, &record.policy_version)?;
        let (sources, source) = match &archived {
            Some(tree) => (
                Some(&tree.sources),
                TextSource::Archive {
                    intact: tree.intact,
                },
            ),
            None => match current {
                Some((version, sources)) if version == record.policy_version => {
                    (Some(sources), TextSource::CurrentTree)
                }
                _ => (None, TextSource::Missing),
            },
        };
        let texts = |refs: &[PolicyRef]| -> Vec<PolicyText> {
            refs.iter()
                .map(|p| PolicyText {
                    file: p.file.clone(),
                    id: p.id.clone(),
                    text: sources.and_then(|s| policy_text(s, &p.file, &p.id)),
                })
                .collect()
        };
        let errors_of = |tier: Tier| -> Vec<String> {
            record
                .errors
                .iter()
                .filter(|e| e.tier == Some(tier))
                .map(|e| e.message.clone())
                .collect()
        };
        let verdict_of = |tier: Tier| {
            if record.denied_by == Some(tier) {
                Verdict::Deny
            } else {
                Verdict::Allow
            }
        };
        let account_tier = TierResult {
            verdict: verdict_of(Tier::Account),
            policies: texts(&record.account_policies),
            errors: errors_of(Tier::Account),
        };
        let organization_tier = record.org_tier_applied().then(|| TierResult {
            verdict: verdict_of(Tier::Organization),
            policies: texts(&record.org_policies),
            errors: errors_of(Tier::Organization),
        });
        out.push(Explanation {
            request: record.request(),
            record,
            account_tier,
            organization_tier,
            source,
        });
    }
    Ok(out)
}

/// A sentence for a stored organization-tier reason.
pub fn org_reason_text(reason: Option<&str>) -> &'static str {
    match reason {
        Some("all_features_member") => {
            "the account is a member of an ALL_FEATURES organization: its guardrails bind"
        }
        Some("not_in_organization") => "the account is in no organization",
        Some("consolidated_billing_only") => {
            "the organization has consolidated billing only: its guardrails are validated but do not bind"
        }
        Some("management_account") => {
            "the management account is never bound by its organization's guardrails"
        }
        Some("no_guardrails") => "the organization has no guardrail policies: full access",
        _ => "not recorded",
    }
}

// === impl Explanation ===

impl Explanation {
    /// The stored reason code for the organization tier, e.g. `consolidated_billing_only`.
    pub fn org_reason(&self) -> Option<&str> {
        self.record.org_reason.as_deref()
    }
}
