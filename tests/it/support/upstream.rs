//! A real upstream HTTP server on loopback that records what reached it. Its behaviour follows
//! the path it is asked for:
//! - `.../slow/<ms>`: waits before answering
//! - `.../big/<bytes>`: streams that many bytes back
//! - `.../reset`: closes the connection without answering
//! - `.../drain`: reads the whole body and reports its length
//! - anything else: 200 with a small JSON body describing the request

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: u64,
}

#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream = Self {
            addr,
            seen: seen.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, seen.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        upstream
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().len()
    }
}

/// A port with nothing listening on it (bound, then closed).
pub async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

fn segment_after<'a>(path: &'a str, key: &str) -> Option<&'a str> {
    let mut parts = path.split('/');
    while let Some(p) = parts.next() {
        if p == key {
            return parts.next();
        }
    }
    None
}

async fn handle(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    let path = req.uri().path().to_owned();
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let headers = req.headers().clone();
    if path.ends_with("/reset") {
        seen.lock().push(Seen {
            method,
            uri,
            headers,
            body_len: 0,
        });
        // A service error makes hyper close the connection without a response.
        return Err("reset".into());
    }
    let mut body = req.into_body();
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_len += f.data_ref().map(|d| d.len() as u64).unwrap_or(0),
            Err(_) => break,
        }
    }
    seen.lock().push(Seen {
        method: method.clone(),
        uri: uri.clone(),
        headers,
        body_len,
    });
    if let Some(ms) = segment_after(&path, "slow").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(ms) = segment_after(&path, "trickle").and_then(|v| v.parse::<u64>().ok()) {
        // One chunk now, one after `ms`: a gateway that buffers whole bodies shows the delay.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"first")))).await;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"second"))))
                .await;
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        return Ok(Response::new(BodyExt::boxed_unsync(StreamBody::new(
            stream,
        ))));
    }
    if let Some(n) = segment_after(&path, "big").and_then(|v| v.parse::<u64>().ok()) {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = n / chunk.len() as u64;
        let rest = (n % chunk.len() as u64) as usize;
        let stream = futures_stream(chunk, chunks, rest);
        let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
        response.headers_mut().insert("content-length", n.into());
        return Ok(response);
    }
    let json = serde_json::json!({"method": method, "uri": uri, "body_len": body_len}).to_string();
    let body = http_body_util::Full::new(Bytes::from(json))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("static"));
    response
        .headers_mut()
        .insert("connection", "x-upstream-hop".parse().expect("static"));
    response
        .headers_mut()
        .insert("x-upstream-hop", "1".parse().expect("static"));
    Ok(response)
}

fn futures_stream(
    chunk: Bytes,
    chunks: u64,
    rest: usize,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        for _ in 0..chunks {
            if tx.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                return;
            }
        }
        if rest > 0 {
            let _ = tx.send(Ok(Frame::data(chunk.slice(..rest)))).await;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
