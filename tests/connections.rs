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

/// A raw client: connects, reads the greeting, says EHLO.
fn greeted(port: u16) -> (std::net::TcpStream, std::io::BufReader<std::net::TcpStream>) {
    use std::io::{BufRead, Write};
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("220"), "{line}");
    (&s).write_all(b"EHLO t.example\r\n").unwrap();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.starts_with("250 ") {
            break;
        }
    }
    (s, r)
}

/// Sends `bytes` one every `every`, for at most `limit`; returns the first line the server
/// sent meanwhile (it ended the wait) and how long after the first octet it came.
fn trickle(
    s: &std::net::TcpStream,
    r: &mut std::io::BufReader<std::net::TcpStream>,
    bytes: &[u8],
    every: Duration,
) -> Option<(String, Duration)> {
    use std::io::{BufRead, Write};
    r.get_ref().set_nonblocking(true).unwrap();
    let t0 = std::time::Instant::now();
    for b in bytes {
        if (&*s).write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(every);
        let mut line = String::new();
        if let Ok(n) = r.read_line(&mut line) {
            if n > 0 {
                return Some((line, t0.elapsed()));
            }
        }
    }
    None
}

/// A client trickling a command line one octet every 0.5 s used to live forever; the line
/// must complete within --timeout of its first octet (issue 16, item 5).
#[test]
fn a_trickled_command_line_gets_421_within_the_timeout() {
    for io in IO_MODES {
        let server = Server::sink(io, &["--timeout", "2"]);
        let (s, mut r) = greeted(server.port());
        let got = trickle(&s, &mut r, &[b'N'; 12], Duration::from_millis(500));
        let (line, after) = got.unwrap_or_else(|| panic!("{io}: 6 s of trickle and no reply"));
        assert!(line.starts_with("421 4.4.2"), "{io}: {line}");
        assert!(after < Duration::from_secs(4), "{io}: after {after:?}");
        server.stop().assert_success();
    }
}

/// Under stress (more than half of --max-connections in use) a message body must keep
/// --min-data-rate; without stress the same slow body is fine (issue 16, item 5).
#[test]
fn a_slow_body_is_cut_only_under_stress() {
    use std::io::Write;
    for io in IO_MODES {
        let server = Server::sink(
            io,
            &[
                "--max-connections",
                "4",
                "--min-data-rate",
                "1000",
                "--timeout",
                "30",
            ],
        );
        let start_body = |s: &std::net::TcpStream, r: &mut std::io::BufReader<_>| {
            (&*s)
                .write_all(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
                .unwrap();
            for want in ["250", "250", "354"] {
                let mut line = String::new();
                std::io::BufRead::read_line(r, &mut line).unwrap();
                assert!(line.starts_with(want), "{line}");
            }
        };
        // Alone: 1 of 4 connections, no stress: 3 s at 10 octets/s is fine.
        let (s, mut r) = greeted(server.port());
        start_body(&s, &mut r);
        let got = trickle(&s, &mut r, &[b'x'; 30], Duration::from_millis(100));
        assert!(got.is_none(), "{io}: cut without stress: {got:?}");
        drop((s, r));
        // With two more connections open (3 of 4): cut within a few seconds.
        let _a = greeted(server.port());
        let _b = greeted(server.port());
        let (s, mut r) = greeted(server.port());
        start_body(&s, &mut r);
        let got = trickle(&s, &mut r, &[b'x'; 60], Duration::from_millis(100));
        let (line, after) = got.unwrap_or_else(|| panic!("{io}: not cut under stress"));
        assert!(line.starts_with("421 4.4.2"), "{io}: {line}");
        assert!(after < Duration::from_secs(5), "{io}: after {after:?}");
        drop((_a, _b));
        server.stop().assert_success();
    }
}
