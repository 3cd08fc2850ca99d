//! The native io_uring engine: one per shard thread, and the only code in ringrelay that calls
//! io_uring.
//!
//! Each engine owns a ring (SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN where the kernel
//! accepts them), a task queue, timers, and the shard's DATA buffer pool (a provided-buffer
//! ring). Its loop runs the ready tasks, puts every send they queued into the submission queue,
//! and then waits in `io_uring_enter` itself, once per turn, for completions or the next timer:
//! no epoll underneath. Listeners use multishot accept; accepted connections a multishot
//! receive into the pool; the relay's upstream connections live on the same ring (connect,
//! receive into their own buffers, vectored sends).
//!
//! ```text
//!   run ready tasks --> queue sends (one per connection) --> io_uring_enter(wait) --> completions
//!        ^                                                                              |
//!        +------------------ wake tasks, fire timers, return pool buffers <-------------+
//! ```
//!
//! Contract (io_uring discipline): memory the kernel may write stays alive until its completion
//! has been read. One-shot operations own their memory (`op::Op`); a dropped operation is
//! cancelled and its memory is freed only when the completion arrives. Multishot operations are
//! cancelled (or their socket shut down) and the engine waits for their final completion before
//! a socket is closed. At the end every operation still in flight is cancelled and awaited.

mod exec;
mod listener;
mod op;
mod pool;
mod ring;
mod socket;
mod stream;
mod timer;

pub use listener::Listener;
pub use pool::PoolStats;
pub use ring::Setup;
pub use socket::Socket;
pub use stream::Stream;
pub use timer::Sleep;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types};
use slab::Slab;

use exec::Remote;
use listener::ListenerShared;
use op::OpSlot;
use pool::BufPool;
use ring::Ring;
use stream::StreamShared;
use timer::Timers;

/// How an engine is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// Buffers in the shard's DATA pool; 0 = chosen with the size (see `buffer_size`).
    pub buffers: u16,
    /// Size of each pool buffer in octets; 0 = 64 KiB where the kernel consumes buffers
    /// incrementally (small receives share one), else 16 KiB; with `buffers` 0, as many as
    /// make 4 MiB per shard.
    pub buffer_size: u32,
    /// Ask for DEFER_TASKRUN (false: behave as on a kernel without it).
    pub defer_taskrun: bool,
    /// Consume pool buffers incrementally where the kernel can (false: behave as on a kernel
    /// without IOU_PBUF_RING_INC, one buffer per receive).
    pub incremental_buffers: bool,
}

impl EngineOptions {
    /// The pool's (buffers, size) for a kernel that does or does not consume buffers
    /// incrementally.
    pub fn pool_size(&self, incremental: bool) -> (u16, u32) {
        const POOL_BYTES: u32 = 4 << 20;
        let size = match self.buffer_size {
            0 if incremental => 64 * 1024,
            0 => 16 * 1024,
            n => n.max(512),
        };
        let buffers = match self.buffers {
            0 => (POOL_BYTES / size).clamp(16, 32768) as u16,
            n => n,
        };
        (buffers, size)
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            buffers: 0,
            buffer_size: 0,
            defer_taskrun: true,
            incremental_buffers: true,
        }
    }
}

/// What a completion's user data says it is for: a tag in the low bits, an index above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tag {
    /// A one-shot operation slot.
    Op = 0,
    /// A connection's multishot receive.
    Recv = 1,
    /// A connection's send.
    Send = 2,
    /// A listener's multishot accept.
    Accept = 3,
    /// The wake eventfd's read.
    Wake = 4,
    /// Nothing to do (cancellations, fire-and-forget closes).
    Ignore = 5,
}

const TAG_BITS: u64 = 3;

impl Tag {
    pub(crate) fn user_data(self, index: usize) -> u64 {
        ((index as u64) << TAG_BITS) | self as u64
    }

    fn of(user_data: u64) -> (Option<Tag>, usize) {
        let index = (user_data >> TAG_BITS) as usize;
        let tag = match user_data & ((1 << TAG_BITS) - 1) {
            0 => Tag::Op,
            1 => Tag::Recv,
            2 => Tag::Send,
            3 => Tag::Accept,
            4 => Tag::Wake,
            5 => Tag::Ignore,
            _ => return (None, index),
        };
        (Some(tag), index)
    }
}

/// One engine's state, reached through a thread-local while its loop runs.
pub(crate) struct Core {
    ring: RefCell<Ring>,
    ops: RefCell<Slab<OpSlot>>,
    streams: RefCell<Slab<Rc<StreamShared>>>,
    listeners: RefCell<Slab<Rc<ListenerShared>>>,
    timers: RefCell<Timers>,
    pool: BufPool,
    /// Connections with output queued since the last submission.
    dirty: RefCell<Vec<Rc<StreamShared>>>,
    /// Connections whose receive stopped for want of a pool buffer.
    starved: RefCell<Vec<Rc<StreamShared>>>,
    remote: Arc<Remote>,
    /// The time at the end of the last wait: what tasks of this turn see as now.
    now: Cell<Instant>,
    /// The 8 octets the wake eventfd is read into (heap memory the kernel writes).
    wake_buf: Box<u64>,
    wake_armed: Cell<bool>,
}

thread_local! {
    static CORE: RefCell<Option<Rc<Core>>> = const { RefCell::new(None) };
}

/// True when this thread runs an engine.
pub fn is_current() -> bool {
    exec::current_id() != 0
}

/// Runs `f` with this thread's engine. Panics when none runs here.
pub(crate) fn with_core<R>(f: impl FnOnce(&Core) -> R) -> R {
    CORE.with(|c| {
        let core = c.borrow();
        f(core.as_ref().expect("no io_uring engine on this thread"))
    })
}

/// Spawns `future` on this thread's engine, detached.
pub fn spawn_local<F: Future<Output = ()> + 'static>(future: F) {
    let remote = with_core(|c| c.remote.clone());
    exec::spawn_on(&remote, future);
}

/// The current time as this thread's engine sees it: read once per loop turn, after the wait
/// (timers compare against the same reading, so one that is due is seen as due). Off an
/// engine thread, the clock.
pub fn now() -> Instant {
    if is_current() {
        with_core(|c| c.now.get())
    } else {
        Instant::now()
    }
}

/// The DATA pool's figures for this thread's engine.
pub fn pool_stats() -> Option<PoolStats> {
    is_current().then(|| with_core(|c| c.pool.stats()))
}

/// Checks that this process may run the engine here (io_uring allowed, the operations and
/// features it needs present); returns the set-up flags a ring would get.
pub fn probe(options: &EngineOptions) -> io::Result<Setup> {
    let mut ring = Ring::new(options.defer_taskrun)?;
    ring.check_features()?;
    let mut setup = ring.setup();
    setup.incremental_buffers =
        options.incremental_buffers && BufPool::incremental_supported(&ring)?;
    (setup.buffers, setup.buffer_size) = options.pool_size(setup.incremental_buffers);
    Ok(setup)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// An engine, created on the thread that will run it.
pub struct Engine {
    core: Rc<Core>,
    id: u64,
}

impl Engine {
    /// Sets up the ring and the DATA pool on this thread.
    pub fn new(options: &EngineOptions) -> io::Result<Engine> {
        if is_current() {
            return Err(io::Error::other("an engine already runs on this thread"));
        }
        let mut ring = Ring::new(options.defer_taskrun)?;
        ring.check_features()?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let remote = Remote::new(id)?;
        // The pool records the engine it belongs to; the id is set before it is built.
        exec::set_current_id(id);
        let pool = BufPool::incremental_supported(&ring).and_then(|supported| {
            let incremental = supported && options.incremental_buffers;
            let (buffers, size) = options.pool_size(incremental);
            BufPool::new(&ring, buffers, size, incremental, remote.clone())
        });
        exec::set_current_id(0);
        let core = Rc::new(Core {
            ring: RefCell::new(ring),
            ops: RefCell::new(Slab::with_capacity(64)),
            streams: RefCell::new(Slab::with_capacity(64)),
            listeners: RefCell::new(Slab::new()),
            timers: RefCell::new(Timers::default()),
            pool: pool?,
            dirty: RefCell::new(Vec::with_capacity(64)),
            starved: RefCell::new(Vec::new()),
            remote,
            now: Cell::new(Instant::now()),
            wake_buf: Box::new(0),
            wake_armed: Cell::new(false),
        });
        Ok(Engine { core, id })
    }

    /// The ring's set-up flags.
    pub fn setup(&self) -> Setup {
        let mut setup = self.core.ring.borrow().setup();
        let pool = self.core.pool.stats();
        setup.incremental_buffers = pool.incremental;
        setup.buffers = pool.buffers as u16;
        setup.buffer_size = pool.buffer_size as u32;
        setup
    }

    /// Runs `future` and every task it spawns until `future` completes, then cancels what is
    /// still in flight, waits for it, and stops.
    pub fn block_on<F: Future + 'static>(self, future: F) -> F::Output {
        exec::set_current_id(self.id);
        CORE.with(|c| *c.borrow_mut() = Some(self.core.clone()));
        let result: Rc<RefCell<Option<F::Output>>> = Rc::new(RefCell::new(None));
        let slot = result.clone();
        spawn_local(async move {
            let out = future.await;
            *slot.borrow_mut() = Some(out);
        });
        let mut completions = Vec::with_capacity(256);
        let mut woken = Vec::new();
        while result.borrow().is_none() {
            exec::run_ready(4096);
            if result.borrow().is_some() {
                break;
            }
            self.core.turn(&mut completions, &mut woken);
        }
        self.stop(&mut completions, &mut woken);
        let out = result.borrow_mut().take();
        out.expect("the main task finished")
    }

    /// Cancels everything in flight, waits (at most a few seconds) for the kernel to finish
    /// with it, and tears the engine down.
    fn stop(self, completions: &mut Vec<cqueue::Entry>, woken: &mut Vec<std::task::Waker>) {
        // Tasks still queued are dropped; waiting ones are dropped with their wakers below.
        exec::clear_ready();
        let cancel_all = opcode::AsyncCancel2::new(types::CancelBuilder::any().all())
            .build()
            .user_data(Tag::Ignore.user_data(0));
        // SAFETY: a cancel entry points to nothing.
        unsafe { self.core.ring.borrow_mut().push(&cancel_all) };
        let deadline = Instant::now() + Duration::from_secs(5);
        stream::finish_released(&self.core);
        while self.core.in_flight() && Instant::now() < deadline {
            self.core.flush_sends();
            self.core
                .ring
                .borrow_mut()
                .enter(true, Some(Duration::from_millis(50)));
            self.core.reap(completions, woken);
            woken.clear();
            exec::clear_ready();
            stream::finish_released(&self.core);
        }
        let leaked = self.core.in_flight();
        self.core.timers.borrow_mut().clear();
        if !leaked {
            self.core.pool.unregister(&self.core.ring.borrow());
        }
        CORE.with(|c| *c.borrow_mut() = None);
        exec::set_current_id(0);
        if leaked {
            // The kernel may still write memory these reference: never free it.
            std::mem::forget(self.core);
        }
    }
}

impl Core {
    /// One loop turn: submit queued sends, wait for completions (or the next timer), handle
    /// them, fire due timers.
    fn turn(&self, completions: &mut Vec<cqueue::Entry>, woken: &mut Vec<std::task::Waker>) {
        self.arm_wake();
        self.flush_sends();
        self.feed_starved();
        let ready = exec::has_ready();
        let timeout = if ready {
            None
        } else {
            self.timers
                .borrow()
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()))
        };
        let wait = !ready && timeout != Some(Duration::ZERO);
        self.ring.borrow_mut().enter(wait, timeout);
        let now = Instant::now();
        self.now.set(now);
        self.reap(completions, woken);
        self.timers.borrow_mut().expire(now, woken);
        for w in woken.drain(..) {
            w.wake();
        }
    }

    /// Handles every available completion.
    fn reap(&self, completions: &mut Vec<cqueue::Entry>, woken: &mut Vec<std::task::Waker>) {
        loop {
            self.ring.borrow_mut().reap(completions);
            if completions.is_empty() {
                break;
            }
            for cqe in completions.drain(..) {
                self.dispatch(cqe.user_data(), cqe.result(), cqe.flags(), woken);
            }
        }
        if self.remote.take_remote() {
            self.pool.collect_remote();
        }
    }

    fn dispatch(&self, user_data: u64, res: i32, flags: u32, woken: &mut Vec<std::task::Waker>) {
        let (tag, index) = Tag::of(user_data);
        match tag {
            Some(Tag::Op) => op::complete(index, res, flags),
            Some(Tag::Recv) => {
                let s = self.streams.borrow().get(index).cloned();
                if let Some(s) = s {
                    stream::on_recv(self, &s, res, flags, woken);
                }
            }
            Some(Tag::Send) => {
                let s = self.streams.borrow().get(index).cloned();
                if let Some(s) = s {
                    stream::on_send(self, &s, res, woken);
                }
            }
            Some(Tag::Accept) => {
                let l = self.listeners.borrow().get(index).cloned();
                if let Some(l) = l {
                    listener::on_accept(self, &l, res, flags, woken);
                }
            }
            Some(Tag::Wake) => {
                self.wake_armed.set(false);
            }
            Some(Tag::Ignore) | None => {}
        }
    }

    /// Asks the kernel to cancel the operation submitted with `user_data` (by user data, so
    /// it runs inline at submission and can only ever hit that operation).
    pub(crate) fn cancel(&self, user_data: u64) {
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(user_data))
            .build()
            .user_data(Tag::Ignore.user_data(0));
        // SAFETY: a cancel entry points to nothing.
        unsafe { self.ring.borrow_mut().push(&e) };
    }

    /// Keeps a read posted on the wake eventfd, so a wake from another thread ends the wait.
    fn arm_wake(&self) {
        if self.wake_armed.replace(true) {
            return;
        }
        let ptr = (&*self.wake_buf as *const u64) as *mut u8;
        let e = opcode::Read::new(types::Fd(self.remote.eventfd()), ptr, 8)
            .build()
            .user_data(Tag::Wake.user_data(0));
        // SAFETY: `wake_buf` is heap memory owned by the core, which outlives every
        // operation (the engine waits for them before it is dropped).
        unsafe { self.ring.borrow_mut().push(&e) };
    }

    /// Puts one send per connection with queued output into the submission queue.
    fn flush_sends(&self) {
        let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        for s in &dirty {
            stream::start_send(self, s);
        }
        let mut d = self.dirty.borrow_mut();
        if d.is_empty() {
            // Keep the allocation.
            *d = dirty;
            d.clear();
        }
    }

    /// Re-arms receives that stopped for want of buffers: as many as there are free buffers,
    /// oldest first (each has bytes waiting, so each will take at least one).
    fn feed_starved(&self) {
        let free = self.pool.available();
        if free == 0 || self.starved.borrow().is_empty() {
            return;
        }
        let batch: Vec<Rc<StreamShared>> = {
            let mut starved = self.starved.borrow_mut();
            let n = free.min(starved.len());
            starved.drain(..n).collect()
        };
        for s in batch {
            stream::rearm_starved(self, &s);
        }
    }

    /// True while any operation may still complete.
    fn in_flight(&self) -> bool {
        !self.ops.borrow().is_empty()
            || !self.streams.borrow().is_empty()
            || !self.listeners.borrow().is_empty()
            || self.wake_armed.get()
    }
}
