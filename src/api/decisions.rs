//! `GET /decisions` (SPEC D2): the decision log as reviewers query it.
//!
//! Action `audit:ReadDecisions` on the caller's own account. Visibility: an account's reviewers
//! see the decisions whose principal is a user of their account; in an `ALL_FEATURES`
//! organization the management account's reviewers also see those of every current member
//! from the time it joined, never from before (and for a member that left and re-joined,
//! from its latest joining); in `CONSOLIDATED_BILLING` only their own, as guardrails do not
//! bind there either. Asking
//! for an account outside that set is 403 `AccessDenied`; a bad parameter is 400
//! `InvalidInput` naming every bad parameter at once. Reload records are not decisions about
//! anyone's principal and are not listed here (the operator reads them with the CLI).

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use http::{Response, StatusCode};
use serde::Serialize;

use crate::api::{self, ApiRequest};
use crate::app::App;
use crate::authz::{FeatureSet, PolicyRef, Resource, TargetAccount, Verdict};
use crate::body::Body;
use crate::ids::{AccountId, UserName};
use crate::journal::{
    DecisionFilter, DecisionRecord, MAX_LIMIT, Page, open_reader, query_decisions,
};
use crate::server::authn::{self, Allow, Caller};
use crate::server::authorize::{self, Facts};
use crate::server::rejection::Rejection;

/// An age for `since` and `until`, as `docs/openapi.json` states it (the other form is an
/// RFC 3339 `date-time`).
pub const AGE_PATTERN: &str = "^[0-9]+(ms|s|m|h|d)$";
/// `decision`, in any case.
pub const DECISION_PATTERN: &str = "^([Aa][Ll][Ll][Oo][Ww]|[Dd][Ee][Nn][Yy])$";
/// The longest `action` filter.
pub const MAX_ACTION: usize = 128;

const PARAMS: &[&str] = &[
    "account", "user", "action", "decision", "since", "until", "limit", "cursor",
];

#[derive(Serialize)]
struct PageView {
    decisions: Vec<DecisionView>,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct DecisionView {
    time: String,
    request_id: Option<String>,
    kind: &'static str,
    account: Option<String>,
    user: Option<String>,
    action: String,
    resource: String,
    source_ip: Option<String>,
    mfa: Option<bool>,
    decision: Option<&'static str>,
    denied_by: Option<&'static str>,
    policies: PoliciesView,
    organization_tier: OrgTierView,
    errors: Vec<ErrorView>,
    policy_version: String,
}

#[derive(Serialize)]
struct PoliciesView {
    account: Vec<PolicyView>,
    organization: Vec<PolicyView>,
}

#[derive(Serialize)]
struct PolicyView {
    file: String,
    id: String,
}

#[derive(Serialize)]
struct OrgTierView {
    applied: bool,
    reason: Option<String>,
}

#[derive(Serialize)]
struct ErrorView {
    tier: Option<&'static str>,
    message: String,
}

/// `GET /decisions`.
pub async fn list(app: &Arc<App>, req: ApiRequest) -> Result<Response<Body>, Rejection> {
    let caller = authn::authenticate(app, &req.headers, req.peer, Allow::default()).await?;
    authorize::authorize(
        app,
        &caller,
        Facts {
            action: "audit:ReadDecisions",
            resource: Resource::Account(TargetAccount {
                id: caller.principal.user.account_id.clone(),
                name: caller.principal.account_name.clone(),
                organization: caller.principal.organization.as_ref().map(|o| o.id.clone()),
            }),
            method: req.method.as_str(),
            path: &req.path,
        },
    )?;
    let mut filter = parse_query(req.query.as_deref(), app.clock.now())?;
    let (visible, visible_from) = visible_accounts(app, &caller).await?;
    filter.visible_from = visible_from;
    filter.accounts = match filter.accounts.pop() {
        Some(asked) if visible.contains(&asked) => vec![asked],
        Some(asked) => {
            return Err(Rejection::new(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                format!(
                    "account {asked} is not one whose decisions you may read: your own account, and in an ALL_FEATURES organization the management account's members"
                ),
            ));
        }
        None => visible,
    };
    let db = app.store.database().clone();
    let page = tokio::task::spawn_blocking(move || -> Result<Page, Rejection> {
        let conn = open_reader(&db)?;
        Ok(query_decisions(&conn, &filter)?)
    })
    .await
    .map_err(|e| Rejection::internal(&e))??;
    api::json(
        StatusCode::OK,
        &PageView {
            decisions: page.records.iter().map(view).collect(),
            next_cursor: page.next_cursor,
        },
    )
}

/// The accounts whose decisions the caller's reviewers may read (D2), and for each member of
/// the caller's organization the time it (last) joined: its decisions from before, including
/// those of an earlier membership it left, are not the payer's to read.
async fn visible_accounts(
    app: &App,
    caller: &Caller,
) -> Result<(Vec<AccountId>, Vec<(AccountId, DateTime<Utc>)>), Rejection> {
    let own = caller.principal.user.account_id.clone();
    let mut accounts = vec![own.clone()];
    let mut from = Vec::new();
    let manages_all_features =
        caller.principal.organization.as_ref().is_some_and(|o| {
            o.feature_set == FeatureSet::AllFeatures && o.management_account == own
        });
    if manages_all_features {
        let view = app.orgs.describe(&own, app.clock.now()).await?;
        for member in view.members.into_iter().filter(|m| m.account_id != own) {
            from.push((member.account_id.clone(), member.joined_at));
            accounts.push(member.account_id);
        }
    }
    Ok((accounts, from))
}

/// Parses the query; every problem is named in one 400.
fn parse_query(query: Option<&str>, now: DateTime<Utc>) -> Result<DecisionFilter, Rejection> {
    let mut filter = DecisionFilter::default();
    let mut problems: Vec<String> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(&raw.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        let key = percent_encoding::percent_decode_str(key)
            .decode_utf8_lossy()
            .into_owned();
        if !PARAMS.contains(&key.as_str()) {
            problems.push(format!(
                "unknown parameter `{}`; expected one of {}",
                shorten(&key),
                PARAMS.join(", ")
            ));
            continue;
        }
        if seen.contains(&key) {
            problems.push(format!("`{key}` is given twice"));
            continue;
        }
        seen.push(key.clone());
        match key.as_str() {
            "account" => match AccountId::parse(&value) {
                Ok(a) => filter.accounts = vec![a],
                Err(_) => problems.push(format!(
                    "`account` must be a 12-digit account id, got `{}`",
                    shorten(&value)
                )),
            },
            "user" => match UserName::parse(&value) {
                Ok(u) => filter.user = Some(u),
                Err(e) => problems.push(format!("`user`: {e}")),
            },
            "action" => {
                if value.is_empty() || value.chars().count() > MAX_ACTION {
                    problems.push("`action` must be an action name like `storage:GetObject`".into());
                } else {
                    filter.action = Some(value);
                }
            }
            "decision" => match value.to_ascii_lowercase().as_str() {
                "allow" => filter.decision = Some(Verdict::Allow),
                "deny" => filter.decision = Some(Verdict::Deny),
                _ => problems.push(format!(
                    "`decision` must be `Allow` or `Deny`, got `{}`",
                    shorten(&value)
                )),
            },
            "since" | "until" => match parse_time(&value, now) {
                Some(t) if key == "since" => filter.since = Some(t),
                Some(t) => filter.until = Some(t),
                None => problems.push(format!(
                    "`{key}` must be an RFC 3339 time like `2025-01-31T12:00:00Z` or an age like `24h`, got `{}`",
                    shorten(&value)
                )),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => filter.limit = Some(n),
                _ => problems.push(format!(
                    "`limit` must be a whole number from 1 to {MAX_LIMIT}, got `{}`",
                    shorten(&value)
                )),
            },
            "cursor" => filter.cursor = Some(value),
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(filter)
    } else {
        Err(Rejection::bad_request(
            "InvalidInput",
            format!("invalid query: {}", problems.join("; ")),
        ))
    }
}

/// An RFC 3339 time, or an age (`24h`, `7d`) counted back from `now`.
/// An RFC 3339 time, or an age (`24h`, as `[0-9]+(ms|s|m|h|d)`) before `now`. An age reaching
/// past the first representable time means "from the beginning", not an error.
fn parse_time(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&Utc));
    }
    let digits = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(digits);
    let ms_per_unit: u128 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    if number.is_empty() {
        return None;
    }
    let earliest = DateTime::<Utc>::MIN_UTC;
    // A number too long for u128 is an age past the beginning of time all the same.
    let Ok(n) = number.parse::<u128>() else {
        return Some(earliest);
    };
    let age = n
        .checked_mul(ms_per_unit)
        .and_then(|ms| i64::try_from(ms).ok())
        .and_then(chrono::Duration::try_milliseconds);
    Some(
        age.and_then(|age| now.checked_sub_signed(age))
            .unwrap_or(earliest),
    )
}

fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

fn view(r: &DecisionRecord) -> DecisionView {
    let policies = |refs: &[PolicyRef]| {
        refs.iter()
            .map(|p| PolicyView {
                file: p.file.clone(),
                id: p.id.clone(),
            })
            .collect()
    };
    DecisionView {
        time: r.time.to_rfc3339_opts(SecondsFormat::Millis, true),
        request_id: r.request_id.clone(),
        kind: match r.kind {
            crate::journal::DecisionKind::Service => "service",
            crate::journal::DecisionKind::Api => "api",
            crate::journal::DecisionKind::Reload => "reload",
        },
        account: r.account_id.as_ref().map(|a| a.to_string()),
        user: r.user_name.clone(),
        action: r.action.clone(),
        resource: r.resource.clone(),
        source_ip: r.source_ip.clone(),
        mfa: r.mfa,
        decision: r.decision.map(|d| match d {
            Verdict::Allow => "Allow",
            Verdict::Deny => "Deny",
        }),
        denied_by: r.denied_by.map(|t| t.as_str()),
        policies: PoliciesView {
            account: policies(&r.account_policies),
            organization: policies(&r.org_policies),
        },
        organization_tier: OrgTierView {
            applied: r.org_tier_applied(),
            reason: r.org_reason.clone(),
        },
        errors: r
            .errors
            .iter()
            .map(|e| ErrorView {
                tier: e.tier.map(|t| t.as_str()),
                message: e.message.clone(),
            })
            .collect(),
        policy_version: r.policy_version.clone(),
    }
}
