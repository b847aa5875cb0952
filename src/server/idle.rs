//! Idle limits of a client connection, kept by a watchdog beside the connection rather than by
//! hyper: hyper's own header timer also runs while a keep-alive connection waits for its next
//! request, so it cannot give a short head deadline (`header_read_timeout`, slowloris) and a long
//! keep-alive (`keepalive_timeout`) at once.
//!
//! `Watched` wraps the socket and notes when bytes arrive; the service marks each request in
//! flight until its response body is dropped (`InFlight`). With nothing in flight, a connection
//! that started a head must finish it within `header_read_timeout`, and one that sent nothing is
//! closed after `keepalive_timeout`. A request in flight is never cut by this module; its body
//! has `server.body_read_timeout` (`body::ReadTimeout`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::body::{Body, BoxError};

const NO_HEAD: u64 = u64::MAX;

/// What the watchdog knows of one connection.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `start` of the last response end (or the connection's start).
    idle_since: AtomicU64,
    /// Milliseconds since `start` of the first byte of a head received while idle.
    head_started: AtomicU64,
    /// False on HTTP/2: bytes between requests are not a head.
    head_deadline: bool,
    /// Wakes the watchdog when a head begins, so the head deadline starts on time.
    head_begun: tokio::sync::Notify,
}

/// The socket, noting arrivals in `Activity`.
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

/// One request in flight; dropped with its response body.
#[derive(Debug)]
pub struct InFlight {
    activity: Arc<Activity>,
}

/// A response body that holds its request's `InFlight` until hyper drops it.
pub struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

// === impl Activity ===

impl Activity {
    pub fn new() -> Arc<Self> {
        Self::with_head_deadline(true)
    }

    /// Keep-alive only (HTTP/2).
    pub fn without_head_deadline() -> Arc<Self> {
        Self::with_head_deadline(false)
    }

    fn with_head_deadline(head_deadline: bool) -> Arc<Self> {
        Arc::new(Self {
            head_deadline,
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NO_HEAD),
            head_begun: tokio::sync::Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// A request was read: it is in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NO_HEAD, Ordering::Release);
        InFlight {
            activity: self.clone(),
        }
    }

    fn received(&self) {
        if self.head_deadline
            && self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Acquire) == NO_HEAD
        {
            self.head_started.store(self.now_ms(), Ordering::Release);
            self.head_begun.notify_one();
        }
    }

    /// Resolves when the connection broke an idle limit; the caller then closes it.
    pub async fn expired(&self, header_read_timeout: Duration, keepalive_timeout: Duration) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2);
        let (head_ms, keepalive_ms) = (ms(header_read_timeout), ms(keepalive_timeout));
        loop {
            let now = self.now_ms();
            let wait = if self.in_flight.load(Ordering::Acquire) > 0 {
                head_ms.min(keepalive_ms)
            } else {
                let head = self.head_started.load(Ordering::Acquire);
                let deadline = if head == NO_HEAD {
                    self.idle_since
                        .load(Ordering::Acquire)
                        .saturating_add(keepalive_ms)
                } else {
                    head.saturating_add(head_ms)
                };
                if now >= deadline {
                    return;
                }
                deadline - now
            };
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(wait.max(1))) => {}
                () = self.head_begun.notified() => {}
            }
        }
    }
}

// === impl InFlight ===

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.activity;
        a.idle_since.store(a.now_ms(), Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl Tracked ===

impl Tracked {
    pub fn new(inner: Body, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl Watched ===

impl<T> Watched<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.received();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
