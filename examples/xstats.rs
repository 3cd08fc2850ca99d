//! A verb of your own: the Rust form of extending Python's `smtpd.SMTPChannel` with an
//! `smtp_XSTATS` method ("the SMTPChannel may be extended to implement very specific
//! interaction behaviour with SMTP clients").
//!
//! The handler asks for the verbs the core does not implement (`CommandHook::UnknownVerbs`),
//! answers `XSTATS` with what the server has seen (sessions, messages, recipients, octets),
//! lists `XSTATS` in its EHLO reply, and leaves every other unknown verb to the core's
//! `500 5.5.1`. An answered `XSTATS` is not a protocol error, so it never spends the client's
//! error budget; `XSTATS` with an argument is a syntax error (`501`), and does.
//!
//! ```text
//! cargo run --example xstats
//! python3 -c 'import smtplib; s = smtplib.SMTP("127.0.0.1", 2527); s.ehlo();
//!     print(s.esmtp_features); print(s.docmd("XSTATS"))'
//! ```

use ringrelay::proto::{CommandHook, EnhancedCode};
use ringrelay::{Handler, Reply, Server, Session};

/// What the server has seen. Each shard has its own handler, so with several shards each
/// counts its own connections; the example runs one.
#[derive(Clone, Debug, Default)]
pub struct XStats {
    /// Connections greeted.
    pub sessions: u64,
    /// Messages accepted.
    pub messages: u64,
    /// Recipients accepted.
    pub recipients: u64,
    /// Content octets of the accepted messages.
    pub octets: u64,
}

impl XStats {
    /// The `XSTATS` reply: one `name value` line per counter.
    fn report(&self) -> Reply {
        Reply::new(
            250,
            EnhancedCode::new(2, 0, 0),
            format!(
                "sessions {}\nmessages {}\nrecipients {}\noctets {}",
                self.sessions, self.messages, self.recipients, self.octets
            ),
        )
    }
}

impl Handler for XStats {
    /// Counting needs no copy of the message.
    fn collects_message(&self) -> bool {
        false
    }

    fn connect(&mut self, _session: &Session) -> Option<Reply> {
        self.sessions += 1;
        None
    }

    fn command_hook(&self) -> CommandHook {
        CommandHook::UnknownVerbs
    }

    fn ehlo_keywords(&self) -> Vec<String> {
        vec!["XSTATS".to_string()]
    }

    fn command(&mut self, session: &Session) -> Option<Reply> {
        let cmd = session.pending_command()?;
        if !cmd.verb_is("XSTATS") {
            // Not ours: the core's 500 stands.
            return None;
        }
        if !cmd.argument().is_empty() {
            return Some(Reply::new(
                501,
                EnhancedCode::new(5, 5, 4),
                "Syntax: XSTATS",
            ));
        }
        Some(self.report())
    }

    fn rcpt(&mut self, _session: &Session) -> Option<Reply> {
        self.recipients += 1;
        None
    }

    fn process_message(&mut self, session: &Session, _message: &[u8]) -> Option<Reply> {
        self.messages += 1;
        self.octets += session.envelope().data_size;
        None
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = Server::builder()
        .listen("127.0.0.1:2527".parse()?)
        .shards(1)
        .handler(XStats::default())
        .run()?;
    eprintln!("stopped; drained cleanly: {}", report.drained);
    Ok(())
}
