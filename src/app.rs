//! The one place where components are wired together: `App::build(config)` opens the store,
//! compiles routes, creates the upstream client and metrics; `App::run` serves until shutdown.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::server::{self, route::RouteTable};
use crate::store::StoreError;
use crate::store::sqlite::SqliteStore;
use crate::upstream::Upstreams;

/// Everything a request may need, built once.
pub struct App {
    pub config: Config,
    pub clock: SharedClock,
    pub store: SqliteStore,
    pub routes: RouteTable,
    pub upstreams: Upstreams,
    pub metrics: Metrics,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the store in `{dir}`: {source}")]
    Store { dir: String, source: StoreError },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

// === impl App ===

impl App {
    pub async fn build(config: Config, clock: SharedClock) -> Result<Arc<App>, StartupError> {
        let store =
            SqliteStore::open(&config.store.data_dir).map_err(|source| StartupError::Store {
                dir: config.store.data_dir.display().to_string(),
                source,
            })?;
        let routes = RouteTable::compile(&config);
        Ok(Arc::new(App {
            config,
            clock,
            store,
            routes,
            upstreams: Upstreams::new(),
            metrics: Metrics::new(),
        }))
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> Result<TcpListener, StartupError> {
        let addr = self.config.server.listen;
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Listen { addr, source })
    }

    /// Serves on `listener` until `shutdown` resolves, then drains.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        server::serve(self, listener, shutdown).await;
    }

    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.config
            .server
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip))
    }
}
