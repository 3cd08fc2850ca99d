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
//! With `--envelope` (`Debug::with_envelope`) the envelope comes first, so Bcc recipients
//! are visible:
//!
//! ```text
//! ---------- ENVELOPE ----------
//! MAIL FROM:<sender@example.org>
//! RCPT TO:<rcpt@example.org>          (one line per accepted recipient)
//! ```
//!
//! A shard formats the whole block and hands it to the printer thread (`printer`), so
//! printing never blocks a shard and two messages never interleave; the reply to the end of
//! data waits until the block is written (the seed's DebuggingServer printed before it
//! replied), so a message is never acknowledged that was not printed.

use std::cell::RefCell;
use std::rc::Rc;

use super::printer::PrintQueue;
use super::{Answer, Connection, Service};
use crate::proto::{Event, Session};

pub use super::printer::Printer;

impl Printer {
    /// A handler for one shard that prints through this printer.
    pub fn handler(&self) -> Debug {
        Debug {
            queue: self.queue(),
            envelope: false,
        }
    }
}

impl Debug {
    /// Prints the envelope (MAIL FROM, RCPT TO) before each message block when `on`.
    pub fn with_envelope(mut self, on: bool) -> Self {
        self.envelope = on;
        self
    }
}

/// One shard's DebuggingServer.
#[derive(Debug, Clone)]
pub struct Debug {
    queue: PrintQueue,
    envelope: bool,
}

/// One connection of the DebuggingServer: collects the message, prints it at its end.
pub struct DebugConn {
    queue: PrintQueue,
    message: Vec<u8>,
    envelope: bool,
}

impl Service for Debug {
    type Conn = DebugConn;

    fn open(this: &Rc<RefCell<Self>>, _session: &Session) -> DebugConn {
        let this = this.borrow();
        DebugConn {
            queue: this.queue.clone(),
            message: Vec::new(),
            envelope: this.envelope,
        }
    }
}

impl Connection for DebugConn {
    fn event(&mut self, session: &Session, event: Event) -> Answer {
        match event {
            Event::DataChunk(chunk) => chunk.extend_content(&mut self.message),
            Event::DataEnd => {
                let mut block = format_message(session, &self.message);
                if self.envelope {
                    let mut with = format_envelope(session);
                    with.append(&mut block);
                    block = with;
                }
                self.message = Vec::new();
                let queue = self.queue.clone();
                return Answer::Later(Box::pin(async move { queue.print(block).await }));
            }
            Event::Reset => self.message.clear(),
            _ => {}
        }
        Answer::Now(None)
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
    let peer = if session.is_local() {
        "X-Peer: local\n".to_string()
    } else {
        format!("X-Peer: {}\n", session.peer().ip())
    };
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

/// The envelope lines printed before a message block with `--envelope`.
pub fn format_envelope(session: &Session) -> Vec<u8> {
    let env = session.envelope();
    let mut out = String::from("---------- ENVELOPE ----------\n");
    let from = env
        .mail_from
        .as_ref()
        .map_or(String::new(), |f| f.to_string());
    out.push_str(&format!("MAIL FROM:<{from}>\n"));
    for to in &env.rcpt_tos {
        out.push_str(&format!("RCPT TO:<{to}>\n"));
    }
    out.into_bytes()
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
    fn envelope_lines() {
        let s = session_with_mail("");
        let got = String::from_utf8(format_envelope(&s)).unwrap();
        assert_eq!(got, "---------- ENVELOPE ----------\nMAIL FROM:<a@b>\n");
    }

    #[test]
    fn python_repr() {
        let mut v = Vec::new();
        push_py_repr(&mut v, "a'b");
        assert_eq!(v, b"\"a'b\"");
    }
}
