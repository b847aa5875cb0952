//! Connection-level limits (issue 16 item 4): connection caps at accept, the body read timeout,
//! the keep-alive timeout, and a slow-body flood against a gateway with a low open-file limit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::process::{Process, policies, write_config};
use crate::support::{TestGateway, Upstream};

/// A connection from `from` (any 127.0.0.0/8 address) to `to`.
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().expect("addr"))?;
    socket.connect(to).await
}

/// Sends `GET /healthz` on `stream` and returns what came back within `wait` (empty when the
/// gateway closed the connection without answering).
async fn healthz_on(stream: &mut TcpStream, close: bool, wait: Duration) -> String {
    let connection = if close { "close" } else { "keep-alive" };
    let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                // A keep-alive answer is complete once its small JSON body is in.
                if !close && text.contains("\r\n\r\n") && text.ends_with('}') {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fresh connection from `from` asking `/healthz`; the answer and how long it took.
async fn fresh_healthz(from: &str, to: SocketAddr, wait: Duration) -> (String, Duration) {
    let started = Instant::now();
    let answer = match tokio::time::timeout(wait, connect_from(from, to)).await {
        Ok(Ok(mut stream)) => healthz_on(&mut stream, true, wait).await,
        _ => String::new(),
    };
    (answer, started.elapsed())
}

/// True once the gateway has closed `stream` (EOF or reset) within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o2_max_connections_refuses_the_excess_at_accept_and_frees_places_on_close() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .tweak(|c| c.server.max_connections = 3)
        .start()
        .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from("127.0.0.1", gw.addr).await.unwrap();
        let answer = healthz_on(&mut s, false, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        open.push(s);
    }
    let (answer, _) = fresh_healthz("127.0.0.1", gw.addr, Duration::from_secs(3)).await;
    assert_eq!(
        answer, "",
        "the fourth connection is closed at accept, unanswered"
    );
    // The three open ones keep being served.
    let answer = healthz_on(&mut open[0], false, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (answer, _) = fresh_healthz("127.0.0.1", gw.addr, Duration::from_secs(2)).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed connection's place is never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = open.pop().unwrap();
    drop(open);
    let metrics = healthz_metrics(&mut s).await;
    assert!(
        metrics.contains("tollgate_connections_refused_total{cap=\"max_connections\"} "),
        "{metrics}"
    );
}

async fn healthz_metrics(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o2_max_connections_per_ip_refuses_one_address_and_exempts_trusted_proxies() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .tweak(|c| {
            c.server.max_connections_per_ip = 2;
            c.server.trusted_proxies = vec!["127.0.0.3/32".parse().unwrap()];
        })
        .start()
        .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from("127.0.0.2", gw.addr).await.unwrap();
        assert!(
            healthz_on(&mut s, false, Duration::from_secs(5))
                .await
                .starts_with("HTTP/1.1 200")
        );
        held.push(s);
    }
    let (answer, _) = fresh_healthz("127.0.0.2", gw.addr, Duration::from_secs(3)).await;
    assert_eq!(
        answer, "",
        "a third connection from one address is closed at accept"
    );
    // Another address is not affected.
    let (answer, _) = fresh_healthz("127.0.0.1", gw.addr, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    // A trusted proxy carries many clients: only the total cap applies to it.
    for _ in 0..5 {
        let mut s = connect_from("127.0.0.3", gw.addr).await.unwrap();
        let answer = healthz_on(&mut s, false, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        held.push(s);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o2_keepalive_timeout_is_separate_from_the_header_read_timeout() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .tweak(|c| {
            c.server.header_read_timeout = Duration::from_millis(300);
            c.server.keepalive_timeout = Duration::from_millis(2500);
        })
        .start()
        .await;
    let mut s = connect_from("127.0.0.1", gw.addr).await.unwrap();
    assert!(
        healthz_on(&mut s, false, Duration::from_secs(5))
            .await
            .starts_with("HTTP/1.1 200")
    );
    // Idle for longer than the head deadline: the connection is kept for the next request.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let answer = healthz_on(&mut s, false, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "closed while idle: {answer:?}"
    );
    // Idle past keepalive_timeout: closed.
    let started = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(8)).await,
        "idle connection never closed"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2000),
        "closed after only {took:?}"
    );
    // A head begun and not finished is still cut after header_read_timeout.
    let mut slow = connect_from("127.0.0.1", gw.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(2)).await,
        "half a head kept open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f3_a_stalled_body_is_cut_after_body_read_timeout_and_a_slow_upload_is_not() {
    let upstream = Upstream::start().await;
    let gw = TestGateway::builder(&upstream.url())
        .tweak(|c| c.server.body_read_timeout = Duration::from_millis(700))
        .start()
        .await;
    let acme = gw.account("acme").await;
    // Half a login body, then nothing: 408, and the connection is closed.
    let mut s = connect_from("127.0.0.1", gw.addr).await.unwrap();
    s.write_all(
        b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"account_id\":",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("RequestTimeout"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut after {:?}",
        started.elapsed()
    );

    // An upload that pauses less than the timeout between chunks, for longer than it in all.
    let token = acme.client.token().unwrap().to_owned();
    let mut s = connect_from("127.0.0.1", gw.addr).await.unwrap();
    let head = format!(
        "PUT /svc/storage/objects/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..6 {
        s.write_all(b"400\r\n").await.unwrap();
        s.write_all(&[b'u'; 0x400]).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(upstream.last().body_len, 6 * 0x400);
}

/// The flood: `clients` connections from `from`, each sending the head of a login and a few
/// bytes of its body, then nothing, reconnecting when the gateway closes them, until `until`.
/// After that each holds what it has open until the gateway closes it (at most `linger`).
async fn slow_body_flood(
    from: &'static str,
    to: SocketAddr,
    clients: usize,
    until: Instant,
    linger: Duration,
) {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let Ok(mut s) = connect_from(from, to).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = s
                    .write_all(b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{\"account_id\":\"")
                    .await;
                let remaining = until.saturating_duration_since(Instant::now()) + linger;
                closed_within(&mut s, remaining).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o2_a_slow_body_flood_at_a_low_fd_limit_leaves_healthz_answering_within_a_second() {
    let upstream = Upstream::start().await;
    let temp = tempfile::tempdir().unwrap();
    let config = write_config(
        temp.path(),
        &temp.path().join("data"),
        &policies(),
        &upstream.url(),
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("body_read_timeout = \"30s\"", "body_read_timeout = \"1s\"")
        .replace("max_connections = 10000", "max_connections = 64")
        .replace(
            "max_connections_per_ip = 256",
            "max_connections_per_ip = 16",
        );
    assert!(
        text.contains("max_connections_per_ip = 16"),
        "config keys replaced"
    );
    std::fs::write(&config, text).unwrap();
    // 128 descriptors in all: the flood below opens 300 connections.
    let gateway = Process::start(&config, &["prlimit", "--nofile=128:128"]);
    let addr: SocketAddr = gateway.url.trim_start_matches("http://").parse().unwrap();

    // A keep-alive connection opened before the flood.
    let mut before = connect_from("127.0.0.1", addr).await.unwrap();
    assert!(
        healthz_on(&mut before, false, Duration::from_secs(5))
            .await
            .starts_with("HTTP/1.1 200")
    );

    let until = Instant::now() + Duration::from_secs(4);
    let flood = tokio::spawn(slow_body_flood(
        "127.0.0.2",
        addr,
        300,
        until,
        Duration::from_secs(8),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut probes = 0;
    while Instant::now() < until {
        let (answer, took) = fresh_healthz("127.0.0.1", addr, Duration::from_secs(1)).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && took < Duration::from_secs(1),
            "during the flood /healthz took {took:?}: {answer:?}\n{}",
            gateway.output.lock()
        );
        let answer = healthz_on(&mut before, false, Duration::from_secs(1)).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "an open connection stopped being served: {answer:?}"
        );
        probes += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(probes >= 5, "only {probes} probes during the flood");
    // The flood stops by itself: the gateway closes the half-sent bodies it still holds.
    tokio::time::timeout(Duration::from_secs(15), flood)
        .await
        .expect("the gateway closed every stalled body")
        .unwrap();
    let (answer, took) = fresh_healthz("127.0.0.1", addr, Duration::from_secs(1)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && took < Duration::from_secs(1),
        "after the flood /healthz took {took:?}: {answer:?}"
    );
    let output = gateway.output.lock().clone();
    assert!(!output.contains("Too many open files"), "{output}");
    assert!(output.contains("max_connections lowered"), "{output}");
}
