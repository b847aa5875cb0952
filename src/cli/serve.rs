//! `tollgate serve`: load the config, build the app, serve until SIGTERM or ctrl-c, drain.

use std::sync::Arc;

use crate::app::App;
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
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| app.config.server.listen.to_string());
        say(&format!("tollgate: listening on http://{addr}"));
        say(&format!(
            "tollgate: data in {}, policies from {}",
            app.config.store.data_dir.display(),
            app.config.policies.dir.display()
        ));
        app.run(listener, shutdown_signal()).await;
        exit::OK
    })
}

/// Prints a line for the operator; a closed stdout must not take the gateway down.
pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
