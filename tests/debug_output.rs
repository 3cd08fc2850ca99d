//! `debug` against an output that is never read, or that goes away: a message is acknowledged
//! only once it is printed, memory stays bounded while nothing is read, SIGTERM still ends the
//! process, and a closed output turns messages into 451 (issue 16, item 1). The output is a
//! FIFO whose reader the test holds and never reads (or closes).

mod common;

use common::*;
use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn mkfifo(path: &std::path::Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// `ringrelay debug` writing its messages to `out`; returns the child and its port.
fn debug_into(out: std::fs::File, io: &str) -> (Child, u16) {
    let port = free_port();
    let child = Command::new(BIN)
        .args([
            "debug",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--io",
            io,
        ])
        .args([
            "--shards",
            "1",
            "--metrics-listen",
            "none",
            "--drain-timeout",
            "2",
        ])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "debug did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

/// A raw client: `reply` gives the last line of the next reply, or None after `wait`.
struct Raw {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let w = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        let mut c = Raw { w, r };
        assert!(c.reply(Duration::from_secs(10)).unwrap().starts_with("220"));
        c.send(b"EHLO out.example\r\n");
        assert!(c.reply(Duration::from_secs(10)).unwrap().starts_with("250"));
        c
    }

    fn send(&mut self, b: &[u8]) {
        self.w.write_all(b).unwrap();
    }

    fn reply(&mut self, wait: Duration) -> Option<String> {
        self.r.get_ref().set_read_timeout(Some(wait)).unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            match self.r.read_line(&mut line) {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
            if line.as_bytes().get(3) == Some(&b' ') {
                return Some(line);
            }
        }
    }

    /// One 16 KiB message; the reply to its final dot, or None when none came within `wait`.
    fn message(&mut self, i: usize, wait: Duration) -> Option<String> {
        self.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n");
        for want in ["250", "250", "354"] {
            let r = self
                .reply(Duration::from_secs(10))
                .expect("an envelope reply");
            assert!(r.starts_with(want), "{r}");
        }
        let mut m = format!("Subject: {i}\r\n\r\n").into_bytes();
        while m.len() < 16 * 1024 {
            m.extend_from_slice(
                b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
            );
        }
        m.extend_from_slice(b".\r\n");
        self.send(&m);
        self.reply(wait)
    }
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn nothing_is_acknowledged_that_was_not_printed() {
    for io in IO_MODES {
        let dir = TempDir::new("debug-fifo");
        let fifo = dir.join("out");
        mkfifo(&fifo);
        // Opened, never read: the pipe fills (64 KiB) and the printer blocks.
        let _reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let out = OpenOptions::new().write(true).open(&fifo).unwrap();
        let (mut child, port) = debug_into(out, io);
        let mut c = Raw::connect(port);
        let mut acked = 0;
        for i in 0..40 {
            match c.message(i, Duration::from_secs(2)) {
                Some(r) => {
                    assert!(r.starts_with("250"), "{io}: {r}");
                    acked += 1;
                }
                None => break,
            }
        }
        // Four 16 KiB blocks fit in the pipe; the next one cannot be written, so it is not
        // acknowledged (it used to be, and every one after it, into unbounded memory).
        assert!(
            acked <= 6,
            "{io}: {acked} messages acknowledged, nothing reads them"
        );
        let rss = rss_kib(child.id());
        assert!(rss < 64 * 1024, "{io}: RSS {rss} KiB");
        // SIGTERM ends it: the drain timeout (2 s) passes, then at most 5 s for the printer.
        let t0 = Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{io}: {status}");
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(12),
                "{io}: still running"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_closed_output_turns_messages_into_451() {
    for io in IO_MODES {
        let dir = TempDir::new("debug-epipe");
        let fifo = dir.join("out");
        mkfifo(&fifo);
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let out = OpenOptions::new().write(true).open(&fifo).unwrap();
        let (mut child, port) = debug_into(out, io);
        let mut c = Raw::connect(port);
        let first = c.message(0, Duration::from_secs(10)).unwrap();
        assert!(first.starts_with("250"), "{io}: {first}");
        drop(reader);
        for i in 1..4 {
            let r = c.message(i, Duration::from_secs(10)).unwrap();
            assert!(r.starts_with("451 4.3.0"), "{io}: message {i}: {r}");
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert!(status.success(), "{io}: {status}");
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(
            err.contains("cannot write messages to the output"),
            "{io}: {err}"
        );
    }
}

/// With an output that is read (a regular file), SIGTERM ends `debug` at once: the printer
/// is stopped by a message of its own, not by every shard's queue going away, and nothing
/// claims the output is unread.
#[test]
fn a_read_output_lets_debug_exit_at_once() {
    for io in IO_MODES {
        let dir = TempDir::new("debug-exit");
        let path = dir.join("out.txt");
        let (mut child, port) = debug_into(std::fs::File::create(&path).unwrap(), io);
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
            .unwrap();
        s.write_all(b"Subject: exit\r\n\r\nhi\r\n.\r\nQUIT\r\n")
            .unwrap();
        let mut r = BufReader::new(s);
        let mut all = String::new();
        while let Ok(n) = r.read_line(&mut all) {
            if n == 0 {
                break;
            }
        }
        assert!(all.contains("221"), "{io}: {all}");
        let t0 = Instant::now();
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "{io}: no exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "{io}");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{io}: {:?}",
            t0.elapsed()
        );
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(!err.contains("not being read"), "{io}: {err}");
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("Subject: exit"));
    }
}
