//! The seed's `X-Peer:` field (`--x-peer`), placed where Python's PureProxy put it: before the
//! first empty line of the content (the end of the header section), or after the last line of
//! a message that has none. It works on the wire pieces as they stream to the upstream (an
//! empty line is the same dot-stuffed or not): the piece holding the place is split, without
//! copying, around the field. A CR that may begin the empty line at the very end of a piece is
//! held back until the next piece shows what follows it.

use bytes::Bytes;

/// Inserts one `X-Peer:` field into a streamed message.
#[derive(Debug)]
pub(super) struct XPeer {
    /// The field, until it is placed.
    field: Option<Bytes>,
    /// The next octet starts a line.
    at_line_start: bool,
    /// A CR at a line start, at the end of the previous piece.
    held: Option<Bytes>,
}

impl XPeer {
    /// For a client at `ip`.
    pub(super) fn new(ip: std::net::IpAddr) -> Self {
        Self {
            field: Some(Bytes::from(format!("X-Peer: {ip}\r\n"))),
            at_line_start: true,
            held: None,
        }
    }

    /// Passes one wire piece on into `out`, with the field in front of the empty line if the
    /// header section ends in it.
    pub(super) fn pass(&mut self, piece: Bytes, out: &mut Vec<Bytes>) {
        if piece.is_empty() {
            return;
        }
        let Some(field) = self.field.take() else {
            out.push(piece);
            return;
        };
        if let Some(cr) = self.held.take() {
            if piece.first() == Some(&b'\n') {
                out.extend([field, cr, piece]);
                return;
            }
            // Not an empty line after all (a bare CR, which the session has already refused
            // or normalised): it goes out as it was.
            out.push(cr);
            self.at_line_start = false;
        }
        let b = &piece[..];
        let mut i = 0;
        loop {
            if self.at_line_start && i < b.len() && b[i] == b'\r' {
                if i + 1 == b.len() {
                    if i > 0 {
                        out.push(piece.slice(..i));
                    }
                    self.held = Some(piece.slice(i..));
                    self.field = Some(field);
                    return;
                }
                if b[i + 1] == b'\n' {
                    if i > 0 {
                        out.push(piece.slice(..i));
                    }
                    out.extend([field, piece.slice(i..)]);
                    return;
                }
            }
            match memchr::memchr(b'\n', &b[i..]) {
                Some(p) => {
                    i += p + 1;
                    self.at_line_start = true;
                    if i == b.len() {
                        break;
                    }
                }
                None => {
                    self.at_line_start = false;
                    break;
                }
            }
        }
        self.field = Some(field);
        out.push(piece);
    }

    /// At the end of the content: whatever was held, then the field if it has not been placed
    /// (a message without an empty line gets it after its last line).
    pub(super) fn finish(&mut self, out: &mut Vec<Bytes>) {
        out.extend(self.held.take());
        out.extend(self.field.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(msg: &[u8], step: usize) -> Vec<u8> {
        let mut x = XPeer::new("192.0.2.7".parse().unwrap());
        let mut out = Vec::new();
        for piece in msg.chunks(step) {
            x.pass(Bytes::copy_from_slice(piece), &mut out);
        }
        x.finish(&mut out);
        out.concat()
    }

    #[test]
    fn placed_like_the_seed_at_every_split() {
        let cases: &[(&[u8], &[u8])] = &[
            (
                b"Subject: a\r\nTo: b\r\n\r\nbody\r\n\r\nmore\r\n",
                b"Subject: a\r\nTo: b\r\nX-Peer: 192.0.2.7\r\n\r\nbody\r\n\r\nmore\r\n",
            ),
            // No header section at all: the field becomes it.
            (b"\r\nbody\r\n", b"X-Peer: 192.0.2.7\r\n\r\nbody\r\n"),
            // No empty line: after the last line.
            (
                b"Subject: only\r\n..dotted\r\n",
                b"Subject: only\r\n..dotted\r\nX-Peer: 192.0.2.7\r\n",
            ),
            (b"", b"X-Peer: 192.0.2.7\r\n"),
            // Folded header lines and CRs inside lines are not the end.
            (
                b"A: x\r\n\tfolded\r\nB: y\rz\r\n\r\n",
                b"A: x\r\n\tfolded\r\nB: y\rz\r\nX-Peer: 192.0.2.7\r\n\r\n",
            ),
        ];
        for (msg, want) in cases {
            for step in 1..=msg.len().max(1) {
                assert_eq!(
                    String::from_utf8_lossy(&run(msg, step)),
                    String::from_utf8_lossy(want),
                    "step {step}"
                );
            }
        }
    }
}
