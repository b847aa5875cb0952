//! The HTTP edge: accepts connections, applies connection-level limits (header read timeout,
//! header count and size), hands each request to the pipeline, and drains in-flight calls on
//! shutdown.
//!
//! Architecture invariant: only `server`, `upstream`, `api` and `cli` know HTTP.

pub mod authn;
pub mod authorize;
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

/// Serves `listener` until `shutdown` resolves, then stops accepting and waits up to the
/// configured grace period for in-flight calls to finish.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let server = &app.config.server;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_headers(server.max_headers)
        .max_buf_size(server.max_header_bytes)
        .keep_alive(true);

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let service = service_fn(move |request| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(pipeline::handle(app, request, peer).await) }
                });
                let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
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
