//! `Transaction`: the upstream side of a client connection's mail transactions. It owns the
//! connection checked out of the pool for the current transaction and the envelope commands
//! on their way to it, and offers what the mirror needs: send the envelope (MAIL, RCPTs,
//! DATA), read each command's reply, write body pieces (one vectored write per chunk), end the
//! data, and release the connection to the pool (reusable or discarded).
//!
//! The client's pipelined RCPT and DATA arrive (as session decisions) before MAIL is
//! answered; each is queued at once, and the queue goes out in one write when the upstream
//! offers PIPELINING (RFC 2920), one command per round trip otherwise. Each decision's future
//! then reads its own reply; the session's driver runs them one at a time, in the order the
//! commands were queued, so replies are matched in order. The futures share the transaction
//! (cheap clones of one handle); the connection is lent (`Lease`) to the one operation running
//! and comes back only when that operation says so, so a future dropped mid-exchange (the
//! client went away) takes the connection, in an unknown state, down with it.
//!
//! Contract: a command is written only while the transaction is live (its MAIL not refused);
//! every reply owed is read before the connection goes back to the pool, or the connection is
//! discarded; after an error, a 421 or an abandoned DATA it is discarded, never reused.

use std::cell::{RefCell, RefMut};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::commands::{mail_line, CommandQueue, Position, Seq};
use super::headers::Trace;
use super::identity::{pass_identity, Identity};
use super::pool::{Upstream, UpstreamPool};
use super::reply_map::{failure, mirror, out_of_protocol, stale, unavailable};
use crate::client::core::Phase;
use crate::client::{ClientError, SmtpClient};
use crate::proto::Reply;

/// The upstream side of one client connection's transactions; clones are handles on the same
/// transaction (each pending decision holds one).
#[derive(Clone)]
pub(super) struct Transaction(Rc<Shared>);

struct Shared {
    pool: Rc<RefCell<UpstreamPool>>,
    /// The connection, while the transaction has one and no operation has it lent.
    up: RefCell<Option<Upstream>>,
    state: RefCell<State>,
}

/// What the transaction knows besides its connection.
#[derive(Default)]
struct State {
    commands: CommandQueue,
    /// Recipients the upstream accepted (for the `Received:` field's `for`).
    accepted: Vec<String>,
    /// DATA was accepted upstream (354): bytes may have gone out.
    data_open: bool,
    /// Why the message will be refused at its end (set while data streams).
    failed: Option<Reply>,
    /// For the log: which upstream (index into the configured servers) took MAIL, and its
    /// own reply to the final dot. Kept past the end of the transaction, until the next MAIL.
    upstream: Option<String>,
    upstream_reply: Option<String>,
}

/// What became of one command.
enum Exchanged {
    /// Its reply, or the failure reading it.
    Reply(Result<Reply, ClientError>),
    /// It was never written: the transaction lost it (MAIL refused, connection gone).
    NotSent,
}

/// The connection, lent to the operation running: back with `keep`, to the pool with
/// `checkin`, or closed with `discard` (or by dropping it).
struct Lease {
    owner: Rc<Shared>,
    up: Upstream,
}

impl Deref for Lease {
    type Target = Upstream;

    fn deref(&self) -> &Upstream {
        &self.up
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut Upstream {
        &mut self.up
    }
}

impl Lease {
    /// Gives the connection back to the transaction.
    fn keep(self) {
        let old = self.owner.up.borrow_mut().replace(self.up);
        debug_assert!(old.is_none(), "a transaction has one connection");
    }

    /// Returns the connection to the pool (`reusable`) or closes it.
    fn checkin(self, reusable: bool) {
        self.owner.pool.borrow_mut().checkin(self.up, reusable);
    }

    /// Closes the connection: it is in a state nobody knows.
    fn discard(self) {
        self.owner.pool.borrow_mut().discard(self.up);
    }
}

impl Transaction {
    /// No transaction yet; connections come from `pool`.
    pub(super) fn new(pool: Rc<RefCell<UpstreamPool>>) -> Self {
        Self(Rc::new(Shared {
            pool,
            up: RefCell::new(None),
            state: RefCell::new(State::default()),
        }))
    }

    fn state(&self) -> RefMut<'_, State> {
        self.0.state.borrow_mut()
    }

    /// Lends the connection, if the transaction has one (and no other operation has it).
    fn lease(&self) -> Option<Lease> {
        let up = self.0.up.borrow_mut().take()?;
        Some(self.lend(up))
    }

    fn lend(&self, up: Upstream) -> Lease {
        Lease {
            owner: self.0.clone(),
            up,
        }
    }

    /// A new transaction (the client's MAIL): whatever was left of the last one is abandoned.
    /// Returns the number of MAIL, which `send_mail` writes.
    pub(super) fn begin(&self) -> Seq {
        self.release(false);
        let mut st = self.state();
        st.upstream = None;
        st.upstream_reply = None;
        st.commands.reserve()
    }

    /// For the log: the upstream (`host:port` as configured) that took this transaction's
    /// MAIL, and its own reply to the final dot (which names its queue id), once known.
    pub(super) fn upstream_outcome(&self) -> (Option<String>, Option<String>) {
        let st = self.state();
        (st.upstream.clone(), st.upstream_reply.clone())
    }

    /// Queues RCPT or DATA behind the commands already queued; returns its number, for
    /// `rcpt_reply` or `data_reply`.
    pub(super) fn queue(&self, line: String, phase: Phase) -> Seq {
        self.state().commands.push(line, phase)
    }

    /// MAIL (number `seq`): checks a connection out, passes the client's identity, writes MAIL
    /// and whatever the client pipelined behind it, and returns our reply to MAIL. A pooled
    /// connection found stale is replaced by a fresh one, and everything written goes again;
    /// the client never sees it.
    pub(super) async fn send_mail(
        &self,
        seq: Seq,
        from: &str,
        options: &[String],
        identity: &Identity,
    ) -> Reply {
        let pool = self.0.pool.clone();
        let (xclient, xforward) = {
            let p = pool.borrow();
            (p.config().xclient, p.config().xforward)
        };
        let mut fresh = false;
        loop {
            let mut up = match UpstreamPool::checkout(&pool, fresh).await {
                Ok(up) => {
                    self.state().upstream = Some(up.name.clone());
                    self.lend(up)
                }
                Err(reply) => {
                    self.state().commands.clear();
                    return reply;
                }
            };
            // The upstream logs and checks the real client instead of us.
            let r = match pass_identity(&mut up.client, identity, xclient, xforward).await {
                Ok(x) if x.code() != 421 => {
                    // After XCLIENT the EHLO features may differ: build MAIL now.
                    let line = match mail_line(from, options, &up.client) {
                        Ok(line) => line,
                        Err(reply) => {
                            self.state().commands.clear();
                            up.checkin(true);
                            return reply;
                        }
                    };
                    self.state().commands.push_first(seq, line, Phase::Mail);
                    match self.exchange(&mut up.client, seq).await {
                        Exchanged::Reply(r) => r,
                        Exchanged::NotSent => return unavailable("Upstream lost"),
                    }
                }
                other => other,
            };
            if up.reused && stale(&r) && !fresh {
                // A pooled connection that went away while idle: what was written goes again
                // on a new one.
                up.discard();
                self.state().commands.requeue_after(seq);
                fresh = true;
                continue;
            }
            return match r {
                Ok(reply) if reply.class() == 2 => {
                    up.keep();
                    mirror(reply)
                }
                // No 3xx answers MAIL: the upstream is confused; never pass on a positive
                // reply we cannot honour. A 421 closes the connection.
                Ok(reply) if reply.class() == 3 || reply.code() == 421 => self.give_up(up, reply),
                Ok(reply) => {
                    // Refused: replies to what was pipelined behind MAIL are still read (the
                    // session voids them) before the connection is reused.
                    self.state().commands.refuse();
                    up.keep();
                    self.settle_refused();
                    mirror(reply)
                }
                Err(e) => {
                    self.state().commands.clear();
                    up.discard();
                    failure(&e)
                }
            };
        }
    }

    /// Our reply to RCPT (number `seq`, for `to`): the upstream's.
    pub(super) async fn rcpt_reply(&self, seq: Seq, to: String) -> Reply {
        let (up, reply) = match self.reply_to(seq).await {
            Ok(r) => r,
            Err(ours) => return ours,
        };
        let accepted = reply.class() == 2;
        if reply.code() == 421 || reply.is_positive() && !accepted {
            // No 3xx answers RCPT.
            return self.give_up(up, reply);
        }
        up.keep();
        if accepted {
            self.state().accepted.push(to);
        }
        self.settle_refused();
        mirror(reply)
    }

    /// Our reply to DATA (number `seq`): on the upstream's 354 our trace field opens the
    /// message and the reply is `None`, the session's own 354; otherwise the upstream's.
    pub(super) async fn data_reply(&self, seq: Seq, trace: &Trace) -> Option<Reply> {
        let (up, reply) = match self.reply_to(seq).await {
            Ok(r) => r,
            Err(ours) => return Some(ours),
        };
        let open = reply.code() == 354;
        if reply.code() == 421 || reply.is_positive() && !open {
            // Only 354 opens DATA: mirrored, another 3xx would put our session into DATA mode
            // (and the body into the upstream's command parser); a 2xx would answer DATA with
            // a meaningless success.
            return Some(self.give_up(up, reply));
        }
        if !open {
            up.keep();
            self.settle_refused();
            return Some(mirror(reply));
        }
        let header = {
            let mut st = self.state();
            st.data_open = true;
            trace.render(&st.accepted)
        };
        self.write(up, vec![header]).await;
        self.state().failed.take()
    }

    /// Opens the upstream's DATA (number `seq`) for a client that sent BDAT, at its first
    /// body event; a refusal is kept for the end of data.
    pub(super) async fn open_data(&self, seq: Seq, trace: &Trace) {
        if let Some(reply) = self.data_reply(seq, trace).await {
            if !reply.is_positive() {
                self.state().failed = Some(reply);
            }
        }
    }

    /// Writes one chunk's body pieces upstream in one vectored write, while the upstream's
    /// DATA is open and the message not refused; a failure is kept for the end of data.
    pub(super) async fn write_body(&self, pieces: Vec<Bytes>) {
        {
            let st = self.state();
            if pieces.is_empty() || st.failed.is_some() || !st.data_open {
                return;
            }
        }
        if let Some(up) = self.lease() {
            self.write(up, pieces).await;
        }
    }

    /// The message will not be delivered (`reply` says why: a mail loop): the upstream's DATA
    /// is abandoned without its terminator (the connection is closed), and `reply` is kept for
    /// the end of data.
    pub(super) fn refuse_message(&self, reply: Reply) {
        let mut st = self.state();
        if st.failed.is_some() || !st.data_open {
            return;
        }
        if let Some(up) = self.lease() {
            st.failed = Some(reply);
            up.discard();
        }
    }

    /// Our verdict at the end of an intermediate BDAT chunk: the reason the message will be
    /// refused at its end, when already known — a failed write, a refused DATA, a loop, or
    /// an upstream that closed or spoke while it owed no reply (its connection is then
    /// closed). `None` while the message is still on its way.
    pub(super) fn chunk_verdict(&self) -> Option<Reply> {
        let dropped = {
            let st = self.state();
            st.failed.is_none()
                && st.data_open
                && self
                    .0
                    .up
                    .borrow()
                    .as_ref()
                    .is_some_and(|up| up.client.has_unsolicited_input())
        };
        if dropped {
            if let Some(up) = self.lease() {
                up.discard();
            }
            let mut st = self.state();
            st.data_open = false;
            st.failed = Some(unavailable("Upstream connection lost"));
        }
        self.state().failed.clone()
    }

    /// The end of the message: `last` (the final pieces) and the terminator go upstream in
    /// one write, its reply becomes ours, and the connection goes back to the pool.
    pub(super) async fn end_data(&self, last: Vec<Bytes>) -> Reply {
        let failed = self.state().failed.take();
        if let Some(reply) = failed {
            self.release(false);
            return reply;
        }
        let open = self.state().data_open;
        let up = if open { self.lease() } else { None };
        let Some(mut up) = up else {
            self.release(false);
            return unavailable("Upstream connection lost");
        };
        // The client bounds the writes and the reply's wait itself.
        let started = Instant::now();
        let r = up.client.end_data(last).await;
        if r.is_ok() {
            self.0
                .pool
                .borrow_mut()
                .record_end_of_data(started.elapsed());
        }
        {
            let mut st = self.state();
            st.data_open = false;
            if let Ok(reply) = &r {
                st.upstream_reply = Some(reply.to_string().replace('\n', " / "));
            }
        }
        match r {
            Ok(reply) => {
                if reply.class() == 2 {
                    up.delivered();
                }
                up.keep();
                self.release(reply.code() != 421);
                mirror(reply)
            }
            Err(e) => {
                up.discard();
                self.release(false);
                failure(&e)
            }
        }
    }

    /// The client reset the transaction. Between commands, RSET goes upstream and the
    /// connection back to the pool (the returned future does that); mid-DATA only closing the
    /// connection aborts without delivering, and with replies owed it is out of step: closed.
    pub(super) fn reset(&self) -> Option<impl std::future::Future<Output = ()> + 'static> {
        let between = {
            let st = self.state();
            !st.data_open && !st.commands.owes_replies()
        };
        let up = if between { self.lease() } else { None };
        let Some(mut up) = up else {
            self.release(false);
            return None;
        };
        let this = self.clone();
        Some(async move {
            let ok = matches!(up.client.rset().await, Ok(r) if r.code() == 250);
            up.checkin(ok);
            this.release(false);
        })
    }

    /// The client went away: never send the terminator; close the upstream side.
    pub(super) fn abandon(&self) {
        self.release(false);
    }

    /// Writes what must go out before command `seq`, then reads its reply. `Err` is our reply
    /// when there is none to read (the connection is gone, or `seq` was never written), or
    /// when reading failed (the connection is then discarded).
    async fn reply_to(&self, seq: Seq) -> Result<(Lease, Reply), Reply> {
        let lost = || unavailable("Upstream connection lost");
        let Some(mut up) = self.lease() else {
            self.settle_refused();
            return Err(lost());
        };
        match self.exchange(&mut up.client, seq).await {
            Exchanged::Reply(Ok(reply)) => Ok((up, reply)),
            Exchanged::Reply(Err(e)) => {
                self.state().commands.clear();
                up.discard();
                Err(failure(&e))
            }
            Exchanged::NotSent => {
                up.keep();
                self.settle_refused();
                Err(lost())
            }
        }
    }

    /// Writes what may go out now until command `seq` is the next reply owed, then reads it.
    async fn exchange(&self, client: &mut SmtpClient, seq: Seq) -> Exchanged {
        loop {
            {
                let pipelining = client.has_extn("pipelining");
                let mut st = self.state();
                match st.commands.position(seq) {
                    Position::Next => break,
                    Position::Unknown => return Exchanged::NotSent,
                    Position::Behind => {
                        let e = ClientError::NotSupported("replies out of step".into());
                        return Exchanged::Reply(Err(e));
                    }
                    Position::Queued => {
                        for (line, phase) in st.commands.send(pipelining) {
                            if let Err(e) = client.pipeline(line, phase) {
                                return Exchanged::Reply(Err(e));
                            }
                        }
                    }
                }
            }
            if let Err(e) = client.flush().await {
                return Exchanged::Reply(Err(e));
            }
        }
        let r = client.read_reply().await;
        if r.is_ok() {
            self.state().commands.answered();
        }
        Exchanged::Reply(r)
    }

    /// Writes pieces on the lent connection; a failure is kept for the end of data.
    async fn write(&self, mut up: Lease, pieces: Vec<Bytes>) {
        match up.client.write_data(pieces).await {
            Ok(()) => up.keep(),
            Err(e) => {
                {
                    let mut st = self.state();
                    st.failed = Some(failure(&e));
                    st.data_open = false;
                }
                up.discard();
            }
        }
    }

    /// The upstream closes (421) or gave a reply the command cannot get: the transaction
    /// ends with the connection, and the client gets a 4xx.
    fn give_up(&self, up: Lease, reply: Reply) -> Reply {
        self.state().commands.clear();
        up.discard();
        if reply.code() == 421 {
            mirror(reply)
        } else {
            out_of_protocol(&reply)
        }
    }

    /// After a reply on a transaction whose MAIL was refused: once no reply is owed, the
    /// connection goes back to the pool (it has no transaction open).
    fn settle_refused(&self) {
        let settled = {
            let st = self.state();
            st.commands.is_refused() && !st.commands.owes_replies()
        };
        if settled {
            self.release(true);
        }
    }

    /// Back to no transaction: the connection goes to the pool when `reusable` and nothing
    /// is owed on it (no reply, no DATA), and is closed otherwise.
    fn release(&self, reusable: bool) {
        let clean = {
            let mut st = self.state();
            let clean = !st.commands.owes_replies() && !st.data_open;
            st.commands.clear();
            st.accepted.clear();
            st.data_open = false;
            st.failed = None;
            clean
        };
        if let Some(up) = self.lease() {
            up.checkin(reusable && clean);
        }
    }
}
