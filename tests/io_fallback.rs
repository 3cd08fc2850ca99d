//! io_uring missing (here: denied by a seccomp filter, as container runtimes do): `--io auto`
//! falls back to epoll with one log line and serves mail; `--io uring` exits with a message
//! that says why and what to do.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{peers_dir, BIN};

const SYSTEM_PYTHON: &str = "/usr/bin/python3";

fn wrapper() -> String {
    peers_dir().join("deny_io_uring.py").display().to_string()
}

#[test]
fn forced_uring_without_io_uring_explains_and_exits() {
    let out = Command::new(SYSTEM_PYTHON)
        .args([
            &wrapper(),
            BIN,
            "sink",
            "--io",
            "uring",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--metrics-listen", "none"])
        .output()
        .expect("python3-seccomp is installed by scripts/install-test-deps.sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must not start: {err}");
    assert!(err.contains("io_uring is not available"), "{err}");
    assert!(
        err.contains("--io epoll"),
        "the message says what to do: {err}"
    );
}

#[test]
fn auto_falls_back_to_epoll_and_serves() {
    let mut child = Command::new(SYSTEM_PYTHON)
        .args([
            &wrapper(),
            "--merge-stderr",
            BIN,
            "sink",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--shards", "1", "--metrics-listen", "none"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3-seccomp is installed by scripts/install-test-deps.sh");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let port = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no listening line; got {lines:?}"));
        lines.push(line.clone());
        if let Some((addr, io, _)) = common::parse_listening_line(&line) {
            assert_eq!(io, "epoll", "{lines:?}");
            break addr.port();
        }
    };
    assert!(
        lines
            .iter()
            .any(|l| l.contains("io_uring unavailable") && l.contains("epoll")),
        "one clear log line about the fallback: {lines:?}"
    );
    let script = format!(
        "import smtplib; s = smtplib.SMTP('127.0.0.1', {port}); \
         s.sendmail('a@x.example', ['b@x.example'], 'Subject: fallback\\r\\n\\r\\nbody\\r\\n'); s.quit()"
    );
    let sent = Command::new(common::python())
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(sent.success());
    // SAFETY: kill(2) on our child's pid (the wrapper exec'd into ringrelay, same pid).
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let summary: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "{summary:?}");
    assert!(
        summary
            .iter()
            .any(|l| l.starts_with("sink: ") && l.contains("messages=1")),
        "{summary:?}"
    );
}
