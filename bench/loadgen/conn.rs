//! One client connection: the library's sans-IO `ClientCore` (commands out, replies in, one
//! deadline per expected reply) driven over tokio (epoll). The only module of ringload that
//! touches a socket.
//!
//! Every expected reply remembers when the bytes that asked for it were written, so a
//! pipelined group's replies each get their own latency from the one write that sent them.
//! Plain TCP writes are vectored (a header block and body slices go out in one `writev`);
//! after STARTTLS the library's rustls transport carries the bytes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use ringrelay::client::core::{ClientCore, CoreError, Phase, Timeouts};
use ringrelay::client::transport::{Plain, Stream, TlsStream};
use ringrelay::client::{TlsError, TlsFailure};
use ringrelay::Reply;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::args::Target;

/// Why a connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Connecting failed.
    #[error("connect: {0}")]
    Connect(io::Error),
    /// Reading or writing failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection.
    #[error("server closed the connection")]
    Closed,
    /// Garbage, an unsolicited reply, or a reply too late.
    #[error("{0}")]
    Protocol(CoreError),
    /// TLS failed (a sentence naming the server and the flag that changes it).
    #[error("{0}")]
    Tls(TlsError),
}

impl ConnError {
    /// A short, bounded label for error counts.
    pub fn label(&self) -> String {
        match self {
            ConnError::Connect(e) => format!("connect: {}", io_label(e)),
            ConnError::Io(e) => format!("I/O: {}", io_label(e)),
            ConnError::Closed => "server closed the connection".into(),
            ConnError::Protocol(CoreError::Timeout(p)) => {
                format!("timeout waiting for {}", p.name())
            }
            ConnError::Protocol(CoreError::Reply(_)) => "malformed reply".into(),
            // RFC 5321 §3.8: a server that must close may say 421 at any time.
            ConnError::Protocol(CoreError::Unsolicited(r)) if r.code() == 421 => {
                "421 while idle (server closing)".into()
            }
            ConnError::Protocol(CoreError::Unsolicited(_)) => "unsolicited reply".into(),
            ConnError::Protocol(CoreError::WriteTimeout) => "timeout writing".into(),
            ConnError::Tls(e) => e.to_string(),
        }
    }
}

fn io_label(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(_) => format!("{:?}", e.kind()),
        None => e.to_string(),
    }
}

enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<Stream>),
}

/// A connection and its protocol state.
pub struct Conn {
    io: Io,
    core: ClientCore,
    rbuf: BytesMut,
    /// Send time of each reply still expected, in order (None until written).
    sent: VecDeque<Option<Instant>>,
    out: Vec<Bytes>,
    last_write: Instant,
}

/// A reply with the time its command was written and the time it arrived.
pub struct Timed {
    pub phase: Phase,
    pub reply: Reply,
    pub sent: Instant,
    pub at: Instant,
}

impl Timed {
    /// Microseconds from the write to the reply.
    pub fn micros(&self) -> u64 {
        micros(self.at.saturating_duration_since(self.sent))
    }
}

/// A duration in whole microseconds (at least 1, for histograms).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Conn {
    /// Connects (the greeting is then the first reply expected).
    pub async fn connect(target: &Target, timeout: Duration) -> Result<Self, ConnError> {
        let timed_out =
            |_| ConnError::Connect(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
        let io = match target {
            Target::Tcp(addr) => {
                let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
                    .await
                    .map_err(timed_out)?
                    .map_err(ConnError::Connect)?;
                let _ = tcp.set_nodelay(true);
                Io::Tcp(tcp)
            }
            Target::Unix(path) => Io::Unix(
                tokio::time::timeout(timeout, UnixStream::connect(path))
                    .await
                    .map_err(timed_out)?
                    .map_err(ConnError::Connect)?,
            ),
        };
        let now = Instant::now();
        let mut sent = VecDeque::with_capacity(8);
        sent.push_back(Some(now));
        Ok(Self {
            io,
            core: ClientCore::new(Timeouts::uniform(timeout), now),
            rbuf: BytesMut::with_capacity(4096),
            sent,
            out: Vec::with_capacity(8),
            last_write: now,
        })
    }

    /// Parse RFC 2034 codes from now on (after ENHANCEDSTATUSCODES was offered).
    pub fn set_enhanced_codes(&mut self, on: bool) {
        self.core.enhanced_codes = on;
    }

    /// Queues a command line (CRLF added) that expects one reply.
    pub fn command(&mut self, line: &[u8], phase: Phase) {
        self.core.command(Instant::now(), line, phase);
        self.sent.push_back(None);
    }

    /// Queues body bytes (no reply of their own).
    pub fn raw(&mut self, bytes: Bytes) {
        self.core.send_raw(bytes);
    }

    /// Expects one more reply to bytes already queued or written (LMTP's per-recipient
    /// replies to the end of data); it is timed from the next write, or the last one.
    pub fn expect(&mut self, phase: Phase) {
        self.core.expect_reply(phase, Instant::now());
        let t = if self.core.has_transmit() {
            None
        } else {
            Some(self.last_write)
        };
        self.sent.push_back(t);
    }

    /// Replies still owed: expected and not yet returned by `reply` (the core's own count
    /// excludes replies already parsed but not yet taken).
    pub fn owed(&self) -> usize {
        self.sent.len()
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.core.has_transmit() {
            return Ok(());
        }
        let now = Instant::now();
        self.last_write = now;
        for s in self.sent.iter_mut().rev() {
            if s.is_some() {
                break;
            }
            *s = Some(now);
        }
        while let Some(b) = self.core.poll_transmit() {
            self.out.push(b);
        }
        let res = match &mut self.io {
            Io::Tcp(s) => write_vectored_all(s, &mut self.out).await,
            Io::Unix(s) => write_vectored_all(s, &mut self.out).await,
            Io::Tls(s) => {
                let mut r = Ok(());
                for b in self.out.drain(..) {
                    if let Err(e) = s.write_all(&b).await {
                        r = Err(e);
                        break;
                    }
                }
                r
            }
        };
        self.out.clear();
        res.map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => ConnError::Closed,
            _ => ConnError::Io(e),
        })
    }

    /// Waits for the next reply owed.
    pub async fn reply(&mut self) -> Result<Timed, ConnError> {
        loop {
            if let Some((phase, reply)) = self.core.poll_reply() {
                let sent = self.sent.pop_front().flatten().unwrap_or(self.last_write);
                return Ok(Timed {
                    phase,
                    reply,
                    sent,
                    at: Instant::now(),
                });
            }
            if let Some(e) = self.core.error() {
                return Err(ConnError::Protocol(e.clone()));
            }
            self.rbuf.clear();
            let deadline = self.core.poll_timeout();
            let read = async {
                match &mut self.io {
                    Io::Tcp(s) => s.read_buf(&mut self.rbuf).await,
                    Io::Unix(s) => s.read_buf(&mut self.rbuf).await,
                    Io::Tls(s) => s.read_buf(&mut self.rbuf).await,
                }
            };
            let n = match deadline {
                Some(d) => {
                    match tokio::time::timeout_at(tokio::time::Instant::from_std(d), read).await {
                        Ok(r) => r?,
                        Err(_) => {
                            self.core.handle_timeout(Instant::now());
                            let e = self.core.error().cloned();
                            return Err(ConnError::Protocol(
                                e.unwrap_or(CoreError::Timeout(Phase::Other)),
                            ));
                        }
                    }
                }
                None => read.await?,
            };
            if n == 0 {
                return Err(ConnError::Closed);
            }
            self.core.handle_input(Instant::now(), &self.rbuf);
        }
    }

    /// Sends a command and waits for its reply.
    pub async fn roundtrip(&mut self, line: &[u8], phase: Phase) -> Result<Timed, ConnError> {
        self.command(line, phase);
        self.flush().await?;
        self.reply().await
    }

    /// After a 220 to STARTTLS: the TLS handshake (RFC 3207; no plaintext may follow the 220)
    /// with `peer` (`host:port`, for errors), whose certificate must hold `server_name`.
    pub async fn start_tls(
        mut self,
        config: Arc<rustls::ClientConfig>,
        peer: &str,
        server_name: &str,
    ) -> Result<Self, ConnError> {
        let error = |failure| {
            ConnError::Tls(TlsError {
                peer: peer.to_string(),
                failure,
                flags: crate::args::TLS_FLAGS,
            })
        };
        if !self.core.take_buffered_input().is_empty() {
            return Err(error(TlsFailure::CleartextAfterStartTls));
        }
        let plain = match self.io {
            Io::Tcp(tcp) => Plain::Tcp(tcp),
            Io::Unix(unix) => Plain::Unix(unix),
            Io::Tls(_) => return Err(error(TlsFailure::Handshake("already TLS".into()))),
        };
        let tls = TlsStream::handshake(plain, config, server_name)
            .await
            .map_err(|e| error(TlsFailure::from_handshake(&e)))?;
        self.io = Io::Tls(Box::new(Stream::Tls(Box::new(tls))));
        Ok(self)
    }

    /// QUIT, its reply (not waited for long), then close.
    pub async fn quit(mut self) {
        self.command(b"QUIT", Phase::Other);
        if self.flush().await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.reply()).await;
        }
        match self.io {
            Io::Tcp(mut s) => {
                let _ = s.shutdown().await;
            }
            Io::Unix(mut s) => {
                let _ = s.shutdown().await;
            }
            Io::Tls(_) => {}
        }
    }
}

/// Writes all pieces with `writev`, handling short writes.
async fn write_vectored_all<W: AsyncWrite + Unpin>(
    s: &mut W,
    pieces: &mut [Bytes],
) -> io::Result<()> {
    let mut first = 0;
    while first < pieces.len() {
        let n = {
            let slices: Vec<IoSlice<'_>> = pieces[first..]
                .iter()
                .take(64)
                .map(|b| IoSlice::new(b))
                .collect();
            s.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut left = n;
        while left > 0 {
            let p = &mut pieces[first];
            if p.len() <= left {
                left -= p.len();
                first += 1;
            } else {
                p.advance(left);
                left = 0;
            }
        }
        while first < pieces.len() && pieces[first].is_empty() {
            first += 1;
        }
    }
    Ok(())
}
