//! `ringrelay smtpd -d` against Python's own `smtpd -d` (python3.11's module, the seed): the
//! same smtplib client sends the same message to both, and every `Data: b'...'` line Python's
//! DEBUGSTREAM printed (each command line, then the whole message without its final dot)
//! must be in ringrelay's stderr, in the same order, byte for byte; ringrelay also says
//! `Incoming connection from (...)`, `Peer: (...)` and each reply. `smtpd localhost` without a
//! port is refused with a sentence, as Python refuses it. Loopback only; bounded in time.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Sends one message with smtplib (a fixed EHLO name, a dot line and a quote in the body).
fn send_one(port: u16) {
    let script = "import smtplib, sys\n\
                  s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), local_hostname='peer.example', timeout=10)\n\
                  s.sendmail('alice@example.org', ['bob@example.org'],\n\
                  \x20          b\"Subject: it's\\r\\n\\r\\nline one\\r\\n.starts with a dot\\r\\n\")\n\
                  s.noop()\n\
                  s.quit()\n";
    let args = vec!["-c".to_string(), script.to_string(), port.to_string()];
    Peer::spawn(&python(), &args)
        .finish(Duration::from_secs(20))
        .assert_success("smtplib client");
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn data_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("Data: ")).collect()
}

#[test]
fn the_transcript_matches_python_smtpd_d() {
    // The reference: Python's smtpd -d (its wait_port connection prints nothing but its
    // Incoming connection lines, and the connection sends no data).
    let py_port = free_port();
    let args: Vec<String> = [
        "-W",
        "ignore",
        "-m",
        "smtpd",
        "-n",
        "-d",
        "-c",
        "DebuggingServer",
        // Python advertises SIZE only with -s; ringrelay always does, and smtplib then
        // sends SIZE= with MAIL.
        "-s",
        "33554432",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("127.0.0.1:{py_port}")])
    .collect();
    let mut python_smtpd = Peer::spawn(&python(), &args);
    wait_port(py_port);
    send_one(py_port);
    std::thread::sleep(Duration::from_millis(300));
    python_smtpd.signal(libc::SIGINT);
    let reference = python_smtpd.finish(Duration::from_secs(10)).stderr;
    let want = data_lines(&reference);
    assert!(
        want.len() >= 6,
        "Python's smtpd -d printed too little:\n{reference}"
    );

    let port = free_port();
    let local = format!("127.0.0.1:{port}");
    let server = Server::start(&["smtpd", "-n", "-d", "-c", "DebuggingServer", &local]);
    send_one(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("Reply: b'221 ") {
        assert!(Instant::now() < deadline, "no 221 in:\n{}", server.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = server.stop();
    stopped.assert_success();
    let err = &stopped.stderr;
    assert_eq!(data_lines(err), want, "ringrelay's stderr:\n{err}");
    for prefix in [
        "Incoming connection from ('127.0.0.1', ",
        "Peer: ('127.0.0.1', ",
        "Reply: b'220 ",
        "Reply: b'354 ",
        "Reply: b'250 2.0.0 Ok: queued'",
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(prefix)),
            "no line starting {prefix:?} in:\n{err}"
        );
    }
    // The message itself still goes to stdout, as DebuggingServer's does.
    assert!(stopped.stdout_str().contains(".starts with a dot"));
}

#[test]
fn without_d_there_is_no_transcript() {
    let port = free_port();
    let local = format!("127.0.0.1:{port}");
    let server = Server::start(&["smtpd", "-n", "-c", "DebuggingServer", &local]);
    send_one(port);
    let stopped = server.stop();
    stopped.assert_success();
    assert!(
        !stopped.stderr.contains("Data: ") && !stopped.stderr.contains("Reply: "),
        "{}",
        stopped.stderr
    );
}

#[test]
fn smtpd_without_a_port_says_one_is_needed() {
    for (args, what) in [
        (
            vec!["smtpd", "-n", "-c", "DebuggingServer", "localhost"],
            "localaddr",
        ),
        (
            vec!["smtpd", "-n", "127.0.0.1:0", "localhost"],
            "remoteaddr",
        ),
    ] {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = Peer::spawn(BIN, &args).finish(Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        let want = format!("ringrelay: smtpd: {what} \"localhost\" has no port: give host:port");
        assert!(out.stderr.starts_with(&want), "{args:?}: {}", out.stderr);
    }
}
