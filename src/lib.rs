//! tollgate: a policy-enforcing access gateway for organizations with consolidated billing.
//!
//! The code map and the architecture invariants live in `docs/architecture.md`; in short:
//! a request goes `server` (listen, route) -> `auth` (who) -> `authz` (may they) -> `upstream`
//! (forward) -> `metering` (durable record) -> response. Only `server`, `upstream`, `api` and
//! `cli` know HTTP; domain modules (`auth`, `authz`, `org`, `billing`, `metering`, `audit`) do not.

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod billing;
pub mod bills;
pub mod body;
pub mod chain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod demo;
pub mod ids;
pub mod journal;
pub mod metrics;
pub mod org;
pub mod server;
pub mod services;
pub mod store;
pub mod upstream;
