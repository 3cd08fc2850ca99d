//! LMTP (RFC 2033) in the protocol core, in memory: LHLO, HELO/EHLO refused, one reply per
//! accepted recipient after DATA and after BDAT LAST, per-recipient verdicts from the handler
//! (`Event::RecipientVerdict`), pipelined input held until every verdict is out, and LHLO
//! unknown in SMTP mode. Input is fed whole and one octet at a time.

use std::sync::Arc;
use std::time::Instant;

use ringrelay::proto::{EnhancedCode, Event, Reply, Session, SessionConfig};

/// Runs `input` through a session, answering with `policy`; returns the output.
fn run(
    config: SessionConfig,
    input: &[u8],
    step: usize,
    mut policy: impl FnMut(&Event, &Session) -> Option<Reply>,
) -> String {
    let now = Instant::now();
    let mut s = Session::new(Arc::new(config), "127.0.0.1:4000".parse().unwrap(), now);
    let mut pending = Vec::new();
    let mut out = Vec::new();
    let mut pieces = input.chunks(step).peekable();
    loop {
        let used = s.handle_input(now, &pending);
        pending.drain(..used);
        let mut answered = false;
        while let Some(ev) = s.poll_event() {
            if ev.needs_reply() {
                let r = policy(&ev, &s);
                s.handler_reply(r);
                answered = true;
            }
        }
        s.poll_output(&mut out);
        if !answered {
            match pieces.next() {
                Some(p) => pending.extend_from_slice(p),
                None => break,
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn lmtp() -> SessionConfig {
    SessionConfig {
        lmtp: true,
        greeting: "LMTP ringrelay".into(),
        max_recipients: 3,
        ..SessionConfig::default()
    }
}

const LHLO_REPLY: &str = "250-localhost Hello c.example\r\n250-PIPELINING\r\n250-SIZE 33554432\r\n\
250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 HELP\r\n";

#[test]
fn one_reply_per_recipient_after_data_and_bdat() {
    let input = b"HELO c.example\r\nEHLO c.example\r\nLHLO c.example\r\nMAIL FROM:<a@x>\r\n\
RCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\nhi\r\n.\r\nNOOP\r\n\
MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nRCPT TO:<d@y>\r\nRCPT TO:<e@y>\r\n\
BDAT 2\r\nabBDAT 1 LAST\r\ncQUIT\r\n";
    let expected = format!(
        "220 localhost LMTP ringrelay\r\n\
500 Error: command \"HELO\" not recognized; this is LMTP, use LHLO\r\n\
500 Error: command \"EHLO\" not recognized; this is LMTP, use LHLO\r\n\
{LHLO_REPLY}250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n\
250 2.0.0 Ok: queued\r\n250 2.0.0 Ok: queued\r\n250 2.0.0 Ok\r\n\
250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n452 4.5.3 Error: too many recipients\r\n\
250 2.0.0 Ok: 2 octets received\r\n\
250 2.0.0 Ok: queued\r\n250 2.0.0 Ok: queued\r\n250 2.0.0 Ok: queued\r\n221 2.0.0 Bye\r\n"
    );
    for step in [input.len(), 1] {
        assert_eq!(
            run(lmtp(), input, step, |_, _| None),
            expected,
            "step {step}"
        );
    }
}

/// The end-of-data answer is every recipient's default; a `RecipientVerdict` answer replaces
/// it for that recipient alone, in RCPT order.
#[test]
fn per_recipient_verdicts() {
    let input = b"LHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<ok@y>\r\nRCPT TO:<full@y>\r\n\
RCPT TO:<gone@y>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n";
    for step in [input.len(), 1] {
        let mut seen = Vec::new();
        let out = run(lmtp(), input, step, |ev, s| match ev {
            Event::DataEnd => Some(Reply::new(250, EnhancedCode::new(2, 1, 5), "delivered")),
            Event::RecipientVerdict => {
                let (i, to) = s.verdict_recipient().expect("a recipient");
                seen.push((i, to.to_string()));
                match to.as_str() {
                    "full@y" => Some(Reply::new(452, EnhancedCode::new(4, 2, 2), "mailbox full")),
                    "gone@y" => Some(Reply::new(550, EnhancedCode::new(5, 1, 1), "no such user")),
                    _ => None,
                }
            }
            _ => None,
        });
        let tail = "250 2.1.5 delivered\r\n452 4.2.2 mailbox full\r\n550 5.1.1 no such user\r\n\
221 2.0.0 Bye\r\n";
        assert!(out.ends_with(tail), "step {step}: {out}");
        let order: Vec<usize> = seen.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, [0, 1, 2]);
        assert_eq!(seen[1].1, "full@y");
    }
}

/// Outside LMTP mode LHLO is an unknown command, and HELO/EHLO work as always (no enhanced
/// codes before EHLO, as in every SMTP session).
#[test]
fn lhlo_is_unknown_in_smtp() {
    let out = run(
        SessionConfig::default(),
        b"LHLO c\r\nHELO c\r\nQUIT\r\n",
        64,
        |_, _| None,
    );
    assert_eq!(
        out,
        "220 localhost ESMTP ringrelay\r\n500 Error: command \"LHLO\" not recognized\r\n\
250 localhost Hello c\r\n221 Bye\r\n"
    );
}
