//! Fuzz target `session`: drives a `ringrelay::proto::Session` through fuzzer-chosen configs,
//! input segments (raw bytes or an SMTP token alphabet), handler answers (immediate or deferred),
//! both input paths (`handle_input` / `handle_input_buf`) and virtual-time jumps, and checks the
//! session's contract after every step (see `Driver::check_*` and `Driver::check_message`).
//!
//! Input layout:
//!   bytes 0..4   configuration (see `config_from`)
//!   then ops     one opcode byte followed by its operands (see `run`)
//!
//! Findings that are already reported can be tolerated while exploring further with
//! `RINGRELAY_FUZZ_TOLERATE=key1,key2` (the keys are the bracketed names in the panic messages,
//! or `all`); by default every check is strict. `RINGRELAY_FUZZ_TRACE=1` prints the transcript.

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringrelay::proto::{
    BareLineEndings, CommandHook, EnhancedCode, Event, ExpnPolicy, Extensions, Reply, Session,
    SessionConfig, State,
};

/// Octets a session may leave unconsumed beyond `command_line_limit()` when it is not waiting
/// for a decision (a held CR, or the two octets of a possible DATA terminator).
const SLACK: usize = 4;

/// The SMTP alphabet of the token mode: each input byte picks one entry.
const TOKENS: &[&[u8]] = &[
    b"EHLO x\r\n",
    b"HELO x\r\n",
    b"MAIL FROM:<a@b>\r\n",
    b"MAIL FROM:<a@b> SIZE=50\r\n",
    b"MAIL FROM:<> BODY=8BITMIME\r\n",
    b"MAIL FROM:<\xc3\xbc@b> SMTPUTF8\r\n",
    b"MAIL FROM:<a@b> SIZE=99999999999\r\n",
    b"RCPT TO:<c@d>\r\n",
    b"RCPT TO:<\xc3\xbc@d>\r\n",
    b"RCPT TO:<>\r\n",
    b"DATA\r\n",
    b"BDAT 3\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT 5 LAST\r\n",
    b"BDAT 1\r\n",
    b"BDAT 120\r\n",
    b"BDAT 18446744073709551615\r\n",
    b".\r\n",
    b"\r\n",
    b"..x\r\n",
    b".x\r\n",
    b".",
    b"\n",
    b"\r",
    b"\r\n.\r\n",
    b".\n",
    b".\r",
    b"RSET\r\n",
    b"QUIT\r\n",
    b"NOOP\r\n",
    b"VRFY a\r\n",
    b"EXPN a\r\n",
    b"HELP\r\n",
    b"STARTTLS\r\n",
    b"x",
    b"abc",
    b" ",
    b"\0",
    b"\xff",
    b"Subject: hi\r\n",
    b"From: a@b\r\n",
    b"line of body text that is moderately long, but within limits\r\n",
    b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    b"EHLO \r\n",
    b"BDAT x\r\n",
    b"MAIL FROM:<a@b> FOO=1\r\n",
    b"RCPT TO:<c@d> NOTIFY=NEVER\r\n",
    b"data\r\n",
];

/// Virtual-time jumps (seconds) around the default 300 s idle and 600 s data timeouts.
const JUMPS: &[u64] = &[0, 1, 299, 300, 301, 599, 600, 601, 3600];

fn tolerated(key: &str) -> bool {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        std::env::var("RINGRELAY_FUZZ_TOLERATE")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .iter()
    .any(|k| k == key || k == "all")
}

/// `RINGRELAY_FUZZ_TRACE=1`: print the transcript (input, output, events) to stderr.
fn trace() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("RINGRELAY_FUZZ_TRACE").is_some_and(|v| v != "0"))
}

/// `assert!` unless the finding `key` is tolerated.
macro_rules! check {
    ($key:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond && !tolerated($key) {
            panic!("[{}] {}", $key, format!($($fmt)+));
        }
    };
}

struct Bytes<'a> {
    data: &'a [u8],
}

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
}

fn config_from(c: [u8; 4]) -> SessionConfig {
    let bit = |b: u8, i: u32| b >> i & 1 == 1;
    SessionConfig {
        extensions: Extensions {
            smtputf8: bit(c[0], 0),
            chunking: !bit(c[0], 2),
            pipelining: !bit(c[0], 3),
            size: !bit(c[0], 4),
            enhanced_status_codes: !bit(c[0], 5),
            eightbitmime: !bit(c[0], 6),
            help: !bit(c[3], 4),
            auth: bit(c[3], 5),
            starttls: bit(c[3], 6),
        },
        bare_line_endings: if bit(c[0], 1) {
            BareLineEndings::Normalize
        } else {
            BareLineEndings::Reject
        },
        expn: if bit(c[0], 7) {
            ExpnPolicy::CannotExpand
        } else {
            ExpnPolicy::Disabled
        },
        data_size_limit: [0, 100, 33_554_432][c[1] as usize % 3],
        max_recipients: (c[1] as usize / 3) % 5 + 1,
        max_errors: c[2] as u32 % 21,
        max_text_line: [1000, 0, 12, 80][c[3] as usize & 3],
        max_command_line: [512, 64, 24, 1][(c[3] as usize >> 2) & 3],
        ..SessionConfig::default()
    }
}

/// Which command lines go to the handler (`Event::Command`): bit 7 of byte 3 turns the hook
/// on, bit 7 of byte 2 picks every line rather than unknown verbs only.
fn hook_from(c: [u8; 4]) -> CommandHook {
    match (c[3] >> 7, c[2] >> 7) {
        (0, _) => CommandHook::Off,
        (_, 0) => CommandHook::UnknownVerbs,
        _ => CommandHook::EveryLine,
    }
}

fn answer(b: u8) -> Option<Reply> {
    match b % 8 {
        0 => None,
        1 => Some(Reply::new(250, EnhancedCode::new(2, 0, 0), "Ok")),
        2 => Some(Reply::new(
            451,
            EnhancedCode::new(4, 3, 0),
            "Try again later",
        )),
        3 => Some(Reply::new(550, EnhancedCode::new(5, 7, 1), "Rejected")),
        4 => Some(Reply::plain(354, "Go ahead")),
        5 => Some(Reply::plain(250, "first\nsecond\nthird")),
        6 => Some(Reply::new(421, EnhancedCode::new(4, 3, 2), "Shutting down")),
        _ => Some(Reply::sanitized(554, None, b"peer\r\ntext\0\xff")),
    }
}

/// Message framing of the transaction in progress, as the handler sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Framing {
    None,
    Dot,
    Chunked,
}

struct Driver {
    s: Session,
    cfg: Arc<SessionConfig>,
    base: Instant,
    offset: Duration,
    pending: BytesMut,
    zero_copy: bool,
    deferred: bool,
    answers: Vec<u8>,
    /// The decision event delivered and not yet answered.
    unanswered: Option<Event>,
    closed: bool,
    /// Inside a multi-line reply (last line seen ended with '-'), with its code.
    open_reply: Option<[u8; 3]>,
    // The body of the transaction in progress.
    framing: Framing,
    content: Vec<u8>,
    wire: Vec<u8>,
    dots: Vec<usize>,
}

impl Driver {
    fn new(cfg: SessionConfig) -> Self {
        let cfg = Arc::new(cfg);
        let base = Instant::now();
        let peer: SocketAddr = "192.0.2.1:25000".parse().unwrap();
        Self {
            s: Session::new(cfg.clone(), peer, base),
            cfg,
            base,
            offset: Duration::ZERO,
            pending: BytesMut::new(),
            zero_copy: false,
            deferred: false,
            answers: Vec::new(),
            unanswered: None,
            closed: false,
            open_reply: None,
            framing: Framing::None,
            content: Vec::new(),
            wire: Vec::new(),
            dots: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        self.base + self.offset
    }

    /// One `handle_input*` call on everything pending; returns octets consumed.
    fn feed_once(&mut self) -> usize {
        let now = self.now();
        let before = self.pending.len();
        if trace() && before > 0 {
            eprintln!("C: {:?}", String::from_utf8_lossy(&self.pending));
        }
        if self.zero_copy {
            self.s.handle_input_buf(now, &mut self.pending);
            let used = before - self.pending.len();
            used
        } else {
            let used = self.s.handle_input(now, &self.pending);
            assert!(used <= before, "consumed {used} of {before}");
            self.pending.advance(used);
            used
        }
    }

    /// Feeds pending input, drains events (answering decisions unless deferred) and output,
    /// until the session stops making progress; then checks the resting-state invariants.
    fn pump(&mut self) {
        loop {
            let awaiting = self.s.is_awaiting_reply();
            let closed = self.s.is_closed();
            let len = self.pending.len();
            let used = self.feed_once();
            if closed {
                assert_eq!(used, len, "a closed session must discard its input");
            } else if awaiting {
                assert_eq!(used, 0, "input read while a decision is pending");
            }
            self.drain_events();
            self.drain_output();
            if self.s.starttls_requested() {
                // What a driver does after the 220 (the handshake itself is not modelled).
                self.s.tls_started();
                continue;
            }
            if self.unanswered.is_some() && !self.deferred {
                self.answer_now();
                continue;
            }
            break;
        }
        self.check_rest();
    }

    fn answer_now(&mut self) {
        let Some(ev) = self.unanswered.take() else {
            // Nothing pending: a reply must be ignored.
            assert!(!self.s.is_awaiting_reply());
            let state = self.s.state();
            self.s
                .handler_reply(answer(self.answers.pop().unwrap_or(1)));
            assert_eq!(
                self.s.state(),
                state,
                "spurious handler_reply changed the state"
            );
            assert!(
                !self.s.has_output(),
                "spurious handler_reply produced output"
            );
            assert!(
                self.s.poll_event().is_none(),
                "spurious handler_reply produced an event"
            );
            return;
        };
        let reply = if self.answers.is_empty() {
            None
        } else {
            answer(self.answers.remove(0))
        };
        if trace() {
            eprintln!("H: {ev:?} -> {reply:?}");
        }
        // A line handed to the handler and left to the core may raise its own decision at once.
        let to_core = ev == Event::Command && reply.is_none();
        self.s.handler_reply(reply);
        if ev == Event::DataStart && self.s.state() == State::InData {
            assert_eq!(self.framing, Framing::None);
            self.framing = Framing::Dot;
        }
        assert!(
            to_core || !self.s.is_awaiting_reply(),
            "answering {ev:?} raised another decision"
        );
        self.drain_events();
        self.drain_output();
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.s.poll_event() {
            if trace() {
                eprintln!("E: {ev:?}");
            }
            assert!(!self.closed, "event {ev:?} after the session closed");
            match &ev {
                Event::DataChunk(c) => {
                    if self.framing == Framing::None {
                        // Chunks outside DATA can only come from BDAT.
                        self.framing = Framing::Chunked;
                    }
                    let w = c.wire();
                    for &d in c.stuffing_dots() {
                        let d = d as usize;
                        assert!(
                            d < w.len(),
                            "stuffing dot {d} outside a {}-octet chunk",
                            w.len()
                        );
                        assert_eq!(w[d], b'.', "stuffing dot offset at a non-dot");
                        self.dots.push(self.wire.len() + d);
                    }
                    assert_eq!(c.content_len(), w.len() - c.stuffing_dots().len());
                    let before = self.content.len();
                    c.extend_content(&mut self.content);
                    assert_eq!(self.content.len() - before, c.content_len());
                    self.wire.extend_from_slice(w);
                }
                Event::DataEnd => {
                    self.check_message();
                    self.end_body();
                }
                Event::Reset => self.end_body(),
                Event::Mail | Event::DataStart => {
                    assert!(
                        self.content.is_empty() && self.framing == Framing::None,
                        "{ev:?} while a body is in progress"
                    );
                }
                _ => {}
            }
            if ev == Event::DataStart || ev == Event::DataEnd {
                let n = self.s.envelope().rcpt_tos.len();
                assert!(
                    (1..=self.cfg.max_recipients).contains(&n),
                    "{ev:?} with {n} recipients"
                );
            }
            if ev.needs_reply() {
                // Notifications may still be queued ahead of a pending command; decisions not.
                assert_eq!(
                    self.s.pending_command().is_some(),
                    ev == Event::Command,
                    "pending command at {ev:?}"
                );
                assert!(
                    self.unanswered.is_none(),
                    "second decision {ev:?} while {:?} is unanswered",
                    self.unanswered
                );
                self.unanswered = Some(ev);
            }
        }
        if self.s.is_closed() {
            self.unanswered = None;
        }
        assert_eq!(
            self.s.is_awaiting_reply(),
            self.unanswered.is_some(),
            "awaiting flag and delivered decisions disagree"
        );
    }

    fn end_body(&mut self) {
        self.framing = Framing::None;
        self.content.clear();
        self.wire.clear();
        self.dots.clear();
    }

    fn drain_output(&mut self) {
        let mut out = Vec::new();
        self.s.poll_output(&mut out);
        if trace() && !out.is_empty() {
            eprintln!("S: {:?}", String::from_utf8_lossy(&out));
        }
        assert!(!self.s.has_output());
        if self.closed {
            assert!(
                out.is_empty(),
                "output after close: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        check_replies(&out, &mut self.open_reply);
        assert!(
            self.open_reply.is_none(),
            "output batch ends inside a multi-line reply"
        );
        if self.s.is_closed() {
            self.closed = true;
        }
    }

    /// Invariants of a session at rest (after `pump`).
    fn check_rest(&mut self) {
        assert_eq!(self.s.is_awaiting_reply(), self.unanswered.is_some());
        assert_eq!(
            self.s.pending_command().is_some(),
            self.unanswered == Some(Event::Command)
        );
        assert_eq!(
            self.s.poll_timeout().is_none(),
            self.s.is_awaiting_reply() || self.s.is_closed()
        );
        if self.s.is_closed() {
            assert!(self.pending.is_empty());
            return;
        }
        if self.s.is_awaiting_reply() {
            return;
        }
        let limit = self.cfg.command_line_limit();
        assert!(
            self.pending.len() <= limit + SLACK,
            "{} octets left unconsumed (limit {limit}) in state {:?}",
            self.pending.len(),
            self.s.state()
        );
        // The session must be at a fixed point: presenting the same bytes again (as a driver
        // does when more input arrives) changes nothing. Otherwise it stalled with work to do.
        let len = self.pending.len();
        let state = self.s.state();
        let used = self.feed_once();
        assert_eq!(
            used, 0,
            "session stalled: {len} octets were still consumable"
        );
        assert_eq!(self.s.state(), state);
        assert!(!self.s.has_output(), "re-presented input produced output");
        assert!(
            self.s.poll_event().is_none(),
            "re-presented input produced an event"
        );
    }

    /// Invariants of an accepted message body (at `DataEnd`).
    fn check_message(&mut self) {
        let c = &self.content;
        let env_size = self.s.envelope().data_size;
        assert_eq!(
            env_size,
            c.len() as u64,
            "envelope data_size vs content delivered"
        );
        let limit = self.cfg.data_size_limit;
        assert!(
            limit == 0 || env_size <= limit,
            "accepted {env_size} > limit {limit}"
        );
        // No bare CR or LF: Reject refuses them, Normalize turns each into CRLF.
        for (i, &b) in c.iter().enumerate() {
            match b {
                b'\r' => check!(
                    "bare-cr",
                    c.get(i + 1) == Some(&b'\n'),
                    "bare CR at {i} of accepted content ({:?})",
                    self.cfg.bare_line_endings
                ),
                b'\n' => check!(
                    "bare-lf",
                    i > 0 && c[i - 1] == b'\r',
                    "bare LF at {i} of accepted content ({:?})",
                    self.cfg.bare_line_endings
                ),
                _ => {}
            }
        }
        // No accepted line longer than max_text_line (CRLF included).
        let max = self.cfg.max_text_line;
        let line_key = match self.cfg.bare_line_endings {
            BareLineEndings::Reject => "line-length",
            BareLineEndings::Normalize => "line-length-normalized",
        };
        if max != 0 {
            let mut start = 0;
            for (i, w) in c.windows(2).enumerate() {
                if w == b"\r\n" {
                    check!(
                        line_key,
                        i + 2 - start <= max,
                        "accepted a {}-octet line (limit {max}, {:?})",
                        i + 2 - start,
                        self.cfg.bare_line_endings
                    );
                    start = i + 2;
                }
            }
            check!(
                line_key,
                c.len() - start <= max,
                "accepted a {}-octet last line (limit {max})",
                c.len() - start
            );
        }
        match self.framing {
            Framing::Dot => {
                // Smuggling guard: the forwarded wire form (after DATA) must never contain an
                // end-of-data sequence, counting the CRLF that precedes the body.
                let mut w = b"\r\n".to_vec();
                w.extend_from_slice(&self.wire);
                for (k, x) in w.windows(5).enumerate() {
                    if x != b"\r\n.\r\n" {
                        continue;
                    }
                    // `k` is the wire offset of the dot. The finding reported first (a stuffing
                    // dot alone on a line closed by a normalised bare CR/LF) has its own key so
                    // that exploration can go on without hiding any other way to forge one.
                    let key = if self.dots.binary_search(&k).is_ok() {
                        "smuggle-stuffed-dot"
                    } else {
                        "smuggle"
                    };
                    check!(
                        key,
                        false,
                        "wire form of an accepted DATA message contains CRLF.CRLF (dot at {k}): {:?}",
                        String::from_utf8_lossy(&self.wire)
                    );
                }
                // The wire form is exactly the dot-stuffed content: the dots at line starts are
                // the stuffing dots, and only they.
                let line_start_dots: Vec<usize> = (0..self.wire.len())
                    .filter(|&i| self.wire[i] == b'.' && w[i..i + 2] == *b"\r\n")
                    .collect();
                check!(
                    "stuffing",
                    line_start_dots == self.dots,
                    "line-start dots {line_start_dots:?} vs stuffing dots {:?}",
                    self.dots
                );
            }
            Framing::Chunked => {
                check!(
                    "bdat-stuffing",
                    self.dots.is_empty(),
                    "BDAT chunks carry stuffing dots {:?} ({:?})",
                    self.dots,
                    self.cfg.bare_line_endings
                );
                if self.cfg.bare_line_endings == BareLineEndings::Reject {
                    assert_eq!(
                        self.wire, self.content,
                        "BDAT wire form differs from content"
                    );
                }
            }
            Framing::None => assert!(self.content.is_empty()),
        }
    }

    fn time_jump(&mut self, secs: u64) {
        self.offset += Duration::from_secs(secs);
        let now = self.now();
        let due = matches!(self.s.poll_timeout(), Some(t) if now >= t);
        self.s.handle_timeout(now);
        if due {
            assert!(self.s.is_closed(), "timeout due but the session is open");
        }
        self.drain_events();
        let mut out = Vec::new();
        self.s.poll_output(&mut out);
        if due {
            assert!(
                out.starts_with(b"421 "),
                "timeout reply {:?}",
                String::from_utf8_lossy(&out)
            );
        } else {
            assert!(
                out.is_empty(),
                "handle_timeout before the deadline wrote output"
            );
        }
        check_replies(&out, &mut self.open_reply);
        if self.s.is_closed() {
            self.closed = true;
        }
        self.pump();
    }
}

/// Every line `^[2-5][0-9][0-9][ -]...CRLF` without bare CR, LF or NUL; the lines of a
/// multi-line reply share their code and only the last has a space after it.
fn check_replies(out: &[u8], open: &mut Option<[u8; 3]>) {
    if out.is_empty() {
        return;
    }
    assert!(
        out.ends_with(b"\r\n"),
        "output does not end with CRLF: {:?}",
        String::from_utf8_lossy(out)
    );
    for line in out[..out.len() - 2].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        assert!(line.len() >= 4, "short reply line {text:?}");
        assert!(
            matches!(line[0], b'2'..=b'5')
                && line[1].is_ascii_digit()
                && line[2].is_ascii_digit()
                && matches!(line[3], b' ' | b'-'),
            "malformed reply line {text:?}"
        );
        assert!(!line.contains(&b'\r'), "bare CR in reply line {text:?}");
        assert!(!line.contains(&0), "NUL in reply line {text:?}");
        let code = [line[0], line[1], line[2]];
        if let Some(c) = open {
            assert_eq!(*c, code, "code changes inside a multi-line reply: {text:?}");
        }
        *open = if line[3] == b'-' { Some(code) } else { None };
    }
    // Every LF is preceded by CR.
    for (i, &b) in out.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && out[i - 1] == b'\r', "bare LF in output");
        }
    }
}

/// A realistic body line (76 columns), sometimes starting with '.'.
fn filler_line(seed: u8, n: usize, out: &mut Vec<u8>) {
    if (seed as usize + n) % 7 == 0 {
        out.push(b'.');
    }
    for k in 0..74 {
        out.push(b"abcdefghij klmnopqrstuvwxyz"[(k + n + seed as usize) % 27]);
    }
    out.extend_from_slice(b"\r\n");
}

fn run(data: &[u8]) {
    let mut c = [0u8; 4];
    for (i, b) in data.iter().take(4).enumerate() {
        c[i] = *b;
    }
    let mut input = Bytes {
        data: data.get(4..).unwrap_or(&[]),
    };
    let mut d = Driver::new(config_from(c));
    let hook = hook_from(c);
    d.s.set_command_hook(hook);
    if hook != CommandHook::Off {
        d.s.set_ehlo_keywords(["XSTATS", "XFOO 1 2", "X\r\nY"]);
    }
    d.pump();
    while let Some(op) = input.byte() {
        match op % 16 {
            // Token runs (most frequent): each byte picks one SMTP token.
            0..=5 => {
                let n = input.byte().unwrap_or(0) as usize % 32 + 1;
                for &t in input.take(n) {
                    d.pending
                        .extend_from_slice(TOKENS[t as usize % TOKENS.len()]);
                }
                d.pump();
            }
            // Raw segment.
            6..=8 => {
                let n = input.byte().unwrap_or(0) as usize;
                let raw = input.take(n);
                d.pending.extend_from_slice(raw);
                d.pump();
            }
            // Queue a handler answer for the next decision.
            9 | 10 => d.answers.push(input.byte().unwrap_or(0)),
            // Virtual-time jump, then the timer.
            11 => {
                let j = JUMPS[input.byte().unwrap_or(0) as usize % JUMPS.len()];
                d.time_jump(j);
            }
            // Switch between handle_input and handle_input_buf.
            12 => {
                d.zero_copy = !d.zero_copy;
                d.pump();
            }
            // Defer decisions (the handler answers later) or answer now.
            13 => {
                d.deferred = !d.deferred;
                if !d.deferred {
                    d.pump();
                }
            }
            14 => {
                d.answer_now();
                d.pump();
            }
            // Body filler: n lines of 76-column text, some starting with a dot.
            _ => {
                let seed = input.byte().unwrap_or(0);
                let n = input.byte().unwrap_or(0) as usize;
                let mut buf = Vec::with_capacity(n * 78);
                for i in 0..n {
                    filler_line(seed, i, &mut buf);
                }
                d.pending.extend_from_slice(&buf);
                d.pump();
            }
        }
    }
    // Let every held decision be answered and every byte be seen.
    d.deferred = false;
    d.pump();
    // Shut down as a server would.
    let closed = d.s.is_closed();
    d.s.close_with(Reply::new(421, EnhancedCode::new(4, 3, 2), "Shutting down"));
    d.drain_events();
    let mut out = Vec::new();
    d.s.poll_output(&mut out);
    assert_eq!(
        out.is_empty(),
        closed,
        "close_with output after close / missing before"
    );
    check_replies(&out, &mut d.open_reply);
    assert!(d.s.is_closed());
}

/// Lets a panic already reported as the finding `key` end the input quietly when that key is
/// tolerated (libfuzzer-sys's panic hook would abort the process on any panic).
fn install_known_panic_filter() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if known_panic(info).is_some_and(tolerated) {
                return;
            }
            prev(info)
        }));
    });
}

/// The key of a known panic of the protocol core.
fn known_panic(info: &std::panic::PanicHookInfo<'_>) -> Option<&'static str> {
    let file = info.location()?.file();
    let msg = info
        .payload()
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| info.payload().downcast_ref::<&str>().copied())
        .unwrap_or("");
    // `MAIL FROM:<@a:@b>` / `RCPT TO:<@a:@b>`: parse_mailbox indexes an empty local part.
    if file.ends_with("proto/address.rs") && msg.contains("index out of bounds") {
        return Some("route-empty-local-panic");
    }
    None
}

fuzz_target!(|data: &[u8]| {
    install_known_panic_filter();
    // Only panics let through by the filter above unwind to here; the input ends there.
    let _ = std::panic::catch_unwind(|| run(data));
});
