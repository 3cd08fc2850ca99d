//! Metrics: shard-local counters and HDR histograms, merged on the admin thread, served as
//! Prometheus text (`/metrics`), exact percentiles (`/stats.json`) and health endpoints.
//!
//! Owns: the bounded label sets (`labels`), what a shard records and how records add up
//! (`snapshot`), the per-shard publication slots (`hub`), the exposition formats
//! (`exposition` for Prometheus, `stats_json`) and the admin HTTP listener (`admin`). What gets recorded when is decided by
//! the server layer, which sees every read, event and reply.
//!
//! Must never: put a shared atomic or a lock on a shard's hot path. Recording is a `RefCell`
//! borrow on the shard's own thread; the only lock a shard takes is its slot's, once per
//! publication (every `publish_interval`, or when a scrape asks for fresh figures).

mod admin;
mod exposition;
mod hub;
pub mod labels;
pub mod snapshot;
mod stats_json;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use admin::AdminListener;
pub use hub::Merged;
pub(crate) use hub::{Hub, ShardRecorder};
pub use upstream::{UpstreamCounts, UpstreamStats};

/// The default admin listener of the `ringrelay` binary.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9465";

/// Metrics settings (`ServerConfig::metrics`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where to serve `/metrics`, `/healthz`, `/readyz` and `/stats.json` (every address
    /// serves the same); empty records only (read the figures with `Server::metrics`).
    pub listen: Vec<SocketAddr>,
    /// When binding `listen` fails, log it and run without the listener instead of failing
    /// the start (the binary does this for its default address only).
    pub listen_optional: bool,
    /// How often each shard publishes what it recorded when nobody asks (a scrape asks).
    pub publish_interval: Duration,
    /// Export jemalloc's allocated/resident bytes; only meaningful when jemalloc is the
    /// global allocator (as in the `ringrelay` binary).
    pub jemalloc: bool,
    /// A condition besides the shards' that `/readyz` reports (a relay's upstream health).
    pub readiness: ReadinessCheck,
    /// The document served at `/faults` (`GET`, and `PUT` to replace it): the fault rules.
    pub faults: AdminDoc,
}

/// A JSON document the admin listener serves and lets a `PUT` replace.
pub trait AdminDocument: Send + Sync + std::fmt::Debug {
    /// The current document.
    fn get(&self) -> String;
    /// Replaces it with `body`; `Ok` says what changed, `Err` why nothing did.
    fn put(&self, body: &[u8]) -> Result<String, String>;
}

/// An optional `AdminDocument`, compared by identity.
#[derive(Clone, Debug, Default)]
pub struct AdminDoc(pub Option<Arc<dyn AdminDocument>>);

impl PartialEq for AdminDoc {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for AdminDoc {}

/// Something that can make `/readyz` say "not ready", with the reason for its body.
pub trait Readiness: Send + Sync + std::fmt::Debug {
    /// `Some(why)` while not ready.
    fn not_ready(&self) -> Option<String>;
}

/// An optional `Readiness`, compared by identity.
#[derive(Clone, Debug, Default)]
pub struct ReadinessCheck(pub Option<Arc<dyn Readiness>>);

impl ReadinessCheck {
    /// Why not ready, if the check says so.
    pub fn not_ready(&self) -> Option<String> {
        self.0.as_ref()?.not_ready()
    }
}

impl PartialEq for ReadinessCheck {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for ReadinessCheck {}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            listen_optional: false,
            publish_interval: Duration::from_secs(1),
            jemalloc: false,
            readiness: ReadinessCheck::default(),
            faults: AdminDoc::default(),
        }
    }
}

/// A handle on a server's metrics, usable from any thread.
#[derive(Clone, Debug)]
pub struct Metrics(pub(crate) Arc<Hub>);

impl Metrics {
    /// Asks every running shard to publish and waits up to `wait` for them.
    pub fn refresh(&self, wait: Duration) {
        self.0.refresh(wait);
    }

    /// The sum of what the shards have published so far.
    pub fn merged(&self) -> Merged {
        self.0.merged()
    }

    /// The Prometheus text exposition of what the shards have published so far.
    pub fn prometheus_text(&self) -> String {
        exposition::prometheus_text(&self.0, &self.0.merged())
    }

    /// The `/stats.json` document of what the shards have published so far.
    pub fn stats_json(&self) -> String {
        stats_json::stats_json(&self.0, &self.0.merged()).to_string()
    }

    /// What `/readyz` says: no drain started, every shard accepting, and the readiness
    /// check (`MetricsConfig::readiness`) content.
    pub fn ready(&self) -> bool {
        self.0.ready() && self.0.readiness.not_ready().is_none()
    }
}
