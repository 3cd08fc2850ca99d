//! Envelope addresses: `ReversePath` (MAIL FROM) and `Mailbox` (RCPT TO), RFC 5321 §4.1.2.
//!
//! Parses the path syntax of a MAIL or RCPT argument, accepting and discarding a source route
//! (RFC 5321 §4.1.1.3 "MUST accept ... MAY ignore"), and reports whether the address needs
//! SMTPUTF8. It never panics on any input and rejects what would be unsafe to echo or relay
//! (control characters, unbalanced brackets, unterminated quotes).

use std::fmt;

/// Longest path in octets, brackets included (RFC 5321 §4.5.3.1.3).
pub const MAX_PATH: usize = 256;

/// A mailbox `local@domain` (or a bare local part such as `Postmaster`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mailbox {
    text: String,
    at: Option<usize>,
}

impl Mailbox {
    /// The address as the client wrote it, without angle brackets or source route.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The part before the last `@` (the whole address when there is none).
    pub fn local_part(&self) -> &str {
        match self.at {
            Some(i) => &self.text[..i],
            None => &self.text,
        }
    }

    /// The part after the last `@`, if there is one.
    pub fn domain(&self) -> Option<&str> {
        self.at.map(|i| &self.text[i + 1..])
    }

    /// True when the address holds non-ASCII characters (needs SMTPUTF8, RFC 6531).
    pub fn is_utf8(&self) -> bool {
        !self.text.is_ascii()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The argument of MAIL FROM: the null path `<>` or a mailbox.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`: bounces and other notifications.
    Null,
    /// A sender mailbox.
    Mailbox(Mailbox),
}

impl ReversePath {
    /// The address text; empty for the null path.
    pub fn as_str(&self) -> &str {
        match self {
            ReversePath::Null => "",
            ReversePath::Mailbox(m) => m.as_str(),
        }
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a path did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Nothing where an address should be.
    #[error("missing address")]
    Missing,
    /// Brackets, quotes, route or characters are wrong.
    #[error("bad address syntax")]
    Syntax,
    /// Longer than RFC 5321 allows.
    #[error("address too long")]
    TooLong,
    /// Bytes >= 0x80 that are not UTF-8.
    #[error("address is not valid UTF-8")]
    BadUtf8,
}

/// A parsed path and the unparsed remainder (the ESMTP parameters).
pub(crate) struct ParsedPath<'a> {
    /// `None` for `<>`.
    pub mailbox: Option<Mailbox>,
    /// Everything after the path, leading spaces removed.
    pub rest: &'a [u8],
}

/// Parses `<path> params` or a bare address followed by params.
pub(crate) fn parse_path(input: &[u8]) -> Result<ParsedPath<'_>, AddressError> {
    let input = trim_start(input);
    if input.is_empty() {
        return Err(AddressError::Missing);
    }
    let (inner, rest) = if input[0] == b'<' {
        let close = find_close(&input[1..]).ok_or(AddressError::Syntax)?;
        (&input[1..1 + close], &input[close + 2..])
    } else {
        let end = input.iter().position(|&b| b == b' ').unwrap_or(input.len());
        (&input[..end], &input[end..])
    };
    if !rest.is_empty() && rest[0] != b' ' {
        return Err(AddressError::Syntax);
    }
    if inner.len() + 2 > MAX_PATH {
        return Err(AddressError::TooLong);
    }
    let rest = trim_start(rest);
    if inner.is_empty() {
        return Ok(ParsedPath {
            mailbox: None,
            rest,
        });
    }
    let inner = strip_route(inner)?;
    let mailbox = parse_mailbox(inner)?;
    Ok(ParsedPath {
        mailbox: Some(mailbox),
        rest,
    })
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [b' ', tail @ ..] = s {
        s = tail;
    }
    s
}

/// Index of the `>` closing a path, skipping quoted strings.
fn find_close(s: &[u8]) -> Option<usize> {
    let mut quoted = false;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Drops an `@a,@b:` source route; a route without its colon is a syntax error.
fn strip_route(s: &[u8]) -> Result<&[u8], AddressError> {
    if s[0] != b'@' {
        return Ok(s);
    }
    let colon = s
        .iter()
        .position(|&b| b == b':')
        .ok_or(AddressError::Syntax)?;
    for hop in s[..colon].split(|&b| b == b',') {
        match hop {
            [b'@', domain @ ..] if valid_domain(domain) => {}
            _ => return Err(AddressError::Syntax),
        }
    }
    let rest = &s[colon + 1..];
    if rest.is_empty() {
        return Err(AddressError::Syntax);
    }
    Ok(rest)
}

fn parse_mailbox(s: &[u8]) -> Result<Mailbox, AddressError> {
    let text = std::str::from_utf8(s).map_err(|_| AddressError::BadUtf8)?;
    let (local, domain) = if s[0] == b'"' {
        let end = quoted_end(s).ok_or(AddressError::Syntax)?;
        match &s[end..] {
            [] => (s, None),
            [b'@', d @ ..] => (&s[..end], Some(d)),
            _ => return Err(AddressError::Syntax),
        }
    } else {
        match s.iter().rposition(|&b| b == b'@') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        }
    };
    let local_ok = match local.first() {
        None => false,
        Some(b'"') => true,
        Some(_) => local.iter().all(|&b| is_atext(b) || b == b'.'),
    };
    if !local_ok {
        return Err(AddressError::Syntax);
    }
    if let Some(d) = domain {
        if !valid_domain(d) {
            return Err(AddressError::Syntax);
        }
    }
    Ok(Mailbox {
        text: text.to_string(),
        at: domain.map(|_| local.len()),
    })
}

/// End (exclusive) of a quoted string starting at s[0] == '"'.
fn quoted_end(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => {
                let next = *s.get(i + 1)?;
                if next < 0x20 || next == 0x7f {
                    return None;
                }
                i += 2;
                continue;
            }
            b'"' => return Some(i + 1),
            b if b < 0x20 || b == 0x7f => return None,
            _ => {}
        }
        i += 1;
    }
    None
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

fn valid_domain(d: &[u8]) -> bool {
    if d.is_empty() || d.len() > 255 {
        return false;
    }
    if d[0] == b'[' {
        return d.len() > 2
            && d[d.len() - 1] == b']'
            && d[1..d.len() - 1]
                .iter()
                .all(|&b| (0x21..0x7f).contains(&b) && !matches!(b, b'[' | b']' | b'\\'));
    }
    d.split(|&b| b == b'.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b >= 0x80)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> (Option<String>, String) {
        let p = parse_path(input.as_bytes()).unwrap_or_else(|e| panic!("{input}: {e}"));
        (
            p.mailbox.map(|m| m.as_str().to_string()),
            String::from_utf8(p.rest.to_vec()).unwrap(),
        )
    }

    #[test]
    fn accepts() {
        let rows: &[(&str, Option<&str>, &str)] = &[
            ("<a@b.example>", Some("a@b.example"), ""),
            ("<>", None, ""),
            ("<> SIZE=10", None, "SIZE=10"),
            (" <a@b> BODY=8BITMIME", Some("a@b"), "BODY=8BITMIME"),
            ("a@b SIZE=1", Some("a@b"), "SIZE=1"),
            (
                "<@r1.example,@r2.example:u@d.example>",
                Some("u@d.example"),
                "",
            ),
            ("<\"a >b\"@d>", Some("\"a >b\"@d"), ""),
            ("<Postmaster>", Some("Postmaster"), ""),
            ("<u@[192.0.2.1]>", Some("u@[192.0.2.1]"), ""),
            ("<jörg@bücher.example>", Some("jörg@bücher.example"), ""),
        ];
        for (input, mailbox, rest) in rows {
            let (m, r) = ok(input);
            assert_eq!(m.as_deref(), *mailbox, "{input}");
            assert_eq!(r, *rest, "{input}");
        }
    }

    #[test]
    fn rejects() {
        let rows: &[(&[u8], AddressError)] = &[
            (b"", AddressError::Missing),
            (b"<@example.com>", AddressError::Syntax),
            (b"<@a:@b>", AddressError::Syntax),
            (b"<@a:@>", AddressError::Syntax),
            (b"<a@b", AddressError::Syntax),
            (b"<a@b>x", AddressError::Syntax),
            (b"<a b@c>", AddressError::Syntax),
            (b"<a@>", AddressError::Syntax),
            (b"<@a:>", AddressError::Syntax),
            (b"<a\0@b>", AddressError::Syntax),
            (b"<\xff@b>", AddressError::BadUtf8),
            (b"<\"unterminated@b>", AddressError::Syntax),
        ];
        for (input, err) in rows {
            assert_eq!(
                parse_path(input).err(),
                Some(*err),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        let long = format!("<{}@b>", "a".repeat(300));
        assert_eq!(
            parse_path(long.as_bytes()).err(),
            Some(AddressError::TooLong)
        );
    }

    #[test]
    fn parts() {
        let p = parse_path(b"<user@host.example>").unwrap().mailbox.unwrap();
        assert_eq!(p.local_part(), "user");
        assert_eq!(p.domain(), Some("host.example"));
        assert!(!p.is_utf8());
    }
}
