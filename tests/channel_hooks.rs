//! The seed's SMTPChannel extension point through the library, end to end: the handler of
//! `examples/xstats.rs` (a custom `XSTATS` verb and EHLO keyword) and a handler that sees every
//! command line, each served in process by `Server::builder()` on 127.0.0.1:0 under both
//! drivers, and driven by Python's smtplib (`docmd`, `esmtp_features`; tests/peers/channel_hooks.py).

mod common;
#[allow(dead_code)] // its `main` is the example's, not ours
#[path = "../examples/xstats.rs"]
mod xstats;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{port_args, run_python};
use ringrelay::handler::Service;
use ringrelay::proto::{CommandHook, EnhancedCode};
use ringrelay::server::{IoMode, RunReport, ServerError, ShutdownHandle};
use ringrelay::{Handler, Reply, Server, ServerConfig, Session, SessionConfig};
use serde_json::Value;

const PEER_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A server running on its own thread.
struct Running {
    addr: SocketAddr,
    shutdown: ShutdownHandle,
    thread: JoinHandle<Result<RunReport, ServerError>>,
}

impl Running {
    /// Serves `handler` on one shard at 127.0.0.1:0, allowing 3 protocol errors per session.
    fn start<H: Service + Clone + Send>(handler: H, io: IoMode) -> Running {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let config = ServerConfig {
                listen: vec!["127.0.0.1:0".parse().unwrap()],
                shards: Some(1),
                io,
                handle_signals: false,
                log_ready: false,
                drain_timeout: Duration::from_secs(5),
                session: SessionConfig {
                    max_errors: 3,
                    ..SessionConfig::default()
                },
                ..ServerConfig::default()
            };
            let server = Server::builder().config(config).handler(handler).build()?;
            tx.send((server.local_addrs()[0], server.shutdown_handle()))
                .unwrap();
            server.run()
        });
        let (addr, shutdown) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server did not start");
        Running {
            addr,
            shutdown,
            thread,
        }
    }

    /// Drains the server and requires a clean stop within `STOP_TIMEOUT`.
    fn stop(self) {
        self.shutdown.shutdown();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !self.thread.is_finished() {
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let report = self.thread.join().unwrap().expect("server run");
        assert!(report.drained);
    }

    /// Runs the peer script's `subcommand` against the server; returns its JSON report.
    fn peer(&self, subcommand: &str) -> Value {
        let out = run_python(
            "channel_hooks.py",
            &port_args(self.addr.port(), &[subcommand]),
            PEER_TIMEOUT,
        );
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

/// `[code, text]` as the peer reported it.
fn reply(v: &Value) -> (u64, &str) {
    (v[0].as_u64().unwrap(), v[1].as_str().unwrap())
}

#[test]
fn xstats_example_through_smtplib() {
    for io in [IoMode::Uring, IoMode::Epoll] {
        let server = Running::start(xstats::XStats::default(), io);
        let r = server.peer("xstats");
        // EHLO lists the handler's keyword among the core's own.
        assert_eq!(r["has_xstats"], true, "{io:?}: {r}");
        for keyword in ["xstats", "pipelining", "size", "help"] {
            assert!(
                r["features"].get(keyword).is_some(),
                "{io:?}: {keyword}: {r}"
            );
        }
        assert_eq!(
            reply(&r["xstats_before"]),
            (
                250,
                "2.0.0 sessions 1\n2.0.0 messages 0\n2.0.0 recipients 0\n2.0.0 octets 0"
            ),
            "{io:?}"
        );
        assert_eq!(
            reply(&r["xstats_after"]),
            (
                250,
                "2.0.0 sessions 1\n2.0.0 messages 1\n2.0.0 recipients 2\n2.0.0 octets 25"
            ),
            "{io:?}"
        );
        // Verbs the handler leaves alone still get the core's 500.
        assert_eq!(
            reply(&r["xfoo"]),
            (500, "5.5.1 Error: command \"XFOO\" not recognized"),
            "{io:?}"
        );
        // 25 answered XSTATS spend nothing of a budget of 3 errors: the 500 above, the 501
        // and the last 500 do, and only the last brings the 421.
        let answered: Vec<u64> = r["answered"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect();
        assert_eq!(answered, [250; 25], "{io:?}");
        assert_eq!(
            reply(&r["xstats_arg"]),
            (501, "5.5.4 Syntax: XSTATS"),
            "{io:?}"
        );
        assert_eq!(reply(&r["noop"]), (250, "2.0.0 Ok"), "{io:?}");
        assert_eq!(reply(&r["xfoo_last"]).0, 500, "{io:?}");
        assert_eq!(
            reply(&r["after"]),
            (421, "4.7.0 localhost Error: too many errors"),
            "{io:?}"
        );
        server.stop();
    }
}

/// Sees every command line first: answers VRFY itself, counts lines for `XLINES`, and lets
/// the core handle everything else.
#[derive(Clone, Default)]
struct EveryLine {
    lines: u64,
}

impl Handler for EveryLine {
    fn collects_message(&self) -> bool {
        false
    }

    fn command_hook(&self) -> CommandHook {
        CommandHook::EveryLine
    }

    fn command(&mut self, session: &Session) -> Option<Reply> {
        let cmd = session.pending_command()?;
        self.lines += 1;
        if cmd.verb_is("VRFY") {
            return Some(Reply::new(252, EnhancedCode::new(2, 5, 0), "Not telling"));
        }
        if cmd.verb_is("XLINES") {
            let text = format!("{} lines", self.lines);
            return Some(Reply::new(250, EnhancedCode::new(2, 0, 0), text));
        }
        None
    }

    fn process_message(&mut self, _session: &Session, _message: &[u8]) -> Option<Reply> {
        Some(Reply::new(250, EnhancedCode::new(2, 0, 0), "seen"))
    }
}

#[test]
fn every_line_seen_before_the_core_answers() {
    for io in [IoMode::Uring, IoMode::Epoll] {
        let server = Running::start(EveryLine::default(), io);
        let r = server.peer("every-line");
        assert_eq!(reply(&r["vrfy"]), (252, "2.5.0 Not telling"), "{io:?}");
        // EHLO, VRFY, MAIL, RCPT, DATA, then XLINES itself (message lines are not commands).
        assert_eq!(reply(&r["xlines"]), (250, "2.0.0 6 lines"), "{io:?}");
        assert_eq!(reply(&r["quit"]), (221, "2.0.0 Bye"), "{io:?}");
        server.stop();
    }
}
