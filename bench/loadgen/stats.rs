//! What a worker thread measures: one HDR histogram per phase (microseconds), counts of
//! messages and errors, and the ids of acknowledged messages; merged once at the end. Live
//! progress reads only a few shared atomics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;

/// The phases timed, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// TCP connect.
    Connect,
    /// Connected to the 220 greeting.
    Banner,
    /// EHLO/LHLO (or HELO) to its reply.
    Ehlo,
    /// STARTTLS, the handshake and the second EHLO.
    StartTls,
    /// MAIL FROM written to its reply.
    Mail,
    /// Each RCPT TO written to its reply.
    Rcpt,
    /// DATA (or the first BDAT) written to the final reply.
    Data,
    /// MAIL written to the final reply: the SMTP transaction.
    Transaction,
    /// The message's start to its final reply, including a new connection when it needed one;
    /// in open loop the start is the intended send time (coordinated omission corrected).
    Message,
}

impl Stage {
    /// Every stage, in report order.
    pub const ALL: [Stage; 9] = [
        Stage::Connect,
        Stage::Banner,
        Stage::Ehlo,
        Stage::StartTls,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::Transaction,
        Stage::Message,
    ];

    /// The name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Banner => "banner",
            Stage::Ehlo => "ehlo",
            Stage::StartTls => "starttls",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Transaction => "transaction",
            Stage::Message => "message",
        }
    }
}

/// Highest latency recorded: one hour, in microseconds.
const MAX_MICROS: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// One thread's measurements.
pub struct Stats {
    pub hist: Vec<Histogram<u64>>,
    pub acked: u64,
    pub failed: u64,
    pub bytes: u64,
    pub connections: u64,
    pub errors: BTreeMap<String, u64>,
    /// Ticket numbers of acknowledged messages (for --verify).
    pub acked_ids: Vec<u64>,
    /// When the last message was acknowledged.
    pub last_ack: Option<Instant>,
    keep_ids: bool,
}

impl Stats {
    /// Empty; `keep_ids` records each acknowledged id.
    pub fn new(keep_ids: bool) -> Self {
        Self {
            hist: Stage::ALL.iter().map(|_| histogram()).collect(),
            acked: 0,
            failed: 0,
            bytes: 0,
            connections: 0,
            errors: BTreeMap::new(),
            acked_ids: Vec::new(),
            last_ack: None,
            keep_ids,
        }
    }

    /// Records a latency.
    pub fn record(&mut self, stage: Stage, micros: u64) {
        self.hist[stage as usize].saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// A message acknowledged.
    pub fn ack(&mut self, id: u64, bytes: u64, at: Instant) {
        self.acked += 1;
        self.bytes += bytes;
        self.last_ack = Some(at);
        if self.keep_ids {
            self.acked_ids.push(id);
        }
    }

    /// Counts an error by label.
    pub fn error(&mut self, label: String) {
        *self.errors.entry(label).or_insert(0) += 1;
    }

    /// Adds another thread's measurements.
    pub fn merge(&mut self, other: Stats) {
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            a.add(b).expect("same histogram bounds");
        }
        self.acked += other.acked;
        self.failed += other.failed;
        self.bytes += other.bytes;
        self.connections += other.connections;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_insert(0) += v;
        }
        self.acked_ids.extend(other.acked_ids);
        self.last_ack = self.last_ack.max(other.last_ack);
    }

    /// The histogram of a stage.
    pub fn of(&self, stage: Stage) -> &Histogram<u64> {
        &self.hist[stage as usize]
    }
}

/// Counters the progress line and the error budget read while the run goes on.
#[derive(Debug, Default)]
pub struct Live {
    pub acked: AtomicU64,
    pub errors: AtomicU64,
    pub open: AtomicU64,
}

impl Live {
    /// Adds one to a counter.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
