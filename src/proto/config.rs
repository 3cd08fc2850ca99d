//! Per-session limits and advertised extensions, with RFC defaults.
//!
//! A `SessionConfig` is built once (from the CLI/TOML config or the library builder) and shared
//! read-only by every session of a shard; all counters that the limits apply to live in the
//! session itself, so no limit is ever shared between connections.

use std::time::Duration;

/// What to do with a bare CR or bare LF (one not part of a CRLF pair).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BareLineEndings {
    /// Command line: 500. Message: refused with 554 at its end and discarded.
    #[default]
    Reject,
    /// Treat each bare CR or LF as CRLF (the forwarded form is rewritten accordingly).
    Normalize,
}

/// How EXPN is answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpnPolicy {
    /// `502 5.5.1` (Postfix's `disable_vrfy_command`-style answer; the default).
    #[default]
    Disabled,
    /// `252 2.1.5`: cannot expand, but mail to the list would be attempted.
    CannotExpand,
}

/// The ESMTP extensions a session may advertise in its EHLO reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extensions {
    /// RFC 1870 SIZE.
    pub size: bool,
    /// RFC 6152 8BITMIME.
    pub eightbitmime: bool,
    /// RFC 6531 SMTPUTF8 (off by default, as the seed's `enable_SMTPUTF8`).
    pub smtputf8: bool,
    /// RFC 2920 PIPELINING.
    pub pipelining: bool,
    /// RFC 2034 ENHANCEDSTATUSCODES.
    pub enhanced_status_codes: bool,
    /// RFC 3030 CHUNKING (BDAT).
    pub chunking: bool,
    /// HELP in the EHLO list.
    pub help: bool,
    /// RFC 4954 AUTH (PLAIN, LOGIN); the handler checks the credentials (`Event::Auth`).
    /// Off by default.
    pub auth: bool,
    /// RFC 3207 STARTTLS; the I/O driver must be able to start TLS (`Session::starttls_requested`).
    /// Off by default. With it on, AUTH is offered only once TLS is active.
    pub starttls: bool,
}

impl Default for Extensions {
    fn default() -> Self {
        Self {
            size: true,
            eightbitmime: true,
            smtputf8: false,
            pipelining: true,
            enhanced_status_codes: true,
            chunking: true,
            help: true,
            auth: false,
            starttls: false,
        }
    }
}

/// Limits and features of one SMTP server session.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Our name in the greeting and EHLO reply.
    pub hostname: String,
    /// Text after the hostname in the 220 greeting.
    pub greeting: String,
    /// Extensions advertised to EHLO clients.
    pub extensions: Extensions,
    /// Largest message in octets (the seed's `data_size_limit`); 0 means no limit.
    pub data_size_limit: u64,
    /// Most recipients per transaction; beyond it RCPT gets `452 4.5.3`. 0 means no limit
    /// (as for the size, the error budget and the connection limit).
    pub max_recipients: usize,
    /// Longest command line in octets including CRLF, before extension allowances (RFC 5321 §4.5.3.1.4).
    pub max_command_line: usize,
    /// Longest text line of a message in octets including CRLF (RFC 5321 §4.5.3.1.6).
    pub max_text_line: usize,
    /// Protocol errors tolerated before `421 4.7.0` and close (0 = no limit). A reply that
    /// only follows from an earlier refusal (RCPT pipelined behind a refused MAIL, DATA after
    /// every recipient was refused) is not an error: it counts as junk.
    pub max_errors: u32,
    /// Junk commands (NOOP, RSET, VRFY, EXPN, HELP, and those follow-on replies) tolerated
    /// before each further one spends the error budget, as Postfix's
    /// `smtpd_junk_command_limit` (0 = no limit).
    pub max_junk_commands: u32,
    /// Silence allowed between commands before `421 4.4.2`; also the most time a command line
    /// may take from its first octet to its CRLF (a client trickling octets cannot extend it).
    pub idle_timeout: Duration,
    /// Silence allowed inside DATA or a BDAT chunk before `421 4.4.2`.
    pub data_timeout: Duration,
    /// Octets per second a message body must keep up, after its first second, while the
    /// server is under stress (`Session::set_stressed`): Postfix's `smtpd_min_data_rate`.
    /// 0 = no minimum.
    pub min_data_rate: u64,
    /// Bare CR / LF handling.
    pub bare_line_endings: BareLineEndings,
    /// EXPN answer.
    pub expn: ExpnPolicy,
    /// Speak LMTP (RFC 2033) instead of SMTP: LHLO instead of HELO/EHLO, one reply per
    /// recipient after the data (`Event::RecipientVerdict`). The greeting text is the
    /// caller's to set (say `LMTP`).
    pub lmtp: bool,
}

impl SessionConfig {
    /// True when a transaction holding `count` recipients may take one more.
    pub(crate) fn recipient_allowed(&self, count: usize) -> bool {
        self.max_recipients == 0 || count < self.max_recipients
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".to_string(),
            greeting: "ESMTP ringrelay".to_string(),
            extensions: Extensions::default(),
            data_size_limit: 33_554_432,
            max_recipients: 100,
            max_command_line: 512,
            max_text_line: 1000,
            max_errors: 20,
            max_junk_commands: 100,
            idle_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            min_data_rate: 500,
            bare_line_endings: BareLineEndings::Reject,
            expn: ExpnPolicy::Disabled,
            lmtp: false,
        }
    }
}

impl SessionConfig {
    /// The command line limit with the RFC 1870 (+26) and RFC 6531 (+10) allowances.
    pub fn command_line_limit(&self) -> usize {
        let mut n = self.max_command_line;
        if self.extensions.size {
            n += 26;
        }
        if self.extensions.smtputf8 {
            n += 10;
        }
        n
    }
}
