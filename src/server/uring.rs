//! The io_uring driver: the shard's listeners and connections on the native engine
//! (`crate::engine`), seen through the traits the connection logic shares with epoll. Input
//! arrives as views of the shard's DATA pool buffers; replies are queued and go out with the
//! loop turn's one submission.

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::accept::Acceptor;
use super::listener::ListenSocket;
use super::stream::ConnStream;
use crate::engine::{Listener, Stream};

/// A listener on the engine (multishot accept).
pub(crate) struct UringListener(Listener);

impl UringListener {
    /// Takes over a bound listener (on the shard's thread, inside its engine).
    pub(crate) fn new(l: ListenSocket) -> Self {
        Self(match l {
            ListenSocket::Tcp(l) => Listener::from_std(l),
            ListenSocket::Unix(l) => Listener::from_unix(l),
        })
    }
}

impl Acceptor for UringListener {
    type Stream = UringStream;

    async fn accept(&self) -> io::Result<(UringStream, Option<SocketAddr>)> {
        // TCP_NODELAY is inherited from the listening socket (set when it was bound).
        let (s, peer) = self.0.accept().await?;
        Ok((UringStream(s), peer))
    }

    async fn close(self) -> Vec<UringStream> {
        self.0.close().await.into_iter().map(UringStream).collect()
    }
}

/// A connection on the engine.
pub(crate) struct UringStream(Stream);

impl ConnStream for UringStream {
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        self.0.poll_recv(cx)
    }

    fn send(&self, data: &[u8]) {
        self.0.send(data);
    }

    fn unsent(&self) -> usize {
        self.0.unsent()
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_flush(cx)
    }

    fn close(self) {
        // The engine cancels what is in flight and closes the socket after its completions.
        drop(self.0);
    }
}
