//! The envelope commands of one transaction on their way to the upstream: the MAIL line built
//! for what this upstream offers, RCPT lines, and the queue that keeps them in order. A
//! command is numbered (`Seq`) when the client's decision for it is raised; it waits in the
//! queue until it may be written, then stays in flight until its reply is read. Sans-IO: the
//! transaction does the writing and reading and tells the queue.

use std::collections::VecDeque;

use crate::client::core::Phase;
use crate::client::SmtpClient;
use crate::proto::{EnhancedCode, Mailbox, Reply};

/// A command's number: the order in which the client's decisions were raised.
pub(super) type Seq = u64;

/// A command line for the upstream.
#[derive(Debug)]
struct Cmd {
    seq: Seq,
    line: String,
    phase: Phase,
}

/// Where a command stands (`CommandQueue::position`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Position {
    /// Its reply is the next one owed: read it.
    Next,
    /// Waiting to be written, with no reply owed ahead of it: write (`send`), then ask again.
    Queued,
    /// A reply ahead of it is owed that nobody will read (cannot happen while the replies are
    /// read in order): the connection is out of step.
    Behind,
    /// Dropped without being written (the transaction died).
    Unknown,
}

/// The commands of the current transaction: not written yet, then written with replies owed.
#[derive(Debug, Default)]
pub(super) struct CommandQueue {
    /// Not written yet, oldest first.
    queued: VecDeque<Cmd>,
    /// Written; replies owed, oldest first.
    in_flight: VecDeque<Cmd>,
    /// The last number handed out (never reset: a number is never reused on a connection).
    last_seq: Seq,
    /// MAIL was refused: nothing more is written; replies owed are still read.
    mail_refused: bool,
}

impl CommandQueue {
    /// A number for a command queued later with `push_first` (MAIL, whose line depends on
    /// the connection it goes to).
    pub(super) fn reserve(&mut self) -> Seq {
        self.last_seq += 1;
        self.last_seq
    }

    /// Queues a command behind those already queued; returns its number.
    pub(super) fn push(&mut self, line: String, phase: Phase) -> Seq {
        let seq = self.reserve();
        self.queued.push_back(Cmd { seq, line, phase });
        seq
    }

    /// Puts a command (reserved earlier) at the head of the queue.
    pub(super) fn push_first(&mut self, seq: Seq, line: String, phase: Phase) {
        self.queued.push_front(Cmd { seq, line, phase });
    }

    /// Where command `seq` stands.
    pub(super) fn position(&self, seq: Seq) -> Position {
        match self.in_flight.front() {
            Some(c) if c.seq == seq => Position::Next,
            _ if !self
                .queued
                .iter()
                .chain(&self.in_flight)
                .any(|c| c.seq == seq) =>
            {
                Position::Unknown
            }
            Some(_) => Position::Behind,
            None => Position::Queued,
        }
    }

    /// Puts the commands that may go out now in flight and returns their lines, oldest first:
    /// everything queued when the upstream offers PIPELINING (RFC 2920), else the next one.
    pub(super) fn send(&mut self, pipelining: bool) -> impl Iterator<Item = (&str, Phase)> {
        let n = if pipelining { self.queued.len() } else { 1 };
        let start = self.in_flight.len();
        let n = n.min(self.queued.len());
        self.in_flight.extend(self.queued.drain(..n));
        self.in_flight
            .range(start..)
            .map(|c| (c.line.as_str(), c.phase))
    }

    /// The oldest reply owed was read.
    pub(super) fn answered(&mut self) {
        self.in_flight.pop_front();
    }

    /// Replies are owed on the connection.
    pub(super) fn owes_replies(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// The connection went stale before `seq`'s reply: everything written is queued again
    /// (except `seq` itself, which the caller rebuilds), ahead of what was not written yet.
    pub(super) fn requeue_after(&mut self, seq: Seq) {
        while let Some(c) = self.in_flight.pop_back() {
            if c.seq != seq {
                self.queued.push_front(c);
            }
        }
        self.queued.retain(|c| c.seq != seq);
    }

    /// MAIL was refused: nothing more is written; replies already owed are still read.
    pub(super) fn refuse(&mut self) {
        self.queued.clear();
        self.mail_refused = true;
    }

    /// True once MAIL was refused.
    pub(super) fn is_refused(&self) -> bool {
        self.mail_refused
    }

    /// Forgets every command not answered yet (the connection is gone, or the transaction).
    pub(super) fn clear(&mut self) {
        self.queued.clear();
        self.in_flight.clear();
        self.mail_refused = false;
    }
}

/// The MAIL command for this upstream connection. A parameter goes only to an upstream that
/// offered its extension (RFC 5321 §4.1.1.11): SIZE (RFC 1870) and BODY (RFC 6152; 8-bit
/// content is still sent as it is, as Postfix does) are dropped otherwise, or an upstream
/// that does not offer them may refuse every message (Postfix in front always sends SIZE=).
/// SMTPUTF8 cannot be dropped (RFC 6531 §3.2): without it upstream the transaction is refused.
pub(super) fn mail_line(from: &str, options: &[String], up: &SmtpClient) -> Result<String, Reply> {
    let mut line = format!("MAIL FROM:<{from}>");
    for o in options {
        let key = o.split_once('=').map_or(o.as_str(), |(k, _)| k);
        let extension = match key.to_ascii_uppercase().as_str() {
            "SIZE" => Some("size"),
            "BODY" => Some("8bitmime"),
            "SMTPUTF8" => Some("smtputf8"),
            _ => None,
        };
        match extension {
            Some(ext) if !up.has_extn(ext) => {
                if ext == "smtputf8" {
                    return Err(Reply::new(
                        553,
                        EnhancedCode::new(5, 6, 7),
                        "Upstream does not support SMTPUTF8",
                    ));
                }
            }
            _ => {
                line.push(' ');
                line.push_str(o);
            }
        }
    }
    Ok(line)
}

/// The RCPT command for `to`, with the client's parameters as it gave them.
pub(super) fn rcpt_line(to: &Mailbox, params: &[String]) -> String {
    let mut line = format!("RCPT TO:<{}>", to.as_str());
    for p in params {
        line.push(' ');
        line.push_str(p);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(q: &mut CommandQueue, pipelining: bool) -> Vec<String> {
        q.send(pipelining).map(|(l, _)| l.to_string()).collect()
    }

    #[test]
    fn pipelined_envelope_goes_in_one_batch_and_replies_in_order() {
        let mut q = CommandQueue::default();
        let mail = q.reserve();
        let rcpt = q.push("RCPT TO:<b@x>".into(), Phase::Rcpt);
        let data = q.push("DATA".into(), Phase::DataStart);
        q.push_first(mail, "MAIL FROM:<a@x>".into(), Phase::Mail);
        assert_eq!(q.position(mail), Position::Queued);
        assert_eq!(
            lines(&mut q, true),
            ["MAIL FROM:<a@x>", "RCPT TO:<b@x>", "DATA"]
        );
        assert_eq!(q.position(mail), Position::Next);
        assert_eq!(q.position(data), Position::Behind);
        q.answered();
        assert_eq!(q.position(rcpt), Position::Next);
        q.answered();
        q.answered();
        assert!(!q.owes_replies());
        assert_eq!(q.position(data), Position::Unknown);
    }

    #[test]
    fn lockstep_without_pipelining() {
        let mut q = CommandQueue::default();
        let mail = q.push("MAIL FROM:<a@x>".into(), Phase::Mail);
        let rcpt = q.push("RCPT TO:<b@x>".into(), Phase::Rcpt);
        assert_eq!(lines(&mut q, false), ["MAIL FROM:<a@x>"]);
        assert_eq!(q.position(mail), Position::Next);
        q.answered();
        assert_eq!(q.position(rcpt), Position::Queued);
        assert_eq!(lines(&mut q, false), ["RCPT TO:<b@x>"]);
    }

    #[test]
    fn stale_connection_requeues_what_was_written() {
        let mut q = CommandQueue::default();
        let mail = q.reserve();
        q.push("RCPT TO:<b@x>".into(), Phase::Rcpt);
        q.push_first(mail, "MAIL FROM:<a@x>".into(), Phase::Mail);
        let _ = lines(&mut q, true);
        let data = q.push("DATA".into(), Phase::DataStart);
        q.requeue_after(mail);
        assert_eq!(q.position(mail), Position::Unknown);
        q.push_first(mail, "MAIL FROM:<a@x> SIZE=10".into(), Phase::Mail);
        assert_eq!(
            lines(&mut q, true),
            ["MAIL FROM:<a@x> SIZE=10", "RCPT TO:<b@x>", "DATA"]
        );
        assert_eq!(q.position(data), Position::Behind);
    }

    #[test]
    fn refused_mail_writes_nothing_more() {
        let mut q = CommandQueue::default();
        let mail = q.push("MAIL FROM:<a@x>".into(), Phase::Mail);
        let rcpt = q.push("RCPT TO:<b@x>".into(), Phase::Rcpt);
        let _ = lines(&mut q, false);
        q.answered();
        q.refuse();
        assert!(q.is_refused());
        assert_eq!(q.position(rcpt), Position::Unknown);
        assert_eq!(q.position(mail), Position::Unknown);
        q.clear();
        assert!(!q.is_refused());
        assert!(q.reserve() > rcpt, "numbers are never reused");
    }
}
