//! The operator's configuration, checked: every value parsed into the type the rest of the crate
//! uses (addresses, durations, sizes, prices, routes).
//!
//! `Config::load` reports every problem of a file at once (unknown keys, bad values, missing
//! keys), each naming its key, so an operator fixes a file in one pass; `main` exits 64 on them.
//! Secrets from the file are never echoed into a problem message.

mod raw;

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use rust_decimal::Decimal;

use raw::{RawConfig, RawPlan, RawRoute, RawService};

use crate::billing::{PriceError, RawPriceTier, RawRoutePrice, RoutePrice};

/// The whole configuration, valid by construction.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub auth: AuthConfig,
    pub accounts: AccountsConfig,
    pub policies: PoliciesConfig,
    pub billing: BillingConfig,
    pub audit: AuditConfig,
    pub services: Vec<ServiceConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The first `listen` address (`App::bind`).
    pub listen: SocketAddr,
    /// The other `listen` addresses, when `listen` is an array; served like the first.
    pub also_listen: Vec<SocketAddr>,
    /// A loopback address serving only `/healthz`, `/readyz` and `/metrics`, without TLS.
    pub plain_listen: Option<SocketAddr>,
    /// `[server.tls]`: every `listen` address speaks TLS when set (O4).
    pub tls: Option<TlsConfig>,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// A client must finish sending request headers within this time (slowloris).
    pub header_read_timeout: Duration,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    /// Cap on JSON bodies of the API (not on service calls; those have per-route caps).
    pub max_api_body: u64,
    /// How long shutdown waits for in-flight calls before closing them.
    pub shutdown_grace: Duration,
    /// The longest idle time between two reads of a request body (slow-body floods); a large
    /// upload that keeps sending is never cut off by it.
    pub body_read_timeout: Duration,
    /// An idle keep-alive connection (no request in flight, nothing received) is closed after
    /// this.
    pub keepalive_timeout: Duration,
    /// Open client connections at most; more are closed at accept. Lowered at start to what the
    /// process's file-descriptor limit can hold.
    pub max_connections: usize,
    /// Open client connections from one IP address at most (trusted proxies are exempt).
    pub max_connections_per_ip: usize,
}

/// `[server.tls]`.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these PEM CAs.
    pub client_ca: Option<PathBuf>,
    /// A client must finish the TLS handshake within this.
    pub handshake_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// Local state: the embedded database, signing keys, logs. Created on first start.
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub enum StoreKind {
    Sqlite,
    Postgres {
        url: String,
        password: Option<String>,
        pool_size: usize,
    },
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub token_ttl: Duration,
    pub identity_ttl: Duration,
    pub issuer: String,
    pub audience: String,
    /// Threads hashing for logins (one more hashes only for sign-ups and password changes);
    /// a login flood queues behind these, forwarding does not.
    pub argon2_concurrency: usize,
    /// Password work that may wait, per lane, and per client address within a lane.
    pub argon2_queue: crate::auth::QueueLimits,
}

#[derive(Debug, Clone)]
pub struct AccountsConfig {
    pub open_signup: bool,
}

#[derive(Debug, Clone)]
pub struct PoliciesConfig {
    pub dir: PathBuf,
    /// Reload on file change (SIGHUP always works).
    pub watch: bool,
    /// The operator's accounts, whose users may `POST /policies/reload` (P7). Empty by
    /// default: the tree is the operator's, never a tenant's.
    pub reload_accounts: Vec<crate::ids::AccountId>,
}

#[derive(Debug, Clone)]
pub struct BillingConfig {
    /// A month's bill can be finalized this long after the month ends.
    pub finalize_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Decision records older than this are pruned (daily by `serve`, and by `tollgate
    /// decisions prune`); 90 days unless configured, as CloudTrail's event history; `None`
    /// (`retention = "forever"`) keeps them.
    pub retention: Option<Duration>,
    /// Denied calls a second per principal before its calls are refused (429 `SlowDown`) ahead
    /// of Cedar, without a decision record; 0 turns the throttle off.
    pub deny_rate: u32,
}

/// The default `[audit] retention`: CloudTrail's event history keeps 90 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86_400);
/// The default `[audit] deny_rate`.
pub const DEFAULT_DENY_RATE: u32 = 20;

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    pub upstream: http::Uri,
    pub timeout: Duration,
    pub signup_required: bool,
    /// `;` path parameters are forwarded rather than refused (F1); off by default.
    pub allow_path_params: bool,
    /// Routing and Cedar see the path with ASCII letters folded to lower case; the upstream
    /// still gets the canonical path as sent (F1). Off by default.
    pub case_insensitive_paths: bool,
    /// How to reach an `https://` upstream; `None` for `http://` (O4).
    pub tls: Option<UpstreamTlsConfig>,
    pub routes: Vec<RouteConfig>,
    pub plans: Vec<PlanConfig>,
}

/// A service's TLS to its `https://` upstream (O4): whom to trust, and what to present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTlsConfig {
    /// PEM CA certificates the upstream's chain must end in; the system roots when `None`.
    pub ca_file: Option<PathBuf>,
    /// A PEM certificate chain and key the gateway presents (mutual TLS), both or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// `None` matches any method (`method = "*"`).
    pub method: Option<http::Method>,
    pub path: String,
    pub action: String,
    pub max_body: Option<u64>,
    /// Checked once, here, by billing's own validator (`RoutePrice::parse`).
    pub price: RoutePrice,
}

#[derive(Debug, Clone)]
pub struct PlanConfig {
    pub name: String,
    pub monthly_minimum: Decimal,
    /// `(up_to, percent)`; the last tier has no bound.
    pub usage_percent_tiers: Vec<(Option<Decimal>, Decimal)>,
}

/// Everything wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_problems(.path, .problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// One problem, naming the key it concerns (`services[1].routes[0].path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// The configuration embedded in the binary: `config/tollgate.toml` as shipped.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/tollgate.toml");

// === impl Config ===

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }

    /// Checks configuration text, returning every problem found.
    pub fn parse(text: &str) -> Result<Self, Vec<Problem>> {
        let mut unknown = Vec::new();
        let deserializer = toml::Deserializer::parse(text).map_err(|e| vec![toml_problem(&e)])?;
        let raw: RawConfig = serde_ignored::deserialize(deserializer, |path| {
            unknown.push(path.to_string());
        })
        .map_err(|e| vec![toml_problem(&e)])?;

        let mut p = Problems::default();
        for key in unknown {
            p.push(
                &key,
                "unknown key; check the spelling against docs/operator-guide.md",
            );
        }
        let config = Self::from_raw(raw, &mut p);
        if p.0.is_empty() { Ok(config) } else { Err(p.0) }
    }

    fn from_raw(raw: RawConfig, p: &mut Problems) -> Self {
        let s = raw.server;
        let parse_addr = |v: &str| {
            SocketAddr::from_str(v)
                .map_err(|_| "expected an address and port like `127.0.0.1:8080`".to_owned())
        };
        let listens: Vec<SocketAddr> = match &s.listen {
            None => vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            Some(raw::RawListen::One(v)) => p
                .value("server.listen", v, parse_addr)
                .into_iter()
                .collect(),
            Some(raw::RawListen::Many(vs)) => {
                if vs.is_empty() {
                    p.push("server.listen", "expected at least one address");
                }
                vs.iter()
                    .enumerate()
                    .filter_map(|(i, v)| p.value(&format!("server.listen[{i}]"), v, parse_addr))
                    .collect()
            }
        };
        let mut listens = listens.into_iter();
        let listen = listens
            .next()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let also_listen: Vec<SocketAddr> = listens.collect();
        let plain_listen = s.plain_listen.as_deref().and_then(|v| {
            let addr = p.value("server.plain_listen", v, parse_addr)?;
            if !addr.ip().is_loopback() {
                p.push(
                    "server.plain_listen",
                    "expected a loopback address (127.0.0.1 or ::1): it serves health and metrics without TLS",
                );
                return None;
            }
            Some(addr)
        });
        let tls = s.tls.as_ref().and_then(|t| {
            let cert = t.cert.as_deref().map(PathBuf::from);
            let key = t.key.as_deref().map(PathBuf::from);
            if cert.is_none() {
                p.push(
                    "server.tls.cert",
                    "expected the path of a PEM certificate chain",
                );
            }
            if key.is_none() {
                p.push("server.tls.key", "expected the path of a PEM private key");
            }
            let handshake_timeout = p.duration(
                "server.tls.handshake_timeout",
                t.handshake_timeout.as_deref(),
                Duration::from_secs(10),
            );
            Some(TlsConfig {
                cert: cert?,
                key: key?,
                client_ca: t.client_ca.as_deref().map(PathBuf::from),
                handshake_timeout,
            })
        });
        let server = ServerConfig {
            listen,
            also_listen,
            plain_listen,
            tls,
            trusted_proxies: s
                .trusted_proxies
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    p.value(&format!("server.trusted_proxies[{i}]"), v, parse_ip_net)
                })
                .collect(),
            header_read_timeout: p.duration(
                "server.header_read_timeout",
                s.header_read_timeout.as_deref(),
                Duration::from_secs(10),
            ),
            max_headers: match s.max_headers {
                Some(n) if (1..=1000).contains(&n) => n,
                Some(_) => {
                    p.push("server.max_headers", "expected a number from 1 to 1000");
                    100
                }
                None => 100,
            },
            max_header_bytes: p.size(
                "server.max_header_bytes",
                s.max_header_bytes.as_deref(),
                64 * 1024,
            ) as usize,
            max_api_body: p.size("server.max_api_body", s.max_api_body.as_deref(), 1 << 20),
            shutdown_grace: p.duration(
                "server.shutdown_grace",
                s.shutdown_grace.as_deref(),
                Duration::from_secs(30),
            ),
            body_read_timeout: p.duration(
                "server.body_read_timeout",
                s.body_read_timeout.as_deref(),
                Duration::from_secs(30),
            ),
            keepalive_timeout: p.duration(
                "server.keepalive_timeout",
                s.keepalive_timeout.as_deref(),
                Duration::from_secs(60),
            ),
            max_connections: match s.max_connections {
                Some(n) if (1..=10_000_000).contains(&n) => n,
                Some(_) => {
                    p.push(
                        "server.max_connections",
                        "expected a number from 1 to 10000000",
                    );
                    10_000
                }
                None => 10_000,
            },
            max_connections_per_ip: match s.max_connections_per_ip {
                Some(n) if n >= 1 => n,
                Some(_) => {
                    p.push(
                        "server.max_connections_per_ip",
                        "expected a number of at least 1",
                    );
                    256
                }
                None => 256,
            },
        };
        for (key, value) in [
            ("server.body_read_timeout", server.body_read_timeout),
            ("server.keepalive_timeout", server.keepalive_timeout),
            ("server.header_read_timeout", server.header_read_timeout),
        ] {
            if value.is_zero() {
                p.push(key, "expected a duration above zero");
            }
        }
        if server.max_header_bytes < 8192 {
            p.push("server.max_header_bytes", "expected at least 8KiB");
        }

        let st = raw.store;
        let data_dir = PathBuf::from(st.data_dir.as_deref().unwrap_or("data"));
        let kind = match st.kind.as_deref().unwrap_or("sqlite") {
            "sqlite" => {
                for (key, set) in [
                    ("store.url", st.url.is_some()),
                    ("store.password_env", st.password_env.is_some()),
                    ("store.password_file", st.password_file.is_some()),
                ] {
                    if set {
                        p.push(key, "only used with `kind = \"postgres\"`");
                    }
                }
                StoreKind::Sqlite
            }
            "postgres" => postgres_kind(&st, p),
            other => {
                p.push(
                    "store.kind",
                    &format!("unknown store `{other}`; expected `sqlite` or `postgres`"),
                );
                StoreKind::Sqlite
            }
        };
        let store = StoreConfig { kind, data_dir };

        let a = raw.auth;
        let auth = AuthConfig {
            token_ttl: p.duration(
                "auth.token_ttl",
                a.token_ttl.as_deref(),
                Duration::from_secs(3600),
            ),
            identity_ttl: p.duration(
                "auth.identity_ttl",
                a.identity_ttl.as_deref(),
                Duration::from_secs(60),
            ),
            issuer: a.issuer.unwrap_or_else(|| "tollgate".to_owned()),
            audience: a.audience.unwrap_or_else(|| "tollgate".to_owned()),
            argon2_concurrency: match a.argon2_concurrency {
                Some(n) if (1..=64).contains(&n) => n,
                Some(_) => {
                    p.push("auth.argon2_concurrency", "expected a number from 1 to 64");
                    1
                }
                None => 1,
            },
            argon2_queue: {
                let default = crate::auth::QueueLimits::default();
                let capacity = match a.argon2_queue {
                    Some(n) if (1..=100_000).contains(&n) => n,
                    Some(_) => {
                        p.push("auth.argon2_queue", "expected a number from 1 to 100000");
                        default.capacity
                    }
                    None => default.capacity,
                };
                let per_address = match a.argon2_queue_per_address {
                    Some(n) if (1..=capacity).contains(&n) => n,
                    Some(_) => {
                        p.push(
                            "auth.argon2_queue_per_address",
                            &format!(
                                "expected a number from 1 to `auth.argon2_queue` ({capacity})"
                            ),
                        );
                        default.per_address.min(capacity)
                    }
                    None => default.per_address.min(capacity),
                };
                crate::auth::QueueLimits {
                    capacity,
                    per_address,
                }
            },
        };
        if auth.token_ttl < Duration::from_secs(60) || auth.token_ttl > Duration::from_secs(86_400)
        {
            p.push("auth.token_ttl", "expected a duration from 1m to 24h");
        }

        let accounts = AccountsConfig {
            open_signup: raw.accounts.open_signup.unwrap_or(true),
        };
        let policies = PoliciesConfig {
            dir: PathBuf::from(raw.policies.dir.as_deref().unwrap_or("policies")),
            watch: raw.policies.watch.unwrap_or(true),
            reload_accounts: raw
                .policies
                .reload_accounts
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    p.value(&format!("policies.reload_accounts[{i}]"), v, |v| {
                        crate::ids::AccountId::parse(v)
                            .map_err(|_| "expected a 12-digit account id".to_owned())
                    })
                })
                .collect(),
        };
        let billing = BillingConfig {
            finalize_grace: p.duration(
                "billing.finalize_grace",
                raw.billing.finalize_grace.as_deref(),
                Duration::from_secs(3 * 86_400),
            ),
        };

        let audit = AuditConfig {
            retention: match raw.audit.retention.as_deref() {
                None => Some(DEFAULT_RETENTION),
                Some("forever") => None,
                Some(v) => p.value("audit.retention", v, parse_duration),
            },
            deny_rate: match raw.audit.deny_rate {
                None => DEFAULT_DENY_RATE,
                Some(n) => u32::try_from(n).unwrap_or_else(|_| {
                    p.push(
                        "audit.deny_rate",
                        "expected a number from 0 (off) to 4294967295",
                    );
                    DEFAULT_DENY_RATE
                }),
            },
        };
        if audit
            .retention
            .is_some_and(|r| r < Duration::from_secs(86_400))
        {
            p.push(
                "audit.retention",
                "expected at least `1d`: decisions are evidence for security review",
            );
        }

        let mut names = HashSet::new();
        let services = raw
            .services
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let service = service(&format!("services[{i}]"), s, p);
                if !service.name.is_empty() && !names.insert(service.name.clone()) {
                    p.push(
                        &format!("services[{i}].name"),
                        &format!("service `{}` is configured twice", service.name),
                    );
                }
                service
            })
            .collect();

        Config {
            server,
            store,
            auth,
            accounts,
            policies,
            billing,
            audit,
            services,
        }
    }

    /// The embedded default configuration (the shipped `config/tollgate.toml`).
    pub fn embedded_default() -> Result<Self, Vec<Problem>> {
        Self::parse(EMBEDDED_DEFAULT)
    }

    /// Every action a route names, for the policy loader's check that each exists in the schema.
    pub fn route_actions(&self) -> Vec<&str> {
        let mut actions: Vec<&str> = self
            .services
            .iter()
            .flat_map(|s| s.routes.iter().map(|r| r.action.as_str()))
            .collect();
        actions.sort_unstable();
        actions.dedup();
        actions
    }

    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}

fn postgres_kind(st: &raw::RawStore, p: &mut Problems) -> StoreKind {
    let url = match st.url.as_deref() {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            if url_has_inline_password(url) {
                p.push(
                    "store.url",
                    "the URL carries a password; put it in `password_env` or `password_file` instead",
                );
            }
            // `sslmode` and `sslrootcert` (O4): a bad mode or an unreadable root file is a
            // config error, reported with the rest.
            let tls = crate::db::postgres::tls::PgTlsSettings::from_url(url)
                .and_then(|settings| settings.client_config());
            if let Err(e) = tls {
                p.push("store.url", &e.to_string());
            }
            url.to_owned()
        }
        Some(_) => {
            p.push("store.url", "expected a `postgres://` URL");
            String::new()
        }
        None => {
            p.push("store.url", "required with `kind = \"postgres\"`");
            String::new()
        }
    };
    let password = match (&st.password_env, &st.password_file) {
        (Some(_), Some(_)) => {
            p.push(
                "store.password_env",
                "set `password_env` or `password_file`, not both",
            );
            None
        }
        (Some(var), None) => match std::env::var(var) {
            Ok(v) => Some(v),
            Err(_) => {
                p.push(
                    "store.password_env",
                    &format!("environment variable `{var}` is not set"),
                );
                None
            }
        },
        (None, Some(file)) => match std::fs::read_to_string(file) {
            Ok(v) => Some(v.trim_end_matches(['\r', '\n']).to_owned()),
            Err(e) => {
                p.push("store.password_file", &format!("cannot read `{file}`: {e}"));
                None
            }
        },
        (None, None) => None,
    };
    StoreKind::Postgres {
        url,
        password,
        pool_size: st.pool_size.unwrap_or(8).clamp(1, 256),
    }
}

fn url_has_inline_password(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or("");
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

fn service(key: &str, s: RawService, p: &mut Problems) -> ServiceConfig {
    let name = match s.name {
        Some(n) if is_service_name(&n) => n,
        Some(n) => {
            p.push(
                &format!("{key}.name"),
                &format!(
                    "`{n}` is not a service name; expected 1 to 32 lowercase letters, digits or `-`"
                ),
            );
            String::new()
        }
        None => {
            p.push(&format!("{key}.name"), "required");
            String::new()
        }
    };
    let upstream = match s.upstream.as_deref() {
        Some(u) => p
            .value(&format!("{key}.upstream"), u, parse_upstream)
            .unwrap_or_default(),
        None => {
            p.push(&format!("{key}.upstream"), "required");
            http::Uri::default()
        }
    };
    let tls = upstream_tls(key, &upstream, (s.ca_file, s.client_cert, s.client_key), p);
    let timeout = p.duration(
        &format!("{key}.timeout"),
        s.timeout.as_deref(),
        Duration::from_secs(30),
    );
    if s.routes.is_empty() {
        p.push(
            &format!("{key}.routes"),
            "a service needs at least one route",
        );
    }
    let routes: Vec<RouteConfig> = s
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| route(&format!("{key}.routes[{i}]"), &name, r, p))
        .collect();
    // A bill line is per action: two routes naming one action must price it alike (issue 17).
    for (i, later) in routes.iter().enumerate() {
        let first = routes
            .iter()
            .take(i)
            .position(|r| r.action == later.action && r.price != later.price);
        if let Some(j) = first {
            p.push(
                &format!("{key}.routes[{i}].action"),
                &format!(
                    "`{}` is also the action of `{key}.routes[{j}]`, at different prices; bills price an action, not a route, so give both routes the same prices or name different actions",
                    later.action
                ),
            );
        }
    }
    let mut plan_names = HashSet::new();
    let plans = s
        .plans
        .into_iter()
        .enumerate()
        .map(|(i, plan_raw)| {
            let plan = plan(&format!("{key}.plans[{i}]"), plan_raw, p);
            if !plan_names.insert(plan.name.clone()) {
                p.push(
                    &format!("{key}.plans[{i}].name"),
                    "plan names must be unique within a service",
                );
            }
            plan
        })
        .collect();
    ServiceConfig {
        name,
        upstream,
        timeout,
        signup_required: s.signup_required.unwrap_or(false),
        allow_path_params: s.allow_path_params.unwrap_or(false),
        case_insensitive_paths: s.case_insensitive_paths.unwrap_or(false),
        tls,
        routes,
        plans,
    }
}

/// `ca_file`, `client_cert` and `client_key` of a service: only for an `https://` upstream, and
/// the client pair both or neither. The files are read when the gateway builds its clients.
fn upstream_tls(
    key: &str,
    upstream: &http::Uri,
    (ca_file, client_cert, client_key): (Option<String>, Option<String>, Option<String>),
    p: &mut Problems,
) -> Option<UpstreamTlsConfig> {
    let tls = UpstreamTlsConfig {
        ca_file: ca_file.map(PathBuf::from),
        client_cert: client_cert.map(PathBuf::from),
        client_key: client_key.map(PathBuf::from),
    };
    if upstream.scheme_str() != Some("https") {
        for (name, set) in [
            ("ca_file", tls.ca_file.is_some()),
            ("client_cert", tls.client_cert.is_some()),
            ("client_key", tls.client_key.is_some()),
        ] {
            if set {
                p.push(
                    &format!("{key}.{name}"),
                    "applies only to an `https://` upstream; change the upstream's scheme or remove this key",
                );
            }
        }
        return None;
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(_), None) => p.push(
            &format!("{key}.client_key"),
            "`client_cert` needs its `client_key` (PEM) for mutual TLS",
        ),
        (None, Some(_)) => p.push(
            &format!("{key}.client_cert"),
            "`client_key` needs its `client_cert` (PEM chain) for mutual TLS",
        ),
        _ => {}
    }
    Some(tls)
}

fn route(key: &str, service: &str, r: RawRoute, p: &mut Problems) -> RouteConfig {
    let method = match r.method.as_deref() {
        None | Some("*") => None,
        Some(m) => p.value(&format!("{key}.method"), m, |m| {
            if m.bytes().all(|b| b.is_ascii_uppercase()) {
                http::Method::from_bytes(m.as_bytes()).map_err(|_| "not an HTTP method".into())
            } else {
                Err("expected an upper-case HTTP method like `GET`, or `*`".into())
            }
        }),
    };
    let price = route_price(key, &r, p);
    let path = match r.path {
        Some(path) => {
            if let Err(e) = check_route_pattern(&path) {
                p.push(&format!("{key}.path"), &e);
            }
            path
        }
        None => {
            p.push(&format!("{key}.path"), "required");
            String::new()
        }
    };
    let action = match r.action {
        Some(a) => {
            let expected = format!("{service}:");
            if !a.starts_with(&expected)
                || a.len() == expected.len()
                || a.contains(char::is_whitespace)
            {
                p.push(
                    &format!("{key}.action"),
                    &format!("`{a}` must be `{service}:<Name>`, named after its service"),
                );
            }
            a
        }
        None => {
            p.push(&format!("{key}.action"), "required");
            String::new()
        }
    };
    let max_body = r
        .max_body
        .as_deref()
        .and_then(|v| p.value(&format!("{key}.max_body"), v, parse_size));
    RouteConfig {
        method,
        path,
        action,
        max_body,
        price,
    }
}

/// The route's prices through billing's validator, each problem under its own key.
fn route_price(key: &str, r: &RawRoute, p: &mut Problems) -> RoutePrice {
    let tiers: Option<Vec<RawPriceTier<'_>>> = (!r.per_request_tiers.is_empty()).then(|| {
        r.per_request_tiers
            .iter()
            .enumerate()
            .map(|(i, t)| RawPriceTier {
                up_to: t.up_to,
                price: t.price.as_deref().unwrap_or_else(|| {
                    p.push(&format!("{key}.per_request_tiers[{i}].price"), "required");
                    "0"
                }),
            })
            .collect()
    });
    let raw = RawRoutePrice {
        per_request: r.per_request.as_deref(),
        per_gb_in: r.per_gb_in.as_deref(),
        per_gb_out: r.per_gb_out.as_deref(),
        per_request_tiers: tiers,
    };
    RoutePrice::parse(&raw).unwrap_or_else(|errors| {
        for e in errors {
            let field = match &e {
                PriceError::Amount { field, .. }
                | PriceError::TierNotAscending { field, .. }
                | PriceError::TierZero { field }
                | PriceError::UnboundedTierNotLast { field } => field.as_str(),
                PriceError::LastTierBounded | PriceError::NoTiers | PriceError::FlatAndTiered => {
                    "per_request_tiers"
                }
            };
            p.push(&format!("{key}.{field}"), &e.to_string());
        }
        RoutePrice::default()
    })
}

fn check_tiers<T: PartialOrd + Copy>(key: &str, tiers: &[(Option<T>, Decimal)], p: &mut Problems) {
    let Some((last_bound, _)) = tiers.last() else {
        return;
    };
    if last_bound.is_some() {
        p.push(
            key,
            "the last tier must have no `up_to` (it takes everything above)",
        );
    }
    let last = tiers.len() - 1;
    let mut previous: Option<T> = None;
    for (i, (bound, _)) in tiers.iter().enumerate() {
        match (bound, previous) {
            (None, _) if i != last => p.push(key, "only the last tier may leave out `up_to`"),
            (None, _) => {}
            (Some(b), Some(prev)) if *b <= prev => {
                p.push(key, "tier `up_to` bounds must increase strictly")
            }
            (Some(b), _) => previous = Some(*b),
        }
    }
}

fn plan(key: &str, r: RawPlan, p: &mut Problems) -> PlanConfig {
    let name = r.name.unwrap_or_else(|| {
        p.push(&format!("{key}.name"), "required");
        String::new()
    });
    let monthly_minimum = p
        .price(
            &format!("{key}.monthly_minimum"),
            r.monthly_minimum.as_deref(),
        )
        .unwrap_or_default();
    let usage_percent_tiers: Vec<(Option<Decimal>, Decimal)> = r
        .usage_percent_tiers
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let tkey = format!("{key}.usage_percent_tiers[{i}]");
            let up_to = match t.up_to.as_deref() {
                Some(v) => Some(p.price(&format!("{tkey}.up_to"), Some(v))?),
                None => None,
            };
            let percent = p.price(&format!("{tkey}.percent"), t.percent.as_deref());
            match percent {
                Some(pc) if pc <= Decimal::ONE_HUNDRED => Some((up_to, pc)),
                Some(_) => {
                    p.push(
                        &format!("{tkey}.percent"),
                        "expected a percentage from 0 to 100",
                    );
                    None
                }
                None => {
                    p.push(&format!("{tkey}.percent"), "required");
                    None
                }
            }
        })
        .collect();
    check_tiers(
        &format!("{key}.usage_percent_tiers"),
        &usage_percent_tiers,
        p,
    );
    PlanConfig {
        name,
        monthly_minimum,
        usage_percent_tiers,
    }
}

/// Every service name, as `docs/openapi.json` states it.
pub const SERVICE_NAME_PATTERN: &str = "^[a-z0-9-]{1,32}$";

fn is_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A route pattern: starts with `/`, segments of path characters, `*` as a whole segment.
fn check_route_pattern(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` must start with `/`"));
    }
    for segment in path.split('/').skip(1) {
        if segment == "*" {
            continue;
        }
        if segment.contains('*') {
            return Err(format!(
                "`{path}`: `*` must be a whole segment, like `/objects/*`"
            ));
        }
        if segment == "." || segment == ".." || segment.contains('%') {
            return Err(format!(
                "`{path}`: segments may not be `.`, `..` or percent-encoded"
            ));
        }
    }
    Ok(())
}

fn parse_upstream(v: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = v.parse().map_err(|_| format!("`{v}` is not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("expected an `http://host:port` or `https://host:port` URL".into());
    }
    if uri.authority().is_none() {
        return Err("expected a host, like `http://127.0.0.1:9101`".into());
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err("expected no path or query, only `http(s)://host:port`".into());
    }
    Ok(uri)
}

fn parse_ip_net(v: &str) -> Result<IpNet, String> {
    if let Ok(net) = v.parse::<IpNet>() {
        return Ok(net);
    }
    v.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{v}` is neither an IP address nor a CIDR range"))
}

/// Parses durations like `500ms`, `30s`, `15m`, `1h`, `90d`.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("`{v}` is not a duration; expected a number and a unit, like `30s`")
    })?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
    let d = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => return Err(format!("`{v}` has an unknown unit; use ms, s, m, h or d")),
    };
    d.ok_or_else(|| format!("`{v}` is too long"))
}

/// A configured duration as chrono's type (the domain modules compute with chrono).
pub fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Parses sizes like `512`, `64KiB`, `10MiB`, `1GiB` (also `KB`, `MB`, `GB` as powers of 1000).
pub fn parse_size(v: &str) -> Result<u64, String> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{v}` is not a size; expected a number and a unit, like `10MiB`"))?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "`{v}` has an unknown unit; use B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{v}` is too large"))
}

fn toml_problem(e: &toml::de::Error) -> Problem {
    Problem {
        key: "(file)".to_owned(),
        message: e.to_string().trim_end().replace('\n', " "),
    }
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let mut out = format!("{} problem(s) in `{}`:", problems.len(), path.display());
    for problem in problems {
        out.push_str(&format!("\n  {problem}"));
    }
    out
}

// === impl Problem ===

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Collects problems while the raw config is converted.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, key: &str, message: &str) {
        self.0.push(Problem {
            key: key.to_owned(),
            message: message.to_owned(),
        });
    }

    fn value<T>(
        &mut self,
        key: &str,
        v: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(v) {
            Ok(t) => Some(t),
            Err(message) => {
                self.push(key, &message);
                None
            }
        }
    }

    fn duration(&mut self, key: &str, v: Option<&str>, default: Duration) -> Duration {
        v.and_then(|v| self.value(key, v, parse_duration))
            .unwrap_or(default)
    }

    fn size(&mut self, key: &str, v: Option<&str>, default: u64) -> u64 {
        v.and_then(|v| self.value(key, v, parse_size))
            .unwrap_or(default)
    }

    /// A non-negative decimal string; floats written as TOML numbers are refused by serde.
    fn price(&mut self, key: &str, v: Option<&str>) -> Option<Decimal> {
        let v = v?;
        self.value(key, v, |v| match Decimal::from_str_exact(v) {
            Ok(d) if d.is_sign_negative() => Err(format!("`{v}` is negative")),
            Ok(d) => Ok(d),
            Err(_) => Err(format!("`{v}` is not a decimal number like `0.0004`")),
        })
    }
}

#[cfg(test)]
mod tests;
