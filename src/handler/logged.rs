//! `Logged<S>`: a service with the per-transaction log line (`txlog`) added, for `sink` and
//! `debug` when asked (`--log-transactions`; the relay writes its own, with the upstream's
//! reply). Each transaction gets an id (PID, shard, a per-shard number) and a line when it
//! ends: the client, HELO, TLS and AUTH, the sender, each recipient with the reply it got,
//! the size and our final reply — including a reply a fault rule injected, since this layer
//! sits outside the fault layer. A default answer is logged as the session writes it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::txlog::{Outcome, TxLog};
use super::{Answer, Connection, Service};
use crate::handler::service::forward_service;
use crate::proto::{EnhancedCode, Event, Reply, Session};

/// A service whose transactions are logged.
pub struct Logged<S> {
    inner: Rc<RefCell<S>>,
    shard: usize,
    sessions: Cell<u64>,
    transactions: Rc<Cell<u64>>,
}

impl<S: Service> Logged<S> {
    /// Wraps `inner`, the service of shard `shard`.
    pub fn new(inner: S, shard: usize) -> Self {
        Self {
            inner: Rc::new(RefCell::new(inner)),
            shard,
            sessions: Cell::new(0),
            transactions: Rc::new(Cell::new(0)),
        }
    }
}

/// One connection with its transaction log.
pub struct LoggedConn<C> {
    inner: C,
    log: TxLog,
    session_id: Rc<str>,
    shard: usize,
    transactions: Rc<Cell<u64>>,
}

impl<S: Service> Service for Logged<S> {
    type Conn = LoggedConn<S::Conn>;

    forward_service!(all);

    fn open(this: &Rc<RefCell<Self>>, session: &Session) -> Self::Conn {
        let l = this.borrow();
        let n = l.sessions.get();
        l.sessions.set(n + 1);
        LoggedConn {
            inner: S::open(&l.inner, session),
            log: TxLog::default(),
            session_id: format!("{:x}-{}-c{n:x}", std::process::id(), l.shard).into(),
            shard: l.shard,
            transactions: l.transactions.clone(),
        }
    }
}

/// Calls `then` with the reply `answer` resolves to (or `default` when it leaves the
/// session's own), and passes the answer on unchanged.
fn observe(answer: Answer, default: Reply, then: impl FnOnce(&Reply) + 'static) -> Answer {
    match answer {
        Answer::Now(r) => {
            then(r.as_ref().unwrap_or(&default));
            Answer::Now(r)
        }
        Answer::Later(f) => Answer::Later(Box::pin(async move {
            let r = f.await;
            then(r.as_ref().unwrap_or(&default));
            r
        })),
        close @ Answer::Close { .. } => close,
    }
}

impl<C: Connection> Connection for LoggedConn<C> {
    fn event(&mut self, session: &Session, event: Event) -> Answer {
        match &event {
            Event::Mail => {
                let n = self.transactions.get();
                self.transactions.set(n + 1);
                let id = format!("{:x}-{}-{n:x}", std::process::id(), self.shard);
                self.log.begin(&id, session, &self.session_id, self.shard);
                let (log, sid, shard) = (self.log.clone(), self.session_id.clone(), self.shard);
                let answer = self.inner.event(session, event);
                let ok = Reply::new(250, EnhancedCode::new(2, 1, 0), "Ok");
                observe(answer, ok, move |r| {
                    log.mail(r.code());
                    if !r.is_positive() {
                        log.end(Outcome::Replied, Some(r), &sid, shard, None);
                    }
                })
            }
            Event::Rcpt => {
                let to = session
                    .pending_recipient()
                    .map(|(m, _)| m.as_str().to_string())
                    .unwrap_or_default();
                let log = self.log.clone();
                let answer = self.inner.event(session, event);
                let ok = Reply::new(250, EnhancedCode::new(2, 1, 5), "Ok");
                observe(answer, ok, move |r| log.rcpt(&to, r.code()))
            }
            Event::DataEnd => {
                self.log.size(session.envelope().data_size);
                let (log, sid, shard) = (self.log.clone(), self.session_id.clone(), self.shard);
                let answer = self.inner.event(session, event);
                let ok = Reply::new(250, EnhancedCode::new(2, 0, 0), "Ok: queued");
                observe(answer, ok, move |r| {
                    log.end(Outcome::Replied, Some(r), &sid, shard, None)
                })
            }
            Event::Reset => {
                self.log
                    .end(Outcome::Abandoned, None, &self.session_id, self.shard, None);
                self.inner.event(session, event)
            }
            _ => self.inner.event(session, event),
        }
    }

    fn close(&mut self, session: &Session) {
        self.log
            .end(Outcome::Abandoned, None, &self.session_id, self.shard, None);
        self.inner.close(session);
    }
}
