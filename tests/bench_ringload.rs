//! ringload (bench/loadgen/) behaviour against peers on loopback, bounded in count and time:
//! LMTP against Postfix's smtp-sink -L (one final reply per recipient), a server without
//! CHUNKING stops a --bdat run at once, a dead port stops a run at --max-errors, an open
//! loop run sends exactly rate x duration messages, `-q` still prints the verdict and the
//! errors, and sessions still connecting to a server with a listen backlog of 5 when the
//! message budget is spent are cancelled, not counted as failures.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod ringload_run;

use ringload_run::{ringload, text};
const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Postfix's smtp-sink, killed on drop.
struct Sink(Child);

impl Sink {
    fn start(extra: &[&str]) -> (Sink, SocketAddr) {
        let addr = free_addr();
        let mut args: Vec<String> = vec!["-u".into(), "nobody".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(addr.to_string());
        args.push("64".into());
        let child = Command::new(SMTP_SINK)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink is installed (scripts/install-test-deps.sh)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "smtp-sink did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        (Sink(child), addr)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn lmtp_with_several_recipients_against_smtp_sink() {
    let (_sink, addr) = Sink::start(&["-L"]);
    let target = addr.to_string();
    for pipelining in [true, false] {
        let mut args = vec![
            "-t", &target, "--lmtp", "--rcpts", "3", "-s", "3", "-m", "60", "-k", "7",
        ];
        if !pipelining {
            args.push("--no-pipelining");
        }
        let o = ringload(&args);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(t.contains("LMTP "), "{t}");
        assert!(t.contains("60 acknowledged, 0 failed"), "{t}");
        // Three RCPT replies per message.
        let rcpt = t
            .lines()
            .find(|l| l.trim_start().starts_with("rcpt"))
            .unwrap();
        assert!(rcpt.split_whitespace().nth(1) == Some("180"), "{rcpt}");
    }
}

#[test]
fn bdat_without_chunking_stops_the_run() {
    let (_sink, addr) = Sink::start(&[]);
    let o = ringload(&["-t", &addr.to_string(), "--bdat", "-m", "1000", "-s", "2"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("does not offer CHUNKING"), "{t}");
    assert!(t.contains("0 acknowledged"), "{t}");
}

#[test]
fn a_dead_target_stops_at_max_errors() {
    let addr = free_addr(); // nothing listens here now
    let started = Instant::now();
    let o = ringload(&[
        "-t",
        &addr.to_string(),
        "-d",
        "30",
        "--max-errors",
        "20",
        "--threads",
        "1",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("connect: ConnectionRefused"), "{t}");
    assert!(t.contains("--max-errors 20"), "{t}");
    assert!(started.elapsed() < Duration::from_secs(20), "{t}");
}

#[test]
fn open_loop_sends_rate_times_duration() {
    let (_sink, addr) = Sink::start(&[]);
    let o = ringload(&[
        "-t",
        &addr.to_string(),
        "--rate",
        "400",
        "-d",
        "1",
        "-s",
        "8",
        "--threads",
        "2",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("open loop at 400 msg/s"), "{t}");
    assert!(t.contains("400 acknowledged, 0 failed"), "{t}");
}

#[test]
fn quiet_prints_the_verdict_and_the_errors() {
    let (_sink, addr) = Sink::start(&[]);
    let o = ringload(&["-t", &addr.to_string(), "-q", "-m", "50", "-s", "2"]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("ringload: 50 acknowledged, 0 failed in ") && out.ends_with(": OK\n"),
        "{out}"
    );
    assert_eq!(err, "", "nothing went wrong, nothing on stderr");

    let dead = free_addr();
    let o = ringload(&[
        "-t",
        &dead.to_string(),
        "-q",
        "-d",
        "30",
        "--max-errors",
        "5",
        "--threads",
        "1",
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        out.starts_with("ringload: 0 acknowledged, ") && out.ends_with(": FAILED\n"),
        "{out}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("ringload: error: ")
                && l.ends_with(" x connect: ConnectionRefused")),
        "{err}"
    );
    assert!(err.contains("ringload: stopped: "), "{err}");
}

/// A Python server with a listen backlog of 5 that serves only its first 4 connections: the
/// other 16 sessions never get a greeting. Once the 200 messages are sent through the 4, the
/// others were still connecting: cancelled, not failed, and the run ends at once instead of
/// waiting --timeout for greetings that will not come.
#[test]
fn sessions_still_connecting_when_the_budget_is_spent_are_not_failures() {
    let addr = free_addr();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("peers")
        .join("backlog_server.py");
    let mut server = Command::new("python3")
        .arg(&script)
        .args([addr.port().to_string(), "4".to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    // Not probed with a connection: that would take one of the 4 it serves.
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready, "ready\n", "the backlog server did not start");
    let started = Instant::now();
    let o = ringload(&[
        "-t",
        &addr.to_string(),
        "-s",
        "20",
        "-m",
        "200",
        "--timeout",
        "60",
        "--threads",
        "2",
    ]);
    let took = started.elapsed();
    let _ = server.kill();
    let _ = server.wait();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("200 acknowledged, 0 failed"), "{t}");
    assert!(t.contains("errors: none"), "{t}");
    assert!(t.contains("; 4 connections"), "{t}");
    assert!(took < Duration::from_secs(20), "took {took:?}\n{t}");
}
