//! `TestGateway`: the gateway built from the shipped config, in-process, listening on port 0,
//! with its data in a temp dir, every service pointed at a test upstream and a manual clock.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate::app::App;
use tollgate::clock::ManualClock;
use tollgate::config::Config;

use super::Client;

pub struct TestGateway {
    pub app: Arc<App>,
    pub addr: std::net::SocketAddr,
    pub client: Client,
    pub clock: Arc<ManualClock>,
    pub data_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _temp: Option<tempfile::TempDir>,
}

/// Adjusts the parsed shipped config before the gateway starts.
pub type Tweak = Box<dyn FnOnce(&mut Config)>;

pub struct Builder {
    upstream: String,
    tweaks: Vec<Tweak>,
    data_dir: Option<PathBuf>,
    policies_dir: Option<PathBuf>,
    starts_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl TestGateway {
    /// Every shipped service pointed at `upstream`.
    pub fn builder(upstream: &str) -> Builder {
        Builder {
            upstream: upstream.to_owned(),
            tweaks: Vec::new(),
            data_dir: None,
            policies_dir: None,
            starts_at: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The gateway's database (SQLite file or PostgreSQL schema), to read what it stored.
    pub fn database(&self) -> tollgate::db::Database {
        self.app.store.database().clone()
    }

    /// Stops accepting and drains, as on SIGTERM; returns when the server task ends.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }

    /// Starts the shutdown and hands back a future that completes when draining is done.
    pub fn begin_shutdown(&mut self) -> impl Future<Output = ()> + use<> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take();
        async move {
            if let Some(task) = task {
                let _ = task.await;
            }
        }
    }
}

/// A signed-up account and its owner, logged in.
#[derive(Clone)]
pub struct Account {
    pub id: String,
    pub owner: String,
    pub password: String,
    /// Sends the owner's token.
    pub client: Client,
}

/// The password every test owner gets; it meets the default policy.
pub const OWNER_PASSWORD: &str = "Owner-pass-1!";

impl TestGateway {
    /// Signs up an account (`POST /accounts`) and logs its owner in.
    pub async fn account(&self, name: &str) -> Account {
        self.account_with_owner(name, "owner").await
    }

    pub async fn account_with_owner(&self, name: &str, owner: &str) -> Account {
        let r = self
            .client
            .post_json(
                "/accounts",
                serde_json::json!({"name": name, "email": format!("{name}@example.com"), "owner_user": owner, "owner_password": OWNER_PASSWORD}),
            )
            .await;
        assert_eq!(r.status, http::StatusCode::CREATED, "signup: {}", r.text());
        let id = r.json()["account_id"]
            .as_str()
            .expect("account_id")
            .to_owned();
        let token = self.login(&id, owner, OWNER_PASSWORD).await;
        Account {
            id,
            owner: owner.to_owned(),
            password: OWNER_PASSWORD.to_owned(),
            client: self.client.with_token(&token),
        }
    }

    /// Logs in and returns the token, failing the test otherwise.
    pub async fn login(&self, account: &str, user: &str, password: &str) -> String {
        let r = self
            .client
            .post_json(
                "/auth/login",
                serde_json::json!({"account_id": account, "user": user, "password": password}),
            )
            .await;
        assert_eq!(r.status, http::StatusCode::OK, "login: {}", r.text());
        r.json()["token"].as_str().expect("token").to_owned()
    }

    /// `POST /policies/reload` by `account`'s owner acting as the operator (P7): the account is
    /// added to the operator's accounts (`[policies] reload_accounts`), and the clock moves on
    /// by the reload interval first, so back-to-back reloads are not refused as too fast.
    pub async fn reload_policies(&self, account: &Account) -> super::client::TestResponse {
        self.app
            .reloads
            .allow(tollgate::ids::AccountId::parse(&account.id).expect("account id"));
        self.clock.advance(tollgate::api::policies::RELOAD_INTERVAL);
        account
            .client
            .post_json("/policies/reload", serde_json::json!({}))
            .await
    }
}

impl Builder {
    pub fn tweak(mut self, f: impl FnOnce(&mut Config) + 'static) -> Self {
        self.tweaks.push(Box::new(f));
        self
    }

    pub fn service_timeout(self, service: &'static str, timeout: Duration) -> Self {
        self.tweak(move |c| {
            for s in c.services.iter_mut().filter(|s| s.name == service) {
                s.timeout = timeout;
            }
        })
    }

    /// Serve the policy tree in `dir` (e.g. a `copy_policies()` the test edits).
    pub fn policies_dir(mut self, dir: PathBuf) -> Self {
        self.policies_dir = Some(dir);
        self
    }

    /// The clock's time while the gateway starts (what startup records, e.g. a price book
    /// version, is dated then).
    pub fn starts_at(mut self, t: chrono::DateTime<chrono::Utc>) -> Self {
        self.starts_at = Some(t);
        self
    }

    /// Reuse a data dir (to test restarts); the caller keeps it alive.
    pub fn data_dir(mut self, dir: PathBuf) -> Self {
        self.data_dir = Some(dir);
        self
    }

    pub async fn start(self) -> TestGateway {
        // `TOLLGATE_TEST_LOG=debug` shows the gateways' logs (with --nocapture).
        if let Ok(filter) = std::env::var("TOLLGATE_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let mut config = Config::embedded_default().expect("shipped config is valid");
        let upstream: http::Uri = self.upstream.parse().expect("upstream url");
        for service in &mut config.services {
            service.upstream = upstream.clone();
        }
        config.server.listen = "127.0.0.1:0".parse().expect("addr");
        config.server.shutdown_grace = Duration::from_secs(10);
        config.policies.dir = self.policies_dir.unwrap_or_else(shipped_policies);
        let (temp, data_dir) = match self.data_dir {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::tempdir().expect("tempdir");
                let dir = temp.path().join("data");
                (Some(temp), dir)
            }
        };
        config.store.data_dir = data_dir.clone();
        config.store.kind = super::backend::store_kind(&data_dir);
        for tweak in self.tweaks {
            tweak(&mut config);
        }
        let clock = Arc::new(ManualClock::starting_now());
        if let Some(t) = self.starts_at {
            clock.set(t);
        }
        let app = App::build(config, clock.clone())
            .await
            .expect("gateway starts");
        let listener = app.bind().await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(app.clone().run(listener, async move {
            let _ = rx.await;
        }));
        TestGateway {
            app,
            addr,
            client: Client::new(&format!("http://{addr}")),
            clock,
            data_dir,
            shutdown: Some(tx),
            task: Some(task),
            _temp: temp,
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The repository's `policies/` tree.
pub fn shipped_policies() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// A private copy of the shipped policy tree that a test may edit; returns (guard, dir).
pub fn copy_policies() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("policies");
    copy_tree(&shipped_policies(), &dir);
    (temp, dir)
}

/// Copies the directory tree `from` to `to` (created).
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The current TOTP code of `secret` at `unix` seconds, from the real `oathtool`.
pub fn oathtool(secret: &str, unix: i64) -> String {
    let output = std::process::Command::new("oathtool")
        .args(["--totp", "-b", secret, "-N", &format!("@{unix}")])
        .output()
        .unwrap_or_else(|e| {
            panic!("oathtool is needed for MFA tests (apt-get install oathtool): {e}")
        });
    assert!(
        output.status.success(),
        "oathtool failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
