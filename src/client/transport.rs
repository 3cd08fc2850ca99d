//! Byte transports for the client driver: TCP and Unix sockets (LMTP) on tokio, sockets on the
//! io_uring engine (the relay's upstream connections in a uring shard), a stream the caller
//! supplies (in-memory tests), and TLS on top of any of them (rustls driven through its
//! sans-IO API, so the same code serves every runtime).
//!
//! A read dropped by a timeout is safe everywhere: tokio's reads are readiness based, and the
//! engine cancels the operation and keeps its buffer until the kernel is done with it; the
//! connection is unusable afterwards either way (the client core reports the timeout). Writes
//! take a list of pieces and hand them to the kernel in as few vectored writes as it accepts
//! (TLS: all pieces into rustls, then the records in one write), so a batch of commands or
//! body pieces costs one system call.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::engine;

pub use super::tls_trust::TlsOptions;
use super::{TlsError, TlsFailure};

/// A byte stream a caller can hand the client (`SmtpClient::over_stream`): anything tokio
/// can read and write, such as one end of `tokio::io::duplex`.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug {}

impl<T: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug> ByteStream for T {}

/// A plain connection.
#[derive(Debug)]
pub enum Plain {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix-domain socket (LMTP).
    Unix(UnixStream),
    /// TCP or a Unix-domain socket on the io_uring engine.
    Ring(engine::Socket),
    /// A stream the caller opened (tests run the relay against in-memory upstreams).
    Supplied(Box<dyn ByteStream>),
}

impl Plain {
    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Plain::Tcp(s) => s.read_buf(buf).await,
            Plain::Unix(s) => s.read_buf(buf).await,
            Plain::Ring(s) => {
                let (r, b) = s.read(std::mem::take(buf)).await;
                *buf = b;
                r
            }
            Plain::Supplied(s) => s.read_buf(buf).await,
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Plain::Tcp(s) => s.write_all(data).await,
            Plain::Unix(s) => s.write_all(data).await,
            Plain::Ring(s) => s.write_all(vec![Bytes::copy_from_slice(data)]).await,
            Plain::Supplied(s) => s.write_all(data).await,
        }
    }

    async fn write_vectored_all(&mut self, pieces: &[Bytes]) -> io::Result<()> {
        match self {
            Plain::Tcp(s) => write_pieces(s, pieces).await,
            Plain::Unix(s) => write_pieces(s, pieces).await,
            Plain::Ring(s) => s.write_all(pieces.to_vec()).await,
            Plain::Supplied(s) => write_pieces(s, pieces).await,
        }
    }

    /// True when the socket holds unread input, or the peer has closed it (a peek that does
    /// not wait and consumes nothing). Unknown for a supplied stream: false.
    fn has_pending_input(&self) -> bool {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Plain::Tcp(s) => s.as_raw_fd(),
            Plain::Unix(s) => s.as_raw_fd(),
            Plain::Ring(s) => s.fd().as_raw_fd(),
            Plain::Supplied(_) => return false,
        };
        let mut byte = 0u8;
        // SAFETY: a one-octet peek into a local; MSG_DONTWAIT never blocks.
        let n = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n >= 0 || std::io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock
    }

    fn shutdown(&self) {
        let how = std::net::Shutdown::Both;
        let _ = match self {
            Plain::Tcp(s) => socket2::SockRef::from(s).shutdown(how),
            Plain::Unix(s) => socket2::SockRef::from(s).shutdown(how),
            Plain::Ring(s) => {
                s.shutdown();
                Ok(())
            }
            // No socket to shut down: it ends when it is dropped, which follows every shutdown.
            Plain::Supplied(_) => Ok(()),
        };
    }
}

/// Most pieces handed to one vectored write (well under every system's `IOV_MAX`).
const MAX_SLICES: usize = 64;

/// Writes every piece in order, in as few vectored writes as `w` accepts.
async fn write_pieces<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    pieces: &[Bytes],
) -> io::Result<()> {
    // The first piece not written whole, and how much of it is.
    let (mut first, mut done) = (0, 0);
    loop {
        while first < pieces.len() && done == pieces[first].len() {
            first += 1;
            done = 0;
        }
        if first == pieces.len() {
            return Ok(());
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        slices[0] = IoSlice::new(&pieces[first][done..]);
        let mut n = 1;
        for p in pieces[first + 1..].iter().filter(|p| !p.is_empty()) {
            if n == MAX_SLICES {
                break;
            }
            slices[n] = IoSlice::new(p);
            n += 1;
        }
        let mut written = w.write_vectored(&slices[..n]).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let left = pieces[first].len() - done;
            if written < left {
                done += written;
                break;
            }
            written -= left;
            first += 1;
            done = 0;
        }
    }
}

/// A connection, plain or TLS.
#[derive(Debug)]
pub enum Stream {
    /// No TLS.
    Plain(Plain),
    /// TLS over a plain connection.
    Tls(Box<TlsStream>),
}

impl Stream {
    /// Reads what is available into `buf` (0 = end of stream).
    pub async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Plain(p) => p.read_buf(buf).await,
            Stream::Tls(t) => t.read_buf(buf).await,
        }
    }

    /// Writes all of `data`.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(p) => p.write_all(data).await,
            Stream::Tls(t) => t.write_all(data).await,
        }
    }

    /// Writes all of `pieces`, in order: vectored writes on a plain connection; over TLS,
    /// every piece goes into rustls and the records go out together.
    pub async fn write_vectored_all(&mut self, pieces: &[Bytes]) -> io::Result<()> {
        match self {
            Stream::Plain(p) => p.write_vectored_all(pieces).await,
            Stream::Tls(t) => t.write_vectored_all(pieces).await,
        }
    }

    /// Shuts the socket down so a pending read completes.
    pub fn shutdown(&self) {
        match self {
            Stream::Plain(p) => p.shutdown(),
            Stream::Tls(t) => t.inner.shutdown(),
        }
    }

    /// True when the socket holds unread input or the peer has closed it (TLS: ciphertext
    /// counts too).
    pub fn has_pending_input(&self) -> bool {
        match self {
            Stream::Plain(p) => p.has_pending_input(),
            Stream::Tls(t) => t.inner.has_pending_input(),
        }
    }

    /// True after a TLS handshake.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

/// rustls over a plain connection.
#[derive(Debug)]
pub struct TlsStream {
    inner: Plain,
    conn: rustls::ClientConnection,
    scratch: BytesMut,
}

impl TlsStream {
    /// The handshake with `tls`'s checks, its failures as sentences about `peer` (the
    /// `host:port` shown to the user; `server_name` is the name the certificate must hold).
    pub async fn establish(
        inner: Plain,
        tls: &TlsOptions,
        peer: &str,
        server_name: &str,
    ) -> Result<Self, TlsError> {
        let error = |failure| TlsError {
            peer: peer.to_string(),
            failure,
            flags: tls.flag_names,
        };
        let config = tls.client_config().map_err(error)?;
        Self::handshake(inner, config, server_name)
            .await
            .map_err(|e| error(TlsFailure::from_handshake(&e)))
    }

    /// Performs the TLS handshake as a client for `server_name`.
    pub async fn handshake(
        inner: Plain,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> io::Result<Self> {
        let name =
            rustls::pki_types::ServerName::try_from(server_name.to_string()).map_err(|_| {
                let failure = TlsFailure::BadServerName(server_name.to_string());
                io::Error::new(io::ErrorKind::InvalidInput, failure)
            })?;
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut s = Self {
            inner,
            conn,
            scratch: BytesMut::with_capacity(16 * 1024),
        };
        while s.conn.is_handshaking() {
            s.flush_tls().await?;
            if s.conn.is_handshaking() && s.conn.wants_read() && s.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during TLS handshake",
                ));
            }
        }
        s.flush_tls().await?;
        Ok(s)
    }

    /// The negotiated version and cipher suite and the server certificate's subject, for a
    /// transcript (`TLSv1.3, cipher TLS13_AES_256_GCM_SHA384, peer subject "CN=localhost"`).
    pub fn describe(&self) -> String {
        super::tls_trust::describe_session(&self.conn)
    }

    async fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            let mut out = Vec::new();
            self.conn.write_tls(&mut out)?;
            self.inner.write_all(&out).await?;
        }
        Ok(())
    }

    /// Reads ciphertext and processes it; returns the ciphertext octets read.
    async fn fill(&mut self) -> io::Result<usize> {
        self.scratch.clear();
        let n = self.inner.read_buf(&mut self.scratch).await?;
        if n > 0 {
            let mut slice = &self.scratch[..n];
            while !slice.is_empty() {
                self.conn.read_tls(&mut slice)?;
                self.conn
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
        }
        Ok(n)
    }

    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            let mut tmp = [0u8; 8192];
            match self.conn.reader().read(&mut tmp) {
                Ok(n) => {
                    buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            self.flush_tls().await?;
            if self.fill().await? == 0 {
                return Ok(0);
            }
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.encrypt(data).await?;
        self.flush_tls().await
    }

    async fn write_vectored_all(&mut self, pieces: &[Bytes]) -> io::Result<()> {
        for p in pieces {
            self.encrypt(p).await?;
        }
        self.flush_tls().await
    }

    /// Hands plaintext to rustls; when its outgoing buffer is full (64 KiB by default), the
    /// records so far are written first.
    async fn encrypt(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.conn.writer().write(data)?;
            if n == 0 {
                self.flush_tls().await?;
            }
            data = &data[n..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Takes at most `step` octets per write, recording each write's size.
    #[derive(Default)]
    struct Trickle {
        step: usize,
        got: Vec<u8>,
        writes: Vec<usize>,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(b)])
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.step - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
            }
            self.writes.push(n);
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn pieces_survive_partial_writes() {
        let pieces: Vec<Bytes> = [
            "MAIL FROM:<a@b>\r\n",
            "",
            "RCPT TO:<c@d>\r\n",
            "",
            "DATA\r\n",
        ]
        .into_iter()
        .map(|s| Bytes::from_static(s.as_bytes()))
        .collect();
        let whole: Vec<u8> = pieces.concat();
        for step in [1, 5, 17, 18, 19, 1000] {
            let mut w = Trickle {
                step,
                ..Trickle::default()
            };
            write_pieces(&mut w, &pieces).await.unwrap();
            assert_eq!(w.got, whole, "step {step}");
            assert_eq!(w.writes.len(), whole.len().div_ceil(step), "step {step}");
        }
        let many: Vec<Bytes> = (0..200)
            .map(|i| Bytes::from(vec![b'a' + (i % 26) as u8; 3]))
            .collect();
        let mut w = Trickle {
            step: usize::MAX,
            ..Trickle::default()
        };
        write_pieces(&mut w, &many).await.unwrap();
        assert_eq!(w.got, many.concat());
        assert_eq!(
            w.writes,
            [3 * MAX_SLICES, 3 * MAX_SLICES, 3 * MAX_SLICES, 3 * 8]
        );
    }
}
