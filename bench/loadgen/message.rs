//! The messages ringload sends: a small per-message header block carrying the unique
//! `X-Ringload-Id`, then a body cut from one shared corpus of 76-column text lines, so a body is
//! zero-copy slices and the whole run holds one corpus of the largest size however many
//! sessions send it. Bodies are CRLF text with no line starting with '.', so the same bytes
//! serve DATA (no dot-stuffing needed) and BDAT.

use bytes::Bytes;

/// Text line length in the corpus (76 characters + CRLF).
const LINE: usize = 78;

/// The header that carries a message's id; `verify` searches recordings for it.
pub const ID_HEADER: &str = "X-Ringload-Id";

/// Builds messages of any size up to the corpus length.
#[derive(Clone, Debug)]
pub struct Corpus {
    body: Bytes,
    fill: Bytes,
    from: String,
    to: String,
}

/// One message in wire form: pieces to send in order (no terminator).
#[derive(Debug)]
pub struct Message {
    /// Header block, then body slices.
    pub pieces: Vec<Bytes>,
    /// Total octets.
    pub len: u64,
}

impl Corpus {
    /// A corpus for messages up to `max` octets.
    pub fn new(max: u64, from: &str, to: &str) -> Self {
        const WORDS: &[&str] = &[
            "load", "test", "message", "body", "relay", "sink", "queue", "mail", "transfer",
            "agent", "line", "text", "the", "of", "a", "with", "ring", "shard",
        ];
        let lines = (max as usize).div_ceil(LINE) + 1;
        let mut body = Vec::with_capacity(lines * LINE);
        let mut w = 0usize;
        for _ in 0..lines {
            let start = body.len();
            while body.len() - start < 76 {
                if body.len() > start {
                    body.push(b' ');
                }
                body.extend_from_slice(WORDS[w % WORDS.len()].as_bytes());
                w = w.wrapping_mul(7).wrapping_add(3);
            }
            body.truncate(start + 76);
            if body[body.len() - 1] == b' ' {
                *body.last_mut().expect("line is not empty") = b'x';
            }
            body.extend_from_slice(b"\r\n");
        }
        // Filler to cut the last line to length: up to LINE + 1 octets are taken from its end.
        let mut fill = vec![b'x'; LINE];
        fill.extend_from_slice(b"\r\n");
        Self {
            body: Bytes::from(body),
            fill: Bytes::from(fill),
            from: from.to_string(),
            to: to.to_string(),
        }
    }

    /// The message with this id, `size` octets long when `size` exceeds the header block
    /// (otherwise just the headers and one short line).
    pub fn message(&self, id: &str, size: u64) -> Message {
        let head = format!(
            "From: <{}>\r\nTo: <{}>\r\nSubject: ringload {id}\r\nMessage-ID: <{id}@ringload>\r\n\
             {ID_HEADER}: {id}\r\n\r\n",
            self.from, self.to
        );
        let mut pieces = Vec::with_capacity(3);
        let mut body_len = (size as usize).saturating_sub(head.len()).max(3);
        body_len = body_len.min(self.body.len());
        pieces.push(Bytes::from(head));
        let mut full = body_len / LINE * LINE;
        let mut rest = body_len - full;
        if rest == 1 {
            if full >= LINE {
                full -= LINE;
                rest += LINE;
            } else {
                rest = 3;
            }
        }
        if full > 0 {
            pieces.push(self.body.slice(..full));
        }
        if rest > 0 {
            pieces.push(self.fill.slice(self.fill.len() - rest..));
        }
        let len = pieces.iter().map(|p| p.len() as u64).sum();
        Message { pieces, len }
    }
}

/// A fast deterministic generator (xorshift64*) for size draws.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded; never zero.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (v >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(m: &Message) -> Vec<u8> {
        m.pieces.concat()
    }

    #[test]
    fn sizes_are_exact_and_text_is_clean() {
        let c = Corpus::new(5000, "a@b", "c@d");
        for size in [300, 301, 302, 378, 379, 380, 1024, 4999, 5000] {
            let m = c.message("run.7", size);
            let w = wire(&m);
            assert_eq!(w.len() as u64, m.len);
            assert_eq!(m.len, size, "size {size}");
            assert!(w.ends_with(b"\r\n"));
            // CRLF only, no line over 998 octets, no line starting with a dot.
            for line in w.split(|&b| b == b'\n') {
                assert!(line.is_empty() || line.ends_with(b"\r"), "{line:?}");
                assert!(!line.starts_with(b"."));
                assert!(line.len() < 1000);
            }
            assert!(String::from_utf8_lossy(&w).contains("\r\nX-Ringload-Id: run.7\r\n"));
        }
        // Smaller than the headers: headers and one short line.
        let tiny = c.message("x.1", 10);
        assert!(wire(&tiny).ends_with(b"\r\n\r\nx\r\n"));
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut r = Rng::new(1);
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            sum += u;
        }
        assert!((sum / 10_000.0 - 0.5).abs() < 0.02);
    }
}
