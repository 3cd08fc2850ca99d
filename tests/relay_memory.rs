//! The relay in memory, quinn-`Pair` style: a `proto::Session` and the relay's `Connection`
//! driven as the shard's connection loop drives them, against a scripted upstream that answers
//! over a `tokio::io::duplex` (the relay reaches it through its `Connector`). One
//! current-thread runtime, no sockets, no Python, deterministic. The real-peer tests
//! (relay_proxy.rs, relay_pipelining.rs with tests/peers/relay_upstream.py) cover the same
//! ground over TCP; this scripted upstream mirrors that one's modes and what it reports.
//! The kit (scripted upstream, session driver) is in tests/relay_memory_kit/.

mod relay_memory_kit;

use relay_memory_kit::*;

/// The client's pipelined envelope and DATA, in one input.
fn pipelined(from: &str, to: &[&str]) -> String {
    let mut s = format!("MAIL FROM:<{from}>\r\n");
    for t in to {
        s.push_str(&format!("RCPT TO:<{t}>\r\n"));
    }
    s + "DATA\r\n"
}

const MAIL_OK: &str = "250 2.1.0 sender ok\r\n";
const RCPT_OK: &str = "250 2.1.5 recipient ok\r\n";
const GO_AHEAD: &str = "354 End data with <CR><LF>.<CR><LF>\r\n";
const DELIVERED: &str = "250 2.0.0 delivered\r\n";

/// Relays a message the upstream accepts whole, checking every reply.
async fn relay_one(c: &mut Client, to: &[&str], body: &str) {
    let want = format!("{MAIL_OK}{}{GO_AHEAD}", RCPT_OK.repeat(to.len()));
    assert_eq!(c.send(pipelined("a@example.com", to)).await, want);
    assert_eq!(c.send(format!("{body}.\r\n")).await, DELIVERED);
}

/// Splits a relayed message into our `Received:` field and the rest, checking the field.
fn received_and_rest(message: &[u8], recipient: Option<&str>) -> (String, Vec<u8>) {
    const OPENING: &str =
        "Received: from client.example ([127.0.0.1])\r\n\tby relay.test (ringrelay) with ESMTP id ";
    let text = String::from_utf8_lossy(message);
    assert!(text.starts_with(OPENING), "{text}");
    // The field ends at the first line that does not continue it.
    let end = text
        .match_indices("\r\n")
        .map(|(i, _)| i + 2)
        .find(|&i| !text[i..].starts_with('\t'))
        .unwrap();
    let field = text[..end].to_string();
    match recipient {
        Some(r) => assert!(
            field.contains(&format!("\r\n\tfor <{r}>;\r\n\t")),
            "{field}"
        ),
        None => assert!(!field.contains("\tfor <"), "{field}"),
    }
    assert!(field.ends_with(" +0000\r\n"), "{field}");
    (field, message[end..].to_vec())
}

// ---------------------------------------------------------------------------------------------
// The tests

/// MAIL, two RCPTs and DATA pipelined, the body in several chunks: the upstream gets the
/// envelope in one go, then exactly one `Received:` field and the body byte for byte, then the
/// terminator; the client gets the upstream's replies.
#[test]
fn plain_transaction_is_byte_exact_upstream() {
    run(async {
        let (relay, seen) = relay(Mode::Ok, false);
        let mut c = Client::start(&relay).await;
        let envelope = pipelined("a@example.com", &["b@example.com", "c@example.com"]);
        assert_eq!(
            c.send(&envelope).await,
            format!("{MAIL_OK}{RCPT_OK}{RCPT_OK}{GO_AHEAD}")
        );
        let body = [
            "Subject: memory\r\nX-Test-Id: plain-1\r\n",
            "\r\nfirst line\r\n..a stuffed dot\r\n",
            "a last line without a line end",
            "\r\nand one with\r\n",
        ];
        for chunk in body {
            assert_eq!(c.send(chunk).await, "");
        }
        assert_eq!(c.send(".\r\n").await, DELIVERED);
        c.quit().await;

        let seen = seen.borrow();
        assert_eq!(seen.connects, 1);
        assert_eq!(seen.delivered.len(), 1);
        let (field, rest) = received_and_rest(&seen.delivered[0], None);
        assert_eq!(String::from_utf8(rest).unwrap(), body.concat());
        assert_eq!(
            String::from_utf8_lossy(&seen.received[0]),
            format!("EHLO relay.test\r\n{envelope}{field}{}.\r\n", body.concat()),
        );
        assert_eq!(
            seen.buffered,
            [("MAIL".to_string(), 3)],
            "RCPT, RCPT, DATA behind MAIL"
        );
        let whole = String::from_utf8_lossy(&seen.delivered[0]).into_owned();
        assert_eq!(whole.matches("Received:").count(), 1);
    });
}

/// Each body chunk the client's session yields reaches the upstream in one write, even when
/// it is several pieces (the `X-Peer:` field placed inside it, BDAT content dot-stuffed); the
/// last pieces share one write with the terminator.
#[test]
fn one_upstream_write_per_body_chunk() {
    run(async {
        let (relay, seen) = relay(Mode::Ok, true);
        let mut c = Client::start(&relay).await;
        let envelope = pipelined("a@example.com", &["b@example.com"]);
        assert_eq!(
            c.send(&envelope).await,
            format!("{MAIL_OK}{RCPT_OK}{GO_AHEAD}")
        );
        let body = [
            "Subject: x-peer\r\n",
            "X-Test-Id: w-1\r\n\r\nbody\r\n..dotted\r\n",
            "more\r\n",
        ];
        for chunk in body {
            let (writes, chunks) = (seen.borrow().writes.len(), c.chunks);
            c.send(chunk).await;
            let events = c.chunks - chunks;
            assert_eq!(seen.borrow().writes.len() - writes, events, "{chunk:?}");
        }
        let writes = seen.borrow().writes.len();
        assert_eq!(c.send(".\r\n").await, DELIVERED);
        assert_eq!(seen.borrow().writes.len(), writes + 1);
        assert_eq!(seen.borrow().writes.last().unwrap(), b".\r\n");
        {
            let s = seen.borrow();
            let (_, rest) = received_and_rest(&s.delivered[0], Some("b@example.com"));
            let want = "Subject: x-peer\r\nX-Test-Id: w-1\r\nX-Peer: 127.0.0.1\r\n\r\nbody\r\n..dotted\r\nmore\r\n";
            assert_eq!(String::from_utf8(rest).unwrap(), want);
        }

        // BDAT: the upstream's DATA opens at the first chunk (DATA, then the Received:
        // field after its 354); every later chunk is one write of its stuffed pieces, and the
        // line end the content lacks goes with the terminator.
        let bdat = "MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n";
        assert_eq!(c.send(bdat).await, format!("{MAIL_OK}{RCPT_OK}"));
        let first = "Subject: bdat\r\n";
        let reply = c.send(format!("BDAT {}\r\n{first}", first.len())).await;
        assert!(reply.starts_with("250 "), "{reply}");
        let second = "\r\n.one\r\n.two";
        let writes = seen.borrow().writes.len();
        let reply = c.send(format!("BDAT {}\r\n{second}", second.len())).await;
        assert!(reply.starts_with("250 "), "{reply}");
        {
            let s = seen.borrow();
            assert_eq!(s.writes.len(), writes + 1);
            assert_eq!(
                s.writes.last().unwrap(),
                b"X-Peer: 127.0.0.1\r\n\r\n..one\r\n..two"
            );
        }
        assert_eq!(c.send("BDAT 0 LAST\r\n").await, DELIVERED);
        let s = seen.borrow();
        assert_eq!(s.writes.last().unwrap(), b"\r\n.\r\n");
        let (_, rest) = received_and_rest(&s.delivered[1], Some("b@example.com"));
        let want = "Subject: bdat\r\nX-Peer: 127.0.0.1\r\n\r\n..one\r\n..two\r\n";
        assert_eq!(String::from_utf8(rest).unwrap(), want);
    });
}

/// Recipients the upstream refuses get its replies (5xx as 5xx, 4xx as 4xx); the message goes
/// to the one it accepted, whose address our `Received:` field then names.
#[test]
fn refused_recipient_is_mirrored() {
    run(async {
        let (relay, seen) = relay(Mode::RefuseRcpt, false);
        let mut c = Client::start(&relay).await;
        let to = ["bad@example.com", "busy@example.com", "good@example.com"];
        assert_eq!(
            c.send(pipelined("a@example.com", &to)).await,
            format!(
                "{MAIL_OK}550 5.1.1 no such user here\r\n\
                 450 4.2.1 mailbox busy, try later\r\n{RCPT_OK}{GO_AHEAD}"
            )
        );
        assert_eq!(c.send("Subject: r\r\n\r\nhi\r\n.\r\n").await, DELIVERED);
        let s = seen.borrow();
        let (_, rest) = received_and_rest(&s.delivered[0], Some("good@example.com"));
        assert_eq!(rest, b"Subject: r\r\n\r\nhi\r\n");
    });
}

/// The upstream's 4xx to the final dot is ours: the MTA in front keeps the message. The
/// connection stays in step and carries the next transaction.
#[test]
fn upstream_4xx_at_end_of_data_is_a_4xx() {
    run(async {
        let (relay, seen) = relay(Mode::Eod452, false);
        let mut c = Client::start(&relay).await;
        for _ in 0..2 {
            let want = format!("{MAIL_OK}{RCPT_OK}{GO_AHEAD}");
            assert_eq!(
                c.send(pipelined("a@example.com", &["b@example.com"])).await,
                want
            );
            assert_eq!(
                c.send("Subject: t\r\n\r\nx\r\n.\r\n").await,
                "452 4.3.1 insufficient storage, later\r\n"
            );
        }
        assert!(seen.borrow().delivered.is_empty());
        assert_eq!(seen.borrow().connects, 1);
        assert_eq!(relay.borrow().pool_stats().reuses, 1);
    });
}

/// The upstream refuses MAIL with RCPTs and DATA pipelined behind it: the client gets the
/// replies a waiting relay would give (503s), the upstream's replies to what was pipelined are
/// read and dropped, and the same connection carries the next transaction.
#[test]
fn refused_mail_with_pipelined_recipients_and_data() {
    run(async {
        let (relay, seen) = relay(Mode::Ok, false);
        let mut c = Client::start(&relay).await;
        let first = pipelined("refused@example.com", &["b@example.com", "c@example.com"]);
        assert_eq!(
            c.send(&first).await,
            "550 5.7.1 sender refused\r\n\
             503 5.5.1 Error: need MAIL command\r\n\
             503 5.5.1 Error: need MAIL command\r\n\
             503 5.5.1 Error: need RCPT command\r\n"
        );
        relay_one(&mut c, &["b@example.com"], "Subject: after\r\n\r\nok\r\n").await;
        c.quit().await;
        let s = seen.borrow();
        assert_eq!(s.connects, 1);
        assert_eq!(relay.borrow().pool_stats().reuses, 1);
        let lines: Vec<&str> = s.commands.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            lines[1..],
            [
                "MAIL FROM:<refused@example.com>",
                "RCPT TO:<b@example.com>",
                "RCPT TO:<c@example.com>",
                "DATA",
                "MAIL FROM:<a@example.com>",
                "RCPT TO:<b@example.com>",
                "DATA",
            ]
        );
        assert_eq!(s.delivered.len(), 1);
    });
}

/// Without PIPELINING upstream, the client's pipelined envelope goes one command per round
/// trip; the client sees no difference.
#[test]
fn upstream_without_pipelining_gets_one_command_per_round_trip() {
    run(async {
        let (relay, seen) = relay(Mode::NoPipelining, false);
        let mut c = Client::start(&relay).await;
        let to = ["b@example.com", "c@example.com"];
        relay_one(&mut c, &to, "Subject: l\r\n\r\nlockstep\r\n").await;
        let s = seen.borrow();
        let verbs: Vec<&str> = s.buffered.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(verbs, ["MAIL", "RCPT", "RCPT", "DATA"]);
        assert!(s.buffered.iter().all(|(_, n)| *n == 0), "{:?}", s.buffered);
    });
}

/// A pooled connection that the upstream closed while idle (silently, or after a 421) is found
/// stale when the next pipelined envelope meets it: everything goes again on a new
/// connection, and the client never notices.
#[test]
fn stale_pooled_connection_is_replaced_unseen() {
    for mode in [Mode::IdleClose, Mode::Idle421] {
        run(async {
            let (relay, seen) = relay(mode, false);
            let mut c = Client::start(&relay).await;
            relay_one(&mut c, &["b@example.com"], "Subject: 1\r\n\r\nfirst\r\n").await;
            tokio::task::yield_now().await;
            let to = ["b@example.com", "c@example.com"];
            relay_one(&mut c, &to, "Subject: 2\r\n\r\nsecond\r\n").await;
            let s = seen.borrow();
            assert_eq!(s.connects, 2, "{mode:?}");
            assert_eq!(s.delivered.len(), 2, "{mode:?}");
            let stats = relay.borrow().pool_stats();
            assert_eq!((stats.reuses, stats.connects), (1, 2), "{mode:?}");
            // The whole second envelope went again, in one write, on the new connection.
            let second: Vec<&str> = s
                .commands
                .iter()
                .filter(|(k, _)| *k == 2)
                .map(|(_, l)| l.as_str())
                .collect();
            assert_eq!(
                second,
                [
                    "EHLO relay.test",
                    "MAIL FROM:<a@example.com>",
                    "RCPT TO:<b@example.com>",
                    "RCPT TO:<c@example.com>",
                    "DATA"
                ],
                "{mode:?}"
            );
            assert_eq!(
                s.buffered.last().unwrap(),
                &("MAIL".to_string(), 3),
                "{mode:?}"
            );
        });
    }
}
