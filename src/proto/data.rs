//! The message-body scanner for DATA (dot-stuffed, ended by CRLF.CRLF) and BDAT (length-delimited).
//!
//! `DataScanner` walks the input with `memchr2` for CR and LF, so well-formed text costs one search
//! per line and nothing is copied: it reports the input ranges that make up the message, the
//! offsets of stuffing dots, and whether the body broke a rule (bare CR or LF, over-long line).
//! Only `CRLF . CRLF` ends DATA; a bare LF or CR never starts a line for that purpose. In
//! normalising mode each bare CR or LF becomes CRLF and a dot that would then open a line is
//! stuffed, so the forwarded wire form can never contain a terminator the client did not send.
//!
//! `DataChunk` is what handlers receive: the wire bytes (an owned view of the input buffer, still
//! dot-stuffed for DATA) plus the stuffing-dot offsets, from which the content view is derived.

use bytes::Bytes;
use std::ops::Range;

/// A piece of a message body, as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataChunk {
    wire: Bytes,
    dots: Vec<u32>,
}

impl DataChunk {
    /// Builds a chunk from wire bytes and the offsets of stuffing dots within them.
    pub fn new(wire: Bytes, dots: Vec<u32>) -> Self {
        Self { wire, dots }
    }

    pub(crate) fn set_wire(&mut self, wire: Bytes) {
        self.wire = wire;
    }

    /// The bytes as they travel on the wire: dot-stuffed for DATA, verbatim for BDAT.
    /// A relay forwards these unchanged after a DATA command.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// Offsets in `wire()` of the dots added by dot-stuffing (empty for BDAT).
    pub fn stuffing_dots(&self) -> &[u32] {
        &self.dots
    }

    /// The message content of this chunk (dot-unstuffed) as zero-copy pieces.
    pub fn content(&self) -> impl Iterator<Item = Bytes> + '_ {
        let mut start = 0usize;
        let mut dots = self.dots.iter();
        let wire = &self.wire;
        let mut finished = false;
        std::iter::from_fn(move || loop {
            if finished {
                return None;
            }
            let end = match dots.next() {
                Some(&d) => d as usize,
                None => {
                    finished = true;
                    wire.len()
                }
            };
            let piece = wire.slice(start..end);
            start = end + 1;
            if !piece.is_empty() {
                return Some(piece);
            }
        })
    }

    /// Number of content octets (wire length minus stuffing dots).
    pub fn content_len(&self) -> usize {
        self.wire.len() - self.dots.len()
    }

    /// Appends the content to `out` (a copy; for handlers that want one contiguous message).
    pub fn extend_content(&self, out: &mut Vec<u8>) {
        for piece in self.content() {
            out.extend_from_slice(&piece);
        }
    }
}

/// Where a body piece's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PieceSource {
    /// A range of the input passed to `scan`.
    Input(Range<usize>),
    /// Bytes the scanner inserted (normalised line ending, extra stuffing dot).
    Static(&'static [u8]),
}

/// A piece of body and the offsets of stuffing dots within it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub source: PieceSource,
    pub dots: Vec<u32>,
}

/// The result of one `scan` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScanResult {
    /// Input octets consumed (body plus, when `done`, the terminator).
    pub consumed: usize,
    /// The terminator (DATA) was found.
    pub done: bool,
}

/// Which framing the body uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Dot-stuffed, ended by CRLF.CRLF.
    Dot,
    /// Length-delimited BDAT chunks: no stuffing, no terminator.
    Chunked,
}

/// Streaming scanner state for one message body.
#[derive(Debug)]
pub(crate) struct DataScanner {
    framing: Framing,
    normalize: bool,
    max_line: usize,
    line_len: usize,
    at_line_start: bool,
    /// The current line began after a normalised bare line ending (no terminator, stuff dots).
    after_bare: bool,
    /// BDAT only: the previous chunk ended with CR.
    pending_cr: bool,
    /// A bare CR or LF was seen.
    pub bare_line_ending: bool,
    /// A line longer than `max_line` octets (CRLF included) was seen.
    pub long_line: bool,
}

const CRLF: &[u8] = b"\r\n";
const DOT: &[u8] = b".";
const LF: &[u8] = b"\n";

impl DataScanner {
    pub(crate) fn new(framing: Framing, normalize: bool, max_line: usize) -> Self {
        Self {
            framing,
            normalize,
            max_line: if max_line == 0 { usize::MAX } else { max_line },
            line_len: 0,
            at_line_start: true,
            after_bare: false,
            pending_cr: false,
            bare_line_ending: false,
            long_line: false,
        }
    }

    /// BDAT: call at the end of the last chunk; a trailing CR is then bare.
    pub(crate) fn finish(&mut self, pieces: &mut Vec<Piece>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.bare_line_ending = true;
            if self.normalize {
                push_static(pieces, LF, false);
            }
        }
    }

    /// Scans `input`, appending the body pieces found to `pieces`.
    ///
    /// For `Framing::Dot` up to two octets at the end may be left unconsumed (a CR or a dot at a
    /// line start whose meaning depends on the next octet); present them again with more input.
    pub(crate) fn scan(&mut self, input: &[u8], pieces: &mut Vec<Piece>) -> ScanResult {
        let n = input.len();
        let dot = self.framing == Framing::Dot;
        let mut i = 0;
        let mut seg = 0; // start of the current input piece
        let mut dots: Vec<u32> = Vec::new();
        if self.pending_cr {
            self.pending_cr = false;
            if n == 0 {
                self.pending_cr = true;
                return ScanResult {
                    consumed: 0,
                    done: false,
                };
            }
            if input[0] == b'\n' {
                i = 1;
                self.end_line(1);
            } else {
                self.bare_line_ending = true;
                if self.normalize {
                    push_static(pieces, LF, false);
                    // The CR was counted when it arrived; the LF it gains counts too.
                    self.add_len(1);
                    self.line_len = 0;
                    self.after_bare = true;
                    self.at_line_start = true;
                }
            }
        }
        let mut done = false;
        let mut end = n;
        'outer: while i < n {
            if self.at_line_start {
                if dot && input[i] == b'.' {
                    // A dot that opens a line whose end is a bare CR or LF (normalised to
                    // CRLF) is content, like a dot after a bare line end: never a terminator.
                    let bare_after = self.normalize
                        && match (input.get(i + 1), input.get(i + 2)) {
                            (Some(b'\n'), _) => true,
                            (Some(b'\r'), Some(&c)) => c != b'\n',
                            _ => false,
                        };
                    if self.after_bare || bare_after {
                        // Keep the wire form safe: this dot is content, so stuff it.
                        flush(pieces, seg..i, &mut dots);
                        seg = i;
                        push_static(pieces, DOT, true);
                    } else {
                        if i + 1 >= n {
                            end = i;
                            break;
                        }
                        if input[i + 1] == b'\r' {
                            if i + 2 >= n {
                                end = i;
                                break;
                            }
                            if input[i + 2] == b'\n' {
                                flush(pieces, seg..i, &mut dots);
                                seg = i + 3;
                                end = i + 3;
                                done = true;
                                break;
                            }
                        }
                        dots.push((i - seg) as u32);
                        i += 1;
                    }
                }
                self.at_line_start = false;
                self.after_bare = false;
                if i >= n {
                    break;
                }
            }
            match memchr::memchr2(b'\r', b'\n', &input[i..]) {
                None => {
                    self.add_len(n - i);
                    i = n;
                }
                Some(off) => {
                    let p = i + off;
                    self.add_len(off);
                    if input[p] == b'\r' {
                        if p + 1 >= n {
                            if dot {
                                end = p;
                            } else {
                                self.pending_cr = true;
                                self.add_len(1);
                                end = n;
                            }
                            break 'outer;
                        }
                        if input[p + 1] == b'\n' {
                            self.end_line(2);
                            i = p + 2;
                            continue;
                        }
                    }
                    // A bare CR (followed by something else) or a bare LF.
                    self.bare_line_ending = true;
                    if self.normalize {
                        flush(pieces, seg..p, &mut dots);
                        push_static(pieces, CRLF, false);
                        seg = p + 1;
                        // The line is measured with the CRLF it now ends with.
                        self.add_len(2);
                        self.line_len = 0;
                        self.at_line_start = true;
                        self.after_bare = true;
                    } else {
                        self.add_len(1);
                    }
                    i = p + 1;
                }
            }
        }
        if !done {
            flush(pieces, seg..end, &mut dots);
        }
        ScanResult {
            consumed: end,
            done,
        }
    }

    fn add_len(&mut self, k: usize) {
        self.line_len += k;
        if self.line_len > self.max_line {
            self.long_line = true;
        }
    }

    fn end_line(&mut self, k: usize) {
        self.add_len(k);
        self.line_len = 0;
        self.at_line_start = true;
        self.after_bare = false;
    }
}

fn flush(pieces: &mut Vec<Piece>, range: Range<usize>, dots: &mut Vec<u32>) {
    if range.is_empty() {
        return;
    }
    pieces.push(Piece {
        source: PieceSource::Input(range),
        dots: std::mem::take(dots),
    });
}

fn push_static(pieces: &mut Vec<Piece>, bytes: &'static [u8], stuffing: bool) {
    pieces.push(Piece {
        source: PieceSource::Static(bytes),
        dots: if stuffing { vec![0] } else { Vec::new() },
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `input` fed in pieces split at `splits`; returns (wire, content, done, consumed).
    fn run(
        framing: Framing,
        normalize: bool,
        input: &[u8],
        step: usize,
    ) -> (Vec<u8>, Vec<u8>, bool, usize, DataScanner) {
        let mut s = DataScanner::new(framing, normalize, 1000);
        let mut wire = Vec::new();
        let mut content = Vec::new();
        let mut pos = 0;
        let mut pending = 0; // unconsumed octets carried over
        let mut done = false;
        while pos < input.len() || pending > 0 {
            let upto = (pos + step).min(input.len());
            let window = &input[pos - pending..upto];
            let mut pieces = Vec::new();
            let r = s.scan(window, &mut pieces);
            for p in pieces {
                let bytes = match p.source {
                    PieceSource::Input(r) => Bytes::copy_from_slice(&window[r]),
                    PieceSource::Static(b) => Bytes::from_static(b),
                };
                let c = DataChunk::new(bytes, p.dots);
                wire.extend_from_slice(c.wire());
                c.extend_content(&mut content);
            }
            let base = pos - pending;
            if r.done {
                done = true;
                return (wire, content, done, base + r.consumed, s);
            }
            pending = window.len() - r.consumed;
            if upto == input.len() {
                break;
            }
            pos = upto;
        }
        let consumed = input.len() - pending;
        (wire, content, done, consumed, s)
    }

    #[test]
    fn terminator_and_unstuffing_at_every_split() {
        let msg = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nNEXT";
        for step in 1..msg.len() {
            let (wire, content, done, consumed, s) = run(Framing::Dot, false, msg, step);
            assert!(done, "step {step}");
            assert_eq!(consumed, msg.len() - 4, "step {step}");
            assert_eq!(wire, b"Subject: x\r\n\r\n..leading dot\r\n", "step {step}");
            assert_eq!(
                content, b"Subject: x\r\n\r\n.leading dot\r\n",
                "step {step}"
            );
            assert!(!s.bare_line_ending && !s.long_line);
        }
    }

    #[test]
    fn empty_message() {
        let (wire, _, done, consumed, _) = run(Framing::Dot, false, b".\r\n", 100);
        assert!(done);
        assert_eq!(consumed, 3);
        assert!(wire.is_empty());
    }

    #[test]
    fn only_crlf_dot_crlf_ends_data() {
        for body in [
            &b"a\n.\nb\r\n.\r\n"[..],
            b"a\r\n.\nb\r\n.\r\n",
            b"a\n.\r\nb\r\n.\r\n",
            b"a\r.\rb\r\n.\r\n",
        ] {
            for step in 1..body.len() {
                let (wire, _, done, consumed, s) = run(Framing::Dot, false, body, step);
                assert!(done);
                assert_eq!(consumed, body.len(), "{body:?} step {step}");
                assert_eq!(wire, &body[..body.len() - 3]);
                assert!(s.bare_line_ending, "{body:?}");
            }
        }
    }

    #[test]
    fn normalizing_never_forges_a_terminator() {
        let body = b"a\n.\nb\r\n.\r\n";
        for step in 1..body.len() {
            let (wire, content, done, _, s) = run(Framing::Dot, true, body, step);
            assert!(done && s.bare_line_ending);
            assert_eq!(wire, b"a\r\n..\r\nb\r\n", "step {step}");
            assert_eq!(content, b"a\r\n.\r\nb\r\n", "step {step}");
        }
        let (wire, _, _, _, _) = run(Framing::Dot, true, b"x\ry\r\n.\r\n", 100);
        assert_eq!(wire, b"x\r\ny\r\n");
    }

    #[test]
    fn normalizing_a_lone_dot_line_never_forges_a_terminator() {
        // Fuzzer findings: "." ended by a bare LF, or by a bare CR and something else.
        for body in [
            &b".\nRCPT TO:<evil@x>\r\n.\r\n"[..],
            b"hi\r\n.\rQUIT\r\n.\r\n",
        ] {
            for step in 1..body.len() {
                let (wire, content, done, consumed, _) = run(Framing::Dot, true, body, step);
                assert!(done && consumed == body.len(), "{body:?} step {step}");
                let framed = [&b"\r\n"[..], &wire].concat();
                assert!(
                    memchr::memmem::find(&framed, b"\r\n.\r\n").is_none(),
                    "{body:?} step {step}: {wire:?}"
                );
                // The wire form unstuffs to exactly the content view.
                let mut unstuffed = Vec::new();
                for line in wire.split_inclusive(|&b| b == b'\n') {
                    unstuffed.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
                }
                assert_eq!(unstuffed, content, "{body:?} step {step}");
            }
        }
    }

    #[test]
    fn normalized_line_ends_count_toward_the_line_limit() {
        let mut s = DataScanner::new(Framing::Dot, true, 12);
        let mut pieces = Vec::new();
        s.scan(b"0123456789A\nB\r\n.\r\n", &mut pieces);
        assert!(s.long_line, "11 octets + the CRLF the bare LF becomes = 13");
        let mut ok = DataScanner::new(Framing::Dot, true, 12);
        ok.scan(b"0123456789\nB\r\n.\r\n", &mut pieces);
        assert!(!ok.long_line);
    }

    #[test]
    fn bdat_never_gets_stuffing_dots() {
        let mut s = DataScanner::new(Framing::Chunked, true, 1000);
        let mut pieces = Vec::new();
        s.scan(b"a\n.b", &mut pieces);
        s.finish(&mut pieces);
        assert!(pieces.iter().all(|p| p.dots.is_empty()), "{pieces:?}");
    }

    #[test]
    fn long_lines_flagged() {
        let mut body = vec![b'a'; 999];
        body.extend_from_slice(b"\r\n.\r\n");
        let (_, _, _, _, s) = run(Framing::Dot, false, &body, 64);
        assert!(s.long_line, "999 + CRLF = 1001 octets");
        let mut ok = vec![b'a'; 998];
        ok.extend_from_slice(b"\r\n.\r\n");
        let (_, _, _, _, s) = run(Framing::Dot, false, &ok, 64);
        assert!(!s.long_line, "998 + CRLF = 1000 octets");
    }

    #[test]
    fn bdat_crlf_split_across_chunks() {
        let mut s = DataScanner::new(Framing::Chunked, false, 1000);
        let mut pieces = Vec::new();
        let r = s.scan(b"line one\r", &mut pieces);
        assert_eq!(r.consumed, 9);
        let r = s.scan(b"\n.line two\r\n", &mut pieces);
        assert_eq!(r.consumed, 12);
        s.finish(&mut pieces);
        assert!(!s.bare_line_ending);
        assert!(pieces.iter().all(|p| p.dots.is_empty()));
        let mut s = DataScanner::new(Framing::Chunked, false, 1000);
        s.scan(b"x\r", &mut pieces);
        s.finish(&mut pieces);
        assert!(s.bare_line_ending);
    }
}
