//! Many connections, the connection limit, and the idle timeout next to a busy session, against
//! the real binary under both `--io uring` and `--io epoll`.

mod common;

use common::*;
use std::time::Duration;

/// 2,000 connections held open at once (tests/peers/hold_connections.py raises its own
/// RLIMIT_NOFILE): each reads its 220, all are served a NOOP while all are open, all QUIT
/// cleanly, and then one more message is accepted: the server stayed healthy.
fn hold_2000(io: &str) {
    let _heavy = heavy();
    let server = Server::sink(io, &[]);
    let report = run_python(
        "hold_connections.py",
        &port_args(server.port(), &["--count", "2000", "--deadline", "150"]),
        Duration::from_secs(180),
    );
    assert!(report.contains("held=2000"), "{report}");
    let stopped = server.stop();
    stopped.assert_success();
    let sum = stopped.sink_summary();
    assert_eq!(
        (sum.sessions, sum.messages),
        (2001, 1),
        "2000 held sessions plus the final smtplib one: {sum:?}"
    );
}

#[test]
fn hold_2000_connections_uring() {
    hold_2000("uring");
}

#[test]
fn hold_2000_connections_epoll() {
    hold_2000("epoll");
}

/// `--max-connections 5`: the 6th connection gets `421 4.3.2` and is closed; the 5 held ones
/// are unaffected; after one of them leaves, a new connection is served again.
fn max_connections(io: &str, extra: &[&str]) {
    let mut args = vec!["--max-connections", "5"];
    args.extend_from_slice(extra);
    let server = Server::sink(io, &args);
    run_python(
        "lifecycle.py",
        &port_args(server.port(), &["max-connections", "--max", "5"]),
        Duration::from_secs(60),
    );
    server.stop().assert_success();
}

#[test]
fn max_connections_uring() {
    max_connections("uring", &[]);
}

#[test]
fn max_connections_epoll() {
    max_connections("epoll", &[]);
}

/// The same with one shard (where a per-shard share of the limit would equal the whole).
#[test]
fn max_connections_one_shard() {
    max_connections("uring", &["--shards", "1"]);
}

/// `--shards 1 --timeout 2`: two idle clients (one after EHLO, one inside a transaction) get
/// `421 4.4.2 ... timeout exceeded` and EOF after about 2 s, while a busy client on the same
/// shard sends 200 messages across that moment. Not one byte of the busy client is lost: the
/// sink's counts match what it sent, exactly.
fn timeout_no_lost_byte(io: &str) {
    let _heavy = heavy();
    let server = Server::sink(io, &["--shards", "1", "--timeout", "2"]);
    assert_eq!(
        server.shards, 1,
        "listening line reports shards={}",
        server.shards
    );
    let report = run_python(
        "timeout_busy.py",
        &port_args(server.port(), &["--timeout", "2", "--messages", "200"]),
        Duration::from_secs(90),
    );
    let stopped = server.stop();
    stopped.assert_success();
    let sum = stopped.sink_summary();
    let want = SinkSummary {
        sessions: 3,
        messages: report_field(&report, "messages"),
        recipients: report_field(&report, "recipients"),
        bytes: report_field(&report, "bytes"),
    };
    assert_eq!(sum, want, "sink summary vs. what the busy client sent");
}

#[test]
fn timeout_no_lost_byte_uring() {
    timeout_no_lost_byte("uring");
}

#[test]
fn timeout_no_lost_byte_epoll() {
    timeout_no_lost_byte("epoll");
}

/// All shards share the one kernel-chosen port of `--listen 127.0.0.1:0`, and a second listen
/// address gets its own line.
#[test]
fn shards_share_port_zero_and_two_listeners() {
    let server = Server::start(&[
        "sink",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "[::1]:0",
        "--shards",
        "2",
        "--io",
        "uring",
    ]);
    assert_eq!(server.addrs.len(), 2, "{:?}", server.addrs);
    assert!(server.addrs[0].is_ipv4() && server.addrs[1].is_ipv6());
    assert_ne!(server.addrs[0].port(), 0);
    assert_eq!(server.shards, 2);
    // Enough connections that both shards (SO_REUSEPORT) must be taking some.
    for port_host in [
        ("127.0.0.1", server.addrs[0].port()),
        ("::1", server.addrs[1].port()),
    ] {
        let mut args = vec!["--host".to_string(), port_host.0.to_string()];
        args.extend(port_args(
            port_host.1,
            &["--count", "50", "--concurrency", "10"],
        ));
        run_python("hold_connections.py", &args, Duration::from_secs(60));
    }
    let stopped = server.stop();
    stopped.assert_success();
    assert_eq!(stopped.sink_summary().sessions, 102);
}
