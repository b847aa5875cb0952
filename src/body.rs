//! HTTP bodies as the gateway passes them along: one boxed body type, plus the two wrappers the
//! forwarding path needs. Bodies stream; nothing here buffers a whole body.
//!
//! - `Capped` counts request bytes on their way to the upstream and fails the stream once a
//!   route's cap is passed (the pipeline then answers 413); it also notes when the client's own
//!   body failed (the pipeline then answers 400, not 502).
//! - `Counted` counts response bytes as they are actually handed to the client and reports,
//!   once, how the body ended (complete, failed or dropped by the client).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type used everywhere a body crosses a module boundary.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Bytes counted on a request body, readable after it was sent.
#[derive(Debug, Default)]
pub struct CapStats {
    bytes: AtomicU64,
    exceeded: AtomicBool,
    failed: AtomicBool,
}

/// A request body that fails once more than `limit` bytes went through.
pub struct Capped<B> {
    inner: B,
    limit: Option<u64>,
    stats: Arc<CapStats>,
}

/// The request body was larger than the route allows.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the route's limit of {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// Every byte was passed on.
    Complete,
    /// The upstream's body failed midway.
    Failed,
    /// The body was dropped before its end (the client went away).
    Dropped,
}

/// Called once when a counted body ends, with the bytes passed on and how it ended.
pub type OnEnd = Box<dyn FnOnce(u64, BodyEnd) + Send + Sync>;

/// A response body that counts what it passes on and reports its end once.
pub struct Counted<B> {
    inner: B,
    bytes: u64,
    on_end: Option<OnEnd>,
}

// === impl CapStats ===

impl CapStats {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Acquire)
    }

    /// The client's body itself failed (malformed chunking, a connection cut mid-body).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

// === impl Capped ===

impl<B> Capped<B> {
    pub fn new(inner: B, limit: Option<u64>) -> (Self, Arc<CapStats>) {
        let stats = Arc::new(CapStats::default());
        (
            Self {
                inner,
                limit,
                stats: stats.clone(),
            },
            stats,
        )
    }
}

impl<B> HttpBody for Capped<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => {
                self.stats.failed.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let total = self
                .stats
                .bytes
                .fetch_add(data.len() as u64, Ordering::AcqRel)
                + data.len() as u64;
            if let Some(limit) = self.limit
                && total > limit
            {
                self.stats.exceeded.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit }))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl Counted ===

impl<B> Counted<B> {
    pub fn new(inner: B, on_end: OnEnd) -> Self {
        Self {
            inner,
            bytes: 0,
            on_end: Some(on_end),
        }
    }

    fn finish(&mut self, end: BodyEnd) {
        if let Some(on_end) = self.on_end.take() {
            on_end(self.bytes, end);
        }
    }
}

impl<B> HttpBody for Counted<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(BodyEnd::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish(BodyEnd::Failed);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                self.finish(BodyEnd::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        self.finish(BodyEnd::Dropped);
    }
}

/// A request body that fails when the client sends nothing for `timeout` while it is being read
/// (`server.body_read_timeout`): a slow-body flood cannot hold a connection open forever, and an
/// upload that keeps sending is never cut off, however long it takes in all.
pub struct ReadTimeout<B> {
    inner: B,
    timeout: std::time::Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The timer runs for the current wait; cleared when a frame arrives.
    armed: bool,
}

/// The client sent nothing of its request body for `server.body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("no request body bytes arrived for {timeout:?} (server.body_read_timeout)")]
pub struct BodyReadTimeout {
    pub timeout: std::time::Duration,
}

// === impl ReadTimeout ===

impl<B> ReadTimeout<B> {
    pub fn new(inner: B, timeout: std::time::Duration) -> Self {
        Self {
            inner,
            timeout,
            timer: None,
            armed: false,
        }
    }
}

impl<B> HttpBody for ReadTimeout<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.timeout;
                let timer = match (&mut this.timer, this.armed) {
                    (Some(timer), true) => timer,
                    (Some(timer), false) => {
                        timer.as_mut().reset(deadline);
                        timer
                    }
                    (slot @ None, _) => slot.insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                this.armed = true;
                if timer.as_mut().poll(cx).is_ready() {
                    let timeout = this.timeout;
                    return Poll::Ready(Some(Err(Box::new(BodyReadTimeout { timeout }))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
