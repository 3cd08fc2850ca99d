//! `UpstreamPool`: a shard's connections to its upstream smarthosts.
//!
//! ```text
//!   connect (first upstream that answers, in order) --> EHLO --> [STARTTLS --> EHLO] --> [AUTH]
//!        |                                                                                |
//!        v                                                                                v
//!     failed: next upstream; none left: 4xx            checked out --(transaction)--> checked in
//!                                                           ^                              |
//!                                                           +------ idle (TTL, age, uses) -+
//!   discarded on any error, on 421, after an aborted DATA, or when too old / used too often
//! ```
//!
//! Bounded per shard (`max_connections` open at once, idle or busy); lives on one shard's
//! thread only, so it needs no locks. Connections are opened through its `Connector` (TCP,
//! unless a test hands in in-memory streams).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connector::{self, Connector, Dial};
use super::reply_map::{incident, unavailable};
use crate::client::core::Timeouts;
use crate::client::{ClientError, SmtpClient, TlsOptions};
use crate::metrics::snapshot::Distribution;
use crate::proto::Reply;
use crate::reload::{Cached, Swap};
use crate::rt;

/// STARTTLS toward the upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamTls {
    /// Plain SMTP.
    #[default]
    None,
    /// STARTTLS when offered.
    Opportunistic,
    /// STARTTLS or fail (4xx to the client).
    Required,
    /// TLS from the first byte (port 465).
    Implicit,
}

/// How to reach the upstreams and how long to keep connections.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// `host:port` of each upstream, tried in order.
    pub servers: Vec<String>,
    /// Our EHLO name toward them.
    pub helo: Option<String>,
    /// Reply timeouts.
    pub timeouts: Timeouts,
    /// TLS mode.
    pub tls: UpstreamTls,
    /// Certificate checks.
    pub tls_options: TlsOptions,
    /// AUTH user and password.
    pub auth: Option<(String, String)>,
    /// Most connections open at once per shard.
    pub max_connections: usize,
    /// Idle connections are closed after this long.
    pub idle_ttl: Duration,
    /// Messages per connection before it is retired.
    pub max_messages: u32,
    /// Age after which a connection is retired.
    pub max_age: Duration,
    /// Pass the client's address and HELO name with Postfix's XFORWARD when offered.
    pub xforward: bool,
    /// Pass them with Postfix's XCLIENT when offered (preferred over XFORWARD).
    pub xclient: bool,
    /// Whether any upstream is reachable, shared by every shard (and `/readyz`).
    pub health: std::sync::Arc<super::health::UpstreamHealth>,
    /// Speak LMTP (LHLO; one reply per recipient after the data): the `mailman` mode's
    /// connections to Mailman's LMTP runner.
    pub lmtp: bool,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            helo: None,
            timeouts: Timeouts::default(),
            tls: UpstreamTls::None,
            tls_options: TlsOptions {
                flag_names: crate::client::TlsFlagNames::UPSTREAM,
                ..TlsOptions::default()
            },
            auth: None,
            max_connections: 64,
            idle_ttl: Duration::from_secs(30),
            max_messages: 1000,
            max_age: Duration::from_secs(600),
            xforward: false,
            xclient: false,
            health: Default::default(),
            lmtp: false,
        }
    }
}

/// A connection checked out of the pool.
#[derive(Debug)]
pub struct Upstream {
    /// The client connection.
    pub client: SmtpClient,
    /// Which upstream (index into `servers`).
    pub server: usize,
    /// Its `host:port` as configured.
    pub name: String,
    created: Instant,
    messages: u32,
    /// True when this connection came from the idle list (it may have gone stale).
    pub reused: bool,
    /// Counts this connection in the pool's `open` for as long as it exists, however it ends
    /// (checked in, retired, discarded, or dropped with a future that was abandoned).
    _slot: OpenSlot,
}

/// One unit of a pool's open-connection count, given back on drop.
#[derive(Debug)]
struct OpenSlot(Rc<Cell<usize>>);

impl OpenSlot {
    fn take(open: &Rc<Cell<usize>>) -> Self {
        open.set(open.get() + 1);
        Self(open.clone())
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl Upstream {
    /// Counts a delivered message.
    pub fn delivered(&mut self) {
        self.messages += 1;
    }
}

struct Idle {
    up: Upstream,
    since: Instant,
}

/// Pool counters for metrics and tests (`open` is filled in by `UpstreamPool::stats`).
pub type PoolStats = crate::handler::UpstreamStats;

/// The per-shard pool.
pub struct UpstreamPool {
    /// The upstreams and limits (a reload may replace them; connections opened before it
    /// to an upstream no longer listed are not reused).
    config: Cached<UpstreamConfig>,
    connector: Rc<dyn Connector>,
    idle: Vec<Idle>,
    /// Connections open, idle or checked out (or being opened): one `OpenSlot` each.
    open: Rc<Cell<usize>>,
    /// What the newest upstream connection offered (None before the first).
    offers: Option<Offers>,
    /// The shard is stopping: no sweeping, connections checked in from now on are closed.
    closed: bool,
    /// Latencies since the metrics last took them (fixed-size histograms, µs).
    connect_us: Distribution,
    end_of_data_us: Distribution,
    /// Counters.
    pub stats: PoolStats,
    /// Per upstream: when a connect failure was last logged, and how many were not since.
    failure_notes: Vec<(Option<Instant>, u64)>,
}

/// The extensions of an upstream that a client's message depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offers {
    /// 8BITMIME (RFC 6152).
    pub eightbitmime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
}

impl UpstreamPool {
    /// An empty pool whose connections are TCP.
    pub fn new(config: Swap<UpstreamConfig>) -> Rc<RefCell<Self>> {
        Self::with_connector(config, Rc::new(Dial))
    }

    /// An empty pool whose connections `connector` opens.
    pub fn with_connector(
        config: Swap<UpstreamConfig>,
        connector: Rc<dyn Connector>,
    ) -> Rc<RefCell<Self>> {
        Rc::new(RefCell::new(Self {
            config: Cached::new(config),
            connector,
            idle: Vec::new(),
            open: Rc::new(Cell::new(0)),
            offers: None,
            closed: false,
            connect_us: Distribution::latency(),
            end_of_data_us: Distribution::latency(),
            stats: PoolStats::default(),
            failure_notes: Vec::new(),
        }))
    }

    /// Records how long the upstream took to answer an end of data.
    pub fn record_end_of_data(&mut self, took: Duration) {
        self.end_of_data_us.record(micros(took));
    }

    /// Adds the latencies recorded since the last call to `connect` and `end_of_data` (the
    /// snapshot's histograms of this pool's destination) and forgets them.
    pub fn drain_timings(&mut self, connect: &mut Distribution, end_of_data: &mut Distribution) {
        connect.merge(&self.connect_us);
        end_of_data.merge(&self.end_of_data_us);
        self.connect_us.reset();
        self.end_of_data_us.reset();
    }

    /// What the newest upstream connection offered (None before the first connection).
    pub fn offers(&self) -> Option<Offers> {
        self.offers
    }

    /// The configuration (the newest one a reload stored).
    pub fn config(&self) -> Arc<UpstreamConfig> {
        self.config.get()
    }

    /// True while an idle connection may still be handed out.
    fn fit(&self, idle: &Idle, now: Instant) -> bool {
        let c = self.config.get();
        c.servers.get(idle.up.server) == Some(&idle.up.name)
            && idle.up.client.is_connected()
            && now.duration_since(idle.since) < c.idle_ttl
            && now.duration_since(idle.up.created) < c.max_age
            && idle.up.messages < c.max_messages
    }

    /// Takes an idle connection that is still fit, dropping the unfit ones.
    fn take_idle(&mut self, now: Instant) -> Option<Upstream> {
        while let Some(idle) = self.idle.pop() {
            if idle.up.client.has_unsolicited_input() {
                // Something arrived while it sat idle (a stray line, a 421, a close): out of
                // step, so it is dropped without QUIT.
                drop(idle.up);
                continue;
            }
            if self.fit(&idle, now) {
                return Some(idle.up);
            }
            retire(idle.up);
        }
        None
    }

    /// Closes (QUIT) the idle connections past their idle TTL, age or message count, so an
    /// unused pool does not hold them until the upstream times them out.
    pub fn sweep(&mut self, now: Instant) {
        let (keep, unfit): (Vec<Idle>, Vec<Idle>) = std::mem::take(&mut self.idle)
            .into_iter()
            .partition(|i| self.fit(i, now));
        self.idle = keep;
        for idle in unfit {
            tracing::debug!(
                target: crate::log::UPSTREAM,
                upstream = %idle.up.name,
                "retiring an idle upstream connection (TTL, age or message count)"
            );
            retire(idle.up);
        }
    }

    /// Marks the pool closed (the shard is stopping).
    pub fn set_closed(&mut self) {
        self.closed = true;
    }

    /// True once the shard is stopping.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// How often `sweep` should run: a quarter of the idle TTL, within 100 ms to 10 s.
    pub fn sweep_interval(&self) -> Duration {
        (self.config.get().idle_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// The shard is stopping: every idle connection gets QUIT (each within `limit`, all at
    /// once); resolves when all have answered or given up.
    pub fn close_idle(&mut self, limit: Duration) -> impl std::future::Future<Output = ()> {
        let quits: Vec<Pin<Box<dyn Future<Output = ()>>>> = self
            .idle
            .drain(..)
            .filter(|i| i.up.client.is_connected())
            .map(|i| -> Pin<Box<dyn Future<Output = ()>>> {
                Box::pin(async move {
                    let _ = rt::timeout(limit, i.up.client.quit()).await;
                })
            })
            .collect();
        rt::join_all(quits)
    }

    /// A connection for one transaction: an idle one, or a new one (upstreams in order).
    pub async fn checkout(pool: &Rc<RefCell<Self>>, fresh: bool) -> Result<Upstream, Reply> {
        let (config, connector, slot) = {
            let mut p = pool.borrow_mut();
            p.stats.checkouts += 1;
            if !fresh {
                if let Some(mut up) = p.take_idle(Instant::now()) {
                    p.stats.reuses += 1;
                    up.reused = true;
                    return Ok(up);
                }
            }
            if p.open.get() >= p.config.get().max_connections {
                p.stats.exhausted += 1;
                return Err(unavailable(
                    "Upstream connection pool exhausted, try again later",
                ));
            }
            (p.config.get(), p.connector.clone(), OpenSlot::take(&p.open))
        };
        let mut last = String::from("no upstream configured");
        for (index, server) in config.servers.iter().enumerate() {
            let started = Instant::now();
            match connector::open(&*connector, &config, server).await {
                Ok(client) => {
                    if index > 0 {
                        tracing::info!(
                            target: crate::log::UPSTREAM,
                            upstream = %server,
                            "failover: connected to {server} (before it: {})",
                            one_line(&last)
                        );
                    }
                    config.health.reached();
                    let mut p = pool.borrow_mut();
                    p.stats.connects += 1;
                    p.stats
                        .by_upstream
                        .entry(server.clone())
                        .or_default()
                        .connects += 1;
                    p.connect_us.record(micros(started.elapsed()));
                    p.offers = Some(Offers {
                        eightbitmime: client.has_extn("8bitmime"),
                        smtputf8: client.has_extn("smtputf8"),
                    });
                    drop(p);
                    return Ok(Upstream {
                        client,
                        server: index,
                        name: server.clone(),
                        created: Instant::now(),
                        messages: 0,
                        reused: false,
                        _slot: slot,
                    });
                }
                Err(e) => {
                    let mut p = pool.borrow_mut();
                    p.stats.connect_failures += 1;
                    p.stats
                        .by_upstream
                        .entry(server.clone())
                        .or_default()
                        .connect_failures += 1;
                    last = match e {
                        // Its sentence names the server already.
                        ClientError::Tls(e) => e.to_string(),
                        e => format!("{server}: {e}"),
                    };
                    p.note_connect_failure(index, &last);
                }
            }
        }
        drop(slot);
        config.health.unreachable(&one_line(&last));
        Err(incident(&format!(
            "no upstream reachable; last: {}",
            one_line(&last)
        )))
    }

    /// Returns a connection after a clean transaction (or `reusable == false` to close it).
    pub fn checkin(&mut self, up: Upstream, reusable: bool) {
        let c = self.config.get();
        let now = Instant::now();
        if !reusable || up.client.has_unsolicited_input() {
            // Out of step (more than the replies it owed arrived): never reused.
            drop(up);
        } else if self.closed {
            retire(up);
        } else if up.client.is_connected()
            && up.messages < c.max_messages
            && now.duration_since(up.created) < c.max_age
        {
            self.idle.push(Idle { up, since: now });
        } else {
            retire(up);
        }
    }

    /// Forgets a connection that was dropped instead of checked in.
    pub fn discard(&mut self, up: Upstream) {
        drop(up);
    }

    /// The configured `host:port` of upstream `index`.
    fn server_name(&self, index: usize) -> String {
        self.config
            .get()
            .servers
            .get(index)
            .cloned()
            .unwrap_or_default()
    }

    /// Logs a failed connection attempt (warn): at most one line a second per upstream and
    /// shard, saying how many were left out, since an outage fails every checkout.
    fn note_connect_failure(&mut self, index: usize, what: &str) {
        if self.failure_notes.len() <= index {
            self.failure_notes.resize(index + 1, (None, 0));
        }
        let now = Instant::now();
        let (last, skipped) = &mut self.failure_notes[index];
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            *skipped += 1;
            return;
        }
        let more = std::mem::take(skipped);
        *last = Some(now);
        tracing::warn!(
            target: crate::log::UPSTREAM,
            upstream = %self.server_name(index),
            "cannot connect to upstream {}{}",
            one_line(what),
            if more > 0 { format!(" ({more} more failures not shown)") } else { String::new() }
        );
    }

    /// Connections open (idle or checked out).
    pub fn open(&self) -> usize {
        self.open.get()
    }

    /// The counters, with the connections open now.
    pub fn stats(&self) -> PoolStats {
        let mut stats = PoolStats {
            open: self.open.get() as u64,
            ..self.stats.clone()
        };
        // Every configured upstream has its series from the start.
        for server in &self.config.get().servers {
            stats.by_upstream.entry(server.clone()).or_default();
        }
        stats
    }
}

/// Closes a clean connection that is too old or used up with QUIT, in the background: RFC
/// 5321 §4.1.1.10 says a client MUST NOT close the channel before sending QUIT (an upstream
/// logs a dropped one as a lost connection). Connections in an unknown state (after an error,
/// a 421 or an abandoned DATA) are dropped instead, never QUIT.
fn retire(up: Upstream) {
    if !up.client.is_connected() {
        return;
    }
    rt::spawn_local(async move {
        let _ = rt::timeout(Duration::from_secs(10), up.client.quit()).await;
    });
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn one_line(s: &str) -> String {
    // Room for a TLS failure's sentence; an upstream's reply text is cut.
    s.replace(['\r', '\n'], " ").chars().take(400).collect()
}
