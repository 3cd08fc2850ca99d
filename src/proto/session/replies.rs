//! Writing replies (with enhanced codes once ENHANCEDSTATUSCODES was offered, each one
//! observed with its command) and the error budget: protocol errors spend it, junk commands
//! beyond their own limit do too, and a spent budget closes the session with 421 4.7.0.
//! Part of `Session`; see the parent module for the contract.

use super::super::event::Observation;
use super::super::reply::{EnhancedCode, Reply};
use super::Session;

impl Session {
    /// Writes a reply, with its enhanced code when ENHANCEDSTATUSCODES was advertised.
    pub(super) fn write(&mut self, reply: &Reply) {
        let esc = self.esmtp && self.extensions.enhanced_status_codes;
        reply.write_to(&mut self.out, esc);
        if let Some(verb) = self.pending_verb.take() {
            self.observe(Observation::Command {
                verb,
                code: reply.code(),
            });
        }
    }

    /// Writes a reply to a protocol error and spends one unit of the error budget.
    pub(super) fn protocol_error(&mut self, reply: Reply) {
        self.write(&reply);
        self.spend_error();
    }

    pub(super) fn spend_error(&mut self) {
        self.errors += 1;
        if self.config.max_errors != 0 && self.errors >= self.config.max_errors {
            let text = format!("{} Error: too many errors", self.config.hostname);
            self.close_with(Reply::new(421, EnhancedCode::new(4, 7, 0), text));
        }
    }

    /// Counts a junk command (its reply already written); beyond the junk limit each one
    /// spends the error budget.
    pub(super) fn junk(&mut self) {
        self.junk = self.junk.saturating_add(1);
        let limit = self.config.max_junk_commands;
        if limit != 0 && self.junk > limit {
            self.spend_error();
        }
    }

    /// Writes a refusal that only follows from an earlier one in the same transaction: junk,
    /// not an error (a pipelining client sent the command before it could know).
    pub(super) fn follow_on_refusal(&mut self, reply: Reply) {
        self.write(&reply);
        self.junk();
    }
}
