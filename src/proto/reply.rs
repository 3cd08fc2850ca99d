//! SMTP replies: the three-digit code, the optional RFC 3463 enhanced status code and the text.
//!
//! Owns the wire form of every reply ringrelay writes (RFC 5321 §4.2) and the parsing of replies
//! read from an upstream (shared with the client core). Writing never allocates beyond the output
//! buffer's own growth; text that came from a peer is sanitised before it is echoed.

use std::borrow::Cow;
use std::fmt;

/// An RFC 3463 enhanced status code, `class.subject.detail` (for example `5.1.3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// The subject, 0..=999.
    pub subject: u16,
    /// The detail, 0..=999.
    pub detail: u16,
}

impl EnhancedCode {
    /// Builds `class.subject.detail`.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    /// Parses `c.s.d` at the start of `text`; returns the code and the rest after one space.
    pub fn parse_prefix(text: &str) -> Option<(Self, &str)> {
        let end = text.find(' ').unwrap_or(text.len());
        let mut parts = text[..end].split('.');
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) || subject > 999 || detail > 999 {
            return None;
        }
        let rest = text.get(end + 1..).unwrap_or("");
        Some((Self::new(class, subject, detail), rest))
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One SMTP reply: code, optional enhanced code and text; the text may hold several lines
/// separated by `\n`, written as a multi-line reply (`250-...` then `250 ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    enhanced: Option<EnhancedCode>,
    text: Cow<'static, str>,
}

impl Reply {
    /// A reply with an enhanced status code (written only when ENHANCEDSTATUSCODES is on).
    pub fn new(code: u16, enhanced: EnhancedCode, text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            enhanced: Some(enhanced),
            text: text.into(),
        }
    }

    /// A reply that never carries an enhanced code (greeting, HELO/EHLO, 354, RFC 2034 §3).
    pub fn plain(code: u16, text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            enhanced: None,
            text: text.into(),
        }
    }

    /// A reply built from text that came from a peer: CR, LF, NUL and other control or
    /// non-ASCII bytes are replaced by `?` so nothing the peer sent can break the reply framing.
    pub fn sanitized(code: u16, enhanced: Option<EnhancedCode>, text: &[u8]) -> Self {
        let mut s = String::with_capacity(text.len());
        push_sanitized(&mut s, text);
        Self {
            code,
            enhanced,
            text: Cow::Owned(s),
        }
    }

    /// The three-digit reply code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code, if the reply has one.
    pub fn enhanced(&self) -> Option<EnhancedCode> {
        self.enhanced
    }

    /// The text (lines separated by `\n`).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// 2 for 2xx, 3 for 3xx, 4 for 4xx, 5 for 5xx.
    pub fn class(&self) -> u8 {
        (self.code / 100) as u8
    }

    /// True for 2xx and 3xx replies.
    pub fn is_positive(&self) -> bool {
        matches!(self.class(), 2 | 3)
    }

    /// Appends the wire form to `out`; `esc` says whether enhanced codes are advertised.
    pub fn write_to(&self, out: &mut Vec<u8>, esc: bool) {
        let code = [
            b'0' + (self.code / 100 % 10) as u8,
            b'0' + (self.code / 10 % 10) as u8,
            b'0' + (self.code % 10) as u8,
        ];
        let mut rest = self.text.as_bytes();
        loop {
            let (line, next) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            out.extend_from_slice(&code);
            out.push(if next.is_none() { b' ' } else { b'-' });
            if let (true, Some(e)) = (esc, self.enhanced) {
                write_enhanced(out, e);
                out.push(b' ');
            }
            // Text we built ourselves may still hold a CR; never let one reach the wire.
            if memchr::memchr(b'\r', line).is_none() {
                out.extend_from_slice(line);
            } else {
                out.extend(line.iter().map(|&b| if b == b'\r' { b' ' } else { b }));
            }
            out.extend_from_slice(b"\r\n");
            match next {
                Some(n) => rest = n,
                None => break,
            }
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(e) => write!(f, "{} {} {}", self.code, e, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

fn write_enhanced(out: &mut Vec<u8>, e: EnhancedCode) {
    out.push(b'0' + e.class);
    out.push(b'.');
    write_small(out, e.subject);
    out.push(b'.');
    write_small(out, e.detail);
}

fn write_small(out: &mut Vec<u8>, n: u16) {
    if n >= 100 {
        out.push(b'0' + (n / 100 % 10) as u8);
    }
    if n >= 10 {
        out.push(b'0' + (n / 10 % 10) as u8);
    }
    out.push(b'0' + (n % 10) as u8);
}

/// Appends `text` to `s` with every byte outside printable ASCII replaced by `?`.
pub fn push_sanitized(s: &mut String, text: &[u8]) {
    s.extend(text.iter().map(|&b| {
        if (0x20..0x7f).contains(&b) {
            b as char
        } else {
            '?'
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r: &Reply, esc: bool) -> String {
        let mut v = Vec::new();
        r.write_to(&mut v, esc);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn single_and_multi_line() {
        let r = Reply::new(250, EnhancedCode::new(2, 1, 5), "Recipient OK");
        assert_eq!(wire(&r, true), "250 2.1.5 Recipient OK\r\n");
        assert_eq!(wire(&r, false), "250 Recipient OK\r\n");
        let m = Reply::plain(250, "mx.example\nPIPELINING\nSIZE 100");
        assert_eq!(
            wire(&m, true),
            "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n"
        );
        let big = Reply::new(421, EnhancedCode::new(4, 123, 45), "x");
        assert_eq!(wire(&big, true), "421 4.123.45 x\r\n");
    }

    #[test]
    fn sanitizes_peer_text() {
        let r = Reply::sanitized(500, None, b"a\r\nb\0c\xff");
        assert_eq!(r.text(), "a??b?c?");
    }

    #[test]
    fn parses_enhanced_prefix() {
        assert_eq!(
            EnhancedCode::parse_prefix("5.1.1 User unknown"),
            Some((EnhancedCode::new(5, 1, 1), "User unknown"))
        );
        assert_eq!(EnhancedCode::parse_prefix("OK then"), None);
        assert_eq!(EnhancedCode::parse_prefix("3.0.0 x"), None);
    }
}
