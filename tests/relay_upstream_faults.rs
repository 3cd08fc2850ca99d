//! `ringrelay proxy` against a scripted misbehaving upstream (tests/peers/relay_upstream.py):
//! every failure the relay must map (RFC 5321 §6.1: never a 250 the upstream did not give):
//! refusals at each stage, 421, an upstream that is down, silent, drops or stalls mid-DATA,
//! stale pooled connections, replies out of protocol, unsolicited lines. Split from
//! tests/relay_proxy.rs by concern.

mod common;
mod relay_common;

use common::*;
use relay_common::*;
use std::io::Write;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// 3. Faults at the upstream

/// Upstream verdicts on recipients become ours, pipelined: 550 stays 550, 450 stays 450, the
/// accepted recipient gets the message.
#[test]
fn upstream_refuses_a_recipient() {
    for io in IO_MODES {
        let (up, server, mut c) = scripted_relay(io, "refuse-rcpt", &[], "client.example");
        c.send(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<bad@example.com>\r\nRCPT TO:<good@example.com>\r\nRCPT TO:<busy@example.com>\r\nDATA\r\n",
        );
        assert_eq!(c.reply().0, 250, "{io}: MAIL");
        let (code, line) = c.reply();
        assert_eq!(
            (code, line.as_str()),
            (550, "550 5.1.1 no such user here"),
            "{io}"
        );
        assert_eq!(c.reply().0, 250, "{io}: good recipient");
        let (code, line) = c.reply();
        assert_eq!(
            (code, line.as_str()),
            (450, "450 4.2.1 mailbox busy, try later"),
            "{io}"
        );
        assert_eq!(c.reply().0, 354, "{io}: DATA");
        let msg = tagged("rcpt-1");
        let mut wire = stuff(&msg);
        wire.extend_from_slice(b".\r\n");
        c.send(&wire);
        let (code, line) = c.reply();
        assert_eq!((code, line.as_str()), (250, "250 2.0.0 delivered"), "{io}");
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["rcpt-1"], "{io}");
        assert!(
            seen.commands
                .contains(&"RCPT TO:<busy@example.com>".to_string()),
            "{io}: {:?}",
            seen.commands
        );
    }
}

/// A refusal of DATA itself is mirrored (5xx → 5xx, 4xx → 4xx) and nothing is delivered;
/// the session goes on (RSET, then a new transaction gets the same verdict).
#[test]
fn upstream_refuses_data() {
    for io in IO_MODES {
        for (mode, want) in [
            ("data-554", "554 5.3.0 no data for you"),
            ("data-451", "451 4.3.0 cannot take data now"),
        ] {
            let (up, server, mut c) = scripted_relay(io, mode, &[], "client.example");
            c.ok("MAIL FROM:<a@example.com>");
            c.ok("RCPT TO:<b@example.com>");
            let (_, line) = c.cmd("DATA");
            assert_eq!(line, want, "{io} {mode}");
            c.ok("RSET");
            c.ok("MAIL FROM:<a@example.com>");
            c.ok("RCPT TO:<b@example.com>");
            let (_, line) = c.cmd("DATA");
            assert_eq!(line, want, "{io} {mode}: second transaction");
            c.quit();
            server.stop().assert_success();
            let seen = up.finish();
            assert!(seen.delivered.is_empty(), "{io} {mode}: {seen:?}");
            // Both transactions on one upstream connection: RSET was forwarded.
            assert_eq!(seen.connects, 1, "{io} {mode}: {}", seen.stdout);
            assert!(seen.commands.iter().any(|c| c == "RSET"), "{io} {mode}");
        }
    }
}

/// The upstream gives up in the middle of a transaction (421 at a RCPT, then closes): that
/// RCPT and the DATA get 4xx (our session stays open), nothing is delivered, and the next
/// transaction gets a new upstream connection.
#[test]
fn upstream_421_mid_transaction() {
    for io in IO_MODES {
        let (up, server, mut c) = scripted_relay(io, "rcpt-421", &[], "client.example");
        c.ok("MAIL FROM:<a@example.com>");
        c.ok("RCPT TO:<first@example.com>");
        let (code, line) = c.cmd("RCPT TO:<bye@example.com>");
        assert_eq!(code, 451, "{io}: {line}");
        let (code, line) = c.cmd("DATA");
        assert_eq!(code / 100, 4, "{io}: {line}");
        c.ok("RSET");
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("next"));
        assert_eq!(code, 250, "{io}: {line}");
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["next"], "{io}");
        assert_eq!(seen.connects, 2, "{io}: {}", seen.stdout);
    }
}

/// An upstream that answers DATA with anything positive but 354 is broken: a 3xx would put
/// our session into DATA mode (a client such as Postfix sends the body on any 3xx) while the
/// upstream still reads commands, a 2xx would be a meaningless "success". Either is a 451
/// and the connection is dropped; the body never reaches the upstream's command parser.
#[test]
fn upstream_answers_data_with_something_else() {
    for io in IO_MODES {
        for mode in ["data-334", "data-250"] {
            let (up, server, mut c) = scripted_relay(io, mode, &[], "client.example");
            c.ok("MAIL FROM:<a@example.com>");
            c.ok("RCPT TO:<b@example.com>");
            let (code, line) = c.cmd("DATA");
            assert_eq!(code, 451, "{io} {mode}: {line}");
            // BDAT: the same verdict at the last chunk.
            c.ok("RSET");
            c.ok("MAIL FROM:<a@example.com>");
            c.ok("RCPT TO:<b@example.com>");
            let body = b"Subject: x\r\n\r\nRCPT TO:<injected@example.com>\r\n";
            c.send(format!("BDAT {} LAST\r\n", body.len()).as_bytes());
            c.send(body);
            let (code, line) = c.reply();
            assert_eq!(code, 451, "{io} {mode} BDAT: {line}");
            c.quit();
            server.stop().assert_success();
            let seen = up.finish();
            assert!(seen.delivered.is_empty(), "{io} {mode}");
            assert!(
                !seen.commands.iter().any(|c| c.contains("injected")),
                "{io} {mode}: message content reached the command parser: {:?}",
                seen.commands
            );
        }
    }
}

/// A refusal after the final dot is our reply to the dot, class and all.
#[test]
fn upstream_refuses_at_end_of_data() {
    for io in IO_MODES {
        for (mode, want) in [
            ("eod-554", "554 5.6.0 content refused"),
            ("eod-452", "452 4.3.1 insufficient storage, later"),
        ] {
            let (up, server, mut c) = scripted_relay(io, mode, &[], "client.example");
            for i in 0..2 {
                let (_, line) = c.transaction(
                    "a@example.com",
                    &["b@example.com"],
                    &tagged(&format!("e{i}")),
                );
                assert_eq!(line, want, "{io} {mode} message {i}");
            }
            c.quit();
            server.stop().assert_success();
            let seen = up.finish();
            assert!(seen.delivered.is_empty(), "{io} {mode}");
            // A refused message does not spoil the connection: reused for the second.
            assert_eq!(seen.connects, 1, "{io} {mode}: {}", seen.stdout);
        }
    }
}

/// No upstream listening: MAIL gets 451 4.4.1 (the MTA in front keeps the message).
#[test]
fn upstream_down() {
    for io in IO_MODES {
        let dead = free_port();
        let server = proxy(io, &[dead], &[]);
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        let (code, line) = c.cmd("MAIL FROM:<a@example.com>");
        assert_eq!(code, 451, "{io}: {line}");
        // The client learns that the upstream is unavailable and an incident id, not our
        // upstream's address or the system's error (issue 16, item 8); stderr has both.
        assert!(
            line.starts_with("451 4.4.1 Upstream unavailable (incident "),
            "{io}: {line}"
        );
        assert!(
            !line.contains(&dead.to_string()) && !line.contains("os error"),
            "{io}: {line}"
        );
        let id = line
            .split("incident ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .expect("an incident id")
            .to_string();
        // stderr is read by a thread of the harness: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let logged = loop {
            let err = server.stderr();
            if let Some(l) = err.lines().find(|l| l.contains(&format!("incident {id}:"))) {
                break l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{io}: incident {id} not on stderr: {err}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(logged.contains(&dead.to_string()), "{io}: {logged}");
        // The session stays usable, and the next attempt fails the same way.
        let (code, _) = c.cmd("MAIL FROM:<a@example.com>");
        assert_eq!(code, 451, "{io}");
        c.quit();
        server.stop().assert_success();
    }
}

/// An upstream that accepts the TCP connection and never says a word: with
/// --upstream-timeout 2, MAIL gets a 4xx after about 2 s.
#[test]
fn upstream_never_greets() {
    for io in IO_MODES {
        let (up, server, mut c) =
            scripted_relay(io, "mute", &["--upstream-timeout", "2"], "client.example");
        let t0 = Instant::now();
        let (code, line) = c.cmd("MAIL FROM:<a@example.com>");
        let took = t0.elapsed();
        assert_eq!(code, 451, "{io}: {line}");
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
            "{io}: took {took:?}"
        );
        c.quit();
        server.stop().assert_success();
        up.finish();
    }
}

/// The upstream takes the whole message and never answers the dot: 4xx after the timeout,
/// never 250.
#[test]
fn upstream_never_answers_the_dot() {
    for io in IO_MODES {
        let mut up = Scripted::start("hang-eod");
        let server = proxy(io, &[up.port], &["--upstream-timeout", "2"]);
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        let t0 = Instant::now();
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("hang"));
        let took = t0.elapsed();
        assert_eq!(code / 100, 4, "{io}: {line}");
        assert!(took < Duration::from_secs(10), "{io}: took {took:?}");
        up.wait_for("HANGING 1 hang");
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert!(seen.delivered.is_empty(), "{io}");
    }
}

/// SIGTERM while the upstream sits on the dot: once the drain timeout passes the client is
/// told 421 4.3.2 (never 250, never a bare close) and the process exits.
#[test]
fn drain_timeout_while_upstream_hangs() {
    for io in IO_MODES {
        let mut up = Scripted::start("hang-eod");
        let server = proxy(
            io,
            &[up.port],
            &["--upstream-timeout", "60", "--drain-timeout", "1"],
        );
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        c.ok("MAIL FROM:<a@example.com>");
        c.ok("RCPT TO:<b@example.com>");
        let (code, line) = c.cmd("DATA");
        assert_eq!(code, 354, "{io}: {line}");
        let mut wire = stuff(&tagged("drain"));
        wire.extend_from_slice(b".\r\n");
        c.send(&wire);
        up.wait_for("HANGING 1 drain");
        let t0 = Instant::now();
        server.signal(libc::SIGTERM);
        let (code, line) = c.reply();
        let told = t0.elapsed();
        assert_eq!(code, 421, "{io}: {line}");
        assert!(line.starts_with("421 4.3.2"), "{io}: {line}");
        assert!(told < Duration::from_secs(5), "{io}: 421 after {told:?}");
        let mut rest = String::new();
        assert_eq!(
            std::io::BufRead::read_line(&mut c.r, &mut rest).unwrap_or(0),
            0,
            "{io}: {rest:?}"
        );
        let stopped = server.wait(Duration::from_secs(10), t0);
        assert!(
            stopped.took < Duration::from_secs(5),
            "{io}: {:?}",
            stopped.took
        );
        let seen = up.finish();
        assert!(seen.delivered.is_empty(), "{io}");
    }
}

/// The upstream closes the connection in the middle of the message: 4xx at the dot, and
/// nothing delivered; the next message goes through on a new connection.
#[test]
fn upstream_drops_mid_data() {
    for io in IO_MODES {
        let (up, server, mut c) = scripted_relay(io, "drop-mid-data", &[], "client.example");
        let mut msg = tagged("dropped");
        for i in 0..2000 {
            msg.extend_from_slice(format!("filler line {i}\r\n").as_bytes());
        }
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &msg);
        assert_eq!(code / 100, 4, "{io}: {line}");
        // The connection is usable: the next transaction fails the same way (the upstream
        // drops every time) but gets a fresh upstream connection.
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("small"));
        assert_eq!(code / 100, 4, "{io}: {line}");
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert!(seen.delivered.is_empty(), "{io}");
        assert_eq!(seen.connects, 2, "{io}: {}", seen.stdout);
    }
}

/// The upstream stops reading in the middle of a message far larger than the socket buffers:
/// the relay's writes must time out like its reads (4xx), not hang the client forever.
#[test]
fn upstream_stops_reading_mid_data() {
    let _heavy = heavy();
    for io in IO_MODES {
        let mut up = Scripted::start("stall-data");
        let server = proxy(io, &[up.port], &["--upstream-timeout", "2"]);
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        c.ok("MAIL FROM:<a@example.com>");
        c.ok("RCPT TO:<b@example.com>");
        let (code, _) = c.cmd("DATA");
        assert_eq!(code, 354);
        up.wait_for("STALLED 1");
        // 24 MB: more than the loopback socket buffers on both hops can hold.
        let line = format!("{}\r\n", "z".repeat(998));
        let mut chunk = Vec::new();
        for _ in 0..1024 {
            chunk.extend_from_slice(line.as_bytes());
        }
        let w = c.w.try_clone().unwrap();
        w.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let writer = std::thread::spawn(move || {
            let mut w = w;
            let _ = w.write_all(b"Subject: stall\r\n\r\n");
            for _ in 0..24 {
                if w.write_all(&chunk).is_err() {
                    return false;
                }
            }
            w.write_all(b".\r\n").is_ok()
        });
        let t0 = Instant::now();
        let (code, line) = c.reply();
        let took = t0.elapsed();
        assert_eq!(code / 100, 4, "{io}: {line}");
        assert!(took < Duration::from_secs(40), "{io}: took {took:?}");
        let _ = writer.join();
        server.stop().assert_success();
        let seen = up.finish();
        assert!(seen.delivered.is_empty(), "{io}");
    }
}

/// An idle pooled connection that the upstream closed (with a 421, or without a word) is
/// replaced at the next MAIL: the client never sees it.
#[test]
fn upstream_421_on_idle_pooled_connection() {
    for io in IO_MODES {
        for mode in ["idle-421", "idle-close"] {
            let mut up = Scripted::start(mode);
            let server = proxy(io, &[up.port], &[]);
            let mut c = Client::connect(server.port());
            c.ehlo("client.example");
            let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("i1"));
            assert_eq!(code, 250, "{io} {mode}: {line}");
            up.wait_for("CLOSED 1");
            let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("i2"));
            assert_eq!(code, 250, "{io} {mode}: {line}");
            c.quit();
            // A second client connection later: the same again.
            up.wait_for("CLOSED 2");
            let mut c = Client::connect(server.port());
            c.ehlo("client.example");
            let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("i3"));
            assert_eq!(code, 250, "{io} {mode}: {line}");
            c.quit();
            server.stop().assert_success();
            let seen = up.finish();
            assert_eq!(seen.delivered, ["i1", "i2", "i3"], "{io} {mode}");
            assert_eq!(seen.connects, 3, "{io} {mode}");
        }
    }
}

/// An upstream that answers MAIL or RCPT with a 3xx (which no RFC allows) is a protocol error:
/// the client gets a 4xx, never that positive reply, and nothing is delivered.
#[test]
fn upstream_3xx_to_mail_or_rcpt_is_a_tempfail() {
    for mode in ["mail-354", "rcpt-354"] {
        let (up, server, mut c) = scripted_relay("epoll", mode, &[], "client.example");
        let (mail, line) = c.cmd("MAIL FROM:<a@example.com>");
        let (code, line) = if mode == "mail-354" {
            (mail, line)
        } else {
            assert_eq!(mail, 250, "{mode}: {line}");
            c.cmd("RCPT TO:<b@example.com>")
        };
        assert!((400..500).contains(&code), "{mode}: {line}");
        let (data, line) = c.cmd("DATA");
        assert!(
            data >= 500,
            "{mode}: no transaction to send data for: {line}"
        );
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert!(seen.delivered.is_empty(), "{}", seen.stdout);
    }
}

/// A pooled connection that received more than the replies it owed, whether a stray line
/// right after its reply to the final dot or one that arrives while it sits idle, is never
/// reused: that line would otherwise answer the next client's MAIL (issue 16, item 4).
#[test]
fn upstream_unsolicited_lines_retire_the_connection() {
    for io in IO_MODES {
        for mode in ["extra-after-dot", "extra-while-idle"] {
            let (up, server, mut c) = scripted_relay(io, mode, &[], "client.example");
            let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("x1"));
            assert_eq!(code, 250, "{io} {mode}: {line}");
            std::thread::sleep(Duration::from_millis(300));
            let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("x2"));
            assert_eq!(code, 250, "{io} {mode}: {line}");
            assert!(
                line.contains("delivered"),
                "{io} {mode}: not the upstream's: {line}"
            );
            c.quit();
            server.stop().assert_success();
            let seen = up.finish();
            assert_eq!(seen.delivered, ["x1", "x2"], "{io} {mode}");
            assert_eq!(
                seen.connects, 2,
                "{io} {mode}: the stray line's connection was reused"
            );
        }
    }
}
