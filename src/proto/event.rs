//! What a session asks of, or tells, its handler.
//!
//! Events marked *decision* stop the session until `Session::handler_reply` answers them (the
//! session holds any further pipelined input meanwhile, except the RCPT and DATA decisions it
//! raises ahead when `Session::set_pipelined_decisions` is on; answers are still given in
//! order); the others are notifications. `Event::Command` is raised only when the handler asked
//! for command lines (`Session::set_command_hook`).

use super::data::DataChunk;

/// An event from `Session::poll_event`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// *Decision*: a client connected; the default answer is the 220 greeting. A non-2xx answer
    /// is sent and the session closes.
    Connect,
    /// *Decision*: HELO or EHLO (`Session::pending_helo`); a 2xx answer means "accept" and the
    /// session sends its own greeting reply with the extension list.
    Hello,
    /// *Decision*: MAIL FROM (`Envelope::mail_from`, `mail_options`); default `250 2.1.0`.
    Mail,
    /// *Decision*: RCPT TO (`Session::pending_recipient`); default `250 2.1.5`.
    Rcpt,
    /// *Decision*: DATA with at least one recipient; default `354`. Any non-3xx answer refuses it.
    DataStart,
    /// Notification: a piece of the message body, in order.
    DataChunk(DataChunk),
    /// *Decision*: the whole body arrived (after CRLF.CRLF or BDAT LAST); default `250 2.0.0`.
    /// The transaction ends whatever the answer.
    DataEnd,
    /// *Decision*: every octet of an intermediate BDAT chunk arrived (its `DataChunk` events
    /// came first); default `250 2.0.0 Ok: N octets received`. A 4xx/5xx answer fails the
    /// transaction at once (RFC 3030 §4.2): the chunk gets it, `Reset` follows, and the
    /// chunks the client already pipelined after it get the same reply.
    ChunkEnd,
    /// Notification: the transaction was abandoned (RSET, HELO/EHLO, a refused body, timeout,
    /// too many errors); chunks already delivered for it are void.
    Reset,
    /// Notification: QUIT was answered with 221; the session is closing.
    Quit,
    /// *Decision*: AUTH credentials (`Session::pending_auth`). Only a positive answer
    /// authenticates (`235 2.7.0`); no answer refuses (`535 5.7.8`).
    Auth,
    /// *Decision*: a command line handed to the handler (`Session::pending_command` for its
    /// verb and argument), raised only when `Session::set_command_hook` asks for it: a verb
    /// the core does not implement, or every line. An answer is written as the reply to the
    /// line, which the core then does not execute; a 50x answer spends the error budget, any
    /// other does not (the handler understood the command). No answer lets the core go on
    /// with the line as if it had never been handed over: `500 5.5.1` for an unknown verb,
    /// and for a known one its usual reply, or its usual decision event, raised at once.
    Command,
    /// *Decision*, LMTP only (`SessionConfig::lmtp`): one per accepted recipient, in RCPT
    /// order, after `DataEnd` was answered (`Session::verdict_recipient` says which). The
    /// default answer is the `DataEnd` answer; another one is this recipient's reply alone.
    RecipientVerdict,
}

impl Event {
    /// True for events that need `Session::handler_reply`.
    pub fn needs_reply(&self) -> bool {
        !matches!(self, Event::DataChunk(_) | Event::Reset | Event::Quit)
    }
}

/// What happened in the session, for accounting (metrics), when observing is on
/// (`Session::set_observing`). Taken with `Session::poll_observation`, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    /// A command line got its reply (the first reply written after the line was read).
    Command {
        /// The line's verb.
        verb: super::command::Verb,
        /// The reply code.
        code: u16,
    },
    /// MAIL was accepted: a transaction began.
    TransactionStart,
    /// The data phase began (354 sent, or the first BDAT chunk of a transaction taken).
    DataStart,
    /// A message got its final reply.
    Message {
        /// The reply code.
        code: u16,
        /// Content octets, when the message was received in full and handed to the handler.
        size: Option<u64>,
    },
}
