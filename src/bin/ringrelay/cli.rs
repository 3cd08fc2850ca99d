//! The command line and the TOML config file, merged into a `ServerConfig` and a mode.
//!
//! Every long flag of `sink` and `debug` is also a key of the config file, spelled with `_`
//! for `-` (`max_connections = 1000`, `listen = ["127.0.0.1:2525"]`); a flag given on the
//! command line wins over the file. `smtpd` mirrors `python -m smtpd`'s options.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::cli_smtpd::system_hostname;
use crate::cli_smtpd::SmtpdArgs;
use crate::cli_values::{resolve_all, ByteSize, Listen, MetricsListen};
use ringrelay::metrics::{MetricsConfig, DEFAULT_LISTEN};
use ringrelay::proto::BareLineEndings;
use ringrelay::server::{IoMode, ServerConfig};

/// ringrelay: a high-throughput SMTP sink, debugging server and relay.
#[derive(Debug, Parser)]
#[command(name = "ringrelay", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub mode: Mode,
}

/// The modes.
#[derive(Clone, Debug, Subcommand)]
pub enum Mode {
    /// Accept and discard every message, counting them (like Postfix's smtp-sink).
    Sink(crate::cli_target::SinkArgs),
    /// Print every message to stdout (Python's DebuggingServer).
    Debug(crate::cli_target::SinkArgs),
    /// Drop-in for `python -m smtpd`: [-n] [-c CLASS] [-s SIZE] [-u] [-d] [localaddr [remoteaddr]].
    Smtpd(SmtpdArgs),
    /// Relay every transaction to upstream smarthosts (Python smtpd's PureProxy).
    Proxy(Box<ProxyArgs>),
    /// Relay list mail to Mailman 3 over LMTP, the rest upstream (smtpd's MailmanProxy).
    Mailman(Box<crate::cli_mailman::MailmanArgs>),
    /// Send one message (smtplib as a command): exit 0 when a recipient accepted it.
    Send(crate::send_cmd::SendArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout: `ringrelay man | man -l -`.
    Man {
        /// A mode's own page (ringrelay-MODE), with all its options.
        mode: Option<String>,
    },
}

/// Options of `proxy`: the serving options plus the relay's.
#[derive(Clone, Debug, Args)]
pub struct ProxyArgs {
    /// Serving options.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Relay options.
    #[command(flatten)]
    pub relay: crate::cli_proxy::RelayArgs,
}

/// Options of the serving modes.
#[derive(Clone, Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// Address to listen on, HOST:PORT; a name listens on every address it resolves to
    /// (localhost:2525: 127.0.0.1 and ::1); unix:PATH listens on a Unix-domain socket (mode
    /// 0666, removed at exit; its clients count as 127.0.0.1, shown as "local"); repeat for
    /// several (default 127.0.0.1:2525).
    #[arg(long = "listen", value_name = "HOST:PORT|unix:PATH")]
    #[serde(default)]
    pub listen: Vec<Listen>,
    /// Share the listen (and metrics) addresses with a ringrelay already listening there, for
    /// a planned handover such as a rolling restart; without it such an address refuses the
    /// start.
    #[arg(long)]
    #[serde(default)]
    pub reuse_port: bool,
    /// Our host name in the greeting and EHLO reply (default: the system's).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Largest message in octets, advertised as SIZE; k, M, G are binary multiples (1M =
    /// 1048576); 0 = no limit (default 32M).
    #[arg(long, value_name = "BYTES")]
    pub size: Option<ByteSize>,
    /// Offer SMTPUTF8 (RFC 6531).
    #[arg(long)]
    #[serde(default)]
    pub smtputf8: bool,
    /// Do not offer PIPELINING.
    #[arg(long)]
    #[serde(default)]
    pub no_pipelining: bool,
    /// Do not offer 8BITMIME.
    #[arg(long = "no-8bitmime")]
    #[serde(default, rename = "no_8bitmime")]
    pub no_8bitmime: bool,
    /// Do not offer CHUNKING (BDAT).
    #[arg(long)]
    #[serde(default)]
    pub no_chunking: bool,
    /// Do not offer ENHANCEDSTATUSCODES.
    #[arg(long)]
    #[serde(default)]
    pub no_enhancedstatuscodes: bool,
    /// Offer STARTTLS (RFC 3207) with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Most recipients per message (default 100; 452 beyond; 0 = no limit).
    #[arg(long, value_name = "N")]
    pub max_recipients: Option<usize>,
    /// Idle timeout between commands in seconds (default 300).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Timeout inside DATA/BDAT in seconds (default 600).
    #[arg(long, value_name = "SECS")]
    pub data_timeout: Option<u64>,
    /// Octets per second a message body must keep up while more than half of
    /// --max-connections is in use; k, M, G are binary multiples (default 500; 0 = no minimum).
    #[arg(long, value_name = "BYTES")]
    pub min_data_rate: Option<ByteSize>,
    /// Protocol errors before 421 and close (default 20; 0 = no limit).
    #[arg(long, value_name = "N")]
    pub max_errors: Option<u32>,
    /// Junk commands (NOOP, RSET, VRFY, EXPN, HELP, and refusals that only follow an earlier
    /// one) before each further one counts as an error (default 100; 0 = no limit).
    #[arg(long, value_name = "N")]
    pub max_junk_commands: Option<u32>,
    /// Bare CR or LF: reject (default) or normalize to CRLF.
    #[arg(long, value_enum, value_name = "POLICY")]
    pub bare_line_endings: Option<BareLineEndings>,
    /// Number of shards (default: the CPUs this process may use).
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Event loop: auto (io_uring, else epoll), uring or epoll.
    #[arg(long, value_enum)]
    pub io: Option<IoMode>,
    /// io_uring: buffers in each shard's DATA pool (default: 4 MiB worth).
    #[arg(long, value_name = "N")]
    pub uring_buffers: Option<u16>,
    /// io_uring: size of each DATA pool buffer in octets, k and M binary (default 64k where
    /// buffers are consumed incrementally, kernel 6.12; else 16k).
    #[arg(long, value_name = "BYTES")]
    pub uring_buffer_size: Option<ByteSize>,
    /// io_uring: do not ask for DEFER_TASKRUN (as on a kernel without it).
    #[arg(long)]
    #[serde(default)]
    pub uring_no_defer_taskrun: bool,
    /// io_uring: one pool buffer per receive (as on a kernel without incremental buffers).
    #[arg(long)]
    #[serde(default)]
    pub uring_whole_buffers: bool,
    /// Open connections allowed in the whole process (0 = unlimited); beyond it 421 4.3.2.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Open connections allowed from one client address (0 = unlimited; default 0, and 50 in
    /// `proxy` for clients outside --relay-networks); beyond it 421 4.7.0.
    #[arg(long, value_name = "N")]
    pub max_connections_per_client: Option<usize>,
    /// Seconds a shutdown waits for transactions in flight (default 30).
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<u64>,
    /// Fault rules (TOML: `seed`, `address_triggers`, `[[rule]]` tables; sink and debug only;
    /// also `GET`/`PUT /faults` on the admin listener; SIGHUP re-reads it).
    #[arg(long, value_name = "FILE")]
    pub faults: Option<PathBuf>,
    /// Seed of the fault rules' random draws (overrides the file's; shard n uses seed + n).
    #[arg(long, value_name = "N")]
    pub fault_seed: Option<u64>,
    /// KumoMTA-style recipient triggers: a local part with `tempfail` gets 451, `permfail`
    /// 550, one starting `450-`/`550-` that code.
    #[arg(long)]
    #[serde(default)]
    pub address_triggers: bool,
    /// smtp-sink -f: reject these commands (CONNECT, HELO, EHLO, MAIL, RCPT, DATA, ".", BDAT,
    /// RSET, NOOP, QUIT, VRFY, AUTH, STARTTLS) with 500 5.3.0.
    #[arg(short = 'f', long, value_name = "CMD,...", value_delimiter = ',')]
    #[serde(default)]
    pub hard_reject: Vec<String>,
    /// smtp-sink -r: reject these commands with 450 4.3.0.
    #[arg(short = 'r', long, value_name = "CMD,...", value_delimiter = ',')]
    #[serde(default)]
    pub soft_reject: Vec<String>,
    /// smtp-sink -q: hang up without a reply after these commands.
    #[arg(short = 'q', long, value_name = "CMD,...", value_delimiter = ',')]
    #[serde(default)]
    pub disconnect_after: Vec<String>,
    /// smtp-sink -Q: 421 and hang up after these commands.
    #[arg(short = 'Q', long, value_name = "CMD,...", value_delimiter = ',')]
    #[serde(default)]
    pub close_after: Vec<String>,
    /// smtp-sink -w: wait this many seconds before answering DATA.
    #[arg(short = 'w', long, value_name = "SECS")]
    pub data_delay: Option<f64>,
    /// smtp-sink -W CMD:DELAY[:ODDS]: wait before answering CMD (a random multiple of DELAY
    /// with ODDS, 1-99); repeatable.
    #[arg(short = 'W', long, value_name = "CMD:SECS[:ODDS]")]
    #[serde(default)]
    pub delay: Vec<String>,
    /// smtp-sink -A: after DATA's 354, wait this many seconds, then 550 and stop reading.
    #[arg(short = 'A', long, value_name = "SECS")]
    pub abort_data: Option<f64>,
    /// smtp-sink -M: stop (drain and exit) after this many messages.
    #[arg(short = 'M', long, value_name = "N")]
    pub max_messages: Option<u64>,
    /// smtp-sink -n: stop after this many sessions.
    #[arg(short = 'n', long, value_name = "N")]
    pub max_sessions: Option<u64>,
    /// Seconds to keep accepting after SIGTERM/SIGINT while /readyz already answers 503, so
    /// a load balancer moves new clients away before the drain starts (default 0).
    #[arg(long, value_name = "SECS")]
    pub drain_delay: Option<u64>,
    /// Admin HTTP listener (HOST:PORT; a name serves on all its addresses) for /metrics,
    /// /stats.json, /healthz and /readyz, or `none` to record and serve no metrics (default
    /// 127.0.0.1:9465; if that is taken, ringrelay runs without).
    #[arg(long, value_name = "HOST:PORT|none")]
    pub metrics_listen: Option<MetricsListen>,
    /// Require the PROXY protocol (v1 or v2, HAProxy's send-proxy / send-proxy-v2) on every
    /// SMTP listener: the client's address comes from the header.
    #[arg(long)]
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Who may send the PROXY header (CIDR, comma-separated; default 127.0.0.0/8 and ::1);
    /// connections from elsewhere are closed.
    #[arg(
        long,
        value_name = "CIDR",
        value_delimiter = ',',
        requires = "proxy_protocol"
    )]
    #[serde(default)]
    pub proxy_trusted: Vec<String>,
    /// Seconds the PROXY header may take to arrive (default 5; at least 3).
    #[arg(long, value_name = "SECS", requires = "proxy_protocol")]
    pub proxy_timeout: Option<u64>,
    /// Log level (error, warn, info, debug, trace, off) or a filter such as
    /// `warn,ringrelay::transaction=info`; RUST_LOG wins when set (default info).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log lines as text or JSON, on stderr (default text).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<ringrelay::log::LogFormat>,
    /// sink and debug: also log a line per transaction, as proxy always does (target
    /// ringrelay::transaction).
    #[arg(long)]
    #[serde(default)]
    pub log_transactions: bool,
    /// Log lines queued for the writer before further ones are dropped (and counted in
    /// ringrelay_log_lines_dropped_total) rather than delay mail (default 16384).
    #[arg(long, value_name = "LINES")]
    pub log_queue: Option<usize>,
    /// Relay options from the config file's `[proxy]` table (file only).
    #[arg(skip)]
    #[serde(default)]
    pub proxy: Option<crate::cli_proxy::RelayArgs>,
    /// `mailman` options from the config file's `[mailman]` table (file only).
    #[arg(skip)]
    #[serde(default)]
    pub mailman: Option<crate::cli_mailman::MailmanOpts>,
    /// `sink` and `debug` target options from the config file's `[sink]` table (file only).
    #[arg(skip)]
    #[serde(default)]
    pub sink: Option<crate::cli_target::TargetArgs>,
    /// TOML config file with the same keys as these flags.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

/// Metrics settings for a `--metrics-listen` value (absent = the best-effort default).
pub(crate) fn metrics_config(
    listen: Option<MetricsListen>,
) -> Result<Option<MetricsConfig>, CliError> {
    let (addrs, optional) = match listen {
        Some(MetricsListen::Off) => return Ok(None),
        Some(MetricsListen::On(addr)) => (addr.resolve()?, false),
        None => (
            vec![DEFAULT_LISTEN.parse().expect("valid default address")],
            true,
        ),
    };
    Ok(Some(MetricsConfig {
        listen: addrs,
        listen_optional: optional,
        // main.rs installs jemalloc as the global allocator.
        jemalloc: true,
        ..MetricsConfig::default()
    }))
}

/// A mode ready to run.
#[derive(Debug, Clone)]
pub enum Kind {
    /// `sink`.
    Sink,
    /// `debug`.
    Debug,
    /// `proxy`.
    Proxy(Box<ringrelay::relay::RelayConfig>),
}

pub use crate::cli_error::CliError;

/// Turns the parsed command line into a kind and a server configuration.
pub fn resolve(mode: Mode) -> Result<(Kind, ServerConfig), CliError> {
    match mode {
        // Load tests connect from one address: no per-client limit by default.
        Mode::Sink(ref a) => crate::cli_target::resolve(Kind::Sink, &mode, a.serve.clone()),
        Mode::Debug(ref a) => crate::cli_target::resolve(Kind::Debug, &mode, a.serve.clone()),
        Mode::Proxy(a) => {
            let (relay, cfg, _) = crate::cli_proxy::proxy_config(*a)?;
            Ok((Kind::Proxy(Box::new(relay)), cfg))
        }
        Mode::Mailman(a) => {
            let (relay, cfg, file) = crate::cli_proxy::proxy_config(a.proxy)?;
            let relay = crate::cli_mailman::with_mailman(relay, a.mailman, file, None)?;
            Ok((Kind::Proxy(Box::new(relay)), cfg))
        }
        Mode::Smtpd(a) => crate::cli_smtpd::smtpd_config(a),
        Mode::Send(_) | Mode::Completions { .. } | Mode::Man { .. } => {
            Err(CliError::Invalid("not a server mode".into()))
        }
    }
}

/// `--max-connections-per-client` in `proxy` when neither the flag nor the file sets it.
pub(crate) const PROXY_PER_CLIENT: usize = 50;

/// The config file's tables of one mode's options (absent: no file, or no such table).
#[derive(Debug, Default)]
pub(crate) struct FileTables {
    /// `[proxy]`.
    pub proxy: Option<crate::cli_proxy::RelayArgs>,
    /// `[mailman]`.
    pub mailman: Option<crate::cli_mailman::MailmanOpts>,
}

/// The server configuration, and the file's mode tables;
/// `per_client_default` is the mode's `--max-connections-per-client`.
pub(crate) fn serve_config(
    cli: ServeArgs,
    per_client_default: usize,
) -> Result<(ServerConfig, FileTables), CliError> {
    let file = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| CliError::Read {
                path: path.clone(),
                source,
            })?;
            toml::from_str::<ServeArgs>(&text).map_err(|source| CliError::Parse {
                path: path.clone(),
                source,
            })?
        }
        None => ServeArgs::default(),
    };
    let mut cfg = ServerConfig {
        faults: crate::cli_faults::fault_config(&cli, &file)?,
        ..ServerConfig::default()
    };
    let listen = if cli.listen.is_empty() {
        file.listen
    } else {
        cli.listen
    };
    if !listen.is_empty() {
        (cfg.listen, cfg.listen_unix) = resolve_all(&listen)?;
    }
    cfg.reuse_port = cli.reuse_port || file.reuse_port;
    let s = &mut cfg.session;
    s.hostname = cli
        .hostname
        .or(file.hostname)
        .unwrap_or_else(system_hostname);
    if let Some(v) = cli.size.or(file.size) {
        s.data_size_limit = v.0;
    }
    s.extensions.smtputf8 = cli.smtputf8 || file.smtputf8;
    s.extensions.pipelining = !(cli.no_pipelining || file.no_pipelining);
    s.extensions.eightbitmime = !(cli.no_8bitmime || file.no_8bitmime);
    s.extensions.chunking = !(cli.no_chunking || file.no_chunking);
    s.extensions.enhanced_status_codes =
        !(cli.no_enhancedstatuscodes || file.no_enhancedstatuscodes);
    if let Some(v) = cli.max_recipients.or(file.max_recipients) {
        s.max_recipients = v;
    }
    if let Some(v) = cli.timeout.or(file.timeout) {
        s.idle_timeout = Duration::from_secs(v);
    }
    if let Some(v) = cli.data_timeout.or(file.data_timeout) {
        s.data_timeout = Duration::from_secs(v);
    }
    if let Some(v) = cli.min_data_rate.or(file.min_data_rate) {
        s.min_data_rate = v.0;
    }
    if let Some(v) = cli.max_errors.or(file.max_errors) {
        s.max_errors = v;
    }
    if let Some(v) = cli.max_junk_commands.or(file.max_junk_commands) {
        s.max_junk_commands = v;
    }
    if let Some(v) = cli.bare_line_endings.or(file.bare_line_endings) {
        s.bare_line_endings = v;
    }
    cfg.shards = cli.shards.or(file.shards);
    if let Some(v) = cli.io.or(file.io) {
        cfg.io = v;
    }
    if let Some(v) = cli.uring_buffers.or(file.uring_buffers) {
        cfg.engine.buffers = v.max(1);
    }
    if let Some(v) = cli.uring_buffer_size.or(file.uring_buffer_size) {
        cfg.engine.buffer_size = v.to_u32("--uring-buffer-size")?;
    }
    cfg.engine.defer_taskrun = !(cli.uring_no_defer_taskrun || file.uring_no_defer_taskrun);
    cfg.engine.incremental_buffers = !(cli.uring_whole_buffers || file.uring_whole_buffers);
    if let Some(v) = cli.max_connections.or(file.max_connections) {
        cfg.max_connections = v;
    }
    cfg.max_connections_per_client = cli
        .max_connections_per_client
        .or(file.max_connections_per_client)
        .unwrap_or(per_client_default);
    if let Some(v) = cli.drain_timeout.or(file.drain_timeout) {
        cfg.drain_timeout = Duration::from_secs(v);
    }
    if let Some(v) = cli.drain_delay.or(file.drain_delay) {
        cfg.drain_delay = Duration::from_secs(v);
    }
    cfg.metrics = metrics_config(cli.metrics_listen.or(file.metrics_listen))?;
    if cli.proxy_protocol || file.proxy_protocol {
        let mut proxy = ringrelay::server::ProxyProtocol::default();
        let trusted = if cli.proxy_trusted.is_empty() {
            file.proxy_trusted
        } else {
            cli.proxy_trusted
        };
        if !trusted.is_empty() {
            proxy.trusted = trusted
                .iter()
                .map(|n| {
                    n.parse()
                        .map_err(|e| CliError::Invalid(format!("--proxy-trusted: {e}")))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(secs) = cli.proxy_timeout.or(file.proxy_timeout) {
            proxy.timeout = Duration::from_secs(secs.max(3));
        }
        cfg.proxy_protocol = Some(proxy);
    }
    if let Some(v) = cli.log_level.or(file.log_level) {
        cfg.log.level = v;
    }
    if let Some(v) = cli.log_format.or(file.log_format) {
        cfg.log.format = v;
    }
    cfg.log.transactions = cli.log_transactions || file.log_transactions;
    if let Some(v) = cli.log_queue.or(file.log_queue) {
        cfg.log.queue_lines = v;
    }
    let cert = cli.tls_cert.or(file.tls_cert);
    let key = cli.tls_key.or(file.tls_key);
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let tls = ringrelay::server::tls_server_config(&cert, &key)
                .map_err(|e| CliError::Invalid(format!("--tls-cert/--tls-key: {e}")))?;
            cfg.tls = Some(ringrelay::reload::Swap::new(tls));
        }
        (None, None) => {}
        _ => {
            return Err(CliError::Invalid(
                "--tls-cert and --tls-key go together".into(),
            ))
        }
    }
    Ok((
        cfg,
        FileTables {
            proxy: file.proxy,
            mailman: file.mailman,
        },
    ))
}
