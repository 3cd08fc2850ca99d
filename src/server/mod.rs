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
mod config;
mod conn;
mod epoll;
mod error;
mod input;
mod listener;
mod observe;
mod process;
mod proxy;
mod run;
mod shard;
mod shard_thread;
mod stream;
mod tls;
mod transcript;
mod unix;
mod uring;

pub use config::{Driver, IoMode, ServerConfig};
pub use error::ServerError;
pub use proxy::ProxyProtocol;
pub use tls::{server_config as tls_server_config, TlsConfigError};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use crate::engine::{self, Setup};
use crate::handler::Service;
use crate::metrics::{AdminListener, Hub, Metrics, MetricsConfig};
use crate::proto::SessionConfig;
use process::raise_fd_limit;
pub use process::Reloader;

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
}
