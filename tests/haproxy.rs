//! Real HAProxy (Debian's) in front of two `ringrelay proxy` instances, running the shipped
//! deploy/haproxy/haproxy.cfg on loopback: PROXY v2 carries each client's address (a client
//! bound to 127.0.0.7 relays, one bound to 127.0.0.8 is refused by the relay networks, and
//! `Received:` names 127.0.0.7); HAProxy's SMTP health checks arrive as PROXY v2 LOCAL and
//! pass; and a rolling restart of one instance under `ringload --verify` loses nothing. The
//! same file also runs with both instances on Unix-domain sockets (`unix@PATH` server lines,
//! `--listen unix:PATH`).

mod common;
mod relay_common;
mod ringload_run;

use common::*;
use relay_common::*;
use ringload_run::{ringload, text};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn config() -> String {
    manifest_dir()
        .join("deploy/haproxy/haproxy.cfg")
        .to_string_lossy()
        .into_owned()
}

/// Where an instance listens: its `--listen` value and HAProxy's name for it.
struct Backend {
    listen: String,
    haproxy: String,
}

impl Backend {
    fn tcp(port: u16) -> Backend {
        Backend {
            listen: format!("127.0.0.1:{port}"),
            haproxy: format!("127.0.0.1:{port}"),
        }
    }

    fn unix(path: &std::path::Path) -> Backend {
        Backend {
            listen: format!("unix:{}", path.display()),
            haproxy: format!("unix@{}", path.display()),
        }
    }
}

fn env_args(front: u16, one: &Backend, two: &Backend, rest: &[&str]) -> Vec<String> {
    let mut a = vec![
        format!("SMTP_BIND=127.0.0.1:{front}"),
        format!("RINGRELAY_1={}", one.haproxy),
        format!("RINGRELAY_2={}", two.haproxy),
        "haproxy".into(),
        "-f".into(),
        config(),
    ];
    a.extend(rest.iter().map(|s| s.to_string()));
    a
}

/// HAProxy in the foreground, once its frontend greets through a backend.
fn haproxy(front: u16, one: &Backend, two: &Backend) -> Peer {
    let peer = Peer::spawn("env", &env_args(front, one, two, &["-db"]));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", front)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut line).is_ok()
                && line.starts_with("220")
            {
                return peer;
            }
        }
        assert!(Instant::now() < deadline, "HAProxy did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A relay instance behind the balancer.
/// 127.0.0.1 (the load generator) and 127.0.0.7 may relay; 127.0.0.8 may not.
fn instance(at: &Backend, upstream: u16) -> Server {
    let upstream = format!("127.0.0.1:{upstream}");
    Server::start(&[
        "proxy",
        "--listen",
        &at.listen,
        "--upstream",
        &upstream,
        "--proxy-protocol",
        "--relay-networks",
        "127.0.0.7/32,127.0.0.1/32",
        "--hostname",
        RELAY_HOST,
        "--metrics-listen",
        "127.0.0.1:0",
        "--shards",
        "1",
    ])
}

#[test]
fn the_shipped_config_is_valid() {
    let out = Peer::spawn(
        "env",
        &env_args(2500, &Backend::tcp(2501), &Backend::tcp(2502), &["-c"]),
    )
    .finish(Duration::from_secs(30));
    out.assert_success("haproxy -c");
}

#[test]
fn client_addresses_pass_through_haproxy() {
    client_addresses_pass_through(&Backend::tcp(free_port()), &Backend::tcp(free_port()));
}

/// The same with both instances on Unix-domain sockets: HAProxy's `unix@` server lines,
/// PROXY v2 over the socket (the client's address, not `local`), health checks as LOCAL.
#[test]
fn client_addresses_pass_through_haproxy_to_unix_sockets() {
    let dir = TempDir::new("haproxy-unix");
    client_addresses_pass_through(
        &Backend::unix(&dir.join("one.sock")),
        &Backend::unix(&dir.join("two.sock")),
    );
}

fn client_addresses_pass_through(one: &Backend, two: &Backend) {
    let _heavy = heavy();
    let rec = Recorder::start(&[]);
    let front = free_port();
    let a = instance(one, rec.port);
    let b = instance(two, rec.port);
    let mut lb = haproxy(front, one, two);
    let mut c = Client::connect_from(Some("127.0.0.7"), front);
    c.ehlo("seven.example");
    let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("via-lb"));
    assert_eq!(code, 250, "{line}");
    c.quit();
    let mut c = Client::connect_from(Some("127.0.0.8"), front);
    c.ehlo("eight.example");
    c.ok("MAIL FROM:<a@example.com>");
    let (code, line) = c.cmd("RCPT TO:<b@example.com>");
    assert_eq!(code, 554, "127.0.0.8 is outside the relay networks: {line}");
    c.quit();
    // Health checks every 2 s: let a few run, then check that both instances took them as
    // LOCAL (no header refused) and HAProxy kept them up (it logs a server going down).
    std::thread::sleep(Duration::from_secs(5));
    for s in [&a, &b] {
        let (_, m) = http_get(metrics_addr(s), "/metrics");
        assert_eq!(
            sample(
                &m,
                "ringrelay_connections_rejected_total{reason=\"proxy_header\"}"
            ),
            0.0
        );
        assert!(
            sample(&m, "ringrelay_connections_accepted_total{shard=\"0\"}") >= 2.0,
            "no health check reached {:?}{:?}",
            s.addrs,
            s.unix_paths
        );
    }
    lb.signal(libc::SIGTERM);
    let out = lb.finish(Duration::from_secs(10));
    assert!(!out.stderr.contains(" is DOWN"), "{}", out.stderr);
    a.stop().assert_success();
    b.stop().assert_success();
    let stored = rec.finish();
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0].content).replace("\r\n\t", " ");
    assert!(text.contains("([127.0.0.7])"), "{text}");
}

/// ringload through HAProxy while one instance is stopped (SIGTERM, drain) and started
/// again: every acknowledged message is delivered once, nothing else is, and clients see
/// nothing but retriable (4xx) replies or closed connections they retry.
#[test]
fn a_rolling_restart_loses_nothing() {
    let _heavy = heavy();
    let rec = Recorder::start(&[]);
    let front = free_port();
    let (one, two) = (Backend::tcp(free_port()), Backend::tcp(free_port()));
    let a = instance(&one, rec.port);
    let b = instance(&two, rec.port);
    let mut lb = haproxy(front, &one, &two);
    let target = format!("127.0.0.1:{front}");
    let dir = TempDir::new("rolling");
    let json = dir.join("r.json");
    let record = rec.dir.path().to_string_lossy().into_owned();
    let load = std::thread::spawn({
        let (target, json) = (target.clone(), json.clone());
        move || {
            ringload(&[
                "-t",
                &target,
                "--threads",
                "1",
                "-s",
                "4",
                "--rate",
                "150",
                "--duration",
                "5",
                "--size",
                "2k",
                "--verify",
                &record,
                "--json",
                json.to_str().unwrap(),
            ])
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    a.stop().assert_success();
    let a = instance(&one, rec.port);
    let o = load.join().unwrap();
    let t = text(&o);
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(j["verify"]["ok"], true, "{t}");
    assert!(j["acknowledged"].as_u64().unwrap() > 300, "{t}");
    if let Some(errors) = j["errors"].as_object() {
        for label in errors.keys() {
            let retriable =
                label.contains(" 4") || label.starts_with('4') || label.contains("closed");
            assert!(retriable, "a non-retriable error {label:?}: {t}");
        }
    }
    a.stop().assert_success();
    b.stop().assert_success();
    lb.signal(libc::SIGTERM);
    lb.finish(Duration::from_secs(10));
    rec.finish();
}
