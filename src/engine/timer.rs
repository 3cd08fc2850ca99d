//! The engine's timers: an ordered map from deadline to waker, consulted once per loop turn to
//! bound the ring's wait and to wake what is due. `Sleep` is the future over one entry; it is
//! removed from the map when it fires, is reset, or is dropped, so cancelled timers cost
//! nothing later.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// The timers of one engine.
#[derive(Default)]
pub(crate) struct Timers {
    map: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
}

impl Timers {
    /// The earliest deadline, if any.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.map.keys().next().map(|k| k.0)
    }

    /// Removes every entry due at `now` and returns their wakers.
    pub(super) fn expire(&mut self, now: Instant, woken: &mut Vec<Waker>) {
        while let Some(entry) = self.map.first_entry() {
            if entry.key().0 > now {
                break;
            }
            woken.push(entry.remove());
        }
    }

    fn insert(&mut self, deadline: Instant, waker: Waker) -> (Instant, u64) {
        self.next_id += 1;
        let key = (deadline, self.next_id);
        self.map.insert(key, waker);
        key
    }

    fn update(&mut self, key: &(Instant, u64), waker: &Waker) -> bool {
        match self.map.get_mut(key) {
            Some(w) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, key: &(Instant, u64)) {
        self.map.remove(key);
    }

    /// Wakers of every timer still pending (the engine is stopping).
    pub(super) fn clear(&mut self) {
        self.map.clear();
    }
}

/// A future that completes at its deadline. Must be polled and dropped on the engine's thread.
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
    key: Option<(Instant, u64)>,
}

impl Sleep {
    /// A timer for `deadline`.
    pub fn until(deadline: Instant) -> Sleep {
        Sleep {
            deadline,
            key: None,
        }
    }

    /// Moves the deadline; the timer registers again when next polled.
    pub fn reset(&mut self, deadline: Instant) {
        if deadline != self.deadline {
            self.unregister();
            self.deadline = deadline;
        }
    }

    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    fn unregister(&mut self) {
        if let Some(key) = self.key.take() {
            super::with_core(|c| c.timers.borrow_mut().remove(&key));
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if super::now() >= self.deadline {
            self.unregister();
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let key = self.key;
        let new_key = super::with_core(|c| {
            let mut t = c.timers.borrow_mut();
            match key {
                Some(k) if t.update(&k, cx.waker()) => None,
                // Not registered, or it fired while the clock had not quite reached it.
                _ => Some(t.insert(deadline, cx.waker().clone())),
            }
        });
        if new_key.is_some() {
            self.key = new_key;
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if self.key.is_some() {
            // The engine may already be gone (a task dropped at its end): nothing to remove.
            if super::is_current() {
                self.unregister();
            }
        }
    }
}
