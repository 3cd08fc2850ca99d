//! What a transaction means: the `Handler` trait and the built-in handlers.
//!
//! `Handler` is the Rust form of subclassing the seed's `SMTPServer` (override
//! `process_message`) and of extending `SMTPChannel` (the per-command hooks). Every hook gets
//! the session view (`Session::peer`, `envelope`, `helo_name`, `pending_recipient`, ...) and
//! may answer with a `Reply` or `None` for the session's default; `command_hook`, `command` and
//! `ehlo_keywords` add verbs and EHLO keywords of the handler's own. One handler instance runs
//! per shard, on that shard's thread only, so handlers need no locks; a hook must not block.

mod block_writer;
pub mod debug;
pub mod dump;
pub mod logged;
mod printer;
pub mod service;
pub mod sink;
pub mod target;
pub(crate) mod txlog;

pub use service::{Answer, Connection, Pending, Service, UpstreamStats};

use crate::proto::{CommandHook, DataChunk, Reply, Session};

/// Decides what each SMTP event means. All hooks but `process_message` default to "accept".
pub trait Handler: 'static {
    /// Whether the server should collect each message's content (dot-unstuffed) and pass it
    /// to `process_message`; handlers that stream through `data_chunk` return false.
    fn collects_message(&self) -> bool {
        true
    }

    /// A client connected: `None` greets with 220. A 421 refuses and closes; another 4xx/5xx
    /// (RFC 5321 §3.1's 554) refuses and keeps the session until QUIT, answering every other
    /// command with 503.
    fn connect(&mut self, _session: &Session) -> Option<Reply> {
        None
    }

    /// HELO/EHLO (`session.pending_helo()`).
    fn hello(&mut self, _session: &Session) -> Option<Reply> {
        None
    }

    /// AUTH credentials (`session.pending_auth()`), when `Extensions::auth` is on: a positive
    /// reply authenticates the session, `None` (the default) refuses with `535 5.7.8`.
    fn auth(&mut self, _session: &Session) -> Option<Reply> {
        None
    }

    /// MAIL FROM (`session.envelope().mail_from`, `mail_options`).
    fn mail(&mut self, _session: &Session) -> Option<Reply> {
        None
    }

    /// RCPT TO (`session.pending_recipient()`).
    fn rcpt(&mut self, _session: &Session) -> Option<Reply> {
        None
    }

    /// DATA accepted sequence-wise; `None` answers 354.
    fn data_start(&mut self, _session: &Session) -> Option<Reply> {
        None
    }

    /// A piece of the message body as it arrives (wire form and content view).
    fn data_chunk(&mut self, _session: &Session, _chunk: &DataChunk) {}

    /// The whole message arrived: the seed's `process_message(peer, mailfrom, rcpttos, data,
    /// **kwargs)`. `message` is the dot-unstuffed content when `collects_message()`, else empty.
    /// `None` answers `250 2.0.0 Ok: queued`.
    fn process_message(&mut self, session: &Session, message: &[u8]) -> Option<Reply>;

    /// Which command lines go to `command` (the seed's SMTPChannel extension point): none by
    /// default, `CommandHook::UnknownVerbs` for the verbs the core does not implement, or
    /// `CommandHook::EveryLine`. Asked once per connection.
    fn command_hook(&self) -> CommandHook {
        CommandHook::Off
    }

    /// A command line `command_hook` asked for (`session.pending_command()`: verb and
    /// argument). A reply answers it and the core does not execute it (not an error unless it
    /// is a 50x reply); `None` lets the core go on: `500 5.5.1` for an unknown verb, the usual
    /// handling (and hooks such as `mail`) for a known one.
    fn command(&mut self, _session: &Session) -> Option<Reply> {
        None
    }

    /// Keywords to add to the EHLO reply (`"XSTATS"`, or with parameters `"XFOO 1 2"`), after
    /// the core's own and before `HELP`. Asked once per connection.
    fn ehlo_keywords(&self) -> Vec<String> {
        Vec::new()
    }

    /// The transaction was abandoned; chunks seen for it are void.
    fn reset(&mut self, _session: &Session) {}

    /// The connection ended (after QUIT, a close by either side, or an error).
    fn disconnect(&mut self, _session: &Session) {}

    /// The shard is stopping; last chance to publish totals.
    fn shutdown(&mut self) {}
}
