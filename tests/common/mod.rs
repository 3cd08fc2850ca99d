//! Shared helpers for the integration tests: spawn the real `ringrelay` binary, wait for its
//! listening line, run peer programs we did not write (Python's smtplib, swaks, Postfix's
//! smtp-source) against it with a time limit, stop it with a signal and collect what it printed.
//!
//! Nothing leaks: a [`Server`] or [`Peer`] that is dropped without being waited for is killed.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ringrelay");
/// How long a server may take to print its listening line(s).
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopped server may take to exit (no transaction is in flight in most tests).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Both event loops; the key scenarios run under each.
pub const IO_MODES: [&str; 2] = ["uring", "epoll"];

pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn peers_dir() -> PathBuf {
    manifest_dir().join("tests").join("peers")
}

/// Tests that load the machine (thousands of sockets, thousands of messages, timing-sensitive
/// checks) take this lock so that they do not run at the same time as each other within one
/// test binary. The machine has 2 cores.
pub fn heavy() -> MutexGuard<'static, ()> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| Mutex::new(()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// A fresh scratch directory under target/, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = manifest_dir().join("target").join("it-tmp").join(format!(
            "{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn write(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({}, {sig}) failed", child.id());
}

/// Wait for a child with a deadline; None if it is still running at the deadline.
fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn drain_to_vec<R: Read + Send + 'static>(mut r: R) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// What a stopped server printed.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// Time from the signal to the exit.
    pub took: Duration,
}

impl Stopped {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The exit must be a clean `exit(0)`.
    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "server exited with {:?}\n--- stderr ---\n{}\n--- stdout (last 2000 bytes) ---\n{}",
            self.status,
            self.stderr,
            tail(&self.stdout_str(), 2000)
        );
    }

    /// The `sink: sessions=N messages=N recipients=N bytes=N` line (exactly one).
    pub fn sink_summary(&self) -> SinkSummary {
        let out = self.stdout_str();
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("sink:")).collect();
        assert_eq!(
            lines.len(),
            1,
            "expected exactly one 'sink:' summary line on stdout, got:\n{out}\n--- stderr ---\n{}",
            self.stderr
        );
        SinkSummary::parse(lines[0])
            .unwrap_or_else(|| panic!("malformed sink summary line: {:?}", lines[0]))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkSummary {
    pub sessions: u64,
    pub messages: u64,
    pub recipients: u64,
    pub bytes: u64,
}

impl SinkSummary {
    /// Parses exactly `sink: sessions=N messages=N recipients=N bytes=N`.
    pub fn parse(line: &str) -> Option<SinkSummary> {
        let rest = line.strip_prefix("sink: ")?;
        let mut it = rest.split(' ');
        let mut field = |name: &str| -> Option<u64> {
            it.next()?
                .strip_prefix(name)?
                .strip_prefix('=')?
                .parse()
                .ok()
        };
        let s = SinkSummary {
            sessions: field("sessions")?,
            messages: field("messages")?,
            recipients: field("recipients")?,
            bytes: field("bytes")?,
        };
        if it.next().is_some() {
            return None;
        }
        Some(s)
    }
}

/// Parses `key=N` fields out of a peer's one-line report (e.g. `messages=3 bytes=120`).
pub fn report_field(report: &str, key: &str) -> u64 {
    report
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {key}=N in peer report {report:?}"))
}

fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = s.len() - n;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// A running `ringrelay`.
pub struct Server {
    child: Option<Child>,
    /// Every address it printed in its listening lines, in order.
    pub addrs: Vec<SocketAddr>,
    /// Every Unix-domain socket it printed in its listening lines (`unix:PATH`), in order.
    pub unix_paths: Vec<PathBuf>,
    /// The `io=` value of the listening line (`uring` or `epoll`).
    pub io: String,
    /// The `shards=` value of the listening line.
    pub shards: u32,
    pub args: Vec<String>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
    /// The stderr reader: 0 reads, 1 holds the pipe open without reading, 2 ends.
    stderr_state: Arc<std::sync::atomic::AtomicU8>,
}

/// A listening line's address: TCP, or a Unix-domain socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listening {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// `ringrelay: listening on ADDR (io=IO, shards=N)` (ADDR may be `unix:PATH`)
pub fn parse_listening(line: &str) -> Option<(Listening, String, u32)> {
    let rest = line.strip_prefix("ringrelay: listening on ")?;
    let (addr, rest) = rest.split_once(" (io=")?;
    let (io, rest) = rest.split_once(", shards=")?;
    let shards = rest.strip_suffix(')')?.parse().ok()?;
    let addr = match addr.strip_prefix("unix:") {
        Some(path) => Listening::Unix(PathBuf::from(path)),
        None => Listening::Tcp(addr.parse().ok()?),
    };
    Some((addr, io.to_string(), shards))
}

/// The TCP listening lines only (see `parse_listening`).
pub fn parse_listening_line(line: &str) -> Option<(SocketAddr, String, u32)> {
    match parse_listening(line)? {
        (Listening::Tcp(a), io, shards) => Some((a, io, shards)),
        _ => None,
    }
}

impl Server {
    /// Start `ringrelay ARGS...` and wait until it has printed one listening line per
    /// `--listen` argument (one if there is none). Use `--listen 127.0.0.1:0` for a free port.
    pub fn start(args: &[&str]) -> Server {
        let expected = args.iter().filter(|a| **a == "--listen").count().max(1);
        Self::start_expecting(args, expected)
    }

    pub fn start_expecting(args: &[&str], expected_lines: usize) -> Server {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {BIN}: {e}"));
        let stdout = drain_to_vec(child.stdout.take().unwrap());
        let stderr_buf = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        let buf = stderr_buf.clone();
        let stderr_state = Arc::new(std::sync::atomic::AtomicU8::new(0));
        let state = stderr_state.clone();
        let stderr_thread = std::thread::spawn(move || {
            use std::sync::atomic::Ordering;
            let mut r = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                while state.load(Ordering::Acquire) == 1 {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if state.load(Ordering::Acquire) == 2 {
                    break;
                }
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let l = String::from_utf8_lossy(&line).into_owned();
                        buf.lock().unwrap().push_str(&l);
                        let _ = tx.send(l.trim_end().to_string());
                    }
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            addrs: Vec::new(),
            unix_paths: Vec::new(),
            io: String::new(),
            shards: 0,
            args: args.iter().map(|s| s.to_string()).collect(),
            stdout: Some(stdout),
            stderr: stderr_buf,
            stderr_thread: Some(stderr_thread),
            stderr_state,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while server.addrs.len() + server.unix_paths.len() < expected_lines {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some((addr, io, shards)) = parse_listening(&line) {
                        match addr {
                            Listening::Tcp(a) => server.addrs.push(a),
                            Listening::Unix(p) => server.unix_paths.push(p),
                        }
                        server.io = io;
                        server.shards = shards;
                    }
                }
                Err(_) => {
                    let status = server.child.as_mut().unwrap().try_wait().ok().flatten();
                    let err = server.stderr();
                    server.kill();
                    panic!(
                        "ringrelay {args:?} did not print {expected_lines} listening line(s) \
                         within {START_TIMEOUT:?} (exit status: {status:?})\n--- stderr ---\n{err}"
                    );
                }
            }
        }
        server
    }

    /// `ringrelay MODE --listen 127.0.0.1:0 --io IO EXTRA...`
    pub fn mode(mode: &str, io: &str, extra: &[&str]) -> Server {
        let mut args = vec![mode, "--listen", "127.0.0.1:0", "--io", io];
        // Every server records metrics on a port of its own (the default 127.0.0.1:9465 would
        // go to whichever test started first), so the metered path is always the one tested.
        if !extra.contains(&"--metrics-listen") {
            args.extend_from_slice(&["--metrics-listen", "127.0.0.1:0"]);
        }
        args.extend_from_slice(extra);
        let s = Server::start(&args);
        assert_eq!(
            s.io, io,
            "listening line reports io={} but --io {io} was given",
            s.io
        );
        s
    }

    pub fn sink(io: &str, extra: &[&str]) -> Server {
        Self::mode("sink", io, extra)
    }

    pub fn debug(io: &str, extra: &[&str]) -> Server {
        Self::mode("debug", io, extra)
    }

    pub fn port(&self) -> u16 {
        self.addrs[0].port()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Everything the server has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// From now on nobody reads the server's stderr (the pipe stays open, and fills).
    pub fn stop_reading_stderr(&self) {
        self.stderr_state
            .store(1, std::sync::atomic::Ordering::Release);
    }

    pub fn signal(&self, sig: libc::c_int) {
        signal(self.child.as_ref().unwrap(), sig);
    }

    /// Is the process still running?
    pub fn running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Send SIGTERM and wait for the exit (at most [`STOP_TIMEOUT`]).
    pub fn stop(self) -> Stopped {
        self.stop_with(libc::SIGTERM, STOP_TIMEOUT)
    }

    /// Send `sig` and wait for the exit, at most `timeout` (then SIGKILL and panic).
    pub fn stop_with(self, sig: libc::c_int, timeout: Duration) -> Stopped {
        let t0 = Instant::now();
        self.signal(sig);
        self.wait(timeout, t0)
    }

    /// Wait for an exit already under way (after [`Server::signal`]).
    pub fn wait(mut self, timeout: Duration, since: Instant) -> Stopped {
        let mut child = self.child.take().unwrap();
        let status = match wait_deadline(&mut child, timeout) {
            Some(st) => st,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let err = self.stderr();
                panic!(
                    "ringrelay {:?} did not exit within {timeout:?} after the signal\n--- stderr ---\n{err}",
                    self.args
                );
            }
        };
        let took = since.elapsed();
        let stdout = self.stdout.take().unwrap().join().unwrap_or_default();
        if self.stderr_state.load(std::sync::atomic::Ordering::Acquire) == 1 {
            // Nobody reads any more: end the reader instead of waiting for an EOF it never
            // looks for.
            self.stderr_state
                .store(2, std::sync::atomic::Ordering::Release);
        }
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        Stopped {
            status,
            stdout,
            stderr: self.stderr(),
            took,
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The output of a finished peer program.
#[derive(Debug)]
pub struct PeerOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl PeerOutput {
    pub fn assert_success(&self, what: &str) {
        assert!(
            self.status.success(),
            "{what} failed ({:?}, after {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.took,
            tail(&self.stdout, 8000),
            tail(&self.stderr, 8000)
        );
    }
}

/// A peer program (Python script, swaks, smtp-source) with a hard time limit.
pub struct Peer {
    child: Option<Child>,
    what: String,
    started: Instant,
    stdout_lines: Option<mpsc::Receiver<String>>,
    stdout_all: Arc<Mutex<String>>,
    stdout_thread: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    pub stdin: Option<ChildStdin>,
}

/// The Python interpreter for the peers: `$RINGRELAY_TEST_PYTHON` or `python3`.
pub fn python() -> String {
    std::env::var("RINGRELAY_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Is `program` runnable? Panics with install instructions if not: a missing peer is a
/// broken test environment, not a passing test.
pub fn require(program: &str, probe_arg: &str) {
    let ok = Command::new(program)
        .arg(probe_arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "{program} is not installed; run scripts/install-test-deps.sh (as root) first"
    );
}

impl Peer {
    pub fn spawn(program: &str, args: &[String]) -> Peer {
        Self::spawn_in(program, args, None)
    }

    pub fn spawn_in(program: &str, args: &[String], cwd: Option<&Path>) -> Peer {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONIOENCODING", "utf-8");
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "spawning {program} {args:?}: {e} \
                 (run scripts/install-test-deps.sh to install the test peers)"
            )
        });
        let what = format!("{program} {}", args.join(" "));
        let stdin = child.stdin.take();
        let stderr = drain_to_vec(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let all = Arc::new(Mutex::new(String::new()));
        let all2 = all.clone();
        let out = child.stdout.take().unwrap();
        let stdout_thread = std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let l = String::from_utf8_lossy(&line).into_owned();
                        all2.lock().unwrap().push_str(&l);
                        let _ = tx.send(l.trim_end().to_string());
                    }
                }
            }
        });
        Peer {
            child: Some(child),
            what,
            started: Instant::now(),
            stdout_lines: Some(rx),
            stdout_all: all,
            stdout_thread: Some(stdout_thread),
            stderr: Some(stderr),
            stdin,
        }
    }

    /// Sends `sig` to the peer process (e.g. SIGTERM to a ringrelay started as a peer).
    pub fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            signal(c, sig);
        }
    }

    /// `python3 tests/peers/SCRIPT ARGS...`
    pub fn python(script: &str, args: &[String]) -> Peer {
        let mut a = vec![peers_dir().join(script).to_string_lossy().into_owned()];
        a.extend_from_slice(args);
        Self::spawn(&python(), &a)
    }

    /// Wait until the peer prints `want` on a line of its stdout (within `timeout`).
    pub fn wait_for_line(&mut self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let rx = self.stdout_lines.as_ref().unwrap();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l == want => return,
                Ok(_) => continue,
                Err(_) => {
                    let what = self.what.clone();
                    let out = self.finish(Duration::from_secs(1));
                    panic!(
                        "{what}: no {want:?} line within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                        out.stdout, out.stderr
                    );
                }
            }
        }
    }

    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Wait for the exit (killing it after `timeout`) and collect its output.
    pub fn finish(&mut self, timeout: Duration) -> PeerOutput {
        drop(self.stdin.take());
        let mut child = self.child.take().expect("peer already finished");
        let status = match wait_deadline(&mut child, timeout) {
            Some(st) => st,
            None => {
                let _ = child.kill();
                let st = child.wait().unwrap();
                let out = self.collect(st);
                panic!(
                    "{} did not finish within {timeout:?}; killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.what,
                    tail(&out.stdout, 8000),
                    tail(&out.stderr, 8000)
                );
            }
        };
        self.collect(status)
    }

    fn collect(&mut self, status: ExitStatus) -> PeerOutput {
        if let Some(t) = self.stdout_thread.take() {
            let _ = t.join();
        }
        let stderr = self
            .stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        PeerOutput {
            status,
            stdout: self.stdout_all.lock().unwrap().clone(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            took: self.started.elapsed(),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run a Python peer script to completion (bounded by `timeout`) and require exit status 0.
/// Returns its stdout.
pub fn run_python(script: &str, args: &[String], timeout: Duration) -> String {
    let mut p = Peer::python(script, args);
    let out = p.finish(timeout);
    out.assert_success(&format!("python3 tests/peers/{script} {}", args.join(" ")));
    out.stdout
}

/// `["--port", PORT]` followed by `rest`.
pub fn port_args(port: u16, rest: &[&str]) -> Vec<String> {
    let mut v = vec!["--port".to_string(), port.to_string()];
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

/// A TCP port that was free a moment ago (for modes that cannot be told to use port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What `ringrelay debug` must print for one accepted message, per the contract:
/// `---------- MESSAGE FOLLOWS ----------`, `mail options: [...]` (Python list repr of the MAIL
/// parameters, upper-cased as Python's smtpd does, only when there are any), the header lines,
/// `X-Peer: IP` right before the first empty line (or after the last line if there is none),
/// the rest, `------------ END MESSAGE ------------`. Lines end in LF; `content` is the message
/// as the client meant it (after dot-unstuffing), its lines ending in CRLF.
pub fn debug_render(content: &[u8], peer_ip: &str, mail_options: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"---------- MESSAGE FOLLOWS ----------\n");
    if !mail_options.is_empty() {
        let items: Vec<String> = mail_options
            .iter()
            .map(|o| format!("'{}'", o.to_uppercase()))
            .collect();
        out.extend_from_slice(format!("mail options: [{}]\n", items.join(", ")).as_bytes());
    }
    let peer_line = format!("X-Peer: {peer_ip}\n");
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                lines.push(&rest[..i]);
                rest = &rest[i + 2..];
            }
            None => {
                lines.push(rest);
                rest = &[];
            }
        }
    }
    let mut in_headers = true;
    for line in lines {
        if in_headers && line.is_empty() {
            out.extend_from_slice(peer_line.as_bytes());
            in_headers = false;
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    if in_headers {
        out.extend_from_slice(peer_line.as_bytes());
    }
    out.extend_from_slice(b"------------ END MESSAGE ------------\n");
    out
}

/// Compare the server's stdout with what it must print, with a readable report on mismatch.
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let line_start = want[..first.min(want.len())]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let ctx = |v: &[u8]| {
        let end = (first + 200).min(v.len());
        String::from_utf8_lossy(&v[line_start.min(v.len())..end]).into_owned()
    };
    panic!(
        "{what}: output differs at byte {first} (got {} bytes, expected {})\n\
         --- got (from the differing line) ---\n{}\n--- expected ---\n{}\n\
         --- whole output got ---\n{}",
        got.len(),
        want.len(),
        ctx(got),
        ctx(want),
        String::from_utf8_lossy(got)
    );
}

/// Postfix's load generator (Debian package postfix).
pub const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";

/// Runs `smtp-source OPTS -M HELO -f source@example.org -t sink@example.org 127.0.0.1:PORT`
/// within `timeout` and requires success (smtp-source stops at the first reply it did not
/// expect, so success means every message got its 250).
pub fn smtp_source(port: u16, helo: &str, opts: &[&str], timeout: Duration) -> PeerOutput {
    assert!(
        Path::new(SMTP_SOURCE).exists(),
        "{SMTP_SOURCE} missing: run scripts/install-test-deps.sh (Debian package postfix)"
    );
    let mut args: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
    for a in [
        "-M",
        helo,
        "-f",
        "source@example.org",
        "-t",
        "sink@example.org",
    ] {
        args.push(a.to_string());
    }
    args.push(format!("127.0.0.1:{port}"));
    let mut p = Peer::spawn(SMTP_SOURCE, &args);
    let out = p.finish(timeout);
    out.assert_success(&format!("smtp-source {}", args.join(" ")));
    out
}

/// A self-signed certificate for 127.0.0.1 and localhost (an end entity, not a CA, so rustls
/// accepts it as its own trust anchor), made with openssl in `dir`: (cert.pem, key.pem).
pub fn test_certificate(dir: &TempDir) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed by scripts/install-test-deps.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

// ---------------------------------------------------------------------------------------------
// The admin HTTP listener (metrics)

/// `ringrelay: metrics on http://ADDR/metrics`
pub fn metrics_addr(server: &Server) -> SocketAddr {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let err = server.stderr();
        if let Some(addr) = err.lines().find_map(|l| {
            l.strip_prefix("ringrelay: metrics on http://")?
                .strip_suffix("/metrics")?
                .parse()
                .ok()
        }) {
            return addr;
        }
        assert!(
            Instant::now() < deadline,
            "no metrics line on stderr:\n{err}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A bare HTTP/1.0 GET; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

/// The value of the sample `series` (name with its labels, exactly as exposed).
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// Fails unless `promtool check metrics` accepts `text`.
pub fn promtool_check(text: &str) {
    require("promtool", "--version");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
