//! The real binary against Python's smtplib (tests/peers/smtplib_client.py) and against raw
//! pipelining clients (tests/peers/raw_smtp.py): byte-for-byte `debug` output, exact `sink`
//! counts, SMTPUTF8, 8BITMIME, SIZE, the EHLO keyword set and protocol limits. The key
//! scenarios run under both `--io uring` and `--io epoll`.

mod common;

use common::*;
use std::time::Duration;

const PEER_TIMEOUT: Duration = Duration::from_secs(60);

/// Messages sent with smtplib.sendmail() on one connection, in this order.
const PLAIN_MESSAGES: &[(&str, &[u8])] = &[
    (
        "dots",
        b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: dots\r\n\r\n\
          .starts with a dot\r\n..two dots\r\n.\r\n\r\nlast line\r\n",
    ),
    ("empty-body", b"Subject: empty body\r\n\r\n"),
    ("headers-only", b"Subject: headers only\r\nX-Other: 1\r\n"),
    (
        "blank-lines",
        b"Subject: blank lines\r\n\r\n\r\n\r\nafter two blank lines\r\n  indented\r\n",
    ),
];

/// A message with 8-bit content, sent with BODY=8BITMIME.
fn eight_bit_message() -> Vec<u8> {
    let mut m = b"Subject: 8bit\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\
                  Content-Transfer-Encoding: 8bit\r\n\r\nGr\xfc\xdfe, \xe9t\xe9\r\n"
        .to_vec();
    m.extend((0x80u8..=0xff).collect::<Vec<u8>>());
    m.extend_from_slice(b"\r\n");
    m.extend_from_slice("UTF-8 too: Grüße 日本語\r\n".as_bytes());
    m.extend_from_slice(b"x".repeat(998).as_slice());
    m.extend_from_slice(b"\r\n");
    m
}

fn sendmail(port: u16, options: &[&str], files: &[std::path::PathBuf]) {
    let mut args = port_args(port, &["sendmail"]);
    for o in options {
        args.push("--mail-option".into());
        args.push(o.to_string());
    }
    args.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
    run_python("smtplib_client.py", &args, PEER_TIMEOUT);
}

fn debug_sendmail_byte_for_byte(io: &str) {
    let tmp = TempDir::new("debug-sendmail");
    let server = Server::debug(io, &[]);
    let files: Vec<_> = PLAIN_MESSAGES
        .iter()
        .map(|(name, m)| tmp.write(&format!("{name}.eml"), m))
        .collect();
    sendmail(server.port(), &[], &files);
    let eight = eight_bit_message();
    let f8 = tmp.write("8bit.eml", &eight);
    sendmail(server.port(), &["BODY=8BITMIME"], &[f8]);
    let out = server.stop();
    out.assert_success();

    // smtplib adds SIZE=<len> to every MAIL because the server advertises SIZE.
    let mut want = Vec::new();
    for (_, m) in PLAIN_MESSAGES {
        want.extend(debug_render(m, "127.0.0.1", &[format!("size={}", m.len())]));
    }
    want.extend(debug_render(
        &eight,
        "127.0.0.1",
        &[format!("size={}", eight.len()), "BODY=8BITMIME".into()],
    ));
    assert_bytes_eq(
        &out.stdout,
        &want,
        "debug output for smtplib.sendmail messages",
    );
}

#[test]
fn debug_sendmail_byte_for_byte_uring() {
    debug_sendmail_byte_for_byte("uring");
}

#[test]
fn debug_sendmail_byte_for_byte_epoll() {
    debug_sendmail_byte_for_byte("epoll");
}

/// One literal expectation, so that `debug_render` itself is checked against the contract.
#[test]
fn debug_output_literal() {
    let tmp = TempDir::new("debug-literal");
    let server = Server::debug("epoll", &[]);
    let f = tmp.write(
        "m.eml",
        b"Subject: literal\r\nX-A: b\r\n\r\n.dot\r\nbody\r\n",
    );
    sendmail(server.port(), &["BODY=8BITMIME"], &[f]);
    let out = server.stop();
    out.assert_success();
    let want = "---------- MESSAGE FOLLOWS ----------\n\
                mail options: ['SIZE=40', 'BODY=8BITMIME']\n\
                Subject: literal\n\
                X-A: b\n\
                X-Peer: 127.0.0.1\n\
                \n\
                .dot\n\
                body\n\
                ------------ END MESSAGE ------------\n";
    assert_bytes_eq(&out.stdout, want.as_bytes(), "debug output");
}

/// Reads the NNN.eml / NNN.opts pairs written by `smtplib_client.py send-message --capture`.
fn captured(dir: &TempDir) -> Vec<(Vec<u8>, Vec<String>)> {
    let mut v = Vec::new();
    for i in 0.. {
        let eml = dir.join(&format!("{i:03}.eml"));
        if !eml.exists() {
            break;
        }
        let msg = std::fs::read(&eml).unwrap();
        let opts = std::fs::read_to_string(dir.join(&format!("{i:03}.opts"))).unwrap();
        v.push((msg, opts.lines().map(str::to_string).collect()));
    }
    v
}

fn debug_send_message(io: &str, utf8: bool) {
    let tmp = TempDir::new("send-message");
    let server = Server::debug(io, if utf8 { &["--smtputf8"] } else { &[] });
    let mut args = port_args(server.port(), &["send-message", "--capture"]);
    args.push(tmp.path().to_string_lossy().into_owned());
    if utf8 {
        args.push("--utf8".into());
    }
    run_python("smtplib_client.py", &args, PEER_TIMEOUT);
    let out = server.stop();
    out.assert_success();
    let sent = captured(&tmp);
    assert_eq!(sent.len(), 2, "the peer should have sent two messages");
    let mut want = Vec::new();
    for (msg, opts) in &sent {
        let mut all = vec![format!("size={}", msg.len())];
        all.extend(opts.iter().cloned());
        if utf8 {
            assert_eq!(opts, &["SMTPUTF8", "BODY=8BITMIME"], "smtplib's options");
        }
        want.extend(debug_render(msg, "127.0.0.1", &all));
    }
    assert_bytes_eq(&out.stdout, &want, "debug output for send_message()");
}

#[test]
fn debug_send_message_uring() {
    debug_send_message("uring", false);
}

#[test]
fn debug_send_message_epoll() {
    debug_send_message("epoll", false);
}

#[test]
fn debug_smtputf8_uring() {
    debug_send_message("uring", true);
}

#[test]
fn debug_smtputf8_epoll() {
    debug_send_message("epoll", true);
}

/// Without --smtputf8 the keyword is not offered and smtplib refuses to send an
/// internationalised message.
#[test]
fn smtputf8_not_offered_by_default() {
    let server = Server::sink("epoll", &[]);
    run_python(
        "smtplib_client.py",
        &port_args(server.port(), &["utf8-refused"]),
        PEER_TIMEOUT,
    );
    let out = server.stop();
    out.assert_success();
    assert_eq!(out.sink_summary().messages, 0);
}

/// X-Peer carries the client's IPv6 address when it connects over ::1.
#[test]
fn debug_over_ipv6() {
    let tmp = TempDir::new("ipv6");
    let server = Server::start(&["debug", "--listen", "[::1]:0", "--io", "epoll"]);
    assert!(
        server.addrs[0].is_ipv6(),
        "listening line: {:?}",
        server.addrs
    );
    let m = b"Subject: v6\r\n\r\nhello\r\n";
    let f = tmp.write("m.eml", m);
    let mut args = vec!["--host".to_string(), "::1".to_string()];
    args.extend(port_args(server.port(), &["sendmail"]));
    args.push(f.to_string_lossy().into_owned());
    run_python("smtplib_client.py", &args, PEER_TIMEOUT);
    let out = server.stop();
    out.assert_success();
    let want = debug_render(m, "::1", &[format!("size={}", m.len())]);
    assert_bytes_eq(&out.stdout, &want, "debug output over IPv6");
}

/// Exact sink counts over four clients: smtplib (sequential messages on one connection), an
/// RFC 2920 pipelining client, a client that writes everything in one go, and the bare-LF
/// client (whose first message is refused and must not be counted).
fn sink_counts(io: &str) {
    let server = Server::sink(io, &[]);
    let port = server.port();
    let mut want = SinkSummary::default();
    for (script, args) in [
        ("smtplib_client.py", vec!["many", "--count", "50"]),
        ("raw_smtp.py", vec!["pipeline", "--count", "40"]),
        ("raw_smtp.py", vec!["blast", "--count", "40"]),
    ] {
        let report = run_python(script, &port_args(port, &args), PEER_TIMEOUT);
        want.sessions += 1;
        want.messages += report_field(&report, "messages");
        want.recipients += report_field(&report, "recipients");
        want.bytes += report_field(&report, "bytes");
    }
    let report = run_python("raw_smtp.py", &port_args(port, &["bare-lf"]), PEER_TIMEOUT);
    want.sessions += 1;
    want.messages += 1;
    want.recipients += 1;
    want.bytes += report_field(&report, "bytes");
    let out = server.stop();
    out.assert_success();
    assert_eq!(out.sink_summary(), want, "sink summary");
}

#[test]
fn sink_counts_uring() {
    sink_counts("uring");
}

#[test]
fn sink_counts_epoll() {
    sink_counts("epoll");
}

/// Pipelined messages on one connection are each printed whole, in order.
#[test]
fn debug_pipelined_messages_in_order() {
    let server = Server::debug("uring", &[]);
    let report = run_python(
        "raw_smtp.py",
        &port_args(server.port(), &["pipeline", "--count", "5"]),
        PEER_TIMEOUT,
    );
    assert_eq!(report_field(&report, "messages"), 5);
    let out = server.stop();
    out.assert_success();
    let text = out.stdout_str();
    let seqs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("X-Seq: "))
        .collect();
    assert_eq!(
        seqs,
        ["0", "1", "2", "3", "4"],
        "messages out of order:\n{text}"
    );
    assert_eq!(text.matches("---------- MESSAGE FOLLOWS").count(), 5);
    // Dot-unstuffed: the body line ".leading dot line" is printed with one dot.
    assert_eq!(text.matches("\n.leading dot line\n").count(), 5, "{text}");
}

fn size_limit(io: &str) {
    let server = Server::sink(io, &["--size", "10000"]);
    run_python(
        "smtplib_client.py",
        &port_args(server.port(), &["size-limit", "--limit", "10000"]),
        PEER_TIMEOUT,
    );
    let out = server.stop();
    out.assert_success();
    let s = out.sink_summary();
    assert_eq!(
        (s.sessions, s.messages),
        (1, 1),
        "only the small message is accepted: {s:?}"
    );
}

#[test]
fn size_limit_uring() {
    size_limit("uring");
}

#[test]
fn size_limit_epoll() {
    size_limit("epoll");
}

fn protocol_check(port: u16, exts: &[&str]) {
    let mut args = port_args(port, &["protocol"]);
    for e in exts {
        args.push("--expect-ext".into());
        args.push(e.to_string());
    }
    run_python("smtplib_client.py", &args, PEER_TIMEOUT);
}

fn protocol(extra: &[&str], exts: &[&str]) {
    let server = Server::sink("epoll", extra);
    protocol_check(server.port(), exts);
    server.stop().assert_success();
}

/// EHLO keywords, enhanced status codes on replies, 100 recipients then 452, STARTTLS and AUTH
/// 502, HELP, unknown command 500, bad sequence 503.
#[test]
fn protocol_default_keywords_and_limits() {
    protocol(
        &[],
        &[
            "PIPELINING",
            "SIZE 33554432",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "HELP",
        ],
    );
}

#[test]
fn protocol_smtputf8_keyword() {
    protocol(
        &["--smtputf8"],
        &[
            "PIPELINING",
            "SIZE 33554432",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "HELP",
            "SMTPUTF8",
        ],
    );
}

#[test]
fn protocol_keywords_switched_off() {
    protocol(
        &[
            "--no-pipelining",
            "--no-8bitmime",
            "--no-chunking",
            "--no-enhancedstatuscodes",
            "--size",
            "5000",
        ],
        &["SIZE 5000", "HELP"],
    );
}

/// The TOML config file: keys are the long flag names with '_' for '-'; a flag given on the
/// command line wins over the file.
#[test]
fn config_file_keys_and_flag_precedence() {
    let tmp = TempDir::new("config");
    let cfg = tmp.write(
        "ringrelay.toml",
        br#"listen = ["127.0.0.1:0"]
shards = 1
size = 1048576
max_connections = 1000
io = "epoll"
timeout = 60
smtputf8 = true
no_chunking = true
"#,
    );
    let cfg = cfg.to_string_lossy().into_owned();
    let server = Server::start_expecting(&["sink", "--config", &cfg, "--size", "2000"], 1);
    assert_eq!((server.io.as_str(), server.shards), ("epoll", 1));
    protocol_check(
        server.port(),
        &[
            "PIPELINING",
            "SIZE 2000",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "HELP",
            "SMTPUTF8",
        ],
    );
    server.stop().assert_success();
}

/// A key that is not a flag name is an error, not silently ignored.
#[test]
fn config_file_unknown_key_is_an_error() {
    let tmp = TempDir::new("config-bad");
    let cfg = tmp.write(
        "bad.toml",
        b"listen = [\"127.0.0.1:0\"]\nmax_conections = 5\n",
    );
    let mut p = Peer::spawn(
        BIN,
        &[
            "sink".into(),
            "--config".into(),
            cfg.to_string_lossy().into_owned(),
        ],
    );
    let out = p.finish(Duration::from_secs(10));
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("max_conections"), "{}", out.stderr);
}

/// RFC 5321 §2.3.8: only CRLF ends a command line. `NOOP<LF>NOOP<CRLF>` is one line with a bare
/// LF in it, answered once (500); the next line is served as usual.
#[test]
fn a_bare_lf_in_a_command_line_gets_one_reply() {
    use std::io::{BufRead, BufReader, Write};
    for io in IO_MODES {
        let server = Server::sink(io, &[]);
        let s = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        let mut next = |r: &mut BufReader<std::net::TcpStream>| {
            line.clear();
            r.read_line(&mut line).unwrap();
            line.clone()
        };
        assert!(next(&mut r).starts_with("220 "));
        (&s).write_all(b"EHLO lf.example\r\n").unwrap();
        while !next(&mut r).starts_with("250 ") {}
        (&s).write_all(b"NOOP\nNOOP\r\nNOOP\r\nQUIT\r\n").unwrap();
        let replies: Vec<String> = (0..3).map(|_| next(&mut r)).collect();
        assert_eq!(
            replies,
            [
                "500 5.5.2 Error: bare <LF> received\r\n",
                "250 2.0.0 Ok\r\n",
                "221 2.0.0 Bye\r\n"
            ],
            "{io}"
        );
        server.stop().assert_success();
    }
}
