//! The results: a text summary for people, JSON for scripts, and the progress line.

use std::io::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::args::Args;
use crate::stats::{Stage, Stats};
use crate::svg::human;
use crate::verify::Verdict;

/// Everything the reports need.
pub struct Outcome<'a> {
    pub args: &'a Args,
    pub run_id: &'a str,
    pub threads: usize,
    pub stats: &'a Stats,
    pub elapsed: Duration,
    pub max_backlog: Option<usize>,
    pub verdict: Option<&'a Verdict>,
    pub fatal: Option<String>,
    pub started_unix: f64,
}

impl Outcome<'_> {
    /// Acknowledged messages per second.
    pub fn rate(&self) -> f64 {
        self.stats.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// One line naming the workload.
    pub fn workload(&self) -> String {
        let a = self.args;
        let mode = match a.rate {
            Some(r) => format!("open loop at {r} msg/s, up to {} connections", a.sessions),
            None => format!("closed loop, {} sessions", a.sessions),
        };
        let per_conn = match a.per_connection {
            0 => "connections reused".to_string(),
            1 => "a new connection per message".to_string(),
            k => format!("{k} messages per connection"),
        };
        format!(
            "{} {}, {mode}, {per_conn}, size {}, {} rcpt, {}{}{}{}",
            if a.lmtp { "LMTP" } else { "SMTP" },
            a.target,
            a.size.describe(),
            a.rcpts,
            if a.no_pipelining {
                "no pipelining"
            } else {
                "pipelining if offered"
            },
            if a.bdat { ", BDAT" } else { ", DATA" },
            if a.starttls { ", STARTTLS" } else { "" },
            format_args!(
                ", {} thread{}",
                self.threads,
                if self.threads == 1 { "" } else { "s" }
            ),
        )
    }

    /// The run's verdict: every message acknowledged (at least one), none failed, nothing
    /// fatal, and the recording verified when asked. The exit status follows it.
    pub fn ok(&self) -> bool {
        let s = self.stats;
        s.failed == 0 && s.acked > 0 && self.fatal.is_none() && self.verdict.is_none_or(|v| v.ok)
    }

    /// The verdict line `-q` prints: the counts, the rate and OK or FAILED.
    pub fn verdict_line(&self) -> String {
        let s = self.stats;
        format!(
            "ringload: {} acknowledged, {} failed in {:.2} s ({:.0} msg/s): {}",
            s.acked,
            s.failed,
            self.elapsed.as_secs_f64(),
            self.rate(),
            if self.ok() { "OK" } else { "FAILED" }
        )
    }

    /// The lines `-q` prints on stderr: each error with its count, what stopped the run, and
    /// the verification when it failed.
    pub fn problem_lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .stats
            .errors
            .iter()
            .map(|(k, v)| format!("ringload: error: {v} x {k}"))
            .collect();
        if let Some(f) = &self.fatal {
            out.push(format!("ringload: stopped: {f}"));
        }
        if let Some(v) = self.verdict.filter(|v| !v.ok) {
            out.push(format!(
                "ringload: verify FAILED: {} acknowledged, {} delivered, {} missing, {} \
                 duplicated, {} unexpected",
                v.acknowledged, v.delivered, v.missing, v.duplicated, v.unexpected
            ));
        }
        out
    }

    /// The text summary.
    pub fn text(&self) -> String {
        let s = self.stats;
        let secs = self.elapsed.as_secs_f64();
        let mut out = String::new();
        out += &format!("ringload: {}\n", self.workload());
        out += &format!(
            "  {} acknowledged, {} failed in {secs:.2} s: {:.0} msg/s, {:.1} MiB/s; {} connections\n",
            s.acked,
            s.failed,
            self.rate(),
            s.bytes as f64 / secs.max(1e-9) / 1048576.0,
            s.connections,
        );
        if let Some(b) = self.max_backlog {
            out += &format!("  open loop: at most {b} messages waited for a free session\n");
        }
        out += &format!(
            "  {:<12}{:>9}{:>11}{:>11}{:>11}{:>11}{:>11}\n",
            "phase", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for st in Stage::ALL {
            let h = s.of(st);
            if h.is_empty() {
                continue;
            }
            out += &format!(
                "  {:<12}{:>9}{:>11}{:>11}{:>11}{:>11}{:>11}\n",
                st.name(),
                h.len(),
                human(h.value_at_quantile(0.5)),
                human(h.value_at_quantile(0.9)),
                human(h.value_at_quantile(0.99)),
                human(h.value_at_quantile(0.999)),
                human(h.max()),
            );
        }
        if s.errors.is_empty() {
            out += "  errors: none\n";
        } else {
            out += "  errors:\n";
            for (k, v) in &s.errors {
                out += &format!("    {v:>8}  {k}\n");
            }
        }
        if let Some(f) = &self.fatal {
            out += &format!("  stopped: {f}\n");
        }
        if let Some(v) = self.verdict {
            out += &format!(
                "  verify: {} acknowledged, {} delivered, {} missing, {} duplicated, {} unexpected: {}\n",
                v.acknowledged,
                v.delivered,
                v.missing,
                v.duplicated,
                v.unexpected,
                if v.ok { "OK" } else { "FAILED" }
            );
            if !v.missing_examples.is_empty() {
                out += &format!("    missing: {}\n", v.missing_examples.join(" "));
            }
        }
        out
    }

    /// The JSON document.
    pub fn json(&self) -> Value {
        let a = self.args;
        let s = self.stats;
        let mut latency = serde_json::Map::new();
        for st in Stage::ALL {
            let h = s.of(st);
            if !h.is_empty() {
                latency.insert(st.name().into(), summary(h));
            }
        }
        json!({
            "tool": "ringload",
            "version": env!("CARGO_PKG_VERSION"),
            "run_id": self.run_id,
            "started_unix": self.started_unix,
            "workload": self.workload(),
            "config": {
                "target": a.target.to_string(),
                "mode": if a.rate.is_some() { "open" } else { "closed" },
                "sessions": a.sessions,
                "rate": a.rate,
                "messages": a.message_limit(),
                "duration_s": a.duration,
                "per_connection": a.per_connection,
                "size": a.size.describe(),
                "rcpts": a.rcpts,
                "pipelining": !a.no_pipelining,
                "bdat": a.bdat,
                "starttls": a.starttls,
                "lmtp": a.lmtp,
                "threads": self.threads,
            },
            "elapsed_s": self.elapsed.as_secs_f64(),
            "acknowledged": s.acked,
            "failed": s.failed,
            "bytes": s.bytes,
            "connections": s.connections,
            "msgs_per_s": self.rate(),
            "mib_per_s": s.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1048576.0,
            "max_backlog": self.max_backlog,
            "errors": s.errors,
            "fatal": self.fatal,
            "latency_us": latency,
            "verify": self.verdict,
        })
    }
}

fn summary(h: &Histogram<u64>) -> Value {
    let q = |p: f64| h.value_at_quantile(p);
    json!({
        "count": h.len(),
        "min": h.min(),
        "mean": h.mean(),
        "p50": q(0.5),
        "p90": q(0.9),
        "p99": q(0.99),
        "p99_9": q(0.999),
        "p99_99": q(0.9999),
        "max": h.max(),
    })
}

/// The live progress line on stderr (only called when stderr is a terminal).
pub struct Progress {
    last_acked: u64,
    last_t: f64,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            last_acked: 0,
            last_t: 0.0,
        }
    }

    /// Redraws the line.
    pub fn draw(&mut self, t: f64, acked: u64, errors: u64, open: u64) {
        let rate = (acked - self.last_acked) as f64 / (t - self.last_t).max(1e-9);
        self.last_acked = acked;
        self.last_t = t;
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r\x1b[K{t:7.1} s  {acked:>10} acknowledged  {rate:>9.0} msg/s  {errors:>6} errors  {open:>6} open"
        );
        let _ = e.flush();
    }

    /// Clears the line.
    pub fn clear(&self) {
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[K");
        let _ = e.flush();
    }
}
