//! The bounded label sets of the metrics, and the reading of reply codes out of the bytes a
//! session wrote. Every label value comes from a fixed table here, so no client input (an
//! address, an unknown verb, a code a handler made up) can create a new time series.

pub use crate::proto::Verb;

impl Verb {
    /// How many verbs there are (the length of per-verb arrays).
    pub const COUNT: usize = 16;
    /// Every verb, in label order.
    pub const ALL: [Verb; Verb::COUNT] = [
        Verb::Helo,
        Verb::Ehlo,
        Verb::Mail,
        Verb::Rcpt,
        Verb::Data,
        Verb::Bdat,
        Verb::Rset,
        Verb::Noop,
        Verb::Quit,
        Verb::Help,
        Verb::Vrfy,
        Verb::Expn,
        Verb::Starttls,
        Verb::Auth,
        Verb::Lhlo,
        Verb::Unknown,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Helo => "HELO",
            Verb::Ehlo => "EHLO",
            Verb::Mail => "MAIL",
            Verb::Rcpt => "RCPT",
            Verb::Data => "DATA",
            Verb::Bdat => "BDAT",
            Verb::Rset => "RSET",
            Verb::Noop => "NOOP",
            Verb::Quit => "QUIT",
            Verb::Help => "HELP",
            Verb::Vrfy => "VRFY",
            Verb::Expn => "EXPN",
            Verb::Starttls => "STARTTLS",
            Verb::Auth => "AUTH",
            Verb::Lhlo => "LHLO",
            Verb::Unknown => "UNKNOWN",
        }
    }
}

/// The final verdict on a message, by the class of the reply to its end of data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageResult {
    /// 2xx.
    Accepted,
    /// 5xx (including the session's own size, bare line ending and line length refusals).
    Rejected,
    /// 4xx.
    Tempfail,
}

impl MessageResult {
    /// How many results there are.
    pub const COUNT: usize = 3;
    /// Every result, in label order.
    pub const ALL: [MessageResult; 3] = [
        MessageResult::Accepted,
        MessageResult::Rejected,
        MessageResult::Tempfail,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            MessageResult::Accepted => "accepted",
            MessageResult::Rejected => "rejected",
            MessageResult::Tempfail => "tempfail",
        }
    }

    /// The result a final reply code means; `None` for a code that is no verdict (1xx, 3xx).
    pub fn of_code(code: u16) -> Option<MessageResult> {
        match code / 100 {
            2 => Some(MessageResult::Accepted),
            4 => Some(MessageResult::Tempfail),
            5 => Some(MessageResult::Rejected),
            _ => None,
        }
    }
}

/// Where in a session a 4xx or 5xx was given (`ringrelay_refusals_total{stage}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalStage {
    /// HELO or EHLO.
    Helo,
    /// MAIL.
    Mail,
    /// RCPT.
    Rcpt,
    /// DATA, or a BDAT chunk before the last.
    Data,
    /// The final verdict on a message (the reply to its final dot or BDAT LAST).
    EndOfData,
    /// Anything else (AUTH, STARTTLS, syntax errors, unknown commands, timeouts).
    Other,
}

impl RefusalStage {
    /// How many stages there are.
    pub const COUNT: usize = 6;
    /// Every stage, in label order.
    pub const ALL: [RefusalStage; 6] = [
        RefusalStage::Helo,
        RefusalStage::Mail,
        RefusalStage::Rcpt,
        RefusalStage::Data,
        RefusalStage::EndOfData,
        RefusalStage::Other,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            RefusalStage::Helo => "helo",
            RefusalStage::Mail => "mail",
            RefusalStage::Rcpt => "rcpt",
            RefusalStage::Data => "data",
            RefusalStage::EndOfData => "end_of_data",
            RefusalStage::Other => "other",
        }
    }

    /// The stage of the reply to a command line with this verb.
    pub fn of_verb(verb: Verb) -> RefusalStage {
        match verb {
            Verb::Helo | Verb::Ehlo | Verb::Lhlo => RefusalStage::Helo,
            Verb::Mail => RefusalStage::Mail,
            Verb::Rcpt => RefusalStage::Rcpt,
            Verb::Data | Verb::Bdat => RefusalStage::Data,
            _ => RefusalStage::Other,
        }
    }
}

/// Why a connection was turned away before any session started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The shard was at its share of `--max-connections` (421 4.3.2).
    MaxConnections,
    /// The server was draining (421 4.3.2).
    Draining,
    /// The client's address had `--max-connections-per-client` open (421 4.7.0).
    PerClient,
    /// A PROXY protocol listener was reached from outside `--proxy-trusted` (closed).
    ProxyUntrusted,
    /// No valid PROXY header in time (missing, malformed, too long, timed out; closed).
    ProxyHeader,
}

impl RejectReason {
    /// How many reasons there are.
    pub const COUNT: usize = 5;
    /// Every reason, in label order.
    pub const ALL: [RejectReason; 5] = [
        RejectReason::MaxConnections,
        RejectReason::Draining,
        RejectReason::PerClient,
        RejectReason::ProxyUntrusted,
        RejectReason::ProxyHeader,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::MaxConnections => "max_connections",
            RejectReason::Draining => "draining",
            RejectReason::PerClient => "per_client",
            RejectReason::ProxyUntrusted => "proxy_untrusted",
            RejectReason::ProxyHeader => "proxy_header",
        }
    }
}

/// The 4xx and 5xx codes that get their own `code` label; any other becomes `4xx` or `5xx`.
pub const ERROR_CODES: [u16; 18] = [
    421, 450, 451, 452, 454, 500, 501, 502, 503, 504, 521, 530, 550, 551, 552, 553, 554, 555,
];

/// Length of per-code arrays: `ERROR_CODES`, then the `4xx` and `5xx` catch-alls.
pub const ERROR_CODE_SLOTS: usize = ERROR_CODES.len() + 2;

/// The slot of an error code in per-code arrays; `None` for a code below 400 or above 599.
pub fn error_code_slot(code: u16) -> Option<usize> {
    match code {
        400..=599 => Some(
            ERROR_CODES
                .iter()
                .position(|&c| c == code)
                .unwrap_or(ERROR_CODES.len() + usize::from(code >= 500)),
        ),
        _ => None,
    }
}

/// The `code` label of a per-code slot.
pub fn error_code_label(slot: usize) -> String {
    match ERROR_CODES.get(slot) {
        Some(c) => c.to_string(),
        None if slot == ERROR_CODES.len() => "4xx".to_string(),
        None => "5xx".to_string(),
    }
}

/// The reply classes counted by `ringrelay_replies_total{class}`: 2xx, 3xx, 4xx, 5xx.
pub const REPLY_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// Calls `f(code)` for each complete reply in `out` (bytes a session wrote: CRLF-terminated
/// lines, each starting with three digits, a multi-line reply marking every line but its last
/// with `-` after the code) and returns how many there were.
pub fn for_each_reply(out: &[u8], mut f: impl FnMut(u16)) -> usize {
    let mut n = 0;
    let mut rest = out;
    while let Some(p) = memchr::memchr(b'\n', rest) {
        let line = &rest[..p];
        rest = &rest[p + 1..];
        if line.get(3) == Some(&b'-') {
            continue;
        }
        if let Some(d) = line.get(..3) {
            if d.iter().all(u8::is_ascii_digit) {
                let code = d.iter().fold(0u16, |a, &b| a * 10 + u16::from(b - b'0'));
                f(code);
                n += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_from_lines() {
        let rows: &[(&[u8], Verb)] = &[
            (b"HELO x\r\n", Verb::Helo),
            (b"ehlo x\r\n", Verb::Ehlo),
            (b"MAIL FROM:<a@b>\r\n", Verb::Mail),
            (b"Rcpt TO:<a@b>\r\n", Verb::Rcpt),
            (b"DATA\r\n", Verb::Data),
            (b"BDAT 10 LAST\r\n", Verb::Bdat),
            (b"QUIT\r\n", Verb::Quit),
            (b"starttls\r\n", Verb::Starttls),
            (b"NOOP", Verb::Noop),
            (b"\r\n", Verb::Unknown),
            (b"MAILX FROM:<>\r\n", Verb::Unknown),
            (b"FOO\r\n", Verb::Unknown),
            (b"\xff\xfe\xfd\xfc\r\n", Verb::Unknown),
        ];
        for (line, want) in rows {
            assert_eq!(
                Verb::of_line(line),
                *want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(Verb::ALL.len(), Verb::COUNT);
    }

    #[test]
    fn replies_are_read_from_their_last_line() {
        let out = b"250-host Hello x\r\n250-PIPELINING\r\n250 HELP\r\n354 End data\r\n\
                    552 5.3.4 too big\r\n250\r\n421-a\r\n";
        let mut codes = Vec::new();
        let n = for_each_reply(out, |c| codes.push(c));
        assert_eq!(n, 4);
        assert_eq!(codes, [250, 354, 552, 250]);
    }

    #[test]
    fn error_code_slots_are_bounded() {
        assert_eq!(error_code_slot(250), None);
        assert_eq!(error_code_slot(552), Some(14));
        assert_eq!(error_code_label(14), "552");
        assert_eq!(error_code_label(error_code_slot(499).unwrap()), "4xx");
        assert_eq!(error_code_label(error_code_slot(599).unwrap()), "5xx");
        assert_eq!(error_code_slot(599), Some(ERROR_CODE_SLOTS - 1));
    }
}
