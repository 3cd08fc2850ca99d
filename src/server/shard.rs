//! A shard's state: its handler, its connection slab and limits, its drain signal, and the
//! pinning of its thread. Owned by one thread; nothing in here is shared with other shards.
//!
//! The drain reaches connections through the shard: one task watches the process-wide signal
//! and wakes every idle connection that asked to be told (`poll_drain`), so a connection's
//! wait costs a slab look-up, not a subscription to a cross-thread channel.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use slab::Slab;
use tokio::sync::{watch, Notify};

use crate::handler::Service;
use crate::metrics::labels::RejectReason;
use crate::metrics::ShardRecorder;
use crate::proto::SessionConfig;

/// Per-shard state shared by the shard's tasks (single-threaded, so `Rc` and `RefCell`).
pub(crate) struct Shard<H> {
    /// Session limits and extensions.
    pub session_config: Arc<SessionConfig>,
    /// This shard's handler (service) instance.
    pub handler: Rc<RefCell<H>>,
    /// Becomes true when the server starts draining.
    pub drain: watch::Receiver<bool>,
    /// The shard has seen the drain (set by `watch_drain`).
    draining: Cell<bool>,
    /// Becomes true when the drain timeout has passed: stop waiting for handlers.
    abandon: watch::Receiver<bool>,
    /// The shard has seen the abandon signal.
    abandoned: Cell<bool>,
    /// Open connections, keyed by slab index, with the waker of the connection's task while
    /// it waits idle (woken when the drain begins).
    pub conns: RefCell<Slab<ConnEntry>>,
    /// The process-wide `--max-connections` budget.
    pub limit: Arc<ConnLimit>,
    /// Woken when the last connection closes.
    pub idle: Notify,
    /// Connections refused for the limit.
    pub refused: Cell<u64>,
    /// This shard's metrics recorder, when metrics are on.
    pub metrics: Option<ShardRecorder>,
    /// The TLS configuration for STARTTLS, when it is offered (a reload may replace it).
    pub tls: Option<crate::reload::Swap<rustls::ServerConfig>>,
    /// The PROXY protocol, when the listeners require it.
    pub proxy: Option<Arc<super::proxy::ProxyProtocol>>,
    /// Where a connection's replies are gathered before they are queued on its stream.
    pub scratch: RefCell<Vec<u8>>,
}

impl<H: Service> Shard<H> {
    pub(super) fn new(
        session_config: Arc<SessionConfig>,
        handler: H,
        drain: watch::Receiver<bool>,
        abandon: watch::Receiver<bool>,
        limit: Arc<ConnLimit>,
        metrics: Option<ShardRecorder>,
        front: Front,
    ) -> Rc<Self> {
        Rc::new(Self {
            session_config,
            handler: Rc::new(RefCell::new(handler)),
            drain,
            draining: Cell::new(false),
            abandon,
            abandoned: Cell::new(false),
            conns: RefCell::new(Slab::with_capacity(64)),
            limit,
            idle: Notify::new(),
            refused: Cell::new(0),
            metrics,
            tls: front.tls,
            proxy: front.proxy,
            scratch: RefCell::new(Vec::with_capacity(4096)),
        })
    }

    /// True when `ip` counts against `--max-connections-per-client`.
    fn counts_per_client(&self, ip: IpAddr) -> bool {
        self.limit.per_client != 0 && !self.handler.borrow().exempt_from_client_limit(ip)
    }

    /// Registers a connection from `peer`; the reply to refuse it with when the process is at
    /// its limit, or the client's address at its own. Behind the PROXY protocol the client's
    /// address is known only later: `admit_client` counts it then. A Unix-domain client
    /// (`None`) has no address to count.
    pub(super) fn admit(&self, peer: Option<IpAddr>) -> Result<usize, &'static [u8]> {
        let per_client = peer.filter(|&ip| self.proxy.is_none() && self.counts_per_client(ip));
        if let Err(reason) = self.limit.try_acquire(per_client) {
            self.refused.set(self.refused.get() + 1);
            self.count_rejected(reason);
            return Err(match reason {
                RejectReason::PerClient => TOO_MANY_FROM_CLIENT,
                _ => TOO_MANY,
            });
        }
        if let Some(m) = &self.metrics {
            m.record().counters.connections_accepted += 1;
        }
        Ok(self.conns.borrow_mut().insert(ConnEntry {
            waker: None,
            per_client,
        }))
    }

    /// Counts connection `key` against its client's (proxied) address; the reply to refuse it
    /// with when that address is at its limit.
    pub(super) fn admit_client(&self, key: usize, client: IpAddr) -> Result<(), &'static [u8]> {
        if !self.counts_per_client(client) {
            return Ok(());
        }
        if self.limit.try_acquire_client(client).is_err() {
            self.refused.set(self.refused.get() + 1);
            self.count_rejected(RejectReason::PerClient);
            return Err(TOO_MANY_FROM_CLIENT);
        }
        if let Some(e) = self.conns.borrow_mut().get_mut(key) {
            e.per_client = Some(client);
        }
        Ok(())
    }

    /// Counts a connection turned away before any session.
    pub(super) fn count_rejected(&self, reason: RejectReason) {
        if let Some(m) = &self.metrics {
            m.record().counters.connections_rejected[reason as usize] += 1;
        }
    }

    /// Forgets a connection.
    pub(super) fn release(&self, key: usize) {
        let mut conns = self.conns.borrow_mut();
        if let Some(e) = conns.try_remove(key) {
            self.limit.release(e.per_client);
        }
        if conns.is_empty() {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no connection is open.
    pub(super) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.conns.borrow().is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// True once draining started.
    pub(super) fn draining(&self) -> bool {
        self.draining.get() || *self.drain.borrow()
    }

    /// True once the drain timeout has passed.
    pub(super) fn abandoned(&self) -> bool {
        self.abandoned.get() || *self.abandon.borrow()
    }

    /// Ready once draining started; otherwise connection `key` is woken when it does.
    pub(super) fn poll_drain(&self, key: usize, cx: &mut Context<'_>) -> Poll<()> {
        if self.draining.get() {
            return Poll::Ready(());
        }
        self.register(key, cx);
        Poll::Pending
    }

    /// Ready once the drain timeout has passed; otherwise connection `key` is woken then.
    pub(super) fn poll_abandon(&self, key: usize, cx: &mut Context<'_>) -> Poll<()> {
        if self.abandoned.get() {
            return Poll::Ready(());
        }
        self.register(key, cx);
        Poll::Pending
    }

    fn register(&self, key: usize, cx: &mut Context<'_>) {
        if let Some(e) = self.conns.borrow_mut().get_mut(key) {
            match &e.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => e.waker = Some(cx.waker().clone()),
            }
        }
    }

    /// Waits for the process-wide drain signal, then wakes every connection waiting idle;
    /// then for the end of the drain timeout, and wakes every connection still waiting.
    pub(super) async fn watch_drain(&self) {
        let mut drain = self.drain.clone();
        let _ = drain.wait_for(|&d| d).await;
        self.draining.set(true);
        self.wake_all();
        let mut abandon = self.abandon.clone();
        let _ = abandon.wait_for(|&a| a).await;
        self.abandoned.set(true);
        self.wake_all();
    }

    fn wake_all(&self) {
        let wakers: Vec<Waker> = self
            .conns
            .borrow_mut()
            .iter_mut()
            .filter_map(|(_, e)| e.waker.take())
            .collect();
        for w in wakers {
            w.wake();
        }
    }
}

/// What faces the client before the session: TLS for STARTTLS, the PROXY protocol.
#[derive(Clone, Default)]
pub(crate) struct Front {
    /// STARTTLS, when offered.
    pub tls: Option<crate::reload::Swap<rustls::ServerConfig>>,
    /// The PROXY protocol, when required.
    pub proxy: Option<Arc<super::proxy::ProxyProtocol>>,
}

/// One open connection, as the shard knows it.
#[derive(Debug)]
pub(crate) struct ConnEntry {
    /// The connection's waker while it waits (idle, for the drain; on its handler, for the
    /// end of the drain timeout).
    waker: Option<Waker>,
    /// The client's address, when it counts against `--max-connections-per-client`.
    per_client: Option<IpAddr>,
}

/// The process-wide connection budgets: all connections (`--max-connections`), and each
/// client address's (`--max-connections-per-client`). Touched once when a connection opens
/// and once when it closes (never per command or message), so shared counters keep both
/// exact whichever shard the kernel hands a connection to.
#[derive(Debug)]
pub(crate) struct ConnLimit {
    max: usize,
    open: AtomicUsize,
    /// Connections allowed per client address; 0 = no limit.
    pub per_client: usize,
    by_client: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnLimit {
    /// A budget of `max` connections, `per_client` from one address; 0 = unlimited.
    pub(super) fn new(max: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            max: if max == 0 { usize::MAX } else { max },
            open: AtomicUsize::new(0),
            per_client,
            by_client: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one connection (and one of `client`'s, when it counts), or says which budget
    /// is spent.
    fn try_acquire(&self, client: Option<IpAddr>) -> Result<(), RejectReason> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(RejectReason::MaxConnections);
        }
        if let Some(ip) = client {
            if let Err(e) = self.try_acquire_client(ip) {
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Takes one of `ip`'s connections (the process-wide one is already taken).
    fn try_acquire_client(&self, ip: IpAddr) -> Result<(), RejectReason> {
        let mut by = self.by_client.lock().unwrap_or_else(|e| e.into_inner());
        let n = by.entry(ip).or_insert(0);
        if *n >= self.per_client {
            return Err(RejectReason::PerClient);
        }
        *n += 1;
        Ok(())
    }

    /// More than half of `--max-connections` is in use (never when it is unlimited).
    pub(super) fn stressed(&self) -> bool {
        self.max != usize::MAX && self.open.load(Ordering::Relaxed) > self.max / 2
    }

    fn release(&self, client: Option<IpAddr>) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = client {
            let mut by = self.by_client.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = by.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    by.remove(&ip);
                }
            }
        }
    }
}

/// The `421 4.3.2` written to a connection over the limit.
pub(crate) const TOO_MANY: &[u8] = b"421 4.3.2 Too many connections, try again later\r\n";

/// The `421 4.7.0` written to a connection over its address's limit.
pub(crate) const TOO_MANY_FROM_CLIENT: &[u8] =
    b"421 4.7.0 Too many connections from your address, try again later\r\n";

/// The CPUs this process may run on.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread to `cpu`; failure (e.g. a restricted container) is not fatal.
pub(crate) fn pin_to(cpu: usize) -> bool {
    // SAFETY: as above; the set names one CPU from the allowed list.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}
