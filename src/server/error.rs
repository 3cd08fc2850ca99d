//! Why a server could not start: `ServerError`, one variant per cause, each a sentence an
//! operator can act on.

use std::net::SocketAddr;
use std::path::PathBuf;

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
