//! SPEC F1–F4: routing, path tricks, header hygiene, streaming, body caps, upstream failures,
//! and graceful drain.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::support::client::raw;
use crate::support::upstream::closed_port;
use crate::support::{Account, TestGateway, Upstream};

/// A gateway in front of a recording upstream, and a signed-up account whose owner may call
/// every service.
async fn gateway() -> (TestGateway, Upstream, Account) {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url()).start().await;
    let account = gw.account("acme").await;
    (gw, upstream, account)
}

fn auth_header(account: &Account) -> String {
    format!(
        "Authorization: Bearer {}\r\n",
        account.client.token().expect("token")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_forwards_path_and_query_to_the_upstream() {
    let (_gw, upstream, acme) = gateway().await;
    let r = acme
        .client
        .get("/svc/storage/objects/photos/cat.jpg?version=3&x=%20y")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = upstream.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/objects/photos/cat.jpg?version=3&x=%20y");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_a_path_without_a_route_is_404_and_not_forwarded() {
    let (_gw, upstream, acme) = gateway().await;
    let r = acme.client.get("/svc/storage/buckets/x").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "NoSuchRoute");
    let r = acme
        .client
        .send(Method::POST, "/svc/storage/objects/a", &[], "x")
        .await;
    assert_eq!(r.error_code(), "NoSuchRoute", "method is part of the route");
    let r = acme.client.get("/svc/nosuch/objects/a").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error_code(), "NoSuchService");
    assert_eq!(upstream.count(), 0, "nothing may be forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_normalisation_tricks_are_400_before_routing() {
    let (gw, upstream, _acme) = gateway().await;
    let addr = gw.addr.to_string();
    let tricks = [
        "/svc/storage/objects/../../admin",
        "/svc/storage/objects/./a",
        "/svc/storage/objects/%2e%2e/a",
        "/svc/storage/objects%2fa",
        "/svc/storage/objects/a%2Fb",
        "/svc/storage//objects/a",
        "/svc/storage/objects/a%5cb",
        "/svc/storage/objects/a\\b",
        "/svc/storage/objects/a%00",
        "/svc/storage/objects/%zz",
        "/svc/storage/objects/%ff%fe",
        "/svc/../svc/storage/objects/a",
    ];
    for trick in tricks {
        let request = format!("GET {trick} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let response = raw(&addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            response.starts_with("HTTP/1.1 400"),
            "{trick} gave: {response}"
        );
        assert!(
            response.contains("InvalidPath")
                || response.contains("InvalidTarget")
                || !response.contains("{"),
            "{trick}: {response}"
        );
    }
    assert_eq!(upstream.count(), 0, "no trick may reach the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_absolute_form_targets_are_refused() {
    let (gw, upstream, _acme) = gateway().await;
    let request = "GET http://evil.example/svc/storage/objects/a HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n";
    let response = raw(
        &gw.addr.to_string(),
        request.as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("InvalidTarget"), "{response}");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_hop_by_hop_authorization_and_spoofed_headers_are_removed() {
    let (_gw, upstream, acme) = gateway().await;
    let r = acme
        .client
        .send(
            Method::GET,
            "/svc/storage/objects/a",
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-host", "evil.example"),
                ("forwarded", "for=6.6.6.6"),
                ("x-tollgate-account", "999999999999"),
                ("x-tollgate-identity", "forged"),
                ("connection", "x-private"),
                ("x-private", "secret"),
                ("x-request-id", "client-chosen-id.1"),
                ("accept", "application/json"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = upstream.last();
    let h = |name: &str| {
        seen.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(h("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(h("x-forwarded-proto").as_deref(), Some("http"));
    assert_ne!(h("x-forwarded-host").as_deref(), Some("evil.example"));
    assert_eq!(h("forwarded"), None);
    assert_eq!(
        h("authorization"),
        None,
        "the caller's token never reaches an upstream"
    );
    assert_eq!(h("x-private"), None);
    assert_ne!(h("x-tollgate-account").as_deref(), Some("999999999999"));
    assert_ne!(h("x-tollgate-identity").as_deref(), Some("forged"));
    assert_eq!(h("accept").as_deref(), Some("application/json"));
    assert_ne!(
        h("x-request-id").as_deref(),
        Some("client-chosen-id.1"),
        "an untrusted client's id is replaced (f2_a_client_request_id_is_recorded_...)"
    );
    assert_eq!(h("x-request-id").as_deref(), r.header("x-request-id"));
    // The upstream's own hop-by-hop headers do not reach the client.
    assert_eq!(r.header("x-upstream-hop"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_malformed_request_ids_are_replaced() {
    let (_gw, upstream, acme) = gateway().await;
    let long = "a".repeat(300);
    for bad in ["has space", "semi;colon", long.as_str()] {
        let r = acme
            .client
            .send(
                Method::GET,
                "/svc/storage/objects/a",
                &[("x-request-id", bad)],
                Bytes::new(),
            )
            .await;
        let id = r.header("x-request-id").expect("request id").to_owned();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 32);
        let seen = upstream.last();
        assert_eq!(
            seen.headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            Some(id.as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_trusted_proxies_extend_the_forwarding_chain() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .tweak(|c| c.server.trusted_proxies = vec!["127.0.0.0/8".parse().expect("net")])
        .start()
        .await;
    let acme = gw.account("acme").await;
    let r = acme
        .client
        .send(
            Method::GET,
            "/svc/storage/objects/a",
            &[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(
        seen.headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok()),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(
        seen.headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok()),
        Some("https")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f3_response_bodies_stream_without_waiting_for_the_end() {
    let (gw, _upstream, acme) = gateway().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let started = Instant::now();
    let request = http::Request::get(format!("{}/svc/storage/objects/trickle/1500", gw.url()))
        .header(
            "authorization",
            format!("Bearer {}", acme.client.token().expect("token")),
        )
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = client.request(request).await.expect("response");
    let mut body = response.into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    let first_at = started.elapsed();
    assert_eq!(first.data_ref().map(|d| d.as_ref()), Some(&b"first"[..]));
    assert!(
        first_at < Duration::from_millis(1200),
        "first chunk took {first_at:?}: the body was buffered"
    );
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(&rest[..], b"second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f3_large_bodies_pass_through_both_ways() {
    let (_gw, upstream, acme) = gateway().await;
    let size = 64 * 1024 * 1024;
    let r = acme
        .client
        .get(&format!("/svc/storage/objects/big/{size}"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), size);
    let upload = vec![b'u'; 9 * 1024 * 1024];
    let r = acme
        .client
        .send(
            Method::PUT,
            "/svc/storage/objects/upload/drain",
            &[],
            upload,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(upstream.last().body_len, 9 * 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f3_a_body_over_the_route_cap_is_413() {
    let (gw, upstream, acme) = gateway().await;
    // Declared too large: refused from the head alone, before any body is read or forwarded.
    let head = format!(
        "PUT /svc/storage/objects/a HTTP/1.1\r\nHost: x\r\n{}Content-Length: 10485761\r\n\r\n",
        auth_header(&acme)
    );
    let response = raw(
        &gw.addr.to_string(),
        head.as_bytes(),
        Duration::from_secs(3),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("PayloadTooLarge"), "{response}");
    assert_eq!(upstream.count(), 0);
    // Chunked, with no declared length: cut off once the cap is passed.
    let chunk = vec![b'y'; 1024 * 1024];
    let mut request = format!(
        "PUT /svc/storage/objects/b HTTP/1.1\r\nHost: x\r\n{}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        auth_header(&acme)
    )
    .into_bytes();
    for _ in 0..10 {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"10\r\n0123456789abcdef\r\n");
    request.extend_from_slice(b"0\r\n\r\n");
    let response = raw(&gw.addr.to_string(), &request, Duration::from_secs(10)).await;
    assert!(
        response.starts_with("HTTP/1.1 413"),
        "{}",
        &response[..response.len().min(300)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f4_an_unreachable_upstream_is_502() {
    let gw = TestGateway::builder(&closed_port().await).start().await;
    let acme = gw.account("acme").await;
    let r = acme.client.get("/svc/storage/objects/a").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.error_code(), "UpstreamUnavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f4_an_upstream_that_resets_is_502() {
    let (_gw, _upstream, acme) = gateway().await;
    let r = acme.client.get("/svc/storage/objects/reset").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.error_code(), "UpstreamUnavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f4_a_slow_upstream_is_504_after_the_service_timeout() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .service_timeout("storage", Duration::from_millis(300))
        .start()
        .await;
    let acme = gw.account("acme").await;
    let started = Instant::now();
    let r = acme.client.get("/svc/storage/objects/slow/3000").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.error_code(), "UpstreamTimeout");
    assert!(started.elapsed() < Duration::from_millis(2500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o1_shutdown_drains_in_flight_calls() {
    let (mut gw, _upstream, acme) = gateway().await;
    let client = acme.client.clone();
    let in_flight = tokio::spawn(async move { client.get("/svc/storage/objects/slow/800").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let drained = gw.begin_shutdown();
    let r = in_flight.await.expect("task");
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the in-flight call completes during the drain"
    );
    tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .expect("drain finishes");
    let refused = tokio::net::TcpStream::connect(gw.addr).await;
    assert!(refused.is_err(), "no new connections after shutdown");
}

/// A gateway whose `acme` account has `forbid ... when { context.path like "/objects/secret/*" }`,
/// with `tweak` applied to the `storage` service first.
async fn secret_policy_gateway(
    tweak: impl FnOnce(&mut tollgate::config::ServiceConfig) + 'static,
) -> (TestGateway, Upstream, Account, tempfile::TempDir) {
    let upstream = Upstream::start().await;
    let (guard, policies) = crate::support::gateway::copy_policies();
    let gw = TestGateway::builder(&upstream.url())
        .policies_dir(policies.clone())
        .tweak(move |c| {
            if let Some(s) = c.services.iter_mut().find(|s| s.name == "storage") {
                tweak(s);
            }
        })
        .start()
        .await;
    let acme = gw.account("acme").await;
    crate::support::org::write(
        &policies,
        &format!("accounts/{}/secret.cedar", acme.id),
        "@id(\"no-secrets\")\nforbid (principal, action, resource)\nwhen { context.path like \"/objects/secret/*\" };\n",
    );
    let store = gw.app.policies.clone();
    tokio::task::spawn_blocking(move || {
        store
            .reload(tollgate::authz::ReloadTrigger::Signal)
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    })
    .await
    .expect("reload task")
    .expect("the policy loads");
    (gw, upstream, acme, guard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_encoded_unreserved_characters_and_path_parameters_cannot_bypass_a_path_policy() {
    let (_gw, upstream, acme, _guard) = secret_policy_gateway(|_| {}).await;
    let r = acme.client.get("/svc/storage/objects/secret/x").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let r = acme.client.get("/svc/storage/objects/%73ecret/x").await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "`%73` is `s`: Cedar must see `/objects/secret/x`: {}",
        r.text()
    );
    let r = acme.client.get("/svc/storage/objects/secret;x/y").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.error_code(), "InvalidPath");
    assert_eq!(upstream.count(), 0, "nothing reached the upstream");
    // Canonical form: unreserved characters decoded, other escapes kept with upper-case hex.
    let r = acme
        .client
        .get("/svc/storage/objects/%7e%41b%5F-%2d/caf%c3%a9%3b%20?q=%2e")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        upstream.last().uri,
        "/objects/~Ab_--/caf%C3%A9%3B%20?q=%2e",
        "the query is forwarded as sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_path_parameters_pass_only_where_the_service_allows_them() {
    let (_gw, upstream, acme, _guard) = secret_policy_gateway(|s| s.allow_path_params = true).await;
    let r = acme.client.get("/svc/storage/objects/a;v=1/b").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(upstream.last().uri, "/objects/a;v=1/b");
    // Still no dot segments hiding behind a parameter.
    let r = acme.client.get("/svc/storage/objects/..;x/b").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_case_insensitive_paths_fold_case_for_routing_and_cedar_only() {
    // Without the option, paths are case-sensitive: `/OBJECTS` is no route.
    let (_gw, upstream, acme, _guard) = secret_policy_gateway(|_| {}).await;
    let r = acme.client.get("/svc/storage/OBJECTS/a").await;
    assert_eq!(r.error_code(), "NoSuchRoute");
    assert_eq!(upstream.count(), 0);

    let (_gw, upstream, acme, _guard) =
        secret_policy_gateway(|s| s.case_insensitive_paths = true).await;
    for path in [
        "/svc/storage/objects/SECRET/x",
        "/svc/storage/Objects/Secret/x",
        "/svc/storage/objects/%53ecret/x",
    ] {
        let r = acme.client.get(path).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.text());
    }
    assert_eq!(upstream.count(), 0);
    let r = acme
        .client
        .get("/svc/storage/OBJECTS/Public/caf%c3%a9")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        upstream.last().uri,
        "/OBJECTS/Public/caf%C3%A9",
        "the upstream gets the canonical path as sent, not the folded one"
    );
}

/// The path Cedar saw for the request `request_id` (its decision record's `context.path`).
fn cedar_path(gw: &TestGateway, request_id: &str) -> String {
    let db = crate::support::backend::TestDb(gw.database());
    let json: String = db
        .query_row(
            "SELECT request_json FROM decisions WHERE request_id = ?1",
            tollgate::db::params![request_id],
            |r| r.get(0),
        )
        .expect("the decision record");
    let value: serde_json::Value = serde_json::from_str(&json).expect("request_json");
    value["context"]["path"]
        .as_str()
        .expect("context.path")
        .to_owned()
}

/// F1, as a property: whatever path a client sends, if it is forwarded, the canonical path Cedar
/// decided on is byte for byte the path the upstream received.
#[test]
fn f1_cedar_and_the_upstream_see_the_same_canonical_path() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (gw, upstream, acme) = runtime.block_on(gateway());
    let piece = prop_oneof![
        "[a-zA-Z0-9]{1,4}",
        Just("-".to_owned()),
        Just("_".to_owned()),
        Just("~".to_owned()),
        Just(".".to_owned()),
        Just("/".to_owned()),
        Just(";".to_owned()),
        Just("%25".to_owned()),
        "%[0-9a-fA-F]{2}",
        "%[2-7][0-9a-fA-F]",
        "[!$&'()*+,=:@]",
    ];
    let path = proptest::collection::vec(piece, 1..10).prop_map(|p| p.concat());
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let forwarded = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&path, |tail| {
            let target = format!("/svc/storage/objects/{tail}");
            let r = runtime.block_on(acme.client.get(&target));
            if r.status != StatusCode::OK {
                prop_assert!(
                    r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::NOT_FOUND,
                    "{target}: {} {}",
                    r.status,
                    r.text()
                );
                return Ok(());
            }
            forwarded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let request_id = r.header("x-request-id").expect("request id").to_owned();
            let seen = upstream
                .seen()
                .into_iter()
                .find(|s| {
                    s.headers.get("x-request-id").and_then(|v| v.to_str().ok())
                        == Some(request_id.as_str())
                })
                .expect("the upstream saw the call");
            let cedar = cedar_path(&gw, &request_id);
            prop_assert_eq!(&cedar, &seen.uri, "{}", target);
            // And it is canonical: no escape of an unreserved character, upper-case hex only.
            let bytes = cedar.as_bytes();
            for (i, _) in cedar.match_indices('%') {
                let hex = &bytes[i + 1..i + 3];
                prop_assert!(
                    hex.iter()
                        .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()),
                    "{}",
                    cedar
                );
                let value = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16)
                    .unwrap_or_default();
                prop_assert!(
                    !(value.is_ascii_alphanumeric() || b"-_.~".contains(&value)),
                    "{}",
                    cedar
                );
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        forwarded.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no generated path was forwarded"
    );
    runtime.block_on(async move {
        drop(gw);
    });
}

/// One header the upstream received, as text.
fn seen_header(seen: &crate::support::upstream::Seen, name: &str) -> Option<String> {
    seen.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_underscore_headers_never_reach_the_upstream() {
    let (gw, upstream, acme) = gateway().await;
    // Through a client library, and raw, with the spellings a WSGI or CGI upstream would
    // read as `HTTP_X_TOLLGATE_ACCOUNT`.
    let r = acme
        .client
        .send(
            Method::GET,
            "/svc/storage/objects/a",
            &[
                ("X_Tollgate_Account", "999999999999"),
                ("x_tollgate-user", "root"),
                ("x-forwarded_for", "6.6.6.6"),
                ("my_header", "1"),
                ("x-plain-header", "kept"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = upstream.last();
    for (name, _) in seen.headers.iter() {
        assert!(
            !name.as_str().contains('_'),
            "`{name}` reached the upstream"
        );
    }
    assert_eq!(
        seen_header(&seen, "x-tollgate-account").as_deref(),
        Some(acme.id.as_str())
    );
    assert_eq!(
        seen_header(&seen, "x-plain-header").as_deref(),
        Some("kept")
    );
    let request = format!(
        "GET /svc/storage/objects/raw HTTP/1.1\r\nHost: x\r\n{}X_TOLLGATE_ACCOUNT: 999999999999\r\nConnection: close\r\n\r\n",
        auth_header(&acme)
    );
    let response = raw(
        &gw.addr.to_string(),
        request.as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = upstream.last();
    assert_eq!(seen.uri, "/objects/raw");
    assert!(seen.headers.keys().all(|k| !k.as_str().contains('_')));
    assert_eq!(
        seen.headers.get_all("x-tollgate-account").iter().count(),
        1,
        "one account header, the gateway's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_override_headers_are_stripped_one_by_one() {
    let (_gw, upstream, acme) = gateway().await;
    for (name, value) in [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-Real-IP", "10.0.0.1"),
        ("True-Client-IP", "10.0.0.1"),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Prefix", "/admin"),
        ("X-Forwarded-Server", "internal"),
        ("Forwarded", "for=10.0.0.1;proto=https"),
    ] {
        let r = acme
            .client
            .send(
                Method::GET,
                "/svc/storage/objects/a",
                &[(name, value), ("x-marker", name)],
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text());
        let seen = upstream.last();
        assert_eq!(seen_header(&seen, "x-marker").as_deref(), Some(name));
        assert_eq!(
            seen_header(&seen, name),
            None,
            "{name} reached the upstream"
        );
    }
    // Also from a trusted proxy: they name methods and paths nobody authorized.
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .tweak(|c| c.server.trusted_proxies = vec!["127.0.0.0/8".parse().expect("net")])
        .start()
        .await;
    let acme = gw.account("acme").await;
    let r = acme
        .client
        .send(
            Method::GET,
            "/svc/storage/objects/a",
            &[
                ("X-HTTP-Method-Override", "DELETE"),
                ("X-Original-URL", "/admin"),
                ("Forwarded", "for=10.0.0.1"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = upstream.last();
    for name in ["x-http-method-override", "x-original-url", "forwarded"] {
        assert_eq!(
            seen_header(&seen, name),
            None,
            "{name} from a trusted proxy"
        );
    }
}

/// The `(request_id, client_request_id)` of the decision and of the ledger record of a call
/// whose gateway id is `request_id`.
fn recorded_ids(gw: &TestGateway, request_id: &str) -> [(String, Option<String>); 2] {
    let db = crate::support::backend::TestDb(gw.database());
    let read = |table: &str| {
        db.query_row(
            &format!("SELECT request_id, client_request_id FROM {table} WHERE request_id = ?1"),
            tollgate::db::params![request_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap_or_else(|e| panic!("{table}: {e}"))
    };
    [read("decisions"), read("ledger")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_a_client_request_id_is_recorded_and_replaced_unless_from_a_trusted_proxy() {
    let (gw, upstream, acme) = gateway().await;
    let r = acme
        .client
        .send(
            Method::GET,
            "/svc/storage/objects/a",
            &[("x-request-id", "client-chosen-id.1")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r.header("x-request-id").expect("request id").to_owned();
    assert_ne!(
        id, "client-chosen-id.1",
        "an untrusted client's id is not ours"
    );
    assert_eq!(id.len(), 32);
    assert_eq!(
        seen_header(&upstream.last(), "x-request-id").as_deref(),
        Some(id.as_str())
    );
    for (request_id, client) in recorded_ids(&gw, &id) {
        assert_eq!(request_id, id);
        assert_eq!(client.as_deref(), Some("client-chosen-id.1"));
    }
    // No client id: none recorded.
    let r = acme.client.get("/svc/storage/objects/b").await;
    let id = r.header("x-request-id").expect("request id").to_owned();
    for (_, client) in recorded_ids(&gw, &id) {
        assert_eq!(client, None);
    }

    // From a trusted proxy, a well-formed id is the request's id.
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .tweak(|c| c.server.trusted_proxies = vec!["127.0.0.0/8".parse().expect("net")])
        .start()
        .await;
    let acme = gw.account("acme").await;
    let r = acme
        .client
        .send(
            Method::GET,
            "/svc/storage/objects/a",
            &[("x-request-id", "proxy-chosen-id.1")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("proxy-chosen-id.1"));
    assert_eq!(
        seen_header(&upstream.last(), "x-request-id").as_deref(),
        Some("proxy-chosen-id.1")
    );
    for (request_id, client) in recorded_ids(&gw, "proxy-chosen-id.1") {
        assert_eq!(request_id, "proxy-chosen-id.1");
        assert_eq!(client, None);
    }
}

/// The `source_ip` of the decision record of the call `request_id`.
fn recorded_source_ip(gw: &TestGateway, request_id: &str) -> String {
    crate::support::backend::TestDb(gw.database())
        .query_row(
            "SELECT source_ip FROM decisions WHERE request_id = ?1",
            tollgate::db::params![request_id],
            |r| r.get(0),
        )
        .expect("decision record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_x_forwarded_for_is_walked_from_the_right_and_stops_at_what_it_cannot_parse() {
    let upstream = Upstream::start().await;
    let (_guard, policies) = crate::support::gateway::copy_policies();
    let gw = TestGateway::builder(&upstream.url())
        .policies_dir(policies.clone())
        .tweak(|c| {
            c.server.trusted_proxies = vec![
                "127.0.0.0/8".parse().expect("net"),
                "192.0.2.0/24".parse().expect("net"),
            ]
        })
        .start()
        .await;
    let acme = gw.account("acme").await;
    crate::support::org::write(
        &policies,
        &format!("accounts/{}/office.cedar", acme.id),
        "@id(\"office-only\")\nforbid (principal, action, resource)\nunless { context.source_ip.isInRange(ip(\"10.0.0.0/8\")) };\n",
    );
    let store = gw.app.policies.clone();
    tokio::task::spawn_blocking(move || {
        store
            .reload(tollgate::authz::ReloadTrigger::Signal)
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    })
    .await
    .expect("reload task")
    .expect("the policy loads");

    // (X-Forwarded-For as the trusted proxy sent it, expected status, expected source_ip)
    let cases = [
        ("10.1.1.1", StatusCode::OK, "10.1.1.1"),
        ("6.6.6.6, 10.1.1.1, 192.0.2.1", StatusCode::OK, "10.1.1.1"),
        (
            "10.1.1.1, 203.0.113.9",
            StatusCode::FORBIDDEN,
            "203.0.113.9",
        ),
        // The attacker wrote `10.1.1.1`; the proxy appended the real client in a form that
        // is not a bare address. Nothing left of it may be believed.
        (
            "10.1.1.1, 203.0.113.9:5555",
            StatusCode::FORBIDDEN,
            "127.0.0.1",
        ),
        (
            "10.1.1.1, [2001:db8::1]:443",
            StatusCode::FORBIDDEN,
            "127.0.0.1",
        ),
        ("10.1.1.1, unknown", StatusCode::FORBIDDEN, "127.0.0.1"),
        ("10.1.1.1,, 192.0.2.7", StatusCode::FORBIDDEN, "192.0.2.7"),
        (
            "10.1.1.1, _hidden, 192.0.2.7",
            StatusCode::FORBIDDEN,
            "192.0.2.7",
        ),
        ("192.0.2.8, 192.0.2.7", StatusCode::FORBIDDEN, "192.0.2.8"),
    ];
    for (xff, status, source) in cases {
        let r = acme
            .client
            .send(
                Method::GET,
                "/svc/storage/objects/a",
                &[("x-forwarded-for", xff)],
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, status, "{xff}: {}", r.text());
        let id = r.header("x-request-id").expect("request id");
        assert_eq!(recorded_source_ip(&gw, id), source, "{xff}");
    }
}
