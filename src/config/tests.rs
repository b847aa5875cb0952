//! Config parsing: every problem reported at once, each naming its key.

use super::*;

fn problems(text: &str) -> Vec<Problem> {
    match Config::parse(text) {
        Ok(_) => panic!("expected problems for:\n{text}"),
        Err(p) => p,
    }
}

fn keys(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

const MINIMAL: &str = r#"
[[services]]
name = "storage"
upstream = "http://127.0.0.1:9101"
  [[services.routes]]
  method = "GET"
  path = "/objects/*"
  action = "storage:GetObject"
"#;

#[test]
fn shipped_config_is_valid() {
    let config = Config::embedded_default().unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(config.services.len(), 3);
    assert!(config.route_actions().contains(&"storage:GetObject"));
    let compute = config
        .service("compute")
        .unwrap_or_else(|| panic!("compute"));
    assert!(compute.signup_required);
}

#[test]
fn defaults_fill_what_is_left_out() {
    let config = Config::parse(MINIMAL).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.auth.token_ttl, Duration::from_secs(3600));
    assert!(config.accounts.open_signup);
    assert_eq!(config.services[0].timeout, Duration::from_secs(30));
}

#[test]
fn unknown_keys_and_bad_values_are_reported_together() {
    let text = format!(
        "{MINIMAL}\n[server]\nlisten = \"nowhere\"\nlistne = \"x\"\n[auth]\ntoken_ttl = \"forever\"\n"
    );
    let p = problems(&text);
    let k = keys(&p);
    assert!(k.contains(&"server.listen"), "{p:?}");
    assert!(k.contains(&"server.listne"), "{p:?}");
    assert!(k.contains(&"auth.token_ttl"), "{p:?}");
}

#[test]
fn unknown_key_inside_a_route_is_named_by_its_path() {
    let text = MINIMAL.replace("action =", "price = \"1\"\n  action =");
    let p = problems(&text);
    assert_eq!(keys(&p), vec!["services.0.routes.0.price"], "{p:?}");
}

#[test]
fn prices_must_be_decimal_strings() {
    let text = MINIMAL.replace(
        "action = \"storage:GetObject\"",
        "action = \"storage:GetObject\"\n  per_request = \"abc\"",
    );
    let p = problems(&text);
    assert_eq!(keys(&p), vec!["services[0].routes[0].per_request"]);
    let text = MINIMAL.replace(
        "action = \"storage:GetObject\"",
        "action = \"storage:GetObject\"\n  per_request = \"-1\"",
    );
    assert!(problems(&text)[0].message.contains("negative"));
}

#[test]
fn tiers_must_ascend_and_end_unbounded() {
    let text = MINIMAL.replace(
        "action = \"storage:GetObject\"",
        "action = \"storage:GetObject\"\n  per_request_tiers = [ { up_to = 10, price = \"1\" }, { up_to = 5, price = \"1\" } ]",
    );
    let p = problems(&text);
    assert!(p.iter().any(|p| p.message.contains("last tier")), "{p:?}");
    // Billing's own validator (one for config and bills, issue 19).
    assert!(
        p.iter()
            .any(|p| p.message.contains("greater than the previous")),
        "{p:?}"
    );
}

#[test]
fn route_patterns_and_actions_are_checked() {
    let text = MINIMAL
        .replace("/objects/*", "objects/x*")
        .replace("storage:GetObject", "compute:Run");
    let k = keys(&problems(&text)).join(",");
    assert!(k.contains("services[0].routes[0].path"), "{k}");
    assert!(k.contains("services[0].routes[0].action"), "{k}");
}

#[test]
fn upstream_must_be_an_http_or_https_host() {
    for bad in ["ftp://x:1", "http://x:1/path", "https://x:1/?q", "nope"] {
        let text = MINIMAL.replace("http://127.0.0.1:9101", bad);
        assert_eq!(
            keys(&problems(&text)),
            vec!["services[0].upstream"],
            "{bad}"
        );
    }
}

/// O4: `https://` upstreams take `ca_file` and a client pair; plain ones take neither.
#[test]
fn upstream_tls_keys_need_https_and_a_whole_client_pair() {
    let https = MINIMAL.replace("http://127.0.0.1:9101", "https://localhost:9101");
    let with = |text: &str, keys_toml: &str| {
        text.replacen("upstream = ", &format!("{keys_toml}\nupstream = "), 1)
    };
    let ok = with(
        &https,
        "ca_file = \"ca.pem\"\nclient_cert = \"c.pem\"\nclient_key = \"k.pem\"",
    );
    let config = Config::parse(&ok).unwrap_or_else(|p| panic!("{p:?}"));
    let tls = config.services[0]
        .tls
        .clone()
        .expect("https upstream has TLS");
    assert_eq!(tls.ca_file, Some(PathBuf::from("ca.pem")));

    let plain = with(MINIMAL, "ca_file = \"ca.pem\"");
    assert_eq!(keys(&problems(&plain)), vec!["services[0].ca_file"]);

    let half = with(&https, "client_cert = \"c.pem\"");
    assert_eq!(keys(&problems(&half)), vec!["services[0].client_key"]);
}

#[test]
fn postgres_url_must_not_carry_a_password() {
    let text =
        format!("{MINIMAL}\n[store]\nkind = \"postgres\"\nurl = \"postgres://u:secret@h/db\"\n");
    let p = problems(&text);
    assert_eq!(keys(&p), vec!["store.url"]);
    assert!(
        !p[0].message.contains("secret"),
        "never echo secrets: {p:?}"
    );
}

#[test]
fn durations_and_sizes_parse() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
    assert!(parse_duration("1y").is_err());
    assert!(parse_duration("s").is_err());
    assert_eq!(parse_size("10MiB"), Ok(10 << 20));
    assert_eq!(parse_size("64KB"), Ok(64_000));
    assert!(parse_size("99999999999999GiB").is_err());
}

#[test]
fn toml_syntax_errors_are_reported() {
    let p = problems("[server\nlisten=1");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].key, "(file)");
}

#[test]
fn duplicate_service_names_are_refused() {
    let text = format!("{MINIMAL}{MINIMAL}");
    assert_eq!(keys(&problems(&text)), vec!["services[1].name"]);
}

#[test]
fn d5_audit_retention_is_90_days_by_default_and_at_least_a_day() {
    let config = Config::parse(MINIMAL).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(
        config.audit.retention,
        Some(Duration::from_secs(90 * 86_400)),
        "90 days by default, as CloudTrail's event history"
    );
    let config = Config::parse(&format!("[audit]\nretention = \"forever\"\n{MINIMAL}"))
        .unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(config.audit.retention, None, "kept forever when asked");
    let config = Config::parse(&format!("[audit]\nretention = \"90d\"\n{MINIMAL}"))
        .unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(
        config.audit.retention,
        Some(Duration::from_secs(90 * 86_400))
    );
    for bad in ["1h", "ninety"] {
        let p = problems(&format!("[audit]\nretention = \"{bad}\"\n{MINIMAL}"));
        assert_eq!(keys(&p), ["audit.retention"], "{bad}");
    }
    let p = problems(&format!("[audit]\nretain = \"90d\"\n{MINIMAL}"));
    assert_eq!(keys(&p), ["audit.retain"]);
}

#[test]
fn d1_audit_deny_rate_is_20_by_default_and_0_turns_it_off() {
    let config = Config::parse(MINIMAL).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(config.audit.deny_rate, 20);
    let config = Config::parse(&format!("[audit]\ndeny_rate = 0\n{MINIMAL}"))
        .unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(config.audit.deny_rate, 0);
    let p = problems(&format!("[audit]\ndeny_rate = -1\n{MINIMAL}"));
    assert_eq!(keys(&p), ["audit.deny_rate"]);
}

#[test]
fn u4_the_password_queue_limits_have_defaults_and_ranges() {
    let config = Config::parse(MINIMAL).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(config.auth.argon2_queue.capacity, 64);
    assert_eq!(config.auth.argon2_queue.per_address, 8);
    let p = problems(&format!(
        "[auth]\nargon2_queue = 4\nargon2_queue_per_address = 5\n{MINIMAL}"
    ));
    assert_eq!(keys(&p), ["auth.argon2_queue_per_address"]);
    let p = problems(&format!("[auth]\nargon2_queue = 0\n{MINIMAL}"));
    assert_eq!(keys(&p), ["auth.argon2_queue"]);
}

/// Property tests: no input makes config parsing panic, problems are always named, and sizes
/// and durations parse to exactly what they say. `PROPTEST_CASES` raises the case count
/// (docs/hardening.md).
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(256),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// The shipped config with one line replaced by `line` (or dropped).
    fn mutated() -> impl Strategy<Value = String> {
        let lines: Vec<String> = EMBEDDED_DEFAULT.lines().map(str::to_owned).collect();
        let count = lines.len();
        let replacement = prop_oneof![
            Just(String::new()),
            Just("[[services]]".to_owned()),
            Just("[[services.routes]]".to_owned()),
            "[a-z_.]{1,20} = \"[ -~]{0,20}\"",
            "[a-z_]{1,12} = -?[0-9]{1,25}",
            "(timeout|max_body|header_read_timeout|max_header_bytes|per_request|listen|upstream|path|method) = \"[ -~]{0,24}\"",
            "[ -~]{0,40}",
        ];
        (0..count, replacement).prop_map(move |(at, line)| {
            let mut lines = lines.clone();
            if let Some(slot) = lines.get_mut(at) {
                *slot = line;
            }
            lines.join("\n")
        })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn a_mutated_config_parses_or_names_its_problems(text in mutated()) {
            if let Err(problems) = Config::parse(&text) {
                prop_assert!(!problems.is_empty());
                for p in &problems {
                    prop_assert!(!p.key.is_empty());
                }
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "[ -~\n\\[\\]=\"]{0,200}") {
            let _ = Config::parse(&text);
        }

        #[test]
        fn sizes_and_durations_are_exact(n in any::<u64>(), unit in 0usize..7) {
            let (suffix, mult) = [("", 1u64), ("B", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("KB", 1000), ("MB", 1_000_000)]
                .get(unit)
                .copied()
                .unwrap_or(("", 1));
            match (parse_size(&format!("{n}{suffix}")), n.checked_mul(mult)) {
                (Ok(v), Some(expected)) => prop_assert_eq!(v, expected),
                (Err(_), None) => {}
                (got, expected) => prop_assert!(false, "{}{}: {:?} vs {:?}", n, suffix, got, expected),
            }
            let (suffix, secs) = [("s", 1u64), ("m", 60), ("h", 3600), ("d", 86_400)]
                .get(unit % 4)
                .copied()
                .unwrap_or(("s", 1));
            match (parse_duration(&format!("{n}{suffix}")), n.checked_mul(secs)) {
                (Ok(v), Some(expected)) => prop_assert_eq!(v, std::time::Duration::from_secs(expected)),
                (Err(_), None) => {}
                (got, expected) => prop_assert!(false, "{}{}: {:?} vs {:?}", n, suffix, got, expected),
            }
        }
    }
}

#[test]
fn o4_listen_takes_an_array_plain_listen_must_be_loopback_and_tls_needs_cert_and_key() {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:8443\", \"127.0.0.2:8443\"]\nplain_listen = \"127.0.0.1:9090\"\n[server.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n{MINIMAL}"
    );
    let config = Config::parse(&text).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8443");
    assert_eq!(config.server.also_listen.len(), 1);
    assert_eq!(config.server.plain_listen.map(|a| a.port()), Some(9090));
    let tls = config.server.tls.unwrap_or_else(|| panic!("tls"));
    assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
    assert!(tls.client_ca.is_none());

    let text = format!(
        "[server]\nlisten = []\nplain_listen = \"0.0.0.0:9090\"\n[server.tls]\nclient_ca = \"ca.pem\"\n{MINIMAL}"
    );
    let found = problems(&text);
    let keys = keys(&found);
    for key in [
        "server.listen",
        "server.plain_listen",
        "server.tls.cert",
        "server.tls.key",
    ] {
        assert!(keys.contains(&key), "{key} not in {keys:?}");
    }
}

#[test]
fn o2_connection_limits_have_defaults_and_refuse_zero() {
    let config = Config::parse(MINIMAL).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(config.server.body_read_timeout, Duration::from_secs(30));
    assert_eq!(config.server.keepalive_timeout, Duration::from_secs(60));
    assert_eq!(config.server.max_connections, 10_000);
    assert_eq!(config.server.max_connections_per_ip, 256);
    let text = format!(
        "[server]\nbody_read_timeout = \"0s\"\nmax_connections = 0\nmax_connections_per_ip = 0\n{MINIMAL}"
    );
    let found = problems(&text);
    let keys = keys(&found);
    for key in [
        "server.body_read_timeout",
        "server.max_connections",
        "server.max_connections_per_ip",
    ] {
        assert!(keys.contains(&key), "{key} not in {keys:?}");
    }
}
