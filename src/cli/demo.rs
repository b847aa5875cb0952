//! `tollgate demo` and `tollgate totp SECRET`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::auth::{TotpSecret, totp};
use crate::cli::exit;
use crate::cli::serve::{say, shutdown_signal};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, TlsConfig};
use crate::demo::{self, upstreams};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the demo keeps its data (reused on the next start).
    #[arg(long, default_value = "data/demo")]
    pub data_dir: PathBuf,
    /// The gateway's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Start over: delete the demo's data first.
    #[arg(long)]
    pub fresh: bool,
    /// Start from this operator config instead of the embedded default (to try other limits or
    /// prices on the demo world); the demo still sets the listen address, data dir and policy dir.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Speak HTTPS (and HTTP/2) instead of plain HTTP: a demo CA and a server pair it signed are
    /// made in `<data-dir>/tls/` on first start; `curl --cacert <data-dir>/tls/ca.pem` trusts it.
    #[arg(long)]
    pub tls: bool,
}

#[derive(Debug, clap::Args)]
pub struct TotpArgs {
    /// A Base32 TOTP secret, as MFA enrollment gave it.
    pub secret: String,
}

/// Prints the current code of a TOTP secret (what an authenticator app would show).
pub fn totp(args: TotpArgs) -> u8 {
    let secret = match TotpSecret::from_base32(args.secret.trim()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tollgate: {e}; pass the Base32 secret from MFA enrollment");
            return exit::USAGE;
        }
    };
    match totp::code_at(&secret, SystemClock.now()) {
        Ok(code) => {
            println!("{code}");
            exit::OK
        }
        Err(e) => {
            eprintln!("tollgate: {e}");
            exit::SOFTWARE
        }
    }
}

pub fn run(args: DemoArgs) -> u8 {
    if args.fresh
        && args.data_dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&args.data_dir)
    {
        eprintln!("tollgate: cannot remove `{}`: {e}", args.data_dir.display());
        return exit::SOFTWARE;
    }
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("tollgate: {e}");
                return exit::USAGE;
            }
        },
        None => match Config::embedded_default() {
            Ok(c) => c,
            Err(problems) => {
                eprintln!("tollgate: the embedded config is invalid: {problems:?}");
                return exit::SOFTWARE;
            }
        },
    };
    config.server.listen = args.listen;
    config.store.data_dir = args.data_dir.clone();
    config.policies.dir = args.data_dir.join("policies");
    if let Err(e) = demo::install_policies(&config.policies.dir) {
        eprintln!("tollgate: {e}");
        return exit::SOFTWARE;
    }
    let demo_tls = if args.tls {
        match demo::tls::ensure_pair(&args.data_dir.join("tls"), args.listen.ip()) {
            Ok(tls) => {
                config.server.tls = Some(TlsConfig {
                    cert: tls.cert.clone(),
                    key: tls.key.clone(),
                    client_ca: None,
                    handshake_timeout: Duration::from_secs(10),
                });
                Some(tls)
            }
            Err(e) => {
                eprintln!("tollgate: {e}");
                return exit::SOFTWARE;
            }
        }
    } else {
        None
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
        // The demo services listen where the config says, or anywhere free if that is taken.
        let mut services = Vec::new();
        for service in &mut config.services {
            let kind = match service.name.as_str() {
                "storage" => upstreams::Kind::Storage,
                "support" => upstreams::Kind::Support,
                "compute" => upstreams::Kind::Compute,
                _ => continue,
            };
            let wanted: Option<SocketAddr> = service.upstream.authority().and_then(|a| a.as_str().parse().ok());
            let listener = match wanted {
                Some(addr) => match upstreams::bind(addr).await {
                    Ok(l) => Ok(l),
                    Err(_) => upstreams::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await,
                },
                None => upstreams::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await,
            };
            let listener = match listener {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("tollgate: cannot start the demo `{}` service: {e}", service.name);
                    return exit::SOFTWARE;
                }
            };
            let Ok(addr) = listener.local_addr() else {
                return exit::SOFTWARE;
            };
            if let Ok(uri) = format!("http://{addr}").parse() {
                service.upstream = uri;
            }
            upstreams::spawn(kind, listener);
            services.push(format!("{} on {addr}", service.name));
        }
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
                eprintln!("tollgate: {e}; pick another address with --listen");
                return exit::SOFTWARE;
            }
        };
        let shutdown = shutdown_signal();
        let world = match demo::ensure_world(&app).await {
            Ok(w) => w,
            Err(e) => {
                eprintln!("tollgate: {e}; start over with --fresh");
                return exit::SOFTWARE;
            }
        };
        // The demo's operator is its payer: it may reload the policy tree through the API (P7).
        match crate::ids::AccountId::parse(&world.payer.account_id) {
            Ok(payer) => app.reloads.allow(payer),
            Err(e) => {
                eprintln!("tollgate: demo.json names a bad payer account ({e}); start over with --fresh");
                return exit::SOFTWARE;
            }
        }
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| app.config.server.listen.to_string());
        let gateway = match (&demo_tls, listener.local_addr()) {
            // The demo certificate names `localhost`: the URL a client checks it against.
            (Some(_), Ok(a)) if a.ip().is_loopback() => format!("https://localhost:{}", a.port()),
            (Some(_), _) => format!("https://{addr}"),
            (None, _) => format!("http://{addr}"),
        };
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "tollgate".to_owned());
        let month = app.clock.now().format("%Y-%m").to_string();
        let script = demo::walkthrough(&world, &gateway, demo_tls.as_ref().map(|t| t.ca.as_path()), &exe, &month)
            .replace("<data>", &app.config.store.data_dir.display().to_string());
        let script_path = app.config.store.data_dir.join("walkthrough.sh");
        // 0600 like the rest of the data dir: it holds the payer's password and TOTP secret.
        if let Err(e) = demo::write_private(&script_path, &script) {
            eprintln!("tollgate: {e}");
        }
        say(&format!("tollgate: listening on {gateway}"));
        if let Some(tls) = &demo_tls {
            say(&format!(
                "tollgate demo: TLS with a demo CA; trust it with: curl --cacert {} {gateway}/healthz",
                tls.ca.display()
            ));
        }
        say(&format!("tollgate demo: services {}", services.join(", ")));
        say(&format!(
            "tollgate demo: data in {}, policies in {} (version {})",
            app.config.store.data_dir.display(),
            app.config.policies.dir.display(),
            app.policies.load().version()
        ));
        say(&format!(
            "tollgate demo: organization {} (CONSOLIDATED_BILLING) — payer {} ({}), created member {} ({}), invited member {} ({})",
            world.org_id,
            world.payer.account_id,
            world.payer.name,
            world.created_member.account_id,
            world.created_member.name,
            world.invited_member.account_id,
            world.invited_member.name
        ));
        say(&format!(
            "tollgate demo: payer admin password {}, TOTP secret {} (current code: {} totp {})",
            world.payer.admin.password, world.payer_totp_secret, exe, world.payer_totp_secret
        ));
        say(&format!(
            "tollgate demo: member admin password {}, developer `{}` password {}; partner admin password {}",
            world.created_member.admin.password,
            world.developer.user,
            world.developer.password,
            world.invited_member.admin.password
        ));
        say(&format!("tollgate demo: walkthrough in {} — run it with bash, or step by step:", script_path.display()));
        say(&script);
        say("tollgate demo: running until ctrl-c");
        app.run(listener, shutdown).await;
        exit::OK
    })
}
