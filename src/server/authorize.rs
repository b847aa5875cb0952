//! May they: one Cedar decision per call, from one policy snapshot read once (P1–P3a), and the
//! 403 that carries which tier denied. Every decision goes to the decision log. Before Cedar,
//! the deny throttle ([`throttle`], `[audit] deny_rate`): a principal denied too often is
//! answered 429 `SlowDown` without a decision or a record.

pub mod throttle;

use http::StatusCode;

use crate::app::App;
use crate::authz::{Decision, Principal, Request, RequestContext, Resource, Tier};
use crate::journal::{DecisionEntry, DecisionKind, RecordId};
use crate::server::authn::Caller;
use crate::server::rejection::Rejection;
use crate::server::scope;

/// The request facts a decision needs besides the caller.
pub struct Facts<'a> {
    pub action: &'a str,
    pub resource: Resource,
    pub method: &'a str,
    pub path: &'a str,
}

/// Decides `facts` for `caller`; a Deny becomes 403 `AccessDenied` with `denied_by`.
///
/// The decision is queued for the decision log (D1); the response waits until it is durable
/// (see `server::scope`). If the log cannot take it, the call is refused with 503.
pub fn authorize(app: &App, caller: &Caller, facts: Facts<'_>) -> Result<Decision, Rejection> {
    let user = &caller.principal.user;
    let principal = throttle::PrincipalKey {
        account: user.account_id.to_string(),
        user: user.name.key(),
    };
    let now = app.clock.now();
    if let Err(throttled) = app.deny_throttle.check(&principal, now) {
        app.metrics.denied_calls_throttled.inc();
        if throttled.first_in_window {
            tracing::warn!(
                account = %user.account_id,
                user = %user.name,
                deny_rate = app.config.audit.deny_rate,
                "calls throttled: this principal is denied more than `deny_rate` times a second"
            );
        }
        return Err(slow_down(throttled));
    }
    let request = request_for(app, caller, facts);
    let snapshot = app.policies.load();
    let decision = snapshot.decide(&request);
    record(app, &request, &decision)?;
    for error in decision.account.errors.iter() {
        tracing::warn!(action = %request.action, %error, tier = "account", "policy evaluation error");
    }
    if let crate::authz::OrgTier::Applied(outcome) = &decision.organization {
        for error in &outcome.errors {
            tracing::warn!(action = %request.action, %error, tier = "organization", "policy evaluation error");
        }
    }
    if decision.is_allow() {
        Ok(decision)
    } else {
        app.deny_throttle.denied(&principal, now);
        Err(denied(caller, &request.action, decision.denied_by))
    }
}

/// 429 for a principal past `[audit] deny_rate`.
fn slow_down(throttled: throttle::Throttled) -> Rejection {
    let mut rejection = Rejection::new(
        StatusCode::TOO_MANY_REQUESTS,
        "SlowDown",
        format!(
            "too many of your calls were denied in the last second; retry in {} s, and check what your policies allow",
            throttled.retry_after_secs
        ),
    );
    rejection.retry_after_secs = Some(throttled.retry_after_secs);
    rejection
}

/// Queues the decision record and registers its acknowledgement with the request scope.
fn record(app: &App, request: &Request, decision: &Decision) -> Result<(), Rejection> {
    let kind = match request.resource {
        Resource::Service { .. } => DecisionKind::Service,
        Resource::Account(_) | Resource::User(_) => DecisionKind::Api,
    };
    let entry = DecisionEntry {
        record_id: RecordId::generate(),
        kind,
        time: app.clock.now(),
        request_id: scope::request_id(),
        client_request_id: scope::client_request_id(),
        request: request.clone(),
        decision: decision.clone(),
    };
    let ack = app.journal.submit(entry).map_err(Rejection::from)?;
    scope::must_be_durable(ack);
    Ok(())
}

/// The authorization request for a caller, as the decision log records it.
pub fn request_for(app: &App, caller: &Caller, facts: Facts<'_>) -> Request {
    let user = &caller.principal.user;
    Request {
        principal: Principal {
            account: user.account_id.clone(),
            account_name: caller.principal.account_name.clone(),
            user: user.name.clone(),
            groups: caller.principal.groups.clone(),
            is_owner: user.is_owner,
        },
        organization: caller.principal.organization.clone(),
        action: facts.action.to_owned(),
        resource: facts.resource,
        context: RequestContext {
            mfa: caller.claims.mfa,
            source_ip: caller.source_ip,
            time: app.clock.now().timestamp(),
            method: facts.method.to_owned(),
            path: facts.path.to_owned(),
            month_to_date_spend: caller.principal.month_to_date_spend,
        },
    }
}

fn denied(caller: &Caller, action: &str, tier: Option<Tier>) -> Rejection {
    let user = &caller.principal.user;
    let (by, who) = match tier {
        Some(Tier::Organization) => (
            "the organization's guardrails",
            "ask the organization's management account",
        ),
        _ => (
            "the account's policies",
            "ask an administrator of the account",
        ),
    };
    let mut rejection = Rejection::new(
        StatusCode::FORBIDDEN,
        "AccessDenied",
        format!(
            "user `{}` of account {} may not perform `{action}`: {by} do not allow it; {who}",
            user.name, user.account_id
        ),
    );
    rejection.denied_by = Some(tier.unwrap_or(Tier::Account).as_str());
    rejection
}
