//! In-memory tests of the protocol core's `Session` through its public API: table-driven
//! transcripts, every-byte splits, handler decisions, virtual time. No sockets: the base
//! `Instant` is the only clock reading, and every later time is computed from it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use core::net::SocketAddr;
use ringrelay::proto::{
    BareLineEndings, EnhancedCode, Event, Extensions, Reply, Session, SessionConfig,
};

const EHLO_REPLY: &str = "250-localhost Hello c.example\r\n250-PIPELINING\r\n250-SIZE 33554432\r\n\
250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 HELP\r\n";

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

type Policy = Box<dyn FnMut(&Event, &Session) -> Option<Reply>>;

/// Drives a session with a scripted handler; input arrives `step` octets at a time.
struct Harness {
    s: Session,
    now: Instant,
    pending: Vec<u8>,
    out: Vec<u8>,
    events: Vec<Event>,
    content: Vec<u8>,
    wire: Vec<u8>,
    messages: Vec<Vec<u8>>,
    policy: Policy,
}

impl Harness {
    fn new(config: SessionConfig) -> Self {
        let now = Instant::now();
        let mut h = Harness {
            s: Session::new(Arc::new(config), peer(), now),
            now,
            pending: Vec::new(),
            out: Vec::new(),
            events: Vec::new(),
            content: Vec::new(),
            wire: Vec::new(),
            messages: Vec::new(),
            policy: Box::new(|_, _| None),
        };
        h.pump();
        h
    }

    fn with_policy(mut self, p: impl FnMut(&Event, &Session) -> Option<Reply> + 'static) -> Self {
        self.policy = Box::new(p);
        self
    }

    fn pump(&mut self) {
        loop {
            let used = self.s.handle_input(self.now, &self.pending);
            self.pending.drain(..used);
            let mut answered = false;
            while let Some(ev) = self.s.poll_event() {
                match &ev {
                    Event::DataChunk(c) => {
                        c.extend_content(&mut self.content);
                        self.wire.extend_from_slice(c.wire());
                    }
                    Event::DataEnd => self.messages.push(std::mem::take(&mut self.content)),
                    Event::Reset => {
                        self.content.clear();
                    }
                    _ => {}
                }
                if ev.needs_reply() {
                    let r = (self.policy)(&ev, &self.s);
                    self.s.handler_reply(r);
                    answered = true;
                }
                self.events.push(ev);
            }
            self.s.poll_output(&mut self.out);
            if !answered {
                break;
            }
        }
    }

    fn feed(&mut self, input: &[u8], step: usize) -> &mut Self {
        for piece in input.chunks(step.max(1)) {
            self.pending.extend_from_slice(piece);
            self.pump();
        }
        self
    }

    fn take_output(&mut self) -> String {
        String::from_utf8(std::mem::take(&mut self.out)).unwrap()
    }
}

fn transcript(config: SessionConfig, input: &[u8]) -> String {
    let mut h = Harness::new(config);
    h.feed(input, input.len().max(1));
    h.take_output()
}

fn small() -> SessionConfig {
    SessionConfig {
        data_size_limit: 100,
        max_recipients: 2,
        ..SessionConfig::default()
    }
}

fn utf8() -> SessionConfig {
    SessionConfig {
        extensions: Extensions {
            smtputf8: true,
            ..Extensions::default()
        },
        ..SessionConfig::default()
    }
}

const G: &str = "220 localhost ESMTP ringrelay\r\n";

#[test]
fn transcripts() {
    let e = "EHLO c.example\r\n";
    let m = "MAIL FROM:<a@b.example>\r\n";
    let r = "RCPT TO:<c@d.example>\r\n";
    let rows: Vec<(SessionConfig, String, String)> = vec![
        (SessionConfig::default(), String::new(), String::new()),
        (SessionConfig::default(), e.into(), EHLO_REPLY.into()),
        (SessionConfig::default(), "HELO c.example\r\n".into(), "250 localhost Hello c.example\r\n".into()),
        (SessionConfig::default(), m.into(), "503 Error: send HELO/EHLO first\r\n".into()),
        (SessionConfig::default(), "HELO x\r\nMAIL FROM:<a@b> SIZE=10\r\n".into(),
            "250 localhost Hello x\r\n555 Error: unsupported parameter SIZE\r\n".into()),
        (SessionConfig::default(), format!("{e}{m}{r}DATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n"),
            format!("{EHLO_REPLY}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued\r\n221 2.0.0 Bye\r\n")),
        (SessionConfig::default(), format!("{e}{m}{r}DATA\r\n.\r\n"),
            format!("{EHLO_REPLY}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued\r\n")),
        (SessionConfig::default(), format!("{e}MAIL FROM:<@example.com>\r\n"),
            format!("{EHLO_REPLY}501 5.1.7 Error: bad sender address syntax\r\n")),
        (SessionConfig::default(), format!("{e}MAIL FROM:<>\r\nRCPT TO:<>\r\n"),
            format!("{EHLO_REPLY}250 2.1.0 Ok\r\n501 5.1.3 Error: null or missing recipient address\r\n")),
        (SessionConfig::default(), format!("{e}{m}{m}"),
            format!("{EHLO_REPLY}250 2.1.0 Ok\r\n503 5.5.1 Error: nested MAIL command\r\n")),
        (SessionConfig::default(), format!("{e}{r}DATA\r\n"),
            format!("{EHLO_REPLY}503 5.5.1 Error: need MAIL command\r\n503 5.5.1 Error: need RCPT command\r\n")),
        (SessionConfig::default(), format!("{e}{m}DATA\r\n"),
            format!("{EHLO_REPLY}250 2.1.0 Ok\r\n554 5.5.1 Error: no valid recipients\r\n")),
        (SessionConfig::default(), format!("{e}NOOP hello there\r\nQUIT now\r\nRSET x\r\nHELP\r\nVRFY bob\r\nVRFY\r\nEXPN list\r\nSTARTTLS\r\nAUTH PLAIN\r\nXYZZY\r\n"),
            format!("{EHLO_REPLY}250 2.0.0 Ok\r\n501 5.5.4 Syntax: QUIT\r\n501 5.5.4 Syntax: RSET\r\n\
214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY\r\n\
252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n501 5.5.4 Syntax: VRFY address\r\n\
502 5.5.1 Error: EXPN not implemented\r\n502 5.5.1 Error: command not implemented\r\n\
502 5.5.1 Error: command not implemented\r\n500 5.5.1 Error: command \"XYZZY\" not recognized\r\n")),
        (SessionConfig::default(), format!("{e}MAIL FROM:<a@b> SIZE=33554433\r\nMAIL FROM:<a@b> SIZE=x\r\nMAIL FROM:<a@b> BODY=BINARYMIME\r\nMAIL FROM:<a@b> SMTPUTF8\r\nMAIL FROM:<a@b> FOO=1\r\n"),
            format!("{EHLO_REPLY}552 5.3.4 Error: message size exceeds fixed maximum message size\r\n\
501 5.5.4 Error: bad SIZE value\r\n501 5.5.4 Error: BODY must be 7BIT or 8BITMIME\r\n\
555 5.5.4 Error: unsupported parameter SMTPUTF8\r\n555 5.5.4 Error: unsupported parameter FOO\r\n")),
        (SessionConfig::default(), format!("{e}MAIL FROM:<jörg@b.example>\r\n{m}RCPT TO:<jörg@b.example>\r\n"),
            format!("{EHLO_REPLY}553 5.6.7 Error: non-ASCII address requires SMTPUTF8\r\n250 2.1.0 Ok\r\n553 5.6.7 Error: non-ASCII address requires SMTPUTF8\r\n")),
        (utf8(), format!("{e}MAIL FROM:<jörg@b.example> SMTPUTF8 BODY=8BITMIME\r\nRCPT TO:<ü@d.example>\r\n"),
            "250-localhost Hello c.example\r\n250-PIPELINING\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 HELP\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n".into()),
        (small(), format!("{e}{m}RCPT TO:<1@x>\r\nRCPT TO:<2@x>\r\nRCPT TO:<3@x>\r\nRCPT TO:<a@b> NOTIFY=NEVER\r\n"),
            "250-localhost Hello c.example\r\n250-PIPELINING\r\n250-SIZE 100\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 HELP\r\n\
250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n452 4.5.3 Error: too many recipients\r\n555 5.5.4 Error: unsupported parameter NOTIFY\r\n".into()),
        (SessionConfig::default(), format!("{e}{m}{r}EHLO again\r\n{r}"),
            format!("{EHLO_REPLY}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n{}503 5.5.1 Error: need MAIL command\r\n", EHLO_REPLY.replace("c.example", "again"))),
        (SessionConfig::default(), format!("{e}{m}{r}BDAT 5\r\nhelloBDAT 0 LAST\r\nBDAT 3 LAST\r\nabcDATA\r\n"),
            format!("{EHLO_REPLY}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: 5 octets received\r\n250 2.0.0 Ok: queued\r\n\
503 5.5.1 Error: need RCPT command\r\n503 5.5.1 Error: need RCPT command\r\n")),
        (SessionConfig::default(), format!("{e}{m}{r}BDAT 2\r\nabDATA\r\n"),
            format!("{EHLO_REPLY}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: 2 octets received\r\n503 5.5.1 Error: DATA not allowed after BDAT\r\n")),
        (SessionConfig::default(), "HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 1 LAST\r\nx".into(),
            "250 localhost Hello x\r\n250 Ok\r\n250 Ok\r\n502 Error: BDAT not offered\r\n".into()),
        // Only CRLF ends a command line (RFC 5321 §2.3.8): a line holding a bare LF or CR is
        // one line up to its CRLF, answered once.
        (SessionConfig::default(), format!("{e}NOOP\nNOOP\rX\r\nNOOP\r\n"),
            format!("{EHLO_REPLY}500 5.5.2 Error: bare <LF> received\r\n250 2.0.0 Ok\r\n")),
        (SessionConfig::default(), format!("{e}NOOP\nNOOP\r\nNOOP\rNOOP\nNOOP\r\nNOOP\r\n"),
            format!("{EHLO_REPLY}500 5.5.2 Error: bare <LF> received\r\n500 5.5.2 Error: bare <CR> received\r\n250 2.0.0 Ok\r\n")),
        (SessionConfig::default(), format!("{e}{m}{r}DATA\r\nbare\nline\r\n.\r\nNOOP\r\n"),
            format!("{EHLO_REPLY}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n\
554 5.6.0 Error: bare <CR> or <LF> in message; lines must end with <CR><LF>\r\n250 2.0.0 Ok\r\n")),
        (small(), format!("{e}{m}{r}DATA\r\n{}\r\n.\r\nNOOP\r\n", "x".repeat(200)),
            "250-localhost Hello c.example\r\n250-PIPELINING\r\n250-SIZE 100\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 HELP\r\n\
250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n552 5.3.4 Error: message size exceeds fixed maximum message size\r\n250 2.0.0 Ok\r\n".into()),
        (SessionConfig::default(), format!("{e}NOOP {}\r\nNOOP\r\n", "y".repeat(600)),
            format!("{EHLO_REPLY}500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n")),
        (SessionConfig::default(), format!("{e}{m}{r}DATA\r\n{}\r\n.\r\n", "z".repeat(1000)),
            format!("{EHLO_REPLY}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n554 5.6.0 Error: message has a line longer than 1000 octets\r\n")),
        (SessionConfig::default(), format!("{e}QUIT\r\nNOOP\r\n"), format!("{EHLO_REPLY}221 2.0.0 Bye\r\n")),
        // The error budget: 20 by default, as Postfix's smtpd_hard_error_limit.
        (SessionConfig::default(), format!("{e}{}", "BAD\r\n".repeat(22)),
            format!("{EHLO_REPLY}{}421 4.7.0 localhost Error: too many errors\r\n", "500 5.5.1 Error: command \"BAD\" not recognized\r\n".repeat(20))),
        // Junk commands are free up to their own limit; beyond it each one spends the budget.
        (SessionConfig { max_junk_commands: 3, max_errors: 2, ..SessionConfig::default() },
            format!("{e}{}", "NOOP\r\n".repeat(7)),
            format!("{EHLO_REPLY}{}421 4.7.0 localhost Error: too many errors\r\n", "250 2.0.0 Ok\r\n".repeat(5))),
    ];
    for (i, (config, input, want)) in rows.into_iter().enumerate() {
        let got = transcript(config, input.as_bytes());
        assert_eq!(got, format!("{G}{want}"), "row {i}: {input:?}");
    }
}

#[test]
fn every_split_gives_the_same_transcript_and_message() {
    let input = b"EHLO c.example\r\nMAIL FROM:<a@b.example> BODY=8BITMIME SIZE=40\r\nRCPT TO:<c@d.example>\r\n\
RCPT TO:<e@f.example>\r\nDATA\r\nSubject: x\r\n\r\n..dot\r\n\xc3\xa9t\xc3\xa9\r\n.\r\n\
MAIL FROM:<>\r\nRCPT TO:<c@d.example>\r\nBDAT 7\r\nline\r\nxBDAT 3 LAST\r\nyz\nQUIT\r\n";
    let whole = {
        let mut h = Harness::new(SessionConfig {
            bare_line_endings: BareLineEndings::Reject,
            ..SessionConfig::default()
        });
        h.feed(input, input.len());
        (h.take_output(), h.messages.clone())
    };
    assert!(whole.0.ends_with("221 2.0.0 Bye\r\n"), "{}", whole.0);
    assert_eq!(
        whole.1.len(),
        1,
        "the BDAT message ends with a bare LF and is refused"
    );
    assert_eq!(
        whole.1[0],
        "Subject: x\r\n\r\n.dot\r\n\u{e9}t\u{e9}\r\n".as_bytes()
    );
    assert!(whole.0.contains("554 5.6.0"));
    for step in 1..input.len() {
        let mut h = Harness::new(SessionConfig::default());
        h.feed(input, step);
        assert_eq!((h.take_output(), h.messages.clone()), whole, "step {step}");
    }
}

#[test]
fn bdat_message_content_is_exact() {
    let input =
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 6\r\n.a\r\nb\rBDAT 4 LAST\r\n\n.\r\n";
    for step in 1..input.len() {
        let mut h = Harness::new(SessionConfig::default());
        h.feed(input, step);
        assert_eq!(
            h.messages,
            vec![b".a\r\nb\r\n.\r\n".to_vec()],
            "step {step}"
        );
        assert!(h.take_output().ends_with("250 2.0.0 Ok: queued\r\n"));
    }
}

#[test]
fn handler_decisions_and_held_pipelined_input() {
    let mut h = Harness::new(SessionConfig::default()).with_policy(|ev, s| match ev {
        Event::Rcpt if s.pending_recipient().unwrap().0.local_part() == "nobody" => {
            Some(Reply::new(550, EnhancedCode::new(5, 1, 1), "No such user"))
        }
        Event::DataEnd => Some(Reply::new(451, EnhancedCode::new(4, 3, 0), "Try later")),
        _ => None,
    });
    h.feed(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<nobody@b>\r\nDATA\r\nRCPT TO:<x@b>\r\nDATA\r\nhi\r\n.\r\n", 1000);
    let out = h.take_output();
    assert!(
        out.contains(
            "550 5.1.1 No such user\r\n554 5.5.1 Error: no valid recipients\r\n250 2.1.5 Ok\r\n354"
        ),
        "{out}"
    );
    assert!(out.ends_with("451 4.3.0 Try later\r\n"), "{out}");

    // A handler that has not answered yet holds all later input.
    let now = Instant::now();
    let mut s = Session::new(Arc::new(SessionConfig::default()), peer(), now);
    assert_eq!(s.poll_event(), Some(Event::Connect));
    let input = b"EHLO c\r\nNOOP\r\n";
    assert_eq!(
        s.handle_input(now, input),
        0,
        "nothing is read before the greeting decision"
    );
    s.handler_reply(None);
    let used = s.handle_input(now, input);
    assert_eq!(used, 8, "stops after EHLO, whose decision is pending");
    assert_eq!(s.poll_event(), Some(Event::Hello));
    assert_eq!(s.pending_helo(), Some(("c", true)));
    assert!(
        s.poll_timeout().is_none(),
        "no idle timer while the handler decides"
    );
    s.handler_reply(None);
    assert_eq!(s.handle_input(now, &input[used..]), 6);
    let mut out = Vec::new();
    s.poll_output(&mut out);
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with("250 HELP\r\n250 2.0.0 Ok\r\n"));
    assert_eq!(s.helo_name(), Some("c"));
}

/// RFC 5321 §3.1: after a 554 greeting the session waits for QUIT, answering anything else
/// with 503 (each spends the error budget); a 421 greeting closes at once.
#[test]
fn refused_greeting_waits_for_quit() {
    let now = Instant::now();
    let mut s = Session::new(Arc::new(SessionConfig::default()), peer(), now);
    s.poll_event();
    s.handler_reply(Some(Reply::new(554, EnhancedCode::new(5, 7, 1), "go away")));
    let mut out = Vec::new();
    s.poll_output(&mut out);
    assert_eq!(out, b"554 go away\r\n");
    assert!(!s.is_closed());
    let input = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nQUIT\r\n";
    assert_eq!(s.handle_input(now, input), input.len());
    assert!(s.poll_event().is_some_and(|e| matches!(e, Event::Quit)));
    out.clear();
    s.poll_output(&mut out);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("503 ").count(), 2, "{text}");
    assert!(text.ends_with("221 Bye\r\n"), "{text}");
    assert!(s.is_closed());

    let mut s = Session::new(Arc::new(SessionConfig::default()), peer(), now);
    s.poll_event();
    s.handler_reply(Some(Reply::new(421, EnhancedCode::new(4, 3, 2), "busy")));
    assert!(s.is_closed());
}

/// The error budget still bounds a client that will not QUIT after a refused greeting.
#[test]
fn refused_greeting_spends_the_error_budget() {
    let now = Instant::now();
    let cfg = SessionConfig {
        max_errors: 3,
        ..SessionConfig::default()
    };
    let mut s = Session::new(Arc::new(cfg), peer(), now);
    s.poll_event();
    s.handler_reply(Some(Reply::new(554, EnhancedCode::new(5, 7, 1), "no")));
    s.handle_input(now, b"NOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n");
    let mut out = Vec::new();
    s.poll_output(&mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("421 "), "{text}");
    assert!(s.is_closed());
}

#[test]
fn idle_and_data_timeouts_with_virtual_time() {
    let cfg = SessionConfig {
        idle_timeout: Duration::from_secs(300),
        data_timeout: Duration::from_secs(60),
        ..SessionConfig::default()
    };
    let mut h = Harness::new(cfg);
    let t0 = h.now;
    h.feed(b"EHLO c\r\n", 100);
    assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(300)));
    h.s.handle_timeout(t0 + Duration::from_secs(299));
    assert!(!h.s.is_closed());
    h.now = t0 + Duration::from_secs(200);
    h.feed(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\npartial", 100);
    assert_eq!(
        h.s.poll_timeout(),
        Some(t0 + Duration::from_secs(260)),
        "data timeout in DATA"
    );
    h.take_output();
    h.s.handle_timeout(t0 + Duration::from_secs(260));
    assert!(h.s.is_closed());
    h.pump();
    assert_eq!(
        h.take_output(),
        "421 4.4.2 localhost Error: timeout exceeded\r\n"
    );
    assert!(h.events.contains(&Event::Reset));
    assert!(h.s.poll_timeout().is_none());
}

#[test]
fn zero_copy_chunks_are_views_of_the_read_buffer() {
    let now = Instant::now();
    let mut s = Session::new(Arc::new(SessionConfig::default()), peer(), now);
    s.poll_event();
    s.handler_reply(None);
    let mut buf = BytesMut::from(&b"EHLO c\r\n"[..]);
    s.handle_input_buf(now, &mut buf);
    s.poll_event();
    s.handler_reply(None);
    buf.extend_from_slice(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    for _ in 0..3 {
        s.handle_input_buf(now, &mut buf);
        while let Some(ev) = s.poll_event() {
            if ev.needs_reply() {
                s.handler_reply(None);
            }
        }
    }
    assert!(buf.is_empty());
    buf.extend_from_slice(b"one\r\n..two\r\n.\r\nNOOP\r\n");
    let base = buf.as_ptr() as usize;
    s.handle_input_buf(now, &mut buf);
    match s.poll_event() {
        Some(Event::DataChunk(c)) => {
            assert_eq!(&c.wire()[..], b"one\r\n..two\r\n");
            assert_eq!(
                c.wire().as_ptr() as usize,
                base,
                "the chunk points into the read buffer"
            );
            assert_eq!(c.stuffing_dots(), &[5]);
            let content: Vec<u8> = c.content().flat_map(|b| b.to_vec()).collect();
            assert_eq!(content, b"one\r\n.two\r\n");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.poll_event(), Some(Event::DataEnd));
    assert_eq!(&buf[..], b"NOOP\r\n", "held until the DataEnd decision");
}

#[test]
fn normalizing_mode_accepts_bare_line_endings() {
    let cfg = SessionConfig {
        bare_line_endings: BareLineEndings::Normalize,
        ..SessionConfig::default()
    };
    let mut h = Harness::new(cfg);
    h.feed(
        b"EHLO c\nMAIL FROM:<a@b>\nRCPT TO:<c@d>\r\nDATA\r\na\n.\nb\r\n.\r\n",
        1000,
    );
    assert_eq!(h.messages, vec![b"a\r\n.\r\nb\r\n".to_vec()]);
    assert_eq!(h.wire, b"a\r\n..\r\nb\r\n");
}

#[test]
fn over_long_line_gets_one_verdict_however_it_is_split() {
    // Found by the `pipelined` fuzz target: 600 octets, then a bare CR. Whole, the bare CR was
    // reported; split, the length was. The length comes first.
    let mut input = b"EHLO c\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 600));
    input.extend_from_slice(b"\r\rNOOP\r\n");
    let whole = transcript(SessionConfig::default(), &input);
    assert!(
        whole.contains("500 5.5.2 Error: line too long\r\n"),
        "{whole}"
    );
    for step in [1, 7, 100, 512] {
        let mut h = Harness::new(SessionConfig::default());
        h.feed(&input, step);
        assert_eq!(h.take_output(), whole, "step {step}");
    }
}

/// `max_recipients: 0` means no limit (as 0 does for the size, the error budget and the
/// connection limit), not "refuse every recipient".
#[test]
fn max_recipients_zero_is_no_limit() {
    let config = SessionConfig {
        max_recipients: 0,
        ..SessionConfig::default()
    };
    let mut input = String::from("EHLO c.example\r\nMAIL FROM:<a@b>\r\n");
    for i in 0..150 {
        input.push_str(&format!("RCPT TO:<r{i}@d>\r\n"));
    }
    input.push_str("DATA\r\n");
    let out = transcript(config, input.as_bytes());
    assert_eq!(out.matches("250 2.1.5 Ok\r\n").count(), 150, "{out}");
    assert!(
        out.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n"),
        "{out}"
    );
}

/// A refusal that only follows from an earlier one is not a protocol error (issue 16, item 3):
/// a pipelining client sends RCPT, DATA and BDAT chunks before it can know that its MAIL or
/// every recipient was refused, and six such transactions must not exhaust the budget.
#[test]
fn follow_on_refusals_spare_the_error_budget() {
    let config = SessionConfig {
        max_errors: 5,
        ..SessionConfig::default()
    };
    // Six refused transactions: MAIL refused, two RCPT and DATA pipelined behind it.
    let mut input = String::from("EHLO c.example\r\n");
    for _ in 0..6 {
        input.push_str("MAIL FROM:<refused@x>\r\nRCPT TO:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n");
    }
    // Then a transaction whose recipients are all refused, with DATA and BDAT behind them.
    input.push_str(
        "MAIL FROM:<ok@x>\r\nRCPT TO:<bad@b>\r\nDATA\r\nBDAT 3\r\nabcBDAT 2 LAST\r\nxyRSET\r\n",
    );
    input.push_str("NOOP\r\n");
    let mut d = Harness::new(config).with_policy(|ev, s| match ev {
        Event::Mail
            if s.envelope()
                .mail_from
                .as_ref()
                .is_some_and(|m| m.as_str().starts_with("refused")) =>
        {
            Some(Reply::new(
                550,
                EnhancedCode::new(5, 7, 1),
                "sender refused",
            ))
        }
        Event::Rcpt
            if s.pending_recipient()
                .is_some_and(|(m, _)| m.as_str().starts_with("bad")) =>
        {
            Some(Reply::new(550, EnhancedCode::new(5, 1, 1), "no such user"))
        }
        _ => None,
    });
    let out = d.feed(input.as_bytes(), usize::MAX).take_output();
    assert!(
        !out.contains("421"),
        "the budget was spent on follow-on refusals:\n{out}"
    );
    assert_eq!(
        out.matches("503 5.5.1 Error: need MAIL command").count(),
        12,
        "{out}"
    );
    assert_eq!(
        out.matches("503 5.5.1 Error: need RCPT command").count(),
        6,
        "{out}"
    );
    assert_eq!(
        out.matches("554 5.5.1 Error: no valid recipients").count(),
        3,
        "{out}"
    );
    assert!(out.ends_with("250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n"), "{out}");
    // The same commands without a refusal before them are the client's errors.
    let mut d = Harness::new(SessionConfig {
        max_errors: 5,
        ..SessionConfig::default()
    });
    let out = d
        .feed(b"EHLO c.example\r\nRCPT TO:<a@b>\r\nRCPT TO:<a@b>\r\nDATA\r\nDATA\r\nRCPT TO:<a@b>\r\n", usize::MAX)
        .take_output();
    assert!(
        out.ends_with("421 4.7.0 localhost Error: too many errors\r\n"),
        "{out}"
    );
}

/// A handler that fails a BDAT transaction at the end of an intermediate chunk (a relay whose
/// upstream dropped): that chunk gets the refusal, the transaction is reset, the chunks the
/// client pipelined behind it get the same reply without spending the error budget, and the
/// next MAIL starts clean (RFC 3030 §4.2).
#[test]
fn a_chunk_refused_by_the_handler_fails_the_transaction() {
    let config = SessionConfig {
        max_errors: 3,
        ..SessionConfig::default()
    };
    let lost = Reply::new(451, EnhancedCode::new(4, 4, 2), "Upstream connection lost");
    let mut chunks = 0;
    let mut h = Harness::new(config).with_policy(move |ev, _| match ev {
        Event::ChunkEnd => {
            chunks += 1;
            (chunks == 2).then(|| lost.clone())
        }
        _ => None,
    });
    let mut input = String::from("EHLO c.example\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n");
    input.push_str("BDAT 3\r\nabcBDAT 3\r\ndefBDAT 2\r\nghBDAT 2\r\nijBDAT 1 LAST\r\nk");
    input.push_str("NOOP\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT 2 LAST\r\nok");
    let out = h.feed(input.as_bytes(), usize::MAX).take_output();
    let replies: Vec<&str> = out.lines().skip(8).collect();
    assert_eq!(
        replies,
        [
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.0.0 Ok: 3 octets received",
            "451 4.4.2 Upstream connection lost",
            "451 4.4.2 Upstream connection lost",
            "451 4.4.2 Upstream connection lost",
            "451 4.4.2 Upstream connection lost",
            "250 2.0.0 Ok",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.0.0 Ok: queued",
        ],
        "{out}"
    );
    assert_eq!(h.s.error_count(), 0, "{out}");
    assert_eq!(h.events.iter().filter(|e| **e == Event::Reset).count(), 1);
    // Only the second transaction's message reached the end of data, and whole.
    assert_eq!(h.messages, [b"ok".to_vec()]);
}

/// A command line gets the idle timeout from its first octet: a client trickling one octet
/// at a time cannot keep a session alive (issue 16, item 5).
#[test]
fn a_trickled_command_line_cannot_extend_its_deadline() {
    let mut h = Harness::new(SessionConfig {
        idle_timeout: Duration::from_secs(10),
        ..SessionConfig::default()
    });
    let t0 = h.now;
    h.feed(b"EHLO c\r\n", 100);
    h.take_output();
    for (i, b) in b"NOOPxxxxxx".iter().enumerate() {
        h.now = t0 + Duration::from_secs(2 * i as u64);
        h.feed(&[*b], 1);
    }
    // The last octet came at t0 + 18 s; the line began at t0.
    assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    h.s.handle_timeout(t0 + Duration::from_secs(10));
    assert!(h.s.is_closed());
    h.pump();
    assert_eq!(
        h.take_output(),
        "421 4.4.2 localhost Error: timeout exceeded\r\n"
    );
    // A line that completes resets it: the next one gets its own deadline.
    let mut h = Harness::new(SessionConfig {
        idle_timeout: Duration::from_secs(10),
        ..SessionConfig::default()
    });
    let t0 = h.now;
    h.feed(b"EHLO c\r\nNO", 100);
    h.now = t0 + Duration::from_secs(8);
    h.feed(b"OP\r\nNO", 100);
    assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_secs(18)));
}

/// Under stress (the driver says so) a message body must keep `min_data_rate` after its
/// first second; otherwise only the data timeout applies (issue 16, item 5).
#[test]
fn under_stress_a_body_must_keep_the_minimum_rate() {
    let mut h = Harness::new(SessionConfig {
        min_data_rate: 100,
        data_timeout: Duration::from_secs(600),
        ..SessionConfig::default()
    });
    let t0 = h.now;
    h.feed(
        b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
        100,
    );
    h.now = t0 + Duration::from_millis(200);
    h.feed(&[b'x'; 50], 100);
    assert_eq!(
        h.s.poll_timeout(),
        Some(t0 + Duration::from_millis(200) + Duration::from_secs(600))
    );
    h.s.set_stressed(true);
    // 50 octets in: due by 1.5 s after the body began.
    assert_eq!(h.s.poll_timeout(), Some(t0 + Duration::from_millis(1500)));
    h.take_output();
    h.s.handle_timeout(t0 + Duration::from_millis(1500));
    assert!(h.s.is_closed());
}
