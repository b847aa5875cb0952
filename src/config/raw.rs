//! The serde mirror of `config/tollgate.toml`: field names and nesting exactly as an operator
//! writes them, values as written (durations, sizes and prices stay strings here).
//!
//! Nothing outside `config` sees these types; `Config::from_raw` turns them into checked values.
//! Unknown keys are collected by `serde_ignored` in `config.rs` rather than refused by
//! `deny_unknown_fields`, so that every problem in a file is reported at once.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub server: RawServer,
    pub store: RawStore,
    pub auth: RawAuth,
    pub accounts: RawAccounts,
    pub policies: RawPolicies,
    pub billing: RawBilling,
    pub audit: RawAudit,
    pub services: Vec<RawService>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawServer {
    pub listen: Option<RawListen>,
    pub plain_listen: Option<String>,
    pub tls: Option<RawTls>,
    pub trusted_proxies: Vec<String>,
    pub header_read_timeout: Option<String>,
    pub max_headers: Option<usize>,
    pub max_header_bytes: Option<String>,
    pub max_api_body: Option<String>,
    pub shutdown_grace: Option<String>,
    pub body_read_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
}

/// `listen = "addr"` or `listen = ["addr", ...]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawListen {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
    pub handshake_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawStore {
    pub kind: Option<String>,
    pub data_dir: Option<String>,
    pub url: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub pool_size: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAuth {
    pub token_ttl: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub identity_ttl: Option<String>,
    pub argon2_concurrency: Option<usize>,
    pub argon2_queue: Option<usize>,
    pub argon2_queue_per_address: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAccounts {
    pub open_signup: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawPolicies {
    pub dir: Option<String>,
    pub watch: Option<bool>,
    pub reload_accounts: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawBilling {
    pub finalize_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAudit {
    pub retention: Option<String>,
    pub deny_rate: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawService {
    pub name: Option<String>,
    pub upstream: Option<String>,
    pub timeout: Option<String>,
    pub signup_required: Option<bool>,
    pub allow_path_params: Option<bool>,
    pub case_insensitive_paths: Option<bool>,
    pub ca_file: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub routes: Vec<RawRoute>,
    pub plans: Vec<RawPlan>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRoute {
    pub method: Option<String>,
    pub path: Option<String>,
    pub action: Option<String>,
    pub max_body: Option<String>,
    pub per_request: Option<String>,
    pub per_gb_in: Option<String>,
    pub per_gb_out: Option<String>,
    pub per_request_tiers: Vec<RawRequestTier>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRequestTier {
    pub up_to: Option<u64>,
    pub price: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawPlan {
    pub name: Option<String>,
    pub monthly_minimum: Option<String>,
    pub usage_percent_tiers: Vec<RawPercentTier>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawPercentTier {
    pub up_to: Option<String>,
    pub percent: Option<String>,
}
