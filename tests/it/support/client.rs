//! A small HTTP client for tests, plus raw-socket requests for malformed input.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: None,
            inner: HyperClient::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    /// A client whose connections leave from `source` (any 127.x.y.z works on loopback), so a
    /// test can be several client addresses at once.
    pub fn from_source(base: &str, source: std::net::IpAddr) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_local_address(Some(source));
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: None,
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// The same client, sending `Authorization: Bearer <token>` on every request.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// The same client (and token) sending to another gateway at `base`.
    pub fn rebase(&self, base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            ..self.clone()
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// POSTs a JSON value.
    pub async fn post_json(&self, path: &str, value: serde_json::Value) -> TestResponse {
        self.send(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            value.to_string(),
        )
        .await
    }

    /// PUTs a JSON value.
    pub async fn put_json(&self, path: &str, value: serde_json::Value) -> TestResponse {
        self.send(
            Method::PUT,
            path,
            &[("content-type", "application/json")],
            value.to_string(),
        )
        .await
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> TestResponse {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        let overrides_auth = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        if let (Some(token), false) = (&self.token, overrides_auth) {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder.body(Full::new(body.into())).expect("request");
        let response = tokio::time::timeout(Duration::from_secs(30), self.inner.request(request))
            .await
            .expect("response within 30s")
            .expect("response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }
}

impl TestResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error.code` of a SPEC error body, checking the body's shape on the way.
    pub fn error_code(&self) -> String {
        let json = self.json();
        assert!(
            json["request_id"].is_string(),
            "error body without request_id: {json}"
        );
        assert!(
            json["error"]["message"].is_string(),
            "error body without message: {json}"
        );
        json["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends raw bytes on a fresh connection and returns everything read until the server closes
/// or `wait` passes.
pub async fn raw(addr: &str, bytes: &[u8], wait: Duration) -> String {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let bytes = bytes.to_vec();
    // Write while reading: a server may answer (and stop reading) before the request ends.
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&bytes).await;
        writer
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, reader.read_to_end(&mut out)).await;
    drop(write);
    String::from_utf8_lossy(&out).into_owned()
}
