//! A misbehaving upstream on raw TCP, for the fault tests: what it does depends on the last
//! segment of the request path.
//! - `.../garbage`: answers bytes that are not HTTP, then closes
//! - `.../cut`: sends a 200 head promising 100,000 bytes, sends 1,000, then resets
//! - `.../hang`: reads the request and never answers (keeps the connection open)
//! - `.../slow`: answers a well-formed 200 after [`SLOW`]
//! - anything else: a small, well-formed 200

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Bytes of the body `.../cut` sends before resetting, out of [`CUT_PROMISED`].
pub const CUT_SENT: usize = 1_000;
pub const CUT_PROMISED: usize = 100_000;
/// How long `.../slow` waits before answering.
pub const SLOW: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct FaultyUpstream {
    pub addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl FaultyUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let line = String::from_utf8_lossy(&head);
                    let target = line.split(' ').nth(1).unwrap_or("/").to_owned();
                    if target.ends_with("/garbage") {
                        let _ = stream
                            .write_all(b"\x00\x01 this is not HTTP at all\r\n\r\n")
                            .await;
                    } else if target.ends_with("/cut") {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {CUT_PROMISED}\r\nContent-Type: application/octet-stream\r\n\r\n"
                        );
                        let _ = stream.write_all(head.as_bytes()).await;
                        let _ = stream.write_all(&vec![b'z'; CUT_SENT]).await;
                        let _ = stream.flush().await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        // Linger 0: the close is a reset, not a clean end (blocking on drop is
                        // not a concern with a zero linger).
                        #[allow(deprecated)]
                        let _ = stream.set_linger(Some(Duration::ZERO));
                    } else if target.ends_with("/hang") {
                        tokio::time::sleep(Duration::from_secs(120)).await;
                    } else {
                        if target.ends_with("/slow") {
                            tokio::time::sleep(SLOW).await;
                        }
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                            .await;
                    }
                });
            }
        });
        Self { addr, requests }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests whose head reached this upstream.
    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}
