//! `RelayConn`: one client connection of the relay, the transaction mirror. It turns the
//! session's events into operations on the upstream `Transaction`: each command that needs the
//! upstream is queued toward it as soon as the session reads it (the session pipelines its
//! MAIL/RCPT/DATA decisions for us) and answered by an `Answer::Later` that reads the
//! upstream's reply; body chunks pass through the message's `Outgoing` content (loop guard,
//! BDAT stuffing, `X-Peer:`) and go upstream one write per chunk.
//!
//! The mirror decides what is ours to decide — who may relay where, AUTH credentials, the
//! trace of each message — and never touches the upstream connection itself.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;

use super::acl::RelayPolicy;
use super::commands::{rcpt_line, Seq};
use super::content::{Framing, Outgoing};
use super::headers::Trace;
use super::identity::Identity;
use super::pool::UpstreamPool;
use super::reply_map::relay_denied;
use super::transaction::Transaction;
use crate::client::core::Phase;
use crate::handler::{Answer, Connection};
use crate::proto::{EnhancedCode, Event, Reply, Session, State};

/// The relay's per-connection handler.
pub struct RelayConn {
    policy: Rc<RelayPolicy>,
    x_peer: bool,
    shard: usize,
    next_id: Rc<Cell<u64>>,
    /// The client is in the relay networks.
    allowed: bool,
    tx: Transaction,
    /// The current message's content on its way out (from DATA, or the first BDAT chunk).
    outgoing: Option<Outgoing>,
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
            policy,
            x_peer,
            shard,
            next_id,
            allowed,
            tx: Transaction::new(pool),
            outgoing: None,
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

    /// MAIL: a new transaction, whose future checks a connection out and sends the envelope.
    fn mail(&mut self, session: &Session) -> Answer {
        self.outgoing = None;
        let env = session.envelope();
        let from = env
            .mail_from
            .as_ref()
            .map_or("", |f| f.as_str())
            .to_string();
        let options = env.mail_options.clone();
        let identity = Identity::of(session);
        let seq = self.tx.begin();
        let tx = self.tx.clone();
        Answer::Later(Box::pin(async move {
            Some(tx.send_mail(seq, &from, &options, &identity).await)
        }))
    }

    /// RCPT: ours to refuse (relay access, domains), else queued upstream.
    fn rcpt(&mut self, session: &Session) -> Answer {
        let Some((to, params)) = session.pending_recipient() else {
            return Answer::Now(None);
        };
        if !self.may_relay(session) || !self.policy.domain_allowed(to.domain()) {
            return Answer::Now(Some(relay_denied()));
        }
        let seq = self.tx.queue(rcpt_line(to, params), Phase::Rcpt);
        let to = to.as_str().to_string();
        let tx = self.tx.clone();
        Answer::Later(Box::pin(async move { Some(tx.rcpt_reply(seq, to).await) }))
    }

    /// DATA: queued upstream; its 354 opens the message with our trace field.
    fn data_start(&mut self, session: &Session) -> Answer {
        let trace = self.trace(session);
        self.outgoing = Some(Outgoing::new(Framing::Data, trace.x_peer()));
        let seq = self.tx.queue("DATA".into(), Phase::DataStart);
        let tx = self.tx.clone();
        Answer::Later(Box::pin(async move { tx.data_reply(seq, &trace).await }))
    }

    /// With BDAT from the client, the upstream's DATA is opened by the first body event (or
    /// the end of an empty message): when `session`'s event is that one, DATA is queued now
    /// and its number and trace are returned for `Transaction::open_data`.
    fn bdat_opening(&mut self, session: &Session) -> Option<(Seq, Trace)> {
        if session.state() != State::InBdat || self.outgoing.is_some() {
            return None;
        }
        let trace = self.trace(session);
        self.outgoing = Some(Outgoing::new(Framing::Bdat, trace.x_peer()));
        Some((self.tx.queue("DATA".into(), Phase::DataStart), trace))
    }
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
            Event::Rcpt => self.rcpt(session),
            Event::DataStart => self.data_start(session),
            Event::DataChunk(chunk) => {
                let opening = self.bdat_opening(session);
                let Some(out) = self.outgoing.as_mut() else {
                    return Answer::Now(None);
                };
                // In order, here: the loop guard sees the chunks as the client sent them.
                let pieces = out.pass(&chunk);
                let tx = self.tx.clone();
                Answer::Later(Box::pin(async move {
                    if let Some((seq, trace)) = opening {
                        tx.open_data(seq, &trace).await;
                    }
                    match pieces {
                        Ok(pieces) => tx.write_body(pieces).await,
                        Err(refusal) => tx.refuse_message(refusal),
                    }
                    None
                }))
            }
            // A message that will fail anyway (upstream gone, DATA refused, a loop) fails
            // now, so the client stops sending its chunks.
            Event::ChunkEnd => Answer::Now(self.tx.chunk_verdict()),
            Event::DataEnd => {
                // An empty BDAT message opens the upstream's DATA only now.
                let opening = self.bdat_opening(session);
                let last = self.outgoing.take().map(Outgoing::finish);
                let tx = self.tx.clone();
                Answer::Later(Box::pin(async move {
                    if let Some((seq, trace)) = opening {
                        tx.open_data(seq, &trace).await;
                    }
                    Some(tx.end_data(last.unwrap_or_default()).await)
                }))
            }
            Event::Reset => {
                self.outgoing = None;
                match self.tx.reset() {
                    Some(rset) => Answer::Later(Box::pin(async move {
                        rset.await;
                        None
                    })),
                    None => Answer::Now(None),
                }
            }
        }
    }

    fn close(&mut self, _session: &Session) {
        // A client gone mid-transaction: never send the terminator; close the upstream side.
        self.tx.abandon();
    }
}
