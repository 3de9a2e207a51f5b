//! How long a connection may wait, and for what. hyper's own header-read timeout also times
//! the wait between two requests of a kept-alive connection, so an idle connection was closed
//! after it; a load balancer that keeps idle connections longer (the ALB: 60 s) then reuses
//! one enc is closing, and its client gets a 502. Here the two waits are apart:
//!
//! - a request's head must arrive within the header timeout from its first byte (and a new
//!   connection's first request within it from the accept), so a slow client cannot hold a
//!   connection by trickling headers;
//! - between requests a connection may stay idle for the keep-alive timeout (default 75 s,
//!   above the load balancer's, so it is always the balancer that closes an idle connection:
//!   [AWS](https://docs.aws.amazon.com/elasticloadbalancing/latest/application/edit-load-balancer-attributes.html#connection-idle-timeout)
//!   asks targets for exactly this);
//! - while a request is being answered, neither: the request timeout applies.
//!
//! [`Watched`] is the connection's I/O, which sees bytes come and go; [`Marked`] is its
//! service, which says when a request is being answered.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The two waits a connection is allowed.
#[derive(Clone, Copy, Debug)]
pub(super) struct Waits {
    /// From a request's first byte (or the connection's accept) to the end of its head.
    pub(super) header: Duration,
    /// Between the end of an answer and the first byte of the next request.
    pub(super) idle: Duration,
}

/// What the I/O and the service of one connection share: whether a request is being
/// answered, and how many were begun (so that the I/O knows a head it saw start was read).
#[derive(Default)]
struct Answering {
    now: AtomicBool,
    begun: AtomicU32,
}

/// A connection's I/O that closes it when a wait is over: reads then fail with `TimedOut`,
/// and hyper drops the connection.
pub(super) struct Watched<T> {
    io: T,
    waits: Waits,
    answering: Arc<Answering>,
    /// When the head being read began (its first byte, or the accept), with the requests
    /// begun then: once one more is begun, that head was read.
    head_since: Option<(Instant, u32)>,
    /// The last byte read or written: an idle connection's wait runs from it.
    active_at: Instant,
    /// The wait's clock, set to the deadline of the wait in progress.
    timer: Pin<Box<Sleep>>,
}

/// A connection's I/O and the service that marks its requests, sharing one [`Answering`].
pub(super) fn watch<T, S>(io: T, service: S, waits: Waits) -> (Watched<T>, Marked<S>) {
    let answering = Arc::new(Answering::default());
    let now = Instant::now();
    let watched = Watched {
        io,
        waits,
        answering: answering.clone(),
        head_since: Some((now, 0)),
        active_at: now,
        timer: Box::pin(tokio::time::sleep_until(now + waits.header)),
    };
    (
        watched,
        Marked {
            inner: service,
            answering,
        },
    )
}

impl<T> Watched<T> {
    /// Whether a head is being read: its first byte came (or the connection was accepted)
    /// and the request it begins was not begun yet.
    fn reading_head(&self) -> bool {
        self.head_since
            .is_some_and(|(_, begun)| begun == self.answering.begun.load(Ordering::Acquire))
    }

    /// The end of the wait in progress, if any.
    fn deadline(&self) -> Option<Instant> {
        if self.answering.now.load(Ordering::Acquire) {
            // The request's head was read: its own timeout takes over.
            return None;
        }
        Some(match self.head_since {
            Some((since, _)) if self.reading_head() => since + self.waits.header,
            _ => self.active_at + self.waits.idle,
        })
    }

    /// Sets the timer to the end of the wait in progress, to wake the connection then:
    /// `Err(TimedOut)` if it is over already.
    fn wait(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(deadline) = self.deadline() else {
            return Ok(());
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                if self.reading_head() {
                    "the request's head did not come in time"
                } else {
                    "the connection was idle for too long"
                },
            )),
            Poll::Pending => Ok(()),
        }
    }

    /// Bytes were written: an answer is going out, and the idle wait runs from now. hyper
    /// polled the read before the answer was ready and waits on the socket, so the timer is
    /// set here, or nothing would wake an idle connection to close it.
    fn wrote(&mut self, cx: &mut Context<'_>) {
        self.active_at = Instant::now();
        // Over already it cannot be, right after a write: the next read reports it if so.
        let _ = self.wait(cx);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let now = Instant::now();
                    this.active_at = now;
                    if !this.answering.now.load(Ordering::Acquire) && !this.reading_head() {
                        // The first bytes of the next request's head.
                        this.head_since = Some((now, this.answering.begun.load(Ordering::Acquire)));
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.wait(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.io).poll_write(cx, buf));
        self.wrote(cx);
        Poll::Ready(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, bufs));
        self.wrote(cx);
        Poll::Ready(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A connection's service that says, for its I/O, when a request is being answered: from the
/// call (its head was read) until the answer's head is ready.
pub(super) struct Marked<S> {
    inner: S,
    answering: Arc<Answering>,
}

impl<S, R> hyper::service::Service<R> for Marked<S>
where
    S: hyper::service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Answered<S::Future>;

    fn call(&self, request: R) -> Self::Future {
        self.answering.begun.fetch_add(1, Ordering::AcqRel);
        self.answering.now.store(true, Ordering::Release);
        Answered {
            inner: self.inner.call(request),
            answering: self.answering.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer: when it is ready, the connection waits for the next request.
    pub struct Answered<F> {
        #[pin]
        inner: F,
        answering: Arc<Answering>,
    }
}

impl<F: Future> Future for Answered<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = ready!(this.inner.poll(cx));
        this.answering.now.store(false, Ordering::Release);
        Poll::Ready(answer)
    }
}
