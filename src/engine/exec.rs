//! The engine's task queue: tasks are `async-task` allocations whose wakers push them onto
//! the run queue of the engine that spawned them. A wake on the engine's own thread is a
//! push onto a thread-local queue; a wake from another thread (a drain signal, a metrics
//! scrape request) goes through a locked queue and an eventfd write that ends the ring's wait.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_task::Runnable;

thread_local! {
    /// The id of the engine running on this thread (0: none).
    static ENGINE_ID: Cell<u64> = const { Cell::new(0) };
    /// Tasks ready to run on this thread's engine.
    static RUN_QUEUE: RefCell<VecDeque<Runnable>> = const { RefCell::new(VecDeque::new()) };
}

/// The id of this thread's engine, 0 when none runs here.
pub(crate) fn current_id() -> u64 {
    ENGINE_ID.with(Cell::get)
}

pub(crate) fn set_current_id(id: u64) {
    ENGINE_ID.with(|c| c.set(id));
}

/// Where wakes for one engine's tasks go.
pub(crate) struct Remote {
    id: u64,
    queue: Mutex<Vec<Runnable>>,
    pending: AtomicBool,
    eventfd: OwnedFd,
}

impl Remote {
    pub(super) fn new(id: u64) -> std::io::Result<Arc<Remote>> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Arc::new(Remote {
            id,
            queue: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            // SAFETY: fd was just created and is owned by nobody else.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
        }))
    }

    /// The eventfd the engine keeps a read posted on.
    pub(super) fn eventfd(&self) -> i32 {
        self.eventfd.as_raw_fd()
    }

    fn schedule(&self, runnable: Runnable) {
        if current_id() == self.id {
            RUN_QUEUE.with(|q| q.borrow_mut().push_back(runnable));
            return;
        }
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(runnable);
        self.notify();
    }

    /// Ends the engine's wait (from any thread).
    pub(super) fn notify(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a live u64 to our eventfd.
            unsafe {
                libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8);
            }
        }
    }

    /// Moves tasks woken from other threads onto the run queue; true if a wake was pending.
    pub(super) fn take_remote(&self) -> bool {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return false;
        }
        let woken = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        RUN_QUEUE.with(|q| q.borrow_mut().extend(woken));
        true
    }
}

/// Spawns `future` on the engine described by `remote` (this thread's), detached.
pub(crate) fn spawn_on<F: Future<Output = ()> + 'static>(remote: &Arc<Remote>, future: F) {
    let remote = remote.clone();
    let (runnable, task) = async_task::spawn_local(future, move |r| remote.schedule(r));
    task.detach();
    runnable.schedule();
}

/// Runs up to `budget` ready tasks; returns how many ran.
pub(crate) fn run_ready(budget: usize) -> usize {
    let mut ran = 0;
    while ran < budget {
        let Some(r) = RUN_QUEUE.with(|q| q.borrow_mut().pop_front()) else {
            break;
        };
        r.run();
        ran += 1;
    }
    ran
}

/// True when tasks wait to run.
pub(crate) fn has_ready() -> bool {
    RUN_QUEUE.with(|q| !q.borrow().is_empty())
}

/// Drops every queued task (the engine is stopping).
pub(crate) fn clear_ready() {
    let tasks = RUN_QUEUE.with(|q| std::mem::take(&mut *q.borrow_mut()));
    drop(tasks);
}
