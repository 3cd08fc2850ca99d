//! `MailmanSide`: a `mailman`-mode connection's two destinations — the upstream transaction
//! (as in `proxy`) and the transaction toward Mailman's LMTP runner — and the one the current
//! mail transaction chose.
//!
//! Contract: MAIL opens nothing (`begin` keeps the envelope); the first recipient is routed
//! (`MailmanRouter::route`) and its future then sends MAIL and RCPT to the chosen destination
//! together, so our reply to that RCPT is the destination's (or its refusal of MAIL). The
//! first accepted recipient fixes the destination; after it, a recipient for the other
//! destination, or any further recipient once Mailman is chosen, gets `452 4.5.3` without
//! touching either. Toward LMTP, DSN parameters are stripped; SMTPUTF8 is refused with
//! `553 5.6.7` unless Mailman offers it (`mail_line`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::commands::rcpt_line;
use super::identity::Identity;
use super::mailman::{lmtp_mail_options, lmtp_rcpt_params, one_destination};
use super::mailman::{Destination, MailmanRouter};
use super::pool::UpstreamPool;
use super::transaction::Transaction;
use crate::client::core::Phase;
use crate::handler::txlog::TxLog;
use crate::handler::Answer;
use crate::proto::Mailbox;

/// The envelope's sender, kept from MAIL until the first recipient is routed.
struct PendingMail {
    from: String,
    options: Vec<String>,
    identity: Identity,
}

/// One connection's destinations in `mailman` mode.
pub(super) struct MailmanSide {
    router: Rc<MailmanRouter>,
    upstream: Transaction,
    lmtp: Transaction,
    /// Fixed by the transaction's first accepted recipient.
    chosen: Rc<Cell<Option<Destination>>>,
    pending: Rc<RefCell<Option<PendingMail>>>,
}

impl MailmanSide {
    /// Destinations for one connection: `upstream` as in `proxy`, Mailman through `router`.
    pub(super) fn new(router: Rc<MailmanRouter>, upstream: Rc<RefCell<UpstreamPool>>) -> Self {
        let lmtp = Transaction::new(router.pool().clone());
        Self {
            router,
            upstream: Transaction::new(upstream),
            lmtp,
            chosen: Rc::default(),
            pending: Rc::default(),
        }
    }

    /// The transaction the chosen destination uses (the upstream's until one is chosen).
    pub(super) fn current(&self) -> Transaction {
        match self.chosen.get() {
            Some(Destination::Mailman) => self.lmtp.clone(),
            _ => self.upstream.clone(),
        }
    }

    /// MAIL: a new transaction, no destination yet.
    pub(super) fn begin(&mut self, from: String, options: Vec<String>, identity: Identity) {
        self.clear();
        *self.pending.borrow_mut() = Some(PendingMail {
            from,
            options,
            identity,
        });
    }

    /// The transaction ended or was reset: no destination.
    pub(super) fn clear(&self) {
        self.chosen.set(None);
    }

    /// The client went away: both sides are closed without a terminator.
    pub(super) fn abandon(&self) {
        self.upstream.abandon();
        self.lmtp.abandon();
    }

    /// RCPT `to`: `None` when it goes on the upstream transaction already open (the mirror
    /// queues it as in `proxy`); otherwise our answer.
    pub(super) fn rcpt(&self, to: &Mailbox, params: &[String], log: &TxLog) -> Option<Answer> {
        let refuse = |log: &TxLog| {
            let reply = one_destination();
            log.rcpt(to.as_str(), reply.code());
            Some(Answer::Now(Some(reply)))
        };
        match self.chosen.get() {
            Some(Destination::Mailman) => return refuse(log),
            Some(Destination::Upstream) if self.router.is_mailman_domain(to.domain()) => {
                return refuse(log)
            }
            Some(Destination::Upstream) => return None,
            None => {}
        }
        let (router, chosen, pending) = (
            self.router.clone(),
            self.chosen.clone(),
            self.pending.clone(),
        );
        let (upstream, lmtp, log) = (self.upstream.clone(), self.lmtp.clone(), log.clone());
        let (to, domain) = (to.clone(), to.domain().map(str::to_string));
        let params = params.to_vec();
        Some(Answer::Later(Box::pin(async move {
            let addr = to.as_str().to_string();
            let dest = match router.route(&addr, domain.as_deref()).await {
                Ok(d) => d,
                Err(reply) => {
                    log.rcpt(&addr, reply.code());
                    return Some(reply);
                }
            };
            // MAIL always came first (the session sees to it).
            let (from, options, identity) = pending
                .borrow()
                .as_ref()
                .map(|p| (p.from.clone(), p.options.clone(), p.identity.clone()))?;
            let (tx, options, params) = match dest {
                Destination::Upstream => (upstream, options, params),
                Destination::Mailman => {
                    (lmtp, lmtp_mail_options(&options), lmtp_rcpt_params(&params))
                }
            };
            let mail = tx.begin();
            let rcpt = tx.queue(rcpt_line(&to, &params), Phase::Rcpt);
            let mail_reply = tx.send_mail(mail, &from, &options, &identity).await;
            // The RCPT's reply is read even after a refused MAIL (it may be in flight).
            let reply = tx.rcpt_reply(rcpt, addr.clone()).await;
            let reply = if mail_reply.class() != 2 {
                mail_reply
            } else {
                reply
            };
            if reply.class() == 2 {
                chosen.set(Some(dest));
            } else if let Some(rset) = tx.reset() {
                // Nothing accepted: the destination's transaction ends, the next recipient
                // is routed afresh.
                rset.await;
            }
            log.rcpt(&addr, reply.code());
            Some(reply)
        })))
    }
}
