//! The command line of `ringload`, and the message-size distributions it accepts.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ringrelay::client::TlsFlagNames;

/// ringload's TLS flags, for error messages (no flag skips the checks: leaving out --tls-ca
/// does).
pub const TLS_FLAGS: TlsFlagNames = TlsFlagNames {
    ca_file: "--tls-ca",
    insecure: None,
    server_name: Some("--tls-server-name"),
};

/// ringload: an SMTP/LMTP load generator (closed or open loop) with per-phase latency
/// percentiles, JSON and SVG output, and delivery verification against a recording target.
#[derive(Debug, Parser)]
#[command(name = "ringload", version)]
pub struct Args {
    /// Server to load, host:port, or unix:PATH for a Unix-domain socket.
    #[arg(long, short = 't', default_value = "127.0.0.1:2525", value_parser = parse_target)]
    pub target: Target,
    /// Closed loop: concurrent sessions, each sending its next message as soon as the last is
    /// acknowledged. Open loop (--rate): the most connections open at once.
    #[arg(long, short = 's', default_value_t = 1)]
    pub sessions: usize,
    /// Open loop: start messages at this rate (messages/s) whatever the server does; latency is
    /// measured from each message's intended start (coordinated omission corrected).
    #[arg(long, short = 'r', value_name = "MSGS_PER_S")]
    pub rate: Option<f64>,
    /// Stop after this many messages (default 1000 when --duration is not given).
    #[arg(long, short = 'm')]
    pub messages: Option<u64>,
    /// Stop starting messages after this many seconds.
    #[arg(long, short = 'd', value_name = "SECS")]
    pub duration: Option<f64>,
    /// Messages per connection before QUIT and a new connection (0 = no limit).
    #[arg(long, short = 'k', default_value_t = 0, value_name = "K")]
    pub per_connection: u64,
    /// Whole message size (headers included): N, N-M (uniform), exp:MEAN[:MAX], or a weighted
    /// mix like 1k*90,64k*9,1m*1. Suffixes k, m and g are binary: KiB, MiB and GiB.
    #[arg(long, default_value = "1k", value_parser = SizeSpec::parse)]
    pub size: SizeSpec,
    /// Recipients per message.
    #[arg(long, default_value_t = 1)]
    pub rcpts: usize,
    /// Send one command at a time even when the server offers PIPELINING.
    #[arg(long)]
    pub no_pipelining: bool,
    /// Send the body with BDAT (the server must offer CHUNKING).
    #[arg(long)]
    pub bdat: bool,
    /// Largest BDAT chunk (k, m, g: binary multiples).
    #[arg(long, default_value = "64k", value_parser = parse_size)]
    pub bdat_chunk: u64,
    /// STARTTLS after EHLO (the server must offer it), then EHLO again.
    #[arg(long)]
    pub starttls: bool,
    /// PEM file of CA certificates: verify the server's certificate (default: accept any).
    /// A certificate in it is also trusted as presented, even a self-signed CA one.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// With --tls-ca: the name the server's certificate must hold (default: the target's
    /// address).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
    /// Speak LMTP (LHLO; one reply per accepted recipient after the data).
    #[arg(long)]
    pub lmtp: bool,
    /// Check delivery: read this recording (a file, or a directory of files: a ringrelay debug
    /// stdout capture, an mbox, smtp-sink dumps...) and require every acknowledged message, and
    /// no other of this run, to appear in it exactly once (by its X-Ringload-Id header).
    #[arg(long, value_name = "RECORD")]
    pub verify: Option<PathBuf>,
    /// Seconds to wait for the recording to catch up before declaring messages missing.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub verify_wait: f64,
    /// Sender address.
    #[arg(long, default_value = "ringload@example.com")]
    pub from: String,
    /// Recipient address; with --rcpts N > 1 a number is added to its local part.
    #[arg(long, default_value = "sink@example.com")]
    pub to: String,
    /// Name sent with EHLO/LHLO.
    #[arg(long, default_value = "ringload.example.com")]
    pub helo: String,
    /// Seconds to wait for any one reply (and for connect).
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub timeout: f64,
    /// Worker threads, each with its own event loop (default: the CPUs this process may use).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Abort the run after this many errors (0 = never).
    #[arg(long, default_value_t = 1000)]
    pub max_errors: u64,
    /// Seed for the message-size draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a percentile plot of every phase's latency here (SVG).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// No live progress line even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Print only the verdict (one line on stdout: counts, rate, OK or FAILED) and, on
    /// stderr, each error with its count and what stopped the run.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl Args {
    /// The message budget: `--messages`, or 1000 when neither a count nor a duration is given.
    pub fn message_limit(&self) -> Option<u64> {
        match (self.messages, self.duration) {
            (Some(m), _) => Some(m),
            (None, None) => Some(1000),
            (None, Some(_)) => None,
        }
    }

    /// `--duration` as a `Duration`.
    pub fn duration(&self) -> Option<Duration> {
        self.duration.map(Duration::from_secs_f64)
    }

    /// Checks combinations clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.sessions == 0 {
            return Err("--sessions must be at least 1".into());
        }
        if self.rcpts == 0 {
            return Err("--rcpts must be at least 1".into());
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err("--rate must be a positive number".into());
            }
        }
        if let Some(d) = self.duration {
            if !(d.is_finite() && d > 0.0) {
                return Err("--duration must be a positive number of seconds".into());
            }
        }
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err("--timeout must be a positive number of seconds".into());
        }
        if self.bdat_chunk == 0 {
            return Err("--bdat-chunk must be at least 1".into());
        }
        for a in [&self.from, &self.to, &self.helo] {
            if a.contains(['\r', '\n', '<', '>', ' ']) {
                return Err(format!("{a:?}: no spaces, angle brackets or line ends"));
            }
        }
        Ok(())
    }
}

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// TCP.
    Tcp(SocketAddr),
    /// A Unix-domain socket (`unix:PATH`).
    Unix(PathBuf),
}

impl Target {
    /// The name a server certificate is checked against unless --tls-server-name says
    /// otherwise: the address, or `localhost` for a socket.
    pub fn tls_name(&self) -> String {
        match self {
            Target::Tcp(a) => a.ip().to_string(),
            Target::Unix(_) => "localhost".into(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => a.fmt(f),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

fn parse_target(s: &str) -> Result<Target, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(format!("{s}: give the socket's path after unix:"));
        }
        return Ok(Target::Unix(PathBuf::from(path)));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("{s}: {e}"))?
        .next()
        .map(Target::Tcp)
        .ok_or_else(|| format!("{s}: no address"))
}

/// A size with an optional k/K/KiB, m/M/MiB or g/G/GiB suffix (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, mult) = if let Some(n) = lower.strip_suffix("kib").or(lower.strip_suffix('k')) {
        (n, 1u64 << 10)
    } else if let Some(n) = lower.strip_suffix("mib").or(lower.strip_suffix('m')) {
        (n, 1 << 20)
    } else if let Some(n) = lower.strip_suffix("gib").or(lower.strip_suffix('g')) {
        (n, 1 << 30)
    } else {
        (lower.as_str(), 1)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 512, 1k, 1.5m)"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{s:?} is not a size"));
    }
    Ok((v * mult as f64).round() as u64)
}

/// How message sizes are drawn.
#[derive(Clone, Debug, PartialEq)]
pub enum SizeSpec {
    /// Always this size.
    Fixed(u64),
    /// Uniform over [low, high].
    Uniform(u64, u64),
    /// Exponential with this mean, capped.
    Exp { mean: u64, max: u64 },
    /// A weighted mix of fixed sizes.
    Mix(Vec<(u64, u32)>),
}

impl SizeSpec {
    /// Parses `1k`, `1k-64k`, `exp:16k[:1m]` or `1k*90,1m*10`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("exp:") {
            let mut it = rest.split(':');
            let mean = parse_size(it.next().unwrap_or(""))?;
            let max = match it.next() {
                Some(m) => parse_size(m)?,
                None => mean.saturating_mul(20),
            };
            if mean == 0 || max < mean {
                return Err(format!("{s:?}: need 0 < MEAN <= MAX"));
            }
            return Ok(SizeSpec::Exp { mean, max });
        }
        if s.contains(',') || s.contains('*') {
            let mut mix = Vec::new();
            for part in s.split(',') {
                let (size, weight) = part.split_once('*').unwrap_or((part, "1"));
                let w: u32 = weight
                    .trim()
                    .parse()
                    .map_err(|_| format!("{part:?}: weight must be a whole number"))?;
                mix.push((parse_size(size)?, w));
            }
            if mix.iter().all(|&(_, w)| w == 0) {
                return Err(format!("{s:?}: all weights are zero"));
            }
            return Ok(SizeSpec::Mix(mix));
        }
        if let Some((a, b)) = s.split_once('-') {
            let (a, b) = (parse_size(a)?, parse_size(b)?);
            if a > b {
                return Err(format!("{s:?}: the range is empty"));
            }
            return Ok(SizeSpec::Uniform(a, b));
        }
        Ok(SizeSpec::Fixed(parse_size(s)?))
    }

    /// The largest size this can draw.
    pub fn max(&self) -> u64 {
        match self {
            SizeSpec::Fixed(n) => *n,
            SizeSpec::Uniform(_, b) => *b,
            SizeSpec::Exp { max, .. } => *max,
            SizeSpec::Mix(m) => m.iter().map(|&(s, _)| s).max().unwrap_or(0),
        }
    }

    /// Draws one size; `u` is uniform in [0, 1).
    pub fn draw(&self, u: f64) -> u64 {
        match self {
            SizeSpec::Fixed(n) => *n,
            SizeSpec::Uniform(a, b) => a + ((b - a + 1) as f64 * u) as u64,
            SizeSpec::Exp { mean, max } => {
                let v = -(1.0 - u).ln() * *mean as f64;
                (v as u64).min(*max)
            }
            SizeSpec::Mix(m) => {
                let total: u64 = m.iter().map(|&(_, w)| u64::from(w)).sum();
                let mut pick = (total as f64 * u) as u64;
                for &(size, w) in m {
                    if pick < u64::from(w) {
                        return size;
                    }
                    pick -= u64::from(w);
                }
                m.last().map_or(0, |&(s, _)| s)
            }
        }
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        match self {
            SizeSpec::Fixed(n) => format!("{n} B"),
            SizeSpec::Uniform(a, b) => format!("uniform {a}..={b} B"),
            SizeSpec::Exp { mean, max } => format!("exponential, mean {mean} B, max {max} B"),
            SizeSpec::Mix(m) => m
                .iter()
                .map(|(s, w)| format!("{s} B x{w}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("1.5M"), Ok(1_572_864));
        assert_eq!(parse_size("32MiB"), Ok(33_554_432));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("700"), Ok(700));
        assert!(parse_size("x").is_err());
        assert_eq!(SizeSpec::parse("1k"), Ok(SizeSpec::Fixed(1024)));
        assert_eq!(SizeSpec::parse("1k-2k"), Ok(SizeSpec::Uniform(1024, 2048)));
        assert_eq!(
            SizeSpec::parse("exp:1k:4k"),
            Ok(SizeSpec::Exp {
                mean: 1024,
                max: 4096
            })
        );
        let mix = SizeSpec::parse("1k*3,1m*1").unwrap();
        assert_eq!(mix.max(), 1 << 20);
        assert_eq!(mix.draw(0.0), 1024);
        assert_eq!(mix.draw(0.74), 1024);
        assert_eq!(mix.draw(0.76), 1 << 20);
        let u = SizeSpec::Uniform(10, 20);
        assert_eq!(u.draw(0.0), 10);
        assert_eq!(u.draw(0.9999), 20);
        assert!(SizeSpec::parse("2k-1k").is_err());
    }
}
