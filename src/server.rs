//! The HTTP edge: accepts connections, applies connection-level limits (connection caps in
//! `limits`, head and keep-alive deadlines in `idle`, header count and size), hands each request
//! to the pipeline, and drains in-flight calls on shutdown.
//!
//! Architecture invariant: only `server`, `upstream`, `api` and `cli` know HTTP.

pub mod authn;
pub mod authorize;
pub mod idle;
pub mod limits;
pub mod message;
pub mod path;
pub mod pipeline;
pub mod rejection;
pub mod route;
pub mod scope;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::app::App;
use idle::{Activity, Tracked, Watched};
use limits::{ConnectionLimits, ConnectionSlot};

/// HTTP/2 streams a client may have open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Streams a client may open and reset before the gateway accepted them; past it the connection
/// is closed with GOAWAY (rapid reset, CVE-2023-44487).
pub const HTTP2_MAX_PENDING_RESETS: usize = 20;
/// Streams the gateway may reset for a client's protocol errors before it closes the connection.
pub const HTTP2_MAX_LOCAL_ERROR_RESETS: usize = 100;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// Every path; TLS when `[server.tls]` is set.
    Main,
    /// `plain_listen`: only `/healthz`, `/readyz` and `/metrics`, never TLS.
    HealthOnly,
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and waits up to the
/// configured grace period for in-flight calls to finish.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    serve_all(app, vec![(listener, Edge::Main)], shutdown).await;
}

/// Serves every listener with shared connection caps until `shutdown`, then drains.
pub async fn serve_all(
    app: Arc<App>,
    listeners: Vec<(TcpListener, Edge)>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    let server = &app.config.server;
    let limits = ConnectionLimits::new(server.max_connections, server.max_connections_per_ip);
    let mut loops = tokio::task::JoinSet::new();
    for (listener, edge) in listeners {
        loops.spawn(accept_loop(
            app.clone(),
            listener,
            edge,
            limits.clone(),
            graceful.clone(),
        ));
    }
    shutdown.await;
    // Stops accepting: the listeners close with their loops.
    loops.shutdown().await;
    tracing::info!("shutting down: draining in-flight calls");
    // The accept loops held the only other references; they are gone.
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        tracing::error!("connections still being accepted; not draining");
        return;
    };
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(server.shutdown_grace) => {
            tracing::warn!(grace = ?server.shutdown_grace, "grace period over; closing remaining connections");
        }
    }
}

async fn accept_loop(
    app: Arc<App>,
    listener: TcpListener,
    edge: Edge,
    limits: Arc<ConnectionLimits>,
    graceful: Arc<GracefulShutdown>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: keep serving what is open and back off
                // instead of spinning.
                tracing::warn!(error = %e, open = limits.open(), "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match limits.admit(peer.ip(), app.is_trusted_proxy(peer.ip())) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Closed before a byte is read: a flood costs an accept, not a descriptor.
                app.metrics.connection_refused(refusal);
                tracing::debug!(%peer, ?refusal, "connection refused at accept: cap reached");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let tls = match edge {
            Edge::Main => app.tls.clone(),
            Edge::HealthOnly => None,
        };
        let (app, graceful) = (app.clone(), graceful.watcher());
        tokio::spawn(async move {
            match tls {
                None => connection(app, stream, peer, edge, slot, graceful, false).await,
                Some(tls) => {
                    let handshake = tls.acceptor().accept(stream);
                    match tokio::time::timeout(tls.handshake_timeout(), handshake).await {
                        Ok(Ok(stream)) => {
                            let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            connection(app, stream, peer, edge, slot, graceful, http2).await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Serves one admitted connection (plain or after its TLS handshake) until it ends or breaks an
/// idle limit; `slot` frees its place when this returns. `http2` is true when ALPN chose `h2`.
async fn connection<S>(
    app: Arc<App>,
    stream: S,
    peer: SocketAddr,
    edge: Edge,
    slot: ConnectionSlot,
    graceful: Watcher,
    http2: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _slot = slot;
    let server = &app.config.server;
    let (head, keepalive) = (server.header_read_timeout, server.keepalive_timeout);
    // On HTTP/2 every byte between requests (PING, SETTINGS, WINDOW_UPDATE) would look like a
    // head begun; there the head deadline is left to the h2 layer and only keep-alive applies.
    let activity = if http2 {
        Activity::without_head_deadline()
    } else {
        Activity::new()
    };
    let watch = activity.clone();
    let service_app = app.clone();
    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let app = service_app.clone();
        let in_flight = activity.begin();
        async move {
            let response = match edge {
                Edge::HealthOnly if !health_path(request.method(), request.uri().path()) => {
                    not_here()
                }
                _ => pipeline::handle(app, request, peer).await,
            };
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
        }
    });
    let io = TokioIo::new(Watched::new(stream, watch.clone()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No hyper header timer: it would also run while a keep-alive connection is idle; `idle`
    // keeps both deadlines.
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_headers(server.max_headers)
        .max_buf_size(server.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(HTTP2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(HTTP2_MAX_LOCAL_ERROR_RESETS);
    let builder = if http2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let connection = graceful.watch(builder.serve_connection(io, service).into_owned());
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        }
        () = watch.expired(head, keepalive) => {
            tracing::debug!(%peer, "connection closed: idle or head deadline passed");
        }
    }
}

/// The paths `plain_listen` serves.
fn health_path(method: &Method, path: &str) -> bool {
    method == Method::GET && matches!(path, "/healthz" | "/readyz" | "/metrics")
}

fn not_here() -> Response<crate::body::Body> {
    pipeline::json(
        StatusCode::NOT_FOUND,
        r#"{"error":{"code":"NotFound","message":"plain_listen serves only /healthz, /readyz and /metrics; use the TLS address"}}"#
            .to_owned(),
    )
}

/// Binds `addr`, or says which address could not be bound.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::app::StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| crate::app::StartupError::Listen { addr, source })
}
