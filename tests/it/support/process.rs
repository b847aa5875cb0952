//! The real `tollgate serve` as a child process, for tests that must kill it (SIGKILL), run it as
//! another user, or read everything it logs. Its config is the shipped one with the listen
//! address on port 0, the data and policy dirs given, and every service pointed at `upstream`.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::binary;
use super::gateway::shipped_policies;

pub struct Process {
    pub child: Child,
    pub url: String,
    /// Everything the process wrote to stdout and stderr so far.
    pub output: Arc<Mutex<String>>,
}

/// Writes `dir/tollgate.toml` for `data_dir`, `policies` and `upstream`; returns its path.
pub fn write_config(dir: &Path, data_dir: &Path, policies: &Path, upstream: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/tollgate.toml")).expect("config");
    let mut config = super::backend::with_store(&shipped, data_dir)
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "dir = \"policies\"",
            &format!("dir = {:?}", policies.display().to_string()),
        );
    for port in ["9101", "9102", "9103"] {
        config = config.replace(
            &format!("\"http://127.0.0.1:{port}\""),
            &format!("{upstream:?}"),
        );
    }
    assert!(config.contains("127.0.0.1:0"), "listen address replaced");
    assert!(config.contains(upstream), "upstreams replaced");
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

impl Process {
    /// `tollgate serve --config CONFIG`, optionally wrapped (e.g. `setpriv --reuid ...`).
    pub fn start(config: &Path, wrapper: &[&str]) -> Self {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        command
            .args(["serve", "--config"])
            .arg(config)
            .current_dir(config.parent().expect("config dir"))
            .env("TOLLGATE_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Self::spawn(command)
    }

    pub fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().expect("spawn tollgate");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("tollgate: listening on ") {
                    let _ = tx.send(url.to_owned());
                }
                let mut out = out.lock();
                out.push_str(&line);
                out.push('\n');
            }
        });
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut out = out.lock();
                out.push_str(&line);
                out.push('\n');
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no listening line; output:\n{}", output.lock()));
        Self { child, url, output }
    }

    /// SIGKILL: no drain, no flush, nothing.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.child.wait().expect("wait")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped policy tree (read-only use).
pub fn policies() -> PathBuf {
    shipped_policies()
}
