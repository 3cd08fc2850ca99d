//! `ClientCore`: the sans-IO SMTP/LMTP client connection. Commands and body bytes go out
//! through `poll_transmit`, received bytes come in through `handle_input`, replies are matched
//! in order to the commands that expect them (`poll_reply`), and every expected reply carries
//! a deadline from the RFC 5321 §4.5.3.2 timeout of its phase, with time always passed in.
//!
//! Pipelining is natural: queue several commands, transmit once, then take the replies in
//! order. Body pieces are queued as `Bytes` and transmitted as they are (never glued).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::reply::{parse_reply, ReplyError};
use crate::proto::Reply;

/// What a command is, for its timeout and for error reporting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The 220 greeting.
    Greeting,
    /// HELO / EHLO / LHLO.
    Hello,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA (the 354).
    DataStart,
    /// The reply to the final dot or BDAT LAST.
    DataEnd,
    /// A BDAT chunk that is not the last.
    Bdat,
    /// Anything else (RSET, NOOP, VRFY, STARTTLS, AUTH, QUIT, ...).
    Other,
}

impl Phase {
    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Greeting => "greeting",
            Phase::Hello => "HELO/EHLO",
            Phase::Mail => "MAIL",
            Phase::Rcpt => "RCPT",
            Phase::DataStart => "DATA",
            Phase::DataEnd => "end of data",
            Phase::Bdat => "BDAT",
            Phase::Other => "command",
        }
    }
}

/// Per-phase reply timeouts; the defaults are RFC 5321 §4.5.3.2's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Initial 220: 5 minutes.
    pub greeting: Duration,
    /// MAIL: 5 minutes.
    pub mail: Duration,
    /// RCPT: 5 minutes.
    pub rcpt: Duration,
    /// DATA initiation: 2 minutes.
    pub data_start: Duration,
    /// Each data block / BDAT chunk: 3 minutes.
    pub data_block: Duration,
    /// DATA termination: 10 minutes.
    pub data_end: Duration,
    /// Other commands: 5 minutes.
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        Self {
            greeting: m(5),
            mail: m(5),
            rcpt: m(5),
            data_start: m(2),
            data_block: m(3),
            data_end: m(10),
            other: m(5),
        }
    }
}

impl Timeouts {
    /// The same timeout for every phase (smtplib's single `timeout`).
    pub fn uniform(d: Duration) -> Self {
        Self {
            greeting: d,
            mail: d,
            rcpt: d,
            data_start: d,
            data_block: d,
            data_end: d,
            other: d,
        }
    }

    fn of(&self, phase: Phase) -> Duration {
        match phase {
            Phase::Greeting => self.greeting,
            Phase::Hello | Phase::Other => self.other,
            Phase::Mail => self.mail,
            Phase::Rcpt => self.rcpt,
            Phase::DataStart => self.data_start,
            Phase::Bdat => self.data_block,
            Phase::DataEnd => self.data_end,
        }
    }
}

/// Why the connection cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// The server sent something that is not a reply.
    #[error(transparent)]
    Reply(#[from] ReplyError),
    /// A reply did not come in time.
    #[error("timed out waiting for the reply to {}", .0.name())]
    Timeout(Phase),
    /// The server stopped reading: a write did not complete in time.
    #[error("timed out writing to the server")]
    WriteTimeout,
    /// A reply came that no command asked for.
    #[error("unexpected reply from server: {0}")]
    Unsolicited(Reply),
}

#[derive(Debug)]
struct Expect {
    phase: Phase,
    timeout: Duration,
}

/// The sans-IO client connection; see the module documentation.
#[derive(Debug)]
pub struct ClientCore {
    timeouts: Timeouts,
    transmit: VecDeque<Bytes>,
    input: BytesMut,
    expect: VecDeque<Expect>,
    replies: VecDeque<(Phase, Reply)>,
    deadline: Option<Instant>,
    failed: Option<CoreError>,
    /// Parse RFC 2034 codes out of reply text (after ENHANCEDSTATUSCODES was offered).
    pub enhanced_codes: bool,
}

impl ClientCore {
    /// A new connection expecting the server's greeting.
    pub fn new(timeouts: Timeouts, now: Instant) -> Self {
        let mut core = Self {
            timeouts,
            transmit: VecDeque::new(),
            input: BytesMut::with_capacity(1024),
            expect: VecDeque::new(),
            replies: VecDeque::new(),
            deadline: None,
            failed: None,
            enhanced_codes: false,
        };
        core.expect_reply(Phase::Greeting, now);
        core
    }

    /// Queues a command line (CRLF added) that expects one reply.
    pub fn command(&mut self, now: Instant, line: &[u8], phase: Phase) {
        let mut v = Vec::with_capacity(line.len() + 2);
        v.extend_from_slice(line);
        v.extend_from_slice(b"\r\n");
        self.transmit.push_back(Bytes::from(v));
        self.expect_reply(phase, now);
    }

    /// Queues raw bytes (message body) that expect no reply of their own.
    pub fn send_raw(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.transmit.push_back(bytes);
        }
    }

    /// Expects one more reply without sending anything (LMTP's per-recipient replies).
    pub fn expect_reply(&mut self, phase: Phase, now: Instant) {
        let timeout = self.timeouts.of(phase);
        if self.expect.is_empty() {
            self.deadline = Some(now + timeout);
        }
        self.expect.push_back(Expect { phase, timeout });
    }

    /// The next bytes to write, in order.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    /// True when bytes wait in `poll_transmit`.
    pub fn has_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// Replies still owed by the server: not yet received. Replies already parsed but not yet
    /// taken with `poll_reply` are not counted (see `replies_ready`).
    pub fn replies_pending(&self) -> usize {
        self.expect.len()
    }

    /// Replies parsed and waiting for `poll_reply`.
    pub fn replies_ready(&self) -> usize {
        self.replies.len()
    }

    /// Feeds received bytes.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        while self.failed.is_none() {
            match parse_reply(&self.input, self.enhanced_codes) {
                Ok(None) => break,
                Ok(Some((reply, used))) => {
                    bytes::Buf::advance(&mut self.input, used);
                    match self.expect.pop_front() {
                        Some(e) => {
                            self.replies.push_back((e.phase, reply));
                            self.deadline = self.expect.front().map(|n| now + n.timeout);
                        }
                        None => self.failed = Some(CoreError::Unsolicited(reply)),
                    }
                }
                Err(e) => self.failed = Some(e.into()),
            }
        }
    }

    /// The next reply, with the phase of the command it answers.
    pub fn poll_reply(&mut self) -> Option<(Phase, Reply)> {
        self.replies.pop_front()
    }

    /// A fatal condition (garbage, timeout, unsolicited reply), if one happened.
    pub fn error(&self) -> Option<&CoreError> {
        self.failed.as_ref()
    }

    /// When `handle_timeout` should be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed.is_some() {
            None
        } else {
            self.deadline
        }
    }

    /// Fails the connection if the reply owed now is late.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let (Some(d), Some(e)) = (self.deadline, self.expect.front()) {
            if now >= d && self.failed.is_none() {
                self.failed = Some(CoreError::Timeout(e.phase));
            }
        }
    }

    /// Drops buffered input (after STARTTLS the plaintext buffer must be empty; RFC 3207 §6).
    pub fn take_buffered_input(&mut self) -> BytesMut {
        self.input.split()
    }

    /// True when input arrived that no reply owed accounts for yet (left over after the last
    /// reply that was read).
    pub fn has_buffered_input(&self) -> bool {
        !self.input.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_replies_match_commands_in_order() {
        let t0 = Instant::now();
        let mut c = ClientCore::new(Timeouts::default(), t0);
        c.handle_input(t0, b"220 hi\r\n");
        assert_eq!(c.poll_reply().unwrap().0, Phase::Greeting);
        c.command(t0, b"MAIL FROM:<a@b>", Phase::Mail);
        c.command(t0, b"RCPT TO:<c@d>", Phase::Rcpt);
        c.command(t0, b"DATA", Phase::DataStart);
        let mut wire = Vec::new();
        while let Some(b) = c.poll_transmit() {
            wire.extend_from_slice(&b);
        }
        assert_eq!(wire, b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
        c.handle_input(t0, b"250 ok\r\n550 no\r\n5");
        c.handle_input(t0, b"54 no valid recipients\r\n");
        let phases: Vec<_> = std::iter::from_fn(|| c.poll_reply())
            .map(|(p, r)| (p, r.code()))
            .collect();
        assert_eq!(
            phases,
            vec![
                (Phase::Mail, 250),
                (Phase::Rcpt, 550),
                (Phase::DataStart, 554)
            ]
        );
        assert!(c.error().is_none());
    }

    #[test]
    fn timeouts_per_phase_and_garbage() {
        let t0 = Instant::now();
        let mut c = ClientCore::new(Timeouts::default(), t0);
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(300)));
        c.handle_input(t0, b"220 hi\r\n");
        c.poll_reply();
        assert_eq!(c.poll_timeout(), None);
        c.command(t0, b"DATA", Phase::DataStart);
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(120)));
        c.handle_timeout(t0 + Duration::from_secs(119));
        assert!(c.error().is_none());
        c.handle_timeout(t0 + Duration::from_secs(120));
        assert_eq!(c.error(), Some(&CoreError::Timeout(Phase::DataStart)));

        let mut g = ClientCore::new(Timeouts::default(), t0);
        g.handle_input(t0, b"garbage\r\n");
        assert!(matches!(g.error(), Some(CoreError::Reply(_))));
        let mut u = ClientCore::new(Timeouts::default(), t0);
        u.handle_input(t0, b"220 a\r\n250 b\r\n");
        assert!(matches!(u.error(), Some(CoreError::Unsolicited(_))));
    }
}
