//! `ringrelay proxy` between real peers, loopback only: a recording aiosmtpd upstream
//! (tests/peers/relay_recorder.py) for byte-exact delivery and volume (Postfix's smtp-source),
//! and a scripted misbehaving upstream (tests/peers/relay_upstream.py) for every failure the
//! relay must map (RFC 5321 §6.1: never a 250 the upstream did not give). Clients are the raw
//! socket client of tests/relay_common (it can bind to 127.0.0.2, pipeline, send BDAT and hang
//! up mid-message), swaks and smtp-source. Pipelining to the upstream: tests/relay_pipelining.rs.
//!
//! Invariant checked everywhere: every message a client got 250 for was delivered upstream
//! exactly once, and nothing else was.

mod common;
mod relay_common;

use common::*;
use relay_common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The Received: field

/// RFC 5322 atext (an `id` of a Received: field must be an Atom or a msg-id).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

fn check_date(d: &str) {
    let f: Vec<&str> = d.split(' ').collect();
    let ok = f.len() == 6
        && ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"].contains(&f[0])
        && f[1].len() == 2
        && f[1].parse::<u32>().is_ok_and(|d| (1..=31).contains(&d))
        && [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .contains(&f[2])
        && f[3].len() == 4
        && f[3].parse::<u32>().is_ok_and(|y| y >= 2024)
        && f[4].len() == 8
        && f[4]
            .split(':')
            .all(|p| p.len() == 2 && p.parse::<u8>().is_ok())
        && f[5] == "+0000";
    assert!(ok, "not an RFC 5322 date: {d:?}");
}

/// Checks that `content` is exactly one Received: field of ours followed by `original`;
/// returns the field's id.
fn check_received(
    content: &[u8],
    original: &[u8],
    helo: &str,
    protocol: &str,
    recipient: Option<&str>,
) -> String {
    assert!(
        content.ends_with(original),
        "delivered content does not end with the original message\n--- delivered ---\n{}\n--- original ---\n{}",
        String::from_utf8_lossy(content),
        String::from_utf8_lossy(original)
    );
    let field = &content[..content.len() - original.len()];
    let field = std::str::from_utf8(field).expect("the Received: field is ASCII");
    assert!(
        field.ends_with("\r\n"),
        "prepended part not CRLF-terminated: {field:?}"
    );
    let lines: Vec<&str> = field.trim_end_matches("\r\n").split("\r\n").collect();
    let rest = &lines[1..];
    assert_eq!(
        lines[0],
        format!("Received: from {helo} ([127.0.0.1])"),
        "first line of {field:?}"
    );
    // Every continuation line is folded (starts with whitespace): one field only.
    assert!(
        rest.iter().all(|l| l.starts_with('\t')),
        "more than one field prepended: {field:?}"
    );
    let by_prefix = format!("\tby {RELAY_HOST} (ringrelay) with {protocol} id ");
    let id_part = rest[0]
        .strip_prefix(&by_prefix)
        .unwrap_or_else(|| panic!("second line {:?} is not {by_prefix:?}...", rest[0]));
    let (id, date_line) = match recipient {
        Some(r) => {
            assert_eq!(rest.len(), 3, "{field:?}");
            assert_eq!(rest[1], format!("\tfor <{r}>;"), "{field:?}");
            (id_part, rest[2])
        }
        None => {
            assert_eq!(rest.len(), 2, "{field:?}");
            (
                id_part
                    .strip_suffix(';')
                    .unwrap_or_else(|| panic!("no ';' before the date: {field:?}")),
                rest[1],
            )
        }
    };
    assert!(
        !id.is_empty() && id.chars().all(is_atext),
        "the id {id:?} is not an RFC 5321 Atom: {field:?}"
    );
    check_date(date_line.strip_prefix('\t').unwrap());
    id.to_string()
}

/// The Received: fields in the header section of a message.
fn received_count(content: &[u8]) -> usize {
    let head = match content.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &content[..i + 2],
        None => content,
    };
    head.split(|&b| b == b'\n')
        .filter(|l| l.len() >= 9 && l[..9].eq_ignore_ascii_case(b"received:"))
        .count()
}

// ---------------------------------------------------------------------------------------------
// 1. Byte-exact delivery to a recording upstream

/// Messages that exercise the content rules: header folding, lines starting with dots (one
/// and two, a line that is only a dot), empty lines, tabs and trailing blanks, a 998-octet
/// line, 8-bit octets, UTF-8, and a message far larger than one read.
fn exact_messages() -> Vec<(&'static str, Vec<u8>)> {
    let mut v = Vec::new();
    v.push((
        "dots",
        b"From: Dot Tester <a@example.com>\r\nTo: b@example.com\r\nSubject: a folded\r\n\tsubject line\r\nX-Test-Id: dots\r\n\r\n.\r\n..\r\n...three\r\n. space\r\n\r\n\r\ntab\there  \r\n.\r\nend\r\n".to_vec(),
    ));
    let mut long = b"Subject: long line\r\nX-Test-Id: long\r\n\r\n".to_vec();
    long.extend(std::iter::repeat_n(b'L', 998));
    long.extend_from_slice(b"\r\n.");
    long.extend(std::iter::repeat_n(b'M', 997));
    long.extend_from_slice(b"\r\n");
    v.push(("long", long));
    // Every octet except NUL, CR and LF, in lines of 64.
    let mut eight = b"Subject: 8bit\r\nX-Test-Id: 8bit\r\nContent-Type: text/plain; charset=latin1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".to_vec();
    let octets: Vec<u8> = (1u8..=255).filter(|b| *b != b'\r' && *b != b'\n').collect();
    for chunk in octets.chunks(64) {
        eight.extend_from_slice(chunk);
        eight.extend_from_slice(b"\r\n");
    }
    eight.extend_from_slice(b".\xe9t\xe9\r\n");
    v.push(("8bit", eight));
    v.push((
        "utf8",
        "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?= und Grüße\r\nX-Test-Id: utf8\r\nFrom: Jürgen <jürgen@bücher.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nΚαλημέρα κόσμε, こんにちは 🌍\r\n.ドット\r\n"
            .as_bytes()
            .to_vec(),
    ));
    // Larger than any read buffer: dots and CRLFs fall on every possible chunk boundary.
    let mut big = b"Subject: big\r\nX-Test-Id: big\r\n\r\n".to_vec();
    let mut i = 0u32;
    while big.len() < 400_000 {
        let line = match i % 5 {
            0 => format!(".{i}\r\n"),
            1 => ".\r\n".to_string(),
            2 => format!("..{}\r\n", "x".repeat((i % 200) as usize)),
            3 => "\r\n".to_string(),
            _ => format!("line {i} {}\r\n", "y".repeat((i * 7 % 900) as usize)),
        };
        big.extend_from_slice(line.as_bytes());
        i += 1;
    }
    v.push(("big", big));
    v
}

fn byte_exact_delivery(io: &str) {
    let rec = Recorder::start(&["--smtputf8"]);
    let server = proxy(io, &[rec.port], &["--smtputf8"]);
    let msgs = exact_messages();
    let mut c = Client::connect(server.port());
    c.ehlo("client.example");
    // (sender, recipients, MAIL parameters, content) per message sent.
    let mut expected: Vec<(String, Vec<String>, String, &[u8])> = Vec::new();
    for (name, content) in &msgs {
        let (from, to, mail) = match *name {
            "8bit" => (
                "a@example.com".to_string(),
                vec!["b@example.com".to_string()],
                "MAIL FROM:<a@example.com> BODY=8BITMIME".to_string(),
            ),
            "utf8" => (
                "jürgen@bücher.example".to_string(),
                vec!["δοκιμή@παράδειγμα.example".to_string()],
                "MAIL FROM:<jürgen@bücher.example> SMTPUTF8 BODY=8BITMIME".to_string(),
            ),
            // Two recipients: no "for" clause.
            "long" => (
                "a@example.com".to_string(),
                vec!["b@example.com".to_string(), "c@example.org".to_string()],
                "MAIL FROM:<a@example.com>".to_string(),
            ),
            _ => (
                "a@example.com".to_string(),
                vec!["b@example.com".to_string()],
                "MAIL FROM:<a@example.com>".to_string(),
            ),
        };
        c.ok(&mail);
        for t in &to {
            c.ok(&format!("RCPT TO:<{t}>"));
        }
        let (code, line) = c.data(content);
        assert_eq!(code, 250, "{name}: {line}");
        // The upstream's own 250 (its text), with one enhanced code.
        assert!(
            line.starts_with("250 2.0.0 recorded as "),
            "{name}: the reply to the dot is not the upstream's: {line:?}"
        );
        let opts = mail
            .split(' ')
            .skip(2)
            .collect::<Vec<_>>()
            .join(",")
            .to_uppercase();
        expected.push((from, to, opts, content));
    }
    // The same message over HELO: the protocol is SMTP.
    let mut h = Client::connect(server.port());
    h.ok("HELO old.example");
    let helo_msg = tagged("helo");
    let (code, line) = h.transaction("a@example.com", &["b@example.com"], &helo_msg);
    assert_eq!(code, 250, "{line}");
    h.quit();
    c.quit();
    server.stop().assert_success();
    let stored = rec.finish();
    assert_eq!(stored.len(), msgs.len() + 1, "one delivery per 250");
    let mut ids = BTreeSet::new();
    for (i, (from, to, opts, content)) in expected.iter().enumerate() {
        let single = (to.len() == 1).then(|| to[0].as_str());
        let s = &stored[i];
        let name = msgs[i].0;
        assert_eq!(&s.from, from, "{name}");
        assert_eq!(&s.rcpts, to, "{name}");
        let got_opts = if s.options == "-" {
            String::new()
        } else {
            s.options.to_uppercase()
        };
        assert_eq!(&got_opts, opts, "{name}: MAIL parameters forwarded");
        assert!(s.conn.starts_with("127.0.0.1:"), "{name}: {}", s.conn);
        let id = check_received(&s.content, content, "client.example", "ESMTP", single);
        assert!(ids.insert(id), "{name}: Received id reused");
        assert_eq!(
            received_count(&s.content),
            received_count(content) + 1,
            "{name}"
        );
    }
    let last = stored.last().unwrap();
    check_received(
        &last.content,
        &helo_msg,
        "old.example",
        "SMTP",
        Some("b@example.com"),
    );
}

#[test]
fn byte_exact_delivery_uring() {
    byte_exact_delivery("uring");
}

#[test]
fn byte_exact_delivery_epoll() {
    byte_exact_delivery("epoll");
}

/// BDAT from the client, DATA toward the upstream: the content is dot-stuffed on the way and
/// arrives byte-exact (chunks split inside lines, a lone "." line, a dot at a chunk start).
#[test]
fn bdat_client_is_converted_to_data() {
    for io in IO_MODES {
        let rec = Recorder::start(&[]);
        let server = proxy(io, &[rec.port], &[]);
        let content = b"Subject: chunked\r\nX-Test-Id: bdat\r\n\r\n.\r\n..two\r\nsplit li".to_vec();
        let second = b"ne\r\n.starts a chunk\r\n.\r\nlast\r\n".to_vec();
        let mut c = Client::connect(server.port());
        c.ehlo("bdat.example");
        c.ok("MAIL FROM:<a@example.com>");
        c.ok("RCPT TO:<b@example.com>");
        c.send(format!("BDAT {}\r\n", content.len()).as_bytes());
        c.send(&content);
        c.expect(250);
        c.send(format!("BDAT {} LAST\r\n", second.len()).as_bytes());
        c.send(&second);
        let (code, line) = c.reply();
        assert_eq!(code, 250, "{io}: {line}");
        c.quit();
        server.stop().assert_success();
        let stored = rec.finish();
        assert_eq!(stored.len(), 1, "{io}");
        let mut whole = content.clone();
        whole.extend_from_slice(&second);
        check_received(
            &stored[0].content,
            &whole,
            "bdat.example",
            "ESMTP",
            Some("b@example.com"),
        );
    }
}

/// swaks with PIPELINING through the relay: MAIL, two RCPTs and DATA in one go.
#[test]
fn swaks_pipelined_through_relay() {
    require("swaks", "--version");
    let rec = Recorder::start(&[]);
    let server = proxy("uring", &[rec.port], &[]);
    let server_addr = format!("127.0.0.1:{}", server.port());
    let mut p = Peer::spawn(
        "swaks",
        &[
            "--server",
            server_addr.as_str(),
            "--helo",
            "swaks.example",
            "--from",
            "s@example.org",
            "--to",
            "r1@example.org,r2@example.org",
            "--pipeline",
            "--header",
            "X-Test-Id: swaks",
            "--body",
            "piped",
            "--timeout",
            "20",
        ]
        .map(String::from),
    );
    let out = p.finish(Duration::from_secs(60));
    out.assert_success("swaks --pipeline via the relay");
    assert!(
        out.stdout.contains("<-  250 2.0.0 recorded as 1"),
        "{}",
        out.stdout
    );
    server.stop().assert_success();
    let stored = rec.finish();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].rcpts, ["r1@example.org", "r2@example.org"]);
}

// ---------------------------------------------------------------------------------------------
// 1b. Volume: smtp-source through the relay

/// 10,000 messages of 2048 octets from 20 parallel smtp-source sessions (-d: several
/// messages per connection): smtp-source stops at the first reply it did not expect, so its
/// success means 10,000 × 250; the upstream stored exactly 10,000 messages, each with one
/// Received: field of ours with a distinct id, a distinct Message-Id and the exact body.
fn smtp_source_volume(io: &str) {
    let _heavy = heavy();
    let messages = 10_000usize;
    let rec = Recorder::start(&[]);
    let server = proxy(io, &[rec.port], &["--shards", "2"]);
    let t0 = Instant::now();
    let m = messages.to_string();
    smtp_source(
        server.port(),
        "source.example",
        &["-s", "20", "-m", &m, "-l", "2048", "-d"],
        Duration::from_secs(300),
    );
    let took = t0.elapsed();
    server.stop().assert_success();
    let stored = rec.finish();
    eprintln!(
        "{io}: {messages} messages through the relay in {took:?} ({:.0}/s)",
        messages as f64 / took.as_secs_f64()
    );
    assert_eq!(stored.len(), messages, "250s given vs messages delivered");
    let mut ids = BTreeSet::new();
    let mut msg_ids = BTreeSet::new();
    let mut conns = BTreeSet::new();
    let mut body: Option<Vec<u8>> = None;
    for (i, s) in stored.iter().enumerate() {
        assert_eq!(s.from, "source@example.org", "message {i}");
        assert_eq!(s.rcpts, ["sink@example.org"], "message {i}");
        conns.insert(s.conn.clone());
        // The relay's field, then smtp-source's own header section and body.
        let field_end = s
            .content
            .windows(2)
            .position(|w| w[0] == b'\n' && w[1] != b'\t')
            .map(|i| i + 1)
            .expect("a header after Received:");
        let original = &s.content[field_end..];
        check_received(
            &s.content,
            original,
            "source.example",
            "SMTP",
            Some("sink@example.org"),
        );
        let id = std::str::from_utf8(&s.content[..field_end])
            .unwrap()
            .split(" id ")
            .nth(1)
            .unwrap()
            .split(['\r', ';'])
            .next()
            .unwrap()
            .to_string();
        assert!(ids.insert(id), "message {i}: Received id seen twice");
        assert_eq!(received_count(&s.content), 1, "message {i}");
        let text = String::from_utf8_lossy(original);
        let mid = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-Id: "))
            .unwrap_or_else(|| panic!("message {i} has no Message-Id:\n{text}"));
        assert!(
            msg_ids.insert(mid.to_string()),
            "message {i}: {mid} delivered twice"
        );
        let split = original
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("header/body separator");
        let this_body = &original[split + 4..];
        match &body {
            None => {
                assert!(this_body.len() >= 2048, "body {} octets", this_body.len());
                body = Some(this_body.to_vec());
            }
            Some(b) => assert!(b == this_body, "message {i}: body differs"),
        }
    }
    // A warm pool: upstream connections are reused across messages and client sessions.
    eprintln!(
        "{io}: {} upstream connections for {messages} messages",
        conns.len()
    );
    assert!(
        conns.len() <= messages / 100,
        "{} upstream connections for {messages} messages",
        conns.len()
    );
}

#[test]
fn smtp_source_volume_uring() {
    smtp_source_volume("uring");
}

#[test]
fn smtp_source_volume_epoll() {
    smtp_source_volume("epoll");
}

// ---------------------------------------------------------------------------------------------
// 3. Faults at the upstream

/// Upstream verdicts on recipients become ours, pipelined: 550 stays 550, 450 stays 450, the
/// accepted recipient gets the message.
#[test]
fn upstream_refuses_a_recipient() {
    for io in IO_MODES {
        let up = Scripted::start("refuse-rcpt");
        let server = proxy(io, &[up.port], &[]);
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
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
            let up = Scripted::start(mode);
            let server = proxy(io, &[up.port], &[]);
            let mut c = Client::connect(server.port());
            c.ehlo("client.example");
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
        let up = Scripted::start("rcpt-421");
        let server = proxy(io, &[up.port], &[]);
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
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
            let up = Scripted::start(mode);
            let server = proxy(io, &[up.port], &[]);
            let mut c = Client::connect(server.port());
            c.ehlo("client.example");
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
            let up = Scripted::start(mode);
            let server = proxy(io, &[up.port], &[]);
            let mut c = Client::connect(server.port());
            c.ehlo("client.example");
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
        let up = Scripted::start("mute");
        let server = proxy(io, &[up.port], &["--upstream-timeout", "2"]);
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
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
        let up = Scripted::start("drop-mid-data");
        let server = proxy(io, &[up.port], &[]);
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
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

/// MAIL parameters go upstream only for extensions the upstream offered (RFC 5321 §4.1.1.11,
/// RFC 1870, RFC 6152): Postfix in front always sends SIZE=, and an upstream that does not
/// offer SIZE (or speaks only HELO) must not see it, or every message bounces. SMTPUTF8,
/// which cannot be dropped, is refused by us (553 5.6.7) when the upstream lacks it.
#[test]
fn mail_parameters_follow_the_upstream_extensions() {
    for mode in ["no-ext", "helo-only"] {
        let up = Scripted::start(mode);
        let server = proxy("epoll", &[up.port], &["--smtputf8"]);
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        c.ok("MAIL FROM:<a@example.com> SIZE=1234 BODY=8BITMIME");
        c.ok("RCPT TO:<b@example.com>");
        let (code, line) = c.data(&tagged(mode));
        assert_eq!(code, 250, "{mode}: {line}");
        let (code, line) = c.cmd("MAIL FROM:<a@example.com> SMTPUTF8");
        assert_eq!(code, 553, "{mode}: {line}");
        assert!(line.starts_with("553 5.6.7 "), "{mode}: {line}");
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("plain"));
        assert_eq!(code, 250, "{mode}: {line}");
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, [mode, "plain"], "{}", seen.stdout);
        assert_eq!(seen.connects, 1, "{}", seen.stdout);
        let mails: Vec<&String> = seen
            .commands
            .iter()
            .filter(|c| c.starts_with("MAIL"))
            .collect();
        assert_eq!(
            mails,
            ["MAIL FROM:<a@example.com>", "MAIL FROM:<a@example.com>"]
        );
    }
    // An upstream that offers them gets them.
    let up = Scripted::start("ok");
    let server = proxy("uring", &[up.port], &["--smtputf8"]);
    let mut c = Client::connect(server.port());
    c.ehlo("client.example");
    c.ok("MAIL FROM:<a@example.com> SIZE=1234 BODY=8BITMIME SMTPUTF8");
    c.ok("RCPT TO:<b@example.com>");
    let (code, line) = c.data(&tagged("ext"));
    assert_eq!(code, 250, "{line}");
    c.quit();
    server.stop().assert_success();
    let seen = up.finish();
    assert!(
        seen.commands
            .contains(&"MAIL FROM:<a@example.com> SIZE=1234 BODY=8BITMIME SMTPUTF8".to_string()),
        "{:?}",
        seen.commands
    );
}

/// 8BITMIME and SMTPUTF8 are offered to clients only when the upstream offers them: before
/// any upstream connection as configured (a mismatch is then refused per transaction, above),
/// and once the relay has met its upstream, as that upstream does. BODY= is then a 555 from us.
#[test]
fn client_extensions_follow_the_upstream() {
    for (mode, offered) in [("no-ext", false), ("ok", true)] {
        let up = Scripted::start(mode);
        let server = proxy("epoll", &[up.port], &["--smtputf8"]);
        let mut c = Client::connect(server.port());
        let before = c.ehlo_keywords("client.example");
        for kw in ["8BITMIME", "SMTPUTF8", "PIPELINING"] {
            assert!(before.contains(&kw.to_string()), "{mode}: {before:?}");
        }
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("first"));
        assert_eq!(code, 250, "{mode}: {line}");
        c.quit();
        let mut c = Client::connect(server.port());
        let after = c.ehlo_keywords("client.example");
        for kw in ["8BITMIME", "SMTPUTF8"] {
            assert_eq!(
                after.contains(&kw.to_string()),
                offered,
                "{mode}: {after:?}"
            );
        }
        assert!(
            after.contains(&"PIPELINING".to_string()),
            "{mode}: {after:?}"
        );
        let (code, line) = c.cmd("MAIL FROM:<a@example.com> BODY=8BITMIME");
        if offered {
            assert_eq!(code, 250, "{mode}: {line}");
            c.ok("RCPT TO:<b@example.com>");
            assert_eq!(c.data(&tagged("second")).0, 250, "{mode}");
        } else {
            assert_eq!(code, 555, "{mode}: {line}");
            let (code, line) =
                c.transaction("a@example.com", &["b@example.com"], &tagged("second"));
            assert_eq!(code, 250, "{mode}: {line}");
        }
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(
            seen.delivered,
            ["first", "second"],
            "{mode}: {}",
            seen.stdout
        );
    }
}

/// TLS and AUTH toward the upstream (tests/peers/aiosmtpd_server.py: STARTTLS, AUTH only
/// after it, and an implicit-TLS listener): the message arrives over TLS; a wrong password, an
/// unverifiable certificate or a missing STARTTLS with `required` are 4xx at MAIL, never a
/// plaintext fallback; `opportunistic` without STARTTLS goes plain.
#[test]
fn upstream_tls_and_auth() {
    let dir = TempDir::new("relay-tls");
    let (cert, key) = test_certificate(&dir);
    let good = dir.write("pw", b"secret\n");
    let bad = dir.write("badpw", b"wrong\n");
    let (port, tls_port) = (free_port(), free_port());
    let mut up = Peer::python(
        "aiosmtpd_server.py",
        &[
            port.to_string(),
            cert.display().to_string(),
            key.display().to_string(),
            tls_port.to_string(),
        ],
    );
    up.wait_for_line("ready", PEER_START);
    let ca = cert.display().to_string();
    let send = |server: &Server, token: &str| -> Answer {
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        let (code, line) = c.cmd("MAIL FROM:<a@example.com>");
        if code != 250 {
            c.quit();
            return (code, line);
        }
        c.ok("RCPT TO:<b@example.com>");
        let r = c.data(&tagged(token));
        c.quit();
        r
    };
    let cases: Vec<(Vec<String>, u16, &str)> = vec![
        (
            vec![
                format!("127.0.0.1:{port}"),
                "--upstream-tls".into(),
                "required".into(),
                "--upstream-tls-ca".into(),
                ca.clone(),
                "--upstream-auth-user".into(),
                "user".into(),
                "--upstream-auth-password-file".into(),
                good.display().to_string(),
            ],
            250,
            "starttls-auth",
        ),
        (
            vec![
                format!("127.0.0.1:{tls_port}"),
                "--upstream-tls".into(),
                "implicit".into(),
                "--upstream-tls-ca".into(),
                ca.clone(),
            ],
            250,
            "implicit",
        ),
        (
            vec![
                format!("127.0.0.1:{port}"),
                "--upstream-tls".into(),
                "required".into(),
                "--upstream-tls-ca".into(),
                ca.clone(),
                "--upstream-auth-user".into(),
                "user".into(),
                "--upstream-auth-password-file".into(),
                bad.display().to_string(),
            ],
            451,
            "bad-password",
        ),
        // System roots only: the self-signed certificate does not verify.
        (
            vec![
                format!("127.0.0.1:{port}"),
                "--upstream-tls".into(),
                "required".into(),
            ],
            451,
            "unverified",
        ),
    ];
    for (args, want, token) in &cases {
        let mut full = vec!["--upstream".to_string()];
        full.extend(args.iter().cloned());
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let server = proxy("epoll", &[], &full);
        let (code, line) = send(&server, token);
        assert_eq!(code, *want, "{token}: {line}");
        server.stop().assert_success();
    }
    let out = up.finish(Duration::from_secs(60));
    out.assert_success("aiosmtpd_server.py");
    let messages: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("MESSAGE "))
        .collect();
    assert_eq!(messages.len(), 2, "{}", out.stdout);
    assert!(messages.iter().all(|l| l.ends_with(" tls")), "{messages:?}");

    // `required` against an upstream without STARTTLS: 4xx; `opportunistic`: plain delivery.
    let plain = Scripted::start("ok");
    let upstream = format!("127.0.0.1:{}", plain.port);
    for (mode, want) in [("required", 451), ("opportunistic", 250)] {
        let server = proxy(
            "uring",
            &[],
            &["--upstream", &upstream, "--upstream-tls", mode],
        );
        let (code, line) = send(&server, mode);
        assert_eq!(code, want, "{mode}: {line}");
        server.stop().assert_success();
    }
    let seen = plain.finish();
    assert_eq!(seen.delivered, ["opportunistic"]);
}

/// First upstream down, second up: delivered through the second.
#[test]
fn failover_to_the_second_upstream() {
    for io in IO_MODES {
        let dead = free_port();
        let up = Scripted::start("ok");
        let server = proxy(io, &[dead, up.port], &[]);
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        for i in 0..3 {
            let (code, line) = c.transaction(
                "a@example.com",
                &["b@example.com"],
                &tagged(&format!("f{i}")),
            );
            assert_eq!(code, 250, "{io}: {line}");
        }
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["f0", "f1", "f2"], "{io}");
        assert_eq!(seen.connects, 1, "{io}: the pooled connection is reused");
    }
}

/// Pool bounds: with --pool-max 1, a second concurrent transaction gets 451 4.4.1 (pool
/// exhausted) instead of waiting or opening more; once the first is done the second goes
/// through on the same upstream connection. Five sequential client sessions use one
/// upstream connection.
#[test]
fn pool_is_bounded_and_reused() {
    let up = Scripted::start("ok");
    let server = proxy("uring", &[up.port], &["--pool-max", "1"]);
    let mut a = Client::connect(server.port());
    a.ehlo("a.example");
    a.ok("MAIL FROM:<a@example.com>");
    let mut b = Client::connect(server.port());
    b.ehlo("b.example");
    let (code, line) = b.cmd("MAIL FROM:<b@example.com>");
    assert_eq!(code, 451, "{line}");
    assert!(line.contains("exhausted"), "{line}");
    a.ok("RCPT TO:<x@example.com>");
    let (code, line) = a.data(&tagged("p-a"));
    assert_eq!(code, 250, "{line}");
    let (code, line) = b.transaction("b@example.com", &["y@example.com"], &tagged("p-b"));
    assert_eq!(code, 250, "{line}");
    a.quit();
    b.quit();
    for i in 0..5 {
        let mut c = Client::connect(server.port());
        c.ehlo("c.example");
        let (code, line) = c.transaction(
            "c@example.com",
            &["z@example.com"],
            &tagged(&format!("s{i}")),
        );
        assert_eq!(code, 250, "{line}");
        c.quit();
    }
    server.stop().assert_success();
    let seen = up.finish();
    assert_eq!(seen.delivered.len(), 7);
    assert_eq!(seen.connects, 1, "{}", seen.stdout);
}

/// Pool limits: --pool-max-messages retires a connection after that many messages, and
/// --pool-idle-ttl replaces one that sat idle longer (closing the old one).
#[test]
fn pool_retires_connections() {
    let mut up = Scripted::start("ok");
    let server = proxy(
        "epoll",
        &[up.port],
        &["--pool-max-messages", "3", "--pool-idle-ttl", "1"],
    );
    let mut c = Client::connect(server.port());
    c.ehlo("client.example");
    for i in 0..7 {
        let (code, line) = c.transaction(
            "a@example.com",
            &["b@example.com"],
            &tagged(&format!("r{i}")),
        );
        assert_eq!(code, 250, "{line}");
    }
    // 3 + 3 + 1: the third connection is idle now; let it outlive its TTL.
    up.wait_for("CLOSED 2");
    std::thread::sleep(Duration::from_millis(1500));
    let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("r7"));
    assert_eq!(code, 250, "{line}");
    up.wait_for("CLOSED 3");
    c.quit();
    server.stop().assert_success();
    let seen = up.finish();
    assert_eq!(seen.delivered.len(), 8);
    assert_eq!(seen.connects, 4, "{}", seen.stdout);
    // Retired connections are closed politely (RFC 5321 §4.1.1.10): three retirements, and
    // the fourth connection gets its QUIT when the shard closes (or from the idle sweep).
    assert_eq!(
        seen.commands.iter().filter(|c| *c == "QUIT").count(),
        4,
        "{}",
        seen.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Open-relay refusal

/// `--relay-networks 127.0.0.1/32`: a client from 127.0.0.2 gets 554 5.7.1 at RCPT and the
/// upstream is never contacted; from 127.0.0.1 the same transaction is relayed.
#[test]
fn relay_networks_refuse_outsiders() {
    for io in IO_MODES {
        let up = Scripted::start("ok");
        let server = proxy(io, &[up.port], &["--relay-networks", "127.0.0.1/32"]);
        let mut out = Client::connect_from(Some("127.0.0.2"), server.port());
        out.ehlo("outsider.example");
        out.ok("MAIL FROM:<spam@example.net>");
        let (code, line) = out.cmd("RCPT TO:<victim@example.com>");
        assert_eq!(
            (code, line.as_str()),
            (554, "554 5.7.1 Relay access denied"),
            "{io}"
        );
        let (code, _) = out.cmd("DATA");
        assert_eq!(code / 100, 5, "{io}: DATA without recipients");
        out.quit();
        let mut ins = Client::connect_from(Some("127.0.0.1"), server.port());
        ins.ehlo("insider.example");
        let (code, line) = ins.transaction("a@example.com", &["b@example.com"], &tagged("in"));
        assert_eq!(code, 250, "{io}: {line}");
        ins.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["in"], "{io}");
        assert_eq!(
            seen.connects, 1,
            "{io}: the outsider caused no upstream connection"
        );
        assert!(
            !seen.commands.iter().any(|c| c.contains("spam@")),
            "{io}: {:?}",
            seen.commands
        );
    }
}

/// `--relay-domains example.com`: other recipient domains (subdomains included) get 554 5.7.1.
#[test]
fn relay_domains_refuse_other_domains() {
    let up = Scripted::start("ok");
    let server = proxy("epoll", &[up.port], &["--relay-domains", "example.com"]);
    let mut c = Client::connect(server.port());
    c.ehlo("client.example");
    c.ok("MAIL FROM:<a@example.org>");
    for r in ["x@example.org", "y@sub.example.com", "z@example.com.evil"] {
        let (code, line) = c.cmd(&format!("RCPT TO:<{r}>"));
        assert_eq!(
            (code, line.as_str()),
            (554, "554 5.7.1 Relay access denied"),
            "{r}"
        );
    }
    c.ok("RCPT TO:<ok@EXAMPLE.com>");
    let (code, line) = c.data(&tagged("dom"));
    assert_eq!(code, 250, "{line}");
    c.quit();
    server.stop().assert_success();
    let seen = up.finish();
    assert_eq!(seen.delivered, ["dom"]);
    let rcpts: Vec<&String> = seen
        .commands
        .iter()
        .filter(|c| c.starts_with("RCPT"))
        .collect();
    assert_eq!(rcpts, ["RCPT TO:<ok@EXAMPLE.com>"]);
}

// ---------------------------------------------------------------------------------------------
// 5. Loop guard

fn with_received(hops: usize, token: &str) -> Vec<u8> {
    let mut m = Vec::new();
    for i in 0..hops {
        m.extend_from_slice(
            format!("Received: from hop{i}.example ([192.0.2.{}])\r\n\tby hop{}.example; Mon, 23 Nov 2026 09:00:00 +0000\r\n", i % 250, i + 1).as_bytes(),
        );
    }
    m.extend_from_slice(&tagged(token));
    m
}

/// 101 Received: fields → 554 5.4.6 and nothing delivered (the upstream DATA is abandoned
/// without its terminator); 100 are relayed (with ours, 101).
#[test]
fn loop_guard() {
    for io in IO_MODES {
        let up = Scripted::start("ok");
        let server = proxy(io, &[up.port], &[]);
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        let looping = with_received(101, "loop");
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &looping);
        assert_eq!(code, 554, "{io}: {line}");
        assert!(line.starts_with("554 5.4.6 "), "{io}: {line}");
        let fine = with_received(100, "fine");
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &fine);
        assert_eq!(code, 250, "{io}: {line}");
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["fine"], "{io}");
        assert_eq!(seen.aborted, 1, "{io}: {}", seen.stdout);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Clients that go away, and messages we refuse ourselves

/// A client that disconnects mid-DATA (also right after a CRLF ".", so a careless relay
/// would have sent half a terminator): the upstream never gets a complete message.
#[test]
fn client_disconnects_mid_data() {
    for io in IO_MODES {
        let mut up = Scripted::start("ok");
        let server = proxy(io, &[up.port], &[]);
        for (k, tail) in [&b"half a li"[..], b"line\r\n.", b"line\r\n.\r"]
            .iter()
            .enumerate()
        {
            let mut c = Client::connect(server.port());
            c.ehlo("client.example");
            c.ok("MAIL FROM:<a@example.com>");
            c.ok("RCPT TO:<b@example.com>");
            let (code, _) = c.cmd("DATA");
            assert_eq!(code, 354);
            let mut part = b"Subject: cut\r\nX-Test-Id: cut\r\n\r\n".to_vec();
            for i in 0..500 {
                part.extend_from_slice(format!("body line {i}\r\n").as_bytes());
            }
            part.extend_from_slice(tail);
            c.send(&part);
            std::thread::sleep(Duration::from_millis(300));
            drop(c);
            up.wait_for(&format!("CLOSED {}", k + 1));
        }
        server.stop().assert_success();
        let seen = up.finish();
        assert!(seen.delivered.is_empty(), "{io}: {}", seen.stdout);
        assert_eq!(seen.aborted, 3, "{io}: {}", seen.stdout);
    }
}

/// Messages we refuse ourselves at their end (a bare LF, a line over 1000 octets, over
/// --size) were already streaming upstream: each must be abandoned there, not completed.
#[test]
fn message_refused_by_us_is_not_delivered() {
    let mut filler = Vec::new();
    for i in 0..600 {
        filler.extend_from_slice(format!("filler line {i:04}\r\n").as_bytes());
    }
    let mut long = b"Subject: long\r\nX-Test-Id: long\r\n\r\n".to_vec();
    long.extend(std::iter::repeat_n(b'w', 1200));
    long.extend_from_slice(b"\r\n");
    let mut big = b"Subject: big\r\nX-Test-Id: big\r\n\r\n".to_vec();
    for _ in 0..3 {
        big.extend_from_slice(&filler);
    }
    let mut bare = b"Subject: bare\r\nX-Test-Id: bare\r\n\r\n".to_vec();
    bare.extend_from_slice(&filler);
    bare.extend_from_slice(b"bare\nLF\r\n");
    bare.extend_from_slice(&filler);
    let cases: [(&str, Vec<u8>, u16); 3] =
        [("bare", bare, 554), ("long", long, 554), ("big", big, 552)];
    for io in IO_MODES {
        let up = Scripted::start("ok");
        let server = proxy(io, &[up.port], &["--size", "30000"]);
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        for (name, content, want) in &cases {
            let mut wire = content.clone();
            wire.extend_from_slice(b".\r\n");
            c.ok("MAIL FROM:<a@example.com>");
            c.ok("RCPT TO:<b@example.com>");
            let (code, _) = c.cmd("DATA");
            assert_eq!(code, 354);
            c.send(&wire);
            let (code, line) = c.reply();
            assert_eq!(code, *want, "{io} {name}: {line}");
        }
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("after"));
        assert_eq!(code, 250, "{io}: {line}");
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["after"], "{io}: {}", seen.stdout);
        assert_eq!(seen.aborted, 3, "{io}: {}", seen.stdout);
    }
}

/// Commands pipelined behind the final dot (the next transaction, then QUIT) wait for the
/// upstream's verdict and are answered in order; both messages are delivered.
#[test]
fn pipelining_after_the_final_dot() {
    for io in IO_MODES {
        let up = Scripted::start("ok");
        let server = proxy(io, &[up.port], &[]);
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        c.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n");
        assert_eq!(c.reply().0, 250);
        assert_eq!(c.reply().0, 250);
        assert_eq!(c.reply().0, 354);
        let mut wire = stuff(&tagged("p1"));
        wire.extend_from_slice(
            b".\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n",
        );
        c.send(&wire);
        for (want, what) in [(250, "dot"), (250, "MAIL"), (250, "RCPT"), (354, "DATA")] {
            let (code, line) = c.reply();
            assert_eq!(code, want, "{io} {what}: {line}");
        }
        let mut wire = stuff(&tagged("p2"));
        wire.extend_from_slice(b".\r\nQUIT\r\n");
        c.send(&wire);
        let (code, line) = c.reply();
        assert_eq!(code, 250, "{io}: {line}");
        assert_eq!(c.reply().0, 221, "{io}");
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["p1", "p2"], "{io}");
    }
}

/// `--bare-line-endings normalize`: what goes upstream is the normalised form (CRLF), and
/// `--x-peer` adds the seed's X-Peer: where PureProxy put it, at the end of the header section.
#[test]
fn normalized_content_and_x_peer() {
    let rec = Recorder::start(&[]);
    let server = proxy(
        "epoll",
        &[rec.port],
        &["--bare-line-endings", "normalize", "--x-peer"],
    );
    let mut c = Client::connect(server.port());
    c.ehlo("client.example");
    c.ok("MAIL FROM:<a@example.com>");
    c.ok("RCPT TO:<b@example.com>");
    let (code, _) = c.cmd("DATA");
    assert_eq!(code, 354);
    c.send(b"Subject: lf\nX-Test-Id: lf\r\n\nbare\nlines\r\n.\r\n");
    let (code, line) = c.reply();
    assert_eq!(code, 250, "{line}");
    c.quit();
    server.stop().assert_success();
    let stored = rec.finish();
    assert_eq!(stored.len(), 1);
    let content = &stored[0].content;
    let with_peer = b"Subject: lf\r\nX-Test-Id: lf\r\nX-Peer: 127.0.0.1\r\n\r\nbare\r\nlines\r\n";
    check_received(
        content,
        with_peer,
        "client.example",
        "ESMTP",
        Some("b@example.com"),
    );
}

/// SIGTERM while the upstream is still working on a message: the drain waits for the
/// upstream's verdict, the client gets that 250 (then 421), and the relay exits cleanly.
#[test]
fn drain_waits_for_the_upstream_verdict() {
    for io in IO_MODES {
        let mut up = Scripted::start("slow-eod");
        let server = proxy(io, &[up.port], &[]);
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        c.ok("MAIL FROM:<a@example.com>");
        c.ok("RCPT TO:<b@example.com>");
        let (code, _) = c.cmd("DATA");
        assert_eq!(code, 354);
        let mut wire = stuff(&tagged("slow"));
        wire.extend_from_slice(b".\r\n");
        c.send(&wire);
        up.wait_for("SLOW 1 slow");
        let t0 = Instant::now();
        server.signal(libc::SIGTERM);
        let (code, line) = c.reply();
        assert_eq!((code, line.as_str()), (250, "250 2.0.0 delivered"), "{io}");
        let (code, line) = c.reply();
        assert_eq!(code, 421, "{io}: {line}");
        let stopped = server.wait(STOP_TIMEOUT, t0);
        stopped.assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["slow"], "{io}");
    }
}

/// Acknowledged implies delivered, across a mixed run: several clients, some recipients
/// refused, some messages refused at the end; every 250 at the dot matches exactly one
/// delivery and every delivery matches a 250.
#[test]
fn every_ack_is_a_delivery() {
    let up = Scripted::start("refuse-rcpt");
    let server = proxy("uring", &[up.port], &["--shards", "2"]);
    let mut acked = Vec::new();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let port = server.port();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut c = Client::connect(port);
                c.ehlo("mixed.example");
                for i in 0..25 {
                    let tok = format!("m{t}-{i}");
                    c.ok("MAIL FROM:<a@example.com>");
                    let rcpt = if i % 5 == 0 { "bad" } else { "good" };
                    let (code, _) = c.cmd(&format!("RCPT TO:<{rcpt}@example.com>"));
                    if code != 250 {
                        c.ok("RSET");
                        continue;
                    }
                    let (code, _) = c.data(&tagged(&tok));
                    if code == 250 {
                        acked.push(tok);
                    }
                }
                c.quit();
                acked
            })
        })
        .collect();
    for t in threads {
        acked.extend(t.join().unwrap());
    }
    server.stop().assert_success();
    let seen = up.finish();
    let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
    for d in &seen.delivered {
        *delivered.entry(d.clone()).or_default() += 1;
    }
    assert_eq!(acked.len(), 80);
    for a in &acked {
        assert_eq!(
            delivered.get(a),
            Some(&1),
            "{a} acknowledged: delivered once?"
        );
    }
    assert_eq!(seen.delivered.len(), acked.len());
}

/// `--upstream-xforward`: an upstream that offers Postfix's XFORWARD learns the real client
/// (address, HELO name, protocol) right before each MAIL; one that does not offer it gets none.
#[test]
fn xforward_passes_the_client_identity() {
    for (mode, offered) in [("xforward", true), ("ok", false)] {
        let up = Scripted::start(mode);
        let server = proxy("epoll", &[up.port], &["--upstream-xforward"]);
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        for token in ["one", "two"] {
            let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged(token));
            assert_eq!(code, 250, "{mode}: {line}");
        }
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["one", "two"], "{}", seen.stdout);
        let xf = "XFORWARD ADDR=127.0.0.1 PROTO=ESMTP HELO=client.example NAME=[UNAVAILABLE]";
        let before_mail: Vec<&String> = seen
            .commands
            .windows(2)
            .filter(|w| w[1].starts_with("MAIL"))
            .map(|w| &w[0])
            .collect();
        assert_eq!(before_mail.len(), 2, "{}", seen.stdout);
        for cmd in before_mail {
            assert_eq!(cmd == xf, offered, "{mode}: {}", seen.stdout);
        }
        assert_eq!(
            seen.commands.iter().any(|c| c.starts_with("XFORWARD")),
            offered,
            "{}",
            seen.stdout
        );
    }
}

/// `--upstream-xclient`: an upstream that offers Postfix's XCLIENT gets the client's identity,
/// greets again (220), and is greeted again (EHLO) before MAIL, for every transaction.
#[test]
fn xclient_passes_the_client_identity_and_regreets() {
    let up = Scripted::start("xclient");
    let server = proxy(
        "uring",
        &[up.port],
        &["--upstream-xclient", "--upstream-xforward"],
    );
    let mut c = Client::connect(server.port());
    c.ehlo("client.example");
    for token in ["one", "two"] {
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged(token));
        assert_eq!(code, 250, "{line}");
    }
    c.quit();
    server.stop().assert_success();
    let seen = up.finish();
    assert_eq!(seen.delivered, ["one", "two"], "{}", seen.stdout);
    let xc = "XCLIENT ADDR=127.0.0.1 PROTO=ESMTP HELO=client.example NAME=[UNAVAILABLE]";
    let mut sequences = 0;
    for w in seen.commands.windows(3) {
        if w[2].starts_with("MAIL") {
            assert_eq!(w[0], xc, "{}", seen.stdout);
            assert!(w[1].starts_with("EHLO "), "{}", seen.stdout);
            sequences += 1;
        }
    }
    assert_eq!(sequences, 2, "{}", seen.stdout);
    assert!(
        !seen.commands.iter().any(|c| c.starts_with("XFORWARD")),
        "XCLIENT is preferred when both are enabled: {}",
        seen.stdout
    );
}

/// The relay's upstream pool shows in /metrics: one connection opened and then reused for
/// every later transaction of the same shard, and the text still passes `promtool`.
#[test]
fn upstream_pool_metrics() {
    let up = Scripted::start("ok");
    let upstream = format!("127.0.0.1:{}", up.port);
    let server = Server::mode(
        "proxy",
        "uring",
        &[
            "--shards",
            "1",
            "--upstream",
            &upstream,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let mut c = Client::connect(server.port());
    c.ehlo("client.example");
    for token in ["one", "two", "three"] {
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged(token));
        assert_eq!(code, 250, "{line}");
    }
    let admin = metrics_addr(&server);
    let (_, body) = http_get(admin, "/metrics");
    let (_, stats) = http_get(admin, "/stats.json");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    for (key, count) in [("upstream_connect", 1), ("upstream_end_of_data", 3)] {
        assert_eq!(stats["latency_us"][key]["count"], count, "{key}: {stats}");
    }
    let value = |series: &str| sample(&body, series.trim_end());
    assert_eq!(value("ringrelay_upstream_checkouts_total "), 3.0, "{body}");
    let labelled = format!("{{upstream=\"{upstream}\"}}");
    assert_eq!(
        value(&format!("ringrelay_upstream_connects_total{labelled}")),
        1.0,
        "{body}"
    );
    assert_eq!(value("ringrelay_upstream_reuses_total "), 2.0, "{body}");
    assert_eq!(
        value(&format!(
            "ringrelay_upstream_connect_failures_total{labelled}"
        )),
        0.0
    );
    assert_eq!(value("ringrelay_upstream_connections_open "), 1.0, "{body}");
    // Upstream latencies: one connection opened, three verdicts on an end of data, each part
    // of its transaction as the client saw it.
    assert_eq!(
        value("ringrelay_upstream_connect_duration_seconds_count "),
        1.0
    );
    assert_eq!(
        value("ringrelay_upstream_end_of_data_duration_seconds_count "),
        3.0
    );
    let end_of_data = value("ringrelay_upstream_end_of_data_duration_seconds_sum ");
    assert!(end_of_data > 0.0, "{body}");
    assert!(
        end_of_data <= value("ringrelay_transaction_duration_seconds_sum "),
        "{body}"
    );
    assert!(value("ringrelay_upstream_connect_duration_seconds_sum ") > 0.0);
    promtool_check(&body);
    c.quit();
    server.stop().assert_success();
    up.finish();
}

/// Idle pooled connections do not wait for the next client: past `--pool-idle-ttl` the shard's
/// sweep closes them with QUIT (RFC 5321 §4.1.1.10), and at shutdown every idle one gets QUIT.
#[test]
fn idle_connections_get_quit_by_the_sweep_and_at_shutdown() {
    // The sweep: nothing happens on the client side after the message.
    let mut up = Scripted::start("ok");
    let server = proxy("uring", &[up.port], &["--pool-idle-ttl", "1"]);
    let mut c = Client::connect(server.port());
    c.ehlo("client.example");
    let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("swept"));
    assert_eq!(code, 250, "{line}");
    up.wait_for("CMD 1 QUIT");
    up.wait_for("CLOSED 1");
    c.quit();
    server.stop().assert_success();
    let seen = up.finish();
    assert_eq!(seen.delivered, ["swept"]);
    // Shutdown: a long TTL, so only the shard's close sends QUIT.
    let up = Scripted::start("ok");
    let server = proxy("epoll", &[up.port], &[]);
    let mut c = Client::connect(server.port());
    c.ehlo("client.example");
    let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("kept"));
    assert_eq!(code, 250, "{line}");
    c.quit();
    server.stop().assert_success();
    let seen = up.finish();
    assert_eq!(seen.delivered, ["kept"]);
    assert_eq!(
        seen.commands.last().map(String::as_str),
        Some("QUIT"),
        "{}",
        seen.stdout
    );
}

/// An upstream that answers MAIL or RCPT with a 3xx (which no RFC allows) is a protocol error:
/// the client gets a 4xx, never that positive reply, and nothing is delivered.
#[test]
fn upstream_3xx_to_mail_or_rcpt_is_a_tempfail() {
    for mode in ["mail-354", "rcpt-354"] {
        let up = Scripted::start(mode);
        let server = proxy("epoll", &[up.port], &[]);
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
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

/// RFC 5321 §4.1.3: an IPv6 client is an `[IPv6:...]` address literal in our Received: field
/// (Postfix writes the same), and a HELO name with `;`, spaces or 8-bit octets cannot shape it.
#[test]
fn received_names_an_ipv6_client_as_an_address_literal() {
    for io in IO_MODES {
        let rec = Recorder::start(&[]);
        let server = proxy(io, &[rec.port], &["--listen", "[::1]:0"]);
        let v6 = server
            .addrs
            .iter()
            .find(|a| a.is_ipv6())
            .expect("an IPv6 listening line")
            .port();
        let dir = TempDir::new("relay-v6");
        let msg = dir.write("m.eml", &tagged("v6"));
        let args = vec![
            "--host".to_string(),
            "::1".to_string(),
            "--port".to_string(),
            v6.to_string(),
            "sendmail".to_string(),
            "--from".to_string(),
            "a@example.com".to_string(),
            "--to".to_string(),
            "b@example.com".to_string(),
            msg.to_string_lossy().into_owned(),
        ];
        run_python("smtplib_client.py", &args, Duration::from_secs(60));
        // A raw client over IPv6 with a HELO meant to forge the trace.
        let mut c = std::net::TcpStream::connect(("::1", v6)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = std::io::BufReader::new(c.try_clone().unwrap());
        let mut line = String::new();
        let mut reply = |r: &mut std::io::BufReader<std::net::TcpStream>| loop {
            line.clear();
            std::io::BufRead::read_line(r, &mut line).unwrap();
            if line.as_bytes().get(3) == Some(&b' ') {
                break line.clone();
            }
        };
        assert!(reply(&mut r).starts_with("220"));
        c.write_all(b"HELO evil; Thu, 01 Jan 1970 (x)\r\n").unwrap();
        assert!(reply(&mut r).starts_with("250"));
        let body = stuff(&tagged("v6-helo"));
        c.write_all(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
            .unwrap();
        for want in ["250", "250", "354"] {
            assert!(reply(&mut r).starts_with(want));
        }
        c.write_all(&body).unwrap();
        c.write_all(b".\r\nQUIT\r\n").unwrap();
        assert!(reply(&mut r).starts_with("250"));
        server.stop().assert_success();
        let stored = rec.finish();
        assert_eq!(stored.len(), 2, "{io}");
        let first = |s: &Stored| {
            String::from_utf8_lossy(&s.content)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(
            first(&stored[0]),
            "Received: from peer.example ([IPv6:::1])",
            "{io}"
        );
        assert_eq!(
            first(&stored[1]),
            "Received: from evil? ([IPv6:::1])",
            "{io}"
        );
    }
}

/// A pooled connection that received more than the replies it owed, whether a stray line
/// right after its reply to the final dot or one that arrives while it sits idle, is never
/// reused: that line would otherwise answer the next client's MAIL (issue 16, item 4).
#[test]
fn upstream_unsolicited_lines_retire_the_connection() {
    for io in IO_MODES {
        for mode in ["extra-after-dot", "extra-while-idle"] {
            let up = Scripted::start(mode);
            let server = proxy(io, &[up.port], &[]);
            let mut c = Client::connect(server.port());
            c.ehlo("client.example");
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

/// A raw connection from `src` to the relay; the first line it reads.
fn first_line_from(src: &str, port: u16) -> (std::net::TcpStream, String) {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let a: std::net::SocketAddr = format!("{src}:0").parse().unwrap();
    sock.bind(&a.into()).unwrap();
    let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    sock.connect_timeout(&to.into(), Duration::from_secs(10))
        .unwrap();
    let s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(s.try_clone().unwrap()),
        &mut line,
    );
    (s, line)
}

/// `--max-connections-per-client` (issue 16, item 5): a client outside the relay networks
/// gets 421 4.7.0 beyond its share, counted across shards; the relay networks (the MTA in
/// front) are not limited; a closed connection frees its slot.
#[test]
fn connections_per_client_are_limited_outside_the_relay_networks() {
    for io in IO_MODES {
        let up = Scripted::start("ok");
        let server = proxy(
            io,
            &[up.port],
            &[
                "--shards",
                "2",
                "--max-connections-per-client",
                "3",
                "--relay-networks",
                "127.0.0.1/32",
            ],
        );
        let mut held = Vec::new();
        for i in 0..3 {
            let (s, line) = first_line_from("127.0.0.2", server.port());
            assert!(line.starts_with("220 "), "{io}: connection {i}: {line:?}");
            held.push(s);
        }
        let (_, line) = first_line_from("127.0.0.2", server.port());
        assert!(line.starts_with("421 4.7.0 "), "{io}: the fourth: {line:?}");
        // Another address has its own share; the relay networks are not limited.
        let (_other, line) = first_line_from("127.0.0.3", server.port());
        assert!(line.starts_with("220 "), "{io}: {line:?}");
        let local: Vec<_> = (0..8)
            .map(|_| first_line_from("127.0.0.1", server.port()))
            .collect();
        assert!(local.iter().all(|(_, l)| l.starts_with("220 ")), "{io}");
        // A closed connection gives its slot back.
        drop(held.pop());
        std::thread::sleep(Duration::from_millis(200));
        let (_again, line) = first_line_from("127.0.0.2", server.port());
        assert!(line.starts_with("220 "), "{io}: after one closed: {line:?}");
        drop((held, local));
        server.stop().assert_success();
        drop(up);
    }
}
