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

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::app::App;
use idle::{Activity, Tracked, Watched};
use limits::ConnectionLimits;

/// Serves `listener` until `shutdown` resolves, then stops accepting and waits up to the
/// configured grace period for in-flight calls to finish.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let server = &app.config.server;
    let limits = ConnectionLimits::new(server.max_connections, server.max_connections_per_ip);
    let mut builder = http1::Builder::new();
    // No hyper header timer: it would also run while a keep-alive connection is idle; `idle`
    // keeps both deadlines.
    builder
        .timer(TokioTimer::new())
        .max_headers(server.max_headers)
        .max_buf_size(server.max_header_bytes)
        .keep_alive(true);

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving what is open and
                        // back off instead of spinning.
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
                let activity = Activity::new();
                let app = app.clone();
                let watch = activity.clone();
                let service = service_fn(move |request| {
                    let app = app.clone();
                    let in_flight = activity.begin();
                    async move {
                        let response = pipeline::handle(app, request, peer).await;
                        Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
                    }
                });
                let connection = graceful.watch(
                    builder.serve_connection(TokioIo::new(Watched::new(stream, watch.clone())), service),
                );
                let (head, keepalive) = (server.header_read_timeout, server.keepalive_timeout);
                tokio::spawn(async move {
                    let _slot = slot;
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
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight calls");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(server.shutdown_grace) => {
            tracing::warn!(grace = ?server.shutdown_grace, "grace period over; closing remaining connections");
        }
    }
}
