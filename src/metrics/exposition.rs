//! Turning a merged view into the Prometheus text the admin endpoint serves: metric families
//! built here, encoded by the `prometheus` crate's `TextEncoder` (`stats_json` builds the
//! `/stats.json` document from the same view).

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};

use super::hub::{Hub, Merged};
use super::labels::{
    error_code_label, MessageResult, RefusalStage, RejectReason, Verb, ERROR_CODE_SLOTS,
    REPLY_CLASSES,
};
use super::snapshot::Distribution;

/// Latency bucket bounds, µs (exported in seconds).
const LATENCY_BOUNDS_US: [u64; 23] = [
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
    300_000_000,
    600_000_000,
    1_800_000_000,
    3_600_000_000,
];

/// Message size bucket bounds, octets.
const SIZE_BOUNDS: [u64; 11] = [
    256, 1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216, 33_554_432,
    67_108_864,
];

/// The Prometheus text format's content type.
pub(super) const TEXT_CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name(k.to_string());
            l.set_value(v.to_string());
            l
        })
        .collect()
}

fn counter(pairs: &[(&str, &str)], value: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value as f64);
    let mut m = Metric::from_label(labels(pairs));
    m.set_counter(c);
    m
}

fn counter_f(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value);
    let mut m = Metric::from_label(labels(pairs));
    m.set_counter(c);
    m
}

/// Injected faults as `{stage, action}` samples; the pairs that never happened are left out
/// (14 stages × 7 actions would be mostly zeros), except one zero sample so the family exists.
fn fault_counters(c: &super::snapshot::Counters) -> Vec<Metric> {
    use crate::faults::{Action, Stage};
    let mut out = Vec::new();
    for (s, stage) in Stage::ALL.iter().enumerate() {
        for (a, action) in Action::NAMES.iter().enumerate() {
            let n = c.faults[s][a];
            if n > 0 {
                out.push(counter(&[("stage", stage.name()), ("action", action)], n));
            }
        }
    }
    if out.is_empty() {
        out.push(counter(&[("stage", "connect"), ("action", "delay")], 0));
    }
    out
}

fn gauge(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_label(labels(pairs));
    m.set_gauge(g);
    m
}

/// A histogram metric from a distribution; recorded units divided by `per_unit` give exported
/// ones (1e6 for µs to seconds; dividing keeps bounds like 0.0001 free of rounding noise).
fn histogram(d: &Distribution, bounds: &[u64], per_unit: f64) -> Metric {
    let mut h = Histogram::default();
    h.set_sample_count(d.count());
    h.set_sample_sum(d.sum() as f64 / per_unit);
    let buckets = d
        .cumulative(bounds)
        .into_iter()
        .zip(bounds)
        .map(|(n, &b)| {
            let mut bucket = Bucket::default();
            bucket.set_cumulative_count(n);
            bucket.set_upper_bound(b as f64 / per_unit);
            bucket
        })
        .collect();
    h.set_bucket(buckets);
    let mut m = Metric::default();
    m.set_histogram(h);
    m
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

/// jemalloc's allocated and resident bytes (refreshing its statistics epoch first).
fn jemalloc_stats() -> Option<(u64, u64)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    let allocated = stats::allocated::read().ok()?;
    let resident = stats::resident::read().ok()?;
    Some((allocated as u64, resident as u64))
}

/// One metric per shard, labelled with the shard's index.
fn per_shard(values: &[u64], f: fn(&[(&str, &str)], u64) -> Metric) -> Vec<Metric> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| f(&[("shard", &i.to_string())], v))
        .collect()
}

/// Every metric family, in a stable order.
pub(crate) fn families(hub: &Hub, m: &Merged) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE, HISTOGRAM};
    let c = &m.total.counters;
    let t = &m.total;
    let mut out = vec![
        family(
            "ringrelay_build_info",
            "Build information; the value is always 1.",
            GAUGE,
            vec![gauge(
                &[
                    ("version", env!("CARGO_PKG_VERSION")),
                    (
                        "profile",
                        if cfg!(debug_assertions) {
                            "debug"
                        } else {
                            "release"
                        },
                    ),
                ],
                1.0,
            )],
        ),
        family(
            "ringrelay_io_driver_info",
            "The event loop the shards run (uring or epoll); the value is always 1.",
            GAUGE,
            vec![gauge(&[("driver", &hub.driver)], 1.0)],
        ),
        family(
            "ringrelay_shards",
            "Number of shards (pinned event-loop threads).",
            GAUGE,
            vec![gauge(&[], hub.shards() as f64)],
        ),
        family(
            "ringrelay_draining",
            "1 once a graceful shutdown has started, else 0.",
            GAUGE,
            vec![gauge(&[], if hub.draining() { 1.0 } else { 0.0 })],
        ),
        family(
            "ringrelay_log_lines_dropped_total",
            "Log lines dropped because the log writer's queue was full (mail is never delayed).",
            COUNTER,
            vec![counter(&[], crate::log::dropped_lines())],
        ),
        family(
            "ringrelay_uptime_seconds",
            "Seconds since the server was built.",
            GAUGE,
            vec![gauge(&[], hub.started.elapsed().as_secs_f64())],
        ),
        family(
            "ringrelay_connections_accepted_total",
            "Connections admitted to an SMTP session, per shard.",
            COUNTER,
            per_shard(&m.accepted_by_shard, counter),
        ),
        family(
            "ringrelay_connections_active",
            "Open SMTP connections per shard (as of the shard's last publication).",
            GAUGE,
            per_shard(&m.active_by_shard, |l, v| gauge(l, v as f64)),
        ),
        family(
            "ringrelay_connections_rejected_total",
            "Connections turned away before any session, by reason (421 and closed; closed \
             without a word for the PROXY protocol reasons).",
            COUNTER,
            RejectReason::ALL
                .iter()
                .map(|r| counter(&[("reason", r.name())], c.connections_rejected[*r as usize]))
                .collect(),
        ),
        family(
            "ringrelay_commands_total",
            "SMTP command lines received, by verb (UNKNOWN for anything else).",
            COUNTER,
            Verb::ALL
                .iter()
                .map(|v| counter(&[("command", v.name())], c.commands[*v as usize]))
                .collect(),
        ),
        family(
            "ringrelay_replies_total",
            "SMTP replies sent, by class.",
            COUNTER,
            REPLY_CLASSES
                .iter()
                .zip(c.replies)
                .map(|(class, n)| counter(&[("class", class)], n))
                .collect(),
        ),
        family(
            "ringrelay_error_replies_total",
            "4xx and 5xx replies sent, by code (4xx/5xx for codes outside the tracked set).",
            COUNTER,
            (0..ERROR_CODE_SLOTS)
                .map(|i| counter(&[("code", &error_code_label(i))], c.error_replies[i]))
                .collect(),
        ),
        family(
            "ringrelay_messages_total",
            "Messages by the reply to their end of data: accepted (2xx), rejected (5xx, \
             including size and bare line ending refusals) or tempfail (4xx).",
            COUNTER,
            MessageResult::ALL
                .iter()
                .map(|r| counter(&[("result", r.name())], c.messages[*r as usize]))
                .collect(),
        ),
        family(
            "ringrelay_refusals_total",
            "4xx and 5xx replies by where they were given: helo, mail, rcpt, data (DATA or a \
             BDAT chunk), end_of_data (a message's verdict) or other; class 4xx or 5xx.",
            COUNTER,
            RefusalStage::ALL
                .iter()
                .flat_map(|s| {
                    ["4xx", "5xx"].iter().enumerate().map(move |(i, class)| {
                        counter(
                            &[("stage", s.name()), ("class", class)],
                            c.refusals[*s as usize][i],
                        )
                    })
                })
                .collect(),
        ),
        family(
            "ringrelay_faults_injected_total",
            "Faults injected by the fault rules (sink, debug), by stage and action; only the \
             pairs that happened.",
            COUNTER,
            fault_counters(c),
        ),
        family(
            "ringrelay_faults_delay_seconds_total",
            "Delay injected by the fault rules.",
            COUNTER,
            vec![counter_f(&[], c.fault_delay_us as f64 / 1e6)],
        ),
        family(
            "ringrelay_message_bytes_total",
            "Content octets of the messages received in full (handed to the handler).",
            COUNTER,
            vec![counter(&[], c.message_bytes)],
        ),
        family(
            "ringrelay_recipients_total",
            "RCPT commands by outcome (accepted = 2xx).",
            COUNTER,
            vec![
                counter(&[("result", "accepted")], c.recipients_accepted),
                counter(&[("result", "rejected")], c.recipients_rejected),
            ],
        ),
        family(
            "ringrelay_received_bytes_total",
            "Octets read from SMTP clients.",
            COUNTER,
            vec![counter(&[], c.received_bytes)],
        ),
        family(
            "ringrelay_message_size_bytes",
            "Content size of the messages received in full.",
            HISTOGRAM,
            vec![histogram(&t.message_size, &SIZE_BOUNDS, 1.0)],
        ),
        family(
            "ringrelay_session_duration_seconds",
            "Lifetime of SMTP connections, from accept to close.",
            HISTOGRAM,
            vec![histogram(&t.session, &LATENCY_BOUNDS_US, 1e6)],
        ),
        family(
            "ringrelay_transaction_duration_seconds",
            "From an accepted MAIL to the reply to the end of data.",
            HISTOGRAM,
            vec![histogram(&t.transaction, &LATENCY_BOUNDS_US, 1e6)],
        ),
        family(
            "ringrelay_data_phase_duration_seconds",
            "From the 354 to DATA (or the first BDAT) to the reply to the end of data.",
            HISTOGRAM,
            vec![histogram(&t.data_phase, &LATENCY_BOUNDS_US, 1e6)],
        ),
    ];
    if hub.jemalloc {
        if let Some((allocated, resident)) = jemalloc_stats() {
            out.push(family(
                "ringrelay_jemalloc_allocated_bytes",
                "Bytes allocated by the application (jemalloc stats.allocated).",
                GAUGE,
                vec![gauge(&[], allocated as f64)],
            ));
            out.push(family(
                "ringrelay_jemalloc_resident_bytes",
                "Bytes in physically resident data pages mapped by jemalloc (stats.resident).",
                GAUGE,
                vec![gauge(&[], resident as f64)],
            ));
        }
    }
    if !m.pool_by_shard.is_empty() {
        out.extend(pool_families(&m.pool_by_shard));
    }
    if let Some(up) = &m.upstream {
        // In `mailman` mode each family has one sample per destination.
        let split: Vec<(&[(&str, &str)], &super::UpstreamStats)> = match &m.mailman {
            Some(mm) => vec![
                (&[("destination", "upstream")], up),
                (&[("destination", "mailman")], mm),
            ],
            None => vec![(&[], up)],
        };
        let sample = |f: fn(&super::UpstreamStats) -> u64| -> Vec<Metric> {
            split.iter().map(|(l, u)| counter(l, f(u))).collect()
        };
        let counters: [(&str, &str, Vec<Metric>); 3] = [
            (
                "ringrelay_upstream_checkouts_total",
                "Upstream connections handed out for a transaction.",
                sample(|u| u.checkouts),
            ),
            (
                "ringrelay_upstream_reuses_total",
                "Checkouts served by an idle pooled upstream connection.",
                sample(|u| u.reuses),
            ),
            (
                "ringrelay_upstream_pool_exhausted_total",
                "Checkouts refused (451) because the shard's pool was full.",
                sample(|u| u.exhausted),
            ),
        ];
        for (name, help, samples) in counters {
            out.push(family(name, help, COUNTER, samples));
        }
        let per = |f: fn(&super::UpstreamCounts) -> u64| -> Vec<Metric> {
            let mut v: Vec<Metric> = split
                .iter()
                .flat_map(|(l, u)| {
                    u.by_upstream.iter().map(move |(name, c)| {
                        let mut pairs = l.to_vec();
                        pairs.push(("upstream", name));
                        counter(&pairs, f(c))
                    })
                })
                .collect();
            if v.is_empty() {
                v.push(counter(&[("upstream", "")], 0));
            }
            v
        };
        out.push(family(
            "ringrelay_upstream_connects_total",
            "Upstream connections opened (greeted, secured, authenticated), by upstream.",
            COUNTER,
            per(|c| c.connects),
        ));
        out.push(family(
            "ringrelay_upstream_connect_failures_total",
            "Upstream connection attempts that failed, by upstream (each one tried counts).",
            COUNTER,
            per(|c| c.connect_failures),
        ));
        out.push(family(
            "ringrelay_upstream_connections_open",
            "Upstream connections open, idle or checked out (as of the shards' last publication).",
            GAUGE,
            split.iter().map(|(l, u)| gauge(l, u.open as f64)).collect(),
        ));
        // In `mailman` mode, one histogram per destination too.
        let latency = |upstream: &Distribution, mailman: &Distribution| -> Vec<Metric> {
            let one = |d: &Distribution, pairs: &[(&str, &str)]| {
                let mut h = histogram(d, &LATENCY_BOUNDS_US, 1e6);
                h.set_label(labels(pairs));
                h
            };
            match &m.mailman {
                Some(_) => vec![
                    one(upstream, &[("destination", "upstream")]),
                    one(mailman, &[("destination", "mailman")]),
                ],
                None => vec![one(upstream, &[])],
            }
        };
        out.push(family(
            "ringrelay_upstream_connect_duration_seconds",
            "Opening an upstream connection: TCP, greeting, EHLO (LHLO), TLS and AUTH.",
            HISTOGRAM,
            latency(&t.upstream_connect, &t.mailman_connect),
        ));
        out.push(family(
            "ringrelay_upstream_end_of_data_duration_seconds",
            "From the end of data written upstream to the upstream's verdict.",
            HISTOGRAM,
            latency(&t.upstream_end_of_data, &t.mailman_end_of_data),
        ));
    }
    out
}

/// The Prometheus text exposition.
pub(crate) fn prometheus_text(hub: &Hub, m: &Merged) -> String {
    let mut buf = Vec::with_capacity(16 * 1024);
    // Every family built above has a name and at least one metric, so encoding cannot fail.
    let mut all = families(hub, m);
    // The standard process_* families: CPU seconds, resident and virtual memory, open and
    // maximum file descriptors, start time (read from /proc at each scrape).
    {
        use prometheus::core::Collector;
        all.extend(prometheus::process_collector::ProcessCollector::for_self().collect());
    }
    let _ = TextEncoder::new().encode(&all, &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// The io_uring shards' DATA buffer pools, per shard.
fn pool_families(pools: &[crate::engine::PoolStats]) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE};
    let each =
        |f: fn(&crate::engine::PoolStats) -> u64| -> Vec<u64> { pools.iter().map(f).collect() };
    vec![
        family(
            "ringrelay_buffer_pool_buffers",
            "Buffers in the shard's DATA pool (io_uring provided-buffer ring).",
            GAUGE,
            per_shard(&each(|p| p.buffers), |l, v| gauge(l, v as f64)),
        ),
        family(
            "ringrelay_buffer_pool_buffer_size_bytes",
            "Size of each DATA pool buffer.",
            GAUGE,
            per_shard(&each(|p| p.buffer_size), |l, v| gauge(l, v as f64)),
        ),
        family(
            "ringrelay_buffer_pool_in_use",
            "DATA pool buffers holding received bytes (as of the shard's last publication).",
            GAUGE,
            per_shard(&each(|p| p.in_use), |l, v| gauge(l, v as f64)),
        ),
        family(
            "ringrelay_buffer_pool_exhausted_total",
            "Receives that found the DATA pool empty (the connection waited; nothing was lost).",
            COUNTER,
            per_shard(&each(|p| p.exhausted), counter),
        ),
    ]
}
