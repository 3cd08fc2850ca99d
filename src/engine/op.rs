//! One-shot operations (connect, receive into an owned buffer, vectored send, shutdown): a
//! slot per operation in flight, and `Op`, the future that owns the operation's memory.
//!
//! The kernel may write an operation's memory until its completion arrives. So an `Op` that is
//! dropped early (a timeout, a cancelled task) does not free anything: it moves its memory into
//! the slot, asks the kernel to cancel, and the slot frees the memory when the (cancelled or
//! finished) completion comes in.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use io_uring::squeue;

use super::{with_core, Tag};

/// What an operation slot holds.
pub(crate) enum OpState {
    /// Submitted; the waker of the future awaiting it.
    Waiting(Option<Waker>),
    /// Completed: result and CQE flags.
    Done(i32, u32),
    /// The future is gone; `keep` is freed when the completion arrives.
    Orphaned,
}

/// An operation in flight.
pub(crate) struct OpSlot {
    pub state: OpState,
    /// Memory the kernel may still use, kept after the future went away.
    pub keep: Option<Box<dyn Any>>,
}

/// The future of one submitted operation; resolves to (result, flags, its memory).
pub(crate) struct Op<T: 'static> {
    key: usize,
    data: Option<T>,
}

impl<T: 'static> Op<T> {
    /// Submits `entry`, which may point into `data` (heap memory that moving `data` does not
    /// move: a Box, a Vec's or BytesMut's contents).
    ///
    /// # Safety
    /// Every pointer in `entry` must point into `data`'s heap memory or to memory that
    /// outlives the operation.
    pub(super) unsafe fn submit(entry: squeue::Entry, data: T) -> Op<T> {
        let key = with_core(|c| {
            let key = c.ops.borrow_mut().insert(OpSlot {
                state: OpState::Waiting(None),
                keep: None,
            });
            let entry = entry.user_data(Tag::Op.user_data(key));
            // SAFETY: forwarded to the caller; `data` is kept alive by the slot or the Op.
            unsafe { c.ring.borrow_mut().push(&entry) };
            key
        });
        Op {
            key,
            data: Some(data),
        }
    }
}

// `data` is moved out by value, never pinned in place.
impl<T: 'static> Unpin for Op<T> {}

impl<T: 'static> Future for Op<T> {
    type Output = (i32, u32, T);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let key = self.key;
        let done = with_core(|c| {
            let mut ops = c.ops.borrow_mut();
            let slot = &mut ops[key];
            match &mut slot.state {
                OpState::Done(res, flags) => {
                    let r = (*res, *flags);
                    ops.remove(key);
                    Some(r)
                }
                OpState::Waiting(w) => {
                    match w {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => *w = Some(cx.waker().clone()),
                    }
                    None
                }
                OpState::Orphaned => unreachable!("a live Op is never orphaned"),
            }
        });
        match done {
            Some((res, flags)) => {
                let data = self.data.take().expect("Op polled after completion");
                Poll::Ready((res, flags, data))
            }
            None => Poll::Pending,
        }
    }
}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        let Some(data) = self.data.take() else {
            return;
        };
        if !super::is_current() {
            // The engine is gone and with it the ring: the kernel no longer uses `data`.
            return;
        }
        let key = self.key;
        with_core(|c| {
            let mut ops = c.ops.borrow_mut();
            let slot = &mut ops[key];
            if let OpState::Done(..) = slot.state {
                ops.remove(key);
                return;
            }
            slot.state = OpState::Orphaned;
            slot.keep = Some(Box::new(data));
            drop(ops);
            c.cancel(Tag::Op.user_data(key));
        });
    }
}

/// A completion for an operation slot.
pub(crate) fn complete(key: usize, res: i32, flags: u32) {
    let waker = with_core(|c| {
        let mut ops = c.ops.borrow_mut();
        let slot = ops.get_mut(key)?;
        match std::mem::replace(&mut slot.state, OpState::Done(res, flags)) {
            OpState::Waiting(w) => w,
            OpState::Orphaned => {
                let slot = ops.remove(key);
                drop(ops);
                drop(slot);
                None
            }
            OpState::Done(..) => None,
        }
    });
    if let Some(w) = waker {
        w.wake();
    }
}
