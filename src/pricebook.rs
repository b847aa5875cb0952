//! The price book in the store (SPEC M4; issue 17): the route prices and plans of every
//! configuration the gateway ran with, as numbered, hash-chained versions in `price_versions`.
//!
//! Owns turning the config into a [`PriceBook`], recording a new version when the config's
//! prices or plans differ from the newest one ([`record`]: at startup, the only place the config
//! is read; a config reload path would call it too), and reading the versions back for bills
//! ([`load_history`]), checking the chain on the way. It must not price anything (`billing`
//! does) and it is never on the hot path: the current version id is compiled into the route
//! table, so a call names its version without a store read.
//!
//! `content` is the book as JSON, built and parsed explicitly here (domain types derive no
//! serde). Each row's `hash` is `SHA-256(prev_hash || canonical(version, effective_from,
//! content))`, so editing a stored price or deleting a version is detected when a bill loads
//! the history.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::billing::{
    PercentTier, Plan, PriceBook, PriceHistory, PriceVersion, PriceVersionId, RawPercentTier,
    RawPlan, RawPriceTier, RawRoutePrice, RouteKey, RoutePrice,
};
use crate::chain::{self, Canonical, GENESIS};
use crate::config::Config;
use crate::db::{Behavior, Conn, Database, DbError, OptionalExtension, params};
use crate::services::{ServicesError, plan_from_config};
use crate::store::sql::{from_ms, to_ms};

const CANONICAL_TAG: &str = "tollgate/price_version/v1";

#[derive(Debug, thiserror::Error)]
pub enum PriceBookStoreError {
    #[error("the price book cannot be read or written: {0}")]
    Unavailable(String),
    /// A stored version that does not parse or does not chain: the table was edited.
    #[error("the price book in the store is corrupt: {0}; restore `price_versions` from a backup")]
    Corrupt(String),
    #[error(transparent)]
    Plan(#[from] ServicesError),
}

impl From<DbError> for PriceBookStoreError {
    fn from(e: DbError) -> Self {
        PriceBookStoreError::Unavailable(e.to_string())
    }
}

/// The config's route prices (by service and action; config guarantees one price per action)
/// and plans.
pub fn from_config(config: &Config) -> Result<PriceBook, PriceBookStoreError> {
    let mut book = PriceBook::default();
    for service in &config.services {
        for route in &service.routes {
            book.routes
                .entry(RouteKey::new(&service.name, &route.action))
                .or_insert_with(|| route.price.clone());
        }
        for plan in &service.plans {
            book.plans.insert(
                (service.name.clone(), plan.name.clone()),
                plan_from_config(&service.name, plan)?,
            );
        }
    }
    Ok(book)
}

/// Records `book` as a new version if it differs from the newest one, and returns the version
/// in force for it. Blocking; one exclusive transaction, so instances starting together agree.
pub fn record(
    db: &Database,
    book: &PriceBook,
    now: DateTime<Utc>,
) -> Result<PriceVersionId, PriceBookStoreError> {
    let conn = db.connect()?;
    let tx = conn.transaction(Behavior::Immediate)?;
    let content = to_json(book).to_string();
    let newest: Option<(i64, String, String)> = tx
        .query_row(
            "SELECT version, content, hash FROM price_versions ORDER BY version DESC LIMIT 1",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let (version, prev_hash) = match newest {
        Some((version, newest_content, hash)) => {
            let id = version_id(version)?;
            if newest_content == content {
                return Ok(id);
            }
            let prev = chain::parse_hash(&hash)
                .map_err(|e| PriceBookStoreError::Corrupt(format!("version {version}: {e}")))?;
            (id.next(), prev)
        }
        None => (PriceVersionId::FIRST, GENESIS),
    };
    let effective_from = to_ms(now);
    let hash = chain::link(&prev_hash, &canonical(version, effective_from, &content));
    tx.execute(
        "INSERT INTO price_versions (version, effective_from, content, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            version.get() as i64,
            effective_from,
            content,
            chain::to_hex(&prev_hash),
            chain::to_hex(&hash)
        ],
    )?;
    tx.commit()?;
    tracing::info!(version = %version, "recorded a new price book version");
    Ok(version)
}

/// Every version, checked against its chain, for a bill.
pub fn load_history(conn: &Conn) -> Result<PriceHistory, PriceBookStoreError> {
    let rows: Vec<(i64, i64, String, String, String)> = conn.query_map(
        "SELECT version, effective_from, content, prev_hash, hash FROM price_versions ORDER BY version",
        params![],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )?;
    let mut prev = chain::to_hex(&GENESIS);
    let mut versions = Vec::with_capacity(rows.len());
    for (version, effective_from, content, prev_hash, hash) in rows {
        let id = version_id(version)?;
        let corrupt =
            |what: &str| PriceBookStoreError::Corrupt(format!("version {version}: {what}"));
        if prev_hash != prev {
            return Err(corrupt("does not follow the version before it"));
        }
        let expected = chain::link_hex(&prev_hash, &canonical(id, effective_from, &content))
            .map_err(|e| corrupt(&e.to_string()))?;
        if expected != hash {
            return Err(corrupt("was altered (its hash does not match)"));
        }
        let value: Value =
            serde_json::from_str(&content).map_err(|e| corrupt(&format!("content: {e}")))?;
        let book = from_json(&value).map_err(|e| corrupt(&e))?;
        versions.push(PriceVersion {
            id,
            effective_from: from_ms(effective_from),
            book,
        });
        prev = hash;
    }
    PriceHistory::new(versions).map_err(|e| PriceBookStoreError::Corrupt(e.to_string()))
}

fn version_id(version: i64) -> Result<PriceVersionId, PriceBookStoreError> {
    u64::try_from(version)
        .ok()
        .and_then(PriceVersionId::new)
        .ok_or_else(|| PriceBookStoreError::Corrupt(format!("version number {version}")))
}

fn canonical(version: PriceVersionId, effective_from: i64, content: &str) -> Vec<u8> {
    Canonical::new(CANONICAL_TAG)
        .u64("version", version.get())
        .i64("effective_from", effective_from)
        .str("content", content)
        .finish()
}

/// The book as JSON: `{"routes": [...], "plans": [...]}`, in key order.
fn to_json(book: &PriceBook) -> Value {
    let routes: Vec<Value> = book
        .routes
        .iter()
        .map(|(key, p)| {
            let tiers = p.per_request_tiers().map(|tiers| {
                tiers
                    .iter()
                    .map(|t| json!({"up_to": t.up_to, "price": t.price.to_string()}))
                    .collect::<Vec<_>>()
            });
            json!({
                "service": key.service,
                "action": key.action,
                "per_request": p.per_request().to_string(),
                "per_gb_in": p.per_gb_in().to_string(),
                "per_gb_out": p.per_gb_out().to_string(),
                "per_request_tiers": tiers,
            })
        })
        .collect();
    let plans: Vec<Value> = book
        .plans
        .iter()
        .map(|((service, _), plan)| {
            let tiers: Vec<Value> = plan
                .usage_percent_tiers()
                .iter()
                .map(|PercentTier { up_to, percent }| {
                    json!({"up_to": up_to.map(|u| u.to_string()), "percent": percent.to_string()})
                })
                .collect();
            json!({
                "service": service,
                "name": plan.name(),
                "monthly_minimum": plan.monthly_minimum().to_string(),
                "usage_percent_tiers": tiers,
            })
        })
        .collect();
    json!({"routes": routes, "plans": plans})
}

fn from_json(value: &Value) -> Result<PriceBook, String> {
    let text = |v: &Value, field: &str| -> Result<String, String> {
        v.get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("`{field}` is not a string"))
    };
    let array = |v: &Value, field: &str| -> Result<Vec<Value>, String> {
        v.get(field)
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| format!("`{field}` is not an array"))
    };
    let mut routes = BTreeMap::new();
    for r in array(value, "routes")? {
        let (per_request, per_gb_in, per_gb_out) = (
            text(&r, "per_request")?,
            text(&r, "per_gb_in")?,
            text(&r, "per_gb_out")?,
        );
        let tiers: Option<Vec<(Option<u64>, String)>> = match r.get("per_request_tiers") {
            None | Some(Value::Null) => None,
            Some(Value::Array(tiers)) => Some(
                tiers
                    .iter()
                    .map(|t| Ok((t.get("up_to").and_then(Value::as_u64), text(t, "price")?)))
                    .collect::<Result<_, String>>()?,
            ),
            _ => return Err("`per_request_tiers` is not an array".into()),
        };
        let raw = RawRoutePrice {
            per_request: tiers.is_none().then_some(per_request.as_str()),
            per_gb_in: Some(&per_gb_in),
            per_gb_out: Some(&per_gb_out),
            per_request_tiers: tiers.as_ref().map(|tiers| {
                tiers
                    .iter()
                    .map(|(up_to, price)| RawPriceTier {
                        up_to: *up_to,
                        price,
                    })
                    .collect()
            }),
        };
        let price = RoutePrice::parse(&raw).map_err(|e| format!("{e:?}"))?;
        routes.insert(
            RouteKey::new(text(&r, "service")?, text(&r, "action")?),
            price,
        );
    }
    let mut plans = BTreeMap::new();
    for p in array(value, "plans")? {
        let (service, name, minimum) = (
            text(&p, "service")?,
            text(&p, "name")?,
            text(&p, "monthly_minimum")?,
        );
        let tiers: Vec<(Option<String>, String)> = array(&p, "usage_percent_tiers")?
            .iter()
            .map(|t| {
                Ok((
                    t.get("up_to").and_then(Value::as_str).map(str::to_owned),
                    text(t, "percent")?,
                ))
            })
            .collect::<Result<_, String>>()?;
        let raw = RawPlan {
            name: &name,
            monthly_minimum: Some(&minimum),
            usage_percent_tiers: tiers
                .iter()
                .map(|(up_to, percent)| RawPercentTier {
                    up_to: up_to.as_deref(),
                    percent,
                })
                .collect(),
        };
        let plan = Plan::parse(&raw).map_err(|e| format!("{e:?}"))?;
        plans.insert((service, name.clone()), plan);
    }
    Ok(PriceBook { routes, plans })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_book_round_trips_through_its_json() {
        let config = Config::embedded_default().unwrap_or_else(|p| panic!("{p:?}"));
        let book = from_config(&config).unwrap_or_else(|e| panic!("{e}"));
        assert!(book.routes.values().any(RoutePrice::is_tiered));
        assert_eq!(book.plans.len(), 2);
        let back = from_json(&to_json(&book)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, book);
        assert_eq!(to_json(&back).to_string(), to_json(&book).to_string());
    }
}
