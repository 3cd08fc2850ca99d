//! The real binary against swaks (PIPELINING transcripts) and against a raw-socket BDAT client.
//!
//! swaks 20201014 (Debian 12) has no BDAT/CHUNKING support at all, so CHUNKING is driven by
//! tests/peers/raw_smtp.py (`bdat`) instead.

mod common;

use common::*;
use std::time::Duration;

const SWAKS_TIMEOUT: Duration = Duration::from_secs(60);

/// The message swaks sends with `--data @FILE`: LF line endings in the file, no final newline
/// (swaks converts to CRLF, dot-stuffs, and ends the data with CRLF . CRLF).
const SWAKS_DATA: &str =
    "From: swaks@example.org\nTo: rcpt@example.org\nSubject: swaks pipelining\n\n\
                          first body line\n.a dot line\n..\n\nlast line";

fn swaks(port: u16, extra: &[&str]) -> String {
    require("swaks", "--version");
    let mut args: Vec<String> = vec![
        "--server".into(),
        format!("127.0.0.1:{port}"),
        "--helo".into(),
        "swaks.example".into(),
        "--from".into(),
        "swaks@example.org".into(),
        "--protocol".into(),
        "ESMTP".into(),
        "--timeout".into(),
        "20".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut p = Peer::spawn("swaks", &args);
    let out = p.finish(SWAKS_TIMEOUT);
    out.assert_success(&format!("swaks {}", args.join(" ")));
    out.stdout
}

/// The transcript lines, without swaks' "=== " comments.
fn transcript(out: &str) -> Vec<&str> {
    out.lines().filter(|l| !l.starts_with("===")).collect()
}

/// Position of the first line starting with `prefix`.
fn pos(lines: &[&str], prefix: &str) -> usize {
    lines
        .iter()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| {
            panic!(
                "no line starting with {prefix:?} in transcript:\n{}",
                lines.join("\n")
            )
        })
}

fn swaks_pipelining(io: &str) {
    let tmp = TempDir::new("swaks");
    let data = tmp.write("data.eml", SWAKS_DATA.as_bytes());
    let server = Server::debug(io, &[]);
    let out = swaks(
        server.port(),
        &[
            "--to",
            "rcpt@example.org,second@example.org",
            "--pipeline",
            "--data",
            &format!("@{}", data.display()),
        ],
    );
    let t = transcript(&out);
    assert!(
        t.contains(&"<-  250-PIPELINING"),
        "PIPELINING not advertised:\n{out}"
    );
    // With PIPELINING, swaks sends MAIL, both RCPTs and DATA in one go, then reads the replies.
    let mail = pos(&t, " -> MAIL FROM:<swaks@example.org>");
    assert_eq!(
        &t[mail..mail + 7],
        &[
            " -> MAIL FROM:<swaks@example.org>",
            " -> RCPT TO:<rcpt@example.org>",
            " -> RCPT TO:<second@example.org>",
            " -> DATA",
            "<-  250 2.1.0 Ok",
            "<-  250 2.1.5 Ok",
            "<-  250 2.1.5 Ok",
        ][..],
        "pipelined group in the transcript:\n{out}"
    );
    assert!(
        t[mail + 7].starts_with("<-  354 "),
        "DATA reply: {}",
        t[mail + 7]
    );
    let dot = t
        .iter()
        .position(|l| *l == " -> .")
        .unwrap_or_else(|| panic!("no final dot in transcript:\n{out}"));
    assert!(
        t[dot + 1].starts_with("<-  250 2.0.0"),
        "reply to the final dot: {}\n{out}",
        t[dot + 1]
    );
    assert!(
        t.iter().any(|l| l.starts_with("<-  221")),
        "no 221 to QUIT:\n{out}"
    );
    let stopped = server.stop();
    stopped.assert_success();
    let content = SWAKS_DATA.replace('\n', "\r\n") + "\r\n";
    assert_bytes_eq(
        &stopped.stdout,
        &debug_render(content.as_bytes(), "127.0.0.1", &[]),
        "debug output of the swaks message",
    );
}

#[test]
fn swaks_pipelining_uring() {
    swaks_pipelining("uring");
}

#[test]
fn swaks_pipelining_epoll() {
    swaks_pipelining("epoll");
}

/// Without PIPELINING advertised, swaks --pipeline falls back to one command per round trip,
/// and the message is still accepted.
#[test]
fn swaks_without_pipelining_keyword() {
    let server = Server::sink("epoll", &["--no-pipelining"]);
    let out = swaks(
        server.port(),
        &["--to", "rcpt@example.org", "--pipeline", "--body", "hello"],
    );
    let t = transcript(&out);
    assert!(!t.contains(&"<-  250-PIPELINING"), "{out}");
    let mail = pos(&t, " -> MAIL FROM:");
    assert!(t[mail + 1].starts_with("<-  250"), "not lock-step:\n{out}");
    let s = server.stop();
    s.assert_success();
    let sum = s.sink_summary();
    assert_eq!(
        (sum.sessions, sum.messages, sum.recipients),
        (1, 1, 1),
        "{sum:?}"
    );
}

/// swaks --quit-after RCPT with pipelining: the transaction is abandoned, nothing is counted.
#[test]
fn swaks_quit_after_rcpt() {
    let server = Server::sink("uring", &[]);
    let out = swaks(
        server.port(),
        &[
            "--to",
            "a@example.org,b@example.org",
            "--pipeline",
            "--quit-after",
            "RCPT",
        ],
    );
    assert!(out.contains("<-  221 2.0.0"), "{out}");
    let s = server.stop();
    s.assert_success();
    let sum = s.sink_summary();
    assert_eq!(
        (sum.sessions, sum.messages, sum.bytes),
        (1, 0, 0),
        "{sum:?}"
    );
}

/// Many swaks runs against one sink: every message and recipient is counted.
#[test]
fn swaks_repeated_sink_counts() {
    let server = Server::sink("uring", &[]);
    for i in 0..5 {
        swaks(
            server.port(),
            &[
                "--to",
                "a@example.org,b@example.org,c@example.org",
                "--pipeline",
                "--header",
                &format!("Subject: run {i}"),
                "--body",
                "body",
            ],
        );
    }
    let s = server.stop();
    s.assert_success();
    let sum = s.sink_summary();
    assert_eq!(
        (sum.sessions, sum.messages, sum.recipients),
        (5, 5, 15),
        "{sum:?}"
    );
}

fn bdat(io: &str) {
    let tmp = TempDir::new("bdat");
    let server = Server::debug(io, &[]);
    let mut args = port_args(server.port(), &["bdat", "--expect-dir"]);
    args.push(tmp.path().to_string_lossy().into_owned());
    let report = run_python("raw_smtp.py", &args, Duration::from_secs(60));
    let stopped = server.stop();
    stopped.assert_success();
    let n = report_field(&report, "messages");
    assert_eq!(n, 4);
    let mut want = Vec::new();
    for i in 0..n {
        let content = std::fs::read(tmp.join(&format!("{i:03}.eml"))).unwrap();
        // Message 2 (index 1) was sent with BODY=8BITMIME.
        let opts: Vec<String> = if i == 1 {
            vec!["BODY=8BITMIME".into()]
        } else {
            vec![]
        };
        want.extend(debug_render(&content, "127.0.0.1", &opts));
    }
    assert_bytes_eq(&stopped.stdout, &want, "debug output of the BDAT messages");
}

#[test]
fn bdat_chunking_uring() {
    bdat("uring");
}

#[test]
fn bdat_chunking_epoll() {
    bdat("epoll");
}

/// BDAT byte counts in the sink: BDAT content is counted as sent (never unstuffed).
#[test]
fn bdat_sink_counts() {
    let tmp = TempDir::new("bdat-sink");
    let server = Server::sink("uring", &[]);
    let mut args = port_args(server.port(), &["bdat", "--expect-dir"]);
    args.push(tmp.path().to_string_lossy().into_owned());
    let report = run_python("raw_smtp.py", &args, Duration::from_secs(60));
    let s = server.stop();
    s.assert_success();
    let sum = s.sink_summary();
    assert_eq!(sum.messages, report_field(&report, "messages"), "{sum:?}");
    assert_eq!(sum.bytes, report_field(&report, "bytes"), "{sum:?}");
    assert_eq!(sum.recipients, sum.messages, "{sum:?}");
}
