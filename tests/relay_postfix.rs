//! Postfix itself as the MTA in front of `ringrelay proxy`: a private Postfix instance (its
//! own config and queue directories under target/, `relayhost = [127.0.0.1]:PROXYPORT`,
//! smtpd on a free loopback port, no chroot, logging to a file) is started and stopped by the
//! test, mail is submitted to it over SMTP (swaks, smtp-source), and it delivers through
//! ringrelay to the recording aiosmtpd upstream (tests/peers/relay_recorder.py).
//!
//! It also shows what the 4xx mapping is for: while the upstream is down ringrelay answers
//! 451, Postfix keeps the message in its queue, and delivers it once the upstream is back.
//!
//! Needs root (Postfix's master runs its daemons as the `postfix` user) and the Debian postfix
//! package; no system Postfix configuration is used or changed.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const POSTFIX: &str = "/usr/sbin/postfix";
const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";
const RELAY_HOST: &str = "relay.test";

/// A private Postfix instance; stopped (or aborted) on drop.
struct Postfix {
    conf: PathBuf,
    queue: PathBuf,
    log: PathBuf,
    port: u16,
    running: bool,
}

fn postfix_user() -> (u32, u32) {
    let name = std::ffi::CString::new("postfix").unwrap();
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "no 'postfix' user: install the Debian postfix package (scripts/install-test-deps.sh)"
    );
    // SAFETY: pw is non-null and points to getpwnam's static buffer.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// Runs `postfix -c CONF ARGS` with a time limit; returns (success, output).
fn postfix_cmd(conf: &Path, args: &[&str]) -> (bool, String) {
    let mut a = vec!["-c".to_string(), conf.display().to_string()];
    a.extend(args.iter().map(|s| s.to_string()));
    let mut p = Peer::spawn(POSTFIX, &a);
    let out = p.finish(Duration::from_secs(60));
    (
        out.status.success(),
        format!("{}{}", out.stdout, out.stderr),
    )
}

impl Postfix {
    /// Writes the instance's configuration under `dir` and starts it.
    fn start(dir: &Path, relay_port: u16) -> Postfix {
        assert!(
            Path::new(POSTFIX).exists(),
            "{POSTFIX} missing: run scripts/install-test-deps.sh (Debian package postfix)"
        );
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "a private Postfix instance needs root (its master switches to the postfix user)"
        );
        let (uid, gid) = postfix_user();
        let conf = dir.join("conf");
        let queue = dir.join("queue");
        let data = dir.join("data");
        let log = dir.join("maillog");
        for d in [&conf, &queue, &data] {
            std::fs::create_dir_all(d).unwrap();
        }
        // Postfix's own files (master.lock, caches) live here and are the postfix user's.
        std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
        let port = free_port();
        let main_cf = format!(
            "compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.test
mydomain = test
myorigin = mta.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{relay_port}
smtp_dns_support_level = disabled
smtpd_relay_restrictions = permit_mynetworks, reject
alias_maps =
alias_database =
local_recipient_maps =
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = {log}
maillog_file_prefixes = {dir}
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
biff = no
",
            queue = queue.display(),
            data = data.display(),
            log = log.display(),
            dir = dir.display(),
        );
        // Only the services this test needs; nothing chrooted.
        let master_cf = format!(
            "127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"
        );
        std::fs::write(conf.join("main.cf"), main_cf).unwrap();
        std::fs::write(conf.join("master.cf"), master_cf).unwrap();
        let mut pf = Postfix {
            conf,
            queue,
            log,
            port,
            running: true,
        };
        let (ok, out) = postfix_cmd(&pf.conf, &["start"]);
        assert!(
            ok,
            "postfix start failed: {out}\n--- maillog ---\n{}",
            pf.maillog()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                pf.running = false;
                let _ = postfix_cmd(&pf.conf, &["abort"]);
                panic!(
                    "postfix did not listen on {port}\n--- maillog ---\n{}",
                    pf.maillog()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        pf
    }

    fn maillog(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the maillog has `n` lines containing every one of `parts`.
    fn wait_log(&self, parts: &[&str], n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines: Vec<String> = self
                .maillog()
                .lines()
                .filter(|l| parts.iter().all(|p| l.contains(p)))
                .map(String::from)
                .collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "no {n} maillog lines with {parts:?} within {timeout:?}\n--- maillog ---\n{}",
                self.maillog()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Processes whose working directory is this instance's queue: its daemons.
    fn processes(&self) -> Vec<u32> {
        let mut v = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(cwd) = std::fs::read_link(e.path().join("cwd")) {
                if cwd.starts_with(&self.queue) {
                    v.push(pid);
                }
            }
        }
        v
    }

    /// `postfix stop`, then every daemon of the instance must be gone (bounded).
    fn stop(mut self) {
        self.running = false;
        let (ok, out) = postfix_cmd(&self.conf, &["stop"]);
        assert!(ok, "postfix stop failed: {out}\n{}", self.maillog());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "postfix processes {left:?} still running 20 s after postfix stop"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if self.running {
            let _ = Command::new(POSTFIX)
                .arg("-c")
                .arg(&self.conf)
                .arg("abort")
                .status();
        }
    }
}

/// Files the recorder stored so far.
fn stored(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .count()
    })
}

fn wait_stored(dir: &Path, n: usize, timeout: Duration, pf: &Postfix) {
    let deadline = Instant::now() + timeout;
    while stored(dir) < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} messages delivered upstream within {timeout:?}\n--- maillog ---\n{}",
            stored(dir),
            pf.maillog()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn postfix_in_front(io: &str) {
    require("swaks", "--version");
    let _heavy = heavy();
    let tmp = TempDir::new("relay-postfix");
    let rec_dir = tmp.join("rec");
    std::fs::create_dir_all(&rec_dir).unwrap();
    // The upstream's port is fixed now, but nothing listens there yet.
    let up_port = free_port();
    let server = Server::mode(
        "proxy",
        io,
        &[
            "--hostname",
            RELAY_HOST,
            "--metrics-listen",
            "none",
            "--upstream",
            &format!("127.0.0.1:{up_port}"),
        ],
    );
    let pf = Postfix::start(tmp.path(), server.port());

    // 1. Upstream down: ringrelay says 451 at MAIL, Postfix defers and keeps the message.
    let swaks = |token: &str| {
        let mut p = Peer::spawn(
            "swaks",
            &[
                "--server".to_string(),
                format!("127.0.0.1:{}", pf.port),
                "--helo".into(),
                "client.example".into(),
                "--from".into(),
                "sender@example.org".into(),
                "--to".into(),
                "rcpt@example.com".into(),
                "--header".into(),
                format!("X-Test-Id: {token}"),
                "--body".into(),
                format!("body of {token}\n.dot line\n"),
                "--timeout".into(),
                "20".into(),
            ],
        );
        let out = p.finish(Duration::from_secs(60));
        out.assert_success("swaks to postfix");
        assert!(
            out.stdout.contains("<-  250 2.0.0 Ok: queued as"),
            "{}",
            out.stdout
        );
    };
    swaks("early");
    let deferred = pf.wait_log(
        &["status=deferred", "451 4.4.1"],
        1,
        Duration::from_secs(30),
    );
    assert!(
        deferred[0].contains(&format!("relay=127.0.0.1[127.0.0.1]:{}", server.port())),
        "{deferred:?}"
    );

    // 2. The upstream comes up: Postfix's retry delivers through the relay.
    let mut rec = Peer::python(
        "relay_recorder.py",
        &[up_port.to_string(), rec_dir.display().to_string()],
    );
    rec.wait_for_line("ready", Duration::from_secs(30));
    wait_stored(&rec_dir, 1, Duration::from_secs(60), &pf);

    // 3. Load: 200 messages from 5 smtp-source sessions into Postfix, all relayed.
    assert!(Path::new(SMTP_SOURCE).exists(), "{SMTP_SOURCE} missing");
    let target = format!("127.0.0.1:{}", pf.port);
    let mut src = Peer::spawn(
        SMTP_SOURCE,
        &[
            "-s",
            "5",
            "-m",
            "200",
            "-l",
            "1024",
            "-d",
            "-M",
            "source.example",
            "-f",
            "source@example.org",
            "-t",
            "sink@example.com",
            target.as_str(),
        ]
        .map(String::from),
    );
    src.finish(Duration::from_secs(120))
        .assert_success("smtp-source into postfix");
    swaks("late");
    wait_stored(&rec_dir, 202, Duration::from_secs(120), &pf);
    let sent = pf.wait_log(
        &["status=sent", "250 2.0.0 recorded as"],
        202,
        Duration::from_secs(20),
    );
    assert!(
        sent.iter()
            .all(|l| l.contains(&format!("relay=127.0.0.1[127.0.0.1]:{}", server.port()))),
        "{sent:?}"
    );
    pf.stop();
    server.stop().assert_success();
    let out = rec.finish(Duration::from_secs(60));
    out.assert_success("relay_recorder.py");
    let total: usize = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("total="))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        total, 202,
        "exactly one delivery per message\n{}",
        out.stdout
    );

    // Every message: our Received: on top (from Postfix's HELO), Postfix's right below it,
    // no other; the two swaks messages byte for byte.
    let mut tokens = Vec::new();
    for n in 1..=total {
        let content = std::fs::read(rec_dir.join(format!("{n}.eml"))).unwrap();
        let text = String::from_utf8_lossy(&content);
        let head = text.split("\r\n\r\n").next().unwrap();
        assert!(
            head.starts_with(&format!(
                "Received: from mta.test ([127.0.0.1])\r\n\tby {RELAY_HOST} (ringrelay) with ESMTP id "
            )),
            "message {n}:\n{text}"
        );
        let fields: Vec<&str> = head
            .split("\r\n")
            .filter(|l| l.starts_with("Received:"))
            .collect();
        assert_eq!(fields.len(), 2, "message {n}:\n{text}");
        assert!(
            head.contains("\r\n\tby mta.test (Postfix) with "),
            "message {n}:\n{text}"
        );
        if let Some(t) = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("X-Test-Id: "))
        {
            assert!(
                text.contains(&format!("\r\n\r\nbody of {t}\r\n.dot line\r\n")),
                "message {n}:\n{text}"
            );
            tokens.push((n, t.to_string()));
        }
    }
    // The deferred message was the first one delivered, once the upstream was up.
    assert_eq!(
        tokens,
        [(1, "early".to_string()), (tokens[1].0, "late".to_string())]
    );
}

#[test]
fn postfix_in_front_uring() {
    postfix_in_front("uring");
}

#[test]
fn postfix_in_front_epoll() {
    postfix_in_front("epoll");
}
