//! The server: per-core shards, each a pinned thread with its own event loop (io_uring, or epoll
//! as the fallback), its own SO_REUSEPORT listeners, connection slab and handler instance.
//!
//! This is the only layer that does I/O. `Server::builder()...handler(h).run()` binds, starts
//! the shards, and blocks until a shutdown (SIGTERM/SIGINT or a `ShutdownHandle`): then every
//! shard stops accepting, lets transactions in flight finish, says 421 to idle sessions, and
//! `run` returns once all shards are done or the drain timeout passed. A second signal exits
//! the process at once.
//!
//! With `ServerConfig::metrics`, each shard records into its own `metrics::ShardRecorder` and
//! an admin thread serves the merged figures (`/metrics`, `/stats.json`, `/healthz`,
//! `/readyz`) until `run` returns; `tap` ties each reply to its command for that.

mod accept;
mod conn;
mod epoll;
mod input;
mod listener;
mod observe;
mod process;
mod proxy;
mod shard;
mod shard_thread;
mod stream;
mod tls;
mod transcript;
mod unix;
mod uring;

pub use proxy::ProxyProtocol;
pub use tls::{server_config as tls_server_config, TlsConfigError};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use tokio::sync::watch;

use crate::engine::{self, EngineOptions, Setup};
use crate::handler::Service;
use crate::metrics::{AdminListener, Hub, Metrics, MetricsConfig};
use crate::proto::SessionConfig;
pub use process::Reloader;
use process::{raise_fd_limit, wait_signal, Signals};
use shard_thread::ShardStart;

/// After the drain timeout, how long connections get to say 421 and close.
const ABANDON_GRACE: Duration = Duration::from_secs(2);

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

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No `listen` address was configured.
    #[error("no listen address configured")]
    NoListen,
    /// Another process already listens on the address and `reuse_port` is off.
    #[error(
        "{addr}: address already in use by another process (use --reuse-port for a planned \
         handover)"
    )]
    AddrInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// `reuse_port` is on, but the process on the address does not share it (no SO_REUSEPORT,
    /// or another user).
    #[error(
        "{addr}: address already in use by another process that does not share it \
         (--reuse-port joins only listeners that set SO_REUSEPORT, as ringrelay does)"
    )]
    AddrNotShared {
        /// The address.
        addr: SocketAddr,
    },
    /// Another process accepts on the Unix-domain socket and `reuse_port` is off.
    #[error(
        "unix:{}: another process listens on this socket (use --reuse-port for a planned \
         handover, which takes the path over)",
        path.display()
    )]
    UnixInUse {
        /// The socket's path.
        path: PathBuf,
    },
    /// Binding a Unix-domain listener failed.
    #[error("cannot listen on unix:{}: {source}", path.display())]
    UnixBind {
        /// The socket's path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Binding a listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// `--io uring` was forced but io_uring cannot be used here.
    #[error(
        "io_uring is not available to this process ({0}). It may be disabled by the sysctl \
         kernel.io_uring_disabled or blocked by a container seccomp profile; run with --io epoll \
         (or --io auto to fall back automatically)"
    )]
    UringUnavailable(std::io::Error),
    /// Another process already listens on the metrics (admin HTTP) address.
    #[error(
        "metrics address {addr}: address already in use by another process (choose another \
         with --metrics-listen ADDR, or none; --reuse-port for a planned handover)"
    )]
    MetricsAddrInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// Binding the metrics (admin HTTP) listener failed.
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsBind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A shard thread or event loop failed to start.
    #[error("shard {shard} failed to start: {source}")]
    Shard {
        /// Shard number.
        shard: usize,
        /// The error.
        source: std::io::Error,
    },
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

/// Builds a `Server`; start with `Server::builder()`.
#[derive(Clone, Debug, Default)]
pub struct ServerBuilder {
    config: ServerConfig,
}

type Factory<H> = Arc<dyn Fn(usize) -> H + Send + Sync>;

/// A builder that has its handler; `build()` binds, `run()` binds and serves.
pub struct HandledBuilder<H> {
    config: ServerConfig,
    factory: Factory<H>,
}

impl ServerBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }
    /// Adds a listen address (the first call replaces the default 127.0.0.1:2525).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        if self.config.listen == ServerConfig::default().listen
            && self.config.listen_unix.is_empty()
        {
            self.config.listen.clear();
        }
        self.config.listen.push(addr);
        self
    }
    /// Adds a Unix-domain socket to listen on (the first address call, of either kind,
    /// replaces the default 127.0.0.1:2525).
    pub fn listen_unix(mut self, path: impl Into<PathBuf>) -> Self {
        if self.config.listen == ServerConfig::default().listen
            && self.config.listen_unix.is_empty()
        {
            self.config.listen.clear();
        }
        self.config.listen_unix.push(path.into());
        self
    }
    /// Sets the number of shards.
    pub fn shards(mut self, n: usize) -> Self {
        self.config.shards = Some(n.max(1));
        self
    }
    /// Chooses the event loop.
    pub fn io(mut self, io: IoMode) -> Self {
        self.config.io = io;
        self
    }
    /// Sets session limits and extensions.
    pub fn session(mut self, session: SessionConfig) -> Self {
        self.config.session = session;
        self
    }
    /// Records metrics and, with `config.listen`, serves them (see `crate::metrics`).
    pub fn metrics(mut self, config: MetricsConfig) -> Self {
        self.config.metrics = Some(config);
        self
    }
    /// Whether `run` handles SIGTERM/SIGINT (default true).
    pub fn handle_signals(mut self, yes: bool) -> Self {
        self.config.handle_signals = yes;
        self
    }
    /// Each shard gets its own clone of `handler`.
    pub fn handler<H: Service + Clone + Send>(self, handler: H) -> HandledBuilder<H> {
        let proto = std::sync::Mutex::new(handler);
        self.handler_factory(move |_| proto.lock().expect("handler prototype").clone())
    }
    /// Each shard builds its handler with `factory(shard_index)` on its own thread.
    pub fn handler_factory<H: Service>(
        self,
        factory: impl Fn(usize) -> H + Send + Sync + 'static,
    ) -> HandledBuilder<H> {
        HandledBuilder {
            config: self.config,
            factory: Arc::new(factory),
        }
    }
}

impl<H: Service> HandledBuilder<H> {
    /// Resolves the event loop and binds every listener.
    pub fn build(self) -> Result<Server<H>, ServerError> {
        let cfg = self.config;
        if cfg.listen.is_empty() && cfg.listen_unix.is_empty() {
            return Err(ServerError::NoListen);
        }
        let (driver, setup) = match cfg.io {
            IoMode::Epoll => (Driver::Epoll, None),
            IoMode::Uring => {
                let setup = engine::probe(&cfg.engine).map_err(ServerError::UringUnavailable)?;
                (Driver::Uring, Some(setup))
            }
            IoMode::Auto => match engine::probe(&cfg.engine) {
                Ok(setup) => (Driver::Uring, Some(setup)),
                Err(e) => {
                    eprintln!("ringrelay: io_uring unavailable ({e}); using the epoll driver");
                    (Driver::Epoll, None)
                }
            },
        };
        let cpus = shard::allowed_cpus();
        let shards = cfg.shards.unwrap_or(cpus.len()).max(1);
        raise_fd_limit();
        let bound = listener::bind_listen(&cfg, shards)?;
        let (drain_tx, drain_rx) = watch::channel(false);
        let abandon = Arc::new(watch::channel(false).0);
        let (hub, admin) = match &cfg.metrics {
            None => (None, None),
            Some(m) => {
                let hub = Arc::new(
                    Hub::new(
                        shards,
                        m.publish_interval,
                        driver.to_string(),
                        m.jemalloc,
                        drain_rx,
                    )
                    .with_readiness(m.readiness.clone(), m.faults.clone()),
                );
                let admin = match listener::bind_admin(&m.listen, cfg.reuse_port) {
                    Ok(l) => l,
                    Err(e) if m.listen_optional => {
                        eprintln!("ringrelay: not serving metrics: {e}");
                        None
                    }
                    Err(e) => return Err(e),
                };
                (Some(hub), admin)
            }
        };
        Ok(Server {
            config: cfg,
            factory: self.factory,
            driver,
            setup,
            cpus,
            listeners: bound.per_shard,
            local_addrs: bound.local_addrs,
            unix_paths: bound.unix_paths,
            drain: Arc::new(drain_tx),
            abandon,
            hub,
            admin,
        })
    }

    /// Binds and serves until shutdown.
    pub fn run(self) -> Result<RunReport, ServerError> {
        self.build()?.run()
    }
}

/// A bound server, ready to `run`.
pub struct Server<H> {
    config: ServerConfig,
    factory: Factory<H>,
    driver: Driver,
    setup: Option<Setup>,
    cpus: Vec<usize>,
    listeners: Vec<Vec<listener::ListenSocket>>,
    local_addrs: Vec<SocketAddr>,
    /// The Unix-domain socket files, removed when the server ends.
    unix_paths: Vec<unix::UnixPath>,
    drain: Arc<watch::Sender<bool>>,
    /// Raised when the drain timeout has passed: connections stop waiting for handlers.
    abandon: Arc<watch::Sender<bool>>,
    hub: Option<Arc<Hub>>,
    admin: Option<AdminListener>,
}

/// Starts a graceful shutdown of a running server from any thread.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    /// Begins draining: stop accepting, finish transactions, 421 to idle sessions.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

/// How `run` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunReport {
    /// Every shard finished its connections within the drain timeout.
    pub drained: bool,
}

impl Server<()> {
    /// Starts building a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

impl<H: Service> Server<H> {
    /// The bound addresses (with the real port when 0 was asked for), one per `listen`.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The Unix-domain sockets listened on, one per `listen_unix`.
    pub fn unix_paths(&self) -> Vec<&Path> {
        self.unix_paths.iter().map(|p| p.path()).collect()
    }

    /// The event loop in use.
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// The io_uring set-up flags the shards' rings get (None under epoll).
    pub fn uring_setup(&self) -> Option<Setup> {
        self.setup
    }

    /// The metrics, when `ServerConfig::metrics` is set.
    pub fn metrics(&self) -> Option<Metrics> {
        self.hub.clone().map(Metrics)
    }

    /// The bound address of the admin (metrics) listener, if there is one (the first, when
    /// it listens on several).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addrs().first().copied()
    }

    /// Every bound address of the admin (metrics) listener.
    pub fn metrics_addrs(&self) -> Vec<SocketAddr> {
        self.admin
            .as_ref()
            .map(|a| a.local_addrs().to_vec())
            .unwrap_or_default()
    }

    /// A handle that starts a graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.drain.clone())
    }

    /// Starts the shards and serves until shutdown; see the module documentation.
    pub fn run(self) -> Result<RunReport, ServerError> {
        let control = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ServerError::Shard { shard: 0, source })?;
        let signals = if self.config.handle_signals {
            let _guard = control.enter();
            Some(Signals::new().map_err(|source| ServerError::Shard { shard: 0, source })?)
        } else {
            None
        };
        let shards = self.listeners.len();
        let mut session = self.config.session.clone();
        session.extensions.starttls = self.config.tls.is_some();
        let session = Arc::new(session);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), std::io::Error>>();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
        let limit = shard::ConnLimit::new(
            self.config.max_connections,
            self.config.max_connections_per_client,
        );
        let metrics_addrs = self.metrics_addrs();
        let admin = match (self.admin, &self.hub) {
            (Some(listener), Some(hub)) => Some(
                listener
                    .start(hub.clone())
                    .map_err(|source| ServerError::Shard { shard: 0, source })?,
            ),
            _ => None,
        };
        for (index, listeners) in self.listeners.into_iter().enumerate() {
            let cpu = self.cpus.get(index % self.cpus.len().max(1)).copied();
            let ctx = ShardStart {
                index,
                cpu,
                listeners,
                driver: self.driver,
                engine: self.config.engine,
                factory: self.factory.clone(),
                session: session.clone(),
                drain: self.drain.subscribe(),
                abandon: self.abandon.subscribe(),
                limit: limit.clone(),
                hub: self.hub.clone(),
                front: shard::Front {
                    tls: self.config.tls.clone(),
                    proxy: self.config.proxy_protocol.clone().map(Arc::new),
                },
                ready: ready_tx.clone(),
                done: done_tx.clone(),
            };
            thread::Builder::new()
                .name(format!("ringrelay-shard-{index}"))
                .spawn(move || ctx.run())
                .map_err(|source| ServerError::Shard {
                    shard: index,
                    source,
                })?;
        }
        drop((ready_tx, done_tx));
        for index in 0..shards {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    return Err(ServerError::Shard {
                        shard: index,
                        source,
                    })
                }
                Err(_) => {
                    return Err(ServerError::Shard {
                        shard: index,
                        source: std::io::Error::other("shard thread exited during start"),
                    })
                }
            }
        }
        if self.config.log_ready {
            if let Some(setup) = self.setup {
                eprintln!("ringrelay: io_uring engine: {setup}");
            }
            for addr in &metrics_addrs {
                eprintln!("ringrelay: metrics on http://{addr}/metrics");
            }
            let tcp = self.local_addrs.iter().map(|a| a.to_string());
            let unix = self
                .unix_paths
                .iter()
                .map(|p| format!("unix:{}", p.path().display()));
            for addr in tcp.chain(unix) {
                eprintln!(
                    "ringrelay: listening on {addr} (io={}, shards={shards})",
                    self.driver
                );
            }
        }
        let drain = self.drain.clone();
        let abandon = self.abandon.clone();
        let timeout = self.config.drain_timeout;
        let delay = self.config.drain_delay;
        let reload = self.config.reload.clone();
        let hub = self.hub.clone();
        let drained = control.block_on(async move {
            let mut signals = signals;
            let mut asked = drain.subscribe();
            let mut finished = 0;
            tokio::select! {
                _ = wait_signal(&mut signals, reload.as_ref()) => {}
                _ = asked.wait_for(|&d| d) => {}
                _ = async { while done_rx.recv().await.is_some() { finished += 1; } } => {
                    return true;
                }
            }
            if let Some(hub) = &hub {
                hub.set_stopping();
            }
            if !delay.is_zero() {
                // /readyz is 503 already; a balancer's health check sees it before the
                // listeners stop accepting. A second signal skips the wait.
                eprintln!("ringrelay: stopping; still accepting for {delay:?} (--drain-delay)");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wait_signal(&mut signals, reload.as_ref()) => {}
                }
            }
            drain.send_replace(true);
            let all_done = async {
                while finished < shards {
                    if done_rx.recv().await.is_none() {
                        break;
                    }
                    finished += 1;
                }
            };
            tokio::pin!(all_done);
            let drained = tokio::select! {
                _ = &mut all_done => true,
                _ = tokio::time::sleep(timeout) => false,
                _ = wait_signal(&mut signals, reload.as_ref()) => {
                    eprintln!("ringrelay: second signal, exiting at once");
                    std::process::exit(1);
                }
            };
            if !drained {
                // Connections still waiting for their handler (an upstream that hangs) are
                // told 421 before the process goes, rather than left to a bare close.
                abandon.send_replace(true);
                let _ = tokio::time::timeout(ABANDON_GRACE, &mut all_done).await;
            }
            drained
        });
        drop(admin);
        // The socket files go with the server (unless another process took them over).
        drop(self.unix_paths);
        Ok(RunReport { drained })
    }
}
