//! The transaction's commands: MAIL (with its parameters: SIZE, BODY, SMTPUTF8, AUTH=, DSN
//! ones passed on), RCPT (the recipient limit), DATA and BDAT (starting the body and its
//! scanner). Each checks its place in the sequence, then asks the handler or answers itself.
//! Part of `Session`; see the parent module for the contract.

use super::super::address::{Mailbox, ReversePath};
use super::super::command::parse_size;
use super::super::config::BareLineEndings;
use super::super::data::{DataScanner, Framing};
use super::super::envelope::BodyType;
use super::super::event::{Event, Observation};
use super::super::reply::{push_sanitized, Reply};
use super::execute::{bad_sequence, esc};
use super::{Awaiting, BdatChunk, Body, Mode, Session, State};

impl Session {
    pub(super) fn mail(&mut self, from: ReversePath, params: Vec<String>) {
        self.mail_refused = false;
        self.failed_chunks = None;
        match self.state {
            State::ExpectHelo => {
                return self.protocol_error(bad_sequence("Error: send HELO/EHLO first"))
            }
            State::ExpectMail => {}
            _ => return self.protocol_error(bad_sequence("Error: nested MAIL command")),
        }
        let ext = self.extensions;
        let limit = self.config.data_size_limit;
        let mut declared_size = None;
        let mut body = BodyType::Unspecified;
        let mut smtputf8 = false;
        for p in &params {
            let (key, value) = match p.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (p.as_str(), None),
            };
            let offered = self.esmtp
                && match key.to_ascii_uppercase().as_str() {
                    "SIZE" if ext.size => {
                        match value.and_then(parse_size) {
                            Some(n) if limit != 0 && n > limit => {
                                return self.write(&Reply::new(
                                    552,
                                    esc(5, 3, 4),
                                    "Error: message size exceeds fixed maximum message size",
                                ))
                            }
                            Some(n) => declared_size = Some(n),
                            None => {
                                return self.protocol_error(Reply::new(
                                    501,
                                    esc(5, 5, 4),
                                    "Error: bad SIZE value",
                                ))
                            }
                        }
                        true
                    }
                    "BODY" if ext.eightbitmime => {
                        body = match value.map(str::to_ascii_uppercase).as_deref() {
                            Some("7BIT") => BodyType::SevenBit,
                            Some("8BITMIME") => BodyType::EightBitMime,
                            _ => {
                                return self.protocol_error(Reply::new(
                                    501,
                                    esc(5, 5, 4),
                                    "Error: BODY must be 7BIT or 8BITMIME",
                                ))
                            }
                        };
                        true
                    }
                    "SMTPUTF8" if ext.smtputf8 => {
                        if value.is_some() {
                            return self.protocol_error(Reply::new(
                                501,
                                esc(5, 5, 4),
                                "Error: SMTPUTF8 takes no value",
                            ));
                        }
                        smtputf8 = true;
                        true
                    }
                    _ => false,
                };
            if !offered {
                return self.unsupported_param(key);
            }
        }
        if let ReversePath::Mailbox(m) = &from {
            if m.is_utf8() && !smtputf8 {
                return self.write(&Reply::new(
                    553,
                    esc(5, 6, 7),
                    "Error: non-ASCII address requires SMTPUTF8",
                ));
            }
        }
        self.envelope.mail_from = Some(from);
        // The seed hands handlers upper-cased options (smtpd.py: `params.upper().split()`).
        let mut params = params;
        params.iter_mut().for_each(|p| p.make_ascii_uppercase());
        self.envelope.mail_options = params;
        self.envelope.declared_size = declared_size;
        self.envelope.body = body;
        self.envelope.smtputf8 = smtputf8;
        self.decide(Awaiting::Mail, Event::Mail);
    }

    fn unsupported_param(&mut self, key: &str) {
        let mut text = String::from("Error: unsupported parameter ");
        push_sanitized(&mut text, &key.as_bytes()[..key.len().min(32)]);
        self.protocol_error(Reply::new(555, esc(5, 5, 4), text));
    }

    pub(super) fn rcpt(&mut self, to: Mailbox, params: Vec<String>) {
        match self.effective_state() {
            State::ExpectRcpt | State::ExpectRcptOrData => {}
            State::ExpectMail if self.mail_refused => {
                return self.follow_on_refusal(bad_sequence("Error: need MAIL command"))
            }
            State::ExpectHelo | State::ExpectMail => {
                return self.protocol_error(bad_sequence("Error: need MAIL command"))
            }
            _ => return self.protocol_error(bad_sequence("Error: RCPT not allowed now")),
        }
        if let Some(p) = params.first() {
            let key = p.split_once('=').map_or(p.as_str(), |(k, _)| k).to_string();
            return self.unsupported_param(&key);
        }
        if to.is_utf8() && !self.envelope.smtputf8 {
            self.rcpt_refused = true;
            return self.write(&Reply::new(
                553,
                esc(5, 6, 7),
                "Error: non-ASCII address requires SMTPUTF8",
            ));
        }
        if !self.config.recipient_allowed(self.recipient_count()) {
            self.rcpt_refused = true;
            return self.write(&Reply::new(452, esc(4, 5, 3), "Error: too many recipients"));
        }
        self.pending_rcpts.push_back((to, params));
        self.decide(Awaiting::Rcpt, Event::Rcpt);
    }

    pub(super) fn data(&mut self) {
        match self.effective_state() {
            State::ExpectRcptOrData => self.decide(Awaiting::DataStart, Event::DataStart),
            State::ExpectRcpt if self.rcpt_refused => {
                self.follow_on_refusal(Reply::new(554, esc(5, 5, 1), "Error: no valid recipients"))
            }
            State::ExpectRcpt => {
                self.protocol_error(Reply::new(554, esc(5, 5, 1), "Error: no valid recipients"))
            }
            State::ExpectMail if self.mail_refused => {
                self.follow_on_refusal(bad_sequence("Error: need RCPT command"))
            }
            State::InBdat => {
                self.protocol_error(bad_sequence("Error: DATA not allowed after BDAT"))
            }
            _ => self.protocol_error(bad_sequence("Error: need RCPT command")),
        }
    }

    pub(super) fn bdat(&mut self, size: u64, last: bool) {
        let offered = self.extensions.chunking && self.esmtp;
        let refusal = if !offered {
            Some(Reply::new(502, esc(5, 5, 1), "Error: BDAT not offered"))
        } else {
            match self.state {
                State::ExpectRcptOrData | State::InBdat => None,
                State::ExpectMail if self.failed_chunks.is_some() => self.failed_chunks.clone(),
                State::ExpectRcpt => {
                    Some(Reply::new(554, esc(5, 5, 1), "Error: no valid recipients"))
                }
                _ => Some(bad_sequence("Error: need RCPT command")),
            }
        };
        // Every chunk of a BDAT transaction whose MAIL or recipients were refused gets the
        // same answer; only the first one is the client's mistake, if any is.
        let follow_on = refusal.is_some()
            && offered
            && ((self.mail_refused || self.failed_chunks.is_some())
                && self.state == State::ExpectMail
                || self.rcpt_refused && self.state == State::ExpectRcpt);
        if refusal.is_none() && self.state == State::ExpectRcptOrData {
            self.observe(Observation::DataStart);
            self.body_started();
            self.state = State::InBdat;
            self.body = Some(Body {
                scanner: self.new_scanner(Framing::Chunked),
                too_big: false,
            });
        }
        self.mode = Mode::Bdat(BdatChunk {
            remaining: size,
            size,
            last,
            refusal,
            follow_on,
        });
        if size == 0 {
            self.finish_bdat_chunk();
        }
    }

    pub(super) fn new_scanner(&self, framing: Framing) -> DataScanner {
        DataScanner::new(
            framing,
            self.config.bare_line_endings == BareLineEndings::Normalize,
            self.config.max_text_line,
        )
    }
}
