//! Unix-domain listeners (`--listen unix:PATH`, issue 13 item 6) against real peers, on both
//! drivers: Python's smtplib.LMTP (which connects to a path over AF_UNIX) side by side with
//! Postfix's smtp-sink on a socket of its own, smtp-source -L, swaks --socket; the socket
//! file's life (mode, a stale file replaced, a live one refused, removal at exit); a PROXY
//! header over the socket; Postfix itself in front, delivering to `lmtp:unix:PATH`; and
//! `ringload -t unix:PATH --verify` over STARTTLS with BDAT, and over LMTP.

mod common;
mod postfix_kit;
mod ringload_run;

use common::*;
use postfix_kit::Postfix;
use ringload_run::{ringload, text};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PEER_TIMEOUT: Duration = Duration::from_secs(60);

/// One LMTP transaction over the socket at argv[1]: two recipients, one reply each after the
/// data.
const LMTP_UNIX: &str = r#"
import smtplib, sys
s = smtplib.LMTP(sys.argv[1])
code, text = s.ehlo('client.example')
assert code == 250, (code, text)
assert s.mail('sender@example.org', ['BODY=8BITMIME'])[0] == 250
assert s.rcpt('one@example.org')[0] == 250
assert s.rcpt('two@example.org')[0] == 250
code, text = s.data(b'Subject: over a unix socket\r\n\r\nbody\r\n')
assert code == 250, (code, text)
code, text = s.getreply()
assert code == 250, ('second recipient', code, text)
s.quit()
print('OK')
"#;

fn lmtp_over(path: &Path) {
    let mut p = Peer::spawn(
        &python(),
        &["-c".into(), LMTP_UNIX.into(), path.display().to_string()],
    );
    let out = p.finish(PEER_TIMEOUT);
    out.assert_success("smtplib.LMTP over a unix socket");
    assert!(out.stdout.contains("OK"), "{}", out.stdout);
}

/// The one file in `dir`.
fn only_file(dir: &Path) -> String {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::read_to_string(&files[0]).unwrap()
}

/// A dump's smtp-sink headers, up to and including the `Received:` line's first line.
fn dump_head(dump: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in dump.lines() {
        let received = line.starts_with("Received: ");
        out.push(if received {
            // "Received: from HELO ([local])" then our name; the rest differs by program.
            line.split_once(')').map_or(line, |(a, _)| a).to_string() + ")"
        } else {
            line.to_string()
        });
        if received {
            break;
        }
    }
    out
}

/// `ringrelay MODE --listen unix:SOCK --io IO --metrics-listen none EXTRA...`, checked to
/// listen there with that driver.
fn on_socket(mode: &str, sock: &Path, io: &str, extra: &[&str]) -> Server {
    let unix = format!("unix:{}", sock.display());
    let mut args = vec![
        mode,
        "--listen",
        &unix,
        "--io",
        io,
        "--metrics-listen",
        "none",
    ];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    assert_eq!(server.io, io);
    assert_eq!(server.unix_paths.first().map(PathBuf::as_path), Some(sock));
    server
}

fn wait_for_socket(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(path).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} never accepted",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// smtplib.LMTP over a Unix-domain socket: ringrelay's LMTP sink and Postfix's smtp-sink -L,
/// each on a socket of its own, take the same transaction, and their dumps name the client
/// the same way (`X-Client-Addr: local`, `Received: from HELO ([local])`).
#[test]
fn lmtp_over_a_unix_socket_as_smtp_sink_does() {
    let dir = TempDir::new("unix-lmtp");
    // smtp-sink runs as nobody: it must be able to write its dumps.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let theirs_dir = dir.join("theirs");
    std::fs::create_dir(&theirs_dir).unwrap();
    std::fs::set_permissions(&theirs_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let their_sock = dir.join("smtp-sink.sock");
    let mut sink = Peer::spawn(
        "/usr/sbin/smtp-sink",
        &[
            "-u".into(),
            "nobody".into(),
            "-L".into(),
            "-d".into(),
            format!("{}/", theirs_dir.display()),
            format!("unix:{}", their_sock.display()),
            "10".into(),
        ],
    );
    wait_for_socket(&their_sock);
    lmtp_over(&their_sock);
    // smtp-sink writes its dump after the reply; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_dir(&theirs_dir).unwrap().count() == 0 {
        assert!(Instant::now() < deadline, "smtp-sink wrote no dump");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let theirs = dump_head(&only_file(&theirs_dir));
    sink.signal(libc::SIGTERM);
    let _ = sink.finish(PEER_TIMEOUT);
    assert!(
        theirs.contains(&"X-Client-Addr: local".to_string()),
        "{theirs:?}"
    );

    for io in ["uring", "epoll"] {
        let ours_dir = dir.join(&format!("ours-{io}"));
        let sock = dir.join(&format!("ringrelay-{io}.sock"));
        let d = ours_dir.to_str().unwrap();
        let server = on_socket("sink", &sock, io, &["--lmtp", "-d", d]);
        lmtp_over(&sock);
        let stopped = server.stop();
        stopped.assert_success();
        let sum = stopped.sink_summary();
        assert_eq!((sum.messages, sum.recipients), (1, 2), "{io}: {sum:?}");
        let ours = dump_head(&only_file(&ours_dir));
        assert_eq!(ours, theirs, "{io}: our dump's head against smtp-sink's");
    }
}

/// Postfix's smtp-source -L speaks LMTP to `unix:PATH`: 200 messages over 4 sessions reach
/// a two-shard sink on both drivers; the socket file is 0666 while it runs and gone after.
#[test]
fn smtp_source_lmtp_over_a_unix_socket() {
    let _heavy = heavy();
    let dir = TempDir::new("unix-source");
    for io in ["uring", "epoll"] {
        let sock = dir.join(&format!("{io}.sock"));
        let unix = format!("unix:{}", sock.display());
        let server = on_socket("sink", &sock, io, &["--shards", "2", "--lmtp"]);
        let meta = std::fs::symlink_metadata(&sock).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o666);
        let mut p = Peer::spawn(
            SMTP_SOURCE,
            &[
                "-L",
                "-m",
                "200",
                "-s",
                "4",
                "-r",
                "2",
                "-M",
                "client.example",
                "-f",
                "source@example.org",
                "-t",
                "sink@example.org",
                &unix,
            ]
            .map(String::from),
        );
        p.finish(PEER_TIMEOUT)
            .assert_success(&format!("smtp-source -L {unix}"));
        let stopped = server.stop();
        stopped.assert_success();
        let sum = stopped.sink_summary();
        assert_eq!((sum.messages, sum.recipients), (200, 400), "{io}: {sum:?}");
        assert!(!sock.exists(), "{io}: the socket file outlived the server");
    }
}

/// swaks --socket to `debug` listening on a socket and on TCP at once: the message over the
/// socket says `X-Peer: local`, the one over TCP the client's address; then `ringrelay send
/// --server unix:PATH` over the socket.
#[test]
fn swaks_to_debug_on_a_socket_and_tcp() {
    let dir = TempDir::new("unix-swaks");
    for io in ["uring", "epoll"] {
        let sock = dir.join(&format!("{io}.sock"));
        let server = on_socket("debug", &sock, io, &["--listen", "127.0.0.1:0"]);
        assert_eq!((server.addrs.len(), server.unix_paths.len()), (1, 1));
        let port = server.addrs[0].port().to_string();
        for target in [
            vec!["--socket".to_string(), sock.display().to_string()],
            vec!["--server".into(), "127.0.0.1".into(), "--port".into(), port],
        ] {
            let mut args = target;
            args.extend(
                [
                    "--from",
                    "sender@example.org",
                    "--to",
                    "rcpt@example.org",
                    "--helo",
                    "client.example",
                    "--header",
                    "Subject: unix",
                ]
                .map(String::from),
            );
            let mut p = Peer::spawn("swaks", &args);
            p.finish(PEER_TIMEOUT).assert_success("swaks");
        }
        // Our own client too: `send --server unix:PATH` speaks SMTP over the socket.
        let msg = dir.write("m.eml", b"Subject: from send\r\n\r\nbody\r\n");
        let send = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
            .args(["send", "--from", "a@example.org", "--to", "b@example.org"])
            .arg("--server")
            .arg(format!("unix:{}", sock.display()))
            .arg(&msg)
            .output()
            .unwrap();
        assert!(send.status.success(), "{send:?}");
        let stopped = server.stop();
        stopped.assert_success();
        let out = stopped.stdout_str();
        assert_eq!(
            out.matches("---------- MESSAGE FOLLOWS ----------").count(),
            3
        );
        let first = out.find("X-Peer: local\n").expect(&out);
        let second = out.find("X-Peer: 127.0.0.1\n").expect(&out);
        let third = out.find("Subject: from send\nX-Peer: local\n").expect(&out);
        assert!(first < second && second < third, "{out}");
    }
}

/// The socket file: a stale one (nobody accepts) is replaced; one where a server accepts
/// refuses a second start (exit 2, one clear line) and stays the first server's; a path that
/// is not a socket is refused and left as it was.
#[test]
fn the_socket_file_is_handled_with_care() {
    let dir = TempDir::new("unix-file");
    let sock = dir.join("smtp.sock");
    drop(UnixListener::bind(&sock).unwrap());
    let unix = format!("unix:{}", sock.display());
    let server = on_socket("sink", &sock, "epoll", &[]);
    assert_eq!(greeting(&sock).get(..4), Some("220 "));

    let second = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args(["sink", "--listen", &unix, "--metrics-listen", "none"])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another process listens on this socket"),
        "{err}"
    );
    // Still the first server's.
    assert_eq!(greeting(&sock).get(..4), Some("220 "));
    server.stop().assert_success();
    assert!(!sock.exists());

    let file = dir.join("not-a-socket");
    std::fs::write(&file, b"keep me").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args(["sink", "--metrics-listen", "none", "--listen"])
        .arg(format!("unix:{}", file.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    let empty = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .args(["sink", "--listen", "unix:"])
        .output()
        .unwrap();
    assert_eq!(empty.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("give the socket's path"));
}

fn greeting(path: &Path) -> String {
    connect_greeted(path).1
}

/// A connection to the socket, kept open, and its first line.
fn connect_greeted(path: &Path) -> (UnixStream, String) {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    (s, line)
}

/// A PROXY v2 header over the socket (a balancer in front of a local socket): the proxied
/// client is the session's, not `local`; without a header the connection is closed. Both
/// drivers; the dump's `X-Client-Addr` tells which client the session saw.
#[test]
fn a_proxy_header_over_the_socket_names_the_client() {
    let dir = TempDir::new("unix-proxy");
    for io in ["uring", "epoll"] {
        let sock = dir.join(&format!("{io}.sock"));
        let dumps = dir.join(&format!("dumps-{io}"));
        let d = dumps.to_str().unwrap();
        let server = on_socket("sink", &sock, io, &["--proxy-protocol", "-d", d]);
        // PROXY v2, PROXY command, TCP over IPv4: 192.0.2.7:4000 -> 192.0.2.1:25.
        let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        header.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 7, 192, 0, 2, 1]);
        header.extend_from_slice(&4000u16.to_be_bytes());
        header.extend_from_slice(&25u16.to_be_bytes());
        let mut s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&header).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut send = |line: &str, want: &str| {
            if !line.is_empty() {
                s.write_all(line.as_bytes()).unwrap();
            }
            loop {
                let mut got = String::new();
                r.read_line(&mut got).unwrap();
                assert!(got.starts_with(want), "{io}: {line:?} -> {got:?}");
                if got.as_bytes().get(3) == Some(&b' ') {
                    break;
                }
            }
        };
        send("", "220");
        send("EHLO client.example\r\n", "250");
        send("MAIL FROM:<a@example.org>\r\n", "250");
        send("RCPT TO:<b@example.org>\r\n", "250");
        send("DATA\r\n", "354");
        send("Subject: proxied\r\n\r\nbody\r\n.\r\n", "250");
        send("QUIT\r\n", "221");
        // No header: closed without a word.
        let mut bare = UnixStream::connect(&sock).unwrap();
        bare.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        bare.write_all(b"EHLO client.example\r\n").unwrap();
        let mut rest = String::new();
        let _ = BufReader::new(bare).read_line(&mut rest);
        assert_eq!(rest, "", "{io}");
        server.stop().assert_success();
        let dump = only_file(&dumps);
        assert!(
            dump.starts_with("X-Client-Addr: 192.0.2.7\n"),
            "{io}: {dump}"
        );
    }
}

/// Postfix itself in front, delivering with its LMTP client to `lmtp:unix:PATH` (how a sink
/// sits behind an MTA on the same machine): three messages of two recipients each, submitted
/// to Postfix with swaks, arrive as three dumps that say `local` and `LMTP` and name both
/// recipients, and Postfix logs all six deliveries as sent over the socket.
#[test]
fn postfix_delivers_over_lmtp_unix() {
    require("swaks", "--version");
    let _heavy = heavy();
    let dir = TempDir::new("unix-postfix");
    let sock = dir.join("lmtp.sock");
    let dumps = dir.join("dumps");
    let server = on_socket(
        "sink",
        &sock,
        "uring",
        &["--lmtp", "-d", dumps.to_str().unwrap()],
    );
    let pf_dir = dir.join("postfix");
    let pf = Postfix::start_routing(
        &pf_dir,
        &format!("default_transport = lmtp:unix:{}", sock.display()),
    );
    for i in 0..3 {
        let header = format!("X-Test-Id: lmtp-{i}");
        pf.submit(
            "one@example.com,two@example.com",
            &["--header".into(), header],
        );
    }
    let sent = pf.wait_log(&["status=sent", "relay="], 6, PEER_TIMEOUT);
    for line in &sent {
        assert!(line.contains(&format!("[{}]", sock.display())), "{line}");
    }
    let mut ids = Vec::new();
    let deadline = Instant::now() + PEER_TIMEOUT;
    loop {
        let files: Vec<PathBuf> = std::fs::read_dir(&dumps)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        if files.len() == 3 {
            for f in files {
                let dump = std::fs::read_to_string(f).unwrap();
                assert!(
                    dump.starts_with(
                        "X-Client-Addr: local\nX-Client-Proto: LMTP\nX-Helo-Args: mta.test\n"
                    ),
                    "{dump}"
                );
                assert!(
                    dump.contains(
                        "X-Rcpt-Args: <one@example.com>\nX-Rcpt-Args: <two@example.com>\n"
                    ),
                    "{dump}"
                );
                let id = dump
                    .lines()
                    .find(|l| l.starts_with("X-Test-Id: "))
                    .expect(&dump);
                ids.push(id.to_string());
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} dumps of 3\n{}",
            files.len(),
            pf.maillog()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ids.sort();
    assert_eq!(
        ids,
        [
            "X-Test-Id: lmtp-0",
            "X-Test-Id: lmtp-1",
            "X-Test-Id: lmtp-2"
        ]
    );
    drop(pf);
    let stopped = server.stop();
    stopped.assert_success();
    let sum = stopped.sink_summary();
    assert_eq!((sum.messages, sum.recipients), (3, 6), "{sum:?}");
}

/// `proxy` on a socket, relaying to an upstream on a socket (`--upstream unix:PATH`, a sink
/// that dumps what it gets): a local client counts as loopback, so under the default relay
/// networks its message reaches the upstream (which sees the relay as `local`, and our
/// `Received:` field naming 127.0.0.1); once the relay networks leave loopback out, RCPT is
/// refused.
#[test]
fn proxy_on_a_socket_treats_its_clients_as_loopback() {
    require("swaks", "--version");
    let dir = TempDir::new("unix-proxy-mode");
    let up_sock = dir.join("upstream.sock");
    let dumps = dir.join("upstream-dumps");
    let upstream = on_socket("sink", &up_sock, "epoll", &["-d", dumps.to_str().unwrap()]);
    let up = format!("unix:{}", up_sock.display());
    for (networks, want) in [(None, "250"), (Some("192.0.2.0/24"), "5")] {
        let sock = dir.join("relay.sock");
        let mut args = vec!["--upstream", up.as_str(), "--hostname", "relay.test"];
        if let Some(n) = networks {
            args.extend(["--relay-networks", n]);
        }
        let relay = on_socket("proxy", &sock, "uring", &args);
        let mut p = Peer::spawn(
            "swaks",
            &[
                "--socket",
                sock.to_str().unwrap(),
                "--helo",
                "client.example",
                "--from",
                "sender@example.org",
                "--to",
                "rcpt@example.com",
            ]
            .map(String::from),
        );
        let out = p.finish(PEER_TIMEOUT);
        let rcpt_reply = out
            .stdout
            .lines()
            .skip_while(|l| !l.starts_with(" -> RCPT TO:"))
            .nth(1)
            .unwrap_or_default()
            .to_string();
        assert!(
            rcpt_reply
                .trim_start_matches(['<', '-', '*', ' '])
                .starts_with(want),
            "{networks:?}: {}",
            out.stdout
        );
        relay.stop().assert_success();
    }
    let stopped = upstream.stop();
    stopped.assert_success();
    assert_eq!(stopped.sink_summary().messages, 1);
    let dump = only_file(&dumps);
    assert!(dump.starts_with("X-Client-Addr: local\n"), "{dump}");
    assert!(
        dump.contains("Received: from client.example ([127.0.0.1])\n\tby relay.test (ringrelay)"),
        "{dump}"
    );
}

/// `ringload -t unix:PATH --verify DIR` against dumps of the sink on a socket: STARTTLS
/// (checked against the test CA as `localhost`) with BDAT on io_uring, and LMTP with two
/// recipients on epoll. Every acknowledged message is in the dump once.
#[test]
fn ringload_verifies_dumps_over_the_socket() {
    let _heavy = heavy();
    let dir = TempDir::new("unix-ringload");
    let (cert, key) = test_certificate(&dir);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let cases: [(&str, &[&str], &[&str]); 2] = [
        (
            "uring",
            &["--tls-cert", cert, "--tls-key", key],
            &["--starttls", "--tls-ca", cert, "--bdat", "--size", "5k"],
        ),
        ("epoll", &["--lmtp"], &["--lmtp", "--rcpts", "2"]),
    ];
    for (io, server_args, load_args) in cases {
        let sock = dir.join(&format!("{io}.sock"));
        let dumps = dir.join(&format!("dumps-{io}"));
        let d = dumps.to_str().unwrap();
        let mut extra = vec!["-d", d];
        extra.extend_from_slice(server_args);
        let server = on_socket("sink", &sock, io, &extra);
        let target = format!("unix:{}", sock.display());
        let mut args = vec!["-t", &target, "--threads", "2", "-s", "4", "-m", "200"];
        args.extend_from_slice(&["--verify", d]);
        args.extend_from_slice(load_args);
        let o = ringload(&args);
        let t = text(&o);
        assert!(o.status.success(), "{io}: {t}");
        assert!(
            t.contains("0 missing, 0 duplicated, 0 unexpected: OK"),
            "{io}: {t}"
        );
        let stopped = server.stop();
        stopped.assert_success();
        assert_eq!(stopped.sink_summary().messages, 200, "{io}");
    }
}

/// Clients on the socket have no address to count: `--max-connections-per-client 1` lets
/// three of them in at once (a TCP client from 127.0.0.1 would be the second's 421).
#[test]
fn the_per_client_limit_does_not_count_socket_clients() {
    let dir = TempDir::new("unix-per-client");
    let sock = dir.join("smtp.sock");
    let server = on_socket(
        "sink",
        &sock,
        "epoll",
        &[
            "--max-connections-per-client",
            "1",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let held: Vec<(UnixStream, String)> = (0..3).map(|_| connect_greeted(&sock)).collect();
    for (_, g) in &held {
        assert!(g.starts_with("220 "), "{g:?}");
    }
    // The same limit still holds on TCP: a second client from 127.0.0.1 gets 421.
    let port = server.addrs[0].port();
    let first = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let tcp_greeting = |s: &std::net::TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line
    };
    assert!(tcp_greeting(&first).starts_with("220 "));
    let second = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(tcp_greeting(&second).starts_with("421 "));
    drop((first, second, held));
    server.stop().assert_success();
}
