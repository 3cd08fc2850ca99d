//! The epoll driver (plain tokio, current-thread): the fallback when io_uring is unavailable
//! (kernel.io_uring_disabled, seccomp). The same connection logic runs on it: input comes as
//! chunks of a per-connection read buffer, output is written at once and the rest queued.
//! Everything here is readiness based, so every future is cancel-safe. TCP and Unix-domain
//! sockets are served alike (`Sock` dispatches the few calls that differ only in type).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use super::accept::Acceptor;
use super::listener::ListenSocket;
use super::stream::ConnStream;

/// Smallest read a connection posts; grows while reads fill it.
const MIN_READ: usize = 4096;
/// Largest read a connection posts.
const MAX_READ: usize = 64 * 1024;

/// Runs `f` to completion on a new epoll event loop on this thread.
pub(crate) fn block_on<F: Future>(f: F) -> io::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&rt, f))
}

/// A listener on the epoll loop.
pub(crate) enum EpollListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl EpollListener {
    /// Registers a bound listener with this thread's loop.
    pub(crate) fn new(l: ListenSocket) -> io::Result<Self> {
        Ok(match l {
            ListenSocket::Tcp(l) => Self::Tcp(TcpListener::from_std(l)?),
            ListenSocket::Unix(l) => Self::Unix(UnixListener::from_std(l)?),
        })
    }
}

impl Acceptor for EpollListener {
    type Stream = EpollStream;

    async fn accept(&self) -> io::Result<(EpollStream, Option<SocketAddr>)> {
        match self {
            Self::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((EpollStream::new(Sock::Tcp(s)), Some(peer)))
            }
            Self::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((EpollStream::new(Sock::Unix(s)), None))
            }
        }
    }

    async fn close(self) -> Vec<EpollStream> {
        // Connections still in the backlog are reset by the kernel when the socket closes.
        Vec::new()
    }
}

/// A connected socket of either kind.
enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.try_write(buf),
            Sock::Unix(s) => s.try_write(buf),
        }
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.try_read_buf(buf),
            Sock::Unix(s) => s.try_read_buf(buf),
        }
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Sock::Tcp(s) => s.poll_read_ready(cx),
            Sock::Unix(s) => s.poll_read_ready(cx),
        }
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Sock::Tcp(s) => s.poll_write_ready(cx),
            Sock::Unix(s) => s.poll_write_ready(cx),
        }
    }
}

/// A connection on the epoll loop.
pub(crate) struct EpollStream {
    s: Sock,
    rbuf: RefCell<BytesMut>,
    read_size: Cell<usize>,
    out: RefCell<Vec<u8>>,
    error: Cell<Option<io::ErrorKind>>,
}

impl EpollStream {
    fn new(s: Sock) -> Self {
        Self {
            s,
            rbuf: RefCell::new(BytesMut::new()),
            read_size: Cell::new(MIN_READ),
            out: RefCell::new(Vec::new()),
            error: Cell::new(None),
        }
    }

    /// Writes as much queued output as the socket takes now.
    fn write_queued(&self) -> io::Result<()> {
        let mut out = self.out.borrow_mut();
        while !out.is_empty() {
            // try_write clears the write readiness on WouldBlock.
            match self.s.try_write(&out) {
                Ok(n) => {
                    out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    out.clear();
                    self.error.set(Some(e.kind()));
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

impl ConnStream for EpollStream {
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            ready!(self.s.poll_read_ready(cx))?;
            let mut buf = self.rbuf.borrow_mut();
            let size = self.read_size.get();
            if buf.capacity() < size / 2 {
                buf.reserve(size);
            }
            // try_read_buf clears the readiness on WouldBlock, so the next poll registers us.
            match self.s.try_read_buf(&mut buf) {
                Ok(0) => return Poll::Ready(Ok(None)),
                Ok(n) => {
                    if n >= size && size < MAX_READ {
                        self.read_size.set(size * 2);
                    }
                    return Poll::Ready(Ok(Some(buf.split().freeze())));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn send(&self, data: &[u8]) {
        if self.error.get().is_some() || data.is_empty() {
            return;
        }
        self.out.borrow_mut().extend_from_slice(data);
        let _ = self.write_queued();
    }

    fn unsent(&self) -> usize {
        self.out.borrow().len()
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if let Some(kind) = self.error.get() {
                return Poll::Ready(Err(kind.into()));
            }
            if self.out.borrow().is_empty() {
                return Poll::Ready(Ok(()));
            }
            ready!(self.s.poll_write_ready(cx))?;
            self.write_queued()?;
        }
    }

    fn close(self) {
        // Output not taken by the kernel by now is dropped with the socket.
    }
}
