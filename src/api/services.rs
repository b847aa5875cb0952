//! Signing up for services and choosing plans (SPEC S1, S2), and the sign-up check every call
//! to a `signup_required` service passes ([`require_signed_up`], called by the pipeline after
//! authorization).
//!
//! `POST`/`DELETE /accounts/{id}/services/{service}/signup` are the Cedar action
//! `<service>:SignUp`; `PUT`/`DELETE .../plan` are `<service>:ChangePlan`; the resource is the
//! Service, so account policies and all-features guardrails can forbid them like any service
//! call. `GET /accounts/{id}/services` is `billing:ViewBill` on the account: sign-ups and plans
//! are what the account pays for. All of them act only inside the caller's own account.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::api::auth::rfc3339;
use crate::api::own_account;
use crate::api::{self, ApiRequest};
use crate::app::App;
use crate::authz::Resource;
use crate::body::Body;
use crate::config::ServiceConfig;
use crate::ids::AccountId;
use crate::server::authn::{self, Allow, Caller};
use crate::server::authorize::{self, Facts};
use crate::server::rejection::Rejection;
use crate::server::route;
use crate::services::{find_plan, plan_from_config};
use crate::store::services::{
    PlanChange, PlanPeriodRecord, ServiceStore, SignoffOutcome, SignupOutcome, SignupPeriod,
};

const LIST_ACTION: &str = "billing:ViewBill";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanRequest {
    /// A plan name, or `null` to end the current plan. Required: `{}` is refused rather than
    /// read as "end the plan".
    plan: serde_json::Value,
}

#[derive(Serialize)]
struct SignupDto {
    account_id: String,
    service: String,
    signed_up_at: String,
    signed_off_at: Option<String>,
    /// On sign-off: the plan that ended with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    plan_ended: Option<PlanPeriodDto>,
}

#[derive(Serialize)]
struct PlanStateDto {
    account_id: String,
    service: String,
    /// The plan now, `null` when none.
    plan: Option<String>,
    /// When the current state began (the plan's start, or when the last plan ended).
    since: Option<String>,
    /// The period this change ended, if any.
    previous: Option<PlanPeriodDto>,
}

#[derive(Serialize)]
struct PlanPeriodDto {
    plan: String,
    from: String,
    until: Option<String>,
}

#[derive(Serialize)]
struct PeriodDto {
    signed_up_at: String,
    signed_off_at: Option<String>,
}

#[derive(Serialize)]
struct ServiceEntryDto {
    service: String,
    signup_required: bool,
    signed_up: bool,
    /// Start of the open sign-up period, `null` when signed off.
    signed_up_at: Option<String>,
    plan: Option<String>,
    plan_since: Option<String>,
    signups: Vec<PeriodDto>,
    plans: Vec<PlanPeriodDto>,
}

/// S1: a call to a `signup_required` service passes only while the caller's account is signed
/// up for it (403 `NotSignedUp` otherwise). Other services cost nothing here: no store read.
pub async fn require_signed_up(
    app: &App,
    caller: &Caller,
    service: &route::Service,
) -> Result<(), Rejection> {
    if !service.config.signup_required {
        return Ok(());
    }
    let account = &caller.principal.user.account_id;
    if app.store.is_signed_up(account, &service.name).await? {
        Ok(())
    } else {
        Err(not_signed_up(account, &service.name))
    }
}

/// `GET /accounts/{id}/services`: every service the account signed up for or took a plan of,
/// with the current state and the whole history.
pub async fn list(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
) -> Result<Response<Body>, Rejection> {
    let (_, account) = api::caller_on_own_account(app, &req, account, LIST_ACTION).await?;
    let signups = app.store.signup_periods(&account).await?;
    let plans = app.store.plan_history(&account).await?;
    let mut entries: BTreeMap<String, ServiceEntryDto> = BTreeMap::new();
    for period in signups {
        let e = entry(&mut entries, &app.config.services, &period.service);
        if period.signed_off_at.is_none() {
            e.signed_up = true;
            e.signed_up_at = Some(rfc3339(period.signed_up_at));
        }
        e.signups.push(PeriodDto {
            signed_up_at: rfc3339(period.signed_up_at),
            signed_off_at: period.signed_off_at.map(rfc3339),
        });
    }
    for period in plans {
        let e = entry(&mut entries, &app.config.services, &period.service);
        if period.until.is_none() {
            e.plan = Some(period.plan.clone());
            e.plan_since = Some(rfc3339(period.from));
        }
        e.plans.push(PlanPeriodDto::from(period));
    }
    let services: Vec<ServiceEntryDto> = entries.into_values().collect();
    api::json(
        StatusCode::OK,
        &serde_json::json!({ "account_id": account.as_str(), "services": services }),
    )
}

/// `POST /accounts/{id}/services/{service}/signup`: 201 with the new period; 200 with the open
/// one when already signed up.
pub async fn sign_up(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
    service: &str,
) -> Result<Response<Body>, Rejection> {
    let (account, service) = authorize_on_service(app, &req, account, service, "SignUp").await?;
    req.discard_body(app).await?;
    let (status, period) = match app
        .store
        .sign_up(&account, &service.name, app.clock.now())
        .await?
    {
        SignupOutcome::Started(p) => {
            tracing::info!(account = %account, service = %service.name, "signed up");
            (StatusCode::CREATED, p)
        }
        SignupOutcome::AlreadySignedUp(p) => (StatusCode::OK, p),
    };
    api::json(status, &SignupDto::new(&account, period, None))
}

/// `DELETE /accounts/{id}/services/{service}/signup`: ends the sign-up and the service's plan;
/// 200 with the closed period; not signed up: 404 `NotSignedUp`.
pub async fn sign_off(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
    service: &str,
) -> Result<Response<Body>, Rejection> {
    let (account, service) = authorize_on_service(app, &req, account, service, "SignUp").await?;
    req.discard_body(app).await?;
    match app
        .store
        .sign_off(&account, &service.name, app.clock.now())
        .await?
    {
        SignoffOutcome::Ended { signup, plan } => {
            tracing::info!(account = %account, service = %service.name, "signed off");
            api::json(
                StatusCode::OK,
                &SignupDto::new(&account, signup, plan.map(PlanPeriodDto::from)),
            )
        }
        SignoffOutcome::NotSignedUp => Err(Rejection::not_found(
            "NotSignedUp",
            format!(
                "account {account} is not signed up for `{}`; there is nothing to sign off",
                service.name
            ),
        )),
    }
}

/// `PUT /accounts/{id}/services/{service}/plan` `{plan}`: chooses a plan (from now), or ends the
/// current one with `{"plan": null}`.
pub async fn put_plan(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
    service: &str,
) -> Result<Response<Body>, Rejection> {
    let (account, service) =
        authorize_on_service(app, &req, account, service, "ChangePlan").await?;
    let body: PlanRequest = req.json(app).await?;
    let plan = match body.plan {
        serde_json::Value::Null => None,
        serde_json::Value::String(name) => Some(name),
        _ => {
            return Err(Rejection::bad_request(
                "InvalidInput",
                "`plan` must be a plan name or null",
            ));
        }
    };
    if let Some(name) = &plan {
        let config = find_plan(&app.config.services, &service.name, name)
            .ok_or_else(|| no_such_plan(&service.config, name))?;
        // A plan the bill could not price is not for sale.
        plan_from_config(&service.name, config).map_err(|e| Rejection::internal(&e))?;
    }
    change_plan(app, &account, &service, plan.as_deref()).await
}

/// `DELETE /accounts/{id}/services/{service}/plan`: ends the current plan, if any.
pub async fn delete_plan(
    app: &Arc<App>,
    req: ApiRequest,
    account: &str,
    service: &str,
) -> Result<Response<Body>, Rejection> {
    let (account, service) =
        authorize_on_service(app, &req, account, service, "ChangePlan").await?;
    req.discard_body(app).await?;
    change_plan(app, &account, &service, None).await
}

async fn change_plan(
    app: &App,
    account: &AccountId,
    service: &route::Service,
    plan: Option<&str>,
) -> Result<Response<Body>, Rejection> {
    let change = app
        .store
        .set_plan(
            account,
            &service.name,
            plan,
            service.config.signup_required,
            app.clock.now(),
        )
        .await?;
    let (current, previous) = match change {
        PlanChange::NotSignedUp => return Err(not_signed_up(account, &service.name)),
        PlanChange::Unchanged { current } => (current, None),
        PlanChange::Changed { ended, started } => {
            tracing::info!(account = %account, service = %service.name, plan = ?plan, "plan changed");
            (started, ended)
        }
    };
    let since = match (&current, &previous) {
        (Some(c), _) => Some(rfc3339(c.from)),
        (None, Some(p)) => p.until.map(rfc3339),
        (None, None) => None,
    };
    api::json(
        StatusCode::OK,
        &PlanStateDto {
            account_id: account.to_string(),
            service: service.name.clone(),
            plan: current.map(|c| c.plan),
            since,
            previous: previous.map(PlanPeriodDto::from),
        },
    )
}

/// Authenticates, keeps the call in the caller's own account, finds the service (404
/// `NoSuchService`) and decides `<service>:<verb>` on it.
async fn authorize_on_service(
    app: &App,
    req: &ApiRequest,
    account: &str,
    service: &str,
    verb: &str,
) -> Result<(AccountId, Arc<route::Service>), Rejection> {
    let caller = authn::authenticate(app, &req.headers, req.peer, Allow::default()).await?;
    let account = own_account(&caller, account)?;
    let service = app.routes.service(service).cloned().ok_or_else(|| {
        let known: Vec<String> = app
            .config
            .services
            .iter()
            .map(|s| format!("`{}`", s.name))
            .collect();
        Rejection::not_found(
            "NoSuchService",
            format!(
                "there is no service `{}`; the services are {}",
                service.chars().take(64).collect::<String>(),
                known.join(", ")
            ),
        )
    })?;
    let action = format!("{}:{verb}", service.name);
    authorize::authorize(
        app,
        &caller,
        Facts {
            action: &action,
            resource: Resource::Service {
                name: service.name.clone(),
            },
            method: req.method.as_str(),
            path: &req.path,
        },
    )?;
    Ok((account, service))
}

fn entry<'a>(
    entries: &'a mut BTreeMap<String, ServiceEntryDto>,
    services: &[ServiceConfig],
    service: &str,
) -> &'a mut ServiceEntryDto {
    entries
        .entry(service.to_owned())
        .or_insert_with(|| ServiceEntryDto {
            service: service.to_owned(),
            // A service since removed from the config needs no sign-up any more.
            signup_required: services
                .iter()
                .any(|s| s.name == service && s.signup_required),
            signed_up: false,
            signed_up_at: None,
            plan: None,
            plan_since: None,
            signups: Vec::new(),
            plans: Vec::new(),
        })
}

fn not_signed_up(account: &AccountId, service: &str) -> Rejection {
    Rejection::new(
        StatusCode::FORBIDDEN,
        "NotSignedUp",
        format!(
            "account {account} has not signed up for `{service}`; sign up with POST /accounts/{account}/services/{service}/signup"
        ),
    )
}

fn no_such_plan(service: &ServiceConfig, plan: &str) -> Rejection {
    let plan = plan.chars().take(64).collect::<String>();
    let message = if service.plans.is_empty() {
        format!("service `{}` offers no plans", service.name)
    } else {
        let names: Vec<String> = service
            .plans
            .iter()
            .map(|p| format!("`{}`", p.name))
            .collect();
        format!(
            "service `{}` has no plan `{plan}`; the available plans are {}",
            service.name,
            names.join(", ")
        )
    };
    Rejection::not_found("NoSuchPlan", message)
}

// === impl SignupDto ===

impl SignupDto {
    fn new(account: &AccountId, period: SignupPeriod, plan_ended: Option<PlanPeriodDto>) -> Self {
        Self {
            account_id: account.to_string(),
            service: period.service,
            signed_up_at: rfc3339(period.signed_up_at),
            signed_off_at: period.signed_off_at.map(rfc3339),
            plan_ended,
        }
    }
}

impl From<PlanPeriodRecord> for PlanPeriodDto {
    fn from(p: PlanPeriodRecord) -> Self {
        Self {
            plan: p.plan,
            from: rfc3339(p.from),
            until: p.until.map(rfc3339),
        }
    }
}
