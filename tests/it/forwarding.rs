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
    assert_eq!(
        h("x-request-id").as_deref(),
        Some("client-chosen-id.1"),
        "well-formed ids are kept"
    );
    assert_eq!(r.header("x-request-id"), Some("client-chosen-id.1"));
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
