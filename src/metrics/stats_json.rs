//! The `/stats.json` document: the merged counters by name, and exact HDR percentiles of each
//! latency (µs) and of the message sizes (octets), for people and scripts that want figures
//! rather than a Prometheus scrape. Built on the admin thread from `Merged`, like the text
//! exposition.

use serde_json::{json, Map, Value};

use super::hub::{Hub, Merged};
use super::labels::{
    error_code_label, MessageResult, RefusalStage, RejectReason, Verb, ERROR_CODE_SLOTS,
    REPLY_CLASSES,
};
use super::snapshot::Distribution;

/// The `/stats.json` document: counters, and exact HDR percentiles (µs for latencies, octets
/// for sizes).
pub(crate) fn stats_json(hub: &Hub, m: &Merged) -> Value {
    let c = &m.total.counters;
    let t = &m.total;
    let mut latency = json!({
        "session": percentiles(&t.session),
        "transaction": percentiles(&t.transaction),
        "data_phase": percentiles(&t.data_phase),
    });
    if m.upstream.is_some() {
        latency["upstream_connect"] = percentiles(&t.upstream_connect);
        latency["upstream_end_of_data"] = percentiles(&t.upstream_end_of_data);
    }
    if m.mailman.is_some() {
        latency["mailman_connect"] = percentiles(&t.mailman_connect);
        latency["mailman_end_of_data"] = percentiles(&t.mailman_end_of_data);
    }
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "io_driver": hub.driver,
        "shards": hub.shards(),
        "draining": hub.draining(),
        "uptime_seconds": hub.started.elapsed().as_secs_f64(),
        "connections": {
            "accepted": c.connections_accepted,
            "active": m.active_by_shard.iter().sum::<u64>(),
            "accepted_by_shard": m.accepted_by_shard,
            "active_by_shard": m.active_by_shard,
            "rejected": named(RejectReason::ALL.map(|r| r.name().to_string()), &c.connections_rejected),
        },
        "commands": named(Verb::ALL.map(|v| v.name().to_string()), &c.commands),
        "replies": named(REPLY_CLASSES.map(String::from), &c.replies),
        "error_replies": named((0..ERROR_CODE_SLOTS).map(error_code_label), &c.error_replies),
        "messages": named(MessageResult::ALL.map(|r| r.name().to_string()), &c.messages),
        "message_bytes": c.message_bytes,
        "recipients": { "accepted": c.recipients_accepted, "rejected": c.recipients_rejected },
        "received_bytes": c.received_bytes,
        "refusals": RefusalStage::ALL.iter().map(|s| (
            s.name().to_string(),
            named(["4xx", "5xx"].map(String::from), &c.refusals[*s as usize]),
        )).collect::<serde_json::Map<_, _>>(),
        "log_lines_dropped": crate::log::dropped_lines(),
        "latency_us": latency,
        "message_size_bytes": percentiles(&t.message_size),
        "buffer_pool_by_shard": m.pool_by_shard.iter().map(|p| json!({
            "buffers": p.buffers,
            "buffer_size": p.buffer_size,
            "in_use": p.in_use,
            "exhausted": p.exhausted,
        })).collect::<Vec<_>>(),
    })
}

/// count, min, mean, p50, p90, p99, p99.9 and max of a distribution.
fn percentiles(d: &Distribution) -> Value {
    let h = d.histogram();
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    json!({
        "count": h.len(),
        "min": h.min(),
        "mean": (h.mean() * 10.0).round() / 10.0,
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p99_9": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

fn named<const N: usize>(names: impl IntoIterator<Item = String>, values: &[u64; N]) -> Value {
    let map: Map<String, Value> = names
        .into_iter()
        .zip(values)
        .map(|(k, &v)| (k, Value::from(v)))
        .collect();
    Value::Object(map)
}
