//! `RelayConn`: one client connection of the relay, the transaction mirror. It turns the
//! session's events into operations on the upstream `Transaction`: each command that needs the
//! upstream is queued toward it as soon as the session reads it (the session pipelines its
//! MAIL/RCPT/DATA decisions for us) and answered by an `Answer::Later` that reads the
//! upstream's reply; body chunks pass through the message's `Outgoing` content (loop guard,
//! BDAT stuffing, `X-Peer:`) and go upstream one write per chunk.
//!
//! The mirror decides what is ours to decide — who may relay where, AUTH credentials, the
//! trace of each message — and never touches the upstream connection itself.
//!
//! In `mailman` mode (`MailmanSide`) the session does not pipeline decisions: MAIL gets the
//! session's own 250 and opens nothing; the first RCPT asks the router where it goes, then
//! sends MAIL and that RCPT to the destination's transaction (upstream or Mailman's LMTP), and
//! the first accepted recipient fixes the destination for the rest of the transaction.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;

use super::acl::RelayPolicy;
use super::commands::{rcpt_line, Seq};
use super::content::{Framing, Outgoing};
use super::headers::Trace;
use super::identity::Identity;
use super::mailman_side::MailmanSide;
use super::pool::UpstreamPool;
use super::reply_map::relay_denied;
use super::transaction::Transaction;
use crate::client::core::Phase;
use crate::handler::txlog::{Outcome, TxLog};
use crate::handler::{Answer, Connection};
use crate::proto::{EnhancedCode, Event, Reply, Session, State};

/// The relay's per-connection handler.
pub struct RelayConn {
    policy: std::sync::Arc<RelayPolicy>,
    x_peer: bool,
    shard: usize,
    next_id: Rc<Cell<u64>>,
    /// The client is in the relay networks.
    allowed: bool,
    tx: Transaction,
    /// The current message's content on its way out (from DATA, or the first BDAT chunk).
    outgoing: Option<Outgoing>,
    /// This connection's id in the log.
    session_id: Rc<str>,
    /// The current transaction's id (its `Received:` id and log line), from its MAIL.
    tx_id: String,
    /// The current transaction's log record.
    log: TxLog,
    /// `mailman` mode: the two destinations and the one this transaction chose.
    mailman: Option<MailmanSide>,
}

impl RelayConn {
    pub(super) fn new(
        pool: Rc<RefCell<UpstreamPool>>,
        policy: std::sync::Arc<RelayPolicy>,
        x_peer: bool,
        shard: usize,
        next_id: Rc<Cell<u64>>,
        ip: IpAddr,
        session_id: Rc<str>,
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
            session_id,
            tx_id: String::new(),
            log: TxLog::default(),
            mailman: None,
        }
    }

    /// In `mailman` mode: transactions go where `side` routes them.
    pub(super) fn with_mailman(mut self, side: MailmanSide) -> Self {
        self.tx = side.current();
        self.mailman = Some(side);
        self
    }

    /// A new transaction id: PID, shard and a per-shard number, in hex. An RFC 5321 `id` is
    /// an Atom or a msg-id: no dots.
    fn new_tx_id(&mut self) {
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        self.tx_id = format!("{:x}-{}-{n:x}", std::process::id(), self.shard);
    }

    fn trace(&self, session: &Session) -> Trace {
        Trace::of(session, self.tx_id.clone(), self.x_peer)
    }

    /// Ends the transaction's log record (no-op when none is open).
    fn log_end(&self, outcome: Outcome, reply: Option<&Reply>) {
        let upstream = self.tx.upstream_outcome();
        self.log
            .end(outcome, reply, &self.session_id, self.shard, Some(upstream));
    }

    /// A future's way to end the log record once it knows our reply.
    fn log_ender(&self) -> impl Fn(&Reply) + 'static {
        let (log, tx, sid, shard) = (
            self.log.clone(),
            self.tx.clone(),
            self.session_id.clone(),
            self.shard,
        );
        move |reply| {
            let upstream = tx.upstream_outcome();
            log.end(Outcome::Replied, Some(reply), &sid, shard, Some(upstream));
        }
    }

    /// MAIL from a client that may not relay: the session's 250 stands, and RCPT refuses.
    fn mail_not_relaying(&mut self, session: &Session) -> Answer {
        self.new_tx_id();
        self.log
            .begin(&self.tx_id, session, &self.session_id, self.shard);
        self.log.mail(250);
        Answer::Now(None)
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
        let ok = own && users.check(&c.username, &c.password);
        // Never the password; the user name a client claimed is the operator's to see.
        tracing::info!(
            target: crate::log::CONNECTION,
            session = %self.session_id,
            client = %session.peer(),
            user = %crate::log::clean(&c.username),
            "AUTH {}",
            if ok { "succeeded" } else { "failed" }
        );
        ok.then(|| Reply::new(235, EnhancedCode::new(2, 7, 0), "Authentication successful"))
    }

    /// MAIL: a new transaction, whose future checks a connection out and sends the envelope.
    fn mail(&mut self, session: &Session) -> Answer {
        self.outgoing = None;
        self.new_tx_id();
        self.log
            .begin(&self.tx_id, session, &self.session_id, self.shard);
        let (log, end) = (self.log.clone(), self.log_ender());
        let env = session.envelope();
        let from = env
            .mail_from
            .as_ref()
            .map_or("", |f| f.as_str())
            .to_string();
        let options = env.mail_options.clone();
        let identity = Identity::of(session);
        if let Some(side) = self.mailman.as_mut() {
            // Nothing opens before the first recipient says where the mail goes.
            side.begin(from, options, identity);
            log.mail(250);
            return Answer::Now(None);
        }
        let seq = self.tx.begin();
        let tx = self.tx.clone();
        Answer::Later(Box::pin(async move {
            let reply = tx.send_mail(seq, &from, &options, &identity).await;
            log.mail(reply.code());
            if reply.class() != 2 {
                end(&reply);
            }
            Some(reply)
        }))
    }

    /// RCPT: ours to refuse (relay access, domains), else queued upstream.
    fn rcpt(&mut self, session: &Session) -> Answer {
        let Some((to, params)) = session.pending_recipient() else {
            return Answer::Now(None);
        };
        if !self.may_relay(session) || !self.policy.domain_allowed(to.domain()) {
            let denied = relay_denied();
            self.log.rcpt(to.as_str(), denied.code());
            return Answer::Now(Some(denied));
        }
        if let Some(side) = self.mailman.as_ref() {
            if let Some(answer) = side.rcpt(to, params, &self.log) {
                return answer;
            }
        }
        let seq = self.tx.queue(rcpt_line(to, params), Phase::Rcpt);
        let to = to.as_str().to_string();
        let (tx, log) = (self.tx.clone(), self.log.clone());
        Answer::Later(Box::pin(async move {
            let reply = tx.rcpt_reply(seq, to.clone()).await;
            log.rcpt(&to, reply.code());
            Some(reply)
        }))
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
        if let Some(side) = &self.mailman {
            // The destination the last RCPT fixed (decisions are not pipelined here).
            self.tx = side.current();
        }
        match event {
            // The relay asks for no command lines (`Service::command_hook`): the core's own.
            Event::Connect
            | Event::Hello
            | Event::Quit
            | Event::Command
            | Event::RecipientVerdict => Answer::Now(None),
            Event::Auth => Answer::Now(self.check_auth(session)),
            // Outside the relay networks and not authenticated: refused at RCPT (554 5.7.1),
            // where the client expects relay decisions.
            Event::Mail if !self.may_relay(session) => self.mail_not_relaying(session),
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
            Event::ChunkEnd => {
                let verdict = self.tx.chunk_verdict();
                if let Some(reply) = &verdict {
                    self.log_end(Outcome::Replied, Some(reply));
                }
                Answer::Now(verdict)
            }
            Event::DataEnd => {
                // An empty BDAT message opens the upstream's DATA only now.
                let opening = self.bdat_opening(session);
                let last = self.outgoing.take().map(Outgoing::finish);
                let tx = self.tx.clone();
                self.log.size(session.envelope().data_size);
                let end = self.log_ender();
                Answer::Later(Box::pin(async move {
                    if let Some((seq, trace)) = opening {
                        tx.open_data(seq, &trace).await;
                    }
                    let reply = tx.end_data(last.unwrap_or_default()).await;
                    end(&reply);
                    Some(reply)
                }))
            }
            Event::Reset => {
                self.log_end(Outcome::Abandoned, None);
                if let Some(side) = &self.mailman {
                    side.clear();
                }
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
        self.log_end(Outcome::Abandoned, None);
        // A client gone mid-transaction: never send the terminator; close the upstream side.
        self.tx.abandon();
        if let Some(side) = &self.mailman {
            side.abandon();
        }
    }
}
