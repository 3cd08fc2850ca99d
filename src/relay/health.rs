//! Whether the relay can reach any upstream, shared by every shard's pool and read by the
//! admin listener's `/readyz`.
//!
//! A checkout that reaches no upstream at all marks the relay failing (from that moment on,
//! until any shard connects again); once it has been failing for `unready_after`, `/readyz`
//! answers 503 with the last error, so a balancer sends the traffic elsewhere. While failing,
//! the first shard probes the upstreams on its own (`probe_due`), so readiness comes back
//! without client traffic (which a balancer no longer sends). Lock-free except for the
//! last error's text, which only failures write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::Readiness;

/// How often a failing relay probes its upstreams.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

/// The relay's upstream reachability (see the module documentation).
#[derive(Debug)]
pub struct UpstreamHealth {
    origin: Instant,
    /// Milliseconds after `origin` + 1 when the failing began; 0 while not failing.
    failing_since: AtomicU64,
    /// Milliseconds after `origin` + 1 of the last probe; 0 before the first.
    last_probe: AtomicU64,
    last_error: Mutex<String>,
    /// How long failing lasts before `/readyz` says so; zero never does.
    pub unready_after: Duration,
}

impl Default for UpstreamHealth {
    fn default() -> Self {
        Self::new(Duration::from_secs(30))
    }
}

impl UpstreamHealth {
    /// Healthy, turning unready after `unready_after` of failing (zero: never).
    pub fn new(unready_after: Duration) -> Self {
        Self {
            origin: Instant::now(),
            failing_since: AtomicU64::new(0),
            last_probe: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
            unready_after,
        }
    }

    fn stamp(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    /// A connection to an upstream was opened.
    pub fn reached(&self) {
        if self.failing_since.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!(target: crate::log::UPSTREAM, "an upstream is reachable again");
        }
    }

    /// No upstream could be reached; `error` says what happened last.
    pub fn unreachable(&self, error: &str) {
        let now = self.stamp();
        let _ = self
            .failing_since
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error.to_string();
    }

    /// How long no upstream has been reachable, if that is the case.
    pub fn failing_for(&self) -> Option<Duration> {
        match self.failing_since.load(Ordering::Acquire) {
            0 => None,
            t => Some(Duration::from_millis(self.stamp().saturating_sub(t))),
        }
    }

    /// True when a probe should run now (failing, and none in the last `PROBE_EVERY`); the
    /// caller that gets true runs it.
    pub fn probe_due(&self) -> bool {
        if self.failing_for().is_none() {
            return false;
        }
        let now = self.stamp();
        let last = self.last_probe.load(Ordering::Acquire);
        if last != 0 && now.saturating_sub(last) < PROBE_EVERY.as_millis() as u64 {
            return false;
        }
        self.last_probe
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

impl Readiness for UpstreamHealth {
    fn not_ready(&self) -> Option<String> {
        let failing = self.failing_for()?;
        if self.unready_after.is_zero() || failing < self.unready_after {
            return None;
        }
        let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        Some(format!(
            "no upstream reachable for {} s; last error: {last}",
            failing.as_secs()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unready_only_after_failing_long_enough_and_ready_again_on_reach() {
        let h = UpstreamHealth::new(Duration::from_millis(50));
        assert!(h.not_ready().is_none());
        h.unreachable("127.0.0.1:1: connection refused");
        assert!(
            h.not_ready().is_none(),
            "not yet: failing for less than 50 ms"
        );
        std::thread::sleep(Duration::from_millis(80));
        let why = h.not_ready().expect("unready after 50 ms of failing");
        assert!(why.contains("connection refused"), "{why}");
        // A later failure does not restart the clock.
        h.unreachable("again");
        assert!(h.not_ready().is_some());
        assert!(h.probe_due());
        assert!(!h.probe_due(), "one probe per interval");
        h.reached();
        assert!(h.not_ready().is_none());
        assert!(!h.probe_due(), "no probe while healthy");
    }

    #[test]
    fn zero_never_turns_unready() {
        let h = UpstreamHealth::new(Duration::ZERO);
        h.unreachable("down");
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.not_ready().is_none());
        assert!(h.failing_for().is_some());
    }
}
