//! The log line per mail transaction (target `ringrelay::transaction`, level info): what an
//! operator greps for when a message is asked about. The relay writes one for every
//! transaction; `sink` and `debug` when asked (`--log-transactions`, see `logged`).
//!
//! A record opens at MAIL and is written once, when the transaction ends: at our reply to the
//! final dot, at a refused MAIL, or when the transaction is abandoned (RSET, a new greeting, a
//! body the session refused, the client gone). It carries the transaction id that the
//! message's `Received:` field names, the session id, the client and its HELO, TLS and AUTH,
//! the sender, each recipient with our reply code, the size, the duration, and for the relay
//! the upstream that took MAIL with its own reply to the final dot (its queue id) next to
//! ours. Formatting happens when the line is written; writing goes through `crate::log`'s
//! bounded queue and never waits. When the log level leaves these lines out, no record is
//! kept at all (`crate::log::transactions_on`).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Instant;

use crate::log::clean;
use crate::proto::{Reply, Session};

/// One transaction's facts so far.
struct Record {
    id: String,
    started: Instant,
    client: String,
    helo: String,
    tls: bool,
    auth: String,
    from: String,
    mail: Option<u16>,
    /// `address:code` for each recipient answered, in order.
    rcpts: String,
    size: Option<u64>,
}

/// How a transaction ended, for the `outcome` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Our final reply to the message (or to MAIL, when it was refused).
    Replied,
    /// Ended without a final reply: RSET, a new greeting, a refused body, the client gone.
    Abandoned,
}

/// The open record of a connection's current transaction (shared with the futures that
/// learn its replies).
#[derive(Clone, Default)]
pub(crate) struct TxLog(Rc<RefCell<Option<Record>>>);

impl TxLog {
    /// MAIL from this session opens transaction `id` (a record still open is abandoned).
    /// Nothing is recorded while the log leaves transaction lines out.
    pub(crate) fn begin(&self, id: &str, session: &Session, session_id: &str, shard: usize) {
        self.end(Outcome::Abandoned, None, session_id, shard, None);
        if !crate::log::transactions_on() {
            return;
        }
        let env = session.envelope();
        *self.0.borrow_mut() = Some(Record {
            id: id.to_string(),
            started: Instant::now(),
            client: session.client_label().to_string(),
            helo: clean(session.helo_name().unwrap_or("-")).into_owned(),
            tls: session.is_tls(),
            auth: session.authenticated().unwrap_or("-").to_string(),
            from: env
                .mail_from
                .as_ref()
                .map_or("", |m| m.as_str())
                .to_string(),
            mail: None,
            rcpts: String::new(),
            size: None,
        });
    }

    /// Our reply code to MAIL.
    pub(crate) fn mail(&self, code: u16) {
        if let Some(r) = self.0.borrow_mut().as_mut() {
            r.mail = Some(code);
        }
    }

    /// Our reply code to RCPT `to`.
    pub(crate) fn rcpt(&self, to: &str, code: u16) {
        if let Some(r) = self.0.borrow_mut().as_mut() {
            if !r.rcpts.is_empty() {
                r.rcpts.push(',');
            }
            let _ = write!(r.rcpts, "{}:{code}", clean(to));
        }
    }

    /// The message's size in octets (content, as received).
    pub(crate) fn size(&self, octets: u64) {
        if let Some(r) = self.0.borrow_mut().as_mut() {
            r.size = Some(octets);
        }
    }

    /// Writes the line and closes the record (nothing when none is open). `upstream` is the
    /// upstream's name and its own reply to the final dot, when there was one.
    pub(crate) fn end(
        &self,
        outcome: Outcome,
        reply: Option<&Reply>,
        session_id: &str,
        shard: usize,
        upstream: Option<(Option<String>, Option<String>)>,
    ) {
        let Some(r) = self.0.borrow_mut().take() else {
            return;
        };
        let outcome = match (outcome, reply.map(Reply::class)) {
            (Outcome::Replied, Some(2)) => "delivered",
            (Outcome::Replied, Some(4)) => "deferred",
            (Outcome::Replied, _) => "refused",
            (Outcome::Abandoned, _) => "abandoned",
        };
        let (upstream, upstream_reply) = upstream.unwrap_or_default();
        let reply = reply.map_or_else(|| "-".to_string(), |r| r.to_string().replace('\n', " / "));
        let upstream_reply = upstream_reply.map(|r| clean(&r).into_owned());
        tracing::info!(
            target: crate::log::TRANSACTION,
            id = r.id.as_str(),
            session = session_id,
            shard,
            client = r.client.as_str(),
            helo = r.helo.as_str(),
            tls = r.tls,
            auth = r.auth.as_str(),
            from = r.from.as_str(),
            mail = r.mail.unwrap_or(0),
            rcpts = r.rcpts.as_str(),
            size = r.size.unwrap_or(0),
            duration_ms = r.started.elapsed().as_millis() as u64,
            upstream = upstream.as_deref().unwrap_or("-"),
            upstream_reply = upstream_reply.as_deref().unwrap_or("-"),
            reply = reply.as_str(),
            outcome,
            "transaction {} {outcome}",
            r.id
        );
    }
}
