//! A relaying service's upstream pool counters, as the shards publish them and the
//! `ringrelay_upstream_*` metrics show them: pool-wide counts, and per upstream (labelled
//! `upstream="host:port"`) the connections opened and the attempts that failed.

use std::collections::BTreeMap;

/// Counters of a service's upstream connection pool (cumulative since the shard started).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Connections handed out for a transaction.
    pub checkouts: u64,
    /// New connections opened (greeted, secured, authenticated).
    pub connects: u64,
    /// Checkouts served by an idle pooled connection.
    pub reuses: u64,
    /// Connection attempts that failed (each upstream tried counts).
    pub connect_failures: u64,
    /// Checkouts refused because the pool was full.
    pub exhausted: u64,
    /// Connections open now, idle or checked out.
    pub open: u64,
    /// Per configured upstream (`host:port`): connections opened, attempts that failed.
    pub by_upstream: BTreeMap<String, UpstreamCounts>,
}

/// One upstream's share of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamCounts {
    /// Connections opened.
    pub connects: u64,
    /// Attempts that failed.
    pub connect_failures: u64,
}

impl UpstreamStats {
    /// Adds another shard's counters.
    pub fn add(&mut self, o: &UpstreamStats) {
        self.checkouts += o.checkouts;
        self.connects += o.connects;
        self.reuses += o.reuses;
        self.connect_failures += o.connect_failures;
        self.exhausted += o.exhausted;
        self.open += o.open;
        for (name, c) in &o.by_upstream {
            let e = self.by_upstream.entry(name.clone()).or_default();
            e.connects += c.connects;
            e.connect_failures += c.connect_failures;
        }
    }
}
