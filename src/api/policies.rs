//! The policy tree as callers see it (SPEC P4, P7): `GET /policies` and
//! `POST /policies/reload`.
//!
//! The tree is the operator's. A caller sees the active version, its own organization's entry,
//! and the last error's file and message only when that file lies in its own account's or
//! organization's folder; otherwise `file` is null and the message neutral.
//!
//! Only the operator reloads through the API: users of the accounts in
//! `[policies] reload_accounts` (empty by default), and then as Cedar allows `policy:Reload`.
//! Anyone else gets 403 `AccessDenied` before any policy runs. One API reload a second across
//! the instance ([`ReloadGate`]); a faster caller gets 429 `SlowDown` with `Retry-After`.
//! SIGHUP, the file watcher and the CLI reload without either check.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use parking_lot::{Mutex, RwLock};

use http::{Response, StatusCode};
use serde::Serialize;

use crate::api::auth::rfc3339;
use crate::api::{self, ApiRequest};
use crate::app::App;
use crate::authz::{Diagnostic, LoadFailure, OrgStatusKind, ReloadRequester, ReloadTrigger};
use crate::body::Body;
use crate::ids::AccountId;
use crate::server::authn::{self, Allow, Caller};
use crate::server::rejection::Rejection;

#[derive(Serialize)]
struct PoliciesView {
    version: String,
    loaded_at: String,
    last_error: Option<ErrorView>,
    organizations: Vec<OrgView>,
}

#[derive(Serialize)]
struct ErrorView {
    file: Option<String>,
    line: Option<usize>,
    column: Option<usize>,
    message: String,
}

#[derive(Serialize)]
struct OrgView {
    org_id: String,
    status: &'static str,
    reason: String,
}

#[derive(Serialize)]
struct ReloadFailed<'a> {
    error: ReloadError<'a>,
    request_id: &'a str,
}

#[derive(Serialize)]
struct ReloadError<'a> {
    code: &'a str,
    message: String,
    diagnostics: Vec<ErrorView>,
}

/// At most one API reload in this interval (P7).
pub const RELOAD_INTERVAL: Duration = Duration::seconds(1);

/// Who may reload the tree through the API, and when the last API reload started.
#[derive(Debug, Default)]
pub struct ReloadGate {
    accounts: RwLock<HashSet<AccountId>>,
    last: Mutex<Option<DateTime<Utc>>>,
}

// === impl ReloadGate ===

impl ReloadGate {
    /// The operator's accounts from `[policies] reload_accounts`.
    pub fn new(accounts: &[AccountId]) -> Self {
        Self {
            accounts: RwLock::new(accounts.iter().cloned().collect()),
            last: Mutex::new(None),
        }
    }

    /// Adds an operator account at run time: for a program that creates its operator account
    /// after the gateway is built (the demo's payer) and for tests. `serve` takes the list
    /// from the config alone.
    pub fn allow(&self, account: AccountId) {
        self.accounts.write().insert(account);
    }

    pub fn allows(&self, account: &AccountId) -> bool {
        self.accounts.read().contains(account)
    }

    /// Takes the reload slot at `now`, or says how many whole seconds until it frees.
    fn take(&self, now: DateTime<Utc>) -> Result<(), u64> {
        let mut last = self.last.lock();
        match *last {
            Some(at) if now >= at && now - at < RELOAD_INTERVAL => {
                let wait = RELOAD_INTERVAL - (now - at);
                Err(u64::try_from(wait.num_milliseconds().max(1))
                    .unwrap_or(1)
                    .div_ceil(1000))
            }
            _ => {
                *last = Some(now);
                Ok(())
            }
        }
    }
}

/// `GET /policies`.
pub async fn describe(app: &Arc<App>, req: ApiRequest) -> Result<Response<Body>, Rejection> {
    let caller = authn::authenticate(app, &req.headers, req.peer, Allow::default()).await?;
    api::authorize_on_own_account(app, &caller, "policy:Read", &req)?;
    app.sync_policy_metrics();
    let snapshot = app.policies.load();
    let last_error = app
        .policies
        .last_failure()
        .and_then(|f| f.failure.diagnostics.first().map(|d| visible(&caller, d)));
    api::json(
        StatusCode::OK,
        &PoliciesView {
            version: snapshot.version().to_owned(),
            loaded_at: rfc3339(snapshot.loaded_at()),
            last_error,
            organizations: own_organization(app, &caller),
        },
    )
}

/// `POST /policies/reload`: 200 with the new version, or 422 `InvalidPolicies` with the
/// diagnostics (the last good set stays active).
pub async fn reload(app: &Arc<App>, req: ApiRequest) -> Result<Response<Body>, Rejection> {
    let caller = authn::authenticate(app, &req.headers, req.peer, Allow::default()).await?;
    if !app.reloads.allows(&caller.principal.user.account_id) {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "the policy tree is the operator's: only users of the accounts in `[policies] reload_accounts` may reload it through the API (the operator can also send SIGHUP to the gateway, or turn on `[policies] watch`)",
        ));
    }
    api::authorize_on_own_account(app, &caller, "policy:Reload", &req)?;
    if let Err(wait_secs) = app.reloads.take(app.clock.now()) {
        let mut rejection = Rejection::new(
            StatusCode::TOO_MANY_REQUESTS,
            "SlowDown",
            "the policy tree was reloaded less than a second ago; retry after the time in Retry-After",
        );
        rejection.retry_after_secs = Some(wait_secs);
        return Err(rejection);
    }
    let request_id = req.request_id.clone();
    req.discard_body(app).await?;
    let policies = app.policies.clone();
    let requester = ReloadRequester {
        account: caller.principal.user.account_id.clone(),
        user: caller.principal.user.name.clone(),
        request_id: request_id.clone(),
    };
    let result = tokio::task::spawn_blocking(move || {
        policies.reload_by(ReloadTrigger::Api, Some(requester))
    })
    .await
    .map_err(|e| Rejection::internal(&e))?;
    app.sync_policy_metrics();
    match result {
        Ok(snapshot) => api::json(
            StatusCode::OK,
            &serde_json::json!({ "version": snapshot.version(), "loaded_at": rfc3339(snapshot.loaded_at()) }),
        ),
        Err(failure) => {
            let diagnostics = diagnostics(&caller, &failure);
            api::json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &ReloadFailed {
                    error: ReloadError {
                        code: "InvalidPolicies",
                        message: format!(
                            "the policy tree was rejected ({} problem(s)); the last good version {} stays active",
                            failure.diagnostics.len(),
                            app.policies.load().version()
                        ),
                        diagnostics,
                    },
                    request_id: request_id.as_str(),
                },
            )
        }
    }
}

fn diagnostics(caller: &Caller, failure: &LoadFailure) -> Vec<ErrorView> {
    failure
        .diagnostics
        .iter()
        .map(|d| visible(caller, d))
        .collect()
}

/// A diagnostic as this caller may see it.
fn visible(caller: &Caller, d: &Diagnostic) -> ErrorView {
    let account = caller.principal.user.account_id.as_str();
    let own_prefixes = [
        Some(format!("accounts/{account}/")),
        caller
            .principal
            .organization
            .as_ref()
            .map(|o| format!("orgs/{}/", o.id)),
    ];
    let own = d.file.as_deref().is_some_and(|f| {
        own_prefixes
            .iter()
            .flatten()
            .any(|p| f.starts_with(p.as_str()))
    });
    if own {
        ErrorView {
            file: d.file.clone(),
            line: d.line,
            column: d.column,
            message: d.message.clone(),
        }
    } else {
        ErrorView {
            file: None,
            line: None,
            column: None,
            message: "the policy tree has an error outside your account's and organization's folders; the operator has the details".to_owned(),
        }
    }
}

fn own_organization(app: &App, caller: &Caller) -> Vec<OrgView> {
    let Some(org) = caller.principal.organization.as_ref() else {
        return Vec::new();
    };
    let statuses = app
        .policies
        .org_statuses(|id| (id == &org.id).then_some(org.feature_set));
    let entry = statuses.into_iter().find(|s| s.org_id == org.id);
    vec![match entry {
        Some(s) => OrgView {
            org_id: s.org_id.to_string(),
            status: match s.status {
                OrgStatusKind::Active => "active",
                OrgStatusKind::Inactive => "inactive",
            },
            reason: s.reason,
        },
        None => OrgView {
            org_id: org.id.to_string(),
            status: "inactive",
            reason: "no guardrails folder: full access".to_owned(),
        },
    }]
}
