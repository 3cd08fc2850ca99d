//! One listener per port: a second `ringrelay` on an address another process listens on
//! refuses to start (exit 2, "address already in use by another process"), whether the first
//! is a ringrelay (whose shards share the port with SO_REUSEPORT) or a Python socket without
//! it, under both drivers and in `smtpd` mode too; a taken `--metrics-listen` address refuses
//! the start the same way. With `--reuse-port` (flag or config key) on both ringrelays, the
//! second joins the port and the metrics address, and serves the port alone once the first
//! has gone: a rolling restart. Loopback only; every process is bounded in time.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// How long a refused start may take.
const REFUSAL: Duration = Duration::from_secs(20);

/// Runs `ringrelay ARGS`, which must refuse to start: exit status 2; returns its stderr.
fn refused(args: &[String]) -> String {
    let out = Peer::spawn(BIN, args).finish(REFUSAL);
    assert_eq!(
        out.status.code(),
        Some(2),
        "ringrelay {args:?} did not exit 2\n--- stderr ---\n{}",
        out.stderr
    );
    out.stderr
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The sentence a refused start prints for `addr`.
fn in_use(addr: &str) -> String {
    format!(
        "ringrelay: {addr}: address already in use by another process \
         (use --reuse-port for a planned handover)\n"
    )
}

/// Reads a greeting from `port`: whoever listens there answers 220.
fn greeting(port: u16) -> String {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line
}

#[test]
fn a_second_ringrelay_on_a_port_in_use_exits_2() {
    for io in IO_MODES {
        let first = Server::sink(io, &["--shards", "2"]);
        let addr = format!("127.0.0.1:{}", first.port());
        for mode in ["sink", "debug"] {
            let args = ["--listen", &addr, "--io", io, "--metrics-listen", "none"];
            let mut argv = strings(&[mode]);
            argv.extend(strings(&args));
            let err = refused(&argv);
            assert!(err.ends_with(&in_use(&addr)), "{io} {mode}: {err}");
        }
        // The first one goes on undisturbed.
        assert!(greeting(first.port()).starts_with("220 "), "{io}");
        first.stop().assert_success();
    }
}

#[test]
fn smtpd_and_proxy_refuse_a_port_in_use_too() {
    let first = Server::sink("epoll", &[]);
    let addr = format!("127.0.0.1:{}", first.port());
    let err = refused(&strings(&["smtpd", "-n", "-c", "SMTPServer", &addr]));
    assert!(err.ends_with(&in_use(&addr)), "smtpd: {err}");
    let args = ["proxy", "--listen", &addr, "--metrics-listen", "none"];
    let mut argv = strings(&args);
    argv.extend(strings(&["--upstream", "127.0.0.1:9", "--io", "epoll"]));
    let err = refused(&argv);
    assert!(err.ends_with(&in_use(&addr)), "proxy: {err}");
    first.stop().assert_success();
}

/// Listens on the loopback port in argv[1] without SO_REUSEPORT, says `ready`, and holds the
/// port until its stdin closes.
const PLAIN_LISTENER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(5)
print("ready", flush=True)
sys.stdin.read()
"#;

#[test]
fn a_python_listener_blocks_the_port_even_for_a_handover() {
    let port = free_port();
    let mut py = Peer::spawn(
        &python(),
        &["-c".into(), PLAIN_LISTENER.into(), port.to_string()],
    );
    py.wait_for_line("ready", Duration::from_secs(10));
    let addr = format!("127.0.0.1:{port}");
    for io in IO_MODES {
        let args = [
            "sink",
            "--listen",
            &addr,
            "--io",
            io,
            "--metrics-listen",
            "none",
        ];
        let err = refused(&strings(&args));
        assert!(err.ends_with(&in_use(&addr)), "{io}: {err}");
        let mut handover = strings(&args);
        handover.push("--reuse-port".into());
        let err = refused(&handover);
        let want = format!(
            "ringrelay: {addr}: address already in use by another process that does not share \
             it (--reuse-port joins only listeners that set SO_REUSEPORT, as ringrelay does)\n"
        );
        assert!(err.ends_with(&want), "{io} --reuse-port: {err}");
    }
    py.finish(Duration::from_secs(10))
        .assert_success("python listener");
}

#[test]
fn a_metrics_address_in_use_refuses_the_start() {
    let first = Server::sink("epoll", &[]);
    let metrics = metrics_addr(&first);
    let args = ["sink", "--listen", "127.0.0.1:0", "--io", "epoll"];
    let mut argv = strings(&args);
    argv.extend(["--metrics-listen".into(), metrics.to_string()]);
    let err = refused(&argv);
    let want = format!(
        "ringrelay: metrics address {metrics}: address already in use by another process \
         (choose another with --metrics-listen ADDR, or none; --reuse-port for a planned \
         handover)\n"
    );
    assert!(err.ends_with(&want), "{err}");
    first.stop().assert_success();
}

#[test]
fn with_reuse_port_the_second_joins_and_takes_over() {
    let dir = TempDir::new("reuse-port");
    // The second learns it from its config file; the first from the flag.
    let config = dir.write("handover.toml", b"reuse_port = true\n");
    for io in IO_MODES {
        let first = Server::sink(io, &["--reuse-port"]);
        let metrics = metrics_addr(&first).to_string();
        let addr = format!("127.0.0.1:{}", first.port());
        let second = Server::start(&[
            "sink",
            "--listen",
            &addr,
            "--io",
            io,
            "--metrics-listen",
            &metrics,
            "--config",
            config.to_str().unwrap(),
        ]);
        assert_eq!(second.port(), first.port(), "{io}");
        assert_eq!(metrics_addr(&second).to_string(), metrics, "{io}");
        first.stop().assert_success();
        // The old one has drained and gone; the new one serves the port alone.
        for _ in 0..4 {
            assert!(greeting(second.port()).starts_with("220 "), "{io}");
        }
        let stopped = second.stop();
        stopped.assert_success();
        assert_eq!(stopped.sink_summary().sessions, 4, "{io}");
    }
}
