//! Shutdown (SIGTERM / SIGINT, graceful drain, second signal, drain timeout) and the
//! `ringrelay smtpd` drop-in for `python -m smtpd`, against the real binary.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Reads one reply line (the last line of a multi-line reply) from a raw connection.
fn read_reply(r: &mut BufReader<TcpStream>) -> Option<String> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Some(line.trim_end().to_string());
        }
    }
}

fn connect(port: u16) -> BufReader<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    BufReader::new(s)
}

fn send(r: &mut BufReader<TcpStream>, line: &str) {
    r.get_mut().write_all(line.as_bytes()).unwrap();
}

fn assert_eof(r: &mut BufReader<TcpStream>, what: &str) {
    let mut rest = String::new();
    match r.read_line(&mut rest) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected EOF, got {other:?} {rest:?}"),
    }
}

/// A client in the middle of DATA when SIGTERM arrives finishes its message (250); an idle
/// client gets `421 4.3.2`; new connections are no longer served; the server exits 0 and the
/// sink counts the message.
fn graceful_drain(io: &str) {
    let server = Server::sink(io, &[]);
    let mut peer = Peer::python("lifecycle.py", &port_args(server.port(), &["drain"]));
    peer.wait_for_line("READY", Duration::from_secs(20));
    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    peer.send_line("GO");
    let out = peer.finish(Duration::from_secs(60));
    out.assert_success("lifecycle.py drain");
    let stopped = server.wait(Duration::from_secs(20), t0);
    stopped.assert_success();
    let sum = stopped.sink_summary();
    assert_eq!(sum.messages, 1, "{sum:?}");
    assert_eq!(sum.bytes, report_field(&out.stdout, "bytes"), "{sum:?}");
    // A and B, plus the probes of "is it still accepting?" that the server accepted: at least
    // those that were served (they raced the signal), at most all of them.
    let probes = report_field(&out.stdout, "probes");
    let served = report_field(&out.stdout, "served");
    assert!(
        sum.sessions >= 2 + served && sum.sessions <= 2 + probes,
        "{sum:?}: expected 2 sessions + {served}..={probes} probes"
    );
}

#[test]
fn graceful_drain_uring() {
    graceful_drain("uring");
}

#[test]
fn graceful_drain_epoll() {
    graceful_drain("epoll");
}

/// SIGINT behaves like SIGTERM: the idle session gets 421 4.3.2 and EOF, exit 0, summary printed.
fn sigint_idle(io: &str) {
    let server = Server::sink(io, &[]);
    let mut c = connect(server.port());
    let greeting = read_reply(&mut c).expect("greeting");
    assert!(greeting.starts_with("220 "), "{greeting}");
    send(&mut c, "EHLO idle.example\r\n");
    let ehlo = read_reply(&mut c).expect("EHLO reply");
    assert!(ehlo.starts_with("250 "), "{ehlo}");
    let t0 = Instant::now();
    server.signal(libc::SIGINT);
    let bye = read_reply(&mut c).unwrap_or_else(|| {
        panic!(
            "no reply within 10 s of SIGINT to an idle session (expected 421 4.3.2)\n\
             --- server stderr ---\n{}",
            server.stderr()
        )
    });
    assert!(
        bye.starts_with("421 4.3.2 "),
        "idle session on SIGINT: {bye:?}"
    );
    assert_eof(&mut c, "after 421");
    let stopped = server.wait(Duration::from_secs(15), t0);
    stopped.assert_success();
    assert!(
        stopped.took < Duration::from_secs(5),
        "exit took {:?} with only an idle session",
        stopped.took
    );
    assert_eq!(stopped.sink_summary().sessions, 1);
}

#[test]
fn sigint_idle_uring() {
    sigint_idle("uring");
}

#[test]
fn sigint_idle_epoll() {
    sigint_idle("epoll");
}

/// A transaction that never finishes keeps the server draining; a second signal ends it at once.
#[test]
fn second_signal_exits_at_once() {
    let mut server = Server::sink("uring", &[]);
    let mut peer = Peer::python(
        "lifecycle.py",
        &port_args(server.port(), &["stuck-in-data"]),
    );
    peer.wait_for_line("READY", Duration::from_secs(20));
    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        server.running(),
        "the server exited although a transaction was in flight (drain timeout 30 s)"
    );
    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    let stopped = server.wait(Duration::from_secs(5), t0);
    eprintln!(
        "second signal: exit {:?} after {:?}",
        stopped.status, stopped.took
    );
    assert!(
        stopped.took < Duration::from_secs(3),
        "took {:?}",
        stopped.took
    );
    drop(peer);
}

/// `--drain-timeout 1`: a transaction that never finishes delays the exit by about a second,
/// not more, and its client is told 421 4.3.2 (not left with a bare close).
#[test]
fn drain_timeout_bounds_the_exit() {
    for io in ["epoll", "uring"] {
        let server = Server::sink(io, &["--drain-timeout", "1"]);
        let mut c = connect(server.port());
        assert!(read_reply(&mut c).unwrap().starts_with("220"));
        for (line, code) in [
            ("EHLO stuck.example\r\n", "250"),
            ("MAIL FROM:<a@example.org>\r\n", "250"),
            ("RCPT TO:<b@example.org>\r\n", "250"),
            ("DATA\r\n", "354"),
        ] {
            send(&mut c, line);
            let reply = read_reply(&mut c).unwrap();
            assert!(reply.starts_with(code), "{io}: {line:?} -> {reply:?}");
        }
        send(&mut c, "Subject: in flight\r\n\r\nthe rest never comes\r\n");
        let t0 = Instant::now();
        server.signal(libc::SIGTERM);
        let reply = read_reply(&mut c);
        let told = t0.elapsed();
        let reply =
            reply.unwrap_or_else(|| panic!("{io}: EOF instead of 421 at the drain timeout"));
        assert!(reply.starts_with("421 4.3.2"), "{io}: {reply:?}");
        assert!(
            told >= Duration::from_millis(800),
            "{io}: 421 after {told:?}"
        );
        assert_eof(&mut c, io);
        let stopped = server.wait(Duration::from_secs(10), t0);
        eprintln!(
            "{io} drain timeout: 421 after {told:?}, exit {:?} after {:?}",
            stopped.status, stopped.took
        );
        assert!(
            stopped.took < Duration::from_secs(5),
            "{io}: exit after {:?} with --drain-timeout 1",
            stopped.took
        );
        // The stuck session counts, and its message does not.
        let sum = stopped.sink_summary();
        assert_eq!((sum.sessions, sum.messages), (1, 0), "{io}: {sum:?}");
    }
}

/// `--drain-delay`: on SIGTERM /readyz turns 503 at once while new connections are still
/// served; the listeners close and the drain runs only after the delay (rolling restarts
/// behind a balancer whose health check reads /readyz).
#[test]
fn drain_delay_turns_unready_before_it_stops_accepting() {
    let server = Server::mode("sink", "uring", &["--drain-delay", "2"]);
    let admin = metrics_addr(&server);
    assert_eq!(http_get(admin, "/readyz").0, 200);
    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let (status, body) = http_get(admin, "/readyz");
        if status == 503 {
            assert_eq!(body, "draining\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Still accepting and serving during the delay.
    let mut c = connect(server.port());
    assert!(read_reply(&mut c).unwrap().starts_with("220"));
    send(
        &mut c,
        "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
    );
    for want in ["250", "250", "250", "354"] {
        let got = read_reply(&mut c).unwrap();
        assert!(got.starts_with(want), "{got}");
    }
    send(
        &mut c,
        "Subject: during the delay\r\n\r\nhi\r\n.\r\nQUIT\r\n",
    );
    assert!(read_reply(&mut c).unwrap().starts_with("250"));
    assert!(read_reply(&mut c).unwrap().starts_with("221"));
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the test was too slow to mean anything"
    );
    let stopped = server.wait(Duration::from_secs(15), t0);
    stopped.assert_success();
    assert!(stopped.took >= Duration::from_secs(2), "{:?}", stopped.took);
    assert!(String::from_utf8_lossy(&stopped.stdout).contains("messages=1"));
}

fn smtpd(args: &[&str]) -> Server {
    let mut all = vec!["smtpd"];
    all.extend_from_slice(args);
    Server::start_expecting(&all, 1)
}

/// `ringrelay smtpd -n -c DebuggingServer 127.0.0.1:PORT` prints what smtplib sent, in the
/// debug format.
#[test]
fn smtpd_dropin_debugging_server() {
    let tmp = TempDir::new("smtpd");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = smtpd(&["-n", "-c", "DebuggingServer", &addr]);
    assert_eq!(server.port(), port);
    let m = b"From: a@example.org\r\nSubject: drop-in\r\n\r\nHello from smtplib\r\n.dot\r\n";
    let f = tmp.write("m.eml", m);
    let mut args = port_args(port, &["sendmail"]);
    args.push(f.to_string_lossy().into_owned());
    run_python("smtplib_client.py", &args, Duration::from_secs(60));
    let stopped = server.stop();
    stopped.assert_success();
    let want = debug_render(m, "127.0.0.1", &[format!("size={}", m.len())]);
    assert_bytes_eq(&stopped.stdout, &want, "smtpd -c DebuggingServer output");
}

/// `-c SMTPServer` is the sink; `-s` sets the SIZE limit.
#[test]
fn smtpd_dropin_smtpserver_with_size() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = smtpd(&["-n", "-c", "SMTPServer", "-s", "10000", &addr]);
    run_python(
        "smtplib_client.py",
        &port_args(port, &["size-limit", "--limit", "10000"]),
        Duration::from_secs(60),
    );
    let stopped = server.stop();
    stopped.assert_success();
    assert_eq!(stopped.sink_summary().messages, 1);
}

/// `-u` offers SMTPUTF8, as python -m smtpd -u does.
#[test]
fn smtpd_dropin_smtputf8() {
    let tmp = TempDir::new("smtpd-utf8");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = smtpd(&["-n", "-c", "DebuggingServer", "-u", &addr]);
    let mut args = port_args(port, &["send-message", "--utf8", "--capture"]);
    args.push(tmp.path().to_string_lossy().into_owned());
    run_python("smtplib_client.py", &args, Duration::from_secs(60));
    let stopped = server.stop();
    stopped.assert_success();
    assert_eq!(
        stopped
            .stdout_str()
            .matches("---------- MESSAGE FOLLOWS ----------")
            .count(),
        2
    );
}

/// `smtpd -c PureProxy localaddr remoteaddr` relays to the remote address, as the seed's
/// PureProxy: swaks sends through it to a `ringrelay debug` upstream, which prints the message
/// with the relay's `Received:` header on top.
#[test]
fn smtpd_dropin_pureproxy_relays() {
    let upstream = Server::debug("epoll", &["--shards", "1"]);
    let port = free_port();
    let mut proxy = Peer::spawn(
        BIN,
        &[
            "smtpd".into(),
            "-n".into(),
            "-c".into(),
            "PureProxy".into(),
            format!("127.0.0.1:{port}"),
            format!("127.0.0.1:{}", upstream.port()),
        ],
    );
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "smtpd -c PureProxy did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let server = format!("127.0.0.1:{port}");
    let mut swaks = Peer::spawn(
        "swaks",
        &[
            "--server".into(),
            server,
            "--from".into(),
            "a@example.com".into(),
            "--to".into(),
            "b@example.com".into(),
            "--header".into(),
            "Subject: through PureProxy".into(),
            "--body".into(),
            "relayed body".into(),
        ],
    );
    swaks
        .finish(Duration::from_secs(30))
        .assert_success("swaks through PureProxy");
    proxy.signal(libc::SIGTERM);
    let out = proxy.finish(STOP_TIMEOUT);
    assert!(out.status.success(), "{}", out.stderr);
    let printed = upstream.stop().stdout_str();
    assert!(printed.contains("Subject: through PureProxy"), "{printed}");
    assert!(printed.contains("relayed body"), "{printed}");
    let received = printed
        .find("Received: from")
        .expect("the relay adds Received:");
    assert!(received < printed.find("Subject:").unwrap(), "{printed}");
}

/// An unknown class is refused with a non-zero exit.
#[test]
fn smtpd_dropin_unknown_class() {
    let mut p = Peer::spawn(
        BIN,
        &[
            "smtpd".into(),
            "-n".into(),
            "-c".into(),
            "NoSuchServer".into(),
            "127.0.0.1:0".into(),
        ],
    );
    let out = p.finish(Duration::from_secs(10));
    assert!(!out.status.success(), "{out:?}");
}

/// SIGHUP does not kill (status 129 before): it is noted on stderr and nothing changes; an open
/// session and new connections are served, and SIGTERM still drains and prints the summary.
#[test]
fn sighup_is_noted_and_changes_nothing() {
    let mut server = Server::sink("uring", &[]);
    let mut c = connect(server.port());
    assert!(read_reply(&mut c).expect("greeting").starts_with("220 "));
    send(&mut c, "EHLO hup.example\r\n");
    assert!(read_reply(&mut c).expect("EHLO reply").starts_with("250 "));
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("SIGHUP") {
        assert!(
            Instant::now() < deadline,
            "no SIGHUP line: {}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.running(), "SIGHUP ended the process");
    send(&mut c, "NOOP\r\n");
    assert!(read_reply(&mut c).expect("NOOP reply").starts_with("250 "));
    let mut d = connect(server.port());
    assert!(read_reply(&mut d)
        .expect("a new greeting")
        .starts_with("220 "));
    send(&mut d, "QUIT\r\n");
    send(&mut c, "QUIT\r\n");
    let stopped = server.stop();
    stopped.assert_success();
    assert_eq!(stopped.sink_summary().sessions, 2);
}
