//! Postfix itself as the MTA in front of `ringrelay proxy`: a private Postfix instance
//! (tests/postfix_kit: its own config and queue directories under target/,
//! `relayhost = [127.0.0.1]:PROXYPORT`, smtpd on a free loopback port, no chroot, logging to a
//! file) is started and stopped by the test, mail is submitted to it over SMTP (swaks,
//! smtp-source), and it delivers through ringrelay to the recording aiosmtpd upstream
//! (tests/peers/relay_recorder.py).
//!
//! It also shows what the 4xx mapping is for: while the upstream is down ringrelay answers
//! 451, Postfix keeps the message in its queue, and delivers it once the upstream is back.
//!
//! Needs root (Postfix's master runs its daemons as the `postfix` user) and the Debian postfix
//! package; no system Postfix configuration is used or changed.

mod common;
mod postfix_kit;

use common::*;
use postfix_kit::Postfix;
use std::path::Path;
use std::time::{Duration, Instant};

const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";
const RELAY_HOST: &str = "relay.test";

/// Files the recorder stored so far.
fn stored(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .count()
    })
}

fn wait_stored(dir: &Path, n: usize, timeout: Duration, pf: &Postfix) {
    let deadline = Instant::now() + timeout;
    while stored(dir) < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} messages delivered upstream within {timeout:?}\n--- maillog ---\n{}",
            stored(dir),
            pf.maillog()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn postfix_in_front(io: &str) {
    require("swaks", "--version");
    let _heavy = heavy();
    let tmp = TempDir::new("relay-postfix");
    let rec_dir = tmp.join("rec");
    std::fs::create_dir_all(&rec_dir).unwrap();
    // The upstream's port is fixed now, but nothing listens there yet.
    let up_port = free_port();
    let server = Server::mode(
        "proxy",
        io,
        &[
            "--hostname",
            RELAY_HOST,
            "--metrics-listen",
            "none",
            "--upstream",
            &format!("127.0.0.1:{up_port}"),
        ],
    );
    let pf = Postfix::start(tmp.path(), server.port());

    // 1. Upstream down: ringrelay says 451 at MAIL, Postfix defers and keeps the message.
    let swaks = |token: &str| {
        pf.submit(
            "rcpt@example.com",
            &[
                "--header".into(),
                format!("X-Test-Id: {token}"),
                "--body".into(),
                format!("body of {token}\n.dot line\n"),
            ],
        )
    };
    swaks("early");
    let deferred = pf.wait_log(
        &["status=deferred", "451 4.4.1"],
        1,
        Duration::from_secs(30),
    );
    assert!(
        deferred[0].contains(&format!("relay=127.0.0.1[127.0.0.1]:{}", server.port())),
        "{deferred:?}"
    );

    // 2. The upstream comes up: Postfix's retry delivers through the relay.
    let mut rec = Peer::python(
        "relay_recorder.py",
        &[up_port.to_string(), rec_dir.display().to_string()],
    );
    rec.wait_for_line("ready", Duration::from_secs(30));
    wait_stored(&rec_dir, 1, Duration::from_secs(60), &pf);

    // 3. Load: 200 messages from 5 smtp-source sessions into Postfix, all relayed.
    assert!(Path::new(SMTP_SOURCE).exists(), "{SMTP_SOURCE} missing");
    let target = format!("127.0.0.1:{}", pf.port);
    let mut src = Peer::spawn(
        SMTP_SOURCE,
        &[
            "-s",
            "5",
            "-m",
            "200",
            "-l",
            "1024",
            "-d",
            "-M",
            "source.example",
            "-f",
            "source@example.org",
            "-t",
            "sink@example.com",
            target.as_str(),
        ]
        .map(String::from),
    );
    src.finish(Duration::from_secs(120))
        .assert_success("smtp-source into postfix");
    swaks("late");
    wait_stored(&rec_dir, 202, Duration::from_secs(120), &pf);
    let sent = pf.wait_log(
        &["status=sent", "250 2.0.0 recorded as"],
        202,
        Duration::from_secs(20),
    );
    assert!(
        sent.iter()
            .all(|l| l.contains(&format!("relay=127.0.0.1[127.0.0.1]:{}", server.port()))),
        "{sent:?}"
    );
    pf.stop();
    server.stop().assert_success();
    let out = rec.finish(Duration::from_secs(60));
    out.assert_success("relay_recorder.py");
    let total: usize = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("total="))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        total, 202,
        "exactly one delivery per message\n{}",
        out.stdout
    );

    // Every message: our Received: on top (from Postfix's HELO), Postfix's right below it,
    // no other; the two swaks messages byte for byte.
    let mut tokens = Vec::new();
    for n in 1..=total {
        let content = std::fs::read(rec_dir.join(format!("{n}.eml"))).unwrap();
        let text = String::from_utf8_lossy(&content);
        let head = text.split("\r\n\r\n").next().unwrap();
        assert!(
            head.starts_with(&format!(
                "Received: from mta.test ([127.0.0.1])\r\n\tby {RELAY_HOST} (ringrelay) with ESMTP id "
            )),
            "message {n}:\n{text}"
        );
        let fields: Vec<&str> = head
            .split("\r\n")
            .filter(|l| l.starts_with("Received:"))
            .collect();
        assert_eq!(fields.len(), 2, "message {n}:\n{text}");
        assert!(
            head.contains("\r\n\tby mta.test (Postfix) with "),
            "message {n}:\n{text}"
        );
        if let Some(t) = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("X-Test-Id: "))
        {
            assert!(
                text.contains(&format!("\r\n\r\nbody of {t}\r\n.dot line\r\n")),
                "message {n}:\n{text}"
            );
            tokens.push((n, t.to_string()));
        }
    }
    // The deferred message was the first one delivered, once the upstream was up.
    assert_eq!(
        tokens,
        [(1, "early".to_string()), (tokens[1].0, "late".to_string())]
    );
}

#[test]
fn postfix_in_front_uring() {
    postfix_in_front("uring");
}

#[test]
fn postfix_in_front_epoll() {
    postfix_in_front("epoll");
}
