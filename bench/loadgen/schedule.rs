//! When messages start. Each message is a `Ticket`: a run-wide sequence number (which becomes
//! its X-Ringload-Id) and the instant it was meant to start.
//!
//! - Closed loop: a session takes the next ticket as soon as its last message is done; the
//!   sequence is one atomic counter shared by all threads, so `--messages` is exact. A
//!   session without a connection opens one first and takes its ticket after, so one still
//!   connecting when the budget is spent is cancelled (`Budget::closed_over`), not failed.
//! - Open loop (`--rate R`): thread j of T owns the tickets j, j+T, j+2T, ... and ticket n is
//!   meant to start at t0 + n/R whatever the server is doing. A ticker releases tickets into the
//!   thread's queue as their time comes; idle sessions take them. When every session is busy
//!   the queue grows, and the wait counts in the message's latency (measured from the intended
//!   start), so a stalled server cannot hide its stall (no coordinated omission).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// One message to send.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    /// Run-wide sequence number.
    pub seq: u64,
    /// When it was meant to start.
    pub intended: Instant,
}

/// Run-wide limits, shared by every thread.
#[derive(Debug)]
pub struct Budget {
    next: AtomicU64,
    limit: Option<u64>,
    deadline: Option<Instant>,
    abort: AtomicBool,
    /// Woken when the closed loop hands out its last ticket, or on `abort`.
    over: Notify,
    /// Start of the run.
    pub t0: Instant,
}

impl Budget {
    /// Limits from `--messages` and `--duration`, starting at `t0`.
    pub fn new(t0: Instant, limit: Option<u64>, duration: Option<Duration>) -> Self {
        Self {
            next: AtomicU64::new(0),
            limit,
            deadline: duration.map(|d| t0 + d),
            abort: AtomicBool::new(false),
            over: Notify::new(),
            t0,
        }
    }

    /// Stops handing out tickets (error budget spent, or a fatal condition).
    pub fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
        self.over.notify_waiters();
    }

    /// Closed loop: no ticket will be handed out any more (the count is spent, the duration
    /// has passed, or the run was aborted).
    fn closed_is_over(&self) -> bool {
        self.aborted()
            || self.deadline.is_some_and(|d| Instant::now() >= d)
            || self
                .limit
                .is_some_and(|l| self.next.load(Ordering::Relaxed) >= l)
    }

    /// Closed loop: returns once no ticket will be handed out any more.
    pub async fn closed_over(&self) {
        loop {
            let notified = self.over.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.closed_is_over() {
                return;
            }
            match self.deadline {
                Some(d) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(tokio::time::Instant::from_std(d)) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// True after `abort`.
    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    fn closed_next(&self) -> Option<Ticket> {
        if self.aborted() {
            return None;
        }
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            return None;
        }
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        if self.limit.is_some_and(|l| seq >= l) {
            return None;
        }
        if self.limit.is_some_and(|l| seq + 1 >= l) {
            // The last ticket: sessions still connecting will get none.
            self.over.notify_waiters();
        }
        Some(Ticket { seq, intended: now })
    }
}

/// A thread's source of tickets.
pub enum Tickets {
    /// Closed loop.
    Closed(Arc<Budget>),
    /// Open loop.
    Open(Rc<OpenQueue>),
}

/// How early the ticker stops sleeping and starts yielding: tokio's timer fires on whole
/// milliseconds (and may be late by one), which would add up to a millisecond of the
/// generator's own delay to every open-loop latency.
const SPIN: Duration = Duration::from_micros(1500);

/// Waits until `t`: sleeps while it is far, then yields to the other tasks (the sessions) until
/// it has come, so tickets are released within microseconds of their intended time.
async fn wait_until(t: Instant) {
    let now = Instant::now();
    if t <= now {
        return;
    }
    if t - now > SPIN {
        tokio::time::sleep_until(tokio::time::Instant::from_std(t - SPIN)).await;
    }
    while Instant::now() < t {
        tokio::task::yield_now().await;
    }
}

/// Released but not yet started tickets of one thread (open loop).
pub struct OpenQueue {
    queue: RefCell<VecDeque<Ticket>>,
    notify: Notify,
    done: Cell<bool>,
    /// Most tickets waiting at once.
    pub max_backlog: Cell<usize>,
}

impl Tickets {
    /// The closed loop's budget (None in the open loop).
    pub fn closed_budget(&self) -> Option<&Budget> {
        match self {
            Tickets::Closed(b) => Some(b),
            Tickets::Open(_) => None,
        }
    }

    /// The next message to send, or None when the run is over for this session.
    pub async fn next(&self) -> Option<Ticket> {
        match self {
            Tickets::Closed(b) => b.closed_next(),
            Tickets::Open(q) => loop {
                if let Some(t) = q.queue.borrow_mut().pop_front() {
                    return Some(t);
                }
                if q.done.get() {
                    return None;
                }
                q.notify.notified().await;
            },
        }
    }
}

impl OpenQueue {
    /// An empty queue.
    pub fn new() -> Rc<Self> {
        Rc::new(Self {
            queue: RefCell::new(VecDeque::new()),
            notify: Notify::new(),
            done: Cell::new(false),
            max_backlog: Cell::new(0),
        })
    }

    /// Releases this thread's tickets on schedule until the budget ends, then marks the queue
    /// done (sessions finish what is queued).
    pub async fn run_ticker(
        self: Rc<Self>,
        budget: Arc<Budget>,
        rate: f64,
        thread: u64,
        threads: u64,
    ) {
        let mut k: u64 = 0;
        loop {
            let seq = k * threads + thread;
            if budget.aborted() || budget.limit.is_some_and(|l| seq >= l) {
                break;
            }
            let intended = budget.t0 + Duration::from_secs_f64(seq as f64 / rate);
            if budget.deadline.is_some_and(|d| intended >= d) {
                break;
            }
            wait_until(intended).await;
            {
                let mut q = self.queue.borrow_mut();
                q.push_back(Ticket { seq, intended });
                if q.len() > self.max_backlog.get() {
                    self.max_backlog.set(q.len());
                }
            }
            self.notify.notify_one();
            k += 1;
        }
        self.done.set(true);
        self.notify.notify_waiters();
    }
}
