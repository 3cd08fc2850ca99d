//! The operator's log: `tracing` events, formatted as text or JSON lines on stderr (where
//! journald and container runtimes collect them).
//!
//! Contract: no shard ever waits for the log. An event is formatted on the thread that
//! records it (a line's worth of work) and handed to a writer thread through a bounded
//! queue (`tracing-appender`'s non-blocking writer); when the queue is full the line is
//! dropped and counted (`dropped_lines`, exported as `ringrelay_log_lines_dropped_total`),
//! never delaying mail. `RUST_LOG`, when set, wins over `--log-level`.
//!
//! Targets, for filtering (`RUST_LOG=ringrelay::transaction=info,warn`):
//! - `ringrelay::transaction`: one line per mail transaction (info);
//! - `ringrelay::connection`: connects and closes (debug), TLS and AUTH (info), timeouts and
//!   the error budget (info);
//! - `ringrelay::upstream`: connect and TLS failures, incidents, retirements (warn / debug).
//! - `ringrelay::transcript`: every session's transcript as Python's `smtpd -d` prints it
//!   (trace; `LogConfig::transcript` writes these lines bare, whatever the level).

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Target of the per-transaction lines.
pub const TRANSACTION: &str = "ringrelay::transaction";
/// Target of connection-level lines.
pub const CONNECTION: &str = "ringrelay::connection";
/// Target of upstream events.
pub const UPSTREAM: &str = "ringrelay::upstream";
/// Target of session transcripts (trace level; see `crate::server` for the lines).
pub const TRANSCRIPT: &str = "ringrelay::transcript";

/// Lines the writer queue holds before it drops, by default.
pub const QUEUE_LINES: usize = 16_384;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `TIME LEVEL target: message key=value ...`
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`).
    Json,
}

/// What to log, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A level (`error` .. `trace`, or `off`) or a full filter (`info,ringrelay::upstream=debug`).
    pub level: String,
    /// Text or JSON lines.
    pub format: LogFormat,
    /// Lines the writer queue holds; beyond, lines are dropped and counted.
    pub queue_lines: usize,
    /// Write every session's transcript (the `ringrelay::transcript` target) as bare lines,
    /// without time, level or target, as Python's `smtpd -d` does (`smtpd -d`).
    pub transcript: bool,
    /// `sink` and `debug` also write the line per transaction (`proxy` always does).
    pub transactions: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
            queue_lines: QUEUE_LINES,
            transcript: false,
            transactions: false,
        }
    }
}

/// A logging set-up failure.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The level or filter does not parse.
    #[error("--log-level {0:?}: {1}")]
    Filter(String, String),
    /// A subscriber was already installed in this process.
    #[error("logging is already set up")]
    AlreadySet,
}

/// Keeps the writer thread; dropping it flushes what is queued.
pub struct LogGuard {
    _guard: WorkerGuard,
}

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped because the writer queue was full (since start).
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// `text` with every control character replaced by `?`: what a client said (a HELO name,
/// an AUTH user) never forges a line of the text log.
pub fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// The filter: `RUST_LOG` when set, else `config.level`.
fn filter(config: &LogConfig) -> Result<EnvFilter, LogError> {
    if let Ok(env) = std::env::var("RUST_LOG") {
        if !env.trim().is_empty() {
            return EnvFilter::try_new(&env)
                .map_err(|e| LogError::Filter(format!("RUST_LOG={env}"), e.to_string()));
        }
    }
    EnvFilter::try_new(&config.level)
        .map_err(|e| LogError::Filter(config.level.clone(), e.to_string()))
}

/// Whether session transcripts are asked for (`LogConfig::transcript`, or a filter naming
/// their target): checked before any transcript work, since `tracing::enabled!` cannot rule
/// them out cheaply under the per-layer filters.
static TRANSCRIPT_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True when transcripts may be written (see `TRANSCRIPT_ON`).
pub fn transcript_on() -> bool {
    TRANSCRIPT_ON.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether transaction lines pass the filter (on unless `init` found that the level leaves
/// them out; a library user's own subscriber gets them all): a relay skips building the
/// record of each transaction when they do not.
static TRANSACTIONS_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// True when transaction lines may be written (see `TRANSACTIONS_ON`).
pub fn transactions_on() -> bool {
    TRANSACTIONS_ON.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether `filter` lets transaction lines through. Asked of the filter alone, where the
/// answer is exact (under `init`'s per-layer filters `enabled!` says yes whenever any layer
/// might).
fn transactions_pass(filter: EnvFilter) -> bool {
    let probe = tracing::Dispatch::new(tracing_subscriber::registry().with(filter));
    tracing::dispatcher::with_default(
        &probe,
        || tracing::enabled!(target: TRANSACTION, tracing::Level::INFO),
    )
}

/// Installs the process's log subscriber. Call once, before the shards start.
pub fn init(config: &LogConfig) -> Result<LogGuard, LogError> {
    TRANSACTIONS_ON.store(
        transactions_pass(filter(config)?),
        std::sync::atomic::Ordering::Relaxed,
    );
    let filter = filter(config)?;
    let named = std::env::var("RUST_LOG")
        .unwrap_or_default()
        .contains(TRANSCRIPT)
        || config.level.contains(TRANSCRIPT);
    TRANSCRIPT_ON.store(
        config.transcript || named,
        std::sync::atomic::Ordering::Relaxed,
    );
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(config.queue_lines.max(1))
        .lossy(true)
        .thread_name("ringrelay-log")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let transcript = config.transcript;
    let main = fmt::layer().with_writer(writer.clone()).with_ansi(false);
    let main = match config.format {
        LogFormat::Text => main.boxed(),
        LogFormat::Json => main.json().flatten_event(true).boxed(),
    };
    // With the bare transcript on, its lines are that layer's alone (not written twice).
    let main = main.with_filter(filter.and(filter_fn(move |m| {
        !(transcript && m.target() == TRANSCRIPT)
    })));
    let bare = transcript.then(|| {
        fmt::layer()
            .with_writer(writer)
            .with_ansi(false)
            .without_time()
            .with_level(false)
            .with_target(false)
            .with_filter(filter_fn(|m| m.target() == TRANSCRIPT))
    });
    tracing_subscriber::registry()
        .with(main)
        .with(bare)
        .try_init()
        .map_err(|_| LogError::AlreadySet)?;
    Ok(LogGuard { _guard: guard })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_lines_pass_exactly_when_the_filter_says() {
        let pass = |f: &str| transactions_pass(EnvFilter::try_new(f).unwrap());
        assert!(pass("info"));
        assert!(pass("debug"));
        assert!(pass("warn,ringrelay::transaction=info"));
        assert!(!pass("warn"));
        assert!(!pass("info,ringrelay::transaction=warn"));
        assert!(!pass("off"));
    }
}
