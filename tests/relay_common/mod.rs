//! The relay test kit shared by the tests/relay_*.rs files:
//! `ringrelay proxy` under test, the recording aiosmtpd upstream
//! (tests/peers/relay_recorder.py), the scripted misbehaving upstream
//! (tests/peers/relay_upstream.py) and a raw SMTP client that can bind to 127.0.0.2,
//! pipeline, send BDAT and hang up mid-message.
#![allow(dead_code)]

pub mod received;
#[allow(unused_imports)]
pub use received::*;

use super::common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub const PEER_START: Duration = Duration::from_secs(30);
/// Our `--hostname`, the `by` of the Received: field.
pub const RELAY_HOST: &str = "relay.test";

// ---------------------------------------------------------------------------------------------
// The relay under test

/// A `Scripted` upstream in `mode`, a relay in front of it (`proxy` with `extra`), and a
/// client connected to the relay that said EHLO `helo`. Keep the upstream bound (not `_`):
/// dropping it stops it.
pub fn scripted_relay(
    io: &str,
    mode: &str,
    extra: &[&str],
    helo: &str,
) -> (Scripted, Server, Client) {
    let up = Scripted::start(mode);
    let server = proxy(io, &[up.port], extra);
    let mut c = Client::connect(server.port());
    c.ehlo(helo);
    (up, server, c)
}

/// `ringrelay proxy` to the given upstream ports, one shard unless `extra` says otherwise.
pub fn proxy(io: &str, upstreams: &[u16], extra: &[&str]) -> Server {
    let mut args: Vec<String> = ["--hostname", RELAY_HOST, "--metrics-listen", "none"]
        .map(String::from)
        .to_vec();
    if !extra.contains(&"--shards") {
        args.extend(["--shards".to_string(), "1".to_string()]);
    }
    for p in upstreams {
        args.push("--upstream".into());
        args.push(format!("127.0.0.1:{p}"));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::mode("proxy", io, &args)
}

// ---------------------------------------------------------------------------------------------
// The recording upstream (aiosmtpd)

pub struct Recorder {
    pub peer: Peer,
    pub dir: TempDir,
    pub port: u16,
}

/// One message the recorder accepted.
#[derive(Debug, Clone)]
pub struct Stored {
    pub from: String,
    pub rcpts: Vec<String>,
    pub options: String,
    /// `ip:port` of the upstream connection it came on.
    pub conn: String,
    pub content: Vec<u8>,
}

impl Recorder {
    pub fn start(extra: &[&str]) -> Recorder {
        let dir = TempDir::new("relay-rec");
        let port = free_port();
        let mut args = vec![port.to_string(), dir.path().to_string_lossy().into_owned()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut peer = Peer::python("relay_recorder.py", &args);
        peer.wait_for_line("ready", PEER_START);
        Recorder { peer, dir, port }
    }

    /// Stops it and returns what it stored, in order of acceptance.
    pub fn finish(mut self) -> Vec<Stored> {
        let out = self.peer.finish(Duration::from_secs(60));
        out.assert_success("relay_recorder.py");
        let mut stored = Vec::new();
        for line in out.stdout.lines() {
            let Some(rest) = line.strip_prefix("MESSAGE ") else {
                continue;
            };
            let f: Vec<&str> = rest.split(' ').collect();
            assert_eq!(f.len(), 7, "bad recorder line {line:?}");
            let n: usize = f[0].parse().unwrap();
            assert_eq!(n, stored.len() + 1, "recorder numbering: {line:?}");
            let content = std::fs::read(self.dir.join(&format!("{n}.eml"))).unwrap();
            assert_eq!(content.len(), f[4].parse::<usize>().unwrap());
            stored.push(Stored {
                from: f[1].trim_matches(['<', '>']).to_string(),
                rcpts: f[2]
                    .split(',')
                    .map(|r| r.trim_matches(['<', '>']).to_string())
                    .collect(),
                options: f[5].to_string(),
                conn: f[6].to_string(),
                content,
            });
        }
        let total = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("total="))
            .expect("recorder prints total=N");
        assert_eq!(total.parse::<usize>().unwrap(), stored.len());
        stored
    }
}

// ---------------------------------------------------------------------------------------------
// The scripted upstream

pub struct Scripted {
    pub peer: Peer,
    pub port: u16,
}

/// What the scripted upstream saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub connects: usize,
    pub commands: Vec<String>,
    /// X-Test-Id tokens of the messages it answered 250 to the final dot (in order).
    pub delivered: Vec<String>,
    pub aborted: usize,
    /// `(verb, lines already waiting behind it)` from the slow-mail and no-pipelining modes.
    pub buffered: Vec<(String, usize)>,
    pub stdout: String,
}

impl Scripted {
    pub fn start(mode: &str) -> Scripted {
        let port = free_port();
        let mut peer = Peer::python("relay_upstream.py", &[port.to_string(), mode.to_string()]);
        peer.wait_for_line("ready", PEER_START);
        Scripted { peer, port }
    }

    pub fn wait_for(&mut self, line: &str) {
        self.peer.wait_for_line(line, Duration::from_secs(30));
    }

    pub fn finish(mut self) -> Seen {
        let out = self.peer.finish(Duration::from_secs(30));
        out.assert_success("relay_upstream.py");
        let mut seen = Seen {
            stdout: out.stdout.clone(),
            ..Seen::default()
        };
        for line in out.stdout.lines() {
            let f: Vec<&str> = line.splitn(3, ' ').collect();
            match f[0] {
                "CONNECT" => seen.connects += 1,
                "CMD" => seen.commands.push(f[2].to_string()),
                "DELIVERED" => {
                    seen.delivered
                        .push(line.rsplit(' ').next().unwrap().to_string());
                }
                "ABORTED" => seen.aborted += 1,
                "BUFFERED" => {
                    let (verb, n) = f[2].split_once(' ').expect("BUFFERED k VERB N");
                    seen.buffered.push((verb.to_string(), n.parse().unwrap()));
                }
                _ => {}
            }
        }
        seen
    }
}

// ---------------------------------------------------------------------------------------------
// A raw SMTP client

pub struct Client {
    pub w: TcpStream,
    pub r: BufReader<TcpStream>,
}

/// A reply: its code and its last line (e.g. `250 2.0.0 delivered`).
pub type Answer = (u16, String);

impl Client {
    pub fn connect(port: u16) -> Client {
        Self::connect_from(None, port)
    }

    /// Connects from a chosen local address (any 127.0.0.0/8 address is ours on loopback).
    pub fn connect_from(src: Option<&str>, port: u16) -> Client {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        if let Some(ip) = src {
            let a: SocketAddr = format!("{ip}:0").parse().unwrap();
            sock.bind(&a.into()).unwrap();
        }
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        sock.connect_timeout(&to.into(), Duration::from_secs(10))
            .unwrap();
        let w: TcpStream = sock.into();
        w.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        w.set_nodelay(true).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        let mut c = Client { w, r };
        c.expect(220);
        c
    }

    pub fn reply(&mut self) -> Answer {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.r.read_line(&mut line).expect("reading a reply");
            assert!(n > 0, "the relay closed the connection instead of replying");
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let l = line.trim_end();
            assert!(l.len() >= 3, "short reply line {l:?}");
            let code: u16 = l[..3].parse().unwrap_or_else(|_| panic!("bad reply {l:?}"));
            if l.as_bytes().get(3) != Some(&b'-') {
                return (code, l.to_string());
            }
        }
    }

    pub fn expect(&mut self, code: u16) -> String {
        let (c, l) = self.reply();
        assert_eq!(c, code, "expected {code}, got {l:?}");
        l
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    pub fn cmd(&mut self, line: &str) -> Answer {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    pub fn ok(&mut self, line: &str) -> String {
        let (c, l) = self.cmd(line);
        assert_eq!(c / 100, 2, "{line}: expected 2xx, got {l:?}");
        l
    }

    /// EHLO; the keywords of the extensions the reply lists (upper case).
    pub fn ehlo_keywords(&mut self, name: &str) -> Vec<String> {
        self.send(format!("EHLO {name}\r\n").as_bytes());
        let mut keywords = Vec::new();
        let mut first = true;
        loop {
            let mut line = String::new();
            self.r.read_line(&mut line).expect("reading the EHLO reply");
            assert!(line.starts_with("250"), "EHLO: {line:?}");
            if !first {
                let kw = line[4..].split_whitespace().next().unwrap_or("");
                keywords.push(kw.to_ascii_uppercase());
            }
            first = false;
            if line.as_bytes().get(3) != Some(&b'-') {
                return keywords;
            }
        }
    }

    pub fn ehlo(&mut self, name: &str) {
        self.ok(&format!("EHLO {name}"));
    }

    /// DATA, then the content dot-stuffed and the final dot; the reply to the dot.
    pub fn data(&mut self, content: &[u8]) -> Answer {
        let (c, l) = self.cmd("DATA");
        assert_eq!(c, 354, "DATA: {l:?}");
        let mut wire = stuff(content);
        wire.extend_from_slice(b".\r\n");
        self.send(&wire);
        self.reply()
    }

    /// One whole transaction; the reply to the final dot.
    pub fn transaction(&mut self, from: &str, to: &[&str], content: &[u8]) -> Answer {
        self.ok(&format!("MAIL FROM:<{from}>"));
        for t in to {
            self.ok(&format!("RCPT TO:<{t}>"));
        }
        self.data(content)
    }

    pub fn quit(mut self) {
        let _ = self.cmd("QUIT");
    }
}

/// Dot-stuffs CRLF-terminated content for DATA.
pub fn stuff(content: &[u8]) -> Vec<u8> {
    assert!(content.ends_with(b"\r\n"));
    let mut out = Vec::with_capacity(content.len() + 64);
    let mut at_line_start = true;
    for &b in content {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out
}

/// A small message carrying an `X-Test-Id:` token.
pub fn tagged(token: &str) -> Vec<u8> {
    format!(
        "From: <a@example.com>\r\nTo: <b@example.com>\r\nSubject: {token}\r\nX-Test-Id: {token}\r\n\r\nbody of {token}\r\n.leading dot\r\n"
    )
    .into_bytes()
}
