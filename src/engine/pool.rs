//! The shard's DATA buffer pool: a provided-buffer ring registered with the shard's io_uring.
//! Multishot receives take buffer space from it when bytes arrive (an idle connection holds
//! none); each received chunk leaves the engine as a `Bytes` view of its buffer, so message
//! bodies travel from the kernel to the handler (and on to an upstream) without a copy.
//!
//! Where the kernel allows it (6.12, IOU_PBUF_RING_INC), buffers are consumed incrementally:
//! each receive takes only the octets it needs from the buffer at the head of the ring, so
//! small receives (commands, small messages, from any connection) share one buffer and a bulk
//! transfer fills whole ones. Elsewhere each receive takes a whole buffer.
//!
//! A buffer goes back to the ring when the kernel has finished filling it (a completion
//! without IORING_CQE_F_BUF_MORE) and the last view of it has dropped.
//!
//! Contract: the ring and the per-buffer counts are written only on the engine's thread. A
//! view dropped on another thread (a library handler may send chunks elsewhere) queues its
//! buffer id, and the engine settles it on its next loop turn. The memory lives as long as the
//! last view, even after the engine has stopped.

use std::alloc::Layout;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use io_uring::types::BufRingEntry;

use super::exec::{current_id, Remote};
use super::ring::Ring;

/// The buffer group id of the pool on its ring.
pub(crate) const GROUP: u16 = 0;

/// IOU_PBUF_RING_INC (the crate keeps its `sys` module private).
const PBUF_RING_INC: u16 = 2;

/// Pool figures for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers in the pool.
    pub buffers: u64,
    /// Size of each buffer in octets.
    pub buffer_size: u64,
    /// Buffers out of the ring: filled, and held by views not dropped yet.
    pub in_use: u64,
    /// Times a receive found the pool empty (that connection waited; nothing was lost).
    pub exhausted: u64,
    /// Buffers are consumed incrementally (kernel 6.12).
    pub incremental: bool,
}

/// One buffer's bookkeeping (touched on the engine's thread only; atomics keep `Shared` Sync).
#[derive(Default)]
struct BufState {
    /// Where the next received octets start (incremental consumption).
    offset: AtomicU32,
    /// Views alive.
    views: AtomicU32,
    /// Out of the ring: the kernel will not write it again until it is given back.
    full: AtomicBool,
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
    incremental: bool,
    bufs: Box<[BufState]>,
    /// Our producer index into the ring (written only on the engine's thread).
    tail: AtomicU16,
    /// Buffers out of the ring.
    in_use: AtomicUsize,
    exhausted: AtomicU64,
    /// Ids of views dropped on other threads, waiting for the engine.
    remote: Mutex<Vec<u16>>,
    remote_pending: AtomicBool,
    /// Woken when a view drops on another thread (connections may wait for a buffer).
    notify: Arc<Remote>,
}

// SAFETY: the raw pointers are to allocations owned by `Shared` and freed in its Drop; the ring
// and the counts are written only on the engine's thread (checked in `view_dropped`), and the
// buffer memory is read through views only after the kernel has finished writing that range.
unsafe impl Send for Shared {}
// SAFETY: as above; cross-thread access goes through the Mutex and atomics.
unsafe impl Sync for Shared {}

/// The pool, owned by the engine.
pub(crate) struct BufPool {
    shared: Arc<Shared>,
}

impl BufPool {
    /// Allocates `count` buffers of `size` octets and registers them with `ring`, consumed
    /// incrementally when asked (and the kernel supports it).
    pub(super) fn new(
        ring: &Ring,
        count: u16,
        size: u32,
        incremental: bool,
        notify: Arc<Remote>,
    ) -> std::io::Result<Self> {
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
        // SAFETY: the ring memory lives as long as `Shared`, which the engine keeps until it
        // has unregistered the group (and a view may keep it longer).
        let register = |flags| unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ring_ptr as u64, entries, GROUP, flags)
        };
        let incremental = match register(if incremental { PBUF_RING_INC } else { 0 }) {
            Ok(()) => incremental,
            Err(e) if incremental && e.raw_os_error() == Some(libc::EINVAL) => {
                register(0)?;
                false
            }
            Err(e) => return Err(e),
        };
        let shared = Arc::new(Shared {
            engine: current_id(),
            mem,
            mem_layout,
            ring: ring_ptr,
            ring_layout,
            mask: entries - 1,
            count,
            size,
            incremental,
            bufs: (0..count).map(|_| BufState::default()).collect(),
            tail: AtomicU16::new(0),
            in_use: AtomicUsize::new(count as usize),
            exhausted: AtomicU64::new(0),
            remote: Mutex::new(Vec::new()),
            remote_pending: AtomicBool::new(false),
            notify,
        });
        for bid in 0..count {
            shared.push(bid);
        }
        Ok(Self { shared })
    }

    /// True when `ring`'s kernel consumes provided buffers incrementally (a throw-away group
    /// is registered with IOU_PBUF_RING_INC to find out).
    pub(super) fn incremental_supported(ring: &Ring) -> std::io::Result<bool> {
        let layout = Layout::from_size_align(16, 4096).map_err(std::io::Error::other)?;
        // SAFETY: a non-zero layout; freed below after the group is unregistered.
        let entry = unsafe { std::alloc::alloc_zeroed(layout) };
        if entry.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        const PROBE_GROUP: u16 = GROUP + 1;
        // SAFETY: one zeroed entry that lives until after the unregistration.
        let r = unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entry as u64,
                1,
                PROBE_GROUP,
                PBUF_RING_INC,
            )
        };
        let supported = match r {
            Ok(()) => {
                let _ = ring.submitter().unregister_buf_ring(PROBE_GROUP);
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => false,
            Err(e) => return Err(e),
        };
        // SAFETY: allocated above with this layout; no longer registered.
        unsafe { std::alloc::dealloc(entry, layout) };
        Ok(supported)
    }

    /// A view of the `len` octets a receive completion put into buffer `bid`. `more` is the
    /// completion's IORING_CQE_F_BUF_MORE: the kernel goes on filling that buffer.
    pub(super) fn take(&self, bid: u16, len: usize, more: bool) -> Bytes {
        let s = &self.shared;
        let st = &s.bufs[bid as usize];
        let offset = if s.incremental {
            st.offset.fetch_add(len as u32, Ordering::Relaxed)
        } else {
            0
        };
        debug_assert!(offset as usize + len <= s.size as usize);
        st.views.fetch_add(1, Ordering::Relaxed);
        if !(s.incremental && more) {
            st.full.store(true, Ordering::Relaxed);
            s.in_use.fetch_add(1, Ordering::Relaxed);
        }
        Bytes::from_owner(PoolBuf {
            shared: s.clone(),
            bid,
            offset,
            len: len as u32,
        })
    }

    /// Counts a receive that found the pool empty.
    pub(super) fn count_exhausted(&self) {
        self.shared.exhausted.fetch_add(1, Ordering::Relaxed);
    }

    /// Settles views dropped on other threads.
    pub(super) fn collect_remote(&self) {
        let s = &self.shared;
        if s.remote_pending.swap(false, Ordering::AcqRel) {
            let ids = std::mem::take(&mut *s.remote.lock().unwrap_or_else(|e| e.into_inner()));
            for bid in ids {
                s.release(bid);
            }
        }
    }

    /// Buffers in the ring now (partly filled ones included).
    pub(super) fn available(&self) -> usize {
        self.shared.count as usize - self.shared.in_use.load(Ordering::Relaxed)
    }

    /// The figures for the metrics.
    pub(super) fn stats(&self) -> PoolStats {
        let s = &self.shared;
        PoolStats {
            buffers: s.count as u64,
            buffer_size: s.size as u64,
            in_use: s.in_use.load(Ordering::Relaxed) as u64,
            exhausted: s.exhausted.load(Ordering::Relaxed),
            incremental: s.incremental,
        }
    }

    /// Unregisters the group (the engine is stopping; no receive is in flight).
    pub(super) fn unregister(&self, ring: &Ring) {
        let _ = ring.submitter().unregister_buf_ring(GROUP);
    }
}

impl Shared {
    /// Appends buffer `bid`, empty, to the ring and publishes it (engine thread only).
    fn push(&self, bid: u16) {
        let st = &self.bufs[bid as usize];
        st.offset.store(0, Ordering::Relaxed);
        st.full.store(false, Ordering::Relaxed);
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

    /// A view of buffer `bid` dropped (engine thread): the buffer goes back to the ring once
    /// it is full and has no view left.
    fn release(&self, bid: u16) {
        let st = &self.bufs[bid as usize];
        let left = st.views.fetch_sub(1, Ordering::Relaxed) - 1;
        if left == 0 && st.full.load(Ordering::Relaxed) {
            self.push(bid);
        }
    }

    fn view_dropped(&self, bid: u16) {
        if current_id() == self.engine {
            self.release(bid);
        } else {
            self.remote
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(bid);
            self.remote_pending.store(true, Ordering::Release);
            self.notify.notify();
        }
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

/// The owner behind a received chunk's `Bytes`: a range of one pool buffer.
struct PoolBuf {
    shared: Arc<Shared>,
    bid: u16,
    offset: u32,
    len: u32,
}

impl AsRef<[u8]> for PoolBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the kernel finished writing these `len` octets before their completion was
        // read, and never writes a range it has reported (it only moves on, or the buffer
        // leaves the ring, which waits for this owner to drop).
        unsafe {
            std::slice::from_raw_parts(
                self.shared
                    .mem
                    .add(self.bid as usize * self.shared.size as usize + self.offset as usize),
                self.len as usize,
            )
        }
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        self.shared.view_dropped(self.bid);
    }
}
