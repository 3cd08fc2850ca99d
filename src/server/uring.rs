//! The io_uring driver (tokio-uring): the only module that calls tokio-uring, so the runtime
//! can be swapped. Buffers are owned by the kernel while an operation is in flight and are
//! handed back on completion; operations are always awaited, never dropped.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::{TcpListener, TcpStream};

use super::accept::Acceptor;
use super::conn::ConnStream;

/// Checks that this process may create an io_uring instance.
pub(crate) fn probe() -> io::Result<()> {
    tokio_uring::Runtime::new(&tokio_uring::builder()).map(drop)
}

/// Runs `f` to completion on a new io_uring event loop on this thread.
pub(crate) fn block_on<F: Future>(f: F) -> io::Result<F::Output> {
    let rt = tokio_uring::Runtime::new(&tokio_uring::builder())?;
    Ok(rt.block_on(f))
}

/// A listener on the io_uring loop.
pub(crate) struct UringListener(TcpListener);

impl UringListener {
    pub(crate) fn from_std(l: std::net::TcpListener) -> Self {
        Self(TcpListener::from_std(l))
    }
}

impl Acceptor for UringListener {
    type Stream = UringStream;

    async fn accept(&self) -> io::Result<(UringStream, core::net::SocketAddr)> {
        let (s, peer) = self.0.accept().await?;
        let _ = s.set_nodelay(true);
        Ok((UringStream(s), peer))
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// A connection on the io_uring loop.
pub(crate) struct UringStream(TcpStream);

impl ConnStream for UringStream {
    async fn read(&self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        let len = buf.len();
        let (res, slice) = self.0.read(buf.slice(len..)).await;
        (res, slice.into_inner())
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        self.0.write_all(buf).await
    }

    fn shutdown_read(&self) {
        let _ = self.0.shutdown(Shutdown::Read);
    }
}
