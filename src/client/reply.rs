//! Reading server replies (RFC 5321 §4.2): a streaming parser over received bytes that yields
//! one `Reply` per complete (possibly multi-line) reply and rejects garbage with a typed error
//! instead of waiting forever. Sans-IO; bounded memory (line and line-count limits).

use crate::proto::{EnhancedCode, Reply};

/// Longest reply line we accept (RFC 5321 §4.5.3.1.5 says 512; servers exceed it in practice).
const MAX_LINE: usize = 4096;
/// Most lines in one multi-line reply.
const MAX_LINES: usize = 256;

/// Why received bytes are not a reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line does not start with three digits and a space or hyphen.
    #[error("malformed reply line: {0:?}")]
    Malformed(String),
    /// The lines of one reply carry different codes.
    #[error("reply lines with different codes: {0} then {1}")]
    MixedCodes(u16, u16),
    /// A line or the whole reply is longer than we accept.
    #[error("reply too long")]
    TooLong,
}

/// Parses one reply from the front of `buf`: `Ok(None)` means more bytes are needed,
/// `Ok(Some((reply, consumed)))` a complete reply. Enhanced codes (RFC 2034) are taken from
/// the first line when every line carries one (`parse_enhanced`), and stripped from the text.
pub fn parse_reply(buf: &[u8], parse_enhanced: bool) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut pos = 0;
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut code = None;
    loop {
        let Some(nl) = memchr::memchr(b'\n', &buf[pos..]) else {
            if buf.len() - pos > MAX_LINE {
                return Err(ReplyError::TooLong);
            }
            return Ok(None);
        };
        let raw = &buf[pos..pos + nl];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        pos += nl + 1;
        if line.len() > MAX_LINE || lines.len() >= MAX_LINES {
            return Err(ReplyError::TooLong);
        }
        if line.len() < 3
            || !line[..3].iter().all(u8::is_ascii_digit)
            || !(b'2'..=b'5').contains(&line[0])
        {
            return Err(ReplyError::Malformed(
                String::from_utf8_lossy(line).into_owned(),
            ));
        }
        let this =
            (line[0] - b'0') as u16 * 100 + (line[1] - b'0') as u16 * 10 + (line[2] - b'0') as u16;
        if let Some(c) = code {
            if c != this {
                return Err(ReplyError::MixedCodes(c, this));
            }
        }
        code = Some(this);
        let sep = line.get(3).copied();
        match sep {
            None | Some(b' ') => {
                lines.push(line.get(4..).unwrap_or(b""));
                return Ok(Some((build(this, &lines, parse_enhanced), pos)));
            }
            Some(b'-') => lines.push(&line[4..]),
            Some(_) => {
                return Err(ReplyError::Malformed(
                    String::from_utf8_lossy(line).into_owned(),
                ))
            }
        }
    }
}

fn build(code: u16, lines: &[&[u8]], parse_enhanced: bool) -> Reply {
    let texts: Vec<String> = lines
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let enhanced = if parse_enhanced {
        texts
            .first()
            .and_then(|t| EnhancedCode::parse_prefix(t))
            .map(|(e, _)| e)
            .filter(|e| u16::from(e.class) == code / 100)
    } else {
        None
    };
    let body: Vec<&str> = texts
        .iter()
        .map(|t| match (enhanced, EnhancedCode::parse_prefix(t)) {
            (Some(_), Some((_, rest))) => rest,
            _ => t.as_str(),
        })
        .collect();
    let text = body.join("\n");
    match enhanced {
        Some(e) => Reply::new(code, e, text),
        None => Reply::plain(code, text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, code, enhanced code, text, octets consumed)
    type Row = (
        &'static [u8],
        u16,
        Option<&'static str>,
        &'static str,
        usize,
    );

    #[test]
    fn rows() {
        let ok: &[Row] = &[
            (b"250 OK\r\n", 250, None, "OK", 8),
            (
                b"250 2.1.0 Sender ok\r\nrest",
                250,
                Some("2.1.0"),
                "Sender ok",
                21,
            ),
            (
                b"250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n",
                250,
                None,
                "mx\nPIPELINING\nSIZE 10",
                37,
            ),
            (
                b"550-5.1.1 No\r\n550 5.1.1 Such user\r\n",
                550,
                Some("5.1.1"),
                "No\nSuch user",
                35,
            ),
            (b"220\r\n", 220, None, "", 5),
            (b"354 go ahead\n", 354, None, "go ahead", 13),
            (
                b"250 5.1.1 class mismatch\r\n",
                250,
                None,
                "5.1.1 class mismatch",
                26,
            ),
        ];
        for (input, code, esc, text, used) in ok {
            let (r, n) = parse_reply(input, true).unwrap().unwrap();
            assert_eq!(r.code(), *code);
            assert_eq!(r.enhanced().map(|e| e.to_string()).as_deref(), *esc);
            assert_eq!(r.text(), *text);
            assert_eq!(n, *used);
        }
        assert_eq!(parse_reply(b"250-partial\r\n250 ", true).unwrap(), None);
        assert!(matches!(
            parse_reply(b"HTTP/1.1 400\r\n", true),
            Err(ReplyError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(b"250-a\r\n251 b\r\n", true),
            Err(ReplyError::MixedCodes(250, 251))
        ));
        assert!(matches!(
            parse_reply(b"250xabc\r\n", true),
            Err(ReplyError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(&[b'2'; 5000], true),
            Err(ReplyError::TooLong)
        ));
        assert!(matches!(
            parse_reply(b"650 x\r\n", true),
            Err(ReplyError::Malformed(_))
        ));
    }
}
