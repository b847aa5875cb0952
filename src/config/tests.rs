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
    assert!(p.iter().any(|p| p.message.contains("increase")), "{p:?}");
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
fn upstream_must_be_plain_http_host() {
    for bad in ["https://x:1", "http://x:1/path", "nope"] {
        let text = MINIMAL.replace("http://127.0.0.1:9101", bad);
        assert_eq!(
            keys(&problems(&text)),
            vec!["services[0].upstream"],
            "{bad}"
        );
    }
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
fn audit_retention_is_a_duration_of_at_least_a_day() {
    let config = Config::parse(MINIMAL).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(config.audit.retention, None, "kept forever by default");
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
