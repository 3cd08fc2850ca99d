//! The operator's view of `proxy`: one JSON log line per transaction whose ids match the
//! message's `Received:` field and the upstream's own reply (its queue id), honest refusal
//! counters and `/readyz` when no upstream is reachable, and a log that nobody reads never
//! delays mail. Real peers: an aiosmtpd recording upstream, `ringrelay sink` as an upstream
//! that comes up late; raw SMTP clients.

mod common;
mod relay_common;

use common::*;
use relay_common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The JSON lines of `target` in `stderr`.
fn lines_of(stderr: &str, target: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["target"] == target)
        .collect()
}

/// `id X` of a `Received:` field.
fn received_id(content: &[u8]) -> String {
    let text = String::from_utf8_lossy(content);
    let unfolded = text.replace("\r\n\t", " ");
    let received = unfolded
        .lines()
        .find(|l| l.starts_with("Received:"))
        .expect("a Received: field");
    let after = received.split(" id ").nth(1).expect("an id in Received:");
    after
        .split(|c: char| c == ';' || c.is_whitespace())
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_json_line_per_transaction_names_the_ids() {
    for io in IO_MODES {
        let rec = Recorder::start(&[]);
        let upstream = format!("127.0.0.1:{}", rec.port);
        let server = Server::mode(
            "proxy",
            io,
            &[
                "--upstream",
                &upstream,
                "--relay-domains",
                "example.com",
                "--log-format",
                "json",
                "--shards",
                "1",
            ],
        );
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        // Delivered, with one recipient refused by us.
        c.ok("MAIL FROM:<a@example.com>");
        c.ok("RCPT TO:<b@example.com>");
        let (code, _) = c.cmd("RCPT TO:<c@other.org>");
        assert_eq!(code, 554);
        let (code, reply) = c.data(&tagged("logged"));
        assert_eq!(code, 250, "{io}: {reply}");
        // Every recipient refused, then RSET: abandoned.
        c.ok("MAIL FROM:<a@example.com>");
        let (code, _) = c.cmd("RCPT TO:<x@other.org>");
        assert_eq!(code, 554);
        c.ok("RSET");
        c.quit();
        let stopped = server.stop();
        stopped.assert_success();
        let stored = rec.finish();
        assert_eq!(stored.len(), 1, "{io}");
        let lines = lines_of(&stopped.stderr, "ringrelay::transaction");
        assert_eq!(lines.len(), 2, "{io}: {}", stopped.stderr);
        let (one, two) = (&lines[0], &lines[1]);
        assert_eq!(one["outcome"], "delivered", "{one}");
        assert_eq!(one["id"], received_id(&stored[0].content), "{one}");
        assert_eq!(one["from"], "a@example.com");
        assert_eq!(one["rcpts"], "b@example.com:250,c@other.org:554");
        assert_eq!(one["helo"], "client.example");
        assert_eq!(one["upstream"], upstream.as_str());
        let upstream_reply = one["upstream_reply"].as_str().unwrap();
        assert!(upstream_reply.contains("recorded as 1"), "{one}");
        assert!(one["reply"].as_str().unwrap().starts_with("250 "), "{one}");
        assert!(one["size"].as_u64().unwrap() > 0, "{one}");
        assert_eq!(one["mail"], 250);
        assert!(one["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert_eq!(one["session"], two["session"], "one connection");
        assert_ne!(one["id"], two["id"]);
        assert_eq!(two["outcome"], "abandoned", "{two}");
        assert_eq!(two["rcpts"], "x@other.org:554");
        assert_eq!(two["reply"], "-");
    }
}

/// An upstream that is down: MAIL gets 451 with an incident id, the transaction line and
/// the upstream warning say so, the refusal counters move although no message reached its
/// end of data, `/readyz` turns 503 with the reason, and comes back by itself (the relay
/// probes) once the upstream listens, without any client traffic.
#[test]
fn an_unreachable_upstream_is_logged_counted_and_not_ready() {
    let port = free_port();
    let upstream = format!("127.0.0.1:{port}");
    let server = Server::mode(
        "proxy",
        "uring",
        &[
            "--upstream",
            &upstream,
            "--upstream-unready-after",
            "1",
            "--log-format",
            "json",
            "--shards",
            "1",
        ],
    );
    let admin = metrics_addr(&server);
    assert_eq!(http_get(admin, "/readyz").0, 200);
    let mut c = Client::connect(server.port());
    c.ehlo("client.example");
    let (code, reply) = c.cmd("MAIL FROM:<a@example.com>");
    assert_eq!(code, 451, "{reply}");
    let incident = reply
        .split("incident ")
        .nth(1)
        .unwrap()
        .trim_end_matches(')');
    c.quit();
    std::thread::sleep(Duration::from_millis(1300));
    let (status, body) = http_get(admin, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no upstream reachable"), "{body}");
    assert!(body.contains(&upstream), "{body}");
    let (_, metrics) = http_get(admin, "/metrics");
    assert_eq!(
        sample(
            &metrics,
            "ringrelay_refusals_total{stage=\"mail\",class=\"4xx\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&metrics, "ringrelay_messages_total{result=\"tempfail\"}"),
        0.0
    );
    // The upstream comes up: readiness returns without a client.
    let up = Server::start(&["sink", "--listen", &upstream, "--metrics-listen", "none"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = http_get(admin, "/readyz");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still {status}: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let stopped = server.stop();
    stopped.assert_success();
    up.stop().assert_success();
    let tx = lines_of(&stopped.stderr, "ringrelay::transaction");
    assert_eq!(tx.len(), 1, "{}", stopped.stderr);
    assert_eq!(tx[0]["outcome"], "deferred", "{}", tx[0]);
    assert_eq!(tx[0]["mail"], 451);
    assert!(tx[0]["reply"].as_str().unwrap().contains(incident));
    let warnings = lines_of(&stopped.stderr, "ringrelay::upstream");
    assert!(
        warnings.iter().any(|w| w["upstream"] == upstream.as_str()
            && w["message"].as_str().unwrap().contains("cannot connect")),
        "{}",
        stopped.stderr
    );
    assert!(
        warnings.iter().any(|w| w["incident"] == incident),
        "{}",
        stopped.stderr
    );
}

/// stderr is a pipe nobody reads and the log queue holds 8 lines: debug logging of every
/// connection fills both at once, yet every message is relayed, and the dropped lines are
/// counted.
#[test]
fn a_log_nobody_reads_never_delays_mail() {
    let _heavy = heavy();
    let rec = Recorder::start(&[]);
    let upstream = format!("127.0.0.1:{}", rec.port);
    let server = Server::mode(
        "proxy",
        "uring",
        &[
            "--upstream",
            &upstream,
            "--log-level",
            "debug",
            "--log-queue",
            "8",
            "--shards",
            "1",
        ],
    );
    let admin = metrics_addr(&server);
    // From now on nobody reads the server's stderr.
    server.stop_reading_stderr();
    let t0 = Instant::now();
    for i in 0..150 {
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        let (code, reply) = c.transaction(
            "a@example.com",
            &["b@example.com"],
            &tagged(&format!("q{i}")),
        );
        assert_eq!(code, 250, "message {i}: {reply}");
        c.quit();
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "mail stalled behind the log"
        );
    }
    let (_, metrics) = http_get(admin, "/metrics");
    let dropped = sample(&metrics, "ringrelay_log_lines_dropped_total");
    assert!(dropped > 0.0, "nothing dropped:\n{metrics}");
    server.stop_with(libc::SIGKILL, Duration::from_secs(10));
    assert_eq!(rec.finish().len(), 150);
}

/// `sink --log-transactions` (and `debug`): the same line per transaction, injected fault
/// replies included (the log layer sits outside the fault layer).
#[test]
fn sink_and_debug_log_transactions_when_asked() {
    for mode in ["sink", "debug"] {
        let server = Server::mode(
            mode,
            "epoll",
            &[
                "--log-transactions",
                "--log-format",
                "json",
                "--address-triggers",
                "--shards",
                "1",
            ],
        );
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("sunk"));
        assert_eq!(code, 250, "{mode}: {line}");
        c.ok("MAIL FROM:<a@example.com>");
        let (code, _) = c.cmd("RCPT TO:<x.tempfail@example.com>");
        assert_eq!(code, 451);
        c.ok("RSET");
        c.quit();
        let stopped = server.stop();
        stopped.assert_success();
        let lines = lines_of(&stopped.stderr, "ringrelay::transaction");
        assert_eq!(lines.len(), 2, "{mode}: {}", stopped.stderr);
        assert_eq!(lines[0]["outcome"], "delivered", "{mode}: {}", lines[0]);
        assert_eq!(lines[0]["rcpts"], "b@example.com:250");
        assert!(lines[0]["size"].as_u64().unwrap() > 0);
        assert_eq!(lines[1]["outcome"], "abandoned", "{mode}: {}", lines[1]);
        assert_eq!(lines[1]["rcpts"], "x.tempfail@example.com:451");
        assert_ne!(lines[0]["id"], lines[1]["id"]);
    }
}
