//! The real binary under load from Postfix's own generator, /usr/sbin/smtp-source (only the
//! binary is used; the Postfix daemon need not run). smtp-source aborts with a non-zero exit on
//! any reply it does not expect, and the sink's summary must count every message exactly.

mod common;

use common::*;
use std::time::Duration;

const LOAD_TIMEOUT: Duration = Duration::from_secs(180);

/// 20 parallel sessions, 5000 messages of 4096 payload bytes, several messages per connection
/// (-d): every message is accepted and counted.
fn smtp_source_load(io: &str) {
    let _heavy = heavy();
    let messages: u64 = if cfg!(debug_assertions) {
        5_000
    } else {
        20_000
    };
    let server = Server::sink(io, &[]);
    let m = messages.to_string();
    let out = smtp_source(
        server.port(),
        "localhost",
        &["-s", "20", "-m", &m, "-l", "4096", "-d"],
        LOAD_TIMEOUT,
    );
    let stopped = server.stop();
    stopped.assert_success();
    let sum = stopped.sink_summary();
    eprintln!(
        "smtp-source: {messages} messages in {:?}; {sum:?}",
        out.took
    );
    assert_eq!(sum.messages, messages, "{sum:?}");
    assert_eq!(sum.recipients, messages, "{sum:?}");
    // -d: each of the 20 sessions keeps its connection for all of its messages.
    assert_eq!(sum.sessions, 20, "{sum:?}");
    // 4096 payload bytes plus smtp-source's few header lines per message.
    assert!(
        sum.bytes >= messages * 4096 && sum.bytes <= messages * (4096 + 1024),
        "bytes {} out of range for {messages} messages of 4096 bytes",
        sum.bytes
    );
}

#[test]
fn smtp_source_load_uring() {
    smtp_source_load("uring");
}

#[test]
fn smtp_source_load_epoll() {
    smtp_source_load("epoll");
}

/// One connection per message (no -d), three recipients each.
#[test]
fn smtp_source_connection_per_message() {
    let _heavy = heavy();
    let server = Server::sink("uring", &[]);
    smtp_source(
        server.port(),
        "localhost",
        &["-s", "10", "-m", "1000", "-l", "512", "-r", "3"],
        LOAD_TIMEOUT,
    );
    let stopped = server.stop();
    stopped.assert_success();
    let sum = stopped.sink_summary();
    assert_eq!(
        (sum.sessions, sum.messages, sum.recipients),
        (1000, 1000, 3000),
        "{sum:?}"
    );
}

/// The same load against `debug`: stdout carries every message, none interleaved.
#[test]
fn smtp_source_debug_not_interleaved() {
    let _heavy = heavy();
    let server = Server::debug("uring", &[]);
    smtp_source(
        server.port(),
        "localhost",
        &["-s", "8", "-m", "400", "-l", "2000", "-d"],
        LOAD_TIMEOUT,
    );
    let stopped = server.stop();
    stopped.assert_success();
    let text = stopped.stdout_str();
    let mut open = false;
    let mut count = 0;
    for (n, line) in text.lines().enumerate() {
        match line {
            "---------- MESSAGE FOLLOWS ----------" => {
                assert!(!open, "line {n}: a message starts inside another one");
                open = true;
                count += 1;
            }
            "------------ END MESSAGE ------------" => {
                assert!(open, "line {n}: END without a start");
                open = false;
            }
            _ => assert!(open, "line {n} outside any message: {line:?}"),
        }
    }
    assert!(!open, "the last message is not terminated");
    assert_eq!(count, 400);
    assert_eq!(text.matches("\nX-Peer: 127.0.0.1\n").count(), 400);
}
