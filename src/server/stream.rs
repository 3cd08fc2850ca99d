//! `ConnStream`: a connected socket as the connection logic (`conn`) needs it, implemented by
//! each driver (io_uring, epoll) and by `tls::Wire` over either. Everything is a poll, so a
//! connection's task stores no I/O future; `send` only queues; `close` hands the socket back
//! to its driver. Its own file so that `conn` and `tls` both depend on it, not on each other.

use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};

use bytes::Bytes;

/// A connected socket as the connection logic needs it; implemented by each driver.
pub(crate) trait ConnStream {
    /// The next chunk of input; `None` at its end. Registers the task's waker when pending.
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>>;
    /// Queues output.
    fn send(&self, data: &[u8]);
    /// Octets queued and not yet written.
    fn unsent(&self) -> usize;
    /// Ready once everything queued is written.
    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Hands the socket back to the driver (flush first: unsent output may be dropped).
    fn close(self);
}

/// Waits until everything queued on `stream` is written.
pub(crate) async fn flush<S: ConnStream>(stream: &S) -> io::Result<()> {
    poll_fn(|cx| stream.poll_flush(cx)).await
}
