//! The sink: accepts and discards every message, counting sessions, messages, recipients and
//! bytes (like Postfix's `smtp-sink -c`). Each shard stores its counts into counters of its
//! own (its own cache line: plain stores, no contention) as it counts, and the summary adds
//! the shards up, so it is exact even when a drain timeout abandons shards mid-session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Handler;
use crate::proto::{Reply, Session};

/// One shard's published counts, alone on their cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Counts {
    sessions: AtomicU64,
    messages: AtomicU64,
    recipients: AtomicU64,
    bytes: AtomicU64,
}

/// Totals over all shards.
#[derive(Debug, Default)]
pub struct SinkTotals {
    shards: Mutex<Vec<Arc<Counts>>>,
}

impl SinkTotals {
    /// The one-line summary printed on exit.
    pub fn summary(&self) -> String {
        let mut sum = [0u64; 4];
        for c in self.shards.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            sum[0] += c.sessions.load(Ordering::Relaxed);
            sum[1] += c.messages.load(Ordering::Relaxed);
            sum[2] += c.recipients.load(Ordering::Relaxed);
            sum[3] += c.bytes.load(Ordering::Relaxed);
        }
        format!(
            "sink: sessions={} messages={} recipients={} bytes={}",
            sum[0], sum[1], sum[2], sum[3]
        )
    }
}

/// One shard's sink.
#[derive(Debug)]
pub struct Sink {
    counts: Arc<Counts>,
    sessions: u64,
    messages: u64,
    recipients: u64,
    bytes: u64,
}

impl Sink {
    /// A sink that counts into `totals`.
    pub fn new(totals: Arc<SinkTotals>) -> Self {
        let counts = Arc::new(Counts::default());
        totals
            .shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(counts.clone());
        Self {
            counts,
            sessions: 0,
            messages: 0,
            recipients: 0,
            bytes: 0,
        }
    }
}

impl Handler for Sink {
    fn collects_message(&self) -> bool {
        false
    }

    fn connect(&mut self, _session: &Session) -> Option<Reply> {
        self.sessions += 1;
        self.counts.sessions.store(self.sessions, Ordering::Relaxed);
        None
    }

    fn process_message(&mut self, session: &Session, _message: &[u8]) -> Option<Reply> {
        let env = session.envelope();
        self.messages += 1;
        self.recipients += env.rcpt_tos.len() as u64;
        self.bytes += env.data_size;
        let c = &self.counts;
        c.messages.store(self.messages, Ordering::Relaxed);
        c.recipients.store(self.recipients, Ordering::Relaxed);
        c.bytes.store(self.bytes, Ordering::Relaxed);
        None
    }
}
