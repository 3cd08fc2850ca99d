//! Authenticated relaying through `ringrelay proxy --auth-users FILE` (RFC 4954): a client
//! outside `--relay-networks` is refused at RCPT (554 5.7.1) until it authenticates, with a
//! raw client and with swaks (AUTH PLAIN and LOGIN), both connecting from 127.0.0.2; what it
//! relays then carries `with ESMTPA` in our Received: field (RFC 3848). The upstream is the
//! recording aiosmtpd.

mod common;
mod relay_common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use relay_common::*;
use std::time::Duration;

fn users(dir: &TempDir) -> String {
    let path = dir.join("users");
    std::fs::write(&path, "# test users\nalice:s3cret\n").unwrap();
    path.to_string_lossy().into_owned()
}

fn swaks(port: u16, mechanism: &str, password: &str, token: &str) -> PeerOutput {
    let server = format!("127.0.0.1:{port}");
    let header = format!("X-Test-Id: {token}");
    let mut p = Peer::spawn(
        "swaks",
        &[
            "--server",
            &server,
            "--local-interface",
            "127.0.0.2",
            "--helo",
            "swaks.example",
            "--from",
            "s@example.org",
            "--to",
            "r@example.org",
            "--auth",
            mechanism,
            "--auth-user",
            "alice",
            "--auth-password",
            password,
            "--header",
            &header,
            "--timeout",
            "20",
        ]
        .map(String::from),
    );
    p.finish(Duration::from_secs(60))
}

#[test]
fn outsiders_relay_only_after_auth() {
    require("swaks", "--version");
    let dir = TempDir::new("relay-auth");
    let users = users(&dir);
    let rec = Recorder::start(&[]);
    let server = proxy(
        "uring",
        &[rec.port],
        &["--relay-networks", "127.0.0.1/32", "--auth-users", &users],
    );

    // A raw client from 127.0.0.2: refused, then a wrong password, then the right one.
    let mut c = Client::connect_from(Some("127.0.0.2"), server.port());
    let keywords = c.ehlo_keywords("client.example");
    assert!(keywords.contains(&"AUTH".to_string()), "{keywords:?}");
    c.ok("MAIL FROM:<a@example.com>");
    assert_eq!(
        c.cmd("RCPT TO:<b@example.com>"),
        (554, "554 5.7.1 Relay access denied".to_string())
    );
    c.ok("RSET");
    let wrong = B64.encode("\0alice\0guess");
    assert_eq!(c.cmd(&format!("AUTH PLAIN {wrong}")).0, 535);
    let right = B64.encode("\0alice\0s3cret");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {right}")),
        (235, "235 2.7.0 Authentication successful".to_string())
    );
    let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("raw"));
    assert_eq!(code, 250, "{line}");
    c.quit();

    // swaks: LOGIN with the right password relays; PLAIN with a wrong one does not.
    let ok = swaks(server.port(), "LOGIN", "s3cret", "swaks-login");
    ok.assert_success("swaks --auth LOGIN");
    assert!(ok.stdout.contains("<-  235 2.7.0"), "{}", ok.stdout);
    let bad = swaks(server.port(), "PLAIN", "guess", "swaks-bad");
    assert!(!bad.status.success(), "{}", bad.stdout);
    assert!(bad.stdout.contains("<** 535 5.7.8"), "{}", bad.stdout);

    server.stop().assert_success();
    let stored = rec.finish();
    let tokens: Vec<String> = stored
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(&m.content);
            assert!(text.contains(" with ESMTPA id "), "{text}");
            text.lines()
                .find_map(|l| l.strip_prefix("X-Test-Id: "))
                .unwrap_or("-")
                .to_string()
        })
        .collect();
    assert_eq!(tokens, ["raw", "swaks-login"]);
}

#[test]
fn auth_is_not_offered_without_users() {
    let rec = Recorder::start(&[]);
    let server = proxy("epoll", &[rec.port], &[]);
    let mut c = Client::connect(server.port());
    let keywords = c.ehlo_keywords("client.example");
    assert!(!keywords.contains(&"AUTH".to_string()), "{keywords:?}");
    let plain = B64.encode("\0alice\0s3cret");
    assert_eq!(c.cmd(&format!("AUTH PLAIN {plain}")).0, 502);
    c.quit();
    server.stop().assert_success();
    assert!(rec.finish().is_empty());
}
