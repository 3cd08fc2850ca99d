//! Where shards publish and scrapes read: one slot per shard, and the shard-side recorder.
//!
//! A shard records into its own `ShardRecorder` (a `RefCell<Snapshot>` touched only by its
//! thread). Every publish interval, and whenever a scrape asks, it adds what it recorded since
//! the last time into its slot (a `Mutex`, so the only lock a shard ever takes is here, once
//! per publication) and starts again from zero. A scrape bumps the request generation, waits
//! briefly for the live shards to publish at least that generation, then merges the slots.

use std::cell::{RefCell, RefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::snapshot::Snapshot;

/// One shard's published totals.
#[derive(Debug, Default)]
struct SlotData {
    snap: Snapshot,
    /// Open connections at the last publication.
    active: u64,
    /// The shard's upstream pool counters at the last publication (relaying services only).
    upstream: Option<crate::handler::UpstreamStats>,
    /// The same for its pool toward Mailman's LMTP (`mailman` mode only).
    mailman: Option<crate::handler::UpstreamStats>,
    /// The shard's DATA buffer pool at the last publication (io_uring shards only).
    pool: Option<crate::engine::PoolStats>,
}

#[derive(Debug, Default)]
struct Slot {
    data: Mutex<SlotData>,
    /// The newest request generation this slot's shard has answered.
    generation: AtomicU64,
    /// The shard is running (it answers requests).
    live: AtomicBool,
    /// The shard's listeners are accepting.
    accepting: AtomicBool,
}

/// The shared side of the metrics of one server.
#[derive(Debug)]
pub(crate) struct Hub {
    slots: Vec<Slot>,
    asked: watch::Sender<u64>,
    published: Mutex<()>,
    published_cv: Condvar,
    pub(crate) interval: Duration,
    pub(crate) driver: String,
    pub(crate) jemalloc: bool,
    pub(crate) started: Instant,
    drain: watch::Receiver<bool>,
    /// A condition besides the shards' for `/readyz`.
    pub(crate) readiness: super::ReadinessCheck,
    /// The `/faults` document.
    pub(crate) faults: super::AdminDoc,
    /// A shutdown was asked for (the listeners may still accept during `--drain-delay`).
    stopping: AtomicBool,
}

/// A merged view: the sum over shards plus what is reported per shard.
#[derive(Debug, Default)]
pub struct Merged {
    /// Everything, summed over shards.
    pub total: Snapshot,
    /// Connections admitted, per shard.
    pub accepted_by_shard: Vec<u64>,
    /// Open connections at each shard's last publication.
    pub active_by_shard: Vec<u64>,
    /// Upstream pool counters summed over shards, when the service relays.
    pub upstream: Option<crate::handler::UpstreamStats>,
    /// The LMTP pool counters toward Mailman summed over shards (`mailman` mode).
    pub mailman: Option<crate::handler::UpstreamStats>,
    /// Each shard's DATA buffer pool (io_uring shards; empty under epoll).
    pub pool_by_shard: Vec<crate::engine::PoolStats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    pub(crate) fn new(
        shards: usize,
        interval: Duration,
        driver: String,
        jemalloc: bool,
        drain: watch::Receiver<bool>,
    ) -> Self {
        Self {
            slots: (0..shards).map(|_| Slot::default()).collect(),
            asked: watch::channel(0).0,
            published: Mutex::new(()),
            published_cv: Condvar::new(),
            interval,
            driver,
            jemalloc,
            started: Instant::now(),
            drain,
            readiness: super::ReadinessCheck::default(),
            faults: super::AdminDoc::default(),
            stopping: AtomicBool::new(false),
        }
    }

    /// A shutdown was asked for: `/readyz` says so from now on, before the listeners close.
    pub(crate) fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// The hub with `readiness` consulted by `/readyz` and `faults` served at `/faults`.
    pub(crate) fn with_readiness(
        mut self,
        readiness: super::ReadinessCheck,
        faults: super::AdminDoc,
    ) -> Self {
        self.readiness = readiness;
        self.faults = faults;
        self
    }

    /// Number of shards.
    pub(crate) fn shards(&self) -> usize {
        self.slots.len()
    }

    /// Asks every live shard to publish and waits up to `wait` for them; a shard that does not
    /// answer in time is represented by its previous publication.
    pub(crate) fn refresh(&self, wait: Duration) {
        self.asked.send_modify(|g| *g += 1);
        let target = *self.asked.borrow();
        let deadline = Instant::now() + wait;
        let mut guard = lock(&self.published);
        loop {
            let done = self.slots.iter().all(|s| {
                !s.live.load(Ordering::Acquire) || s.generation.load(Ordering::Acquire) >= target
            });
            let left = deadline.saturating_duration_since(Instant::now());
            if done || left.is_zero() {
                return;
            }
            guard = self
                .published_cv
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The sum of what every shard has published.
    pub(crate) fn merged(&self) -> Merged {
        let mut m = Merged::default();
        for slot in &self.slots {
            let d = lock(&slot.data);
            m.total.merge(&d.snap);
            m.accepted_by_shard
                .push(d.snap.counters.connections_accepted);
            m.active_by_shard.push(d.active);
            if let Some(u) = &d.upstream {
                m.upstream.get_or_insert_with(Default::default).add(u);
            }
            if let Some(u) = &d.mailman {
                m.mailman.get_or_insert_with(Default::default).add(u);
            }
            if let Some(p) = d.pool {
                m.pool_by_shard.push(p);
            }
        }
        m
    }

    /// True while no drain has started and every shard accepts connections.
    pub(crate) fn ready(&self) -> bool {
        !self.draining()
            && self
                .slots
                .iter()
                .all(|s| s.accepting.load(Ordering::Acquire))
    }

    /// True once a shutdown was asked for (a drain has started, or will after
    /// `--drain-delay`).
    pub(crate) fn draining(&self) -> bool {
        self.stopping.load(Ordering::Acquire) || *self.drain.borrow()
    }
}

/// A shard's recorder: where its connections count things. Single-threaded by construction
/// (it lives in the shard's `Rc` state), so recording is a `RefCell` borrow and an add.
#[derive(Debug)]
pub(crate) struct ShardRecorder {
    hub: std::sync::Arc<Hub>,
    index: usize,
    delta: RefCell<Snapshot>,
}

impl ShardRecorder {
    pub(crate) fn new(hub: std::sync::Arc<Hub>, index: usize) -> Self {
        hub.slots[index].live.store(true, Ordering::Release);
        Self {
            hub,
            index,
            delta: RefCell::new(Snapshot::default()),
        }
    }

    /// What this shard recorded since its last publication, to add to.
    pub(crate) fn record(&self) -> RefMut<'_, Snapshot> {
        self.delta.borrow_mut()
    }

    /// A receiver that changes when a scrape asks for fresh figures.
    pub(crate) fn requests(&self) -> watch::Receiver<u64> {
        self.hub.asked.subscribe()
    }

    /// How often to publish unasked.
    pub(crate) fn interval(&self) -> Duration {
        self.hub.interval
    }

    /// Stores the shard's upstream pool counters (cumulative) for the next merge, and those
    /// of its pool toward Mailman (`mailman` mode).
    pub(crate) fn set_upstream(
        &self,
        stats: Option<crate::handler::UpstreamStats>,
        mailman: Option<crate::handler::UpstreamStats>,
    ) {
        let mut d = lock(&self.hub.slots[self.index].data);
        d.upstream = stats;
        d.mailman = mailman;
    }

    /// Stores the shard's DATA buffer pool figures for the next merge.
    pub(crate) fn set_pool(&self, stats: Option<crate::engine::PoolStats>) {
        lock(&self.hub.slots[self.index].data).pool = stats;
    }

    /// Says whether this shard's listeners accept connections (for `/readyz`).
    pub(crate) fn set_accepting(&self, yes: bool) {
        self.hub.slots[self.index]
            .accepting
            .store(yes, Ordering::Release);
    }

    /// Adds what was recorded since the last call into this shard's slot, answering request
    /// `generation`; `last` marks the shard as stopped (no more requests wait for it).
    pub(crate) fn publish(&self, generation: u64, active: usize, last: bool) {
        let slot = &self.hub.slots[self.index];
        {
            let mut delta = self.delta.borrow_mut();
            let mut data = lock(&slot.data);
            data.snap.merge(&delta);
            data.active = active as u64;
            drop(data);
            delta.reset();
        }
        slot.generation.fetch_max(generation, Ordering::AcqRel);
        if last {
            slot.accepting.store(false, Ordering::Release);
            slot.live.store(false, Ordering::Release);
        }
        let _guard = lock(&self.hub.published);
        self.hub.published_cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn hub(shards: usize) -> (Arc<Hub>, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        let hub = Hub::new(shards, Duration::from_secs(1), "epoll".into(), false, rx);
        (Arc::new(hub), tx)
    }

    #[test]
    fn slots_add_up_deltas_and_merge_across_shards() {
        let (hub, _drain) = hub(2);
        let a = ShardRecorder::new(hub.clone(), 0);
        let b = ShardRecorder::new(hub.clone(), 1);
        a.record().counters.messages[0] += 2;
        a.record().transaction.record(100);
        a.publish(0, 3, false);
        a.record().counters.messages[0] += 1;
        a.publish(0, 1, false);
        b.record().counters.messages[2] += 5;
        b.record().counters.connections_accepted += 4;
        b.record().transaction.record(300);
        b.publish(0, 2, false);
        let m = hub.merged();
        assert_eq!(m.total.counters.messages, [3, 0, 5]);
        assert_eq!(m.total.transaction.count(), 2);
        assert_eq!(m.accepted_by_shard, [0, 4]);
        assert_eq!(m.active_by_shard, [1, 2]);
        // Nothing is counted twice by a later merge.
        assert_eq!(hub.merged().total.counters.messages, [3, 0, 5]);
    }

    #[test]
    fn refresh_waits_for_live_shards_only() {
        let (hub, _drain) = hub(2);
        let a = ShardRecorder::new(hub.clone(), 0);
        let b = ShardRecorder::new(hub.clone(), 1);
        b.publish(0, 0, true); // stopped: never waited for
        let mut asked = a.requests();
        let t = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(asked.changed()).unwrap();
            let g = *asked.borrow();
            a.record().counters.messages[1] += 1;
            a.publish(g, 0, false);
        });
        let t0 = Instant::now();
        hub.refresh(Duration::from_secs(10));
        assert!(t0.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
        assert_eq!(hub.merged().total.counters.messages, [0, 1, 0]);
    }

    #[test]
    fn readiness_follows_accepting_and_drain() {
        let (hub, drain) = hub(2);
        let a = ShardRecorder::new(hub.clone(), 0);
        let b = ShardRecorder::new(hub.clone(), 1);
        assert!(!hub.ready());
        a.set_accepting(true);
        assert!(!hub.ready());
        b.set_accepting(true);
        assert!(hub.ready());
        drain.send_replace(true);
        assert!(!hub.ready());
        assert!(hub.draining());
    }
}
