//! A real Mailman 3 core for tests/mailman.rs: installed by scripts/install-test-deps.sh in
//! a venv ($MAILMAN_VENV, default ~/.cache/ringrelay-mailman-venv; or the
//! `mailman` command $RINGRELAY_MAILMAN names), configured under a
//! temporary directory (SQLite; LMTP on a free loopback port; its outgoing mail to a port the
//! test names; only the lmtp, in, pipeline, out and virgin runners), started once and stopped
//! (with every process it started) when dropped.
#![allow(dead_code)]

use super::common::*;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long Mailman may take to open its LMTP port.
const START: Duration = Duration::from_secs(60);

pub struct Mailman {
    pub dir: TempDir,
    pub lmtp_port: u16,
    cfg: PathBuf,
    running: bool,
}

/// The `mailman` command of the venv scripts/install-test-deps.sh made.
fn mailman_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RINGRELAY_MAILMAN") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let venv = std::env::var("MAILMAN_VENV")
        .unwrap_or_else(|_| format!("{home}/.cache/ringrelay-mailman-venv"));
    let p = PathBuf::from(venv).join("bin/mailman");
    assert!(
        p.exists(),
        "{} not found: run scripts/install-test-deps.sh (it installs Mailman 3 in a venv)",
        p.display()
    );
    p
}

impl Mailman {
    /// Mailman with its outgoing SMTP (list copies, notices) going to 127.0.0.1:`smtp_port`.
    pub fn start(smtp_port: u16) -> Mailman {
        let dir = TempDir::new("mailman");
        let lmtp_port = free_port();
        let var = dir.join("var");
        let postfix = dir.write(
            "postfix.cfg",
            b"[postfix]\npostmap_command: /bin/true\ntransport_file_type: hash\n",
        );
        let mut cfg = format!(
            "[mailman]\nlayout: here\nsite_owner: owner@example.com\n\
             [paths.here]\nvar_dir: {var}\n\
             [database]\nclass: mailman.database.sqlite.SQLiteDatabase\n\
             url: sqlite:///{var}/mailman.db\n\
             [mta]\nincoming: mailman.mta.postfix.LMTP\nconfiguration: {postfix}\n\
             lmtp_host: 127.0.0.1\nlmtp_port: {lmtp_port}\n\
             smtp_host: 127.0.0.1\nsmtp_port: {smtp_port}\n\
             [webservice]\nport: {rest}\n[archiver.prototype]\nenable: no\n",
            var = var.display(),
            postfix = postfix.display(),
            rest = free_port(),
        );
        for r in [
            "archive", "bounces", "command", "digest", "nntp", "rest", "retry", "task",
        ] {
            cfg.push_str(&format!("[runner.{r}]\nstart: no\n"));
        }
        let cfg = dir.write("mailman.cfg", cfg.as_bytes());
        let m = Mailman {
            dir,
            lmtp_port,
            cfg,
            running: true,
        };
        let log = std::fs::File::create(m.dir.join("start.log")).unwrap();
        // The master keeps its stdout: a file, never a pipe the test would wait on.
        let mut start = m.command(&["start"]);
        // Its own process group, which the master inherits: stop() may kill it whole.
        std::os::unix::process::CommandExt::process_group(&mut start, 0);
        start
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        let mut child = start.spawn().expect("spawning mailman start");
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", lmtp_port)).is_err() {
            if t0.elapsed() > START {
                let _ = child.kill();
                let log = std::fs::read_to_string(m.dir.join("start.log")).unwrap_or_default();
                panic!("Mailman's LMTP did not open within {START:?}; start.log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let _ = child.wait();
        m
    }

    /// `mailman -C CFG [--run-as-root] ARGS`.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(mailman_bin());
        c.arg("-C").arg(&self.cfg);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            c.arg("--run-as-root");
        }
        c.args(args);
        c
    }

    /// Runs a `mailman` command to its end (bounded), with `stdin`; panics when it fails.
    pub fn run(&self, args: &[&str], stdin: &str) -> String {
        use std::io::Write;
        let mut c = self.command(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawning mailman");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let t0 = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(status.success(), "mailman {args:?}: {text}");
                return text;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("mailman {args:?} did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A list `name@example.com` with `members`.
    pub fn create_list(&self, list: &str, members: &[&str]) {
        self.run(&["create", list], "");
        let stdin = members.iter().map(|m| format!("{m}\n")).collect::<String>();
        self.run(&["addmembers", "-W", "-", list], &stdin);
    }

    /// Mailman's `var/data`, where its `postfix_domains` map is.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("var").join("data")
    }

    /// `mailman stop`, then waits (bounded) for its master to exit; what is left is killed.
    pub fn stop(&mut self) {
        if !std::mem::replace(&mut self.running, false) {
            return;
        }
        let master = std::fs::read_to_string(self.dir.join("var/master.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        let _ = self.command(&["stop"]).stdout(Stdio::null()).status();
        let Some(pid) = master else {
            return;
        };
        let t0 = Instant::now();
        // SAFETY: signal 0 only checks that the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(200));
        }
        // SAFETY: plain signals, to the master and to its process group when that is not
        // ours (it is the one `start` made).
        unsafe {
            if libc::kill(pid, 0) == 0 {
                let pgid = libc::getpgid(pid);
                libc::kill(pid, libc::SIGKILL);
                if pgid > 1 && pgid != libc::getpgid(0) {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
        }
        // Its runners close their LMTP socket when they go.
        while TcpStream::connect(("127.0.0.1", self.lmtp_port)).is_ok()
            && t0.elapsed() < Duration::from_secs(40)
        {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Mailman {
    fn drop(&mut self) {
        self.stop();
    }
}
