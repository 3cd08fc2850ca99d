//! Fault injection in `sink`: smtp-sink's fault flags checked against Postfix's smtp-sink
//! itself (same flags, same client script, same reply classes and hang-ups), a probabilistic
//! rule over 10,000 recipients (the observed rate within statistical bounds, and the metrics
//! count equal to what the client saw), delays and address triggers, and the rules changed
//! while running (`PUT /faults`, SIGHUP) without dropping a connection, a bad set refused
//! with the old one kept.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One step of the client script: what the server said, or that it hung up.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Heard {
    /// A reply's code class (2, 3, 4, 5) and, for 421, the code.
    Class(u16),
    /// The connection closed (or reset) instead of a reply.
    Closed,
}

fn heard(r: &mut BufReader<TcpStream>) -> Heard {
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return Heard::Closed,
            Ok(_) => {}
        }
        if line.as_bytes().get(3) == Some(&b'-') {
            continue;
        }
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        return Heard::Class(if code == 421 { 421 } else { code / 100 });
    }
}

/// Greeting, EHLO, MAIL, RCPT, DATA, the message, RSET, NOOP, QUIT: what each step heard,
/// up to the first hang-up.
fn script(port: u16) -> Vec<Heard> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut out = vec![heard(&mut r)];
    let steps: [&[u8]; 8] = [
        b"EHLO client.example\r\n",
        b"MAIL FROM:<a@example.com>\r\n",
        b"RCPT TO:<b@example.com>\r\n",
        b"DATA\r\n",
        b"Subject: faults\r\n\r\nbody\r\n.\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"QUIT\r\n",
    ];
    for step in steps {
        if out.last() == Some(&Heard::Closed) {
            break;
        }
        if w.write_all(step).is_err() {
            out.push(Heard::Closed);
            break;
        }
        out.push(heard(&mut r));
        if step.starts_with(b"DATA") && out.last() != Some(&Heard::Class(3)) {
            // No 354: the message text is not sent.
            break;
        }
    }
    out
}

fn smtp_sink(port: u16, flags: &[&str]) -> Peer {
    let listen = format!("127.0.0.1:{port}");
    let mut args: Vec<String> = vec!["-u".into(), "nobody".into()];
    args.extend(flags.iter().map(|s| s.to_string()));
    args.extend([listen, "10".into()]);
    let p = Peer::spawn("/usr/sbin/smtp-sink", &args);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "smtp-sink did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

#[test]
fn smtp_sink_fault_flags_behave_as_smtp_sink_does() {
    let cases: &[&[&str]] = &[
        &["-f", "rcpt"],
        &["-r", "mail"],
        &["-f", "data"],
        &["-r", "."],
        &["-q", "rcpt"],
        &["-q", "data"],
        &["-Q", "mail"],
        &["-Q", "."],
        &["-q", "connect"],
        &["-r", "noop,rset"],
        &["-Q", "helo,ehlo"],
    ];
    for flags in cases {
        let port = free_port();
        let mut theirs = smtp_sink(port, flags);
        let want = script(port);
        theirs.signal(libc::SIGTERM);
        let _ = theirs.finish(Duration::from_secs(10));
        for io in IO_MODES {
            let ours = Server::sink(io, flags);
            let got = script(ours.port());
            assert_eq!(
                got, want,
                "{io} {flags:?}: ours {got:?}, smtp-sink {want:?}"
            );
            ours.stop().assert_success();
        }
    }
}

/// `-f connect`: both refuse the greeting with a 5xx. smtp-sink then serves the session as if
/// nothing had happened; ringrelay does what RFC 5321 §3.1 asks after a refused greeting:
/// `503` to every command but QUIT, which gets its 221 and the close.
#[test]
fn a_refused_greeting() {
    let port = free_port();
    let mut theirs = smtp_sink(port, &["-f", "connect"]);
    assert_eq!(script(port)[..2], [Heard::Class(5), Heard::Class(2)]);
    theirs.signal(libc::SIGTERM);
    let _ = theirs.finish(Duration::from_secs(10));
    for io in ["uring", "epoll"] {
        let ours = Server::sink(io, &["-f", "connect"]);
        assert_eq!(script(ours.port()), vec![Heard::Class(5); 5], "{io}");
        let s = TcpStream::connect(("127.0.0.1", ours.port())).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with('5'), "{io}: {line:?}");
        w.write_all(b"NOOP\r\nQUIT\r\n").unwrap();
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert!(
            rest.starts_with("503 Error: service refused") && rest.ends_with("\r\n221 Bye\r\n"),
            "{io}: {rest:?}"
        );
        ours.stop().assert_success();
    }
}

/// `-w` and `-W` delay the answer; the metrics count the delay.
#[test]
fn delays_hold_the_reply_back() {
    let server = Server::sink("uring", &["-w", "0.4", "-W", "mail:0.2"]);
    let admin = metrics_addr(&server);
    let t0 = Instant::now();
    let got = script(server.port());
    let took = t0.elapsed();
    assert_eq!(got[4], Heard::Class(3), "{got:?}");
    assert!(took >= Duration::from_millis(600), "{took:?}");
    let (_, m) = http_get(admin, "/metrics");
    let delay = sample(&m, "ringrelay_faults_delay_seconds_total");
    assert!((0.59..1.0).contains(&delay), "{delay}");
    assert_eq!(
        sample(
            &m,
            "ringrelay_faults_injected_total{stage=\"data\",action=\"delay\"}"
        ),
        1.0
    );
    server.stop().assert_success();
}

/// `-A 0`: 550 right after the message text starts, and nothing more is read.
#[test]
fn abort_after_354() {
    let server = Server::sink("epoll", &["-A", "0.2"]);
    let got = script(server.port());
    assert_eq!(got[4], Heard::Class(3), "{got:?}");
    assert_eq!(got[5], Heard::Class(5), "{got:?}");
    assert_eq!(got.last(), Some(&Heard::Closed), "{got:?}");
    let stopped = server.stop();
    stopped.assert_success();
    assert_eq!(stopped.sink_summary().messages, 0);
}

/// A raw client sending `n` recipients in one transaction; the codes it got.
fn recipients(port: u16, n: usize, local: &str) -> Vec<u16> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let code = |r: &mut BufReader<TcpStream>| loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.as_bytes().get(3) != Some(&b'-') {
            return line[..3].parse::<u16>().unwrap();
        }
    };
    assert_eq!(code(&mut r), 220);
    w.write_all(b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\n")
        .unwrap();
    assert_eq!(code(&mut r), 250);
    assert_eq!(code(&mut r), 250);
    let mut codes = Vec::with_capacity(n);
    // In batches of 100 (pipelined), so 10,000 take a moment, not minutes.
    for batch in 0..n.div_ceil(100) {
        let k = 100.min(n - batch * 100);
        let mut out = String::new();
        for i in 0..k {
            out.push_str(&format!(
                "RCPT TO:<{local}{}@example.com>\r\n",
                batch * 100 + i
            ));
        }
        w.write_all(out.as_bytes()).unwrap();
        for _ in 0..k {
            codes.push(code(&mut r));
        }
    }
    w.write_all(b"QUIT\r\n").unwrap();
    codes
}

#[test]
fn a_probabilistic_rule_fires_at_its_rate_and_is_counted() {
    let dir = TempDir::new("faults-rate");
    let rules = dir.join("faults.toml");
    std::fs::write(
        &rules,
        "seed = 42\n\n[[rule]]\nstage = \"rcpt\"\nprobability = 0.05\naction = \"reply\"\n\
         code = 451\nenhanced = \"4.2.1\"\ntext = \"Mailbox busy\"\n",
    )
    .unwrap();
    let server = Server::sink(
        "uring",
        &["--faults", rules.to_str().unwrap(), "--max-recipients", "0"],
    );
    let admin = metrics_addr(&server);
    let n = 10_000;
    let codes = recipients(server.port(), n, "r");
    let refused = codes.iter().filter(|c| **c == 451).count();
    assert_eq!(codes.iter().filter(|c| **c == 250).count() + refused, n);
    // Binomial(10000, 0.05): mean 500, sd ~21.8; five sd either side.
    assert!((391..=609).contains(&refused), "{refused} of {n}");
    let (_, m) = http_get(admin, "/metrics");
    let counted = sample(
        &m,
        "ringrelay_faults_injected_total{stage=\"rcpt\",action=\"reply_4xx\"}",
    );
    assert_eq!(counted as usize, refused);
    server.stop().assert_success();
}

#[test]
fn rules_change_while_running() {
    let dir = TempDir::new("faults-live");
    let rules = dir.join("faults.toml");
    std::fs::write(&rules, "").unwrap();
    let mut server = Server::sink("uring", &["--faults", rules.to_str().unwrap()]);
    let admin = metrics_addr(&server);
    // A session open across every change.
    let s = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    assert_eq!(heard(&mut r), Heard::Class(2));
    let mut say = |line: &str| {
        w.write_all(line.as_bytes()).unwrap();
        heard(&mut r)
    };
    assert_eq!(say("EHLO live.example\r\n"), Heard::Class(2));
    assert_eq!(say("MAIL FROM:<a@example.com>\r\n"), Heard::Class(2));
    assert_eq!(say("RCPT TO:<permfail@example.com>\r\n"), Heard::Class(2));
    // PUT: address triggers and a rule refusing one domain.
    let body = r#"{"address_triggers": true, "rule": [{"stage": "rcpt", "action": "reply",
        "code": 550, "text": "no", "match": {"recipient_domain": "blocked.example"}}]}"#;
    let (status, text) = http_put(admin, "/faults", body);
    assert_eq!(status, 200, "{text}");
    assert_eq!(say("RCPT TO:<permfail@example.com>\r\n"), Heard::Class(5));
    assert_eq!(say("RCPT TO:<x@blocked.example>\r\n"), Heard::Class(5));
    assert_eq!(say("RCPT TO:<x@fine.example>\r\n"), Heard::Class(2));
    let (_, doc) = http_get(admin, "/faults");
    assert!(doc.contains("blocked.example"), "{doc}");
    // A bad set is refused whole; the old one stays.
    let (status, text) = http_put(admin, "/faults", r#"{"rule": [{"stage": "rcpt"}]}"#);
    assert_eq!(status, 400, "{text}");
    assert_eq!(say("RCPT TO:<x@blocked.example>\r\n"), Heard::Class(5));
    // SIGHUP re-reads the file: a 4xx for every RCPT now.
    std::fs::write(
        &rules,
        "[[rule]]\nstage = \"rcpt\"\naction = \"reply\"\ncode = 452\ntext = \"later\"\n",
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("reloaded") {
        assert!(Instant::now() < deadline, "{}", server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(say("RCPT TO:<x@fine.example>\r\n"), Heard::Class(4));
    // A broken file: refused, the rules stay.
    std::fs::write(&rules, "[[rule]]\nstage = 1\n").unwrap();
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("reload refused") {
        assert!(Instant::now() < deadline, "{}", server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(say("RCPT TO:<x@fine.example>\r\n"), Heard::Class(4));
    assert_eq!(say("QUIT\r\n"), Heard::Class(2));
    assert!(server.running());
    server.stop().assert_success();
}

/// A bare HTTP/1.0 PUT; returns (status, body).
fn http_put(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.0\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// LMTP: a `dot` rule judges each recipient on its own (smtplib.LMTP sees one refused and
/// one accepted reply after the data).
#[test]
fn lmtp_recipients_are_failed_one_by_one() {
    let dir = TempDir::new("faults-lmtp");
    let rules = dir.join("faults.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nstage = \"dot\"\naction = \"reply\"\ncode = 452\nenhanced = \"4.2.2\"\n\
         text = \"Mailbox full\"\nmatch = { local_part = \"full*\" }\n",
    )
    .unwrap();
    let server = Server::sink("epoll", &["--lmtp", "--faults", rules.to_str().unwrap()]);
    let script = r#"
import smtplib, sys
s = smtplib.LMTP('127.0.0.1', int(sys.argv[1]))
s.ehlo()
assert s.mail('a@example.org')[0] == 250
assert s.rcpt('fullbox@example.org')[0] == 250
assert s.rcpt('fine@example.org')[0] == 250
first = s.data(b'Subject: lmtp faults\r\n\r\nbody\r\n')
second = s.getreply()
print(first[0], second[0])
s.quit()
"#;
    let mut p = Peer::spawn(
        &python(),
        &["-c".into(), script.into(), server.port().to_string()],
    );
    let out = p.finish(Duration::from_secs(60));
    out.assert_success("smtplib.LMTP");
    assert_eq!(out.stdout.trim(), "452 250", "{}", out.stdout);
    server.stop().assert_success();
}
