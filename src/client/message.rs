//! Preparing a message for the wire: `BodyEncoder` (streaming CRLF normalisation and, for
//! DATA, dot-stuffing, producing zero-copy pieces of the caller's chunks) and the smtplib
//! `send_message` rules (envelope from Sender/From and To/Cc/Bcc or their Resent-* block;
//! Bcc never transmitted).

use bytes::Bytes;

/// Streaming body encoder; state carries across chunks.
#[derive(Debug)]
pub struct BodyEncoder {
    stuff_dots: bool,
    at_line_start: bool,
    pending_cr: bool,
}

const CRLF: Bytes = Bytes::from_static(b"\r\n");
const LF: Bytes = Bytes::from_static(b"\n");
const DOT: Bytes = Bytes::from_static(b".");

impl BodyEncoder {
    /// An encoder for DATA (`stuff_dots`) or BDAT (no stuffing).
    pub fn new(stuff_dots: bool) -> Self {
        Self {
            stuff_dots,
            at_line_start: true,
            pending_cr: false,
        }
    }

    /// Encodes one chunk: bare CR or LF become CRLF, a dot opening a line is doubled (DATA).
    /// Pieces are slices of `chunk` or static insertions; nothing is copied.
    pub fn encode(&mut self, chunk: &Bytes, out: &mut Vec<Bytes>) {
        let n = chunk.len();
        let mut seg = 0;
        let mut i = 0;
        if self.pending_cr && n > 0 {
            self.pending_cr = false;
            out.push(LF);
            if chunk[0] == b'\n' {
                seg = 1;
                i = 1;
            }
            self.at_line_start = true;
        }
        while i < n {
            if self.at_line_start {
                self.at_line_start = false;
                if self.stuff_dots && chunk[i] == b'.' {
                    push(out, chunk, seg, i);
                    out.push(DOT);
                    seg = i;
                }
            }
            let Some(off) = memchr::memchr2(b'\r', b'\n', &chunk[i..]) else {
                break;
            };
            let p = i + off;
            if chunk[p] == b'\r' {
                if p + 1 == n {
                    push(out, chunk, seg, p + 1);
                    seg = n;
                    self.pending_cr = true;
                    break;
                }
                if chunk[p + 1] == b'\n' {
                    i = p + 2;
                } else {
                    push(out, chunk, seg, p + 1);
                    out.push(LF);
                    seg = p + 1;
                    i = p + 1;
                }
            } else {
                push(out, chunk, seg, p);
                out.push(CRLF);
                seg = p + 1;
                i = p + 1;
            }
            self.at_line_start = true;
        }
        push(out, chunk, seg, n);
    }

    /// Ends the body: completes a trailing CR and makes sure the body ends with CRLF (the
    /// terminator must follow a line end). Returns the closing pieces.
    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.pending_cr {
            self.pending_cr = false;
            out.push(LF);
        } else if !self.at_line_start {
            out.push(CRLF);
        }
        self.at_line_start = true;
    }
}

/// The message size after CRLF normalisation (RFC 1870's SIZE= counts CRLF line ends and
/// excludes dot-stuffing): each bare CR or LF becomes two octets.
pub fn normalized_len(msg: &[u8]) -> u64 {
    let mut extra = 0u64;
    let mut i = 0;
    while let Some(off) = memchr::memchr2(b'\r', b'\n', &msg[i..]) {
        let p = i + off;
        if msg[p] == b'\r' && msg.get(p + 1) == Some(&b'\n') {
            i = p + 2;
        } else {
            extra += 1;
            i = p + 1;
        }
    }
    let unterminated = !msg.is_empty() && !msg.ends_with(b"\n") && !msg.ends_with(b"\r");
    msg.len() as u64 + extra + if unterminated { 2 } else { 0 }
}

fn push(out: &mut Vec<Bytes>, chunk: &Bytes, from: usize, to: usize) {
    if to > from {
        out.push(chunk.slice(from..to));
    }
}

/// The header block of a message as (name, unfolded value) pairs, and where the body starts.
pub fn parse_headers(msg: &[u8]) -> (Vec<(String, String)>, usize) {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        let end = memchr::memchr(b'\n', &msg[pos..]).map_or(msg.len(), |e| pos + e + 1);
        let line = &msg[pos..end];
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            return (headers, end);
        }
        let s = String::from_utf8_lossy(text);
        if s.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(s.trim());
            }
        } else if let Some((name, value)) = s.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        } else {
            return (headers, pos);
        }
        pos = end;
    }
    (headers, pos)
}

/// The addresses of an address-list header value (email.utils.getaddresses, simplified:
/// display names, quoted strings, comments and groups are understood).
pub fn addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth_comment = 0;
    let mut quoted = false;
    let mut current = String::new();
    let mut angle: Option<String> = None;
    let mut in_angle = false;
    let flush = |current: &mut String, angle: &mut Option<String>, out: &mut Vec<String>| {
        let addr = match angle.take() {
            Some(a) => a,
            None => current.trim().to_string(),
        };
        let addr = addr.trim().trim_end_matches(';').trim().to_string();
        if !addr.is_empty() {
            out.push(addr);
        }
        current.clear();
    };
    for c in value.chars() {
        match c {
            '"' if depth_comment == 0 && !in_angle => {
                quoted = !quoted;
                current.push(c);
            }
            '(' if !quoted => depth_comment += 1,
            ')' if !quoted && depth_comment > 0 => depth_comment -= 1,
            _ if depth_comment > 0 => {}
            '<' if !quoted => {
                in_angle = true;
                angle = Some(String::new());
            }
            '>' if in_angle => in_angle = false,
            _ if in_angle => angle.get_or_insert_with(String::new).push(c),
            ':' if !quoted && angle.is_none() => current.clear(), // group name
            ',' | ';' if !quoted => flush(&mut current, &mut angle, &mut out),
            _ => current.push(c),
        }
    }
    flush(&mut current, &mut angle, &mut out);
    out.retain(|a| !a.starts_with('"') || a.contains('@'));
    out
}

/// Why `send_message` cannot derive an envelope.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// More than one Resent-Date: ambiguous Resent- block (as smtplib's ValueError).
    #[error("message has more than one 'Resent-' header block")]
    MultipleResent,
    /// No Sender/From to take the envelope sender from.
    #[error("message has no From or Sender header")]
    NoSender,
}

/// smtplib's `send_message` envelope: (sender, recipients) from the headers.
pub fn envelope_from_headers(
    headers: &[(String, String)],
) -> Result<(String, Vec<String>), EnvelopeError> {
    fn get<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    let prefix = match get(headers, "Resent-Date").len() {
        0 => "",
        1 => "Resent-",
        _ => return Err(EnvelopeError::MultipleResent),
    };
    let sender_field = get(headers, &format!("{prefix}Sender"))
        .first()
        .copied()
        .or_else(|| get(headers, &format!("{prefix}From")).first().copied())
        .ok_or(EnvelopeError::NoSender)?;
    let from = addresses(sender_field)
        .into_iter()
        .next()
        .ok_or(EnvelopeError::NoSender)?;
    let mut to = Vec::new();
    for field in ["To", "Bcc", "Cc"] {
        for v in get(headers, &format!("{prefix}{field}")) {
            to.extend(addresses(v));
        }
    }
    Ok((from, to))
}

/// The message without its Bcc and Resent-Bcc header fields (continuation lines included).
pub fn strip_bcc(msg: &[u8]) -> Vec<u8> {
    let (_, body_start) = parse_headers(msg);
    let mut out = Vec::with_capacity(msg.len());
    let mut skipping = false;
    let mut pos = 0;
    while pos < body_start {
        let end = memchr::memchr(b'\n', &msg[pos..body_start]).map_or(body_start, |e| pos + e + 1);
        let line = &msg[pos..end];
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            let name_end = line.iter().position(|&b| b == b':').unwrap_or(0);
            let name = &line[..name_end];
            skipping =
                name.eq_ignore_ascii_case(b"Bcc") || name.eq_ignore_ascii_case(b"Resent-Bcc");
        }
        if !skipping {
            out.extend_from_slice(line);
        }
        pos = end;
    }
    out.extend_from_slice(&msg[body_start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(stuff: bool, chunks: &[&[u8]]) -> Vec<u8> {
        let mut e = BodyEncoder::new(stuff);
        let mut out = Vec::new();
        for c in chunks {
            e.encode(&Bytes::copy_from_slice(c), &mut out);
        }
        e.finish(&mut out);
        out.concat()
    }

    #[test]
    fn stuffing_and_line_endings_across_chunks() {
        let rows: &[(&[&[u8]], &[u8])] = &[
            (&[b"a\r\n.b\r\n"], b"a\r\n..b\r\n"),
            (&[b".x"], b"..x\r\n"),
            (&[b"a\r", b"\n.", b"b\n"], b"a\r\n..b\r\n"),
            (&[b"a\nb\rc"], b"a\r\nb\r\nc\r\n"),
            (&[b"a\r"], b"a\r\n"),
            (&[b"line\r\n"], b"line\r\n"),
            (&[b""], b""),
            (&[b"\r\n.\r\n"], b"\r\n..\r\n"),
        ];
        for (chunks, want) in rows {
            assert_eq!(enc(true, chunks), *want, "{chunks:?}");
        }
        assert_eq!(enc(false, &[b".a\nb"]), b".a\r\nb\r\n");
    }

    #[test]
    fn size_after_normalisation() {
        for body in [
            &b"a\nb\n"[..],
            b"a\r\nb",
            b"x\ry\r\n",
            b"",
            b"line\r\n",
            b".dot\n",
        ] {
            assert_eq!(
                normalized_len(body),
                enc(true, &[body]).len() as u64 - dots(body),
                "{body:?}"
            );
        }
    }

    /// Stuffing dots the encoder adds (not counted by SIZE=).
    fn dots(body: &[u8]) -> u64 {
        u64::from(body.first() == Some(&b'.'))
    }

    #[test]
    fn send_message_envelope() {
        let msg = b"From: Alice <alice@example.com>\r\nTo: bob@example.com, \"Carol, C\" <carol@example.com>\r\n\
Cc: dave@example.com (Dave)\r\nBcc: eve@example.com\r\nSubject: x\r\n\r\nbody\r\n";
        let (h, body) = parse_headers(msg);
        assert_eq!(&msg[body..], b"body\r\n");
        let (from, to) = envelope_from_headers(&h).unwrap();
        assert_eq!(from, "alice@example.com");
        assert_eq!(
            to,
            vec![
                "bob@example.com",
                "carol@example.com",
                "eve@example.com",
                "dave@example.com"
            ]
        );
        let stripped = strip_bcc(msg);
        assert!(!String::from_utf8_lossy(&stripped).contains("eve@"));

        let resent = b"From: a@x\r\nTo: b@x\r\nResent-Date: now\r\nResent-From: r@x\r\nResent-To: s@x\r\n\r\n";
        let (h, _) = parse_headers(resent);
        assert_eq!(
            envelope_from_headers(&h).unwrap(),
            ("r@x".to_string(), vec!["s@x".to_string()])
        );
        let two = b"From: a@x\r\nResent-Date: 1\r\nResent-Date: 2\r\n\r\n";
        assert_eq!(
            envelope_from_headers(&parse_headers(two).0),
            Err(EnvelopeError::MultipleResent)
        );
        assert_eq!(addresses("undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(addresses("team: a@x, b@x;"), vec!["a@x", "b@x"]);
    }
}
