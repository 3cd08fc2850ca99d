//! The sink: accepts and discards every message, counting sessions, messages, recipients and
//! bytes (like Postfix's `smtp-sink -c`). Counts are shard-local and published once, at shard
//! shutdown, into shared totals; nothing is shared on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Handler;
use crate::proto::{Reply, Session};

/// Totals over all shards, filled in as shards stop.
#[derive(Debug, Default)]
pub struct SinkTotals {
    sessions: AtomicU64,
    messages: AtomicU64,
    recipients: AtomicU64,
    bytes: AtomicU64,
}

impl SinkTotals {
    /// The one-line summary printed on exit.
    pub fn summary(&self) -> String {
        format!(
            "sink: sessions={} messages={} recipients={} bytes={}",
            self.sessions.load(Ordering::Relaxed),
            self.messages.load(Ordering::Relaxed),
            self.recipients.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// One shard's sink.
#[derive(Debug)]
pub struct Sink {
    totals: Arc<SinkTotals>,
    sessions: u64,
    messages: u64,
    recipients: u64,
    bytes: u64,
}

impl Sink {
    /// A sink that publishes into `totals` when its shard stops.
    pub fn new(totals: Arc<SinkTotals>) -> Self {
        Self {
            totals,
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
        None
    }

    fn process_message(&mut self, session: &Session, _message: &[u8]) -> Option<Reply> {
        let env = session.envelope();
        self.messages += 1;
        self.recipients += env.rcpt_tos.len() as u64;
        self.bytes += env.data_size;
        None
    }

    fn shutdown(&mut self) {
        let t = &self.totals;
        t.sessions.fetch_add(self.sessions, Ordering::Relaxed);
        t.messages.fetch_add(self.messages, Ordering::Relaxed);
        t.recipients.fetch_add(self.recipients, Ordering::Relaxed);
        t.bytes.fetch_add(self.bytes, Ordering::Relaxed);
        self.sessions = 0;
        self.messages = 0;
        self.recipients = 0;
        self.bytes = 0;
    }
}
