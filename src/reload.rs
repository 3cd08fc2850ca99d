//! Settings that a reload (SIGHUP) replaces while the server runs: the STARTTLS certificate,
//! the relay's policy and its upstreams.
//!
//! Contract: `Swap` is the process-wide slot; a reload `store`s a new value, which every
//! reader sees from its next `load`. Nothing already handed out changes: a session keeps the
//! value it started with. Shards read through a `Cached`, which costs one atomic load per use
//! while nothing changes (a connection's start, not per command or message).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A value a reload may replace, shared by every thread.
pub struct Swap<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    generation: AtomicU64,
    value: Mutex<Arc<T>>,
}

impl<T> Clone for Swap<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Swap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Swap").field(&self.load()).finish()
    }
}

impl<T> PartialEq for Swap<T> {
    /// The same slot (not the same value).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl<T> Eq for Swap<T> {}

impl<T: Default> Default for Swap<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> Swap<T> {
    /// A slot holding `value`.
    pub fn new(value: T) -> Self {
        Self {
            inner: Arc::new(Inner {
                generation: AtomicU64::new(0),
                value: Mutex::new(Arc::new(value)),
            }),
        }
    }

    /// The current value.
    pub fn load(&self) -> Arc<T> {
        self.inner
            .value
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the value; readers see it from their next `load`.
    pub fn store(&self, value: T) {
        *self.inner.value.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Changes every `store` makes.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }
}

/// One thread's view of a `Swap`: the value it last loaded, refreshed when a reload stored a
/// newer one.
pub struct Cached<T> {
    swap: Swap<T>,
    generation: Cell<u64>,
    value: RefCell<Arc<T>>,
}

impl<T> Cached<T> {
    /// A view of `swap`.
    pub fn new(swap: Swap<T>) -> Self {
        let generation = swap.generation();
        let value = swap.load();
        Self {
            swap,
            generation: Cell::new(generation),
            value: RefCell::new(value),
        }
    }

    /// The current value (one atomic load unless a reload happened).
    pub fn get(&self) -> Arc<T> {
        self.borrow().clone()
    }

    /// The current value, borrowed: no reference count touched (one atomic load unless a
    /// reload happened). Do not hold it across an `await`.
    pub fn borrow(&self) -> std::cell::Ref<'_, Arc<T>> {
        let g = self.swap.generation();
        if g != self.generation.get() {
            *self.value.borrow_mut() = self.swap.load();
            self.generation.set(g);
        }
        self.value.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_reaches_every_view_and_old_values_stay_valid() {
        let swap = Swap::new(String::from("old"));
        let view = Cached::new(swap.clone());
        let held = view.get();
        assert_eq!(*held, "old");
        swap.store("new".into());
        assert_eq!(*view.get(), "new");
        assert_eq!(*held, "old", "a value handed out never changes");
        let other = swap.clone();
        assert_eq!(*other.load(), "new");
        assert_eq!(swap, other);
        assert_ne!(swap, Swap::new(String::new()));
    }
}
