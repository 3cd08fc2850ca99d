//! `Session`: the sans-IO SMTP server state machine (RFC 5321 with SIZE, 8BITMIME, SMTPUTF8,
//! PIPELINING, ENHANCEDSTATUSCODES and CHUNKING).
//!
//! It never touches a socket, a thread or a clock: bytes come in through `handle_input`, time
//! through the `now` arguments, replies leave through `poll_output`, handler decisions through
//! `poll_event` / `handler_reply`, and `poll_timeout` / `handle_timeout` drive the timers. Every
//! complete pipelined command is answered in order; replies accumulate until the I/O layer takes
//! them, so one batch goes out per drained input. Memory is bounded whatever the peer sends:
//! command lines are capped, message bodies are never buffered here (they leave as chunks).
//!
//! ```text
//!   connect --Connect--> ExpectHelo --HELO/EHLO--> ExpectMail <------------------------------+
//!                                                   |  ^  ^                                   |
//!                                              MAIL |  |  | RSET / HELO / EHLO (any state)    |
//!                                                   v  |  |                                   |
//!                                             ExpectRcpt  |                                   |
//!                                                   | RCPT (accepted)                         |
//!                                                   v                                         |
//!                                           ExpectRcptOrData --DATA--> InData --CRLF.CRLF-----+
//!                                                   |   ^                                     |
//!                                          BDAT n   v   | BDAT n (more)                       |
//!                                                 InBdat ----------- BDAT n LAST -------------+
//!   QUIT, timeout, error budget spent, 421 greeting: --> Closed
//! ```
//!
//! A greeting the handler refuses with any other 4xx/5xx (RFC 5321 §3.1's 554) leaves the
//! session open until QUIT: every other command gets `503 5.5.1` and spends the error budget.

mod auth;
mod body;
mod deadlines;
mod execute;
mod greeting;
mod hooks;
mod lmtp;
mod pipeline;
mod replies;
mod transaction;
mod view;

pub use auth::Credentials;
pub use hooks::{CommandHook, PendingCommand};
pub use view::{ClientLabel, LOCAL_PEER};

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use core::net::SocketAddr;

use super::address::Mailbox;
use super::command::Verb;
use super::config::{Extensions, SessionConfig};
use super::data::{DataScanner, Piece};
use super::envelope::Envelope;
use super::event::{Event, Observation};
use super::reply::Reply;

/// Where the session stands in RFC 5321 §4.1.4 command ordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Connected; no HELO/EHLO accepted yet.
    ExpectHelo,
    /// Greeted; no transaction.
    ExpectMail,
    /// MAIL accepted; no recipient accepted yet.
    ExpectRcpt,
    /// At least one recipient accepted.
    ExpectRcptOrData,
    /// Reading a DATA body.
    InData,
    /// Between or inside BDAT chunks.
    InBdat,
    /// QUIT answered or the session was ended; no more input is read.
    Closed,
}

/// Which decision the session waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaiting {
    Connect,
    Hello,
    Mail,
    Rcpt,
    DataStart,
    DataEnd,
    /// The end of an intermediate BDAT chunk of this many octets.
    ChunkEnd(u64),
    Auth,
    /// A command line handed to the handler (`hooks`).
    Command,
    /// LMTP: the verdict for the accepted recipient at this index, after the data.
    RecipientVerdict(usize),
}

/// A decision event handed out and not answered yet.
#[derive(Debug)]
struct Decision {
    kind: Awaiting,
    /// The verb whose reply the answer writes (observations).
    verb: Option<Verb>,
    /// For a decision raised while an earlier one was pending (pipelined decisions): its
    /// command line, executed again if the earlier answer makes the command invalid.
    line: Option<Box<[u8]>>,
    /// Superseded by that re-execution: the handler's answer is dropped.
    void: bool,
}

/// How incoming bytes are framed right now.
#[derive(Debug)]
enum Mode {
    /// CRLF-terminated command lines.
    Command,
    /// Discarding the rest of an over-long or malformed command line, up to and including
    /// its CRLF (only CRLF ends a command line, RFC 5321 §2.3.8).
    SkipLine,
    /// DATA body until CRLF.CRLF.
    Data,
    /// The octets of a BDAT chunk.
    Bdat(BdatChunk),
    /// An AUTH exchange waits for the client's response line.
    AuthResponse(auth::AuthStep),
}

#[derive(Debug)]
struct BdatChunk {
    remaining: u64,
    size: u64,
    last: bool,
    /// Reply to give once the octets are consumed, when the chunk is refused.
    refusal: Option<Reply>,
    /// The refusal only follows from an earlier one (junk, not an error).
    follow_on: bool,
}

/// The body being received in the current transaction.
#[derive(Debug)]
struct Body {
    scanner: DataScanner,
    too_big: bool,
}

/// One SMTP server session. See the module documentation for the contract.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    peer: SocketAddr,
    /// The client came over a Unix-domain socket (`peer` is then 127.0.0.1:0).
    local: bool,
    /// The greeting refused service (not with 421): only QUIT is served (RFC 5321 §3.1).
    greeting_refused: bool,
    state: State,
    mode: Mode,
    helo: Option<String>,
    esmtp: bool,
    pending_helo: Option<(String, bool)>,
    envelope: Envelope,
    body: Option<Body>,
    /// Decisions asked of the handler, oldest first (at most one unless pipelining them).
    decisions: VecDeque<Decision>,
    /// The address and parameters of each RCPT decision in `decisions`, oldest first.
    pending_rcpts: VecDeque<(Mailbox, Vec<String>)>,
    /// Read on past a pending MAIL or RCPT decision (`set_pipelined_decisions`).
    pipelined_decisions: bool,
    /// The line being executed ahead of a pending decision.
    speculative_line: Option<Box<[u8]>>,
    /// What this session offers and accepts (the config's unless `set_extensions`).
    extensions: Extensions,
    /// AUTH credentials awaiting the handler's decision.
    pending_auth: Option<Credentials>,
    /// The identity a successful AUTH established.
    authenticated: Option<String>,
    /// TLS is active (after STARTTLS).
    tls: bool,
    /// `220` to STARTTLS was written: the driver must start TLS before any more input.
    starttls_pending: bool,
    events: VecDeque<Event>,
    /// Data-chunk events whose bytes are still ranges of the current input.
    fixups: Vec<(usize, std::ops::Range<usize>)>,
    pieces: Vec<Piece>,
    out: Vec<u8>,
    errors: u32,
    /// Junk commands so far (`SessionConfig::max_junk_commands`).
    junk: u32,
    /// The handler refused this transaction's MAIL: RCPT, DATA and BDAT that follow (a
    /// pipelining client sent them in the same batch) get their 503 without spending the
    /// error budget. Cleared by the next MAIL, RSET or HELO/EHLO.
    mail_refused: bool,
    /// A recipient of this transaction was refused: DATA or BDAT with none accepted gets its
    /// 554 without spending the error budget.
    rcpt_refused: bool,
    /// The handler failed this BDAT transaction at the end of a chunk: the chunks that follow
    /// (a pipelining client sent them already) get the same reply without spending the error
    /// budget. Cleared by the next MAIL, RSET or HELO/EHLO.
    failed_chunks: Option<Reply>,
    /// While skipping a line: the input seen so far ended with a CR (an LF next ends the line).
    skip_cr: bool,
    /// When the first octet of the command line still incomplete arrived.
    line_started: Option<Instant>,
    /// When the current message body began (354, or the first BDAT chunk), and its octets.
    data_started: Option<Instant>,
    data_octets: u64,
    /// The server is under stress: message bodies must keep `min_data_rate`.
    stressed: bool,
    last_activity: Instant,
    /// Accounting, when observing is on.
    observations: Option<VecDeque<Observation>>,
    /// The verb of the command line whose reply has not been written yet.
    pending_verb: Option<Verb>,
    /// The handler's extensions to the command set (`set_command_hook`, `set_ehlo_keywords`).
    hooks: hooks::Hooks,
    /// LMTP: the end-of-data verdict each recipient gets unless its own differs.
    lmtp_verdict: Option<Reply>,
}

impl Session {
    /// Starts a session for a client at `peer`; the first event is `Event::Connect`.
    pub fn new(config: Arc<SessionConfig>, peer: SocketAddr, now: Instant) -> Self {
        let mut events = VecDeque::with_capacity(4);
        events.push_back(Event::Connect);
        let extensions = config.extensions;
        Self {
            config,
            peer,
            local: false,
            greeting_refused: false,
            state: State::ExpectHelo,
            mode: Mode::Command,
            helo: None,
            esmtp: false,
            pending_helo: None,
            envelope: Envelope::default(),
            body: None,
            decisions: VecDeque::from([Decision {
                kind: Awaiting::Connect,
                verb: None,
                line: None,
                void: false,
            }]),
            pending_rcpts: VecDeque::new(),
            pipelined_decisions: false,
            speculative_line: None,
            extensions,
            pending_auth: None,
            authenticated: None,
            tls: false,
            starttls_pending: false,
            events,
            fixups: Vec::new(),
            pieces: Vec::new(),
            out: Vec::with_capacity(256),
            errors: 0,
            junk: 0,
            mail_refused: false,
            rcpt_refused: false,
            failed_chunks: None,
            skip_cr: false,
            line_started: None,
            data_started: None,
            data_octets: 0,
            stressed: false,
            last_activity: now,
            observations: None,
            pending_verb: None,
            hooks: hooks::Hooks::default(),
            lmtp_verdict: None,
        }
    }

    /// Feeds input bytes; returns how many were consumed. Unconsumed bytes (a partial command
    /// line, input held while a decision is pending, up to two octets of a possible DATA
    /// terminator) must be presented again, followed by newer input. Data chunks are copied out
    /// of `input`; use `handle_input_buf` to keep them as views of the read buffer instead.
    pub fn handle_input(&mut self, now: Instant, input: &[u8]) -> usize {
        let used = self.process(now, input);
        self.resolve_fixups(|r| Bytes::copy_from_slice(&input[r]));
        used
    }

    /// Like `handle_input`, but consumes from the front of `buf` and hands data chunks out as
    /// zero-copy views of it (`BytesMut::split_to` + `freeze`). Unconsumed bytes stay in `buf`.
    pub fn handle_input_buf(&mut self, now: Instant, buf: &mut BytesMut) {
        let used = self.process(now, buf);
        if self.fixups.is_empty() {
            bytes::Buf::advance(buf, used);
        } else {
            let taken = buf.split_to(used).freeze();
            self.resolve_fixups(|r| taken.slice(r));
        }
    }

    /// Like `handle_input`, with data chunks handed out as zero-copy views of `input` (for
    /// example a pool buffer the I/O engine received into); returns how many octets were
    /// consumed. The caller keeps the rest and presents it again with newer input.
    pub fn handle_input_bytes(&mut self, now: Instant, input: &Bytes) -> usize {
        let used = self.process(now, input);
        self.resolve_fixups(|r| input.slice(r));
        used
    }

    /// Turns accounting on or off: while on, the session records an `Observation` for every
    /// answered command, transaction start, data phase and message verdict.
    pub fn set_observing(&mut self, on: bool) {
        self.observations = on.then(VecDeque::new);
    }

    /// The next observation, in order (always `None` while observing is off).
    pub fn poll_observation(&mut self) -> Option<Observation> {
        self.observations.as_mut()?.pop_front()
    }

    fn observe(&mut self, o: Observation) {
        if let Some(q) = self.observations.as_mut() {
            q.push_back(o);
        }
    }

    /// Appends the replies produced so far to `out`.
    pub fn poll_output(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.out);
    }

    /// True when replies are waiting for `poll_output`.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next event for the handler, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// True while a decision event waits for `handler_reply`.
    pub fn is_awaiting_reply(&self) -> bool {
        !self.decisions.is_empty()
    }

    /// Lets the session read on past a pending MAIL or RCPT decision, so that a pipelining
    /// client's RCPT and DATA commands reach the handler before MAIL is answered (a relay uses
    /// this to pipeline them to its upstream). Only commands that would raise a decision are
    /// taken ahead (RCPT, and DATA as the last one); anything else waits as before. Decisions
    /// are answered in the order they were raised. When an answer makes a later command invalid
    /// (MAIL refused, or every RCPT before DATA refused), that command's reply becomes the
    /// session's own (503, 554) exactly as if it had been read afterwards; the handler's answer
    /// to it is then ignored, and a DATA the handler had accepted is followed by `Event::Reset`.
    /// Nothing is taken ahead while every line goes to the handler first
    /// (`CommandHook::EveryLine`).
    pub fn set_pipelined_decisions(&mut self, on: bool) {
        self.pipelined_decisions = on;
    }

    /// Sets the extensions this session offers in its EHLO reply and accepts parameters of
    /// (the configuration's by default). A relay narrows them to what its upstream offers.
    pub fn set_extensions(&mut self, extensions: Extensions) {
        self.extensions = extensions;
    }

    /// The extensions this session offers.
    pub fn extensions(&self) -> Extensions {
        self.extensions
    }

    /// True when the session reads past pending MAIL and RCPT decisions.
    pub fn pipelines_decisions(&self) -> bool {
        self.pipelined_decisions
    }

    /// Answers the oldest pending decision: `None` lets the session's default reply stand,
    /// `Some` replaces it (2xx/3xx accepts, 4xx/5xx refuses). Ignored when nothing is pending.
    pub fn handler_reply(&mut self, reply: Option<Reply>) {
        let Some(d) = self.decisions.pop_front() else {
            return;
        };
        let rcpt = match d.kind {
            Awaiting::Rcpt => self.pending_rcpts.pop_front(),
            _ => None,
        };
        if d.void {
            let accepted = reply.as_ref().is_none_or(|r| r.class() == 3);
            if d.kind == Awaiting::DataStart && accepted {
                self.events.push_back(Event::Reset);
            }
            return;
        }
        self.pending_verb = d.verb;
        self.apply_decision(d.kind, rcpt, reply);
        if !self.decisions.is_empty() {
            self.settle();
        }
    }

    /// Ends the session with `reply` (for example `421 4.3.2` at shutdown): the transaction in
    /// progress is reset and no more input is read.
    pub fn close_with(&mut self, reply: Reply) {
        if self.state == State::Closed {
            return;
        }
        self.decisions.clear();
        self.pending_rcpts.clear();
        self.pending_auth = None;
        // Decisions already raised will never be answered: the handler does not get them
        // (a message whose end was read is not handed over once the session is ending).
        self.events.retain(|e| !e.needs_reply());
        self.abort_transaction();
        self.write(&reply);
        self.state = State::Closed;
    }

    /// True once the session has nothing more to say after its pending output: flush, then close.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    fn process(&mut self, now: Instant, input: &[u8]) -> usize {
        if !input.is_empty() {
            self.last_activity = now;
        }
        let mut pos = 0;
        while pos < input.len() && self.may_read() && self.state != State::Closed {
            let used = match self.mode {
                Mode::Command => self.command_step(&input[pos..]),
                Mode::SkipLine => self.skip_step(&input[pos..]),
                Mode::AuthResponse(_) => self.auth_response_step(&input[pos..]),
                Mode::Data => self.data_step(input, pos),
                Mode::Bdat(_) => self.bdat_step(input, pos),
            };
            if used == 0 {
                break;
            }
            pos += used;
        }
        if self.state == State::Closed {
            // Nothing after QUIT or a 421 is read; report it consumed so the driver drops it.
            return input.len();
        }
        if !input.is_empty() {
            // Octets left over in command mode, not held for a decision: a partial line.
            let partial = pos < input.len()
                && self.decisions.is_empty()
                && !self.starttls_pending
                && matches!(self.mode, Mode::Command | Mode::AuthResponse(_));
            if partial && pos > 0 {
                // A line was completed in this input (a partial one consumes nothing): what
                // is left is the start of the next one.
                self.line_started = Some(now);
            } else if partial {
                self.line_started.get_or_insert(now);
            } else {
                self.line_started = None;
            }
        }
        pos
    }

    /// Drops the transaction in progress (if any), telling the handler.
    fn abort_transaction(&mut self) {
        let in_transaction = !matches!(
            self.state,
            State::ExpectHelo | State::ExpectMail | State::Closed
        );
        if in_transaction {
            self.events.push_back(Event::Reset);
        }
        self.end_transaction();
    }

    /// Clears the envelope and body and returns to command mode after a greeting.
    fn end_transaction(&mut self) {
        self.rcpt_refused = false;
        self.data_started = None;
        self.envelope.clear();
        self.body = None;
        if !matches!(self.mode, Mode::SkipLine) {
            self.mode = Mode::Command;
        }
        if self.state != State::Closed {
            self.state = if self.helo.is_some() {
                State::ExpectMail
            } else {
                State::ExpectHelo
            };
        }
    }
}
