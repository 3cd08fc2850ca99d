//! The SMTP command parser: one command line (line ending already removed) to a `Command`.
//!
//! Verbs are matched case-insensitively as packed integers; MAIL and RCPT arguments are split
//! into a path (see `address`) and ESMTP parameters, which are syntax-checked here and judged
//! (offered or not, within limits) by the session. Parsing borrows the line and allocates only
//! for the addresses and parameters it returns.

use super::address::{parse_path, AddressError, Mailbox, ReversePath};

/// One parsed command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// HELO (`extended == false`) or EHLO with the client's name.
    Hello {
        /// EHLO rather than HELO.
        extended: bool,
        /// The domain or address literal the client gave.
        name: &'a str,
    },
    /// LHLO with the client's name (LMTP, RFC 2033).
    Lhlo {
        /// The domain or address literal the client gave.
        name: &'a str,
    },
    /// `MAIL FROM:<path>` with its parameters (`KEY` or `KEY=VALUE`, as the client wrote them).
    Mail {
        /// The reverse path.
        from: ReversePath,
        /// ESMTP parameters.
        params: Vec<String>,
    },
    /// `RCPT TO:<path>` with its parameters.
    Rcpt {
        /// The forward path.
        to: Mailbox,
        /// ESMTP parameters.
        params: Vec<String>,
    },
    /// DATA.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Octets that follow the command line.
        size: u64,
        /// The final chunk.
        last: bool,
    },
    /// RSET.
    Rset,
    /// NOOP (arguments ignored).
    Noop,
    /// QUIT.
    Quit,
    /// `HELP [topic]`.
    Help,
    /// VRFY string.
    Vrfy,
    /// EXPN string.
    Expn,
    /// STARTTLS.
    StartTls,
    /// AUTH mechanism [initial-response].
    Auth,
}

/// The verb of a command line, recognised or not (for accounting: a known verb with bad
/// arguments is still that verb).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// HELO.
    Helo,
    /// EHLO.
    Ehlo,
    /// MAIL.
    Mail,
    /// RCPT.
    Rcpt,
    /// DATA.
    Data,
    /// BDAT.
    Bdat,
    /// RSET.
    Rset,
    /// NOOP.
    Noop,
    /// QUIT.
    Quit,
    /// HELP.
    Help,
    /// VRFY.
    Vrfy,
    /// EXPN.
    Expn,
    /// STARTTLS.
    Starttls,
    /// AUTH.
    Auth,
    /// LHLO (LMTP).
    Lhlo,
    /// Anything else (including empty and over-long lines).
    Unknown,
}

impl Verb {
    /// The verb a command line starts with (case-insensitive; the word ends at a space or
    /// the line ending).
    pub fn of_line(line: &[u8]) -> Verb {
        let end = line
            .iter()
            .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))
            .unwrap_or(line.len());
        let word = &line[..end];
        if word.eq_ignore_ascii_case(b"STARTTLS") {
            return Verb::Starttls;
        }
        if word.len() != 4 {
            return Verb::Unknown;
        }
        match pack4(word) {
            HELO => Verb::Helo,
            EHLO => Verb::Ehlo,
            MAIL => Verb::Mail,
            RCPT => Verb::Rcpt,
            DATA => Verb::Data,
            BDAT => Verb::Bdat,
            RSET => Verb::Rset,
            NOOP => Verb::Noop,
            QUIT => Verb::Quit,
            HELP => Verb::Help,
            VRFY => Verb::Vrfy,
            EXPN => Verb::Expn,
            AUTH => Verb::Auth,
            LHLO => Verb::Lhlo,
            _ => Verb::Unknown,
        }
    }
}

/// Why a command line was refused; each maps to one RFC 5321 reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Unknown verb: 500 5.5.1.
    #[error("command not recognized")]
    Unknown,
    /// Bad argument syntax: 501 with the text given.
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// Bad MAIL FROM path: 501 5.1.7.
    #[error("bad sender address: {0}")]
    BadSender(AddressError),
    /// Bad or null RCPT TO path: 501 5.1.3.
    #[error("bad recipient address: {0}")]
    BadRecipient(AddressError),
    /// An ESMTP parameter that is not `KEY[=VALUE]`: 501 5.5.4.
    #[error("malformed parameter")]
    BadParam,
}

/// Parses one command line (without its line ending).
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, CommandError> {
    let verb_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let verb = &line[..verb_end];
    let arg = trim(line.get(verb_end + 1..).unwrap_or(b""));
    let no_arg = |cmd: Command<'static>, usage: &'static str| {
        if arg.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax(usage))
        }
    };
    match verb.len() {
        4 => match pack4(verb) {
            HELO => hello(false, arg),
            EHLO => hello(true, arg),
            MAIL => mail(arg),
            RCPT => rcpt(arg),
            DATA => no_arg(Command::Data, "Syntax: DATA"),
            BDAT => bdat(arg),
            RSET => no_arg(Command::Rset, "Syntax: RSET"),
            NOOP => Ok(Command::Noop),
            QUIT => no_arg(Command::Quit, "Syntax: QUIT"),
            HELP => Ok(Command::Help),
            VRFY => Ok(Command::Vrfy),
            EXPN => Ok(Command::Expn),
            AUTH => Ok(Command::Auth),
            LHLO => lhlo(arg),
            _ => Err(CommandError::Unknown),
        },
        8 if verb.eq_ignore_ascii_case(b"STARTTLS") => {
            no_arg(Command::StartTls, "Syntax: STARTTLS")
        }
        _ => Err(CommandError::Unknown),
    }
}

const fn word(w: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*w)
}
const HELO: u32 = word(b"helo");
const EHLO: u32 = word(b"ehlo");
const MAIL: u32 = word(b"mail");
const RCPT: u32 = word(b"rcpt");
const DATA: u32 = word(b"data");
const BDAT: u32 = word(b"bdat");
const RSET: u32 = word(b"rset");
const NOOP: u32 = word(b"noop");
const QUIT: u32 = word(b"quit");
const HELP: u32 = word(b"help");
const VRFY: u32 = word(b"vrfy");
const EXPN: u32 = word(b"expn");
const AUTH: u32 = word(b"auth");
const LHLO: u32 = word(b"lhlo");

fn pack4(v: &[u8]) -> u32 {
    // ASCII letters lowercased by setting bit 5; non-letters can then never equal a verb.
    u32::from_le_bytes([v[0] | 0x20, v[1] | 0x20, v[2] | 0x20, v[3] | 0x20])
        & if v.iter().all(u8::is_ascii_alphabetic) {
            u32::MAX
        } else {
            0
        }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    let end = s.iter().rposition(|&b| b != b' ').map_or(start, |i| i + 1);
    &s[start..end]
}

fn hello(extended: bool, arg: &[u8]) -> Result<Command<'_>, CommandError> {
    let usage = if extended {
        "Syntax: EHLO hostname"
    } else {
        "Syntax: HELO hostname"
    };
    // RFC 5321 allows only the domain; like Postfix we tolerate trailing words but keep the first.
    let end = arg.iter().position(|&b| b == b' ').unwrap_or(arg.len());
    let name = &arg[..end];
    if name.is_empty() || name.iter().any(|&b| b < 0x21 || b == 0x7f) {
        return Err(CommandError::Syntax(usage));
    }
    let name = std::str::from_utf8(name).map_err(|_| CommandError::Syntax(usage))?;
    Ok(Command::Hello { extended, name })
}

fn lhlo(arg: &[u8]) -> Result<Command<'_>, CommandError> {
    match hello(true, arg) {
        Ok(Command::Hello { name, .. }) => Ok(Command::Lhlo { name }),
        _ => Err(CommandError::Syntax("Syntax: LHLO hostname")),
    }
}

/// Strips `FROM:` / `TO:` (case-insensitive) from a MAIL/RCPT argument.
fn strip_keyword<'a>(arg: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    if arg.len() >= keyword.len() && arg[..keyword.len()].eq_ignore_ascii_case(keyword) {
        Some(&arg[keyword.len()..])
    } else {
        None
    }
}

fn mail(arg: &[u8]) -> Result<Command<'_>, CommandError> {
    let rest =
        strip_keyword(arg, b"FROM:").ok_or(CommandError::Syntax("Syntax: MAIL FROM:<address>"))?;
    let path = parse_path(rest).map_err(CommandError::BadSender)?;
    let from = match path.mailbox {
        None => ReversePath::Null,
        Some(m) => ReversePath::Mailbox(m),
    };
    Ok(Command::Mail {
        from,
        params: params(path.rest)?,
    })
}

fn rcpt(arg: &[u8]) -> Result<Command<'_>, CommandError> {
    let rest =
        strip_keyword(arg, b"TO:").ok_or(CommandError::Syntax("Syntax: RCPT TO:<address>"))?;
    let path = parse_path(rest).map_err(CommandError::BadRecipient)?;
    let to = path
        .mailbox
        .ok_or(CommandError::BadRecipient(AddressError::Missing))?;
    Ok(Command::Rcpt {
        to,
        params: params(path.rest)?,
    })
}

/// Splits `KEY[=VALUE] ...`; keywords are alphanumeric or '-', values printable without '='.
fn params(rest: &[u8]) -> Result<Vec<String>, CommandError> {
    let mut out = Vec::new();
    for p in rest.split(|&b| b == b' ').filter(|p| !p.is_empty()) {
        let (key, value) = match p.iter().position(|&b| b == b'=') {
            Some(i) => (&p[..i], Some(&p[i + 1..])),
            None => (p, None),
        };
        let key_ok = !key.is_empty()
            && key[0].is_ascii_alphanumeric()
            && key.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-');
        let value_ok = value
            .is_none_or(|v| !v.is_empty() && v.iter().all(|&b| b > 0x20 && b != b'=' && b != 0x7f));
        if !key_ok || !value_ok {
            return Err(CommandError::BadParam);
        }
        let s = std::str::from_utf8(p).map_err(|_| CommandError::BadParam)?;
        out.push(s.to_string());
    }
    Ok(out)
}

fn bdat(arg: &[u8]) -> Result<Command<'_>, CommandError> {
    const USAGE: &str = "Syntax: BDAT size [LAST]";
    let mut words = arg.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let size = words.next().ok_or(CommandError::Syntax(USAGE))?;
    if size.is_empty() || size.len() > 19 || !size.iter().all(u8::is_ascii_digit) {
        return Err(CommandError::Syntax(USAGE));
    }
    let size: u64 = std::str::from_utf8(size)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(CommandError::Syntax(USAGE))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"LAST") => true,
        Some(_) => return Err(CommandError::Syntax(USAGE)),
    };
    if words.next().is_some() {
        return Err(CommandError::Syntax(USAGE));
    }
    Ok(Command::Bdat { size, last })
}

/// Parses a `SIZE=` value (digits only, no overflow).
pub(crate) fn parse_size(v: &str) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs() {
        let rows: &[(&[u8], Result<Command<'static>, CommandError>)] = &[
            (b"NOOP", Ok(Command::Noop)),
            (b"noop anything at all", Ok(Command::Noop)),
            (b"DATA", Ok(Command::Data)),
            (b"data x", Err(CommandError::Syntax("Syntax: DATA"))),
            (b"RSET", Ok(Command::Rset)),
            (b"QUIT", Ok(Command::Quit)),
            (b"QUIT now", Err(CommandError::Syntax("Syntax: QUIT"))),
            (b"HELP", Ok(Command::Help)),
            (b"HELP MAIL", Ok(Command::Help)),
            (b"VRFY bob", Ok(Command::Vrfy)),
            (b"EXPN list", Ok(Command::Expn)),
            (b"starttls", Ok(Command::StartTls)),
            (b"AUTH PLAIN", Ok(Command::Auth)),
            (
                b"BDAT 10",
                Ok(Command::Bdat {
                    size: 10,
                    last: false,
                }),
            ),
            (
                b"bdat 0 last",
                Ok(Command::Bdat {
                    size: 0,
                    last: true,
                }),
            ),
            (
                b"BDAT",
                Err(CommandError::Syntax("Syntax: BDAT size [LAST]")),
            ),
            (
                b"BDAT -1",
                Err(CommandError::Syntax("Syntax: BDAT size [LAST]")),
            ),
            (
                b"BDAT 1 FIRST",
                Err(CommandError::Syntax("Syntax: BDAT size [LAST]")),
            ),
            (
                b"BDAT 99999999999999999999",
                Err(CommandError::Syntax("Syntax: BDAT size [LAST]")),
            ),
            (b"XYZZY", Err(CommandError::Unknown)),
            (b"", Err(CommandError::Unknown)),
            (b"MA\xffL", Err(CommandError::Unknown)),
            (b"M@IL FROM:<a@b>", Err(CommandError::Unknown)),
            (b"HELO", Err(CommandError::Syntax("Syntax: HELO hostname"))),
            (b"EHLO ", Err(CommandError::Syntax("Syntax: EHLO hostname"))),
            (
                b"EHLO a\x01b",
                Err(CommandError::Syntax("Syntax: EHLO hostname")),
            ),
            (
                b"EHLO client.example",
                Ok(Command::Hello {
                    extended: true,
                    name: "client.example",
                }),
            ),
            (
                b"helo [127.0.0.1]",
                Ok(Command::Hello {
                    extended: false,
                    name: "[127.0.0.1]",
                }),
            ),
            (
                b"MAIL TO:<a@b>",
                Err(CommandError::Syntax("Syntax: MAIL FROM:<address>")),
            ),
            (
                b"MAIL FROM:<@example.com>",
                Err(CommandError::BadSender(AddressError::Syntax)),
            ),
            (
                b"MAIL FROM:",
                Err(CommandError::BadSender(AddressError::Missing)),
            ),
            (
                b"RCPT TO:<>",
                Err(CommandError::BadRecipient(AddressError::Missing)),
            ),
            (
                b"RCPT FROM:<a@b>",
                Err(CommandError::Syntax("Syntax: RCPT TO:<address>")),
            ),
            (
                b"MAIL FROM:<a@b> SIZE",
                Ok(Command::Mail {
                    from: mbx_from("a@b"),
                    params: vec!["SIZE".into()],
                }),
            ),
            (b"MAIL FROM:<a@b> =x", Err(CommandError::BadParam)),
            (b"MAIL FROM:<a@b> SIZE=", Err(CommandError::BadParam)),
            (b"MAIL FROM:<a@b> SIZE=1=2", Err(CommandError::BadParam)),
        ];
        for (line, want) in rows {
            assert_eq!(
                &parse_command(line),
                want,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    fn mbx_from(s: &str) -> ReversePath {
        let p = parse_path(s.as_bytes()).unwrap();
        ReversePath::Mailbox(p.mailbox.unwrap())
    }

    #[test]
    fn mail_and_rcpt() {
        match parse_command(b"mail from: <a@b.example> SIZE=100 BODY=8BITMIME").unwrap() {
            Command::Mail { from, params } => {
                assert_eq!(from.as_str(), "a@b.example");
                assert_eq!(params, vec!["SIZE=100", "BODY=8BITMIME"]);
            }
            other => panic!("{other:?}"),
        }
        match parse_command(b"MAIL FROM:<>").unwrap() {
            Command::Mail { from, params } => {
                assert_eq!(from, ReversePath::Null);
                assert!(params.is_empty());
            }
            other => panic!("{other:?}"),
        }
        match parse_command(b"RCPT TO:<Postmaster> NOTIFY=NEVER").unwrap() {
            Command::Rcpt { to, params } => {
                assert_eq!(to.as_str(), "Postmaster");
                assert_eq!(params, vec!["NOTIFY=NEVER"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn size_values() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("33554432"), Some(33_554_432));
        assert_eq!(parse_size("1e3"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999999999999"), None);
    }
}
