//! A private Postfix instance in front of ringrelay, for tests/relay_postfix.rs and
//! tests/mailman.rs: its own config and queue directories under the test's directory,
//! `relayhost = [127.0.0.1]:PORT` (ringrelay), smtpd on a free loopback port, no chroot,
//! logging to a file; started by `Postfix::start`, stopped (or aborted) when dropped.
//!
//! Needs root (Postfix's master runs its daemons as the `postfix` user) and the Debian postfix
//! package; no system Postfix configuration is used or changed.
#![allow(dead_code)]

use super::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const POSTFIX: &str = "/usr/sbin/postfix";

/// A private Postfix instance; stopped (or aborted) on drop.
pub struct Postfix {
    conf: PathBuf,
    queue: PathBuf,
    log: PathBuf,
    /// Its smtpd's loopback port.
    pub port: u16,
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
    /// Writes the instance's configuration under `dir` and starts it, relaying everything
    /// to `[127.0.0.1]:relay_port`.
    #[allow(dead_code)]
    pub fn start(dir: &Path, relay_port: u16) -> Postfix {
        Self::start_routing(dir, &format!("relayhost = [127.0.0.1]:{relay_port}"))
    }

    /// Writes the instance's configuration under `dir` and starts it; `routing` is the
    /// main.cf lines that say where mail goes (a `relayhost`, a `default_transport`).
    pub fn start_routing(dir: &Path, routing: &str) -> Postfix {
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
{routing}
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
lmtp      unix  - - n -  - lmtp
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

    /// Submits one message to the instance with swaks (HELO client.example, from
    /// sender@example.org, to `to`; `extra` swaks options) and requires Postfix to queue it.
    pub fn submit(&self, to: &str, extra: &[String]) {
        let mut args: Vec<String> = [
            "--server",
            &format!("127.0.0.1:{}", self.port),
            "--helo",
            "client.example",
            "--from",
            "sender@example.org",
            "--to",
            to,
            "--timeout",
            "20",
        ]
        .map(String::from)
        .to_vec();
        args.extend_from_slice(extra);
        let out = Peer::spawn("swaks", &args).finish(Duration::from_secs(60));
        out.assert_success("swaks to postfix");
        assert!(
            out.stdout.contains("<-  250 2.0.0 Ok: queued as"),
            "{}",
            out.stdout
        );
    }

    pub fn maillog(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the maillog has `n` lines containing every one of `parts`.
    pub fn wait_log(&self, parts: &[&str], n: usize, timeout: Duration) -> Vec<String> {
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
    pub fn processes(&self) -> Vec<u32> {
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
    pub fn stop(mut self) {
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
