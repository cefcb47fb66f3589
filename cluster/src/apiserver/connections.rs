//! Bounds on connections that have not yet sent a request: half-open TLS connections must not
//! pile up until the process runs out of file descriptors.
//!
//! - The TLS handshake has a deadline.
//! - After it, the first bytes (enough to tell HTTP/1 from the HTTP/2 preface, which hyper
//!   reads before any of its own timeouts start) have the header deadline.
//! - HTTP/1 request headers then have hyper's header-read timeout, which also closes idle
//!   keep-alive connections; HTTP/2 connections are pinged and closed when the pings go
//!   unanswered.
//! - At most `max_pending` connections may be between accept and their first request; past
//!   that the server stops accepting (new clients wait in the kernel's backlog) instead of
//!   spending descriptors and memory on them.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

/// Upstream's apiserver closes connections that send no complete header within ~32 s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(32);
/// The TLS handshake gets at most this long (less when the header timeout is shorter).
pub const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_PENDING: usize = 2048;

/// How long connections may take, and how many may wait for their first request.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// For the request headers (and between requests on a kept-alive connection).
    pub header_timeout: Duration,
    /// Connections accepted that have not yet sent a complete request head.
    pub max_pending: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

impl ConnectionLimits {
    pub fn handshake_timeout(&self) -> Duration {
        self.header_timeout.min(MAX_HANDSHAKE_TIMEOUT)
    }
}

/// A pending connection's slot, given back when its first request arrives (or it closes).
#[derive(Clone, Default)]
pub struct PendingSlot(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl PendingSlot {
    pub fn new(permit: OwnedSemaphorePermit) -> Self {
        PendingSlot(Arc::new(Mutex::new(Some(permit))))
    }

    pub fn release(&self) {
        if let Ok(mut p) = self.0.lock() {
            p.take();
        }
    }
}

/// The length of the HTTP/2 connection preface: hyper reads up to this much to pick the
/// protocol before its own header timeout runs.
const PREFACE_LEN: usize = 24;

/// An I/O stream whose reads fail with `TimedOut` if the first [`PREFACE_LEN`] bytes have not
/// arrived by a deadline.
pub struct PrefaceDeadline<T> {
    inner: T,
    deadline: Option<Pin<Box<Sleep>>>,
    read: usize,
}

impl<T> PrefaceDeadline<T> {
    pub fn new(inner: T, timeout: Duration) -> Self {
        PrefaceDeadline {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            read: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PrefaceDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.read += buf.filled().len() - before;
                if this.read >= PREFACE_LEN {
                    this.deadline = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request arrived in time",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PrefaceDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_stalled_preface_times_out_and_a_full_one_does_not() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = PrefaceDeadline::new(server, Duration::from_millis(50));
        client.write_all(b"GET / HT").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(io.read(&mut buf).await.unwrap(), 8);
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (mut client, server) = tokio::io::duplex(64);
        let mut io = PrefaceDeadline::new(server, Duration::from_millis(50));
        client.write_all(&[b'x'; PREFACE_LEN]).await.unwrap();
        io.read_exact(&mut buf[..PREFACE_LEN]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(b"later").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 5);
    }
}
