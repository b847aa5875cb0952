//! The one place where components are wired together: `App::build(config, clock)` opens the
//! store, loads the policies and signing keys, compiles routes, creates the upstream client and
//! metrics; `App::run` serves until shutdown.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::audit::AuditObserver;
use crate::auth::{KeyError, KeyRing, PasswordHasher, TokenIssuer};
use crate::authz::{LoadFailure, PolicyStore};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::journal::{Journal, JournalError, JournalTask};
use crate::metrics::{Metrics, SharedMetrics, VersionLabels};
use crate::org::OrgService;
use crate::server::authorize::throttle::DenyThrottle;
use crate::server::{self, route::RouteTable};
use crate::store::StoreError;
use crate::store::sql::SqlStore;
use crate::upstream::Upstreams;

/// Everything a request may need, built once.
pub struct App {
    pub config: Config,
    pub clock: SharedClock,
    pub store: SqlStore,
    pub routes: RouteTable,
    pub upstreams: Upstreams,
    pub metrics: SharedMetrics,
    pub hasher: PasswordHasher,
    /// `[audit] deny_rate`: principals denied too often are refused before Cedar.
    pub deny_throttle: DenyThrottle,
    pub tokens: TokenIssuer,
    pub policies: Arc<PolicyStore>,
    pub orgs: OrgService,
    /// The ledger and the decision log: one durable, hash-chained writer.
    pub journal: Journal,
    /// Who may `POST /policies/reload`, and its rate (P7).
    pub reloads: crate::api::policies::ReloadGate,
    /// `[server.tls]`: the certificate and key being served (O4).
    pub tls: Option<Arc<crate::server::tls::EdgeTls>>,
    journal_task: parking_lot::Mutex<Option<JournalTask>>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the store at {location}: {source}")]
    Store {
        location: String,
        source: StoreError,
    },
    #[error("cannot open the ledger and decision log: {0}")]
    Journal(#[from] JournalError),
    #[error("invalid route prices: {0}")]
    Routes(String),
    #[error(transparent)]
    PriceBook(#[from] crate::pricebook::PriceBookStoreError),
    #[error("cannot open the signing keys: {0}")]
    Keys(#[from] KeyError),
    #[error("cannot open the key that seals MFA secrets: {0}")]
    SecretKey(#[from] crate::auth::sealing::SealError),
    #[error("the policies in `{dir}` are invalid:\n{failure}")]
    Policies { dir: String, failure: LoadFailure },
    #[error("invalid [server.tls]: {0}")]
    Tls(#[from] crate::server::tls::TlsError),
    #[error("invalid TLS to an upstream: {0}")]
    UpstreamTls(#[from] crate::upstream::UpstreamTlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

// === impl App ===

impl App {
    pub async fn build(config: Config, clock: SharedClock) -> Result<Arc<App>, StartupError> {
        let store = open_store(&config.store)
            .await
            .map_err(|source| StartupError::Store {
                location: store_location(&config.store),
                source,
            })?;
        let required: Vec<&str> = config.route_actions();
        let policies = PolicyStore::open(&config.policies.dir, &required, clock.clone()).map_err(
            |failure| StartupError::Policies {
                dir: config.policies.dir.display().to_string(),
                failure,
            },
        )?;
        let keys = KeyRing::open(
            config.store.data_dir.join("keys"),
            crate::config::chrono_duration(config.auth.token_ttl),
            clock.now(),
        )?;
        // TOTP secrets are sealed under a key beside the signing keys (a fleet shares both);
        // secrets stored in plain text by an older version are sealed now, once.
        let sealer = crate::auth::sealing::SecretSealer::open(&config.store.data_dir.join("keys"))?;
        let sealed =
            store
                .seal_mfa_secrets(sealer)
                .await
                .map_err(|source| StartupError::Store {
                    location: store_location(&config.store),
                    source,
                })?;
        if sealed > 0 {
            tracing::info!(sealed, "sealed MFA secrets that were stored in plain text");
        }
        let tokens = TokenIssuer::new(
            Arc::new(keys),
            config.auth.issuer.clone(),
            config.auth.audience.clone(),
            crate::config::chrono_duration(config.auth.token_ttl),
        );
        // The price book: a new version when the config's prices or plans changed; every call
        // routed by this table is metered under it (issue 17).
        let price_version = {
            let book = crate::pricebook::from_config(&config)?;
            let (db, now) = (store.database().clone(), clock.now());
            tokio::task::spawn_blocking(move || crate::pricebook::record(&db, &book, now))
                .await
                .map_err(|e| {
                    crate::pricebook::PriceBookStoreError::Unavailable(format!(
                        "price book task failed: {e}"
                    ))
                })??
        };
        let routes = RouteTable::compile_priced(&config, Some(price_version))
            .map_err(StartupError::Routes)?;
        let metrics = Arc::new(Metrics::new());
        let hasher = PasswordHasher::new(
            config.auth.argon2_concurrency,
            config.auth.argon2_queue,
            metrics.password_queue_rejections.clone(),
        );
        // Every tree that is ever active is archived before a decision can name its version
        // (D3): the startup tree here, each reloaded one by the observer, before its swap.
        // Both touch the database: off the reactor.
        let (journal, journal_task) = {
            let (db, clock, metrics) = (store.database().clone(), clock.clone(), metrics.clone());
            let snapshot = policies.load();
            tokio::task::spawn_blocking(move || {
                let opened = Journal::open(&db, clock.clone(), metrics)?;
                archive_startup_tree(&db, &snapshot, clock.now());
                Ok::<_, JournalError>(opened)
            })
            .await
            .map_err(|e| JournalError::Unavailable(format!("journal task failed: {e}")))??
        };
        policies.set_observer(Arc::new(AuditObserver::new(
            store.database().clone(),
            journal.clone(),
            clock.clone(),
            tokio::runtime::Handle::try_current().ok(),
        )));
        // Turns on the store's caller cache: no store round trip per request for the caller.
        store.attach_spend_book(journal.spend_book());
        let deny_throttle = DenyThrottle::new(config.audit.deny_rate);
        let reloads = crate::api::policies::ReloadGate::new(&config.policies.reload_accounts);
        let tls = match &config.server.tls {
            Some(t) => Some(crate::server::tls::EdgeTls::load(t.clone())?),
            None => None,
        };
        let upstreams = Upstreams::new(&config.services)?;
        let app = App {
            tls,
            config,
            clock,
            store: store.clone(),
            routes,
            upstreams,
            metrics,
            hasher,
            deny_throttle,
            tokens,
            policies: Arc::new(policies),
            orgs: OrgService::new(Arc::new(store.clone())),
            journal,
            reloads,
            journal_task: parking_lot::Mutex::new(Some(journal_task)),
        };
        app.sync_policy_metrics();
        Ok(Arc::new(app))
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> Result<TcpListener, StartupError> {
        let addr = self.config.server.listen;
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Listen { addr, source })
    }

    /// Binds the other `listen` addresses and `plain_listen`.
    pub async fn bind_extra(&self) -> Result<Vec<(TcpListener, server::Edge)>, StartupError> {
        let mut out = Vec::new();
        for addr in &self.config.server.also_listen {
            out.push((server::bind(*addr).await?, server::Edge::Main));
        }
        if let Some(addr) = self.config.server.plain_listen {
            out.push((server::bind(addr).await?, server::Edge::HealthOnly));
        }
        Ok(out)
    }

    /// Serves on `listener` until `shutdown` resolves, then drains.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        self.run_all(vec![(listener, server::Edge::Main)], shutdown)
            .await;
    }

    /// Serves on every listener until `shutdown` resolves, then drains.
    pub async fn run_all(
        self: Arc<Self>,
        listeners: Vec<(TcpListener, server::Edge)>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let _tls_watcher = match &self.tls {
            Some(tls) => match tls.spawn_watcher(self.metrics.clone()) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the TLS files; reload them with SIGHUP");
                    None
                }
            },
            None => None,
        };
        let _watcher = if self.config.policies.watch {
            match self.policies.spawn_watcher() {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the policy tree; reload with SIGHUP or the API");
                    None
                }
            }
        } else {
            None
        };
        let sweeper = tokio::spawn(sweep_expired_handshakes(self.clone()));
        let pruner = self
            .config
            .audit
            .retention
            .map(|retention| tokio::spawn(prune_decisions_daily(self.clone(), retention)));
        server::serve_all(self.clone(), listeners, shutdown).await;
        // Calls whose client went away still run and meter (issue 17 item 7); each is bounded
        // by its service's timeout. Their ledger records must reach the journal before it shuts.
        if tokio::time::timeout(self.config.server.shutdown_grace, self.upstreams.settled())
            .await
            .is_err()
        {
            tracing::warn!(
                "upstream calls still running after the grace period; their metering may be lost"
            );
        }
        sweeper.abort();
        if let Some(pruner) = pruner {
            pruner.abort();
        }
        // Everything queued is committed before the process goes.
        if let Err(e) = self.journal.shutdown().await {
            tracing::error!(error = %e, "the journal did not shut down cleanly");
        }
        let task = self.journal_task.lock().take();
        if let Some(task) = task {
            let _ = tokio::task::spawn_blocking(move || task.join()).await;
        }
    }

    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.config
            .server
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip))
    }

    /// Brings the policy metrics up to date with the policy store (reloads can happen on the
    /// watcher's thread, which knows nothing of metrics).
    pub fn sync_policy_metrics(&self) {
        let counters = self.policies.counters();
        let sync = |result: &str, target: u64| {
            let counter =
                self.metrics
                    .policy_reloads
                    .get_or_create(&crate::metrics::ResultLabels {
                        result: result.to_owned(),
                    });
            let current = counter.get();
            if target > current {
                counter.inc_by(target - current);
            }
        };
        let attempts = counters.attempts();
        let failures = counters.failures();
        sync("success", attempts.saturating_sub(failures));
        sync("failure", failures);
        let snapshot = self.policies.load();
        self.metrics.policy_active.clear();
        self.metrics
            .policy_active
            .get_or_create(&VersionLabels {
                version: snapshot.version().to_owned(),
            })
            .set(1);
        self.metrics
            .policy_loaded_timestamp
            .set(snapshot.loaded_at().timestamp());
    }
}

/// Persists handshake expiry in the background; every read already treats an overdue handshake
/// as expired, so this only keeps the store tidy and the history exact.
async fn sweep_expired_handshakes(app: Arc<App>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        every.tick().await;
        match app.orgs.sweep_expired(app.clock.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "handshakes expired"),
            Err(e) => tracing::warn!(error = %e, "handshake sweep failed"),
        }
    }
}

/// Opens the configured store off the reactor (PostgreSQL connects and migrates).
async fn open_store(config: &crate::config::StoreConfig) -> Result<SqlStore, StoreError> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || SqlStore::open_config(&config))
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
}

/// Where the store lives, for messages (never with a password).
pub fn store_location(config: &crate::config::StoreConfig) -> String {
    match &config.kind {
        crate::config::StoreKind::Sqlite => format!("`{}`", config.data_dir.display()),
        crate::config::StoreKind::Postgres { url, .. } => format!("`{url}`"),
    }
}

/// Archives the tree loaded at startup; a failure is logged (the gateway can still decide, but
/// decisions under this version cannot be explained with its text unless it is archived later).
fn archive_startup_tree(
    db: &crate::db::Database,
    snapshot: &crate::authz::PolicySnapshot,
    now: chrono::DateTime<chrono::Utc>,
) {
    let result = db
        .connect()
        .map_err(crate::audit::AuditError::from)
        .and_then(|conn| crate::audit::archive_snapshot(&conn, snapshot, now));
    if let Err(e) = result {
        tracing::error!(version = snapshot.version(), error = %e, "cannot archive the policy tree");
    }
}

/// `[audit] retention`: once a day, removes decision records older than the retention under
/// a checkpoint (see `audit::retention`).
async fn prune_decisions_daily(app: Arc<App>, retention: std::time::Duration) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(86_400));
    loop {
        every.tick().await;
        let now = app.clock.now();
        let cutoff = now - crate::config::chrono_duration(retention);
        let db = app.store.database().clone();
        match tokio::task::spawn_blocking(move || crate::audit::prune(&db, cutoff, now)).await {
            Ok(Ok(report)) if report.removed > 0 => {
                tracing::info!(removed = report.removed, "old decision records pruned")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "decision retention failed"),
            Err(e) => tracing::error!(error = %e, "decision retention task failed"),
        }
    }
}
