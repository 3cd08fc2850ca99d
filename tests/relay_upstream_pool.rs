//! `ringrelay proxy`'s side toward its upstreams: extensions and parameters that follow the
//! upstream, STARTTLS and AUTH upstream, failover, the per-shard pool (bounded, reused,
//! retired, swept, its metrics), XFORWARD and XCLIENT. Split from tests/relay_proxy.rs.

mod common;
mod relay_common;

use common::*;
use relay_common::*;
use std::time::Duration;

/// MAIL parameters go upstream only for extensions the upstream offered (RFC 5321 §4.1.1.11,
/// RFC 1870, RFC 6152): Postfix in front always sends SIZE=, and an upstream that does not
/// offer SIZE (or speaks only HELO) must not see it, or every message bounces. SMTPUTF8,
/// which cannot be dropped, is refused by us (553 5.6.7) when the upstream lacks it.
#[test]
fn mail_parameters_follow_the_upstream_extensions() {
    for mode in ["no-ext", "helo-only"] {
        let (up, server, mut c) = scripted_relay("epoll", mode, &["--smtputf8"], "client.example");
        c.ok("MAIL FROM:<a@example.com> SIZE=1234 BODY=8BITMIME");
        c.ok("RCPT TO:<b@example.com>");
        let (code, line) = c.data(&tagged(mode));
        assert_eq!(code, 250, "{mode}: {line}");
        let (code, line) = c.cmd("MAIL FROM:<a@example.com> SMTPUTF8");
        assert_eq!(code, 553, "{mode}: {line}");
        assert!(line.starts_with("553 5.6.7 "), "{mode}: {line}");
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("plain"));
        assert_eq!(code, 250, "{mode}: {line}");
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, [mode, "plain"], "{}", seen.stdout);
        assert_eq!(seen.connects, 1, "{}", seen.stdout);
        let mails: Vec<&String> = seen
            .commands
            .iter()
            .filter(|c| c.starts_with("MAIL"))
            .collect();
        assert_eq!(
            mails,
            ["MAIL FROM:<a@example.com>", "MAIL FROM:<a@example.com>"]
        );
    }
    // An upstream that offers them gets them.
    let (up, server, mut c) = scripted_relay("uring", "ok", &["--smtputf8"], "client.example");
    c.ok("MAIL FROM:<a@example.com> SIZE=1234 BODY=8BITMIME SMTPUTF8");
    c.ok("RCPT TO:<b@example.com>");
    let (code, line) = c.data(&tagged("ext"));
    assert_eq!(code, 250, "{line}");
    c.quit();
    server.stop().assert_success();
    let seen = up.finish();
    assert!(
        seen.commands
            .contains(&"MAIL FROM:<a@example.com> SIZE=1234 BODY=8BITMIME SMTPUTF8".to_string()),
        "{:?}",
        seen.commands
    );
}

/// 8BITMIME and SMTPUTF8 are offered to clients only when the upstream offers them: before
/// any upstream connection as configured (a mismatch is then refused per transaction, above),
/// and once the relay has met its upstream, as that upstream does. BODY= is then a 555 from us.
#[test]
fn client_extensions_follow_the_upstream() {
    for (mode, offered) in [("no-ext", false), ("ok", true)] {
        let up = Scripted::start(mode);
        let server = proxy("epoll", &[up.port], &["--smtputf8"]);
        let mut c = Client::connect(server.port());
        let before = c.ehlo_keywords("client.example");
        for kw in ["8BITMIME", "SMTPUTF8", "PIPELINING"] {
            assert!(before.contains(&kw.to_string()), "{mode}: {before:?}");
        }
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("first"));
        assert_eq!(code, 250, "{mode}: {line}");
        c.quit();
        let mut c = Client::connect(server.port());
        let after = c.ehlo_keywords("client.example");
        for kw in ["8BITMIME", "SMTPUTF8"] {
            assert_eq!(
                after.contains(&kw.to_string()),
                offered,
                "{mode}: {after:?}"
            );
        }
        assert!(
            after.contains(&"PIPELINING".to_string()),
            "{mode}: {after:?}"
        );
        let (code, line) = c.cmd("MAIL FROM:<a@example.com> BODY=8BITMIME");
        if offered {
            assert_eq!(code, 250, "{mode}: {line}");
            c.ok("RCPT TO:<b@example.com>");
            assert_eq!(c.data(&tagged("second")).0, 250, "{mode}");
        } else {
            assert_eq!(code, 555, "{mode}: {line}");
            let (code, line) =
                c.transaction("a@example.com", &["b@example.com"], &tagged("second"));
            assert_eq!(code, 250, "{mode}: {line}");
        }
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(
            seen.delivered,
            ["first", "second"],
            "{mode}: {}",
            seen.stdout
        );
    }
}

/// TLS and AUTH toward the upstream (tests/peers/aiosmtpd_server.py: STARTTLS, AUTH only
/// after it, and an implicit-TLS listener): the message arrives over TLS; a wrong password, an
/// unverifiable certificate or a missing STARTTLS with `required` are 4xx at MAIL, never a
/// plaintext fallback; `opportunistic` without STARTTLS goes plain.
#[test]
fn upstream_tls_and_auth() {
    let dir = TempDir::new("relay-tls");
    let (cert, key) = test_certificate(&dir);
    let good = dir.write("pw", b"secret\n");
    let bad = dir.write("badpw", b"wrong\n");
    let (port, tls_port) = (free_port(), free_port());
    let mut up = Peer::python(
        "aiosmtpd_server.py",
        &[
            port.to_string(),
            cert.display().to_string(),
            key.display().to_string(),
            tls_port.to_string(),
        ],
    );
    up.wait_for_line("ready", PEER_START);
    let ca = cert.display().to_string();
    let send = |server: &Server, token: &str| -> Answer {
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        let (code, line) = c.cmd("MAIL FROM:<a@example.com>");
        if code != 250 {
            c.quit();
            return (code, line);
        }
        c.ok("RCPT TO:<b@example.com>");
        let r = c.data(&tagged(token));
        c.quit();
        r
    };
    let cases: Vec<(Vec<String>, u16, &str)> = vec![
        (
            vec![
                format!("127.0.0.1:{port}"),
                "--upstream-tls".into(),
                "required".into(),
                "--upstream-tls-ca".into(),
                ca.clone(),
                "--upstream-auth-user".into(),
                "user".into(),
                "--upstream-auth-password-file".into(),
                good.display().to_string(),
            ],
            250,
            "starttls-auth",
        ),
        (
            vec![
                format!("127.0.0.1:{tls_port}"),
                "--upstream-tls".into(),
                "implicit".into(),
                "--upstream-tls-ca".into(),
                ca.clone(),
            ],
            250,
            "implicit",
        ),
        (
            vec![
                format!("127.0.0.1:{port}"),
                "--upstream-tls".into(),
                "required".into(),
                "--upstream-tls-ca".into(),
                ca.clone(),
                "--upstream-auth-user".into(),
                "user".into(),
                "--upstream-auth-password-file".into(),
                bad.display().to_string(),
            ],
            451,
            "bad-password",
        ),
        // System roots only: the self-signed certificate does not verify.
        (
            vec![
                format!("127.0.0.1:{port}"),
                "--upstream-tls".into(),
                "required".into(),
            ],
            451,
            "unverified",
        ),
    ];
    for (args, want, token) in &cases {
        let mut full = vec!["--upstream".to_string()];
        full.extend(args.iter().cloned());
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let server = proxy("epoll", &[], &full);
        let (code, line) = send(&server, token);
        assert_eq!(code, *want, "{token}: {line}");
        server.stop().assert_success();
    }
    let out = up.finish(Duration::from_secs(60));
    out.assert_success("aiosmtpd_server.py");
    let messages: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("MESSAGE "))
        .collect();
    assert_eq!(messages.len(), 2, "{}", out.stdout);
    assert!(messages.iter().all(|l| l.ends_with(" tls")), "{messages:?}");

    // `required` against an upstream without STARTTLS: 4xx; `opportunistic`: plain delivery.
    let plain = Scripted::start("ok");
    let upstream = format!("127.0.0.1:{}", plain.port);
    for (mode, want) in [("required", 451), ("opportunistic", 250)] {
        let server = proxy(
            "uring",
            &[],
            &["--upstream", &upstream, "--upstream-tls", mode],
        );
        let (code, line) = send(&server, mode);
        assert_eq!(code, want, "{mode}: {line}");
        server.stop().assert_success();
    }
    let seen = plain.finish();
    assert_eq!(seen.delivered, ["opportunistic"]);
}

/// First upstream down, second up: delivered through the second.
#[test]
fn failover_to_the_second_upstream() {
    for io in IO_MODES {
        let dead = free_port();
        let up = Scripted::start("ok");
        let server = proxy(io, &[dead, up.port], &[]);
        let mut c = Client::connect(server.port());
        c.ehlo("client.example");
        for i in 0..3 {
            let (code, line) = c.transaction(
                "a@example.com",
                &["b@example.com"],
                &tagged(&format!("f{i}")),
            );
            assert_eq!(code, 250, "{io}: {line}");
        }
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["f0", "f1", "f2"], "{io}");
        assert_eq!(seen.connects, 1, "{io}: the pooled connection is reused");
    }
}

/// Pool bounds: with --pool-max 1, a second concurrent transaction gets 451 4.4.1 (pool
/// exhausted) instead of waiting or opening more; once the first is done the second goes
/// through on the same upstream connection. Five sequential client sessions use one
/// upstream connection.
#[test]
fn pool_is_bounded_and_reused() {
    let up = Scripted::start("ok");
    let server = proxy("uring", &[up.port], &["--pool-max", "1"]);
    let mut a = Client::connect(server.port());
    a.ehlo("a.example");
    a.ok("MAIL FROM:<a@example.com>");
    let mut b = Client::connect(server.port());
    b.ehlo("b.example");
    let (code, line) = b.cmd("MAIL FROM:<b@example.com>");
    assert_eq!(code, 451, "{line}");
    assert!(line.contains("exhausted"), "{line}");
    a.ok("RCPT TO:<x@example.com>");
    let (code, line) = a.data(&tagged("p-a"));
    assert_eq!(code, 250, "{line}");
    let (code, line) = b.transaction("b@example.com", &["y@example.com"], &tagged("p-b"));
    assert_eq!(code, 250, "{line}");
    a.quit();
    b.quit();
    for i in 0..5 {
        let mut c = Client::connect(server.port());
        c.ehlo("c.example");
        let (code, line) = c.transaction(
            "c@example.com",
            &["z@example.com"],
            &tagged(&format!("s{i}")),
        );
        assert_eq!(code, 250, "{line}");
        c.quit();
    }
    server.stop().assert_success();
    let seen = up.finish();
    assert_eq!(seen.delivered.len(), 7);
    assert_eq!(seen.connects, 1, "{}", seen.stdout);
}

/// Pool limits: --pool-max-messages retires a connection after that many messages, and
/// --pool-idle-ttl replaces one that sat idle longer (closing the old one).
#[test]
fn pool_retires_connections() {
    let mut up = Scripted::start("ok");
    let server = proxy(
        "epoll",
        &[up.port],
        &["--pool-max-messages", "3", "--pool-idle-ttl", "1"],
    );
    let mut c = Client::connect(server.port());
    c.ehlo("client.example");
    for i in 0..7 {
        let (code, line) = c.transaction(
            "a@example.com",
            &["b@example.com"],
            &tagged(&format!("r{i}")),
        );
        assert_eq!(code, 250, "{line}");
    }
    // 3 + 3 + 1: the third connection is idle now; let it outlive its TTL.
    up.wait_for("CLOSED 2");
    std::thread::sleep(Duration::from_millis(1500));
    let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("r7"));
    assert_eq!(code, 250, "{line}");
    up.wait_for("CLOSED 3");
    c.quit();
    server.stop().assert_success();
    let seen = up.finish();
    assert_eq!(seen.delivered.len(), 8);
    assert_eq!(seen.connects, 4, "{}", seen.stdout);
    // Retired connections are closed politely (RFC 5321 §4.1.1.10): three retirements, and
    // the fourth connection gets its QUIT when the shard closes (or from the idle sweep).
    assert_eq!(
        seen.commands.iter().filter(|c| *c == "QUIT").count(),
        4,
        "{}",
        seen.stdout
    );
}

/// `--upstream-xforward`: an upstream that offers Postfix's XFORWARD learns the real client
/// (address, HELO name, protocol) right before each MAIL; one that does not offer it gets none.
#[test]
fn xforward_passes_the_client_identity() {
    for (mode, offered) in [("xforward", true), ("ok", false)] {
        let (up, server, mut c) =
            scripted_relay("epoll", mode, &["--upstream-xforward"], "client.example");
        for token in ["one", "two"] {
            let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged(token));
            assert_eq!(code, 250, "{mode}: {line}");
        }
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["one", "two"], "{}", seen.stdout);
        let xf = "XFORWARD ADDR=127.0.0.1 PROTO=ESMTP HELO=client.example NAME=[UNAVAILABLE]";
        let before_mail: Vec<&String> = seen
            .commands
            .windows(2)
            .filter(|w| w[1].starts_with("MAIL"))
            .map(|w| &w[0])
            .collect();
        assert_eq!(before_mail.len(), 2, "{}", seen.stdout);
        for cmd in before_mail {
            assert_eq!(cmd == xf, offered, "{mode}: {}", seen.stdout);
        }
        assert_eq!(
            seen.commands.iter().any(|c| c.starts_with("XFORWARD")),
            offered,
            "{}",
            seen.stdout
        );
    }
}

/// `--upstream-xclient`: an upstream that offers Postfix's XCLIENT gets the client's identity,
/// greets again (220), and is greeted again (EHLO) before MAIL, for every transaction.
#[test]
fn xclient_passes_the_client_identity_and_regreets() {
    let up = Scripted::start("xclient");
    let server = proxy(
        "uring",
        &[up.port],
        &["--upstream-xclient", "--upstream-xforward"],
    );
    let mut c = Client::connect(server.port());
    c.ehlo("client.example");
    for token in ["one", "two"] {
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged(token));
        assert_eq!(code, 250, "{line}");
    }
    c.quit();
    server.stop().assert_success();
    let seen = up.finish();
    assert_eq!(seen.delivered, ["one", "two"], "{}", seen.stdout);
    let xc = "XCLIENT ADDR=127.0.0.1 PROTO=ESMTP HELO=client.example NAME=[UNAVAILABLE]";
    let mut sequences = 0;
    for w in seen.commands.windows(3) {
        if w[2].starts_with("MAIL") {
            assert_eq!(w[0], xc, "{}", seen.stdout);
            assert!(w[1].starts_with("EHLO "), "{}", seen.stdout);
            sequences += 1;
        }
    }
    assert_eq!(sequences, 2, "{}", seen.stdout);
    assert!(
        !seen.commands.iter().any(|c| c.starts_with("XFORWARD")),
        "XCLIENT is preferred when both are enabled: {}",
        seen.stdout
    );
}

/// The relay's upstream pool shows in /metrics: one connection opened and then reused for
/// every later transaction of the same shard, and the text still passes `promtool`.
#[test]
fn upstream_pool_metrics() {
    let up = Scripted::start("ok");
    let upstream = format!("127.0.0.1:{}", up.port);
    let server = Server::mode(
        "proxy",
        "uring",
        &[
            "--shards",
            "1",
            "--upstream",
            &upstream,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let mut c = Client::connect(server.port());
    c.ehlo("client.example");
    for token in ["one", "two", "three"] {
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged(token));
        assert_eq!(code, 250, "{line}");
    }
    let admin = metrics_addr(&server);
    let (_, body) = http_get(admin, "/metrics");
    let (_, stats) = http_get(admin, "/stats.json");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    for (key, count) in [("upstream_connect", 1), ("upstream_end_of_data", 3)] {
        assert_eq!(stats["latency_us"][key]["count"], count, "{key}: {stats}");
    }
    let value = |series: &str| sample(&body, series.trim_end());
    assert_eq!(value("ringrelay_upstream_checkouts_total "), 3.0, "{body}");
    let labelled = format!("{{upstream=\"{upstream}\"}}");
    assert_eq!(
        value(&format!("ringrelay_upstream_connects_total{labelled}")),
        1.0,
        "{body}"
    );
    assert_eq!(value("ringrelay_upstream_reuses_total "), 2.0, "{body}");
    assert_eq!(
        value(&format!(
            "ringrelay_upstream_connect_failures_total{labelled}"
        )),
        0.0
    );
    assert_eq!(value("ringrelay_upstream_connections_open "), 1.0, "{body}");
    // Upstream latencies: one connection opened, three verdicts on an end of data, each part
    // of its transaction as the client saw it.
    assert_eq!(
        value("ringrelay_upstream_connect_duration_seconds_count "),
        1.0
    );
    assert_eq!(
        value("ringrelay_upstream_end_of_data_duration_seconds_count "),
        3.0
    );
    let end_of_data = value("ringrelay_upstream_end_of_data_duration_seconds_sum ");
    assert!(end_of_data > 0.0, "{body}");
    assert!(
        end_of_data <= value("ringrelay_transaction_duration_seconds_sum "),
        "{body}"
    );
    assert!(value("ringrelay_upstream_connect_duration_seconds_sum ") > 0.0);
    promtool_check(&body);
    c.quit();
    server.stop().assert_success();
    up.finish();
}

/// Idle pooled connections do not wait for the next client: past `--pool-idle-ttl` the shard's
/// sweep closes them with QUIT (RFC 5321 §4.1.1.10), and at shutdown every idle one gets QUIT.
#[test]
fn idle_connections_get_quit_by_the_sweep_and_at_shutdown() {
    // The sweep: nothing happens on the client side after the message.
    let mut up = Scripted::start("ok");
    let server = proxy("uring", &[up.port], &["--pool-idle-ttl", "1"]);
    let mut c = Client::connect(server.port());
    c.ehlo("client.example");
    let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("swept"));
    assert_eq!(code, 250, "{line}");
    up.wait_for("CMD 1 QUIT");
    up.wait_for("CLOSED 1");
    c.quit();
    server.stop().assert_success();
    let seen = up.finish();
    assert_eq!(seen.delivered, ["swept"]);
    // Shutdown: a long TTL, so only the shard's close sends QUIT.
    let (up, server, mut c) = scripted_relay("epoll", "ok", &[], "client.example");
    let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("kept"));
    assert_eq!(code, 250, "{line}");
    c.quit();
    server.stop().assert_success();
    let seen = up.finish();
    assert_eq!(seen.delivered, ["kept"]);
    assert_eq!(
        seen.commands.last().map(String::as_str),
        Some("QUIT"),
        "{}",
        seen.stdout
    );
}
