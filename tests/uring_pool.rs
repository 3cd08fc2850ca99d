//! The io_uring engine inside the real binary, with its DATA pool shrunk to a handful of
//! buffers so that every receive path meets an empty pool: 1 MiB and 32 MiB messages through
//! `sink`, `debug` and `proxy` (byte-exact at a recording aiosmtpd), 2,000 connections sending
//! their bodies at once, timeouts and a drain while receives are parked or in flight, the
//! pool's metrics, and kernels without DEFER_TASKRUN or incremental buffer consumption
//! (simulated by flags).
//!
//! Back-pressure, never loss: a connection that finds the pool empty waits (its bytes stay in
//! the socket), and every octet a client sent reaches the handler once, in order.

mod common;
mod relay_common;

use common::*;
use relay_common::*;
use std::time::{Duration, Instant};

/// Four 4 KiB buffers per shard.
const TINY_POOL: [&str; 4] = ["--uring-buffers", "4", "--uring-buffer-size", "4096"];

/// A message of exactly `len` octets: a header, then 78-octet CRLF lines of varied bytes,
/// every seventh line starting with a dot (stuffed on the wire).
fn big_message(len: usize, tag: &str) -> Vec<u8> {
    let mut m = format!("Subject: {tag}\r\nX-Test-Id: {tag}\r\n\r\n").into_bytes();
    let mut n = 0u64;
    while m.len() + 78 <= len {
        let mut line: Vec<u8> = (0..76)
            .map(|k| b"abcdefghijklmnopqrstuvwxyz0123456789-_ "[((n * 31 + k) % 39) as usize])
            .collect();
        if n % 7 == 0 {
            line[0] = b'.';
        }
        m.extend_from_slice(&line);
        m.extend_from_slice(b"\r\n");
        n += 1;
    }
    while m.len() + 2 < len {
        m.push(b'z');
    }
    m.extend_from_slice(b"\r\n");
    assert_eq!(m.len(), len);
    m
}

/// Sends `files` with Python's smtplib (one connection, one sendmail each).
fn smtplib_send(port: u16, files: &[std::path::PathBuf]) {
    let mut args = port_args(
        port,
        &[
            "--timeout",
            "120",
            "sendmail",
            "--from",
            "a@example.com",
            "--to",
            "b@example.com",
        ],
    );
    args.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
    run_python("smtplib_client.py", &args, Duration::from_secs(240));
}

#[test]
fn big_messages_through_sink_and_debug_with_a_pool_of_four() {
    let _heavy = heavy();
    let dir = TempDir::new("uring-big");
    let one = big_message(1 << 20, "one-mib");
    let thirty_two = big_message(32 << 20, "thirty-two-mib");
    let files = [dir.write("1m.eml", &one), dir.write("32m.eml", &thirty_two)];
    let sink = Server::sink("uring", &TINY_POOL);
    smtplib_send(sink.port(), &files);
    let sum = sink.stop().sink_summary();
    assert_eq!(sum.messages, 2, "{sum:?}");
    assert_eq!(
        sum.bytes,
        (one.len() + thirty_two.len()) as u64,
        "every content octet counted once: {sum:?}"
    );
    // debug prints the message: the 1 MiB one byte for byte, here with one buffer per
    // receive (as on a kernel without incremental consumption).
    let mut whole = TINY_POOL.to_vec();
    whole.push("--uring-whole-buffers");
    let debug = Server::debug("uring", &whole);
    smtplib_send(debug.port(), &files[..1]);
    let out = debug.stop();
    out.assert_success();
    assert_bytes_eq(
        out.stdout.as_slice(),
        &debug_render(&one, "127.0.0.1", &["SIZE=1048576".to_string()]),
        "debug output of the 1 MiB message",
    );
}

#[test]
fn big_messages_relayed_byte_exact_with_a_pool_of_four() {
    let _heavy = heavy();
    let dir = TempDir::new("uring-relay-big");
    let one = big_message(1 << 20, "relayed-one-mib");
    let thirty_two = big_message(32 << 20, "relayed-thirty-two-mib");
    let files = [dir.write("1m.eml", &one), dir.write("32m.eml", &thirty_two)];
    let rec = Recorder::start(&[]);
    let server = proxy("uring", &[rec.port], &TINY_POOL);
    smtplib_send(server.port(), &files);
    server.stop().assert_success();
    let stored = rec.finish();
    assert_eq!(stored.len(), 2, "one delivery per 250");
    for (s, sent) in stored.iter().zip([&one, &thirty_two]) {
        assert!(
            s.content.starts_with(b"Received: from ") && s.content.ends_with(sent),
            "{} octets delivered for {} sent: not our Received: field and the message",
            s.content.len(),
            sent.len()
        );
        let prefix = &s.content[..s.content.len() - sent.len()];
        assert!(prefix.len() < 300, "only the Received: field is added");
    }
}

/// The bodies `pool_pressure.py` sends: connection i's body (see `body()` there).
fn pressure_body(i: usize, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    for j in 0..(size / 78).max(1) {
        let mut line = format!("conn {i} line {j} ").into_bytes();
        line.resize(76, b'x');
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[test]
fn two_thousand_connections_send_at_once_into_an_exhausted_pool() {
    let _heavy = heavy();
    const COUNT: usize = 2000;
    const SIZE: usize = 8192;
    let mut args = vec!["--metrics-listen", "127.0.0.1:0"];
    args.extend_from_slice(&["--uring-buffers", "8", "--uring-buffer-size", "1024"]);
    let server = Server::debug("uring", &args);
    let report = run_python(
        "pool_pressure.py",
        &port_args(
            server.port(),
            &[
                "--count",
                &COUNT.to_string(),
                "--size",
                &SIZE.to_string(),
                "--deadline",
                "150",
            ],
        ),
        Duration::from_secs(180),
    );
    assert!(report.contains(&format!("delivered={COUNT}")), "{report}");
    let metrics = http_get(metrics_addr(&server), "/metrics").1;
    promtool_check(&metrics);
    assert_eq!(
        sample(&metrics, "ringrelay_buffer_pool_buffers{shard=\"0\"}"),
        8.0
    );
    let exhausted = sample(
        &metrics,
        "ringrelay_buffer_pool_exhausted_total{shard=\"0\"}",
    );
    assert!(exhausted > 0.0, "the pool never ran dry: {exhausted}");
    let out = server.stop();
    out.assert_success();
    // Every connection's body, whole and in order, exactly once.
    let text = out.stdout_str();
    let blocks: Vec<&str> = text
        .split("---------- MESSAGE FOLLOWS ----------\n")
        .skip(1)
        .collect();
    assert_eq!(blocks.len(), COUNT);
    let mut seen = vec![false; COUNT];
    for b in blocks {
        let i: usize = b
            .lines()
            .find_map(|l| l.strip_prefix("X-Conn: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("an X-Conn header");
        assert!(!seen[i], "conn {i} printed twice");
        seen[i] = true;
        // debug prints lines with LF endings.
        let want = String::from_utf8(pressure_body(i, SIZE))
            .unwrap()
            .replace("\r\n", "\n");
        let body = b.split_once("\n\n").map(|(_, body)| body).unwrap_or("");
        let body = body
            .strip_suffix("------------ END MESSAGE ------------\n")
            .unwrap_or(body);
        assert!(
            body == want,
            "conn {i}: body altered ({} octets)",
            body.len()
        );
    }
}

/// Connections stalled mid-DATA with the pool exhausted: the idle timeout still ends each with
/// 421, and a drain still ends the process within its timeout.
#[test]
fn timeouts_and_drain_with_receives_parked() {
    let _heavy = heavy();
    let mut args = vec!["--timeout", "2", "--data-timeout", "2"];
    args.extend_from_slice(&["--uring-buffers", "2", "--uring-buffer-size", "512"]);
    let server = Server::sink("uring", &args);
    let report = run_python(
        "pool_pressure.py",
        &port_args(
            server.port(),
            &["--count", "200", "--size", "65536", "--stall-after", "8192"],
        ),
        Duration::from_secs(60),
    );
    assert!(report.contains("stalled=200 timed_out=200"), "{report}");
    server.stop().assert_success();

    // The same, ended by SIGTERM instead: a 30 s data timeout, a 2 s drain timeout.
    let mut args = vec!["--drain-timeout", "2"];
    args.extend_from_slice(&["--uring-buffers", "2", "--uring-buffer-size", "512"]);
    let server = Server::sink("uring", &args);
    let mut peer = Peer::python(
        "pool_pressure.py",
        &port_args(
            server.port(),
            &["--count", "200", "--size", "65536", "--stall-after", "8192"],
        ),
    );
    peer.wait_for_line("stalled", Duration::from_secs(30));
    let asked = Instant::now();
    let stopped = server.stop_with(libc::SIGTERM, Duration::from_secs(10));
    assert!(
        asked.elapsed() < Duration::from_secs(6),
        "drain took {:?}",
        asked.elapsed()
    );
    stopped.assert_success();
    let out = peer.finish(Duration::from_secs(30));
    out.assert_success("pool_pressure.py");
    assert!(out.stdout.contains("closed=200"), "{}", out.stdout);
}

#[test]
fn without_defer_taskrun() {
    let server = Server::sink("uring", &["--uring-no-defer-taskrun"]);
    let line = server
        .stderr()
        .lines()
        .find(|l| l.contains("io_uring engine:"))
        .map(str::to_string)
        .expect("the engine's set-up line");
    assert!(
        !line.contains("DEFER_TASKRUN") && line.contains("SINGLE_ISSUER"),
        "{line}"
    );
    smtp_source(
        server.port(),
        "localhost",
        &["-s", "10", "-m", "2000", "-l", "2000", "-d"],
        Duration::from_secs(60),
    );
    let sum = server.stop().sink_summary();
    assert_eq!(sum.messages, 2000, "{sum:?}");
    // And the default asks for it.
    let server = Server::sink("uring", &[]);
    assert!(
        server.stderr().contains("SINGLE_ISSUER|DEFER_TASKRUN"),
        "{}",
        server.stderr()
    );
    server.stop().assert_success();
}
