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
        let (up, server, mut c) = scripted_relay(io, "ok", &["--size", "30000"], "client.example");
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
        let (up, server, mut c) = scripted_relay(io, "ok", &[], "client.example");
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
