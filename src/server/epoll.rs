//! The epoll driver (plain tokio, current-thread): the fallback when io_uring is unavailable
//! (kernel.io_uring_disabled, seccomp). Same connection logic and the same discipline: reads
//! and writes are awaited to completion, and timeouts shut the socket's read side down.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};

use super::accept::Acceptor;
use super::conn::ConnStream;

/// Runs `f` to completion on a new epoll event loop on this thread.
pub(crate) fn block_on<F: Future>(f: F) -> io::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&rt, f))
}

/// A listener on the epoll loop.
pub(crate) struct EpollListener(TcpListener);

impl EpollListener {
    pub(crate) fn from_std(l: std::net::TcpListener) -> io::Result<Self> {
        Ok(Self(TcpListener::from_std(l)?))
    }
}

impl Acceptor for EpollListener {
    type Stream = EpollStream;

    async fn accept(&self) -> io::Result<(EpollStream, core::net::SocketAddr)> {
        let (s, peer) = self.0.accept().await?;
        let _ = s.set_nodelay(true);
        Ok((EpollStream(s), peer))
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// A connection on the epoll loop.
pub(crate) struct EpollStream(TcpStream);

impl ConnStream for EpollStream {
    async fn read(&self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        loop {
            if let Err(e) = self.0.readable().await {
                return (Err(e), buf);
            }
            match self.0.try_read_buf(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                res => return (res, buf),
            }
        }
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut done = 0;
        while done < buf.len() {
            if let Err(e) = self.0.writable().await {
                return (Err(e), buf);
            }
            match self.0.try_write(&buf[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    fn shutdown_read(&self) {
        let _ = socket2::SockRef::from(&self.0).shutdown(Shutdown::Read);
    }
}
