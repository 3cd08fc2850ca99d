//! Server-side STARTTLS (RFC 3207) against real clients, loopback only, under both drivers:
//! Python's smtplib (`starttls()` with the test CA, then a message), a raw client that
//! pipelines a command behind STARTTLS (command injection: the connection is closed, the
//! command never answered), a client that sends garbage instead of a ClientHello, and swaks
//! through the relay with STARTTLS and AUTH (AUTH before TLS is `538 5.7.11`; after, the
//! message is relayed `with ESMTPSA`). The certificate is made with openssl at test time.

mod common;
mod relay_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use relay_common::*;

/// Python's smtplib: STARTTLS, EHLO again, send one message; prints what it saw.
const SMTPLIB: &str = r#"
import smtplib, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
s = smtplib.SMTP("127.0.0.1", port, timeout=20)
s.ehlo()
print("before", s.has_extn("starttls"))
code, _ = s.starttls(context=ctx)
print("starttls", code, s.sock.version())
s.ehlo()
print("after", s.has_extn("starttls"))
print("again", s.docmd("STARTTLS")[0])
print("refused", s.sendmail("a@example.com", ["b@example.com"], "Subject: tls\r\n\r\nover TLS\r\n"))
s.quit()
"#;

fn tls_args(cert: &std::path::Path, key: &std::path::Path) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        cert.to_string_lossy().into_owned(),
        "--tls-key".into(),
        key.to_string_lossy().into_owned(),
    ]
}

#[test]
fn smtplib_starttls_then_a_message() {
    let dir = TempDir::new("starttls");
    let (cert, key) = test_certificate(&dir);
    let args = tls_args(&cert, &key);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for io in IO_MODES {
        let server = Server::sink(io, &args);
        let port = server.port().to_string();
        let ca = cert.to_string_lossy().into_owned();
        let mut p = Peer::spawn(&python(), &["-c".into(), SMTPLIB.into(), port, ca]);
        let out = p.finish(Duration::from_secs(60));
        out.assert_success("smtplib starttls");
        let want = "before True\nstarttls 220 TLSv1.3\nafter False\nagain 554\nrefused {}\n";
        assert_eq!(out.stdout, want, "{io}");
        let stopped = server.stop();
        stopped.assert_success();
        assert_eq!(stopped.sink_summary().messages, 1, "{io}");
    }
}

/// Reads one reply line (CRLF) or None at the end of the stream.
fn line(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut l = String::new();
    match r.read_line(&mut l) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(l),
    }
}

/// Connects and reads up to the end of the EHLO reply.
fn greeted(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let w = TcpStream::connect(("127.0.0.1", port)).unwrap();
    w.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = BufReader::new(w.try_clone().unwrap());
    assert!(line(&mut r).unwrap().starts_with("220 "));
    (&w).write_all(b"EHLO c.example\r\n").unwrap();
    while !line(&mut r).unwrap().starts_with("250 ") {}
    (w, r)
}

#[test]
fn nothing_may_follow_starttls_in_cleartext() {
    let dir = TempDir::new("starttls-inject");
    let (cert, key) = test_certificate(&dir);
    let args = tls_args(&cert, &key);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    for io in IO_MODES {
        let server = Server::sink(io, &args);
        // Command injection (CVE-2011-0411 style): NOOP rides behind STARTTLS.
        let (w, mut r) = greeted(server.port());
        (&w).write_all(b"STARTTLS\r\nNOOP\r\n").unwrap();
        assert_eq!(
            line(&mut r).as_deref(),
            Some("220 2.0.0 Ready to start TLS\r\n")
        );
        let mut rest = Vec::new();
        // Closed at once (end of stream), not left waiting for a ClientHello.
        let ended = r.read_to_end(&mut rest);
        assert!(
            ended.is_ok(),
            "{io}: still open after injected input: {ended:?}"
        );
        assert!(rest.is_empty(), "{io}: answered after STARTTLS: {rest:?}");
        // Garbage instead of a ClientHello: the connection ends, the server goes on.
        let (w, mut r) = greeted(server.port());
        (&w).write_all(b"STARTTLS\r\n").unwrap();
        assert_eq!(
            line(&mut r).as_deref(),
            Some("220 2.0.0 Ready to start TLS\r\n")
        );
        (&w).write_all(b"HELLO THIS IS NOT TLS\r\n\r\n").unwrap();
        let mut rest = Vec::new();
        let ended = r.read_to_end(&mut rest);
        assert!(
            ended.is_ok(),
            "{io}: still open after a bad handshake: {ended:?}"
        );
        // At most a TLS alert record (content type 21), never an SMTP reply.
        assert!(rest.is_empty() || rest[0] == 21, "{io}: {rest:?}");
        let (w, mut r) = greeted(server.port());
        (&w).write_all(b"QUIT\r\n").unwrap();
        assert!(line(&mut r).unwrap().starts_with("221 "), "{io}");
        server.stop().assert_success();
    }
}

#[test]
fn relay_auth_only_inside_tls() {
    require("swaks", "--version");
    let dir = TempDir::new("starttls-relay");
    let (cert, key) = test_certificate(&dir);
    let users = dir.join("users");
    std::fs::write(&users, "alice:s3cret\n").unwrap();
    let rec = Recorder::start(&[]);
    let mut args = tls_args(&cert, &key);
    args.extend(["--relay-networks", "127.0.0.1/32", "--auth-users"].map(String::from));
    args.push(users.to_string_lossy().into_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = proxy("uring", &[rec.port], &args);
    // In cleartext AUTH is neither listed nor accepted.
    let mut c = Client::connect_from(Some("127.0.0.2"), server.port());
    let keywords = c.ehlo_keywords("client.example");
    assert!(keywords.contains(&"STARTTLS".to_string()), "{keywords:?}");
    assert!(!keywords.contains(&"AUTH".to_string()), "{keywords:?}");
    let (code, line) = c.cmd("AUTH PLAIN AGFsaWNlAHMzY3JldA==");
    assert_eq!(code, 538, "{line}");
    c.quit();
    // swaks: STARTTLS, then AUTH LOGIN, then the message.
    let server_addr = format!("127.0.0.1:{}", server.port());
    let mut p = Peer::spawn(
        "swaks",
        &[
            "--server",
            &server_addr,
            "--local-interface",
            "127.0.0.2",
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "s3cret",
            "--from",
            "s@example.org",
            "--to",
            "r@example.org",
            "--header",
            "X-Test-Id: tls",
            "--timeout",
            "20",
        ]
        .map(String::from),
    );
    let out = p.finish(Duration::from_secs(60));
    out.assert_success("swaks --tls --auth LOGIN");
    assert!(out.stdout.contains("<~  235 2.7.0"), "{}", out.stdout);
    server.stop().assert_success();
    let stored = rec.finish();
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0].content);
    assert!(text.contains(" with ESMTPSA id "), "{text}");
}
