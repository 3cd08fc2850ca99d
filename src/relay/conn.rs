//! One client connection of the relay: the transaction mirror. Each command that needs the
//! upstream is queued toward it as soon as the session reads it (the session pipelines its
//! MAIL/RCPT/DATA decisions for us), and answered by an `Answer::Later` that reads the
//! upstream's reply; those futures run in order, sharing the transaction's state in `Tx`.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;

use bytes::Bytes;

use super::acl::RelayPolicy;
use super::pipeline::{exchange, settle_refused, Exchange, Trace, Tx};
use super::pool::{unavailable, UpstreamPool};
use super::upstream_talk::{
    failure, mail_command, mirror, out_of_protocol, pass_identity, relay_denied, stale, Identity,
};
use crate::client::core::Phase;
use crate::client::message::BodyEncoder;
use crate::handler::{Answer, Connection, Pending};
use crate::proto::{EnhancedCode, Event, Reply, Session, State};

/// The relay's per-connection handler.
pub struct RelayConn {
    pool: Rc<RefCell<UpstreamPool>>,
    policy: Rc<RelayPolicy>,
    x_peer: bool,
    shard: usize,
    next_id: Rc<Cell<u64>>,
    allowed: bool,
    tx: Rc<RefCell<Tx>>,
}

impl RelayConn {
    pub(super) fn new(
        pool: Rc<RefCell<UpstreamPool>>,
        policy: Rc<RelayPolicy>,
        x_peer: bool,
        shard: usize,
        next_id: Rc<Cell<u64>>,
        ip: IpAddr,
    ) -> Self {
        let allowed = policy.client_allowed(ip);
        Self {
            pool,
            policy,
            x_peer,
            shard,
            next_id,
            allowed,
            tx: Rc::new(RefCell::new(Tx::default())),
        }
    }

    fn trace(&self, session: &Session) -> Trace {
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        // An RFC 5321 `id` is an Atom or a msg-id: no dots.
        let id = format!("{:x}-{}-{n:x}", std::process::id(), self.shard);
        Trace::of(session, id, self.x_peer)
    }

    /// The client is in the relay networks or has authenticated.
    fn may_relay(&self, session: &Session) -> bool {
        self.allowed || session.authenticated().is_some()
    }

    /// Checks AUTH credentials against the user file: 235 or nothing (the session's 535).
    fn check_auth(&self, session: &Session) -> Option<Reply> {
        let (users, c) = (self.policy.users.as_ref()?, session.pending_auth()?);
        // Acting as someone else (a PLAIN authzid) is not supported.
        let own = c.authzid.is_empty() || c.authzid == c.username;
        (own && users.check(&c.username, &c.password))
            .then(|| Reply::new(235, EnhancedCode::new(2, 7, 0), "Authentication successful"))
    }

    /// Ends the transaction's upstream side: the connection goes back to the pool when
    /// `reusable` and nothing is owed on it, or is closed.
    fn release(pool: &Rc<RefCell<UpstreamPool>>, tx: &mut Tx, reusable: bool) {
        if let Some((up, clean)) = tx.reset() {
            let mut p = pool.borrow_mut();
            if reusable && clean {
                p.checkin(up, true);
            } else {
                p.discard(up);
            }
        }
    }

    /// The MAIL future: checks a connection out, passes the client's identity, then writes
    /// MAIL (and whatever the client pipelined behind it) and reads MAIL's reply.
    fn mail(&self, session: &Session) -> Answer {
        let env = session.envelope();
        let from = env
            .mail_from
            .as_ref()
            .map_or("", |f| f.as_str())
            .to_string();
        let options = env.mail_options.clone();
        let (xclient, xforward) = {
            let p = self.pool.borrow();
            (p.config().xclient, p.config().xforward)
        };
        let identity = Identity::of(session);
        let pool = self.pool.clone();
        let tx = self.tx.clone();
        Self::release(&pool, &mut tx.borrow_mut(), false);
        let seq = tx.borrow_mut().reserve();
        Answer::Later(Box::pin(async move {
            let mut fresh = false;
            loop {
                let mut up = match UpstreamPool::checkout(&pool, fresh).await {
                    Ok(up) => up,
                    Err(reply) => {
                        tx.borrow_mut().drop_commands();
                        return Some(reply);
                    }
                };
                // The upstream logs and checks the real client instead of us.
                let ident = pass_identity(&mut up.client, &identity, xclient, xforward).await;
                let r = match ident {
                    Ok(x) if x.code() != 421 => {
                        // After XCLIENT the EHLO features may differ: build MAIL now.
                        let line = match mail_command(&from, &options, &up.client) {
                            Ok(line) => line,
                            Err(reply) => {
                                tx.borrow_mut().drop_commands();
                                pool.borrow_mut().checkin(up, true);
                                return Some(reply);
                            }
                        };
                        {
                            let mut t = tx.borrow_mut();
                            t.enqueue_first(seq, line, Phase::Mail);
                            t.up = Some(up);
                        }
                        match exchange(&tx, seq).await {
                            Exchange::Done(u, r) => {
                                up = u;
                                r
                            }
                            Exchange::NotSent => return Some(unavailable("Upstream lost")),
                        }
                    }
                    other => other,
                };
                if up.reused && stale(&r) && !fresh {
                    // A pooled connection that went away while idle: the client never sees
                    // it; what was written goes again on a new one.
                    pool.borrow_mut().discard(up);
                    tx.borrow_mut().requeue_after(seq);
                    fresh = true;
                    continue;
                }
                let mut t = tx.borrow_mut();
                return match r {
                    Ok(reply) if reply.code() / 100 == 2 => {
                        t.up = Some(up);
                        Some(mirror(reply))
                    }
                    Ok(reply) if reply.code() / 100 == 3 || reply.code() == 421 => {
                        // No 3xx answers MAIL: the upstream is confused; never pass on a
                        // positive reply we cannot honour. A 421 closes the connection.
                        t.drop_commands();
                        pool.borrow_mut().discard(up);
                        Some(if reply.code() == 421 {
                            mirror(reply)
                        } else {
                            out_of_protocol(&reply)
                        })
                    }
                    Ok(reply) => {
                        // Refused: replies to what was pipelined behind MAIL are still read
                        // (the session voids them) before the connection is reused.
                        t.refused();
                        t.up = Some(up);
                        drop(t);
                        settle_refused(&pool, &tx);
                        Some(mirror(reply))
                    }
                    Err(e) => {
                        t.drop_commands();
                        pool.borrow_mut().discard(up);
                        Some(failure(&e))
                    }
                };
            }
        }))
    }

    /// A RCPT or DATA future: reads the upstream's reply to command `seq`.
    fn answer_of(&self, seq: u64, what: Step) -> Pending {
        let pool = self.pool.clone();
        let tx = self.tx.clone();
        Box::pin(async move {
            let (up, r) = match exchange(&tx, seq).await {
                Exchange::Done(up, r) => (up, r),
                Exchange::NotSent => {
                    settle_refused(&pool, &tx);
                    return Some(unavailable("Upstream connection lost"));
                }
            };
            let reply = match r {
                Err(e) => {
                    tx.borrow_mut().drop_commands();
                    pool.borrow_mut().discard(up);
                    return Some(failure(&e));
                }
                Ok(reply) => reply,
            };
            let positive = match what {
                Step::Rcpt(_) => reply.code() / 100 == 2,
                Step::Data(_) => reply.code() == 354,
            };
            if reply.is_positive() && !positive || reply.code() == 421 {
                // No 3xx answers RCPT, and only 354 opens DATA: mirrored, another 3xx would
                // put our session into DATA mode (and the body into the upstream's command
                // parser); a 2xx would answer DATA with a meaningless success.
                tx.borrow_mut().drop_commands();
                pool.borrow_mut().discard(up);
                return Some(if reply.code() == 421 {
                    mirror(reply)
                } else {
                    out_of_protocol(&reply)
                });
            }
            let header = {
                let mut t = tx.borrow_mut();
                t.up = Some(up);
                match what {
                    Step::Rcpt(to) if positive => {
                        t.accepted.push(to);
                        None
                    }
                    Step::Data(trace) if positive => {
                        t.data_open = true;
                        t.x_peer = trace.x_peer();
                        Some(trace.render(&t.accepted))
                    }
                    _ => None,
                }
            };
            if let Some(header) = header {
                // 354: our trace field opens the message; our DATA reply is the default 354.
                write_pieces(&pool, &tx, vec![header]).await;
                let failed = tx.borrow_mut().failed.take();
                return failed;
            }
            settle_refused(&pool, &tx);
            Some(mirror(reply))
        })
    }

    /// With BDAT from the client, the upstream's DATA is opened by the first body event: the
    /// future that opens it, when `session`'s event is that one. `stuff`: the content that
    /// follows is dot-stuffed for the upstream's DATA.
    fn bdat_opening(&self, session: &Session, stuff: bool) -> Option<Pending> {
        let first = {
            let t = self.tx.borrow();
            session.state() == State::InBdat
                && !t.data_open
                && t.failed.is_none()
                && t.stuffer.is_none()
        };
        if !first {
            return None;
        }
        let trace = self.trace(session);
        let seq = {
            let mut t = self.tx.borrow_mut();
            if stuff {
                t.stuffer = Some(BodyEncoder::new(true));
            }
            t.enqueue("DATA".into(), Phase::DataStart)
        };
        Some(self.answer_of(seq, Step::Data(trace)))
    }
}

/// Awaits the upstream DATA being opened for a BDAT client, if it is; a refusal is kept for
/// the end of data.
async fn opened(opening: Option<Pending>, tx: &Rc<RefCell<Tx>>) {
    if let Some(opening) = opening {
        if let Some(reply) = opening.await.filter(|r| !r.is_positive()) {
            tx.borrow_mut().failed = Some(reply);
        }
    }
}

/// Which command a future answers.
enum Step {
    /// RCPT for this address.
    Rcpt(String),
    /// DATA, with the trace to write after the 354.
    Data(Trace),
}

impl Connection for RelayConn {
    fn event(&mut self, session: &Session, event: Event) -> Answer {
        match event {
            Event::Connect | Event::Hello | Event::Quit => Answer::Now(None),
            Event::Auth => Answer::Now(self.check_auth(session)),
            // Outside the relay networks and not authenticated: refused at RCPT (554 5.7.1),
            // where the client expects relay decisions.
            Event::Mail if !self.may_relay(session) => Answer::Now(None),
            Event::Mail => self.mail(session),
            Event::Rcpt => {
                let Some((to, params)) = session.pending_recipient() else {
                    return Answer::Now(None);
                };
                if !self.may_relay(session) || !self.policy.domain_allowed(to.domain()) {
                    return Answer::Now(Some(relay_denied()));
                }
                let mut line = format!("RCPT TO:<{}>", to.as_str());
                for p in params {
                    line.push(' ');
                    line.push_str(p);
                }
                let seq = self.tx.borrow_mut().enqueue(line, Phase::Rcpt);
                Answer::Later(self.answer_of(seq, Step::Rcpt(to.as_str().to_string())))
            }
            Event::DataStart => {
                let trace = self.trace(session);
                let seq = self
                    .tx
                    .borrow_mut()
                    .enqueue("DATA".into(), Phase::DataStart);
                Answer::Later(self.answer_of(seq, Step::Data(trace)))
            }
            Event::DataChunk(chunk) => {
                let opening = self.bdat_opening(session, true);
                let pool = self.pool.clone();
                let tx = self.tx.clone();
                Answer::Later(Box::pin(async move {
                    opened(opening, &tx).await;
                    forward_chunk(&pool, &tx, &chunk).await;
                    None
                }))
            }
            Event::DataEnd => {
                // An empty BDAT message opens the upstream's DATA only now.
                let opening = self.bdat_opening(session, false);
                let pool = self.pool.clone();
                let tx = self.tx.clone();
                Answer::Later(Box::pin(async move {
                    opened(opening, &tx).await;
                    end_data(&pool, &tx).await
                }))
            }
            Event::Reset => {
                let mut t = self.tx.borrow_mut();
                if t.up.is_none() || t.data_open || t.owes_replies() {
                    // Mid-DATA only closing the connection aborts without delivering; with
                    // replies owed it is out of step.
                    Self::release(&self.pool, &mut t, false);
                    return Answer::Now(None);
                }
                let up = t.up.take();
                drop(t);
                let pool = self.pool.clone();
                let tx = self.tx.clone();
                Answer::Later(Box::pin(async move {
                    if let Some(mut up) = up {
                        let ok = matches!(up.client.rset().await, Ok(r) if r.code() == 250);
                        pool.borrow_mut().checkin(up, ok);
                    }
                    Self::release(&pool, &mut tx.borrow_mut(), false);
                    None
                }))
            }
        }
    }

    fn close(&mut self, _session: &Session) {
        // A client gone mid-transaction: never send the terminator; close the upstream side.
        let mut t = self.tx.borrow_mut();
        let in_tx = t.up.is_some();
        Self::release(&self.pool, &mut t, !in_tx);
    }
}

/// Forwards one body chunk (after the loop guard has seen it); a failure is remembered for
/// the end of data.
async fn forward_chunk(
    pool: &Rc<RefCell<UpstreamPool>>,
    tx: &Rc<RefCell<Tx>>,
    chunk: &crate::proto::DataChunk,
) {
    let mut pieces = Vec::new();
    {
        let mut t = tx.borrow_mut();
        if t.failed.is_some() || t.up.is_none() || !t.data_open {
            return;
        }
        for piece in chunk.content() {
            t.guard.feed(&piece);
        }
        if t.guard.looping() {
            t.failed = Some(Reply::new(
                554,
                EnhancedCode::new(5, 4, 6),
                "Mail loop detected: too many Received headers",
            ));
            // Abandon the upstream DATA without its terminator.
            if let Some(up) = t.up.take() {
                pool.borrow_mut().discard(up);
            }
            return;
        }
        match t.stuffer.as_mut() {
            Some(enc) => {
                for piece in chunk.content() {
                    enc.encode(&piece, &mut pieces);
                }
            }
            None => pieces.push(chunk.wire().clone()),
        }
        if let Some(x) = t.x_peer.as_mut() {
            let mut placed = Vec::with_capacity(pieces.len() + 2);
            for p in pieces.drain(..) {
                x.pass(p, &mut placed);
            }
            pieces = placed;
        }
    }
    write_pieces(pool, tx, pieces).await;
}

/// The end of the message: the terminator goes upstream and its reply becomes ours.
async fn end_data(pool: &Rc<RefCell<UpstreamPool>>, tx: &Rc<RefCell<Tx>>) -> Option<Reply> {
    let failed = tx.borrow_mut().failed.take();
    if let Some(reply) = failed {
        RelayConn::release(pool, &mut tx.borrow_mut(), false);
        return Some(reply);
    }
    let mut tail = Vec::new();
    {
        let mut t = tx.borrow_mut();
        if let Some(enc) = t.stuffer.as_mut() {
            enc.finish(&mut tail);
        }
        if let Some(x) = t.x_peer.as_mut() {
            let mut placed = Vec::new();
            for p in tail.drain(..) {
                x.pass(p, &mut placed);
            }
            x.finish(&mut placed);
            tail = placed;
        }
    }
    write_pieces(pool, tx, tail).await;
    let failed = tx.borrow_mut().failed.take();
    if let Some(reply) = failed {
        RelayConn::release(pool, &mut tx.borrow_mut(), false);
        return Some(reply);
    }
    let up = tx.borrow_mut().up.take();
    let Some(mut up) = up.filter(|_| tx.borrow().data_open) else {
        RelayConn::release(pool, &mut tx.borrow_mut(), false);
        return Some(unavailable("Upstream connection lost"));
    };
    // The client bounds the terminator's write and the reply's wait itself.
    let started = std::time::Instant::now();
    let r = up.client.end_data([]).await;
    if r.is_ok() {
        pool.borrow_mut().record_end_of_data(started.elapsed());
    }
    let mut t = tx.borrow_mut();
    t.data_open = false;
    match r {
        Ok(reply) => {
            if reply.code() / 100 == 2 {
                up.delivered();
            }
            t.up = Some(up);
            RelayConn::release(pool, &mut t, reply.code() != 421);
            Some(mirror(reply))
        }
        Err(e) => {
            t.up = Some(up);
            RelayConn::release(pool, &mut t, false);
            Some(failure(&e))
        }
    }
}

/// Writes body pieces upstream, in one write; a failure is remembered for the end of data.
async fn write_pieces(pool: &Rc<RefCell<UpstreamPool>>, tx: &Rc<RefCell<Tx>>, pieces: Vec<Bytes>) {
    if pieces.is_empty() {
        return;
    }
    let Some(mut up) = tx.borrow_mut().up.take() else {
        return;
    };
    if let Err(e) = up.client.write_data(pieces).await {
        let mut t = tx.borrow_mut();
        t.failed = Some(failure(&e));
        t.data_open = false;
        pool.borrow_mut().discard(up);
        return;
    }
    tx.borrow_mut().up = Some(up);
}
