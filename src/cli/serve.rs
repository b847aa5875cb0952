//! `tollgate serve`: load the config, build the app, serve until SIGTERM or ctrl-c, drain.

use std::sync::Arc;

use crate::app::{App, StartupError};
use crate::authz::ReloadTrigger;
use crate::cli::{ConfigArg, exit};
use crate::clock::SystemClock;
use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(args: ServeArgs) -> u8 {
    let config = match Config::load(&args.config.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tollgate: {e}");
            return exit::USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate: cannot start the runtime: {e}");
            return exit::SOFTWARE;
        }
    };
    runtime.block_on(async move {
        let app = match App::build(config, Arc::new(SystemClock)).await {
            Ok(app) => app,
            Err(e @ StartupError::Policies { .. }) => {
                eprintln!("tollgate: {e}");
                return exit::USAGE;
            }
            Err(e) => {
                eprintln!("tollgate: {e}");
                return exit::SOFTWARE;
            }
        };
        let listener = match app.bind().await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("tollgate: {e}");
                return exit::SOFTWARE;
            }
        };
        let extra = match app.bind_extra().await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("tollgate: {e}");
                return exit::SOFTWARE;
            }
        };
        let shutdown = shutdown_signal();
        spawn_sighup_reload(app.clone());
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| app.config.server.listen.to_string());
        let scheme = if app.tls.is_some() { "https" } else { "http" };
        say(&format!("tollgate: listening on {scheme}://{addr}"));
        for (listener, edge) in &extra {
            if let Ok(a) = listener.local_addr() {
                let what = match edge {
                    crate::server::Edge::Main => format!("{scheme}://{a}"),
                    crate::server::Edge::HealthOnly => {
                        format!("http://{a} (healthz, readyz, metrics only)")
                    }
                };
                say(&format!("tollgate: also listening on {what}"));
            }
        }
        say(&format!(
            "tollgate: data in {}, policies from {} (version {})",
            app.config.store.data_dir.display(),
            app.config.policies.dir.display(),
            app.policies.load().version()
        ));
        let mut listeners = vec![(listener, crate::server::Edge::Main)];
        listeners.extend(extra);
        app.run_all(listeners, shutdown).await;
        exit::OK
    })
}

/// Reloads the policies on SIGHUP (P7), and the TLS certificate and key (O4).
fn spawn_sighup_reload(app: Arc<App>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload policies through the API instead");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if let Some(tls) = app.tls.clone() {
                let metrics = app.metrics.clone();
                // Logged and reported by `reload`; the old pair stays on failure.
                let _ = tokio::task::spawn_blocking(move || tls.reload(&metrics)).await;
            }
            let policies = app.policies.clone();
            let result =
                tokio::task::spawn_blocking(move || policies.reload(ReloadTrigger::Signal)).await;
            app.sync_policy_metrics();
            match result {
                Ok(Ok(snapshot)) => {
                    tracing::info!(version = snapshot.version(), "policies reloaded on SIGHUP")
                }
                Ok(Err(failure)) => {
                    tracing::warn!(%failure, "policy reload on SIGHUP rejected; the last good set stays")
                }
                Err(e) => tracing::error!(error = %e, "policy reload task failed"),
            }
        }
    });
}

/// Prints a line for the operator; a closed stdout must not take the gateway down.
pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Resolves on SIGTERM or ctrl-c (SIGINT). The handlers are installed when this is called, not
/// when the future is first polled, so a signal sent right after startup is never missed.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                tracing::warn!("cannot install signal handlers; stop the gateway with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}
