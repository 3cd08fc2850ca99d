//! One client connection of the relay: the transaction mirror. Each decision that needs the
//! upstream is an `Answer::Later` that owns the checked-out connection while it runs and puts
//! it back in the connection's slot when done.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::SystemTime;

use bytes::Bytes;

use super::acl::RelayPolicy;
use super::headers::{received, LoopGuard, TraceInfo};
use super::pool::{unavailable, Upstream, UpstreamPool};
use super::upstream_talk::{
    failure, mail_command, mirror, out_of_protocol, pass_identity, relay_denied, stale, Identity,
};
use crate::client::core::Phase;
use crate::client::message::BodyEncoder;
use crate::handler::{Answer, Connection};
use crate::proto::{EnhancedCode, Event, Reply, Session, State};

/// The current transaction's upstream side.
#[derive(Default)]
struct Tx {
    up: Option<Upstream>,
    /// DATA was accepted upstream (354): bytes may have gone out.
    data_open: bool,
    /// Why the message will be refused at its end (set while data streams).
    failed: Option<Reply>,
    /// Client used BDAT: content must be dot-stuffed for the upstream's DATA.
    stuffer: Option<BodyEncoder>,
    guard: LoopGuard,
    /// The Received (and X-Peer) header to send after the 354.
    trace: Option<Bytes>,
}

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

    fn trace_header(&self, session: &Session) -> Bytes {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let env = session.envelope();
        let proto = if session.is_esmtp() { "ESMTP" } else { "SMTP" };
        // An RFC 5321 `id` is an Atom or a msg-id: no dots.
        let id = format!("{:x}-{}-{id:x}", std::process::id(), self.shard);
        let recipient = (env.rcpt_tos.len() == 1).then(|| env.rcpt_tos[0].as_str());
        let mut h = received(
            &TraceInfo {
                helo: session.helo_name().unwrap_or("unknown"),
                peer: session.peer(),
                by: session.hostname(),
                protocol: proto,
                id: &id,
                recipient,
            },
            SystemTime::now(),
        );
        if self.x_peer {
            h.push_str(&format!("X-Peer: {}\r\n", session.peer().ip()));
        }
        Bytes::from(h)
    }

    /// Gives the transaction's connection back to the pool (or closes it).
    fn release(pool: &Rc<RefCell<UpstreamPool>>, tx: &mut Tx, reusable: bool) {
        if let Some(up) = tx.up.take() {
            let mut p = pool.borrow_mut();
            if reusable && !tx.data_open {
                p.checkin(up, true);
            } else {
                p.discard(up);
            }
        }
        tx.data_open = false;
        tx.failed = None;
        tx.stuffer = None;
        tx.guard = LoopGuard::default();
        tx.trace = None;
    }
}

impl Connection for RelayConn {
    fn event(&mut self, session: &Session, event: Event) -> Answer {
        match event {
            Event::Connect | Event::Hello | Event::Quit => Answer::Now(None),
            Event::Mail => {
                if !self.allowed {
                    // Refused at RCPT (554 5.7.1), where the client expects relay decisions.
                    return Answer::Now(None);
                }
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
                Answer::Later(Box::pin(async move {
                    Self::release(&pool, &mut tx.borrow_mut(), false);
                    let mut fresh = false;
                    loop {
                        let mut up = match UpstreamPool::checkout(&pool, fresh).await {
                            Ok(up) => up,
                            Err(reply) => return Some(reply),
                        };
                        // The upstream logs and checks the real client instead of us.
                        let mut r =
                            pass_identity(&mut up.client, &identity, xclient, xforward).await;
                        if matches!(&r, Ok(x) if x.code() != 421) {
                            // After XCLIENT the EHLO features may differ: build MAIL now.
                            let line = match mail_command(&from, &options, &up.client) {
                                Ok(line) => line,
                                Err(reply) => {
                                    pool.borrow_mut().checkin(up, true);
                                    return Some(reply);
                                }
                            };
                            r = up.client.command(&line, Phase::Mail).await;
                        }
                        if up.reused && stale(&r) && !fresh {
                            // A pooled connection that went away while idle: the client
                            // never sees it, we just use a new one.
                            pool.borrow_mut().discard(up);
                            fresh = true;
                            continue;
                        }
                        return match r {
                            Ok(reply) if reply.code() / 100 == 2 => {
                                tx.borrow_mut().up = Some(up);
                                Some(mirror(reply))
                            }
                            Ok(reply) if reply.code() / 100 == 3 => {
                                // No 3xx answers MAIL: the upstream is confused; never pass
                                // on a positive reply we cannot honour.
                                pool.borrow_mut().discard(up);
                                Some(out_of_protocol(&reply))
                            }
                            Ok(reply) => {
                                let reusable = reply.code() != 421;
                                pool.borrow_mut().checkin(up, reusable);
                                Some(mirror(reply))
                            }
                            Err(e) => {
                                pool.borrow_mut().discard(up);
                                Some(failure(&e))
                            }
                        };
                    }
                }))
            }
            Event::Rcpt => {
                let Some((to, params)) = session.pending_recipient() else {
                    return Answer::Now(None);
                };
                if !self.allowed || !self.policy.domain_allowed(to.domain()) {
                    return Answer::Now(Some(relay_denied()));
                }
                let mut line = format!("RCPT TO:<{}>", to.as_str());
                for p in params {
                    line.push(' ');
                    line.push_str(p);
                }
                let pool = self.pool.clone();
                let tx = self.tx.clone();
                Answer::Later(Box::pin(async move {
                    let Some(mut up) = tx.borrow_mut().up.take() else {
                        return Some(unavailable("Upstream connection lost"));
                    };
                    match up.client.command(&line, Phase::Rcpt).await {
                        Ok(reply) if reply.code() / 100 == 3 => {
                            // No 3xx answers RCPT either (see MAIL).
                            pool.borrow_mut().discard(up);
                            Some(out_of_protocol(&reply))
                        }
                        Ok(reply) => {
                            keep_unless_closing(&pool, &tx, up, &reply);
                            Some(mirror(reply))
                        }
                        Err(e) => {
                            pool.borrow_mut().discard(up);
                            Some(failure(&e))
                        }
                    }
                }))
            }
            Event::DataStart => {
                let trace = self.trace_header(session);
                let pool = self.pool.clone();
                let tx = self.tx.clone();
                Answer::Later(Box::pin(
                    async move { open_data(&pool, &tx, trace).await.err() },
                ))
            }
            Event::DataChunk(chunk) => {
                let bdat = session.state() == State::InBdat;
                let trace =
                    (bdat && !self.tx.borrow().data_open && self.tx.borrow().failed.is_none())
                        .then(|| self.trace_header(session));
                let pool = self.pool.clone();
                let tx = self.tx.clone();
                Answer::Later(Box::pin(async move {
                    if let Some(trace) = trace {
                        if let Err(reply) = open_data(&pool, &tx, trace).await {
                            tx.borrow_mut().failed = Some(reply);
                        }
                        tx.borrow_mut().stuffer = Some(BodyEncoder::new(true));
                    }
                    let mut pieces = Vec::new();
                    {
                        let mut t = tx.borrow_mut();
                        if t.failed.is_some() || t.up.is_none() {
                            return None;
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
                            return None;
                        }
                        match t.stuffer.as_mut() {
                            Some(enc) => {
                                for piece in chunk.content() {
                                    enc.encode(&piece, &mut pieces);
                                }
                            }
                            None => pieces.push(chunk.wire().clone()),
                        }
                    }
                    write_pieces(&pool, &tx, pieces).await;
                    None
                }))
            }
            Event::DataEnd => {
                let bdat = session.state() == State::InBdat;
                let trace =
                    (bdat && !self.tx.borrow().data_open && self.tx.borrow().failed.is_none())
                        .then(|| self.trace_header(session));
                let pool = self.pool.clone();
                let tx = self.tx.clone();
                Answer::Later(Box::pin(async move {
                    if let Some(trace) = trace {
                        if let Err(reply) = open_data(&pool, &tx, trace).await {
                            tx.borrow_mut().failed = Some(reply);
                        }
                    }
                    let failed = tx.borrow_mut().failed.take();
                    if let Some(reply) = failed {
                        Self::release(&pool, &mut tx.borrow_mut(), false);
                        return Some(reply);
                    }
                    let mut tail = Vec::new();
                    if let Some(enc) = tx.borrow_mut().stuffer.as_mut() {
                        enc.finish(&mut tail);
                    }
                    write_pieces(&pool, &tx, tail).await;
                    let failed = tx.borrow_mut().failed.take();
                    if let Some(reply) = failed {
                        Self::release(&pool, &mut tx.borrow_mut(), false);
                        return Some(reply);
                    }
                    let Some(mut up) = tx.borrow_mut().up.take() else {
                        return Some(unavailable("Upstream connection lost"));
                    };
                    // The client bounds the terminator's write and the reply's wait itself.
                    let r = up.client.end_data().await;
                    let mut t = tx.borrow_mut();
                    t.data_open = false;
                    t.up = Some(up);
                    match r {
                        Ok(reply) => {
                            if reply.code() / 100 == 2 {
                                if let Some(up) = t.up.as_mut() {
                                    up.delivered();
                                }
                            }
                            let reusable = reply.code() != 421;
                            Self::release(&pool, &mut t, reusable);
                            Some(mirror(reply))
                        }
                        Err(e) => {
                            Self::release(&pool, &mut t, false);
                            Some(failure(&e))
                        }
                    }
                }))
            }
            Event::Reset => {
                let mut t = self.tx.borrow_mut();
                if t.up.is_none() {
                    Self::release(&self.pool, &mut t, false);
                    return Answer::Now(None);
                }
                if t.data_open {
                    // Mid-DATA: only closing the connection aborts without delivering.
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

/// After a reply that keeps the transaction going upstream: the connection stays with the
/// transaction, unless the reply was 421 (the upstream is closing it).
fn keep_unless_closing(
    pool: &Rc<RefCell<UpstreamPool>>,
    tx: &Rc<RefCell<Tx>>,
    up: Upstream,
    reply: &Reply,
) {
    if reply.code() == 421 {
        pool.borrow_mut().discard(up);
    } else {
        tx.borrow_mut().up = Some(up);
    }
}

/// Sends DATA upstream; on 354 writes the trace header. Errors are the client's reply.
async fn open_data(
    pool: &Rc<RefCell<UpstreamPool>>,
    tx: &Rc<RefCell<Tx>>,
    trace: Bytes,
) -> Result<(), Reply> {
    let Some(mut up) = tx.borrow_mut().up.take() else {
        return Err(unavailable("Upstream connection lost"));
    };
    let r = up.client.command("DATA", Phase::DataStart).await;
    match r {
        Ok(reply) if reply.code() == 354 => match up.client.write_data(trace).await {
            Ok(()) => {
                let mut t = tx.borrow_mut();
                t.up = Some(up);
                t.data_open = true;
                Ok(())
            }
            Err(e) => {
                pool.borrow_mut().discard(up);
                Err(failure(&e))
            }
        },
        Ok(reply) if reply.is_positive() => {
            // Only 354 opens the upstream's DATA. Mirrored, another 3xx would put our session
            // into DATA mode (and the body into the upstream's command parser); a 2xx would
            // answer DATA with a meaningless success.
            pool.borrow_mut().discard(up);
            Err(unavailable(format!(
                "Upstream protocol error: {} in reply to DATA",
                reply.code()
            )))
        }
        Ok(reply) => {
            keep_unless_closing(pool, tx, up, &reply);
            Err(mirror(reply))
        }
        Err(e) => {
            pool.borrow_mut().discard(up);
            Err(failure(&e))
        }
    }
}

/// Writes body pieces upstream; a failure is remembered for the end of data.
async fn write_pieces(pool: &Rc<RefCell<UpstreamPool>>, tx: &Rc<RefCell<Tx>>, pieces: Vec<Bytes>) {
    if pieces.is_empty() {
        return;
    }
    let Some(mut up) = tx.borrow_mut().up.take() else {
        return;
    };
    for p in pieces {
        if let Err(e) = up.client.write_data(p).await {
            let mut t = tx.borrow_mut();
            t.failed = Some(failure(&e));
            t.data_open = false;
            pool.borrow_mut().discard(up);
            return;
        }
    }
    tx.borrow_mut().up = Some(up);
}
