//! The scripted upstream: one task per connection reading its end of a `tokio::io::duplex`
//! and answering from a script (the modes of tests/peers/relay_upstream.py that the in-memory
//! tests use), recording what it saw; and the relay's end of each duplex, which records every
//! write the relay makes (`Counted`).

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use ringrelay::client::{ConnectOptions, SmtpClient};
use ringrelay::relay::connector::{Connecting, Connector};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

// The scripted upstream

/// How the upstream behaves (the modes of tests/peers/relay_upstream.py that these tests use).
/// In every mode MAIL from an address containing "refused" gets 550 5.7.1, RCPT without an
/// accepted MAIL 503 5.5.1 and DATA without a recipient 554 5.5.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A well-behaved server.
    Ok,
    /// RCPT: 550 5.1.1 if the address contains "bad", 450 4.2.1 if "busy".
    RefuseRcpt,
    /// 452 4.3.1 after the final dot.
    Eod452,
    /// No PIPELINING in the EHLO reply.
    NoPipelining,
    /// Closes the connection right after its 250 to a final dot.
    IdleClose,
    /// After its 250 to a final dot, answers the next command "421 4.4.2 idle, closing" and
    /// closes the connection.
    Idle421,
}

/// What the upstream saw, and what the relay wrote to it.
#[derive(Debug, Default)]
pub struct Seen {
    pub connects: usize,
    /// Every octet received, per connection.
    pub received: Vec<Vec<u8>>,
    /// `(connection, command line)`, message content excluded.
    pub commands: Vec<(usize, String)>,
    /// `(verb, complete lines already waiting behind it)` for each MAIL (and, without
    /// PIPELINING, each RCPT and DATA), as the upstream took it.
    pub buffered: Vec<(String, usize)>,
    /// The wire form (dot-stuffed, terminator excluded) of each message answered 250.
    pub delivered: Vec<Vec<u8>>,
    /// Each write the relay made, on any connection, as written.
    pub writes: Vec<Vec<u8>>,
}

pub type Shared = Rc<RefCell<Seen>>;

/// Connects the relay's pool to a new scripted upstream task for each connection.
pub struct Scripted {
    pub mode: Mode,
    pub seen: Shared,
}

impl Connector for Scripted {
    fn connect(&self, _server: &str, opts: ConnectOptions) -> Connecting {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let k = {
            let mut s = self.seen.borrow_mut();
            s.connects += 1;
            s.received.push(Vec::new());
            s.connects
        };
        tokio::task::spawn_local(upstream(theirs, k, self.mode, self.seen.clone()));
        let counted = Counted {
            inner: ours,
            seen: self.seen.clone(),
        };
        Box::pin(async move { SmtpClient::over_stream(counted, "upstream.test", opts).await })
    }
}

/// The relay's end of the duplex, recording every write.
struct Counted {
    inner: DuplexStream,
    seen: Shared,
}

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counted")
    }
}

impl Counted {
    fn record(&self, bufs: &[IoSlice<'_>], mut n: usize) {
        let mut w = Vec::with_capacity(n);
        for b in bufs {
            let take = n.min(b.len());
            w.extend_from_slice(&b[..take]);
            n -= take;
        }
        self.seen.borrow_mut().writes.push(w);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.record(bufs, n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One upstream connection (number `k`), answering as `mode` says until the relay closes it.
async fn upstream(mut io: DuplexStream, k: usize, mode: Mode, seen: Shared) {
    let mut input = Upstream {
        buf: Vec::new(),
        k,
        seen: seen.clone(),
    };
    let say = |text: &str| format!("{text}\r\n");
    if io
        .write_all(say("220 scripted.upstream ESMTP").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let (mut mail_ok, mut rcpts, mut closing) = (false, 0, false);
    while let Some(line) = input.line(&mut io).await {
        seen.borrow_mut().commands.push((k, line.clone()));
        if closing {
            let _ = io
                .write_all(say("421 4.4.2 idle, closing").as_bytes())
                .await;
            return;
        }
        let verb = line.get(..4).unwrap_or(&line).to_ascii_uppercase();
        let lockstep = mode == Mode::NoPipelining && ["RCPT", "DATA"].contains(&verb.as_str());
        if verb == "MAIL" || lockstep {
            let behind = input.buf.windows(2).filter(|w| w == b"\r\n").count();
            seen.borrow_mut().buffered.push((verb.clone(), behind));
        }
        let reply = match verb.as_str() {
            "EHLO" => {
                let pipelining = if mode == Mode::NoPipelining {
                    ""
                } else {
                    "250-PIPELINING\r\n"
                };
                format!(
                    "250-scripted.upstream\r\n{pipelining}250-8BITMIME\r\n\
                     250-ENHANCEDSTATUSCODES\r\n250 SIZE 67108864"
                )
            }
            "MAIL" if line.contains("refused") => {
                (mail_ok, rcpts) = (false, 0);
                "550 5.7.1 sender refused".into()
            }
            "MAIL" => {
                (mail_ok, rcpts) = (true, 0);
                "250 2.1.0 sender ok".into()
            }
            "RCPT" if !mail_ok => "503 5.5.1 need MAIL first".into(),
            "RCPT" if mode == Mode::RefuseRcpt && line.contains("bad") => {
                "550 5.1.1 no such user here".into()
            }
            "RCPT" if mode == Mode::RefuseRcpt && line.contains("busy") => {
                "450 4.2.1 mailbox busy, try later".into()
            }
            "RCPT" => {
                rcpts += 1;
                "250 2.1.5 recipient ok".into()
            }
            "DATA" if rcpts == 0 => "554 5.5.1 no valid recipients".into(),
            "DATA" => {
                if io.write_all(say("354 go ahead").as_bytes()).await.is_err() {
                    return;
                }
                let Some(message) = input.message(&mut io).await else {
                    return;
                };
                (mail_ok, rcpts) = (false, 0);
                if mode == Mode::Eod452 {
                    "452 4.3.1 insufficient storage, later".into()
                } else {
                    seen.borrow_mut().delivered.push(message);
                    if mode == Mode::IdleClose {
                        let _ = io.write_all(say("250 2.0.0 delivered").as_bytes()).await;
                        return;
                    }
                    closing = mode == Mode::Idle421;
                    "250 2.0.0 delivered".into()
                }
            }
            "RSET" => {
                (mail_ok, rcpts) = (false, 0);
                "250 2.0.0 reset".into()
            }
            "QUIT" => {
                let _ = io.write_all(say("221 2.0.0 bye").as_bytes()).await;
                return;
            }
            _ => "500 5.5.2 unrecognised command".into(),
        };
        if io.write_all(say(&reply).as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The upstream's input: what it has read and not yet taken.
struct Upstream {
    buf: Vec<u8>,
    k: usize,
    seen: Shared,
}

impl Upstream {
    /// Reads more; false at the end of the stream.
    async fn fill(&mut self, io: &mut DuplexStream) -> bool {
        let mut chunk = [0u8; 8192];
        match io.read(&mut chunk).await {
            Ok(n) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.seen.borrow_mut().received[self.k - 1].extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// The next line, without its CRLF.
    async fn line(&mut self, io: &mut DuplexStream) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).take(i).collect();
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            if !self.fill(io).await {
                return None;
            }
        }
    }

    /// The message after a 354, in wire form, up to (not including) the final dot line.
    async fn message(&mut self, io: &mut DuplexStream) -> Option<Vec<u8>> {
        let mut wire = Vec::new();
        loop {
            let line = self.line(io).await?;
            if line == "." {
                return Some(wire);
            }
            wire.extend_from_slice(line.as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
    }
}
