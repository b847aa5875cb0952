//! Bills (SPEC M4–M6): `GET /billing/bills/{YYYY-MM}` (JSON, or CSV with `?format=csv`) and
//! `POST /billing/bills/{YYYY-MM}/finalize`. The Cedar actions are `billing:ViewBill` and
//! `billing:FinalizeBill` on the caller's own account; which bill an account may see is decided
//! by `bills` (its own bill, or its own lines on a payer's bill), never by the path.
//!
//! Owns the bill's JSON shape ([`bill_json`], shared with `tollgate bill`); amounts and
//! quantities are strings so no decimal passes through a float on the way.

use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use crate::api::auth::rfc3339;
use crate::api::authorize_on_own_account;
use crate::api::{self, ApiRequest};
use crate::app::App;
use crate::billing::{Bill, BillingMonth, CURRENCY, export};
use crate::bills::{AccountView, Bills, Statement};
use crate::body::{self, Body};
use crate::ids::AccountId;
use crate::server::authn::{self, Allow};
use crate::server::rejection::Rejection;

const VIEW_ACTION: &str = "billing:ViewBill";
const FINALIZE_ACTION: &str = "billing:FinalizeBill";

#[derive(Serialize)]
pub struct BillDto {
    payer_account_id: String,
    month: String,
    status: &'static str,
    currency: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    billed_to: Option<String>,
    /// Present on a FINAL bill: SHA-256 of the consolidated bill's canonical encoding.
    #[serde(skip_serializing_if = "Option::is_none")]
    content_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finalized_at: Option<String>,
    /// Other payers whose bill of this month has lines of the viewing account.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    also_billed_to: Vec<String>,
    accounts: Vec<AccountDto>,
    total: String,
}

#[derive(Serialize)]
struct AccountDto {
    account_id: String,
    name: String,
    lines: Vec<LineDto>,
    total: String,
}

#[derive(Serialize)]
struct LineDto {
    service: String,
    action: String,
    unit: String,
    quantity: String,
    amount: String,
    /// On an adjustment line: the FINAL month whose late usage it charges (M6).
    #[serde(skip_serializing_if = "Option::is_none")]
    original_month: Option<String>,
    /// On a line whose prices changed within the month (M4): from when these prices apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    prices_from: Option<String>,
}

/// The bill as JSON (SPEC M4's shape, plus `content_hash`/`finalized_at` on a FINAL bill,
/// `also_billed_to` for an account that changed payer, `original_month` on adjustment lines).
pub fn bill_json(statement: &Statement, also_billed_to: &[AccountId]) -> BillDto {
    let bill: &Bill = &statement.bill;
    BillDto {
        payer_account_id: bill.payer_account_id.to_string(),
        month: bill.month.to_string(),
        status: bill.status.as_str(),
        currency: CURRENCY,
        billed_to: bill.billed_to.as_ref().map(ToString::to_string),
        content_hash: statement.seal.as_ref().map(|s| s.content_hash.clone()),
        finalized_at: statement.seal.as_ref().map(|s| rfc3339(s.finalized_at)),
        also_billed_to: also_billed_to.iter().map(ToString::to_string).collect(),
        accounts: bill
            .accounts
            .iter()
            .map(|a| AccountDto {
                account_id: a.account_id.to_string(),
                name: a.name.clone(),
                lines: a
                    .lines
                    .iter()
                    .map(|l| LineDto {
                        service: l.service.clone(),
                        action: l.action.clone(),
                        unit: l.unit.to_string(),
                        quantity: l.quantity.normalize().to_string(),
                        amount: l.amount.to_string(),
                        original_month: l.original_month.map(|m| m.to_string()),
                        prices_from: l.prices_from.map(rfc3339),
                    })
                    .collect(),
                total: a.total.to_string(),
            })
            .collect(),
        total: bill.total.to_string(),
    }
}

/// `GET /billing/bills/{YYYY-MM}[?format=csv][&payer=ID]`.
pub async fn get(
    app: &Arc<App>,
    req: ApiRequest,
    month: &str,
) -> Result<Response<Body>, Rejection> {
    let caller = authn::authenticate(app, &req.headers, req.peer, Allow::default()).await?;
    authorize_on_own_account(app, &caller, VIEW_ACTION, &req)?;
    let month = parse_month(month)?;
    let csv = match req.query_param("format").as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(Rejection::bad_request(
                "InvalidInput",
                format!(
                    "unknown `format` `{}`; use `json` or `csv`",
                    other.chars().take(20).collect::<String>()
                ),
            ));
        }
    };
    let payer = req
        .query_param("payer")
        .map(|p| {
            AccountId::parse(&p).map_err(|_| {
                Rejection::bad_request("InvalidInput", "`payer` must be a 12-digit account id")
            })
        })
        .transpose()?;
    let account = caller.principal.user.account_id.clone();
    let bills = bills(app)?;
    let AccountView {
        statement,
        also_billed_to,
    } = bills
        .view(&account, month, app.clock.now(), payer.as_ref())
        .await?;
    if csv {
        let mut response = Response::new(body::full(export::to_csv(&statement.bill)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        return Ok(response);
    }
    api::json(StatusCode::OK, &bill_json(&statement, &also_billed_to))
}

/// `POST /billing/bills/{YYYY-MM}/finalize`: 200 with the FINAL bill.
pub async fn finalize(
    app: &Arc<App>,
    req: ApiRequest,
    month: &str,
) -> Result<Response<Body>, Rejection> {
    let caller = authn::authenticate(app, &req.headers, req.peer, Allow::default()).await?;
    authorize_on_own_account(app, &caller, FINALIZE_ACTION, &req)?;
    let month = parse_month(month)?;
    req.discard_body(app).await?;
    let account = caller.principal.user.account_id.clone();
    let statement = bills(app)?
        .finalize(&app.journal, &account, month, app.clock.now())
        .await?;
    tracing::info!(payer = %account, %month, hash = ?statement.seal.as_ref().map(|s| &s.content_hash), "bill finalized");
    api::json(StatusCode::OK, &bill_json(&statement, &[]))
}

fn bills(app: &App) -> Result<Bills<'_>, Rejection> {
    Ok(Bills::new(&app.store, &app.orgs, &app.config)?)
}

fn parse_month(month: &str) -> Result<BillingMonth, Rejection> {
    BillingMonth::parse(month).map_err(|_| {
        Rejection::bad_request(
            "InvalidInput",
            format!(
                "`{}` is not a month; use `YYYY-MM`, e.g. `2025-04`",
                month.chars().take(20).collect::<String>()
            ),
        )
    })
}
