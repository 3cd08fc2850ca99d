//! One transaction's upstream side: the checked-out connection, the commands waiting to go out
//! and those whose replies are still owed. The client's pipelined RCPT and DATA arrive (as
//! session decisions) before MAIL is answered; each is queued at once, and the queue goes out
//! in one write when the upstream offers PIPELINING (RFC 2920), one command per round trip
//! otherwise. Each decision's future then reads its own reply; they run in the order the
//! commands were queued, so replies are matched in order.
//!
//! Contract: a command is written only while the transaction is live (its MAIL not refused);
//! every reply owed is read before the connection goes back to the pool, or the connection is
//! discarded.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::SystemTime;

use bytes::Bytes;

use super::headers::{received, LoopGuard, TraceInfo};
use super::pool::{Upstream, UpstreamPool};
use super::x_peer::XPeer;
use crate::client::core::Phase;
use crate::client::message::BodyEncoder;
use crate::client::ClientError;
use crate::proto::{Reply, Session};

/// A command line for the upstream.
#[derive(Debug)]
struct Cmd {
    seq: u64,
    line: String,
    phase: Phase,
}

/// The current transaction's upstream side.
#[derive(Default)]
pub(super) struct Tx {
    pub up: Option<Upstream>,
    /// Not written yet, oldest first.
    queued: VecDeque<Cmd>,
    /// Written; replies owed, oldest first.
    in_flight: VecDeque<Cmd>,
    next_seq: u64,
    /// Recipients the upstream accepted (for the `Received:` field's `for`).
    pub accepted: Vec<String>,
    /// DATA was accepted upstream (354): bytes may have gone out.
    pub data_open: bool,
    /// Why the message will be refused at its end (set while data streams).
    pub failed: Option<Reply>,
    /// Client used BDAT: content must be dot-stuffed for the upstream's DATA.
    pub stuffer: Option<BodyEncoder>,
    pub guard: LoopGuard,
    /// Places `X-Peer:` (`--x-peer`) in the outgoing content.
    pub x_peer: Option<XPeer>,
    /// MAIL was refused: nothing more is written.
    mail_refused: bool,
}

/// What became of one command.
// Returned once per command and moved straight into the caller: boxing the connection would
// cost an allocation per command for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Exchange {
    /// Its reply (or the failure reading it), with the connection, which the caller keeps or
    /// discards.
    Done(Upstream, Result<Reply, ClientError>),
    /// It was never written: the transaction has no connection any more.
    NotSent,
}

impl Tx {
    /// Queues a command behind those already queued; returns its number.
    pub fn enqueue(&mut self, line: String, phase: Phase) -> u64 {
        let seq = self.reserve();
        self.queued.push_back(Cmd { seq, line, phase });
        seq
    }

    /// A number for a command queued later with `enqueue_first` (MAIL, whose line depends
    /// on the connection it goes to).
    pub fn reserve(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Puts a command (reserved earlier) at the head of the queue.
    pub fn enqueue_first(&mut self, seq: u64, line: String, phase: Phase) {
        self.queued.push_front(Cmd { seq, line, phase });
    }

    /// Replies are owed on the connection.
    pub fn owes_replies(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// The connection went stale before `seq`'s reply: everything written is queued again
    /// (except `seq` itself, which the caller rebuilds), ahead of what was not written yet.
    pub fn requeue_after(&mut self, seq: u64) {
        while let Some(c) = self.in_flight.pop_back() {
            if c.seq != seq {
                self.queued.push_front(c);
            }
        }
        self.queued.retain(|c| c.seq != seq);
    }

    /// MAIL was refused: nothing more is written; replies already owed are still read.
    pub fn refused(&mut self) {
        self.queued.clear();
        self.mail_refused = true;
    }

    /// Forgets every command not answered yet (the connection is gone).
    pub fn drop_commands(&mut self) {
        self.queued.clear();
        self.in_flight.clear();
    }

    /// Back to no transaction, returning the connection (and whether it may be reused).
    pub fn reset(&mut self) -> Option<(Upstream, bool)> {
        let clean = self.in_flight.is_empty() && !self.data_open;
        self.drop_commands();
        self.accepted.clear();
        self.data_open = false;
        self.failed = None;
        self.stuffer = None;
        self.guard = LoopGuard::default();
        self.x_peer = None;
        self.mail_refused = false;
        self.up.take().map(|up| (up, clean))
    }
}

/// Writes what may go out now, then reads the reply to command `seq`, on the transaction's
/// connection (taken out of `tx` for the duration).
pub(super) async fn exchange(tx: &Rc<RefCell<Tx>>, seq: u64) -> Exchange {
    let Some(mut up) = tx.borrow_mut().up.take() else {
        return Exchange::NotSent;
    };
    loop {
        let batch = {
            let mut t = tx.borrow_mut();
            if t.in_flight.front().is_some_and(|c| c.seq == seq) {
                break;
            }
            let known = t.queued.iter().chain(&t.in_flight).any(|c| c.seq == seq);
            if !known {
                // Dropped unwritten (the transaction died): the connection stays with it.
                t.up = Some(up);
                return Exchange::NotSent;
            }
            if !t.in_flight.is_empty() {
                // An earlier reply is owed that nobody will read (cannot happen while the
                // futures run in order): the connection is out of step.
                drop(t);
                let e = ClientError::NotSupported("replies out of step".into());
                return Exchange::Done(up, Err(e));
            }
            let n = if up.client.has_extn("pipelining") {
                t.queued.len()
            } else {
                1
            };
            let batch: Vec<Cmd> = t.queued.drain(..n).collect();
            batch
        };
        for c in &batch {
            if let Err(e) = up.client.pipeline(&c.line, c.phase) {
                return Exchange::Done(up, Err(e));
            }
        }
        tx.borrow_mut().in_flight.extend(batch);
        if let Err(e) = up.client.flush().await {
            return Exchange::Done(up, Err(e));
        }
    }
    let r = up.client.read_reply().await;
    if r.is_ok() {
        tx.borrow_mut().in_flight.pop_front();
    }
    Exchange::Done(up, r)
}

/// After a command's reply on a transaction whose MAIL was refused: once no reply is owed,
/// the connection goes back to the pool (it has no transaction open). Otherwise nothing.
pub(super) fn settle_refused(pool: &Rc<RefCell<UpstreamPool>>, tx: &Rc<RefCell<Tx>>) {
    let mut t = tx.borrow_mut();
    if !t.mail_refused || t.owes_replies() {
        return;
    }
    if let Some((up, clean)) = t.reset() {
        pool.borrow_mut().checkin(up, clean);
    }
}

/// What our `Received:` field says, taken when DATA is read; the recipient is known only
/// once the upstream has answered the pipelined RCPTs.
pub(super) struct Trace {
    helo: String,
    peer: core::net::SocketAddr,
    by: String,
    protocol: &'static str,
    id: String,
    x_peer: bool,
}

impl Trace {
    /// The trace of `session`'s current transaction, numbered `id`.
    pub fn of(session: &Session, id: String, x_peer: bool) -> Self {
        Self {
            helo: session.helo_name().unwrap_or("unknown").to_string(),
            peer: session.peer(),
            by: session.hostname().to_string(),
            // RFC 3848: ESMTP, plus S inside TLS and A once authenticated.
            protocol: match (
                session.is_esmtp(),
                session.is_tls(),
                session.authenticated().is_some(),
            ) {
                (false, ..) => "SMTP",
                (true, false, false) => "ESMTP",
                (true, false, true) => "ESMTPA",
                (true, true, false) => "ESMTPS",
                (true, true, true) => "ESMTPSA",
            },
            id,
            x_peer,
        }
    }

    /// The header lines, with `for` when the upstream accepted exactly one recipient.
    pub fn render(&self, accepted: &[String]) -> Bytes {
        let recipient = (accepted.len() == 1).then(|| accepted[0].as_str());
        let h = received(
            &TraceInfo {
                helo: &self.helo,
                peer: self.peer,
                by: &self.by,
                protocol: self.protocol,
                id: &self.id,
                recipient,
            },
            SystemTime::now(),
        );
        Bytes::from(h)
    }

    /// The `X-Peer:` placer for this message, when `--x-peer` is on.
    pub fn x_peer(&self) -> Option<XPeer> {
        self.x_peer.then(|| XPeer::new(self.peer.ip()))
    }
}
