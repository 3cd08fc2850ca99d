//! `SmtpClient`: the tokio driver around `ClientCore`: connecting (TCP, a Unix socket, a
//! supplied stream), the features, command lines one at a time or pipelined, data, replies,
//! and a debug transcript. smtplib's connection-level commands (helo, ehlo, starttls,
//! login/auth, verify, noop, rset, docmd, quit) live in `smtp/commands.rs`, sending in `send.rs`.
//!
//! Reads use tokio's cancel-safe `read_buf`, so a timed-out read may be dropped here; this
//! driver never runs on io_uring. Everything the core has to transmit at a flush goes out in
//! one vectored write. Timers and timeouts come from the runtime facade (`crate::rt`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::net::UnixStream;

use crate::engine;

mod commands;

use super::core::{ClientCore, CoreError, Phase, Timeouts};
use super::dial::{connect_one, local_fqdn, resolve};
use super::error::ClientError;
use super::features::Features;
use super::transport::{ByteStream, Plain, Stream, TlsOptions, TlsStream};
use crate::proto::Reply;
use crate::rt;

/// How to connect.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// Local address to bind before connecting (smtplib's `source_address`).
    pub source_address: Option<SocketAddr>,
    /// Reply timeouts (default: RFC 5321's per-phase values).
    pub timeouts: Timeouts,
    /// Name for HELO/EHLO (default: the system host name).
    pub local_hostname: Option<String>,
    /// Speak LMTP (LHLO; one reply per recipient after the data).
    pub lmtp: bool,
    /// Implicit TLS from the first byte (smtplib's SMTP_SSL, port 465).
    pub implicit_tls: Option<TlsOptions>,
    /// Server name for TLS verification (default: the host connected to).
    pub tls_server_name: Option<String>,
    /// 0 = quiet, 1 = commands and replies on stderr, 2 = the same with timestamps.
    pub debug_level: u8,
}

/// An SMTP or LMTP client connection.
#[derive(Debug)]
pub struct SmtpClient {
    pub(super) stream: Option<Stream>,
    pub(super) core: ClientCore,
    rbuf: BytesMut,
    pub(super) features: Option<Features>,
    helo_done: bool,
    local_hostname: String,
    server_name: String,
    /// Whom we talk to, for error messages (`host:port`, or the socket path).
    peer: String,
    pub(super) lmtp: bool,
    debug_level: u8,
    timeouts: Timeouts,
    /// What one flush writes (kept to reuse its allocation).
    outgoing: Vec<Bytes>,
}

impl SmtpClient {
    /// Connects over TCP and reads the greeting (220 or `ConnectRefused`). On a shard's
    /// io_uring engine the socket lives on the engine's ring; elsewhere on tokio.
    pub async fn connect(host: &str, port: u16, opts: ConnectOptions) -> Result<Self, ClientError> {
        let addr_text = format!("{host}:{port}");
        let connect = async {
            let addrs = resolve(host, port).await?;
            let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
            for addr in addrs {
                match connect_one(addr, opts.source_address).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        let plain = rt::timeout(opts.timeouts.greeting, connect)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            })
            .map_err(|source| ClientError::Connect {
                addr: addr_text.clone(),
                source,
            })?;
        let name = opts
            .tls_server_name
            .clone()
            .unwrap_or_else(|| host.to_string());
        Self::start(plain, addr_text, name, opts).await
    }

    /// Connects to a Unix-domain socket (LMTP servers usually listen on one).
    pub async fn connect_unix(path: &Path, opts: ConnectOptions) -> Result<Self, ClientError> {
        let s = if engine::is_current() {
            engine::Socket::connect_unix(path).await.map(Plain::Ring)
        } else {
            UnixStream::connect(path).await.map(Plain::Unix)
        };
        let s = s.map_err(|source| ClientError::Connect {
            addr: path.display().to_string(),
            source,
        })?;
        Self::start(s, path.display().to_string(), "localhost".into(), opts).await
    }

    /// Talks over a stream the caller has already opened (one end of `tokio::io::duplex`,
    /// say) and reads the greeting; `server_name` is the name TLS verifies.
    pub async fn over_stream(
        stream: impl ByteStream + 'static,
        server_name: &str,
        opts: ConnectOptions,
    ) -> Result<Self, ClientError> {
        let plain = Plain::Supplied(Box::new(stream));
        Self::start(
            plain,
            server_name.to_string(),
            server_name.to_string(),
            opts,
        )
        .await
    }

    async fn start(
        plain: Plain,
        peer: String,
        server_name: String,
        opts: ConnectOptions,
    ) -> Result<Self, ClientError> {
        let stream = match &opts.implicit_tls {
            Some(tls) => {
                let s = TlsStream::establish(plain, tls, &peer, &server_name).await?;
                if opts.debug_level > 0 {
                    trace_line(opts.debug_level, "tls", &s.describe());
                }
                Stream::Tls(Box::new(s))
            }
            None => Stream::Plain(plain),
        };
        let mut c = Self {
            stream: Some(stream),
            core: ClientCore::new(opts.timeouts, Instant::now()),
            rbuf: BytesMut::with_capacity(4096),
            features: None,
            helo_done: false,
            local_hostname: opts.local_hostname.clone().unwrap_or_else(local_fqdn),
            server_name,
            peer,
            lmtp: opts.lmtp,
            debug_level: opts.debug_level,
            timeouts: opts.timeouts,
            outgoing: Vec::new(),
        };
        let greeting = c.read_reply().await?;
        if greeting.code() != 220 {
            return Err(ClientError::ConnectRefused(greeting));
        }
        Ok(c)
    }

    /// The EHLO features (None before EHLO or after HELO).
    pub fn features(&self) -> Option<&Features> {
        self.features.as_ref()
    }

    /// smtplib's `has_extn`.
    pub fn has_extn(&self, name: &str) -> bool {
        self.features.as_ref().is_some_and(|f| f.has(name))
    }

    /// True when the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.stream.as_ref().is_some_and(Stream::is_tls)
    }

    /// Sends one command line and returns the reply whatever its code (for relays, which
    /// mirror a transaction command by command).
    pub async fn command(&mut self, line: &str, phase: Phase) -> Result<Reply, ClientError> {
        self.cmd(line, phase).await
    }

    /// Queues one command line without writing it (pipelining, RFC 2920): `flush` writes
    /// everything queued in one go, and `read_reply` returns the replies in order.
    pub fn pipeline(&mut self, line: &str, phase: Phase) -> Result<(), ClientError> {
        if line.contains(['\r', '\n']) {
            return Err(ClientError::NotSupported("a command with CR or LF".into()));
        }
        self.queue(line, phase);
        Ok(())
    }

    /// Writes message pieces already in wire form (after a 354), all in one write, without
    /// waiting for anything.
    pub async fn write_data(
        &mut self,
        pieces: impl IntoIterator<Item = Bytes>,
    ) -> Result<(), ClientError> {
        for p in pieces {
            self.queue_raw(p);
        }
        self.flush().await
    }

    /// Ends DATA: the last pieces of the message (in wire form) and the terminator go out in
    /// one write, then waits for the final reply.
    pub async fn end_data(
        &mut self,
        last: impl IntoIterator<Item = Bytes>,
    ) -> Result<Reply, ClientError> {
        for p in last {
            self.queue_raw(p);
        }
        self.queue_raw(Bytes::from_static(b".\r\n"));
        self.core.expect_reply(Phase::DataEnd, Instant::now());
        self.flush().await?;
        self.read_reply().await
    }

    /// True while the connection is open as far as we know.
    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// True when the server sent something no reply owed accounts for (input left after the
    /// last reply read, or waiting in the socket), or closed the connection: a connection
    /// between transactions in that state is out of step and must not be used again.
    pub fn has_unsolicited_input(&self) -> bool {
        self.core.has_buffered_input()
            || self.stream.as_ref().is_some_and(Stream::has_pending_input)
    }

    /// Sends one command and waits for its reply.
    pub(super) async fn cmd(&mut self, line: &str, phase: Phase) -> Result<Reply, ClientError> {
        self.cmd_quiet(line, phase, false).await
    }

    async fn cmd_quiet(
        &mut self,
        line: &str,
        phase: Phase,
        secret: bool,
    ) -> Result<Reply, ClientError> {
        if line.contains(['\r', '\n']) {
            return Err(ClientError::NotSupported("a command with CR or LF".into()));
        }
        if self.debug_level > 0 {
            let shown = if secret { "<credentials>" } else { line };
            self.trace("send", &format!("{shown:?}"));
        }
        self.core.command(Instant::now(), line.as_bytes(), phase);
        self.flush().await?;
        self.read_reply().await
    }

    /// Queues a command without waiting (pipelining).
    pub(super) fn queue(&mut self, line: &str, phase: Phase) {
        if self.debug_level > 0 {
            self.trace("send", &format!("{line:?}"));
        }
        self.core.command(Instant::now(), line.as_bytes(), phase);
    }

    /// Queues body bytes.
    pub(super) fn queue_raw(&mut self, bytes: Bytes) {
        if self.debug_level > 1 {
            self.trace("data", &format!("{} octets", bytes.len()));
        }
        self.core.send_raw(bytes);
    }

    /// Writes everything queued, in one vectored write.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        // A server that stops reading must not hold us forever: each flush gets the
        // data-block timeout (RFC 5321 §4.5.3.2, 3 minutes), like a block of message data.
        let limit = self.timeouts.data_block;
        let stream = self
            .stream
            .as_mut()
            .ok_or(ClientError::ServerDisconnected)?;
        self.outgoing
            .extend(std::iter::from_fn(|| self.core.poll_transmit()));
        if self.outgoing.is_empty() {
            return Ok(());
        }
        let written = rt::timeout(limit, stream.write_vectored_all(&self.outgoing)).await;
        self.outgoing.clear();
        let Ok(result) = written else {
            // Dropping the write is safe (tokio's are readiness based; the engine cancels and
            // keeps the memory until the kernel is done), and the connection is unusable now
            // anyway.
            if let Some(s) = self.stream.take() {
                s.shutdown();
            }
            return Err(ClientError::Protocol(CoreError::WriteTimeout));
        };
        result.map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                ClientError::ServerDisconnected
            }
            _ => ClientError::Io(e),
        })
    }

    /// Waits for the next reply owed by the server.
    pub async fn read_reply(&mut self) -> Result<Reply, ClientError> {
        loop {
            if let Some((_, r)) = self.core.poll_reply() {
                if self.debug_level > 0 {
                    self.trace("reply", &format!("{r}"));
                }
                return Ok(r);
            }
            if let Some(e) = self.core.error() {
                return Err(ClientError::Protocol(e.clone()));
            }
            let stream = self
                .stream
                .as_mut()
                .ok_or(ClientError::ServerDisconnected)?;
            let deadline = self.core.poll_timeout();
            self.rbuf.clear();
            let read = stream.read_buf(&mut self.rbuf);
            let n = match deadline {
                Some(d) => match rt::timeout_at(d, read).await {
                    Ok(r) => r?,
                    Err(_) => {
                        self.core.handle_timeout(Instant::now());
                        let e = self
                            .core
                            .error()
                            .cloned()
                            .unwrap_or(CoreError::Timeout(Phase::Other));
                        if let Some(s) = self.stream.take() {
                            s.shutdown();
                        }
                        return Err(ClientError::Protocol(e));
                    }
                },
                None => read.await?,
            };
            if n == 0 {
                self.stream = None;
                return Err(ClientError::ServerDisconnected);
            }
            self.core.handle_input(Instant::now(), &self.rbuf);
        }
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn trace(&self, what: &str, text: &str) {
        trace_line(self.debug_level, what, text);
    }
}

/// One transcript line on stderr (`-v`), with the time of day at level 2 (`-vv`).
fn trace_line(debug_level: u8, what: &str, text: &str) {
    let mut err = std::io::stderr().lock();
    if debug_level > 1 {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = now.as_secs() % 86_400;
        let _ = write!(
            err,
            "{:02}:{:02}:{:02}.{:06} ",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            now.subsec_micros()
        );
    }
    let _ = writeln!(err, "{what}: {text}");
}
