//! Values a new user types: a host name in `--listen` and `--metrics-listen` (resolved at start,
//! listened on at every address of the name this machine has), and sizes with k/M/G suffixes
//! (binary) in flags and in the config file (integer or string). Python's smtplib checks the
//! SIZE the server advertises; a raw HTTP GET reaches the metrics on each address. Loopback
//! only; every process is bounded in time.

mod common;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::Duration;

use common::*;

/// What the server must listen on for `localhost:PORT`: every address the resolver gives that
/// this machine can bind (127.0.0.1, and ::1 where it resolves and IPv6 is there).
fn localhost_addrs(port: u16) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in ("localhost", port).to_socket_addrs().unwrap() {
        if !out.contains(&a) && TcpListener::bind(SocketAddr::new(a.ip(), 0)).is_ok() {
            out.push(a);
        }
    }
    assert!(!out.is_empty(), "localhost resolves to nothing bindable");
    out
}

/// Connects with smtplib to `addr`, says EHLO and prints the SIZE keyword's value.
fn advertised_size(addr: SocketAddr) -> String {
    let script = "import smtplib, sys\n\
                  s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=10)\n\
                  s.ehlo('peer.example')\n\
                  print(s.esmtp_features.get('size', 'none'))\n\
                  s.quit()\n";
    let args = vec![
        "-c".to_string(),
        script.to_string(),
        addr.ip().to_string(),
        addr.port().to_string(),
    ];
    let out = Peer::spawn(&python(), &args).finish(Duration::from_secs(20));
    out.assert_success(&format!("smtplib EHLO to {addr}"));
    out.stdout.trim().to_string()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_host_name_listens_on_every_address_it_resolves_to() {
    let port = free_port();
    let want = localhost_addrs(port);
    let listen = format!("localhost:{port}");
    let server = Server::start_expecting(
        &[
            "sink",
            "--listen",
            &listen,
            "--metrics-listen",
            "none",
            "--io",
            "epoll",
            "--size",
            "10M",
        ],
        want.len(),
    );
    let mut got = server.addrs.clone();
    got.sort();
    let mut sorted = want.clone();
    sorted.sort();
    assert_eq!(got, sorted, "listening lines for {listen}");
    for addr in &want {
        assert_eq!(advertised_size(*addr), (10u64 << 20).to_string(), "{addr}");
    }
    server.stop().assert_success();
}

#[test]
fn a_host_name_serves_metrics_on_every_address() {
    let port = free_port();
    let want = localhost_addrs(port);
    let metrics = format!("localhost:{port}");
    let server = Server::start(&[
        "sink",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        &metrics,
        "--io",
        "epoll",
    ]);
    let err = server.stderr();
    for addr in &want {
        let line = format!("ringrelay: metrics on http://{addr}/metrics");
        assert!(err.contains(&line), "no {line:?} in:\n{err}");
        let (status, body) = http_get(*addr, "/healthz");
        assert_eq!((status, body.as_str()), (200, "ok\n"), "{addr}");
    }
    server.stop().assert_success();
}

#[test]
fn size_flags_take_binary_suffixes() {
    let server = Server::sink(
        "epoll",
        &[
            "--size",
            "1k",
            "--min-data-rate",
            "1k",
            "--uring-buffer-size",
            "16k",
        ],
    );
    assert_eq!(advertised_size(server.addrs[0]), "1024");
    server.stop().assert_success();
    let smtpd_port = free_port();
    let local = format!("127.0.0.1:{smtpd_port}");
    let smtpd = Server::start(&["smtpd", "-n", "-c", "SMTPServer", "-s", "2M", &local]);
    assert_eq!(advertised_size(smtpd.addrs[0]), (2u64 << 20).to_string());
    smtpd.stop().assert_success();
}

#[test]
fn a_size_that_is_not_one_is_refused_with_the_rule() {
    for bad in ["10MB", "1.5M", "ten"] {
        let args = strings(&["sink", "--listen", "127.0.0.1:0", "--size", bad]);
        let out = Peer::spawn(BIN, &args).finish(Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(2), "--size {bad}: {}", out.stderr);
        assert!(
            out.stderr.contains("binary: 1k = 1024"),
            "--size {bad}: the error does not say what a size is:\n{}",
            out.stderr
        );
    }
    let args = strings(&["sink", "--listen", "localhost", "--metrics-listen", "none"]);
    let out = Peer::spawn(BIN, &args).finish(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("\"localhost\" has no port"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_config_file_takes_sizes_as_integers_or_strings_and_names_in_listen() {
    let port = free_port();
    let want = localhost_addrs(port);
    let tmp = TempDir::new("cli-values");
    let file = format!(
        "listen = [\"localhost:{port}\"]\n\
         metrics_listen = \"none\"\n\
         io = \"epoll\"\n\
         size = \"3M\"\n\
         min_data_rate = 2048\n\
         uring_buffer_size = \"16k\"\n"
    );
    let cfg = tmp.write("ringrelay.toml", file.as_bytes());
    let cfg = cfg.to_str().unwrap();
    let server = Server::start_expecting(&["sink", "--config", cfg], want.len());
    assert_eq!(advertised_size(want[0]), (3u64 << 20).to_string());
    server.stop().assert_success();

    let cfg2 = tmp.write("int.toml", b"size = 4096\nmetrics_listen = \"none\"\n");
    let server = Server::start(&[
        "sink",
        "--config",
        cfg2.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--io",
        "epoll",
    ]);
    assert_eq!(advertised_size(server.addrs[0]), "4096");
    server.stop().assert_success();

    let bad = tmp.write("bad.toml", b"size = \"4 apples\"\n");
    let args = strings(&["sink", "--config", bad.to_str().unwrap()]);
    let out = Peer::spawn(BIN, &args).finish(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("is not a size"), "{}", out.stderr);
}
