//! The real binary with bad configuration files: every problem is reported at once, naming its
//! key, and the exit code is 64. And with a good one it serves and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Client, binary};

const GOOD: &str = include_str!("../../config/tollgate.toml");

fn run_with(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, config).expect("write config");
    let output = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .expect("run tollgate");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_rejected(config: &str, expected_keys: &[&str]) {
    let (code, stderr) = run_with(config);
    assert_eq!(code, 64, "exit code; stderr:\n{stderr}");
    for key in expected_keys {
        assert!(
            stderr.contains(key),
            "stderr should name `{key}`:\n{stderr}"
        );
    }
}

#[test]
fn unknown_key_is_named() {
    assert_rejected(
        &GOOD.replace("[server]", "[server]\nlisten_adress = \"x\""),
        &["server.listen_adress", "unknown key"],
    );
}

#[test]
fn bad_duration_is_named() {
    assert_rejected(
        &GOOD.replace("token_ttl = \"1h\"", "token_ttl = \"an hour\""),
        &["auth.token_ttl"],
    );
}

#[test]
fn bad_listen_address_is_named() {
    assert_rejected(
        &GOOD.replace("listen = \"127.0.0.1:8080\"", "listen = \"localhost\""),
        &["server.listen"],
    );
}

#[test]
fn bad_price_is_named() {
    assert_rejected(
        &GOOD.replace("per_request = \"0.0004\"", "per_request = \"4e-4\""),
        &["services[0].routes[1].per_request"],
    );
}

#[test]
fn bad_size_is_named() {
    assert_rejected(
        &GOOD.replace("max_body = \"10MiB\"", "max_body = \"10 megs\""),
        &["services[0].routes[2].max_body"],
    );
}

#[test]
fn bad_route_pattern_is_named() {
    assert_rejected(
        &GOOD.replace(
            "path = \"/cases\"\n  action = \"support:CreateCase\"",
            "path = \"cases*\"\n  action = \"support:CreateCase\"",
        ),
        &["services[1].routes[0].path"],
    );
}

#[test]
fn bad_store_kind_is_named() {
    assert_rejected(
        &GOOD.replace("kind = \"sqlite\"", "kind = \"mysql\""),
        &["store.kind"],
    );
}

#[test]
fn several_problems_are_reported_together() {
    let config = GOOD
        .replace("[server]", "[server]\nbogus = 1")
        .replace("token_ttl = \"1h\"", "token_ttl = \"1y\"")
        .replace(
            "upstream = \"http://127.0.0.1:9101\"",
            "upstream = \"ftp://x\"",
        );
    assert_rejected(
        &config,
        &[
            "3 problem(s)",
            "server.bogus",
            "auth.token_ttl",
            "services[0].upstream",
        ],
    );
}

#[test]
fn toml_syntax_error_is_reported() {
    assert_rejected("[server\nlisten = ", &["(file)"]);
}

#[test]
fn missing_file_is_reported() {
    let output = Command::new(binary())
        .args(["serve", "--config", "/nonexistent/tollgate.toml"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/tollgate.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o1_serve_runs_the_shipped_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let config = GOOD
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "dir = \"policies\"",
            &format!("dir = {:?}", policies.display().to_string()),
        );
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, config).expect("write");
    let mut child = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep reading to the end, so the gateway never writes into a closed pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("tollgate: listening on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let line = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
        .await
        .expect("reader")
        .expect("listening line");
    let client = Client::new(&line);
    assert_eq!(client.get("/healthz").await.status, http::StatusCode::OK);
    assert!(
        dir.path().join("data/tollgate.db").exists(),
        "the store is created on first start"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("exits after SIGTERM")
    .expect("join")
    .expect("wait");
    assert_eq!(exit.code(), Some(0));
}

/// Issue 17, "one action, several routes": a bill line is per action, so two routes naming one
/// action must price it the same; different prices are refused naming both routes.
#[test]
fn m3_one_action_on_two_routes_with_different_prices_is_refused_naming_both() {
    let config = GOOD.replace(
        "  [[services.routes]]\n  method = \"DELETE\"",
        "  [[services.routes]]\n  method = \"HEAD\"\n  path = \"/objects/*\"\n  action = \"storage:GetObject\"\n  per_request = \"0.0001\"\n\n  [[services.routes]]\n  method = \"DELETE\"",
    );
    assert_ne!(config, GOOD, "the replacement applied");
    assert_rejected(
        &config,
        &[
            "services[0].routes[3]",
            "services[0].routes[1]",
            "storage:GetObject",
        ],
    );
    // The same prices on both routes are fine.
    let same = GOOD.replace(
        "  [[services.routes]]\n  method = \"DELETE\"",
        "  [[services.routes]]\n  method = \"HEAD\"\n  path = \"/objects/*\"\n  action = \"storage:GetObject\"\n  per_request = \"0.0004\"\n  per_gb_out = \"0.09\"\n\n  [[services.routes]]\n  method = \"DELETE\"",
    );
    assert!(tollgate::config::Config::parse(&same).is_ok());
}

#[test]
fn o4_upstream_tls_keys_on_a_plain_upstream_or_half_a_client_pair_are_named() {
    assert_rejected(
        &GOOD.replace(
            "upstream = \"http://127.0.0.1:9101\"",
            "upstream = \"http://127.0.0.1:9101\"\nca_file = \"ca.pem\"",
        ),
        &["ca_file", "https://"],
    );
    assert_rejected(
        &GOOD.replace(
            "upstream = \"http://127.0.0.1:9101\"",
            "upstream = \"https://127.0.0.1:9101\"\nclient_cert = \"gw.crt\"",
        ),
        &["client_key", "mutual TLS"],
    );
}

#[test]
fn o4_an_unreadable_upstream_ca_file_stops_the_start_naming_service_and_file() {
    let policies = format!("dir = \"{}/policies\"", env!("CARGO_MANIFEST_DIR"));
    let (code, stderr) = run_with(&GOOD.replace("dir = \"policies\"", &policies).replace(
        "upstream = \"http://127.0.0.1:9101\"",
        "upstream = \"https://127.0.0.1:9101\"\nca_file = \"missing-ca.pem\"",
    ));
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("missing-ca.pem"), "{stderr}");
    assert!(stderr.contains("service `"), "{stderr}");
}
