//! Pipelined decisions: reading past a pending MAIL or RCPT decision so that a pipelining
//! client's RCPT and DATA reach the handler at once, and putting things right when an answer
//! makes a command taken ahead invalid. Part of `Session`; see `Session::set_pipelined_decisions`.
//!
//! Invariants: a command is taken ahead only if, executed against the state the pending
//! decisions would give when accepted, it raises a decision (never a reply of the session's
//! own, which would overtake the pending replies). A decision becomes invalid only when the
//! decisions before it are all answered, so invalid ones always form the front of the queue and
//! their re-executed replies come out in order.

use super::super::command::{parse_command, Command};
use super::super::event::Event;
use super::{Awaiting, CommandHook, Decision, Mode, Session, State};

impl Session {
    /// True when the session may take more input now.
    #[inline]
    pub(super) fn may_read(&self) -> bool {
        if self.decisions.is_empty() {
            return !self.starttls_pending;
        }
        self.pipelined_decisions
            && self.hooks.mode != CommandHook::EveryLine
            && matches!(self.mode, Mode::Command)
            && self
                .decisions
                .iter()
                .all(|d| !d.void && matches!(d.kind, Awaiting::Mail | Awaiting::Rcpt))
            && !self.events.iter().any(Event::needs_reply)
    }

    /// The state the session will be in if every pending decision is accepted.
    #[inline]
    pub(super) fn effective_state(&self) -> State {
        match self.decisions.back() {
            Some(d) if !d.void && d.kind == Awaiting::Mail => State::ExpectRcpt,
            Some(d) if !d.void && d.kind == Awaiting::Rcpt => State::ExpectRcptOrData,
            _ => self.state,
        }
    }

    /// Recipients accepted plus those awaiting a decision.
    #[inline]
    pub(super) fn recipient_count(&self) -> usize {
        self.envelope.rcpt_tos.len() + self.pending_rcpts.len()
    }

    /// Frames one command line while decisions are pending and executes it if it may be taken
    /// ahead; 0 = hold the input until the pending decisions are answered.
    pub(super) fn speculative_step(&mut self, rest: &[u8]) -> usize {
        let Some(p) = memchr::memchr2(b'\r', b'\n', rest) else {
            return 0;
        };
        if rest.get(p..p + 2) != Some(b"\r\n") || p + 2 > self.config.command_line_limit() {
            return 0;
        }
        let line = &rest[..p];
        let state = self.effective_state();
        let ok = match parse_command(line) {
            Ok(Command::Rcpt { to, params }) => {
                matches!(state, State::ExpectRcpt | State::ExpectRcptOrData)
                    && params.is_empty()
                    && (!to.is_utf8() || self.envelope.smtputf8)
                    && self.config.recipient_allowed(self.recipient_count())
            }
            Ok(Command::Data) => state == State::ExpectRcptOrData,
            _ => false,
        };
        if !ok {
            return 0;
        }
        self.speculative_line = Some(line.into());
        let before = self.decisions.len();
        self.execute(line);
        debug_assert_eq!(
            self.decisions.len(),
            before + 1,
            "taken ahead without a decision"
        );
        self.speculative_line = None;
        p + 2
    }

    /// After an answer: voids the pending decisions it made invalid and executes their lines
    /// again, in order, against the real state (their replies become the session's own).
    pub(super) fn settle(&mut self) {
        let first_invalid = (0..self.decisions.len()).find(|&i| {
            let d = &self.decisions[i];
            let before = || self.decisions.iter().take(i);
            !d.void
                && d.line.is_some()
                && match d.kind {
                    Awaiting::Rcpt => {
                        !matches!(self.state, State::ExpectRcpt | State::ExpectRcptOrData)
                            && !before().any(Self::live_mail)
                    }
                    Awaiting::DataStart => {
                        self.state != State::ExpectRcptOrData && !before().any(Self::live_rcpt)
                    }
                    _ => false,
                }
        });
        let Some(first) = first_invalid else {
            return;
        };
        // Whatever follows an invalid command depends on it, so it is invalid too.
        let lines: Vec<Box<[u8]>> = self
            .decisions
            .iter_mut()
            .skip(first)
            .map(|d| {
                d.void = true;
                d.line.take().unwrap_or_default()
            })
            .collect();
        let before = self.decisions.len();
        for line in lines {
            if self.state == State::Closed {
                break;
            }
            // Against the real state this cannot raise a decision (MAIL refused: RCPT and
            // DATA get 503; no recipient accepted: DATA gets 554).
            self.execute(&line);
        }
        debug_assert!(
            self.decisions.len() <= before,
            "re-execution raised a decision"
        );
    }

    fn live_mail(d: &Decision) -> bool {
        !d.void && d.kind == Awaiting::Mail
    }

    fn live_rcpt(d: &Decision) -> bool {
        !d.void && d.kind == Awaiting::Rcpt
    }
}
