//! `--proxy-protocol`: the PROXY header (v1 and v2) from a raw client on loopback, under
//! both drivers, through `ringrelay proxy` to an aiosmtpd recording upstream. The proxied
//! address is what the relay-network decision, `Received:`, `X-Peer:` and the per-client
//! limit see; no greeting before the header; truncated, garbage and untrusted connections
//! are closed without a word and counted; a header split over many reads works; v2 LOCAL
//! (a balancer's health check) keeps the real address. HAProxy itself is in
//! tests/haproxy.rs.

mod common;
mod relay_common;

use common::*;
use relay_common::*;
use ringrelay::proto::proxy_header::{v1_header, v2_header, V2_SIGNATURE};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn relay(io: &str, rec: &Recorder, extra: &[&str]) -> Server {
    let upstream = format!("127.0.0.1:{}", rec.port);
    let mut args = vec![
        "--upstream",
        &upstream,
        "--proxy-protocol",
        "--x-peer",
        "--hostname",
        RELAY_HOST,
        "--shards",
        "1",
    ];
    args.extend_from_slice(extra);
    Server::mode("proxy", io, &args)
}

/// Connects and sends `header` (in pieces of `step` octets, pausing between them); the
/// client then speaks SMTP on the same connection.
fn proxied(port: u16, header: &[u8], step: usize) -> Client {
    let mut w = TcpStream::connect(("127.0.0.1", port)).unwrap();
    w.set_nodelay(true).unwrap();
    for piece in header.chunks(step.max(1)) {
        w.write_all(piece).unwrap();
        if step < header.len() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let r = std::io::BufReader::new(w.try_clone().unwrap());
    let mut c = Client { w, r };
    c.expect(220);
    c
}

/// What the server sends on a connection that sent `first` (if anything), read until it
/// closes or `wait` passes; and whether it closed.
fn silence(port: u16, first: &[u8], wait: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    if !first.is_empty() {
        s.write_all(first).unwrap();
    }
    s.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + wait;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
        if Instant::now() >= deadline {
            return (got, false);
        }
    }
}

fn received_from(content: &[u8]) -> String {
    let text = String::from_utf8_lossy(content).replace("\r\n\t", " ");
    text.lines()
        .find(|l| l.starts_with("Received:"))
        .expect("Received:")
        .to_string()
}

#[test]
fn the_proxied_address_is_the_client() {
    for io in IO_MODES {
        let rec = Recorder::start(&[]);
        let server = relay(io, &rec, &[]);
        let port = server.port();
        // v1 from 127.0.0.7 (inside the relay networks), the header in 3-octet pieces.
        let h = v1_header(sa("127.0.0.7:40001"), sa("127.0.0.1:25"));
        let mut c = proxied(port, h.as_bytes(), 3);
        c.ehlo("seven.example");
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("v1"));
        assert_eq!(code, 250, "{io}: {line}");
        c.quit();
        // v2 with TLVs from 192.0.2.7 (outside): refused at RCPT like any outsider.
        let tlvs = [
            0x04, 0x00, 0x02, b'i', b'd', 0x01, 0x00, 0x04, b's', b'm', b't', b'p',
        ];
        let h = v2_header(sa("192.0.2.7:40002"), sa("127.0.0.1:25"), &tlvs);
        let mut c = proxied(port, &h, h.len());
        c.ehlo("outsider.example");
        c.ok("MAIL FROM:<a@example.com>");
        let (code, line) = c.cmd("RCPT TO:<b@example.com>");
        assert_eq!(code, 554, "{io}: {line}");
        c.quit();
        // v2 LOCAL (a health check): the real address, 127.0.0.1, relays.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        let mut c = proxied(port, &local, 1);
        c.ehlo("local.example");
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &tagged("local"));
        assert_eq!(code, 250, "{io}: {line}");
        c.quit();
        server.stop().assert_success();
        let stored = rec.finish();
        assert_eq!(stored.len(), 2, "{io}");
        let first = received_from(&stored[0].content);
        assert!(first.contains("([127.0.0.7])"), "{io}: {first}");
        let text = String::from_utf8_lossy(&stored[0].content);
        assert!(text.contains("X-Peer: 127.0.0.7"), "{io}: {text}");
        let second = received_from(&stored[1].content);
        assert!(second.contains("([127.0.0.1])"), "{io}: {second}");
    }
}

#[test]
fn no_header_no_session() {
    let rec = Recorder::start(&[]);
    let server = relay("uring", &rec, &["--proxy-timeout", "3"]);
    let port = server.port();
    let admin = metrics_addr(&server);
    // Nothing is said before the header: no banner within a second, and the connection is
    // closed once the header time is up.
    let t0 = Instant::now();
    let (got, closed) = silence(port, b"", Duration::from_secs(10));
    assert!(got.is_empty(), "a banner before the header: {got:?}");
    assert!(closed, "not closed after the header timeout");
    assert!(t0.elapsed() >= Duration::from_secs(2), "{:?}", t0.elapsed());
    // SMTP instead of a header, a truncated header, garbage after "PROXY ", an over-long v1
    // line: each closed without a word.
    let long = [b"PROXY TCP4 ".as_slice(), &[b'9'; 120]].concat();
    let bad: [&[u8]; 4] = [
        b"EHLO client.example\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        &long,
    ];
    for first in bad {
        let (got, closed) = silence(port, first, Duration::from_secs(5));
        assert!(
            got.is_empty() && closed,
            "{:?}: {got:?}",
            String::from_utf8_lossy(first)
        );
    }
    // A truncated v2 header, then the client goes away.
    let h = v2_header(sa("192.0.2.9:1"), sa("127.0.0.1:25"), &[]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&h[..10]).unwrap();
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    let reason = "ringrelay_connections_rejected_total{reason=\"proxy_header\"}";
    loop {
        let (_, m) = http_get(admin, "/metrics");
        if sample(&m, reason) >= 6.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop().assert_success();
    assert!(rec.finish().is_empty());
}

#[test]
fn untrusted_senders_are_closed_and_counted() {
    for io in IO_MODES {
        let rec = Recorder::start(&[]);
        let server = relay(io, &rec, &["--proxy-trusted", "10.0.0.0/8,192.0.2.1"]);
        let admin = metrics_addr(&server);
        let h = v1_header(sa("127.0.0.7:1"), sa("127.0.0.1:25"));
        let (got, closed) = silence(server.port(), h.as_bytes(), Duration::from_secs(5));
        assert!(got.is_empty() && closed, "{io}: {got:?}");
        let (_, m) = http_get(admin, "/metrics");
        assert_eq!(
            sample(
                &m,
                "ringrelay_connections_rejected_total{reason=\"proxy_untrusted\"}"
            ),
            1.0,
            "{io}"
        );
        server.stop().assert_success();
        rec.finish();
    }
}

/// `--max-connections-per-client` counts the proxied address, not the balancer's.
#[test]
fn per_client_limit_counts_the_proxied_address() {
    let rec = Recorder::start(&[]);
    let server = relay("epoll", &rec, &["--max-connections-per-client", "1"]);
    let port = server.port();
    let one = v1_header(sa("192.0.2.1:1"), sa("127.0.0.1:25"));
    let two = v1_header(sa("192.0.2.2:1"), sa("127.0.0.1:25"));
    let a = proxied(port, one.as_bytes(), one.len());
    let b = proxied(port, two.as_bytes(), two.len());
    // A second connection from 192.0.2.1 is over its limit.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(one.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("421 4.7.0"), "{reply:?}");
    a.quit();
    b.quit();
    server.stop().assert_success();
    rec.finish();
}
