//! The DebuggingServer: prints every accepted message in the seed's format.
//!
//! ```text
//! ---------- MESSAGE FOLLOWS ----------
//! mail options: ['SIZE=123']          (only when MAIL had parameters)
//! <header lines>
//! X-Peer: 127.0.0.1                   (right after the headers)
//!
//! <body>
//! ------------ END MESSAGE ------------
//! ```
//!
//! A shard formats the whole block and hands it to one printer thread over a channel, so
//! printing never blocks a shard and two messages never interleave.

use std::io::Write;
use std::sync::mpsc;
use std::thread;

use super::Handler;
use crate::proto::{Reply, Session};

/// The printer thread; dropping every `Debug` handler and calling `finish` flushes it.
#[derive(Debug)]
pub struct Printer {
    tx: mpsc::Sender<Vec<u8>>,
    thread: thread::JoinHandle<()>,
}

impl Printer {
    /// Starts a printer writing blocks to `out` (normally stdout).
    pub fn start(mut out: impl Write + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let thread = thread::Builder::new()
            .name("ringrelay-printer".into())
            .spawn(move || {
                // An empty block is the stop mark sent by `finish`.
                for block in rx.iter().take_while(|b| !b.is_empty()) {
                    if out.write_all(&block).and_then(|_| out.flush()).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn printer thread");
        Self { tx, thread }
    }

    /// A handler for one shard that prints through this printer.
    pub fn handler(&self) -> Debug {
        Debug {
            tx: self.tx.clone(),
        }
    }

    /// Waits until every block sent before this call is written, then stops the printer.
    pub fn finish(self) {
        let _ = self.tx.send(Vec::new());
        let _ = self.thread.join();
    }
}

/// One shard's DebuggingServer handler.
#[derive(Debug, Clone)]
pub struct Debug {
    tx: mpsc::Sender<Vec<u8>>,
}

impl Handler for Debug {
    fn process_message(&mut self, session: &Session, message: &[u8]) -> Option<Reply> {
        let _ = self.tx.send(format_message(session, message));
        None
    }
}

/// Formats one message block exactly as the seed's DebuggingServer prints it.
pub fn format_message(session: &Session, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 128);
    out.extend_from_slice(b"---------- MESSAGE FOLLOWS ----------\n");
    let options = &session.envelope().mail_options;
    if !options.is_empty() {
        out.extend_from_slice(b"mail options: [");
        for (i, o) in options.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            push_py_repr(&mut out, o);
        }
        out.extend_from_slice(b"]\n");
    }
    let peer = format!("X-Peer: {}\n", session.peer().ip());
    let mut in_headers = true;
    let body = message.strip_suffix(b"\r\n").unwrap_or(message);
    if !body.is_empty() {
        for line in body.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if in_headers && line.is_empty() {
                out.extend_from_slice(peer.as_bytes());
                in_headers = false;
            }
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    if in_headers {
        out.extend_from_slice(peer.as_bytes());
    }
    out.extend_from_slice(b"------------ END MESSAGE ------------\n");
    out
}

/// Appends Python's `repr()` of a str.
fn push_py_repr(out: &mut Vec<u8>, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote as u8);
    for c in s.chars() {
        match c {
            '\\' => out.extend_from_slice(b"\\\\"),
            c if c == quote => {
                out.push(b'\\');
                out.push(quote as u8);
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(quote as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::SessionConfig;
    use std::sync::Arc;
    use std::time::Instant;

    fn session_with_mail(params: &str) -> Session {
        let now = Instant::now();
        let mut s = Session::new(
            Arc::new(SessionConfig::default()),
            "192.0.2.7:1234".parse().unwrap(),
            now,
        );
        let input = format!("EHLO c\r\nMAIL FROM:<a@b>{params}\r\n");
        let mut pos = 0;
        for _ in 0..4 {
            while let Some(ev) = s.poll_event() {
                if ev.needs_reply() {
                    s.handler_reply(None);
                }
            }
            pos += s.handle_input(now, &input.as_bytes()[pos..]);
        }
        s
    }

    #[test]
    fn seed_format() {
        let s = session_with_mail(" SIZE=30 BODY=8BITMIME");
        let got = format_message(&s, b"Subject: hi\r\nFrom: a@b\r\n\r\nbody\r\n.dot\r\n");
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "---------- MESSAGE FOLLOWS ----------\nmail options: ['SIZE=30', 'BODY=8BITMIME']\n\
Subject: hi\nFrom: a@b\nX-Peer: 192.0.2.7\n\nbody\n.dot\n------------ END MESSAGE ------------\n"
        );
    }

    #[test]
    fn no_body_and_empty_message() {
        let s = session_with_mail("");
        let got = String::from_utf8(format_message(&s, b"Subject: only\r\n")).unwrap();
        assert_eq!(
            got,
            "---------- MESSAGE FOLLOWS ----------\nSubject: only\nX-Peer: 192.0.2.7\n------------ END MESSAGE ------------\n"
        );
        let got = String::from_utf8(format_message(&s, b"")).unwrap();
        assert_eq!(
            got,
            "---------- MESSAGE FOLLOWS ----------\nX-Peer: 192.0.2.7\n------------ END MESSAGE ------------\n"
        );
    }

    #[test]
    fn python_repr() {
        let mut v = Vec::new();
        push_py_repr(&mut v, "a'b");
        assert_eq!(v, b"\"a'b\"");
    }
}
