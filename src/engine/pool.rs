//! The shard's DATA buffer pool: a provided-buffer ring registered with the shard's io_uring.
//! Multishot receives take a buffer from it when bytes arrive (an idle connection holds none);
//! each received chunk leaves the engine as a `Bytes` whose owner gives the buffer back to the
//! ring when the last view of it drops, so message bodies travel from the kernel to the handler
//! (and on to an upstream) without a copy.
//!
//! Contract: the ring's tail is written only on the engine's thread. A view dropped on another
//! thread (a library handler may send chunks elsewhere) queues its buffer id, and the engine
//! puts it back on its next loop turn. The memory lives as long as the last view, even after
//! the engine has stopped.

use std::alloc::Layout;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use io_uring::types::BufRingEntry;

use super::exec::{current_id, Remote};
use super::ring::Ring;

/// The buffer group id of the pool on its ring.
pub(crate) const GROUP: u16 = 0;

/// Pool figures for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers in the pool.
    pub buffers: u64,
    /// Size of each buffer in octets.
    pub buffer_size: u64,
    /// Buffers holding received bytes now (in the kernel's hands or in a live view).
    pub in_use: u64,
    /// Times a receive found the pool empty (that connection waited; nothing was lost).
    pub exhausted: u64,
}

/// State shared by the engine and every view of its buffers.
struct Shared {
    engine: u64,
    mem: *mut u8,
    mem_layout: Layout,
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    mask: u16,
    count: u16,
    size: u32,
    /// Our producer index into the ring (written only on the engine's thread).
    tail: AtomicU16,
    /// Buffers not in the ring.
    in_use: AtomicUsize,
    exhausted: AtomicU64,
    /// Ids given back on other threads, waiting for the engine.
    remote: Mutex<Vec<u16>>,
    remote_pending: AtomicBool,
    /// Woken when a buffer comes back from another thread while connections wait for one.
    notify: Arc<Remote>,
}

// SAFETY: the raw pointers are to allocations owned by `Shared` and freed in its Drop; the ring
// is written only on the engine's thread (checked in `give_back`), and the buffer memory is
// read through views only after the kernel has finished writing it.
unsafe impl Send for Shared {}
// SAFETY: as above; cross-thread access goes through the Mutex and atomics.
unsafe impl Sync for Shared {}

/// The pool, owned by the engine.
pub(crate) struct BufPool {
    shared: Arc<Shared>,
}

impl BufPool {
    /// Allocates `count` buffers of `size` octets and registers them with `ring`.
    pub fn new(ring: &Ring, count: u16, size: u32, notify: Arc<Remote>) -> std::io::Result<Self> {
        let count = count.clamp(1, 32768);
        let entries = count.next_power_of_two();
        let ring_layout =
            Layout::from_size_align(entries as usize * 16, 4096).map_err(std::io::Error::other)?;
        let mem_layout = Layout::from_size_align(count as usize * size as usize, 4096)
            .map_err(std::io::Error::other)?;
        // SAFETY: both layouts have a non-zero size.
        let (ring_ptr, mem) = unsafe {
            (
                std::alloc::alloc_zeroed(ring_layout) as *mut BufRingEntry,
                std::alloc::alloc(mem_layout),
            )
        };
        if ring_ptr.is_null() || mem.is_null() {
            std::alloc::handle_alloc_error(mem_layout);
        }
        let shared = Arc::new(Shared {
            engine: current_id(),
            mem,
            mem_layout,
            ring: ring_ptr,
            ring_layout,
            mask: entries - 1,
            count,
            size,
            tail: AtomicU16::new(0),
            in_use: AtomicUsize::new(count as usize),
            exhausted: AtomicU64::new(0),
            remote: Mutex::new(Vec::new()),
            remote_pending: AtomicBool::new(false),
            notify,
        });
        // SAFETY: the ring memory lives as long as `shared`, which the engine keeps until it
        // has unregistered the group (and a view may keep it longer).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ring_ptr as u64, entries, GROUP, 0)?;
        }
        for bid in 0..count {
            shared.push(bid);
        }
        Ok(Self { shared })
    }

    /// A view of `len` octets received into buffer `bid`; the buffer goes back on drop.
    pub fn take(&self, bid: u16, len: usize) -> Bytes {
        debug_assert!(len <= self.shared.size as usize);
        self.shared.taken();
        Bytes::from_owner(PoolBuf {
            shared: self.shared.clone(),
            bid,
            len: len as u32,
        })
    }

    /// Counts a receive that found the pool empty.
    pub fn count_exhausted(&self) {
        self.shared.exhausted.fetch_add(1, Ordering::Relaxed);
    }

    /// Puts back buffers dropped on other threads.
    pub fn collect_remote(&self) {
        let s = &self.shared;
        if s.remote_pending.swap(false, Ordering::AcqRel) {
            let ids = std::mem::take(&mut *s.remote.lock().unwrap_or_else(|e| e.into_inner()));
            for bid in ids {
                s.push(bid);
            }
        }
    }

    /// Buffers in the ring now.
    pub fn available(&self) -> usize {
        self.shared.count as usize - self.shared.in_use.load(Ordering::Relaxed)
    }

    /// The figures for the metrics.
    pub fn stats(&self) -> PoolStats {
        let s = &self.shared;
        PoolStats {
            buffers: s.count as u64,
            buffer_size: s.size as u64,
            in_use: s.in_use.load(Ordering::Relaxed) as u64,
            exhausted: s.exhausted.load(Ordering::Relaxed),
        }
    }

    /// Unregisters the group (the engine is stopping; no receive is in flight).
    pub fn unregister(&self, ring: &Ring) {
        let _ = ring.submitter().unregister_buf_ring(GROUP);
    }
}

impl Shared {
    /// Appends buffer `bid` to the ring and publishes it (engine thread only).
    fn push(&self, bid: u16) {
        let tail = self.tail.load(Ordering::Relaxed);
        // SAFETY: `ring` has mask+1 entries; the index is masked. Only the engine's thread
        // writes entries, and the kernel reads an entry only after the tail passes it.
        unsafe {
            let e = &mut *self.ring.add((tail & self.mask) as usize);
            e.set_addr(self.mem.add(bid as usize * self.size as usize) as u64);
            e.set_len(self.size);
            e.set_bid(bid);
            let next = tail.wrapping_add(1);
            self.tail.store(next, Ordering::Relaxed);
            let kernel_tail = BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*kernel_tail).store(next, Ordering::Release);
        }
        self.in_use.fetch_sub(1, Ordering::Relaxed);
    }

    fn give_back(&self, bid: u16) {
        if current_id() == self.engine {
            self.push(bid);
        } else {
            self.remote
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(bid);
            self.remote_pending.store(true, Ordering::Release);
            self.notify.notify();
        }
    }

    fn taken(&self) {
        self.in_use.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: allocated in `BufPool::new` with these layouts; the group is unregistered
        // (or the ring closed) and no view is left.
        unsafe {
            std::alloc::dealloc(self.ring as *mut u8, self.ring_layout);
            std::alloc::dealloc(self.mem, self.mem_layout);
        }
    }
}

/// The owner behind a received chunk's `Bytes`: one pool buffer.
struct PoolBuf {
    shared: Arc<Shared>,
    bid: u16,
    len: u32,
}

impl AsRef<[u8]> for PoolBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the kernel finished writing `len` octets into buffer `bid` before its
        // completion was read; the buffer is not in the ring (so not written) until this
        // owner drops.
        unsafe {
            std::slice::from_raw_parts(
                self.shared
                    .mem
                    .add(self.bid as usize * self.shared.size as usize),
                self.len as usize,
            )
        }
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        self.shared.give_back(self.bid);
    }
}
