//! The handler's extensions to the command set, the seed's "SMTPChannel may be extended to
//! implement very specific interaction behaviour with SMTP clients": command lines handed to
//! the handler as `Event::Command` decisions (verbs the core does not implement, or every
//! line), and keywords the handler adds to the EHLO reply. Part of `Session`.
//!
//! Off by default and then free: one comparison per unknown verb (per line with
//! `CommandHook::EveryLine`), no allocation. While a hook is on, the pending line is copied into
//! a buffer the session keeps for the next one. Never touches a socket; the handler's answer
//! arrives through `Session::handler_reply` like any other.

use super::super::command::Verb;
use super::super::event::Event;
use super::super::reply::{push_sanitized, Reply};
use super::{Awaiting, Session};

/// Which command lines the session hands to its handler as `Event::Command` decisions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CommandHook {
    /// None: the core answers every line itself (unknown verbs get `500 5.5.1`).
    #[default]
    Off,
    /// Lines whose verb the core does not implement (`XSTATS`, `ETRN`, ...): the handler
    /// answers them, or lets the core's `500 5.5.1` stand.
    UnknownVerbs,
    /// Every command line, before the core executes it: the handler may answer any of them
    /// itself (the core then does not execute it), or let the core go on as usual. Lines that
    /// are not commands (message data, AUTH responses, lines refused for their framing: too
    /// long, a bare CR or LF) are not handed over. Pipelined decisions
    /// (`Session::set_pipelined_decisions`) are not taken ahead while this is on.
    EveryLine,
}

/// The hook state of one session.
#[derive(Debug, Default)]
pub(super) struct Hooks {
    pub(super) mode: CommandHook,
    /// The line of the pending `Event::Command`; the buffer is kept for the next one.
    line: Vec<u8>,
    /// Keywords added to the EHLO reply, each preceded by `\n`.
    pub(super) ehlo: String,
}

/// A command line awaiting the handler's decision (`Session::pending_command`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingCommand<'a> {
    line: &'a [u8],
}

impl<'a> PendingCommand<'a> {
    /// The whole line, without its CRLF.
    pub fn line(&self) -> &'a [u8] {
        self.line
    }

    /// The verb: the line up to its first space, as the client wrote it.
    pub fn verb(&self) -> &'a [u8] {
        let end = memchr::memchr(b' ', self.line).unwrap_or(self.line.len());
        &self.line[..end]
    }

    /// True when the verb is `verb`, ignoring ASCII case (`cmd.verb_is("XSTATS")`).
    pub fn verb_is(&self, verb: &str) -> bool {
        self.verb().eq_ignore_ascii_case(verb.as_bytes())
    }

    /// What follows the verb, without the spaces around it (empty when nothing does).
    pub fn argument(&self) -> &'a [u8] {
        let rest = self.line.get(self.verb().len() + 1..).unwrap_or(b"");
        let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
        let end = rest
            .iter()
            .rposition(|&b| b != b' ')
            .map_or(start, |i| i + 1);
        &rest[start..end]
    }

    /// The verb as the core knows it (`Verb::Unknown` for one it does not implement).
    pub fn known_verb(&self) -> Verb {
        Verb::of_line(self.line)
    }
}

impl Session {
    /// Chooses which command lines raise `Event::Command` (`CommandHook::Off` by default).
    /// The server sets it from `Service::command_hook` when a connection opens.
    pub fn set_command_hook(&mut self, hook: CommandHook) {
        self.hooks.mode = hook;
    }

    /// Which command lines raise `Event::Command`.
    pub fn command_hook(&self) -> CommandHook {
        self.hooks.mode
    }

    /// Adds `keywords` (with their parameters, `"XSTATS"` or `"XFOO 1 2"`) to the EHLO reply,
    /// after the core's own and before `HELP`; replaces those set before. Empty ones are
    /// skipped; octets outside printable ASCII become `?`, so a keyword never breaks the reply.
    pub fn set_ehlo_keywords<I>(&mut self, keywords: I)
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.hooks.ehlo.clear();
        for k in keywords {
            let k = k.as_ref().trim_matches(' ');
            if !k.is_empty() {
                self.hooks.ehlo.push('\n');
                push_sanitized(&mut self.hooks.ehlo, k.as_bytes());
            }
        }
    }

    /// The keywords `set_ehlo_keywords` added, as the EHLO reply lists them.
    pub fn ehlo_keywords(&self) -> impl Iterator<Item = &str> {
        self.hooks.ehlo.split('\n').skip(1)
    }

    /// The command line awaiting a decision (`Event::Command`).
    pub fn pending_command(&self) -> Option<PendingCommand<'_>> {
        let pending = self.decisions.front()?.kind == Awaiting::Command;
        pending.then_some(PendingCommand {
            line: &self.hooks.line,
        })
    }

    /// Hands `line` to the handler: `Event::Command`.
    pub(super) fn raise_command(&mut self, line: &[u8]) {
        self.hooks.line.clear();
        self.hooks.line.extend_from_slice(line);
        self.decide(Awaiting::Command, Event::Command);
    }

    /// Applies the handler's answer to `Event::Command`: its reply (a 50x one spends the error
    /// budget, as the core's own syntax and sequence errors do; any other is the handler's
    /// understanding of the command), or, with none, what the core does with the line.
    pub(super) fn apply_command(&mut self, reply: Option<Reply>) {
        let line = std::mem::take(&mut self.hooks.line);
        match reply {
            Some(r) => {
                self.write(&r);
                if r.code() / 10 == 50 {
                    self.spend_error();
                }
            }
            None => {
                let mode = std::mem::replace(&mut self.hooks.mode, CommandHook::Off);
                self.run_line(&line);
                self.hooks.mode = mode;
            }
        }
        self.hooks.line = line;
    }
}
