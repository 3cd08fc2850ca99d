//! Command-line framing and the execution of each command, plus the application of handler
//! decisions; the transaction's own commands (MAIL, RCPT, DATA, BDAT) are in `transaction`.
//! Part of `Session`; see the parent module for the contract.

use std::borrow::Cow;

use super::super::address::{AddressError, Mailbox};
use super::super::command::Verb;
use super::super::command::{parse_command, Command, CommandError};
use super::super::config::{BareLineEndings, ExpnPolicy};
use super::super::data::Framing;
use super::super::event::{Event, Observation};
use super::super::reply::{push_sanitized, EnhancedCode, Reply};
use super::{Awaiting, Body, CommandHook, Decision, Mode, Session, State};

pub(super) const fn esc(class: u8, subject: u16, detail: u16) -> EnhancedCode {
    EnhancedCode::new(class, subject, detail)
}

pub(super) fn bad_sequence(text: &'static str) -> Reply {
    Reply::new(503, esc(5, 5, 1), text)
}

impl Session {
    /// Frames one command line from the front of `rest` and executes it; 0 = need more input.
    pub(super) fn command_step(&mut self, rest: &[u8]) -> usize {
        if !self.decisions.is_empty() {
            return self.speculative_step(rest);
        }
        let limit = self.config.command_line_limit();
        let normalize = self.config.bare_line_endings == BareLineEndings::Normalize;
        let Some(p) = memchr::memchr2(b'\r', b'\n', rest) else {
            if rest.len() >= limit {
                self.line_too_long();
                return rest.len();
            }
            return 0;
        };
        if p >= limit {
            // Too long whatever ends it: the same verdict however the input was split (a
            // bare CR or LF beyond the limit is part of the line that is skipped).
            self.line_too_long();
            return p;
        }
        let (line_end, used) = if rest[p] == b'\r' {
            match rest.get(p + 1) {
                None => return 0,
                Some(b'\n') => (p, p + 2),
                Some(_) if normalize => (p, p + 1),
                Some(_) => {
                    self.note_line(Verb::of_line(&rest[..p]));
                    self.protocol_error(Reply::new(500, esc(5, 5, 2), "Error: bare <CR> received"));
                    self.mode = Mode::SkipLine;
                    return p + 1;
                }
            }
        } else if normalize {
            (p, p + 1)
        } else {
            // The line goes on to its CRLF: one line, one reply (RFC 5321 §2.3.8).
            self.note_line(Verb::of_line(&rest[..p]));
            self.protocol_error(Reply::new(500, esc(5, 5, 2), "Error: bare <LF> received"));
            self.mode = Mode::SkipLine;
            return p + 1;
        };
        if line_end + 2 > limit {
            self.note_line(Verb::Unknown);
            self.protocol_error(Reply::new(500, esc(5, 5, 2), "Error: line too long"));
            return used;
        }
        self.execute_line(&rest[..line_end]);
        used
    }

    fn line_too_long(&mut self) {
        self.note_line(Verb::Unknown);
        self.protocol_error(Reply::new(500, esc(5, 5, 2), "Error: line too long"));
        self.mode = Mode::SkipLine;
    }

    /// Discards input up to and including the next CRLF (a CR at the end of one input and
    /// an LF at the start of the next make one), so a bare LF or CR never ends the line.
    pub(super) fn skip_step(&mut self, rest: &[u8]) -> usize {
        let mut after_cr = std::mem::take(&mut self.skip_cr);
        let mut from = 0;
        while let Some(off) = memchr::memchr(b'\n', &rest[from..]) {
            let p = from + off;
            let crlf = if p == 0 {
                after_cr
            } else {
                rest[p - 1] == b'\r'
            };
            if crlf {
                self.mode = Mode::Command;
                return p + 1;
            }
            after_cr = false;
            from = p + 1;
        }
        self.skip_cr = rest.last().map_or(after_cr, |&b| b == b'\r');
        rest.len()
    }

    /// Remembers the verb of the line being answered (for observations).
    fn note_line(&mut self, verb: Verb) {
        if self.observations.is_some() {
            self.pending_verb = Some(verb);
        }
    }

    /// Executes one command line read ahead of a pending decision, or its re-execution
    /// (never handed to the handler first: lines are taken ahead only without
    /// `CommandHook::EveryLine`).
    pub(super) fn execute(&mut self, line: &[u8]) {
        self.note_line(Verb::of_line(line));
        if self.greeting_refused {
            return self.after_refused_greeting(line);
        }
        self.run_line(line);
    }

    // Inlined into `command_step`, the hot path; `execute` serves the rare callers.
    #[inline(always)]
    fn execute_line(&mut self, line: &[u8]) {
        self.note_line(Verb::of_line(line));
        if self.greeting_refused {
            return self.after_refused_greeting(line);
        }
        if self.hooks.mode == CommandHook::EveryLine {
            return self.raise_command(line);
        }
        self.run_line(line);
    }

    /// What the core does with a command line.
    #[inline(always)]
    pub(super) fn run_line(&mut self, line: &[u8]) {
        let cmd = match parse_command(line) {
            Ok(cmd) => cmd,
            Err(e) => return self.command_error(e, line),
        };
        match cmd {
            Command::Hello { .. } if self.config.lmtp => self.lmtp_refuse_hello(line),
            Command::Lhlo { name } => self.lhlo(name, line),
            Command::Hello { extended, name } => {
                self.pending_helo = Some((name.to_string(), extended));
                self.decide(Awaiting::Hello, Event::Hello);
            }
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params } => self.rcpt(to, params),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.abort_transaction();
                self.mail_refused = false;
                self.failed_chunks = None;
                self.write(&Reply::new(250, esc(2, 0, 0), "Ok"));
                self.junk();
            }
            Command::Noop => {
                self.write(&Reply::new(250, esc(2, 0, 0), "Ok"));
                self.junk();
            }
            Command::Quit => {
                self.abort_transaction();
                self.write(&Reply::new(221, esc(2, 0, 0), "Bye"));
                self.events.push_back(Event::Quit);
                self.state = State::Closed;
            }
            Command::Help => {
                self.write(&Reply::new(
                    214,
                    esc(2, 0, 0),
                    "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY",
                ));
                self.junk();
            }
            Command::Vrfy => {
                if line.len() <= 5 || line[5..].iter().all(|&b| b == b' ') {
                    self.protocol_error(Reply::new(501, esc(5, 5, 4), "Syntax: VRFY address"));
                } else {
                    self.write(&Reply::new(
                        252,
                        esc(2, 0, 0),
                        "Cannot VRFY user, but will accept message and attempt delivery",
                    ));
                    self.junk();
                }
            }
            Command::Expn => {
                match self.config.expn {
                    ExpnPolicy::Disabled => self.write(&Reply::new(
                        502,
                        esc(5, 5, 1),
                        "Error: EXPN not implemented",
                    )),
                    ExpnPolicy::CannotExpand => {
                        self.write(&Reply::new(252, esc(2, 1, 5), "Cannot expand list"))
                    }
                }
                self.junk();
            }
            Command::Auth => self.auth_command(line),
            Command::StartTls => self.starttls(),
        }
    }

    /// RFC 5321 §3.1: after a greeting that refused service, the server waits for QUIT and
    /// answers anything else with 503.
    #[cold]
    fn after_refused_greeting(&mut self, line: &[u8]) {
        if matches!(parse_command(line), Ok(Command::Quit)) {
            return self.run_line(line);
        }
        self.protocol_error(Reply::new(
            503,
            esc(5, 5, 1),
            "Error: service refused at the greeting; only QUIT is accepted",
        ));
    }

    fn starttls(&mut self) {
        if !self.extensions.starttls {
            return self.write(&Reply::new(
                502,
                esc(5, 5, 1),
                "Error: command not implemented",
            ));
        }
        let refusal = if self.tls {
            Some((554, "Error: TLS already active"))
        } else if !self.esmtp {
            Some((503, "Error: send EHLO first"))
        } else if self.state != State::ExpectMail {
            Some((
                503,
                "Error: STARTTLS not permitted during a mail transaction",
            ))
        } else {
            None
        };
        if let Some((code, text)) = refusal {
            return self.protocol_error(Reply::new(code, esc(5, 5, 1), text));
        }
        self.write(&Reply::new(220, esc(2, 0, 0), "Ready to start TLS"));
        self.starttls_pending = true;
    }

    pub(super) fn command_error(&mut self, e: CommandError, line: &[u8]) {
        if e == CommandError::Unknown && self.hooks.mode == CommandHook::UnknownVerbs {
            return self.raise_command(line);
        }
        let reply = match e {
            CommandError::Unknown => {
                let verb_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
                let mut text = String::from("Error: command \"");
                push_sanitized(&mut text, &line[..verb_end.min(32)]);
                text.push_str("\" not recognized");
                Reply::new(500, esc(5, 5, 1), text)
            }
            CommandError::Syntax(usage) => Reply::new(501, esc(5, 5, 4), usage),
            CommandError::BadParam => Reply::new(501, esc(5, 5, 4), "Error: malformed parameter"),
            CommandError::BadSender(AddressError::BadUtf8)
            | CommandError::BadRecipient(AddressError::BadUtf8) => {
                Reply::new(553, esc(5, 6, 7), "Error: address is not valid UTF-8")
            }
            CommandError::BadSender(_) => {
                Reply::new(501, esc(5, 1, 7), "Error: bad sender address syntax")
            }
            CommandError::BadRecipient(AddressError::Missing) => Reply::new(
                501,
                esc(5, 1, 3),
                "Error: null or missing recipient address",
            ),
            CommandError::BadRecipient(_) => {
                Reply::new(501, esc(5, 1, 3), "Error: bad recipient address syntax")
            }
        };
        self.protocol_error(reply);
    }

    /// Raises a decision event; reading stops until the handler answers (or, with pipelined
    /// decisions, may go on: see `speculative_step`).
    pub(super) fn decide(&mut self, kind: Awaiting, event: Event) {
        self.decisions.push_back(Decision {
            kind,
            verb: self.pending_verb.take(),
            line: self.speculative_line.take(),
            void: false,
        });
        self.events.push_back(event);
    }

    pub(super) fn apply_decision(
        &mut self,
        awaiting: Awaiting,
        rcpt: Option<(Mailbox, Vec<String>)>,
        reply: Option<Reply>,
    ) {
        let refused = reply.as_ref().is_some_and(|r| !r.is_positive());
        match awaiting {
            Awaiting::Connect => {
                let reply = reply.unwrap_or_else(|| {
                    Reply::plain(
                        220,
                        format!("{} {}", self.config.hostname, self.config.greeting),
                    )
                });
                let code = reply.code();
                self.write(&reply);
                if code == 421 {
                    self.state = State::Closed;
                } else if refused {
                    self.greeting_refused = true;
                }
            }
            Awaiting::Hello => {
                let Some((name, extended)) = self.pending_helo.take() else {
                    return;
                };
                if let Some(r) = reply.filter(|r| !r.is_positive()) {
                    return self.write(&r);
                }
                self.abort_transaction();
                self.mail_refused = false;
                self.failed_chunks = None;
                self.esmtp = extended;
                let text = if extended {
                    self.ehlo_text(&name)
                } else {
                    Cow::Owned(format!("{} Hello {}", self.config.hostname, name))
                };
                self.helo = Some(name);
                self.state = State::ExpectMail;
                self.write(&Reply::plain(250, text));
            }
            Awaiting::Mail => {
                if refused {
                    self.envelope.clear();
                    self.mail_refused = true;
                } else {
                    self.state = State::ExpectRcpt;
                    self.observe(Observation::TransactionStart);
                }
                self.write(&reply.unwrap_or_else(|| Reply::new(250, esc(2, 1, 0), "Ok")));
            }
            Awaiting::Rcpt => {
                if let (false, Some((to, params))) = (refused, rcpt) {
                    self.envelope.rcpt_tos.push(to);
                    self.envelope.rcpt_options.push(params);
                    self.state = State::ExpectRcptOrData;
                } else if refused {
                    self.rcpt_refused = true;
                }
                self.write(&reply.unwrap_or_else(|| Reply::new(250, esc(2, 1, 5), "Ok")));
            }
            Awaiting::DataStart => {
                let reply =
                    reply.unwrap_or_else(|| Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));
                if reply.class() == 3 {
                    self.observe(Observation::DataStart);
                    self.body_started();
                    self.state = State::InData;
                    self.mode = Mode::Data;
                    self.body = Some(Body {
                        scanner: self.new_scanner(Framing::Dot),
                        too_big: false,
                    });
                }
                self.write(&reply);
            }
            Awaiting::Auth => self.apply_auth(reply),
            Awaiting::Command => self.apply_command(reply),
            Awaiting::ChunkEnd(size) => self.apply_chunk_verdict(size, reply),
            Awaiting::RecipientVerdict(i) => self.apply_recipient_verdict(i, reply),
            Awaiting::DataEnd => {
                let reply = reply.unwrap_or_else(|| Reply::new(250, esc(2, 0, 0), "Ok: queued"));
                if self.config.lmtp {
                    return self.lmtp_data_end(reply);
                }
                self.observe(Observation::Message {
                    code: reply.code(),
                    size: Some(self.envelope.data_size),
                });
                self.end_transaction();
                self.write(&reply);
            }
        }
    }
}
