//! The server's settings: `ServerConfig` (everything but the handler, with the library's
//! defaults), the event loop asked for (`IoMode`) and the one chosen (`Driver`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ProxyProtocol, Reloader};
use crate::engine::EngineOptions;
use crate::metrics::MetricsConfig;
use crate::proto::SessionConfig;

/// Which event loop the shards run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// io_uring when this process may use it, else epoll (with one log line saying why).
    #[default]
    Auto,
    /// io_uring or fail at start.
    Uring,
    /// epoll (tokio).
    Epoll,
}

/// The event loop actually chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// The native io_uring engine (`crate::engine`).
    Uring,
    /// tokio on epoll.
    Epoll,
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Driver::Uring => "uring",
            Driver::Epoll => "epoll",
        })
    }
}

/// Server settings (everything but the handler).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Addresses to listen on (every shard listens on each).
    pub listen: Vec<SocketAddr>,
    /// Unix-domain sockets to listen on (every shard accepts on each). Their clients have no
    /// address: a session sees `127.0.0.1:0` with `Session::is_local` true, as Postfix says of
    /// such clients, so relay networks and trusted PROXY senders treat them as loopback; the
    /// per-client connection limit does not count them.
    pub listen_unix: Vec<PathBuf>,
    /// Share the listen and metrics addresses with another process already listening there
    /// (a planned handover: a rolling restart); off, such an address refuses the start.
    pub reuse_port: bool,
    /// Number of shards; `None` = the CPUs this process may run on.
    pub shards: Option<usize>,
    /// Event loop choice.
    pub io: IoMode,
    /// The io_uring engine's set-up (DATA pool size, DEFER_TASKRUN).
    pub engine: EngineOptions,
    /// Open connections allowed in the whole process (one budget shared by all shards, counted
    /// at connect and close only); 0 = unlimited.
    pub max_connections: usize,
    /// Open connections allowed from one client address (process-wide), unless the service
    /// exempts it; beyond it `421 4.7.0`. 0 = unlimited.
    pub max_connections_per_client: usize,
    /// How long a shutdown waits for transactions in flight.
    pub drain_timeout: Duration,
    /// Install SIGTERM/SIGINT handling in `run`.
    pub handle_signals: bool,
    /// Print `ringrelay: listening on ADDR (...)` to stderr once every shard listens.
    pub log_ready: bool,
    /// Per-session limits and extensions.
    pub session: SessionConfig,
    /// Metrics recording and the admin listener; `None` (the library default) records nothing.
    pub metrics: Option<MetricsConfig>,
    /// STARTTLS (RFC 3207) with this certificate (`tls_server_config` builds one from PEM
    /// files); `None` does not offer it. It decides `session.extensions.starttls`.
    pub tls: Option<crate::reload::Swap<rustls::ServerConfig>>,
    /// After a shutdown signal, keep accepting this long while `/readyz` already answers 503
    /// (so a load balancer's health check moves traffic away first); then drain.
    pub drain_delay: Duration,
    /// Fault injection for `sink` and `debug` (the binary wraps their handlers in
    /// `crate::faults::Faulty`); the admin listener serves `GET`/`PUT /faults` for it.
    pub faults: Option<crate::faults::FaultConfig>,
    /// What SIGHUP runs (see `Reloader`); `None`: SIGHUP is noted and changes nothing.
    pub reload: Option<Reloader>,
    /// Require the PROXY protocol (v1 or v2) on every SMTP listener, from these senders.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// The operator's log (the binary installs it with `crate::log::init`; a library user
    /// may install its own `tracing` subscriber instead).
    pub log: crate::log::LogConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 2525))],
            listen_unix: Vec::new(),
            reuse_port: false,
            shards: None,
            io: IoMode::Auto,
            engine: EngineOptions::default(),
            max_connections: 0,
            max_connections_per_client: 0,
            drain_timeout: Duration::from_secs(30),
            handle_signals: true,
            log_ready: true,
            session: SessionConfig::default(),
            metrics: None,
            tls: None,
            log: crate::log::LogConfig::default(),
            proxy_protocol: None,
            drain_delay: Duration::ZERO,
            reload: None,
            faults: None,
        }
    }
}
