//! The metrics endpoints of the real binary: after a known workload from Python's smtplib
//! (tests/peers/metrics_workload.py) `/metrics` and `/stats.json` show exact counts and the
//! text passes `promtool check metrics`; `/readyz` turns 503 while a drain waits for a
//! transaction held open (tests/peers/metrics_hold.py). Both I/O drivers.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const PEER_TIMEOUT: Duration = Duration::from_secs(120);
const SIZE_LIMIT: u64 = 10_000;

/// Scrapes until `done(text)` holds (sessions are recorded as their connections close, just
/// after the client has seen the reply to QUIT) or 10 s pass; returns the last scrape.
fn scrape_until(addr: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, text) = http_get(addr, "/metrics");
        assert_eq!(status, 200);
        if done(&text) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn exact_counts_after_workload(io: &str) {
    let _heavy = heavy();
    let size = SIZE_LIMIT.to_string();
    let server = Server::sink(
        io,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--size",
            &size,
            "--shards",
            "2",
        ],
    );
    let admin = metrics_addr(&server);
    assert_eq!(http_get(admin, "/healthz").0, 200);
    assert_eq!(http_get(admin, "/readyz").0, 200);

    let (messages, oversize, declared) = (500u64, 20u64, 5u64);
    let out = run_python(
        "metrics_workload.py",
        &[
            server.port().to_string(),
            "--messages".into(),
            messages.to_string(),
            "--connections".into(),
            "5".into(),
            "--oversize".into(),
            oversize.to_string(),
            "--declared".into(),
            declared.to_string(),
            "--size-limit".into(),
            size.clone(),
        ],
        PEER_TIMEOUT,
    );
    let sent: serde_json::Value = serde_json::from_str(out.trim()).expect("workload JSON");
    let conns = sent["connections"].as_u64().unwrap();
    let sent_cmd = |verb: &str| sent["commands"][verb].as_u64().unwrap_or(0);

    let text = scrape_until(admin, |t| {
        sample(t, "ringrelay_session_duration_seconds_count") as u64 == conns
    });
    let n = |series: &str| sample(&text, series) as u64;
    assert_eq!(
        n(r#"ringrelay_messages_total{result="accepted"}"#),
        messages
    );
    assert_eq!(
        n(r#"ringrelay_messages_total{result="rejected"}"#),
        oversize
    );
    assert_eq!(n(r#"ringrelay_messages_total{result="tempfail"}"#), 0);
    // Refused at end of data and refused at MAIL, both 552.
    assert_eq!(
        n(r#"ringrelay_error_replies_total{code="552"}"#),
        oversize + declared
    );
    assert_eq!(
        n(r#"ringrelay_replies_total{class="5xx"}"#),
        oversize + declared
    );
    assert_eq!(n(r#"ringrelay_replies_total{class="4xx"}"#), 0);
    assert_eq!(
        n(r#"ringrelay_replies_total{class="3xx"}"#),
        messages + oversize
    );
    for verb in [
        "EHLO", "MAIL", "RCPT", "DATA", "RSET", "QUIT", "HELO", "NOOP",
    ] {
        assert_eq!(
            n(&format!(r#"ringrelay_commands_total{{command="{verb}"}}"#)),
            sent_cmd(verb),
            "{verb}: the client's own count"
        );
    }
    assert_eq!(sent_cmd("MAIL"), messages + oversize + declared);
    assert_eq!(n(r#"ringrelay_commands_total{command="UNKNOWN"}"#), 0);
    assert_eq!(
        n(r#"ringrelay_recipients_total{result="accepted"}"#),
        messages + oversize
    );
    assert_eq!(
        n("ringrelay_message_bytes_total"),
        sent["accepted_bytes"].as_u64().unwrap()
    );
    assert_eq!(n("ringrelay_message_size_bytes_count"), messages);
    assert_eq!(
        n("ringrelay_transaction_duration_seconds_count"),
        messages + oversize
    );
    assert_eq!(
        n("ringrelay_data_phase_duration_seconds_count"),
        messages + oversize
    );
    assert_eq!(n("ringrelay_session_duration_seconds_count"), conns);
    let accepted: u64 = (0..2)
        .map(|s| {
            n(&format!(
                r#"ringrelay_connections_accepted_total{{shard="{s}"}}"#
            ))
        })
        .sum();
    assert_eq!(accepted, conns);
    assert_eq!(
        n(&format!(r#"ringrelay_io_driver_info{{driver="{io}"}}"#)),
        1
    );
    assert_eq!(n("ringrelay_draining"), 0);
    assert!(n("ringrelay_jemalloc_allocated_bytes") > 0);
    assert!(n("ringrelay_jemalloc_resident_bytes") > 0);
    promtool_check(&text);

    let (status, json) = http_get(admin, "/stats.json");
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&json).expect("stats.json");
    assert_eq!(stats["messages"]["accepted"], messages);
    assert_eq!(stats["messages"]["rejected"], oversize);
    let tx = &stats["latency_us"]["transaction"];
    assert_eq!(tx["count"], messages + oversize);
    let p = |k: &str| tx[k].as_u64().unwrap_or_else(|| panic!("{k} in {tx}"));
    assert!(p("min") <= p("p50") && p("p50") <= p("p90") && p("p90") <= p("p99"));
    assert!(p("p99") <= p("p99_9") && p("p99_9") <= p("max") && p("max") > 0);
    assert_eq!(stats["message_size_bytes"]["count"], messages);

    let stopped = server.stop();
    stopped.assert_success();
    let summary = stopped.sink_summary();
    assert_eq!(summary.messages, messages, "the sink's own count agrees");
}

#[test]
fn exact_counts_after_workload_uring() {
    exact_counts_after_workload("uring");
}

#[test]
fn exact_counts_after_workload_epoll() {
    exact_counts_after_workload("epoll");
}

#[test]
fn readyz_is_503_while_draining() {
    let server = Server::sink(
        "epoll",
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--drain-timeout",
            "30",
            "--shards",
            "2",
        ],
    );
    let admin = metrics_addr(&server);
    assert_eq!(http_get(admin, "/readyz"), (200, "ready\n".to_string()));

    let mut hold = Peer::python("metrics_hold.py", &[server.port().to_string()]);
    hold.wait_for_line("holding", Duration::from_secs(20));
    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(admin, "/readyz");
        if status == 503 {
            assert_eq!(body, "draining\n");
            break;
        }
        assert!(Instant::now() < deadline, "/readyz still {status} {body:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(http_get(admin, "/healthz").0, 200, "alive while draining");
    let text = scrape_until(admin, |_| true);
    assert_eq!(sample(&text, "ringrelay_draining"), 1.0);
    assert_eq!(
        sample(&text, r#"ringrelay_connections_active{shard="0"}"#)
            + sample(&text, r#"ringrelay_connections_active{shard="1"}"#),
        1.0
    );

    hold.send_line("finish");
    hold.wait_for_line("done 250", Duration::from_secs(20));
    let out = hold.finish(Duration::from_secs(20));
    out.assert_success("metrics_hold.py");
    let stopped = server.wait(STOP_TIMEOUT, t0);
    stopped.assert_success();
    assert_eq!(stopped.sink_summary().messages, 1);
}

#[test]
fn metrics_listen_none_serves_nothing() {
    let server = Server::sink("epoll", &["--metrics-listen", "none"]);
    assert!(
        !server.stderr().contains("metrics on"),
        "{}",
        server.stderr()
    );
    server.stop().assert_success();
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The admin listener is bounded (issue 16, item 2): a request whose headers run to 200 MiB
/// is cut off after 16 KiB (431, or the connection closed) without the server's memory
/// growing, and 1,000 idle connections cost no threads: those over the cap are closed at
/// once, the others when their headers do not arrive in time, and scrapes work again.
#[test]
fn admin_listener_is_bounded() {
    use std::io::{Read, Write};
    let server = Server::sink("epoll", &[]);
    let admin = metrics_addr(&server);
    assert_eq!(http_get(admin, "/healthz").0, 200);
    let pid = server.pid();
    let rss_before = rss_kib(pid);
    let threads_before = threads(pid);

    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Big: ")
        .unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 200 << 20 {
        if s.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut answer = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        sent < 200 << 20 || answer.starts_with("HTTP/1.1 431"),
        "200 MiB of header accepted: {answer:?}"
    );
    let grew = rss_kib(pid).saturating_sub(rss_before);
    assert!(grew < 16 * 1024, "RSS grew by {grew} KiB for one request");

    let idle: Vec<std::net::TcpStream> = (0..1000)
        .filter_map(|_| std::net::TcpStream::connect(admin).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = threads(pid);
    assert!(
        t <= threads_before + 2,
        "{t} threads with 1,000 idle admin connections"
    );
    // The header timeout (5 s) frees the slots; scrapes are served again.
    std::thread::sleep(Duration::from_secs(6));
    let (code, body) = http_get(admin, "/metrics");
    assert_eq!(code, 200);
    promtool_check(&body);
    drop(idle);
    server.stop().assert_success();
}
