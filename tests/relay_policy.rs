//! Who may relay through `ringrelay proxy`: relay networks and domains (never an open relay),
//! the loop guard, and the per-client connection limit outside the relay networks. Split from
//! tests/relay_proxy.rs.

mod common;
mod relay_common;

use common::*;
use relay_common::*;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// 4. Open-relay refusal

/// `--relay-networks 127.0.0.1/32`: a client from 127.0.0.2 gets 554 5.7.1 at RCPT and the
/// upstream is never contacted; from 127.0.0.1 the same transaction is relayed.
#[test]
fn relay_networks_refuse_outsiders() {
    for io in IO_MODES {
        let up = Scripted::start("ok");
        let server = proxy(io, &[up.port], &["--relay-networks", "127.0.0.1/32"]);
        let mut out = Client::connect_from(Some("127.0.0.2"), server.port());
        out.ehlo("outsider.example");
        out.ok("MAIL FROM:<spam@example.net>");
        let (code, line) = out.cmd("RCPT TO:<victim@example.com>");
        assert_eq!(
            (code, line.as_str()),
            (554, "554 5.7.1 Relay access denied"),
            "{io}"
        );
        let (code, _) = out.cmd("DATA");
        assert_eq!(code / 100, 5, "{io}: DATA without recipients");
        out.quit();
        let mut ins = Client::connect_from(Some("127.0.0.1"), server.port());
        ins.ehlo("insider.example");
        let (code, line) = ins.transaction("a@example.com", &["b@example.com"], &tagged("in"));
        assert_eq!(code, 250, "{io}: {line}");
        ins.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["in"], "{io}");
        assert_eq!(
            seen.connects, 1,
            "{io}: the outsider caused no upstream connection"
        );
        assert!(
            !seen.commands.iter().any(|c| c.contains("spam@")),
            "{io}: {:?}",
            seen.commands
        );
    }
}

/// `--relay-domains example.com`: other recipient domains (subdomains included) get 554 5.7.1.
#[test]
fn relay_domains_refuse_other_domains() {
    let (up, server, mut c) = scripted_relay(
        "epoll",
        "ok",
        &["--relay-domains", "example.com"],
        "client.example",
    );
    c.ok("MAIL FROM:<a@example.org>");
    for r in ["x@example.org", "y@sub.example.com", "z@example.com.evil"] {
        let (code, line) = c.cmd(&format!("RCPT TO:<{r}>"));
        assert_eq!(
            (code, line.as_str()),
            (554, "554 5.7.1 Relay access denied"),
            "{r}"
        );
    }
    c.ok("RCPT TO:<ok@EXAMPLE.com>");
    let (code, line) = c.data(&tagged("dom"));
    assert_eq!(code, 250, "{line}");
    c.quit();
    server.stop().assert_success();
    let seen = up.finish();
    assert_eq!(seen.delivered, ["dom"]);
    let rcpts: Vec<&String> = seen
        .commands
        .iter()
        .filter(|c| c.starts_with("RCPT"))
        .collect();
    assert_eq!(rcpts, ["RCPT TO:<ok@EXAMPLE.com>"]);
}

// ---------------------------------------------------------------------------------------------
// 5. Loop guard

fn with_received(hops: usize, token: &str) -> Vec<u8> {
    let mut m = Vec::new();
    for i in 0..hops {
        m.extend_from_slice(
            format!("Received: from hop{i}.example ([192.0.2.{}])\r\n\tby hop{}.example; Mon, 23 Nov 2026 09:00:00 +0000\r\n", i % 250, i + 1).as_bytes(),
        );
    }
    m.extend_from_slice(&tagged(token));
    m
}

/// 101 Received: fields → 554 5.4.6 and nothing delivered (the upstream DATA is abandoned
/// without its terminator); 100 are relayed (with ours, 101).
#[test]
fn loop_guard() {
    for io in IO_MODES {
        let (up, server, mut c) = scripted_relay(io, "ok", &[], "client.example");
        let looping = with_received(101, "loop");
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &looping);
        assert_eq!(code, 554, "{io}: {line}");
        assert!(line.starts_with("554 5.4.6 "), "{io}: {line}");
        let fine = with_received(100, "fine");
        let (code, line) = c.transaction("a@example.com", &["b@example.com"], &fine);
        assert_eq!(code, 250, "{io}: {line}");
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered, ["fine"], "{io}");
        assert_eq!(seen.aborted, 1, "{io}: {}", seen.stdout);
    }
}

/// A raw connection from `src` to the relay; the first line it reads.
fn first_line_from(src: &str, port: u16) -> (std::net::TcpStream, String) {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let a: std::net::SocketAddr = format!("{src}:0").parse().unwrap();
    sock.bind(&a.into()).unwrap();
    let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    sock.connect_timeout(&to.into(), Duration::from_secs(10))
        .unwrap();
    let s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(s.try_clone().unwrap()),
        &mut line,
    );
    (s, line)
}

/// `--max-connections-per-client` (issue 16, item 5): a client outside the relay networks
/// gets 421 4.7.0 beyond its share, counted across shards; the relay networks (the MTA in
/// front) are not limited; a closed connection frees its slot.
#[test]
fn connections_per_client_are_limited_outside_the_relay_networks() {
    for io in IO_MODES {
        let up = Scripted::start("ok");
        let server = proxy(
            io,
            &[up.port],
            &[
                "--shards",
                "2",
                "--max-connections-per-client",
                "3",
                "--relay-networks",
                "127.0.0.1/32",
            ],
        );
        let mut held = Vec::new();
        for i in 0..3 {
            let (s, line) = first_line_from("127.0.0.2", server.port());
            assert!(line.starts_with("220 "), "{io}: connection {i}: {line:?}");
            held.push(s);
        }
        let (_, line) = first_line_from("127.0.0.2", server.port());
        assert!(line.starts_with("421 4.7.0 "), "{io}: the fourth: {line:?}");
        // Another address has its own share; the relay networks are not limited.
        let (_other, line) = first_line_from("127.0.0.3", server.port());
        assert!(line.starts_with("220 "), "{io}: {line:?}");
        let local: Vec<_> = (0..8)
            .map(|_| first_line_from("127.0.0.1", server.port()))
            .collect();
        assert!(local.iter().all(|(_, l)| l.starts_with("220 ")), "{io}");
        // A closed connection gives its slot back.
        drop(held.pop());
        std::thread::sleep(Duration::from_millis(200));
        let (_again, line) = first_line_from("127.0.0.2", server.port());
        assert!(line.starts_with("220 "), "{io}: after one closed: {line:?}");
        drop((held, local));
        server.stop().assert_success();
        drop(up);
    }
}
