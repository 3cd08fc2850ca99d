//! What one shard has recorded, and the merging of several into one: plain counters and HDR
//! histograms, no synchronisation. A shard fills a `Snapshot` with what happened since its
//! last publication; its slot adds those up; a scrape merges the slots.

use hdrhistogram::Histogram;

use super::labels::{
    error_code_slot, MessageResult, RefusalStage, RejectReason, Verb, ERROR_CODE_SLOTS,
    REPLY_CLASSES,
};

/// Latency histograms cover 1 µs to one hour (longer values are clamped to the top).
const LATENCY_MAX_US: u64 = 3_600_000_000;
/// Message size histograms cover 1 octet to 4 GiB.
const SIZE_MAX: u64 = 1 << 32;
/// Significant decimal digits kept: values are exact to 0.1%.
const SIGFIG: u8 = 3;

/// Plain event counts. Every field adds up across shards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections admitted to a session.
    pub connections_accepted: u64,
    /// Connections turned away, by `RejectReason`.
    pub connections_rejected: [u64; RejectReason::COUNT],
    /// Command lines by `Verb`.
    pub commands: [u64; Verb::COUNT],
    /// Replies by class (2xx, 3xx, 4xx, 5xx).
    pub replies: [u64; REPLY_CLASSES.len()],
    /// 4xx/5xx replies by code slot (see `labels::error_code_slot`).
    pub error_replies: [u64; ERROR_CODE_SLOTS],
    /// Messages by `MessageResult`.
    pub messages: [u64; MessageResult::COUNT],
    /// Content octets of the messages received in full (handed to the handler).
    pub message_bytes: u64,
    /// RCPT commands answered 2xx.
    pub recipients_accepted: u64,
    /// RCPT commands answered otherwise.
    pub recipients_rejected: u64,
    /// Octets read from clients.
    pub received_bytes: u64,
    /// 4xx (`[0]`) and 5xx (`[1]`) replies by `RefusalStage`.
    pub refusals: [[u64; 2]; RefusalStage::COUNT],
    /// Injected faults by stage and action (`crate::faults`: `Stage::ALL` × `Action::NAMES`).
    pub faults: [[u64; FAULT_ACTIONS]; FAULT_STAGES],
    /// Delay injected by faults, µs.
    pub fault_delay_us: u64,
}

/// Fault stages (`crate::faults::Stage::ALL`).
pub const FAULT_STAGES: usize = 14;
/// Fault actions (`crate::faults::Action::NAMES`).
pub const FAULT_ACTIONS: usize = 7;

impl Counters {
    /// Adds `other` to `self`.
    pub fn merge(&mut self, other: &Counters) {
        fn add<const N: usize>(a: &mut [u64; N], b: &[u64; N]) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.connections_accepted += other.connections_accepted;
        add(&mut self.connections_rejected, &other.connections_rejected);
        add(&mut self.commands, &other.commands);
        add(&mut self.replies, &other.replies);
        add(&mut self.error_replies, &other.error_replies);
        add(&mut self.messages, &other.messages);
        self.message_bytes += other.message_bytes;
        self.recipients_accepted += other.recipients_accepted;
        self.recipients_rejected += other.recipients_rejected;
        self.received_bytes += other.received_bytes;
        for (a, b) in self.refusals.iter_mut().zip(&other.refusals) {
            add(a, b);
        }
        for (a, b) in self.faults.iter_mut().zip(&other.faults) {
            add(a, b);
        }
        self.fault_delay_us += other.fault_delay_us;
    }

    /// Counts one reply by its code.
    pub fn reply(&mut self, code: u16) {
        if let Some(i) = (code / 100).checked_sub(2).map(usize::from) {
            if let Some(c) = self.replies.get_mut(i) {
                *c += 1;
            }
        }
        if let Some(slot) = error_code_slot(code) {
            self.error_replies[slot] += 1;
        }
    }
}

/// A distribution: an HDR histogram plus the exact sum of what was recorded (Prometheus wants
/// `_sum`, which a histogram only approximates).
#[derive(Clone, Debug)]
pub struct Distribution {
    hist: Histogram<u64>,
    sum: u64,
}

impl Distribution {
    /// For durations in microseconds.
    pub fn latency() -> Self {
        Self::with_max(LATENCY_MAX_US)
    }

    /// For sizes in octets.
    pub fn size() -> Self {
        Self::with_max(SIZE_MAX)
    }

    fn with_max(max: u64) -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, max, SIGFIG).expect("valid histogram bounds"),
            sum: 0,
        }
    }

    /// Records one value (values above the range count as its top).
    pub fn record(&mut self, value: u64) {
        self.hist.saturating_record(value);
        self.sum = self.sum.saturating_add(value);
    }

    /// Adds `other` (built with the same bounds) to `self`.
    pub fn merge(&mut self, other: &Distribution) {
        // Same bounds on both sides, so the addition cannot run out of range.
        let _ = self.hist.add(&other.hist);
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// Forgets everything recorded.
    pub fn reset(&mut self) {
        self.hist.reset();
        self.sum = 0;
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Exact sum of the values recorded.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The histogram.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.hist
    }

    /// Cumulative counts of values `<= bound` for each bound (ascending), as Prometheus
    /// buckets want. A value counts under a bound when its HDR bucket starts at or below it,
    /// so a bound is exact to the histogram's 0.1% resolution.
    pub fn cumulative(&self, bounds: &[u64]) -> Vec<u64> {
        let mut counts = vec![0u64; bounds.len()];
        for v in self.hist.iter_recorded() {
            let low = self.hist.lowest_equivalent(v.value_iterated_to());
            let n = v.count_since_last_iteration();
            if let Some(i) = bounds.iter().position(|&b| low <= b) {
                counts[i] += n;
            }
        }
        let mut total = 0;
        for c in &mut counts {
            total += *c;
            *c = total;
        }
        counts
    }
}

/// Everything a shard records, or the sum over shards.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Event counts.
    pub counters: Counters,
    /// Connection lifetimes, µs.
    pub session: Distribution,
    /// MAIL to the reply to the end of data, µs (transactions that got a verdict).
    pub transaction: Distribution,
    /// 354 (or the first BDAT) to the reply to the end of data, µs.
    pub data_phase: Distribution,
    /// Content octets of each message received in full.
    pub message_size: Distribution,
    /// Relaying services: opening an upstream connection (TCP, greeting, EHLO, TLS, AUTH), µs.
    pub upstream_connect: Distribution,
    /// Relaying services: the end of data written upstream to the upstream's verdict, µs.
    pub upstream_end_of_data: Distribution,
    /// `mailman`: opening a connection to Mailman's LMTP runner, µs.
    pub mailman_connect: Distribution,
    /// `mailman`: the end of data written to Mailman to its verdict, µs.
    pub mailman_end_of_data: Distribution,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            counters: Counters::default(),
            session: Distribution::latency(),
            transaction: Distribution::latency(),
            data_phase: Distribution::latency(),
            message_size: Distribution::size(),
            upstream_connect: Distribution::latency(),
            upstream_end_of_data: Distribution::latency(),
            mailman_connect: Distribution::latency(),
            mailman_end_of_data: Distribution::latency(),
        }
    }
}

impl Snapshot {
    /// Adds `other` to `self`.
    pub fn merge(&mut self, other: &Snapshot) {
        self.counters.merge(&other.counters);
        self.session.merge(&other.session);
        self.transaction.merge(&other.transaction);
        self.data_phase.merge(&other.data_phase);
        self.message_size.merge(&other.message_size);
        self.upstream_connect.merge(&other.upstream_connect);
        self.upstream_end_of_data.merge(&other.upstream_end_of_data);
        self.mailman_connect.merge(&other.mailman_connect);
        self.mailman_end_of_data.merge(&other.mailman_end_of_data);
    }

    /// Forgets everything (a shard does this after publishing).
    pub fn reset(&mut self) {
        self.counters = Counters::default();
        self.session.reset();
        self.transaction.reset();
        self.data_phase.reset();
        self.message_size.reset();
        self.upstream_connect.reset();
        self.upstream_end_of_data.reset();
        self.mailman_connect.reset();
        self.mailman_end_of_data.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(messages: u64, latencies: &[u64]) -> Snapshot {
        let mut s = Snapshot::default();
        s.counters.connections_accepted = 1;
        s.counters.messages[0] = messages;
        s.counters.commands[Verb::Mail as usize] = messages;
        s.counters.reply(250);
        s.counters.reply(552);
        s.counters.reply(599);
        for &l in latencies {
            s.transaction.record(l);
        }
        s
    }

    #[test]
    fn merging_adds_counters_and_histograms() {
        let a = shard(3, &[100, 200, 300]);
        let b = shard(5, &[1_000, 2_000]);
        let mut total = Snapshot::default();
        total.merge(&a);
        total.merge(&b);
        let c = &total.counters;
        assert_eq!(c.connections_accepted, 2);
        assert_eq!(c.messages, [8, 0, 0]);
        assert_eq!(c.commands[Verb::Mail as usize], 8);
        assert_eq!(c.replies, [2, 0, 0, 4]);
        assert_eq!(c.error_replies[error_code_slot(552).unwrap()], 2);
        assert_eq!(c.error_replies[ERROR_CODE_SLOTS - 1], 2);
        assert_eq!(total.transaction.count(), 5);
        assert_eq!(total.transaction.sum(), 3_600);
        let h = total.transaction.histogram();
        assert_eq!(h.max(), 2_000);
        assert_eq!(h.min(), 100);
        assert_eq!(h.value_at_quantile(0.5), 300);
    }

    #[test]
    fn merge_order_does_not_matter() {
        let parts = [shard(1, &[7]), shard(2, &[70, 700]), shard(4, &[])];
        let mut fwd = Snapshot::default();
        let mut rev = Snapshot::default();
        for p in &parts {
            fwd.merge(p);
        }
        for p in parts.iter().rev() {
            rev.merge(p);
        }
        assert_eq!(fwd.counters, rev.counters);
        assert_eq!(fwd.transaction.histogram(), rev.transaction.histogram());
    }

    #[test]
    fn publish_as_delta_then_reset_keeps_totals() {
        // A shard publishes twice; its slot accumulates both deltas.
        let mut local = shard(2, &[10, 20]);
        let mut slot = Snapshot::default();
        slot.merge(&local);
        local.reset();
        assert_eq!(local.counters, Counters::default());
        assert_eq!(local.transaction.count(), 0);
        local.counters.messages[0] += 1;
        local.transaction.record(30);
        slot.merge(&local);
        assert_eq!(slot.counters.messages[0], 3);
        assert_eq!(slot.transaction.count(), 3);
        assert_eq!(slot.transaction.sum(), 60);
    }

    #[test]
    fn cumulative_buckets() {
        let mut d = Distribution::latency();
        for v in [1, 500, 501, 1_000, 2_500, 10_000_000_000] {
            d.record(v);
        }
        // The last value is clamped into the top of the range, above every bound.
        assert_eq!(d.cumulative(&[500, 1_000, 5_000]), vec![2, 4, 5]);
        assert_eq!(d.count(), 6);
    }
}
