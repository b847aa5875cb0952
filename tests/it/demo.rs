//! SPEC O1 and the README's first command: `tollgate demo` starts, and the walkthrough it prints
//! works command by command (the script checks every step's status code), and a second start
//! reuses the demo's data.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::binary;

struct Demo {
    child: std::process::Child,
    url: String,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_demo(cwd: &std::path::Path, fresh: bool) -> Demo {
    start_demo_with(cwd, if fresh { &["--fresh"] } else { &[] }).0
}

/// Starts the demo with `extra` arguments; returns it and every line it printed up to the
/// listening line.
fn start_demo_with(cwd: &std::path::Path, extra: &[&str]) -> (Demo, Vec<String>) {
    let mut command = Command::new(binary());
    command
        .args(["demo", "--listen", "127.0.0.1:0"])
        .args(extra);
    let mut child = command
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let url = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the demo prints where it listens");
        lines.push(line.clone());
        if let Some(url) = line.strip_prefix("tollgate: listening on ") {
            break url.to_owned();
        }
    };
    // The lines right after the address (the TLS hint among them).
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
        lines.push(line);
    }
    (Demo { child, url }, lines)
}

fn run_walkthrough(cwd: &std::path::Path, url: &str) -> std::process::Output {
    Command::new("bash")
        .arg("data/demo/walkthrough.sh")
        .env("GW", url)
        .env("TOLLGATE", binary())
        .current_dir(cwd)
        .output()
        .expect("run the walkthrough")
}

#[test]
fn o1_the_demo_walkthrough_works_step_by_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = start_demo(dir.path(), true);
    let output = run_walkthrough(dir.path(), &demo.url);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "walkthrough failed:\n{stdout}\n{stderr}"
    );
    // The story the walkthrough tells, as the gateway answered it.
    assert!(
        stdout.contains("\"feature_set\":\"CONSOLIDATED_BILLING\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"status\":\"inactive\""),
        "guardrail shown inactive: {stdout}"
    );
    assert!(
        stdout.contains("\"denied_by\":\"organization\""),
        "guardrail binds after the switch: {stdout}"
    );
    assert!(
        stdout.contains("\"payer_account_id\""),
        "the consolidated bill: {stdout}"
    );
    assert!(dir.path().join("data/demo/demo.json").exists());
}

#[test]
fn o1_the_demo_reuses_its_data_on_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = start_demo(dir.path(), true);
    drop(first);
    let before =
        std::fs::read_to_string(dir.path().join("data/demo/demo.json")).expect("demo.json");
    let second = start_demo(dir.path(), false);
    let after = std::fs::read_to_string(dir.path().join("data/demo/demo.json")).expect("demo.json");
    assert_eq!(before, after, "the same organization and credentials");
    let client = reqwest_free_get(&format!("{}/healthz", second.url));
    assert!(client.contains("\"ok\""), "{client}");
}

/// A tiny blocking GET over a raw socket (the demo test needs no runtime).
fn reqwest_free_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".to_owned()));
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}

/// Issue 16 item 16: the walkthrough holds the payer's password and TOTP secret, so it is
/// 0600 like the rest of the data dir, also when an older start left it world-readable.
#[test]
fn o1_the_demo_walkthrough_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("data/demo/walkthrough.sh");
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .expect("walkthrough.sh exists")
            .permissions()
            .mode()
            & 0o777
    };
    let first = start_demo(dir.path(), true);
    assert_eq!(mode(&script), 0o600, "a fresh demo writes it 0600");
    drop(first);
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let _second = start_demo(dir.path(), false);
    assert_eq!(
        mode(&script),
        0o600,
        "a restart narrows an older, wider file"
    );
}

/// Issue 20 item 1 (SPEC O4): `tollgate demo --tls` makes its own CA and pair, listens on
/// HTTPS, prints the `curl --cacert` line that works, and its walkthrough runs over TLS.
#[test]
fn o4_the_demo_with_tls_prints_a_curl_cacert_line_that_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (demo, lines) = start_demo_with(dir.path(), &["--fresh", "--tls"]);
    assert!(demo.url.starts_with("https://localhost:"), "{}", demo.url);
    let hint = lines
        .iter()
        .find_map(|l| {
            l.split_once("trust it with: ")
                .map(|(_, cmd)| cmd.to_owned())
        })
        .unwrap_or_else(|| panic!("no curl --cacert line in:\n{}", lines.join("\n")));
    assert!(hint.starts_with("curl --cacert "), "{hint}");
    let output = Command::new("bash")
        .args(["-c", &format!("{hint} -sS")])
        .current_dir(dir.path())
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && body.contains("\"ok\""),
        "{body}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Without the CA, curl refuses the demo's certificate: it is not a public one.
    let refused = Command::new("curl")
        .args(["-sS", &format!("{}/healthz", demo.url)])
        .output()
        .expect("run curl");
    assert!(
        !refused.status.success(),
        "curl trusted the demo CA unasked"
    );
    let output = run_walkthrough(dir.path(), &demo.url);
    assert!(
        output.status.success(),
        "walkthrough over TLS failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
