//! A session's transcript, as Python's `smtpd -d` printed it to its DEBUGSTREAM: `Incoming
//! connection from ('127.0.0.1', 40312)`, `Peer: (...)`, then `Data: b'EHLO client'` for every
//! line the client sent and one `Data: b'...'` for each message (without its final
//! `CRLF.CRLF`, still dot-stuffed, as smtpd printed it), with Python's bytes repr. ringrelay
//! adds what Python's never showed: each reply line as `Reply: b'250 ...'`, and each BDAT
//! chunk as one `Data:` line.
//!
//! It emits `tracing` events (target `crate::log::TRANSCRIPT`, trace level) and never writes
//! or waits itself: the log's writer thread does. It exists only while that target is
//! enabled, so the hot path pays one check per connection and per batch of replies. It
//! watches the octets the session consumed; it never feeds or changes the session.

use std::net::SocketAddr;

use memchr::memmem;

use crate::log::TRANSCRIPT;

/// The transcript state of one connection.
#[derive(Debug, Default)]
pub(crate) struct Transcript {
    /// A command line not yet complete.
    line: Vec<u8>,
    /// The message so far (DATA), or the chunk (BDAT).
    data: Vec<u8>,
    /// Octets of a BDAT chunk still to come.
    chunk_left: u64,
}

fn enabled() -> bool {
    crate::log::transcript_on() && tracing::enabled!(target: TRANSCRIPT, tracing::Level::TRACE)
}

fn emit(line: &str) {
    tracing::trace!(target: TRANSCRIPT, "{line}");
}

impl Transcript {
    /// A transcript for a new connection from `peer` (`None`: a Unix-domain client, whose
    /// `getpeername()` Python shows as `''`), when transcripts are on.
    pub(crate) fn start(peer: Option<SocketAddr>) -> Option<Self> {
        if !enabled() {
            return None;
        }
        let peer = peer.map_or_else(|| "''".to_string(), py_peer);
        emit(&format!("Incoming connection from {peer}"));
        emit(&format!("Peer: {peer}"));
        Some(Self::default())
    }

    /// Octets the session consumed; `in_data` says whether it was reading a DATA body when
    /// they came (a message's end may be followed by command lines).
    pub(crate) fn input(&mut self, in_data: bool, bytes: &[u8]) {
        let mut lines = Vec::new();
        self.lines(in_data, bytes, &mut lines);
        for l in &lines {
            emit(l);
        }
    }

    /// The transcript lines for consumed octets.
    fn lines(&mut self, in_data: bool, mut bytes: &[u8], out: &mut Vec<String>) {
        if in_data && self.chunk_left == 0 {
            let from = self.data.len().saturating_sub(4);
            self.data.extend_from_slice(bytes);
            let end = if self.data.starts_with(b".\r\n") {
                Some((0, 3))
            } else {
                memmem::find(&self.data[from..], b"\r\n.\r\n").map(|i| (from + i, from + i + 5))
            };
            let Some((body, after)) = end else {
                return;
            };
            out.push(format!("Data: {}", py_bytes(&self.data[..body])));
            let rest = self.data.split_off(after);
            self.data.clear();
            return self.lines(false, &rest, out);
        }
        while !bytes.is_empty() {
            if self.chunk_left > 0 {
                let n = bytes
                    .len()
                    .min(usize::try_from(self.chunk_left).unwrap_or(usize::MAX));
                self.data.extend_from_slice(&bytes[..n]);
                self.chunk_left -= n as u64;
                bytes = &bytes[n..];
                if self.chunk_left == 0 {
                    out.push(format!("Data: {}", py_bytes(&self.data)));
                    self.data.clear();
                }
                continue;
            }
            let n = self.commands_until_chunk(bytes, out);
            bytes = &bytes[n..];
        }
    }

    /// Takes command lines from `bytes` up to and including a BDAT line (whose chunk follows)
    /// or the end; returns how many octets it took.
    fn commands_until_chunk(&mut self, bytes: &[u8], out: &mut Vec<String>) -> usize {
        let mut pos = 0;
        while pos < bytes.len() {
            let Some(i) = memchr::memchr(b'\n', &bytes[pos..]) else {
                self.line.extend_from_slice(&bytes[pos..]);
                return bytes.len();
            };
            self.line.extend_from_slice(&bytes[pos..pos + i + 1]);
            pos += i + 1;
            // Only CRLF ends a command line (a bare LF stays inside it, as the session reads it).
            if !self.line.ends_with(b"\r\n") {
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let text = &line[..line.len() - 2];
            out.push(format!("Data: {}", py_bytes(text)));
            if let Some(size) = bdat_size(text) {
                if size > 0 {
                    self.chunk_left = size;
                    return pos;
                }
                out.push("Data: b''".into());
            }
        }
        pos
    }

    /// The replies written (whole lines, CRLF-terminated).
    pub(crate) fn replies(out: &[u8]) {
        if out.is_empty() || !enabled() {
            return;
        }
        for line in out.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                emit(&format!("Reply: {}", py_bytes(line)));
            }
        }
    }
}

/// The chunk size of a `BDAT n [LAST]` line.
fn bdat_size(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split_ascii_whitespace();
    if !words.next()?.eq_ignore_ascii_case("BDAT") {
        return None;
    }
    words.next()?.parse().ok()
}

/// A peer address as Python's `repr` of its `getpeername()` tuple.
fn py_peer(peer: SocketAddr) -> String {
    match peer {
        SocketAddr::V4(a) => format!("('{}', {})", a.ip(), a.port()),
        SocketAddr::V6(a) => format!(
            "('{}', {}, {}, {})",
            a.ip(),
            a.port(),
            a.flowinfo(),
            a.scope_id()
        ),
    }
}

/// Python's `repr()` of a bytes object.
pub(crate) fn py_bytes(b: &[u8]) -> String {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    let mut s = String::with_capacity(b.len() + 3);
    s.push('b');
    s.push(quote);
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            c if c as char == quote => {
                s.push('\\');
                s.push(quote);
            }
            0x20..=0x7e => s.push(c as char),
            c => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push(quote);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_print_as_python_repr_prints_them() {
        let cases: [(&[u8], &str); 6] = [
            (b"EHLO client", "b'EHLO client'"),
            (b"a\r\nb\tc\\", "b'a\\r\\nb\\tc\\\\'"),
            (b"it's", "b\"it's\""),
            (b"'\"", "b'\\'\"'"),
            (b"\x00\xff", "b'\\x00\\xff'"),
            (b"", "b''"),
        ];
        for (input, want) in cases {
            assert_eq!(py_bytes(input), want);
        }
    }

    #[test]
    fn peers_print_as_python_tuples() {
        assert_eq!(
            py_peer("127.0.0.1:40312".parse().unwrap()),
            "('127.0.0.1', 40312)"
        );
        assert_eq!(py_peer("[::1]:25".parse().unwrap()), "('::1', 25, 0, 0)");
    }

    #[test]
    fn lines_messages_and_chunks_are_told_apart() {
        let mut t = Transcript::default();
        let mut out = Vec::new();
        t.lines(
            false,
            b"EHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<b@c>\r\nDA",
            &mut out,
        );
        t.lines(false, b"TA\r\n", &mut out);
        // The body arrives in pieces; the terminator itself is split.
        t.lines(true, b"Subject: x\r\n\r\n..dot\r", &mut out);
        t.lines(true, b"\n.", &mut out);
        t.lines(true, b"\r\nQUIT\r\n", &mut out);
        assert_eq!(
            out,
            [
                "Data: b'EHLO a'",
                "Data: b'MAIL FROM:<>'",
                "Data: b'RCPT TO:<b@c>'",
                "Data: b'DATA'",
                "Data: b'Subject: x\\r\\n\\r\\n..dot'",
                "Data: b'QUIT'",
            ]
        );
        out.clear();
        t.lines(true, b".\r\n", &mut out);
        t.lines(false, b"BDAT 5\r\nab\r\ncBDAT 0 LAST\r\nNOOP\r\n", &mut out);
        assert_eq!(
            out,
            [
                "Data: b''",
                "Data: b'BDAT 5'",
                "Data: b'ab\\r\\nc'",
                "Data: b'BDAT 0 LAST'",
                "Data: b''",
                "Data: b'NOOP'",
            ]
        );
    }

    #[test]
    fn bdat_lines_give_their_chunk_size() {
        assert_eq!(bdat_size(b"BDAT 100 LAST"), Some(100));
        assert_eq!(bdat_size(b"bdat 0"), Some(0));
        assert_eq!(bdat_size(b"BDAT x"), None);
        assert_eq!(bdat_size(b"DATA"), None);
    }
}
