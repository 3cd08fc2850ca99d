//! Pipelining through `ringrelay proxy`, end to end (RFC 2920): a client's pipelined MAIL,
//! RCPTs and DATA reach the upstream in one go, before the upstream has answered MAIL, when the
//! upstream offers PIPELINING, and one per round trip when it does not. Whatever the upstream
//! answers, the client gets the replies a non-pipelined relay would give, the upstream
//! connection stays in step (it is reused afterwards) and only acknowledged messages are
//! delivered. The upstream is the scripted one (tests/peers/relay_upstream.py), which reports
//! how many lines were already waiting behind a command when it answered it.

mod common;
mod relay_common;

use common::*;
use relay_common::*;
use std::time::Duration;

/// The scripted upstream in `mode`, the relay in front of it (`io`, `extra` flags) and a
/// client that has said EHLO.
fn start(mode: &str, io: &str, extra: &[&str]) -> (Scripted, Server, Client) {
    let (up, server, c) = scripted_relay(io, mode, extra, "client.example");
    (up, server, c)
}

/// The client's whole envelope and DATA in one write.
fn pipelined(from: &str, to: &[&str]) -> Vec<u8> {
    let mut s = format!("MAIL FROM:<{from}>\r\n");
    for t in to {
        s.push_str(&format!("RCPT TO:<{t}>\r\n"));
    }
    s.push_str("DATA\r\n");
    s.into_bytes()
}

/// A pipelined envelope the upstream accepts whole, then the message: checks every reply.
fn relay_pipelined(c: &mut Client, io: &str, to: &[&str], token: &str) {
    c.send(&pipelined("a@example.com", to));
    assert_eq!(c.reply().0, 250, "{io}: MAIL");
    for t in to {
        assert_eq!(c.reply().0, 250, "{io}: RCPT {t}");
    }
    c.expect(354);
    assert_eq!(body(c, token).0, 250, "{io}: {token}");
}

/// Sends the message after a 354 and returns the reply to the final dot.
fn body(c: &mut Client, token: &str) -> Answer {
    let mut wire = stuff(&tagged(token));
    wire.extend_from_slice(b".\r\n");
    c.send(&wire);
    c.reply()
}

#[test]
fn pipelined_envelope_reaches_the_upstream_before_mail_is_answered() {
    for io in IO_MODES {
        let (up, server, mut c) = start("slow-mail", io, &[]);
        relay_pipelined(
            &mut c,
            io,
            &["b@example.com", "c@example.com", "d@example.com"],
            "pipe-1",
        );
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["pipe-1"], "{io}");
        // Three RCPTs and DATA were waiting behind MAIL when the upstream answered it.
        assert_eq!(
            seen.buffered,
            [("MAIL".to_string(), 4)],
            "{io}: {}",
            seen.stdout
        );
    }
}

#[test]
fn upstream_without_pipelining_gets_one_command_per_round_trip() {
    for io in IO_MODES {
        let (up, server, mut c) = start("no-pipelining", io, &[]);
        relay_pipelined(
            &mut c,
            io,
            &["b@example.com", "c@example.com"],
            "lockstep-1",
        );
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["lockstep-1"], "{io}");
        let verbs: Vec<&str> = seen.buffered.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(verbs, ["MAIL", "RCPT", "RCPT", "DATA"], "{io}");
        assert!(
            seen.buffered.iter().all(|(_, n)| *n == 0),
            "{io}: a command was sent before the previous reply: {}",
            seen.stdout
        );
    }
}

/// The upstream refuses MAIL: the pipelined RCPTs and DATA get the replies a waiting relay
/// would give (503), the upstream's replies to them are read and dropped, and the same
/// upstream connection then carries the next transaction.
#[test]
fn refused_mail_with_pipelined_recipients() {
    for io in IO_MODES {
        let (up, server, mut c) = start("ok", io, &[]);
        c.send(&pipelined(
            "refused@example.com",
            &["b@example.com", "c@example.com"],
        ));
        assert_eq!(c.reply(), (550, "550 5.7.1 sender refused".into()), "{io}");
        let need_mail = (503, "503 5.5.1 Error: need MAIL command".to_string());
        assert_eq!(c.reply(), need_mail, "{io}");
        assert_eq!(c.reply(), need_mail, "{io}");
        assert_eq!(
            c.reply(),
            (503, "503 5.5.1 Error: need RCPT command".into()),
            "{io}"
        );
        relay_pipelined(&mut c, io, &["b@example.com"], "after-refusal");
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["after-refusal"], "{io}");
        assert_eq!(seen.connects, 1, "{io}: {}", seen.stdout);
        // The first envelope was pipelined whole to the upstream, which refused all of it.
        let first: Vec<&str> = seen
            .commands
            .iter()
            .map(String::as_str)
            .skip(1)
            .take(4)
            .collect();
        assert_eq!(
            first,
            [
                "MAIL FROM:<refused@example.com>",
                "RCPT TO:<b@example.com>",
                "RCPT TO:<c@example.com>",
                "DATA"
            ],
            "{io}"
        );
    }
}

/// Every recipient refused upstream: the pipelined DATA gets our 554 (no valid recipients),
/// nothing is delivered, and the connection is reused for the next transaction.
#[test]
fn every_pipelined_recipient_refused() {
    for io in IO_MODES {
        let (up, server, mut c) = start("refuse-rcpt", io, &[]);
        c.send(&pipelined(
            "a@example.com",
            &["bad@example.com", "busy@example.com"],
        ));
        assert_eq!(c.reply().0, 250, "{io}: MAIL");
        assert_eq!(
            c.reply(),
            (550, "550 5.1.1 no such user here".into()),
            "{io}"
        );
        assert_eq!(
            c.reply(),
            (450, "450 4.2.1 mailbox busy, try later".into()),
            "{io}"
        );
        assert_eq!(
            c.reply(),
            (554, "554 5.5.1 Error: no valid recipients".into()),
            "{io}"
        );
        c.ok("RSET");
        relay_pipelined(&mut c, io, &["good@example.com"], "second");
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["second"], "{io}");
        assert_eq!(seen.connects, 1, "{io}: {}", seen.stdout);
    }
}

/// A recipient we refuse ourselves (outside --relay-domains) sits between recipients the
/// upstream decides: the replies still come back in order.
#[test]
fn our_own_refusal_keeps_its_place_among_pipelined_replies() {
    for io in IO_MODES {
        let (up, server, mut c) = start("slow-mail", io, &["--relay-domains", "example.com"]);
        c.send(&pipelined(
            "a@example.com",
            &["b@example.com", "x@elsewhere.org", "c@example.com"],
        ));
        assert_eq!(c.reply().0, 250, "{io}: MAIL");
        assert_eq!(c.reply().0, 250, "{io}: RCPT b");
        assert_eq!(
            c.reply(),
            (554, "554 5.7.1 Relay access denied".into()),
            "{io}"
        );
        assert_eq!(c.reply().0, 250, "{io}: RCPT c");
        c.expect(354);
        assert_eq!(body(&mut c, "mixed").0, 250, "{io}");
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["mixed"], "{io}");
        assert!(
            !seen.commands.iter().any(|c| c.contains("elsewhere")),
            "{io}: a refused recipient went upstream: {:?}",
            seen.commands
        );
        // RCPT b, RCPT c and DATA were waiting behind MAIL.
        assert_eq!(seen.buffered, [("MAIL".to_string(), 3)], "{io}");
    }
}

/// A pooled connection that the upstream closed while idle (421) is found stale when the
/// pipelined envelope meets it: everything goes again on a new connection, and the client
/// never notices.
#[test]
fn stale_pooled_connection_under_a_pipelined_envelope() {
    for io in IO_MODES {
        let (mut up, server, mut c) = start("idle-421", io, &[]);
        relay_pipelined(&mut c, io, &["b@example.com"], "first");
        up.wait_for("CLOSED 1");
        std::thread::sleep(Duration::from_millis(100));
        relay_pipelined(&mut c, io, &["b@example.com", "c@example.com"], "second");
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["first", "second"], "{io}");
        assert_eq!(seen.connects, 2, "{io}: {}", seen.stdout);
    }
}

/// The error budget spares correct pipelining (issue 16, item 3): six refused transactions
/// with their RCPTs and DATA pipelined behind each MAIL, then a refused MAIL followed by twelve
/// BDAT chunks, all in one write, get exactly the replies a waiting client would, and the
/// session goes on (it used to end with "421 too many errors" after the tenth 503).
#[test]
fn pipelined_follow_on_refusals_do_not_end_the_session() {
    for io in IO_MODES {
        let (up, server, mut c) = start("ok", io, &[]);
        let mut batch = Vec::new();
        for _ in 0..6 {
            batch.extend(pipelined(
                "refused@example.com",
                &["b@example.com", "c@example.com"],
            ));
        }
        batch.extend_from_slice(b"MAIL FROM:<refused@example.com>\r\n");
        for i in 0..12 {
            let last = if i == 11 { " LAST" } else { "" };
            batch.extend_from_slice(format!("BDAT 5{last}\r\nhello").as_bytes());
        }
        c.send(&batch);
        for _ in 0..6 {
            assert_eq!(c.reply().0, 550, "{io}");
            assert_eq!(c.reply().0, 503, "{io}");
            assert_eq!(c.reply().0, 503, "{io}");
            assert_eq!(c.reply().0, 503, "{io}");
        }
        assert_eq!(c.reply().0, 550, "{io}");
        for i in 0..12 {
            let (code, line) = c.reply();
            assert_eq!(code, 503, "{io}: chunk {i}: {line}");
        }
        // Still in business: a message goes through.
        relay_pipelined(&mut c, io, &["b@example.com"], "after-refusals");
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["after-refusals"], "{io}");
    }
}
