//! Server-side AUTH (RFC 4954) in the protocol core, in memory: PLAIN and LOGIN with and
//! without an initial response, the 334 exchange, cancellation, bad input, where AUTH is
//! allowed, and the same transcript however the input is split. The handler here accepts
//! alice's password and refuses everything else.

use std::sync::Arc;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use core::net::SocketAddr;
use ringrelay::proto::{EnhancedCode, Event, Extensions, Reply, Session, SessionConfig};

fn config(auth: bool) -> SessionConfig {
    SessionConfig {
        extensions: Extensions {
            auth,
            ..Extensions::default()
        },
        max_errors: 5,
        ..SessionConfig::default()
    }
}

/// Runs `input` fed `step` octets at a time; returns the replies and the authenticated name.
fn run(config: SessionConfig, input: &[u8], step: usize) -> (String, Option<String>) {
    let now = Instant::now();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut s = Session::new(Arc::new(config), peer, now);
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let mut pieces = input.chunks(step.max(1));
    loop {
        let used = s.handle_input(now, &pending);
        pending.drain(..used);
        let mut answered = false;
        while let Some(ev) = s.poll_event() {
            if !ev.needs_reply() {
                continue;
            }
            let reply = match ev {
                Event::Auth => {
                    let c = s.pending_auth().expect("AUTH event without credentials");
                    (c.username == "alice" && c.password == "s3cret")
                        .then(|| Reply::new(235, EnhancedCode::new(2, 7, 0), "welcome alice"))
                }
                _ => None,
            };
            s.handler_reply(reply);
            answered = true;
        }
        s.poll_output(&mut out);
        if answered || used > 0 {
            continue;
        }
        match pieces.next() {
            Some(p) => pending.extend_from_slice(p),
            None => break,
        }
    }
    (
        String::from_utf8(out).unwrap(),
        s.authenticated().map(str::to_string),
    )
}

fn b64(s: &str) -> String {
    B64.encode(s)
}

/// The replies after the greeting and the EHLO reply.
fn after_ehlo(out: &str) -> String {
    out.split_once("250 HELP\r\n")
        .map_or(out.to_string(), |(_, rest)| rest.to_string())
}

const EHLO: &str = "EHLO c.example\r\n";

#[test]
fn mechanisms_and_their_exchanges() {
    let plain = b64("\0alice\0s3cret");
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        (
            format!("AUTH PLAIN {plain}\r\n"),
            "235 2.7.0 welcome alice\r\n",
            Some("alice"),
        ),
        (
            format!("AUTH PLAIN\r\n{plain}\r\n"),
            "334 \r\n235 2.7.0 welcome alice\r\n",
            Some("alice"),
        ),
        (
            format!("AUTH LOGIN\r\n{}\r\n{}\r\n", b64("alice"), b64("s3cret")),
            "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 welcome alice\r\n",
            Some("alice"),
        ),
        (
            format!("auth login {}\r\n{}\r\n", b64("alice"), b64("s3cret")),
            "334 UGFzc3dvcmQ6\r\n235 2.7.0 welcome alice\r\n",
            Some("alice"),
        ),
        (
            format!("AUTH PLAIN {}\r\n", b64("\0alice\0wrong")),
            "535 5.7.8 Error: authentication credentials invalid\r\n",
            None,
        ),
        (
            "AUTH LOGIN\r\n*\r\n".to_string(),
            "334 VXNlcm5hbWU6\r\n501 5.0.0 Authentication cancelled\r\n",
            None,
        ),
        (
            "AUTH PLAIN !!!\r\n".to_string(),
            "501 5.5.2 Error: cannot decode the AUTH response\r\n",
            None,
        ),
        (
            format!("AUTH PLAIN {}\r\n", b64("alice\0s3cret")),
            "501 5.5.2 Error: cannot decode the AUTH response\r\n",
            None,
        ),
        (
            "AUTH CRAM-MD5\r\n".to_string(),
            "504 5.5.4 Error: unrecognized authentication type\r\n",
            None,
        ),
        (
            "AUTH\r\n".to_string(),
            "501 5.5.4 Syntax: AUTH mechanism\r\n",
            None,
        ),
        // A response line is never a command: QUIT here is (bad) base64, not QUIT.
        (
            "AUTH PLAIN\r\nQUIT\r\nNOOP\r\n".to_string(),
            "334 \r\n501 5.5.2 Error: cannot decode the AUTH response\r\n250 2.0.0 Ok\r\n",
            None,
        ),
    ];
    for (exchange, want, who) in cases {
        let input = format!("{EHLO}{exchange}");
        let (out, authed) = run(config(true), input.as_bytes(), input.len());
        assert_eq!(after_ehlo(&out), want, "{exchange:?}");
        assert_eq!(authed.as_deref(), who, "{exchange:?}");
        for step in [1, 3, 17] {
            let (split, _) = run(config(true), input.as_bytes(), step);
            assert_eq!(split, out, "{exchange:?} in pieces of {step}");
        }
    }
}

#[test]
fn where_auth_is_allowed() {
    let ok = format!("AUTH PLAIN {}\r\n", b64("\0alice\0s3cret"));
    // Offered in the EHLO reply only when on; off, it is not implemented.
    let (out, _) = run(config(true), EHLO.as_bytes(), 64);
    assert!(out.contains("250-AUTH PLAIN LOGIN\r\n"), "{out}");
    let input = format!("{EHLO}{ok}");
    let (out, who) = run(config(false), input.as_bytes(), 64);
    assert!(!out.contains("AUTH PLAIN LOGIN"), "{out}");
    assert_eq!(
        after_ehlo(&out),
        "502 5.5.1 Error: command not implemented\r\n"
    );
    assert_eq!(who, None);
    // Only after EHLO, once, and never inside a transaction.
    let input = format!("HELO c\r\n{ok}");
    let (out, _) = run(config(true), input.as_bytes(), 64);
    // After HELO there are no enhanced status codes.
    assert!(out.ends_with("503 Error: send EHLO first\r\n"), "{out}");
    let input = format!("{EHLO}{ok}{ok}");
    let (out, who) = run(config(true), input.as_bytes(), 64);
    assert!(
        out.ends_with("235 2.7.0 welcome alice\r\n503 5.5.1 Error: already authenticated\r\n"),
        "{out}"
    );
    assert_eq!(who.as_deref(), Some("alice"));
    let input = format!("{EHLO}MAIL FROM:<a@b>\r\n{ok}");
    let (out, who) = run(config(true), input.as_bytes(), 64);
    assert!(
        out.ends_with("503 5.5.1 Error: AUTH not permitted during a mail transaction\r\n"),
        "{out}"
    );
    assert_eq!(who, None);
}

#[test]
fn failed_attempts_spend_the_error_budget() {
    let bad = format!("AUTH PLAIN {}\r\n", b64("\0alice\0guess"));
    let input = format!("{EHLO}{}", bad.repeat(6));
    let (out, who) = run(config(true), input.as_bytes(), input.len());
    assert_eq!(out.matches("535 5.7.8").count(), 5, "{out}");
    assert!(
        out.ends_with("421 4.7.0 localhost Error: too many errors\r\n"),
        "{out}"
    );
    assert_eq!(who, None);
}

#[test]
fn starttls_hands_over_to_the_driver_and_resets_the_session() {
    let config = SessionConfig {
        extensions: Extensions {
            auth: true,
            starttls: true,
            ..Extensions::default()
        },
        ..SessionConfig::default()
    };
    let now = Instant::now();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut s = Session::new(Arc::new(config), peer, now);
    assert_eq!(s.poll_event(), Some(Event::Connect));
    s.handler_reply(None);
    let mut out = Vec::new();
    let take = |s: &mut Session, out: &mut Vec<u8>| {
        s.poll_output(out);
        String::from_utf8(std::mem::take(out)).unwrap()
    };
    let input = b"EHLO c\r\n";
    assert_eq!(s.handle_input(now, input), input.len());
    assert_eq!(s.poll_event(), Some(Event::Hello));
    s.handler_reply(None);
    let ehlo = take(&mut s, &mut out);
    assert!(
        ehlo.contains("250-STARTTLS\r\n") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    // AUTH only inside TLS; STARTTLS not inside a transaction.
    let input = b"AUTH PLAIN AGFsaWNlAHMzY3JldA==\r\nMAIL FROM:<a@b>\r\n";
    assert_eq!(s.handle_input(now, input), input.len());
    assert_eq!(s.poll_event(), Some(Event::Mail));
    s.handler_reply(None);
    let input = b"STARTTLS\r\nRSET\r\n";
    assert_eq!(s.handle_input(now, input), input.len());
    assert_eq!(s.poll_event(), Some(Event::Reset));
    let got = take(&mut s, &mut out);
    assert!(got.contains("538 5.7.11 "), "{got}");
    assert!(
        got.contains("503 5.5.1 Error: STARTTLS not permitted during a mail transaction\r\n"),
        "{got}"
    );
    // Accepted: 220, then no more input until the driver has started TLS.
    let input = b"STARTTLS\r\nEHLO c\r\n";
    assert_eq!(
        s.handle_input(now, input),
        10,
        "reads up to the STARTTLS line only"
    );
    assert_eq!(take(&mut s, &mut out), "220 2.0.0 Ready to start TLS\r\n");
    assert!(s.starttls_requested());
    assert_eq!(s.handle_input(now, &input[10..]), 0);
    s.tls_started();
    assert!(s.is_tls() && !s.starttls_requested());
    assert_eq!(s.helo_name(), None, "the client must greet again");
    assert_eq!(s.handle_input(now, &input[10..]), 8);
    assert_eq!(s.poll_event(), Some(Event::Hello));
    s.handler_reply(None);
    let ehlo = take(&mut s, &mut out);
    assert!(
        ehlo.contains("250-AUTH PLAIN LOGIN\r\n") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    let input = b"STARTTLS\r\n";
    assert_eq!(s.handle_input(now, input), input.len());
    assert_eq!(
        take(&mut s, &mut out),
        "554 5.5.1 Error: TLS already active\r\n"
    );
}
