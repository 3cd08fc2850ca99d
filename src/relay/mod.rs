//! The relay (`ringrelay proxy`, the seed's PureProxy done right): every transaction is
//! mirrored onto an upstream connection from the shard's pool, and our reply to each command
//! is the upstream's reply to it. Nothing is spooled, so a 250 after DATA is only ever the
//! upstream's 250 (RFC 5321 §6.1); every failure that is not the upstream's own 5xx becomes a
//! 4xx, so the MTA in front keeps the message and retries.
//!
//! Safety: only clients in the relay networks may relay (554 5.7.1 at RCPT otherwise), an
//! optional recipient-domain allow-list applies, and a message with more than 100 `Received:`
//! fields is refused (554 5.4.6) without being delivered (the upstream DATA is abandoned
//! without its terminator).
//!
//! ```text
//!  Relay (here)     the shard's service: the pool and the policy; a RelayConn per client
//!  mirror           RelayConn: session events -> transaction operations; decides what is
//!                   ours (relay access, AUTH, each message's trace); never touches a socket
//!  content          a message's content on its way out: loop guard, BDAT stuffing, X-Peer:
//!  transaction      Transaction: owns the current transaction's upstream connection and
//!                   offers send envelope, read replies, write body, end data, release
//!  commands         the envelope commands: MAIL/RCPT lines, queued then in flight, in order
//!  identity         XCLIENT / XFORWARD: the client's identity for the upstream
//!  reply_map        the upstream's replies and failures as ours (never a 250 it did not give)
//!  pool             per-shard upstream connections: checkout, checkin, idle sweep
//!  health           whether any upstream is reachable: /readyz, and probes while not
//!  connector        how the pool reaches an upstream: TCP, or a stream a test supplies
//!  headers, x_peer  the Received: field and what it says, the loop guard; X-Peer:
//!  acl              relay networks, recipient domains, AUTH users
//!  mailman          `mailman` mode: which recipients are Mailman's (domains, LMTP probe)
//!  mailman_side     `mailman` mode: a connection's two destinations, one per transaction
//! ```

pub mod acl;
mod commands;
pub mod connector;
mod content;
pub mod headers;
pub mod health;
mod identity;
pub mod mailman;
mod mailman_side;
mod mirror;
pub mod pool;
mod reply_map;
mod transaction;
mod x_peer;

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::handler::Service;
use crate::proto::{Extensions, Session};
use crate::reload::{Cached, Swap};
use acl::RelayPolicy;
use pool::{PoolStats, UpstreamConfig, UpstreamPool};

pub use mirror::RelayConn;

/// Everything the relay needs to know.
#[derive(Clone, Debug, Default)]
pub struct RelayConfig {
    /// Upstreams and pool limits (shared by every shard; a reload may replace them).
    pub upstream: Swap<UpstreamConfig>,
    /// Who may relay where (shared by every shard; a reload may replace it, and sessions keep
    /// the policy they started with).
    pub policy: Swap<RelayPolicy>,
    /// Add the seed's `X-Peer:` field at the end of each message's header section.
    pub x_peer: bool,
    /// `mailman` mode: list mail goes to Mailman's LMTP runner, the rest upstream.
    pub mailman: Option<mailman::MailmanConfig>,
}

/// One shard's relay service.
pub struct Relay {
    pool: Rc<RefCell<UpstreamPool>>,
    policy: Cached<RelayPolicy>,
    x_peer: bool,
    shard: usize,
    next_id: Rc<std::cell::Cell<u64>>,
    next_session: std::cell::Cell<u64>,
    /// `mailman` mode's router (with its LMTP pool).
    mailman: Option<Rc<mailman::MailmanRouter>>,
}

impl Relay {
    /// The relay for shard `shard`.
    pub fn new(config: &RelayConfig, shard: usize) -> Self {
        Self::with_connector(config, shard, Rc::new(connector::Dial))
    }

    /// The relay for shard `shard`, reaching its upstreams through `connector` (tests run it
    /// against in-memory upstreams this way).
    pub fn with_connector(
        config: &RelayConfig,
        shard: usize,
        connector: Rc<dyn connector::Connector>,
    ) -> Self {
        Self {
            pool: UpstreamPool::with_connector(config.upstream.clone(), connector.clone()),
            policy: Cached::new(config.policy.clone()),
            x_peer: config.x_peer,
            shard,
            next_id: Rc::new(std::cell::Cell::new(0)),
            next_session: std::cell::Cell::new(0),
            mailman: config.mailman.as_ref().map(|m| {
                let pool = UpstreamPool::with_connector(m.lmtp.clone(), connector.clone());
                Rc::new(mailman::MailmanRouter::new(m.clone(), pool))
            }),
        }
    }

    /// The pool's counters.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.borrow().stats()
    }
}

impl Service for Relay {
    type Conn = RelayConn;

    /// Sweeps the pool's idle connections (QUIT to those past their TTL, age or message
    /// count) until the shard closes.
    /// While no upstream is reachable, the first shard also probes them (a connection that
    /// opens joins the pool), so readiness returns without client traffic.
    fn start(this: &Rc<RefCell<Self>>) {
        let r = this.borrow();
        sweep_pool(Rc::downgrade(&r.pool), r.shard == 0);
        if let Some(m) = &r.mailman {
            sweep_pool(Rc::downgrade(m.pool()), false);
        }
    }

    /// QUIT to every idle upstream connection (each within 2 s).
    fn close(this: &Rc<RefCell<Self>>) -> Pin<Box<dyn Future<Output = ()>>> {
        let r = this.borrow();
        let mut pools = vec![r.pool.clone()];
        pools.extend(r.mailman.as_ref().map(|m| m.pool().clone()));
        let closing: Vec<Pin<Box<dyn Future<Output = ()>>>> = pools
            .iter()
            .map(|pool| {
                let mut p = pool.borrow_mut();
                p.set_closed();
                Box::pin(p.close_idle(Duration::from_secs(2))) as Pin<Box<dyn Future<Output = ()>>>
            })
            .collect();
        Box::pin(crate::rt::join_all(closing))
    }

    /// The client's pipelined RCPTs and DATA go upstream in the same write as its MAIL
    /// (in `mailman` mode each RCPT's destination is known only once the last is answered).
    fn pipelines_decisions(&self) -> bool {
        self.mailman.is_none()
    }

    /// 8BITMIME and SMTPUTF8 are offered to clients only when the upstream offers them (as
    /// its newest connection did; before the first one, as configured, and a mismatch is
    /// then refused per transaction).
    fn session_extensions(&self, configured: Extensions) -> Extensions {
        let mut ext = configured;
        if let Some(o) = self.pool.borrow().offers() {
            ext.eightbitmime &= o.eightbitmime;
            ext.smtputf8 &= o.smtputf8;
        }
        ext
    }

    fn drain_metrics(&mut self, into: &mut crate::metrics::snapshot::Snapshot) {
        let (connect, eod) = (&mut into.upstream_connect, &mut into.upstream_end_of_data);
        self.pool.borrow_mut().drain_timings(connect, eod);
        if let Some(m) = &self.mailman {
            let (connect, eod) = (&mut into.mailman_connect, &mut into.mailman_end_of_data);
            m.pool().borrow_mut().drain_timings(connect, eod);
        }
    }

    /// The relay networks (the MTA in front) are not limited per address.
    fn exempt_from_client_limit(&self, ip: std::net::IpAddr) -> bool {
        self.policy.get().client_allowed(ip)
    }

    fn upstream_stats(&self) -> Option<crate::handler::UpstreamStats> {
        Some(self.pool_stats())
    }

    fn mailman_stats(&self) -> Option<crate::handler::UpstreamStats> {
        self.mailman.as_ref().map(|m| m.pool().borrow().stats())
    }

    fn open(this: &Rc<RefCell<Self>>, session: &Session) -> RelayConn {
        let r = this.borrow();
        let n = r.next_session.get();
        r.next_session.set(n + 1);
        let session_id: Rc<str> = format!("{:x}-{}-c{n:x}", std::process::id(), r.shard).into();
        let conn = RelayConn::new(
            r.pool.clone(),
            r.policy.get(),
            r.x_peer,
            r.shard,
            r.next_id.clone(),
            session.peer().ip(),
            session_id,
        );
        match &r.mailman {
            Some(m) => conn.with_mailman(mailman_side::MailmanSide::new(m.clone(), r.pool.clone())),
            None => conn,
        }
    }
}

/// Sweeps `pool`'s idle connections (QUIT to those past their TTL, age or message count)
/// until it closes; a `prober` also probes the upstreams while none is reachable.
fn sweep_pool(pool: std::rc::Weak<RefCell<UpstreamPool>>, prober: bool) {
    crate::rt::spawn_local(async move {
        loop {
            let every = match pool.upgrade() {
                Some(p) if !p.borrow().is_closed() => p.borrow().sweep_interval(),
                _ => return,
            };
            let every = if prober {
                every.min(health::PROBE_EVERY)
            } else {
                every
            };
            crate::rt::sleep(every).await;
            let Some(p) = pool.upgrade().filter(|p| !p.borrow().is_closed()) else {
                return;
            };
            p.borrow_mut().sweep(Instant::now());
            let due = prober && p.borrow().config().health.probe_due();
            if due {
                crate::rt::spawn_local(async move {
                    if let Ok(up) = UpstreamPool::checkout(&p, true).await {
                        p.borrow_mut().checkin(up, true);
                    }
                });
            }
        }
    });
}
