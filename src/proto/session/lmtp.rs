//! LMTP (RFC 2033) on top of the SMTP session: LHLO instead of HELO/EHLO, and one reply per
//! accepted recipient, in RCPT order, after the message data. Part of `Session`; on only when
//! `SessionConfig::lmtp` is set, so the SMTP path is unchanged.
//!
//! Contract: in LMTP mode HELO and EHLO get `500 5.5.1` and LHLO is answered as EHLO (same
//! extension list); outside it LHLO is an unknown command. At the end of the data (DATA's
//! CRLF.CRLF or BDAT LAST) the `Event::DataEnd` answer is the default verdict for every
//! recipient, and one `Event::RecipientVerdict` decision per accepted recipient follows, in
//! RCPT order (`Session::verdict_recipient` says which), whose answer replaces that default
//! for that recipient alone. Each answer is written at once; the transaction ends after the
//! last one. The message counts once (`Observation::Message` with the default's code).

use super::super::address::Mailbox;
use super::super::event::{Event, Observation};
use super::super::reply::{push_sanitized, EnhancedCode, Reply};
use super::{Awaiting, Decision, Session};

impl Session {
    /// HELO or EHLO while in LMTP mode: not a command of this protocol.
    pub(super) fn lmtp_refuse_hello(&mut self, line: &[u8]) {
        let mut text = String::from("Error: command \"");
        push_sanitized(&mut text, &line[..line.len().min(4)]);
        text.push_str("\" not recognized; this is LMTP, use LHLO");
        self.protocol_error(Reply::new(500, EnhancedCode::new(5, 5, 1), text));
    }

    /// LHLO: accepted like EHLO in LMTP mode, unknown otherwise.
    pub(super) fn lhlo(&mut self, name: &str, line: &[u8]) {
        if !self.config.lmtp {
            let e = super::super::command::CommandError::Unknown;
            return self.command_error(e, line);
        }
        self.pending_helo = Some((name.to_string(), true));
        self.decide(Awaiting::Hello, Event::Hello);
    }

    /// The answer to `Event::DataEnd` in LMTP mode: the default verdict of every recipient,
    /// each of which is then asked for (`Event::RecipientVerdict`).
    pub(super) fn lmtp_data_end(&mut self, reply: Reply) {
        self.observe(Observation::Message {
            code: reply.code(),
            size: Some(self.envelope.data_size),
        });
        let count = self.envelope.rcpt_tos.len();
        if count == 0 {
            self.end_transaction();
            return self.write(&reply);
        }
        let verb = self.pending_verb.take();
        for index in 0..count {
            self.decisions.push_back(Decision {
                kind: Awaiting::RecipientVerdict(index),
                verb: if index == 0 { verb } else { None },
                line: None,
                void: false,
            });
            self.events.push_back(Event::RecipientVerdict);
        }
        self.lmtp_verdict = Some(reply);
    }

    /// The answer to one `Event::RecipientVerdict`: its reply (or the default) is written;
    /// after the last recipient the transaction ends.
    pub(super) fn apply_recipient_verdict(&mut self, index: usize, reply: Option<Reply>) {
        let last = index + 1 >= self.envelope.rcpt_tos.len();
        let reply = match (reply, last) {
            (Some(r), _) => r,
            (None, false) => self.lmtp_verdict.clone().unwrap_or_else(default_verdict),
            (None, true) => self.lmtp_verdict.take().unwrap_or_else(default_verdict),
        };
        if last {
            self.lmtp_verdict = None;
            self.end_transaction();
        }
        self.write(&reply);
    }

    /// The recipient whose `Event::RecipientVerdict` is pending (LMTP): its index among the
    /// accepted recipients (RCPT order) and its address.
    pub fn verdict_recipient(&self) -> Option<(usize, &Mailbox)> {
        match self.decisions.front()?.kind {
            Awaiting::RecipientVerdict(i) => Some((i, self.envelope.rcpt_tos.get(i)?)),
            _ => None,
        }
    }

    /// True when this session speaks LMTP (`SessionConfig::lmtp`).
    pub fn is_lmtp(&self) -> bool {
        self.config.lmtp
    }
}

fn default_verdict() -> Reply {
    Reply::new(250, EnhancedCode::new(2, 0, 0), "Ok: queued")
}
