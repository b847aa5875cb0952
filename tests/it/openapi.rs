//! The API reference (issue 10): `GET /openapi.json` serves `docs/openapi.json`, and the document
//! cannot drift from the gateway. It lists exactly the routes the gateway answers
//! (`api::ENDPOINTS` and `server::pipeline::ENDPOINTS`), each of which is really routed, with
//! the security each really has; `api::ENDPOINTS` lists exactly the dispatcher's match arms; and
//! the error codes the document names are exactly those the sources produce.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate::api;
use tollgate::server::pipeline;

use crate::support::{TestGateway, Upstream};

/// Documented ahead of its handler, which lands from another branch (SPEC D2). It may be in the
/// document while `api::ENDPOINTS` lacks it, but then it must really be unrouted; once the
/// dispatcher answers it, `api::ENDPOINTS` must list it and every check below applies.
const DOCUMENTED_AHEAD: &[(&str, &str)] = &[("GET", "/decisions")];

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

type Endpoint = (String, String);

async fn gateway() -> (Upstream, TestGateway) {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    (upstream, gw)
}

/// `GET /openapi.json`, checked to be public JSON and the document in `docs/`.
async fn fetch_document(gw: &TestGateway) -> Value {
    let r = gw.client.get("/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let served = r.json();
    let on_disk: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("docs/openapi.json")).expect("docs/openapi.json"),
    )
    .expect("docs/openapi.json is JSON");
    assert_eq!(served, on_disk, "the gateway serves docs/openapi.json");
    served
}

/// Every (METHOD, path) operation of the document, with the operation object.
fn operations(doc: &Value) -> BTreeMap<Endpoint, &Value> {
    let paths = doc["paths"].as_object().expect("`paths` is an object");
    let mut ops = BTreeMap::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for (key, op) in item {
            if HTTP_METHODS.contains(&key.as_str()) {
                ops.insert((key.to_uppercase(), path.clone()), op);
            } else {
                assert!(
                    ["parameters", "summary", "description"].contains(&key.as_str()),
                    "unexpected key `{key}` in path item `{path}`"
                );
            }
        }
    }
    ops
}

fn owned(list: &[(&str, &str)]) -> BTreeSet<Endpoint> {
    list.iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect()
}

/// Is `op` served by the gateway: listed by the API dispatcher or the pipeline (`*`: any method)?
fn is_served(op: &Endpoint) -> bool {
    owned(api::ENDPOINTS).contains(op)
        || pipeline::ENDPOINTS
            .iter()
            .any(|(m, p)| *p == op.1 && (*m == "*" || *m == op.0))
}

/// The operations a client calls without a token (SPEC P1: signup, login, token; plus the
/// public keys, health and this document).
fn is_public(op: &Value) -> bool {
    op["security"]
        .as_array()
        .unwrap_or_else(|| panic!("operation without `security`: {op}"))
        .is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_and_routes_agree_both_ways() {
    let (_upstream, gw) = gateway().await;
    let doc = fetch_document(&gw).await;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "an OpenAPI 3.1 document"
    );
    let ops = operations(&doc);
    let api_endpoints = owned(api::ENDPOINTS);
    assert_eq!(
        api_endpoints.len(),
        api::ENDPOINTS.len(),
        "api::ENDPOINTS has duplicates"
    );

    // Document -> gateway: nothing is documented that the gateway does not serve, but for the
    // one endpoint documented ahead of its handler.
    for op in ops.keys() {
        let ahead = owned(DOCUMENTED_AHEAD).contains(op);
        assert!(
            is_served(op) || ahead,
            "{} {} is documented but not in api::ENDPOINTS or pipeline::ENDPOINTS",
            op.0,
            op.1
        );
    }
    // Gateway -> document: everything served is documented.
    for op in &api_endpoints {
        assert!(
            ops.contains_key(op),
            "{} {} is in api::ENDPOINTS but not in docs/openapi.json",
            op.0,
            op.1
        );
    }
    for (method, path) in pipeline::ENDPOINTS {
        let documented = ops
            .keys()
            .any(|(m, p)| p == path && (*method == "*" || m == method));
        assert!(
            documented,
            "{method} {path} is served by the pipeline but not in docs/openapi.json"
        );
    }

    // Each operation is described enough to call it.
    let mut ids = BTreeSet::new();
    for ((method, path), op) in &ops {
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(!id.is_empty(), "{method} {path}: no operationId");
        assert!(ids.insert(id), "{method} {path}: operationId `{id}` twice");
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{method} {path}: no summary"
        );
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses
                .keys()
                .any(|s| s.starts_with('2') || s == "default"),
            "{method} {path}: no success response"
        );
        for param in path_params(path) {
            assert!(
                declares_path_param(&doc, path, op, &param),
                "{method} {path}: path parameter `{param}` not declared"
            );
        }
    }
}

/// The `{name}`s of a path template.
fn path_params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_owned)
        .collect()
}

fn declares_path_param(doc: &Value, path: &str, op: &Value, name: &str) -> bool {
    let declared = |params: &Value| {
        params.as_array().is_some_and(|list| {
            list.iter()
                .map(|p| resolve(doc, p))
                .any(|p| p["in"] == "path" && p["name"] == name)
        })
    };
    declared(&op["parameters"]) || declared(&doc["paths"][path]["parameters"])
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local references: {reference}"));
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("dangling reference {reference}"))
        }
        None => value,
    }
}

/// A concrete path for a template: made-up but well-formed values, so each request reaches its
/// handler (which then refuses it for want of a token, or finds nothing).
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| match segment {
            "{account_id}" => "123456789012",
            "{user}" => "alice",
            "{key_id}" => "TGAKAAAAAAAAAAAAAAAA",
            "{group}" => "developers",
            "{service}" => "storage",
            "{month}" => "2025-01",
            "{handshake_id}" => "h-aaaaaaaaaa",
            "{path}" => "objects/a",
            s if s.starts_with('{') => panic!("no placeholder value for {s} in {template}"),
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Is this the dispatcher's fallthrough, i.e. not routed at all?
fn is_fallthrough(r: &crate::support::client::TestResponse) -> bool {
    r.status == StatusCode::NOT_FOUND && r.error_code() == "NotFound"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_every_endpoint_is_routed_with_its_documented_security() {
    let (_upstream, gw) = gateway().await;
    let doc = fetch_document(&gw).await;
    let ops = operations(&doc);

    // The check can fail: an unrouted path gets the fallthrough (a known path's wrong method
    // gets 405, see below).
    let r = gw.client.get("/accounts/123456789012/nope").await;
    assert!(is_fallthrough(&r), "{}", r.text());

    let mut checked: Vec<Endpoint> = owned(api::ENDPOINTS).into_iter().collect();
    // The pipeline's own, with a route of the shipped `storage` service for service calls.
    for (method, path) in pipeline::ENDPOINTS {
        let method = if *method == "*" { "GET" } else { method };
        checked.push((method.to_owned(), (*path).to_owned()));
    }
    for (method, template) in &checked {
        let path = concrete(template);
        let method_ = Method::from_bytes(method.as_bytes()).expect("method");
        let r = gw.client.send(method_, &path, &[], "").await;
        assert!(
            !is_fallthrough(&r),
            "{method} {template} is listed but not routed ({method} {path} fell through)"
        );
        let op = ops
            .get(&(method.clone(), template.clone()))
            .unwrap_or_else(|| panic!("{method} {template} is not documented"));
        if is_public(op) {
            assert_ne!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {template} is documented as public but wants a token: {}",
                r.text()
            );
        } else {
            assert_eq!(
                (r.status, r.error_code()),
                (StatusCode::UNAUTHORIZED, "MissingToken".to_owned()),
                "{method} {template} is documented as needing a bearer token"
            );
        }
    }

    // Documented ahead of its handler and not listed: it must really be unrouted, so that the
    // branch bringing its handler has to list it in api::ENDPOINTS.
    for (method, template) in owned(DOCUMENTED_AHEAD) {
        if owned(api::ENDPOINTS).contains(&(method.clone(), template.clone())) {
            continue;
        }
        let r = gw
            .client
            .send(
                Method::from_bytes(method.as_bytes()).expect("method"),
                &concrete(&template),
                &[],
                "",
            )
            .await;
        assert!(
            is_fallthrough(&r),
            "{method} {template} is routed now: add it to api::ENDPOINTS ({} {})",
            r.status,
            r.text()
        );
    }
}

/// Issue 22 item 3 (RFC 9110 §15.5.6): every known JSON API and ops path answers a method it
/// does not serve with 405 `MethodNotAllowed` and an `Allow` header listing exactly the methods
/// the document gives that path, before any token is asked for; `/svc/...` keeps F1's 404
/// `NoSuchRoute`, and an unknown path stays 404 `NotFound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue22_an_unsupported_method_on_a_known_path_is_405_with_allow() {
    let (_upstream, gw) = gateway().await;
    let doc = fetch_document(&gw).await;
    let ops = operations(&doc);
    let mut by_path: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (method, path) in ops.keys() {
        by_path.entry(path).or_default().insert(method);
    }
    let mut checked = 0;
    for (template, documented) in &by_path {
        if template.starts_with("/svc/") {
            continue;
        }
        let path = concrete(template);
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD"] {
            if documented.contains(method) {
                continue;
            }
            let r = gw
                .client
                .send(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    &path,
                    &[],
                    "",
                )
                .await;
            assert_eq!(
                r.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {}",
                r.text()
            );
            if method != "HEAD" {
                assert_eq!(r.error_code(), "MethodNotAllowed", "{method} {path}");
            }
            let allow: BTreeSet<&str> = r
                .header("allow")
                .unwrap_or_else(|| panic!("{method} {path}: no Allow header"))
                .split(',')
                .map(str::trim)
                .collect();
            assert_eq!(&allow, documented, "{method} {path}: Allow");
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} method/path pairs checked");

    // Service calls: an unrouted method is F1's 404, nothing forwarded.
    let acme = gw.account("acme").await;
    let r = acme
        .client
        .send(Method::PATCH, "/svc/storage/objects/a", &[], "")
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (StatusCode::NOT_FOUND, "NoSuchRoute"),
        "{}",
        r.text()
    );
    let r = gw.client.send(Method::PATCH, "/org/nope", &[], "").await;
    assert!(is_fallthrough(&r), "{}", r.text());
}

/// Issue 22 item 2: the document is as strict as the server. Each constraint the server
/// enforces is in the document, spelled by the constant of the code that enforces it; and for
/// boundary values on both sides of each, what the document allows the server accepts and what
/// it forbids the server refuses (400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue22_the_document_is_as_strict_as_the_server() {
    use tollgate::auth::PasswordPolicy;
    use tollgate::auth::password_policy::{MAX_PASSWORD_CHARS, MIN_LENGTH_RANGE};
    use tollgate::billing::month::BillingMonth;
    use tollgate::ids::{self, pattern};

    let (_upstream, gw) = gateway().await;
    let doc = fetch_document(&gw).await;
    let schema = |pointer: &str| -> Value {
        let value = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("no {pointer} in the document"));
        resolve(&doc, value).clone()
    };
    let param = |path: &str, method: &str, name: &str| -> Value {
        let op = &doc["paths"][path][method];
        let params = op["parameters"].as_array().into_iter().flatten().chain(
            doc["paths"][path]["parameters"]
                .as_array()
                .into_iter()
                .flatten(),
        );
        params
            .map(|p| resolve(&doc, p))
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path}: no parameter `{name}`"))["schema"]
            .clone()
    };
    let default_password = PasswordPolicy::default();
    let password_pattern = default_password
        .pattern()
        .expect("the default requires classes");

    // 1. The document says what the code enforces, in the code's own words.
    let expect_pattern = |where_: &str, schema: &Value, pattern: &str| {
        assert_eq!(
            schema["pattern"].as_str(),
            Some(pattern),
            "{where_}: {schema}"
        );
    };
    for name in ["User", "Group"] {
        expect_pattern(
            name,
            &schema(&format!("/components/parameters/{name}/schema")),
            pattern::NAME,
        );
    }
    for (name, pattern) in [
        ("AccountId", pattern::ACCOUNT_ID),
        ("MemberAccountId", pattern::ACCOUNT_ID),
        ("HandshakeId", pattern::HANDSHAKE_ID),
        ("KeyId", tollgate::auth::access_key::ACCESS_KEY_ID_PATTERN),
        ("Service", tollgate::config::SERVICE_NAME_PATTERN),
        ("Month", BillingMonth::PATTERN),
    ] {
        expect_pattern(
            name,
            &schema(&format!("/components/parameters/{name}/schema")),
            pattern,
        );
    }
    for body in ["SignupRequest", "CreateAccountRequest"] {
        let props = schema(&format!("/components/schemas/{body}/properties"));
        expect_pattern(body, &props["name"], pattern::ACCOUNT_NAME);
        expect_pattern(body, &props["email"], pattern::EMAIL);
        assert_eq!(props["email"]["maxLength"], ids::MAX_EMAIL, "{body}.email");
        expect_pattern(body, &props["owner_user"], pattern::NAME);
    }
    expect_pattern(
        "CreateUserRequest.user",
        &schema("/components/schemas/CreateUserRequest/properties/user"),
        pattern::NAME,
    );
    expect_pattern(
        "CreateGroupRequest.group",
        &schema("/components/schemas/CreateGroupRequest/properties/group"),
        pattern::NAME,
    );
    for pointer in [
        "/components/schemas/SignupRequest/properties/owner_password",
        "/components/schemas/CreateAccountRequest/properties/owner_password",
        "/components/schemas/CreateUserRequest/properties/password",
        "/components/schemas/ChangePasswordRequest/properties/new_password",
    ] {
        let password = schema(pointer);
        expect_pattern(pointer, &password, &password_pattern);
        assert_eq!(
            password["minLength"],
            default_password.params().min_length,
            "{pointer}"
        );
        assert_eq!(password["maxLength"], MAX_PASSWORD_CHARS, "{pointer}");
    }
    let policy = schema("/components/schemas/PasswordPolicy/properties");
    assert_eq!(policy["min_length"]["minimum"], *MIN_LENGTH_RANGE.start());
    assert_eq!(policy["min_length"]["maximum"], *MIN_LENGTH_RANGE.end());
    let decisions = |name: &str| param("/decisions", "get", name);
    expect_pattern(
        "cursor",
        &decisions("cursor"),
        tollgate::journal::CURSOR_PATTERN,
    );
    expect_pattern(
        "decision",
        &decisions("decision"),
        tollgate::api::decisions::DECISION_PATTERN,
    );
    expect_pattern("user", &decisions("user"), pattern::NAME);
    assert_eq!(
        decisions("action")["maxLength"],
        tollgate::api::decisions::MAX_ACTION
    );
    assert_eq!(decisions("limit")["maximum"], tollgate::journal::MAX_LIMIT);
    for name in ["since", "until"] {
        let any_of = decisions(name)["anyOf"].clone();
        assert!(
            any_of.as_array().is_some_and(|branches| branches
                .iter()
                .any(|b| b["pattern"] == tollgate::api::decisions::AGE_PATTERN)
                && branches.iter().any(|b| b["format"] == "date-time")),
            "{name}: {any_of}"
        );
    }

    // 2. Boundary values: the document's verdict is the server's.
    let acme = gw.account("acme").await;
    let signup = |name: String, email: String, owner: String, password: String| {
        let client = gw.client.clone();
        async move {
            client
                .post_json(
                    "/accounts",
                    json!({"name": name, "email": email, "owner_user": owner, "owner_password": password}),
                )
                .await
        }
    };
    let props = schema("/components/schemas/SignupRequest/properties");
    let ok = |s: &str| s.to_owned();
    let mut cases: Vec<(&str, String)> = Vec::new();
    for name in [
        ok("a"),
        "n".repeat(64),
        "n".repeat(65),
        ok(""),
        ok(" acme"),
        ok("acme\u{a0}"),
        ok("ac me"),
        ok("ac\u{7}me"),
        ok("Ünïcödé Ltd."),
    ] {
        cases.push(("name", name));
    }
    for email in [
        ok("a@b"),
        ok(""),
        ok("@example.com"),
        ok("owner@"),
        ok("a@b@c"),
        ok(" a@example.com"),
        ok("a b@example.com"),
        format!("{}@example.com", "e".repeat(254 - 12)),
        format!("{}@example.com", "e".repeat(255 - 12)),
    ] {
        cases.push(("email", email));
    }
    for owner in [
        ok("o"),
        ok(""),
        "u".repeat(64),
        "u".repeat(65),
        ok("a/b"),
        ok("a+b=c,d.e@f_g-h"),
    ] {
        cases.push(("owner_user", owner));
    }
    for password in [
        ok("Aa1!Aa1!"),
        ok("!1aAxxxx"),
        ok("Aa1!Aa1"),
        ok("aa1!aa1!"),
        ok("AA1!AA1!"),
        ok("Aa!!Aa!!"),
        ok("Aa11Aa11"),
        ok("Aa1 Aa1 Aa1"),
        format!("Aa1!{}", "x".repeat(124)),
        format!("Aa1!{}", "x".repeat(125)),
        format!("Aa1!{}", "😀".repeat(124)),
        ok("Aa1!\nnewline"),
    ] {
        cases.push(("owner_password", password));
    }
    let mut n = 0;
    for (field, value) in cases {
        n += 1;
        let mut body = [
            ("name", format!("acct{n}")),
            ("email", format!("owner{n}@example.com")),
            ("owner_user", ok("owner")),
            (
                "owner_password",
                ok(crate::support::gateway::OWNER_PASSWORD),
            ),
        ];
        for (k, v) in &mut body {
            if *k == field {
                v.clone_from(&value);
            }
        }
        let [name, email, owner, password] = body.map(|(_, v)| v);
        let allowed = allows(&props[field], &value);
        let r = signup(name, email, owner, password).await;
        agree(
            allowed,
            &r,
            &format!("POST /accounts `{field}` = {value:?}"),
        );
    }

    let users = format!("/accounts/{}/users", acme.id);
    for user in [ok(""), ok("x"), "u".repeat(65), ok("a b")] {
        let allowed = allows(
            &schema("/components/schemas/CreateUserRequest/properties/user"),
            &user,
        );
        let r = acme
            .client
            .post_json(&users, json!({"user": user, "password": "Aa1!Aa1!"}))
            .await;
        agree(allowed, &r, &format!("POST {users} `user` = {user:?}"));
    }
    let groups = format!("/accounts/{}/groups", acme.id);
    for group in [ok(""), ok("ops"), "g".repeat(65), ok("no spaces")] {
        let allowed = allows(
            &schema("/components/schemas/CreateGroupRequest/properties/group"),
            &group,
        );
        let r = acme
            .client
            .post_json(&groups, json!({"group": group}))
            .await;
        agree(allowed, &r, &format!("POST {groups} `group` = {group:?}"));
    }

    let month = schema("/components/parameters/Month/schema");
    for value in [
        "1970-01", "9999-12", "2025-04", "1969-12", "0000-01", "2481-75", "2025-00", "2025-4",
    ] {
        let r = acme.client.get(&format!("/billing/bills/{value}")).await;
        agree(
            allows(&month, value),
            &r,
            &format!("GET /billing/bills/{value}"),
        );
    }

    // `integer` in JSON Schema: 12.0 is one, 12.5 is not.
    let policy_path = format!("/accounts/{}/password-policy", acme.id);
    for (min_length, allowed) in [(json!(12), true), (json!(12.0), true), (json!(12.5), false)] {
        let r = acme
            .client
            .put_json(
                &policy_path,
                json!({"min_length": min_length, "require_uppercase": true, "require_lowercase": true,
                       "require_digit": true, "require_symbol": true, "reuse_prevention": 3.0}),
            )
            .await;
        agree(
            allowed,
            &r,
            &format!("PUT {policy_path} min_length {min_length}"),
        );
    }

    let cursor = decisions("cursor");
    let decision = decisions("decision");
    let age = regex::Regex::new(tollgate::api::decisions::AGE_PATTERN).unwrap();
    let query_cases: Vec<(String, bool)> = vec![
        ("until=".into(), false),
        ("since=".into(), false),
        ("since=24h".into(), age.is_match("24h")),
        (
            "since=99999999999999999999999999999999999999999d".into(),
            true,
        ),
        ("since=24x".into(), age.is_match("24x")),
        ("since=2025-01-31T12:00:00Z".into(), true),
        ("since=2025-02-30T12:00:00Z".into(), false),
        ("since=1h&until=2h".into(), true),
        ("cursor=d1.5".into(), allows(&cursor, "d1.5")),
        ("cursor=d1.0".into(), allows(&cursor, "d1.0")),
        ("cursor=ZDEuNQ".into(), allows(&cursor, "ZDEuNQ")),
        ("cursor=".into(), allows(&cursor, "")),
        ("decision=deny".into(), allows(&decision, "deny")),
        ("decision=maybe".into(), allows(&decision, "maybe")),
        ("action=".into(), false),
        (format!("action={}", "a".repeat(128)), true),
        (format!("action={}", "a".repeat(129)), false),
    ];
    for (query, allowed) in query_cases {
        let r = acme.client.get(&format!("/decisions?{query}")).await;
        agree(allowed, &r, &format!("GET /decisions?{query}"));
    }
    // An empty interval is an empty page, not an error: the document cannot relate two
    // parameters, so the server does not either.
    let r = acme.client.get("/decisions?since=1h&until=2h").await;
    assert_eq!(r.json()["decisions"], json!([]), "{}", r.text());
}

/// Whether a string schema (pattern, lengths in characters) admits `value`.
fn allows(schema: &Value, value: &str) -> bool {
    let chars = value.chars().count() as u64;
    schema["pattern"].as_str().is_none_or(|p| {
        regex::Regex::new(p)
            .unwrap_or_else(|e| panic!("pattern {p}: {e}"))
            .is_match(value)
    }) && schema["minLength"].as_u64().is_none_or(|min| chars >= min)
        && schema["maxLength"].as_u64().is_none_or(|max| chars <= max)
}

/// The server agrees with the document: what it forbids is a 400, and what it allows is not
/// (it may still be a 404 for a month not yet begun, say, but never refused as malformed).
fn agree(allowed: bool, r: &crate::support::client::TestResponse, what: &str) {
    if allowed {
        assert!(
            r.status != StatusCode::BAD_REQUEST && !r.status.is_server_error(),
            "{what}: the document allows it, the server says {} {}",
            r.status,
            r.text()
        );
    } else {
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{what}: the document forbids it: {}",
            r.text()
        );
    }
}

/// `api::ENDPOINTS` lists exactly the dispatcher's match arms, read from `src/api.rs`: a new arm
/// without its entry (and so without its documentation) fails here.
#[test]
fn openapi_endpoints_list_matches_the_dispatcher_arms() {
    let source = std::fs::read_to_string(repo().join("src/api.rs")).expect("src/api.rs");
    let flat: String = source.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut arms = BTreeSet::new();
    for (_, rest) in flat
        .match_indices("(Method::")
        .map(|(i, _)| flat.split_at(i))
    {
        let rest = &rest["(Method::".len()..];
        let (method, rest) = rest.split_once(", [").expect("an arm `(Method::X, [..])`");
        let (segments, _) = rest
            .split_once("])")
            .expect("an arm's segments end with `])`");
        let path: String = segments
            .split(", ")
            .map(
                |s| match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                    Some(literal) => format!("/{literal}"),
                    None => "/{}".to_owned(),
                },
            )
            .collect();
        assert!(
            arms.insert((method.to_owned(), path.clone())),
            "{method} {path}: two arms"
        );
    }
    let listed: BTreeSet<Endpoint> = api::ENDPOINTS
        .iter()
        .map(|(m, p)| ((*m).to_owned(), erase_placeholders(p)))
        .collect();
    assert!(arms.len() > 30, "the arms were not found in src/api.rs");
    assert_eq!(
        arms.difference(&listed).collect::<Vec<_>>(),
        Vec::<&Endpoint>::new(),
        "match arms missing from api::ENDPOINTS"
    );
    assert_eq!(
        listed.difference(&arms).collect::<Vec<_>>(),
        Vec::<&Endpoint>::new(),
        "api::ENDPOINTS entries without a match arm"
    );
}

fn erase_placeholders(path: &str) -> String {
    path.split('/')
        .skip(1)
        .map(|s| {
            if s.starts_with('{') {
                "/{}".to_owned()
            } else {
                format!("/{s}")
            }
        })
        .collect()
}

/// The document invents no error code, and leaves none out: the codes it names are exactly the
/// codes the sources give error responses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_error_codes_are_the_ones_the_sources_produce() {
    let (_upstream, gw) = gateway().await;
    let doc = fetch_document(&gw).await;

    let mut documented = BTreeSet::new();
    collect_codes(&doc, &mut documented);
    assert!(documented.len() > 40, "few codes found: {documented:?}");

    let sources = source_files(&repo().join("src"));
    let text: String = sources
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("source"))
        .collect::<Vec<_>>()
        .join("\n");
    let invented: Vec<&String> = documented
        .iter()
        .filter(|code| !text.contains(&format!("\"{code}\"")))
        .collect();
    assert!(
        invented.is_empty(),
        "docs/openapi.json names codes no source file has as a string literal: {invented:?}"
    );

    let produced = produced_codes(&text);
    assert!(produced.len() > 40, "few codes found in src/: {produced:?}");
    let undocumented: Vec<&String> = produced.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "codes the sources produce but docs/openapi.json does not list: {undocumented:?}"
    );
}

/// Every code in `x-error-codes` lists and in example error bodies; each example's code is one
/// its response lists.
fn collect_codes(value: &Value, codes: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(list) = map.get("x-error-codes") {
                let list: Vec<String> = list
                    .as_array()
                    .expect("x-error-codes is an array")
                    .iter()
                    .map(|c| c.as_str().expect("a code is a string").to_owned())
                    .collect();
                for media in map
                    .get("content")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flat_map(|c| c.values())
                {
                    if let Some(code) = media["example"]["error"]["code"].as_str() {
                        assert!(
                            list.iter().any(|c| c == code),
                            "example code `{code}` is not among its response's {list:?}"
                        );
                    }
                }
                codes.extend(list);
            }
            if let Some(code) = map
                .get("error")
                .and_then(|e| e.get("code"))
                .and_then(Value::as_str)
            {
                codes.insert(code.to_owned());
            }
            for v in map.values() {
                collect_codes(v, codes);
            }
        }
        Value::Array(items) => {
            for v in items {
                collect_codes(v, codes);
            }
        }
        _ => {}
    }
}

/// The codes in `src/` given to error responses: `StatusCode::X, "Code"` (a `Rejection::new` or
/// the organization errors' table), `bad_request("Code"`, `not_found("Code"` and
/// `code: "Code"` (bodies built by hand).
fn produced_codes(text: &str) -> BTreeSet<String> {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut codes = BTreeSet::new();
    let literal_after = |rest: &str| -> Option<String> {
        let rest = rest.trim_start().strip_prefix('"')?;
        let (code, _) = rest.split_once('"')?;
        let pascal = code.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && code.chars().all(|c| c.is_ascii_alphanumeric());
        pascal.then(|| code.to_owned())
    };
    for (i, _) in flat.match_indices("StatusCode::") {
        let rest = &flat[i + "StatusCode::".len()..];
        let ident_end = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(rest.len());
        if let Some(rest) = rest[ident_end..].strip_prefix(", ") {
            codes.extend(literal_after(rest));
        }
    }
    for prefix in ["bad_request(", "not_found(", "code: "] {
        for (i, _) in flat.match_indices(prefix) {
            codes.extend(literal_after(&flat[i + prefix.len()..]));
        }
    }
    codes
}

/// The `.rs` files under `dir`, without unit-test files (`tests.rs`, `*_tests.rs`): a code only
/// a test mentions is not one the gateway produces.
fn source_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(source_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if name != "tests" && !name.ends_with("_tests") {
                files.push(path);
            }
        }
    }
    files
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
