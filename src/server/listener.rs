//! Listening sockets: one SO_REUSEPORT listener per shard and address, all on the same port,
//! so the kernel spreads connections across shards. Binding port 0 picks one port for all.
//!
//! One process per port: SO_REUSEPORT would also let a second ringrelay (or any program of the
//! same user that sets it) join the port and take part of the traffic without a word. So before
//! binding, an address is probed with a socket that does *not* set SO_REUSEPORT: if that bind
//! fails with "address in use", someone else listens there and the start is refused, unless
//! the caller says the sharing is meant (`Sharing::Handover`: a rolling restart, where the new
//! process joins the old one's port and the old one then drains). Port 0 needs no probe: the
//! kernel never picks a port for it that another socket holds.
//!
//! Unix-domain listeners (`config.listen_unix`) follow the same rule; `unix` binds them.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;

use socket2::{Domain, Protocol, Socket, Type};

use super::unix::{self, UnixPath};
use super::{ServerConfig, ServerError};
use crate::metrics::AdminListener;

/// A listening socket a shard accepts on.
#[derive(Debug)]
pub(crate) enum ListenSocket {
    /// TCP, with this shard's own SO_REUSEPORT socket.
    Tcp(TcpListener),
    /// Unix-domain, shared by every shard (see `unix`).
    Unix(UnixListener),
}

/// What `bind_listen` bound.
pub(crate) struct Bound {
    /// Every shard's listeners: one per `config.listen` address, then one per
    /// `config.listen_unix` path, in order.
    pub per_shard: Vec<Vec<ListenSocket>>,
    /// The bound address of each TCP listener (with the real port where 0 was asked for).
    pub local_addrs: Vec<SocketAddr>,
    /// The socket files, removed when dropped (the server's end).
    pub unix_paths: Vec<UnixPath>,
}

/// Binds `shards` listeners on each of `config.listen` and `config.listen_unix`, honouring
/// `config.reuse_port`.
pub(crate) fn bind_listen(config: &ServerConfig, shards: usize) -> Result<Bound, ServerError> {
    let mut per_shard: Vec<Vec<ListenSocket>> = (0..shards).map(|_| Vec::new()).collect();
    let mut local_addrs = Vec::with_capacity(config.listen.len());
    let sharing = Sharing::from(config.reuse_port);
    for &addr in &config.listen {
        let group = bind_group(addr, shards, sharing).map_err(|f| match f {
            BindFailure::InUse if config.reuse_port => ServerError::AddrNotShared { addr },
            BindFailure::InUse => ServerError::AddrInUse { addr },
            BindFailure::Other(source) => ServerError::Bind { addr, source },
        })?;
        local_addrs.push(group[0].local_addr().unwrap_or(addr));
        for (i, l) in group.into_iter().enumerate() {
            per_shard[i].push(ListenSocket::Tcp(l));
        }
    }
    let mut unix_paths = Vec::with_capacity(config.listen_unix.len());
    for path in &config.listen_unix {
        let (group, guard) = unix::bind_group(path, shards, sharing).map_err(|f| match f {
            BindFailure::InUse => ServerError::UnixInUse { path: path.clone() },
            BindFailure::Other(source) => ServerError::UnixBind {
                path: path.clone(),
                source,
            },
        })?;
        unix_paths.push(guard);
        for (i, l) in group.into_iter().enumerate() {
            per_shard[i].push(ListenSocket::Unix(l));
        }
    }
    Ok(Bound {
        per_shard,
        local_addrs,
        unix_paths,
    })
}

/// Binds the admin (metrics) HTTP listener on each of `addrs` by the same rules; `None` when
/// there are none.
pub(crate) fn bind_admin(
    addrs: &[SocketAddr],
    reuse_port: bool,
) -> Result<Option<AdminListener>, ServerError> {
    if addrs.is_empty() {
        return Ok(None);
    }
    let mut listeners = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let l = bind_single(addr, Sharing::from(reuse_port)).map_err(|f| match f {
            BindFailure::InUse => ServerError::MetricsAddrInUse { addr },
            BindFailure::Other(source) => ServerError::MetricsBind { addr, source },
        })?;
        listeners.push(l);
    }
    AdminListener::new(listeners)
        .map(Some)
        .map_err(|source| ServerError::MetricsBind {
            addr: addrs[0],
            source,
        })
}

/// Whether a listener may share its address with another process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// Refuse an address another process listens on.
    Exclusive,
    /// Join it (both sides must set SO_REUSEPORT, as every ringrelay listener does).
    Handover,
}

impl From<bool> for Sharing {
    /// `reuse_port` to a sharing rule.
    fn from(reuse_port: bool) -> Self {
        if reuse_port {
            Sharing::Handover
        } else {
            Sharing::Exclusive
        }
    }
}

/// Why an address could not be listened on.
#[derive(Debug)]
pub(crate) enum BindFailure {
    /// Another process listens there (the probe, or with `Handover` the join, was refused).
    InUse,
    /// Any other error.
    Other(io::Error),
}

impl From<io::Error> for BindFailure {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::AddrInUse {
            BindFailure::InUse
        } else {
            BindFailure::Other(e)
        }
    }
}

/// Binds `shards` listeners on `addr` (the port of the first is reused by the others).
pub(crate) fn bind_group(
    addr: SocketAddr,
    shards: usize,
    sharing: Sharing,
) -> Result<Vec<TcpListener>, BindFailure> {
    if sharing == Sharing::Exclusive {
        probe_free(addr)?;
    }
    let mut out = Vec::with_capacity(shards);
    let mut addr = addr;
    for _ in 0..shards {
        let l = bind_one(addr, 1024)?;
        if addr.port() == 0 {
            addr = l.local_addr()?;
        }
        out.push(l);
    }
    Ok(out)
}

/// Binds one listener on `addr` with the same rules (the admin HTTP listener).
pub(crate) fn bind_single(addr: SocketAddr, sharing: Sharing) -> Result<TcpListener, BindFailure> {
    if sharing == Sharing::Exclusive {
        probe_free(addr)?;
    }
    Ok(bind_one(addr, 128)?)
}

/// Binds (without listening) a socket that does not set SO_REUSEPORT: that fails with
/// `AddrInUse` exactly when some socket listens on an overlapping address. SO_REUSEADDR is
/// set so that connections of an earlier run in TIME_WAIT do not count.
fn probe_free(addr: SocketAddr) -> Result<(), BindFailure> {
    if addr.port() == 0 {
        return Ok(());
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(())
}

fn bind_one(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    // Accepted connections inherit it: no setsockopt per connection.
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[test]
    fn a_group_shares_one_port_and_a_second_group_is_refused() {
        let group = bind_group(loopback(), 3, Sharing::Exclusive).unwrap();
        let addr = group[0].local_addr().unwrap();
        assert!(group.iter().all(|l| l.local_addr().unwrap() == addr));
        assert!(matches!(
            bind_group(addr, 2, Sharing::Exclusive),
            Err(BindFailure::InUse)
        ));
        assert!(matches!(
            bind_single(addr, Sharing::Exclusive),
            Err(BindFailure::InUse)
        ));
        let joined = bind_group(addr, 2, Sharing::Handover).unwrap();
        assert_eq!(joined[1].local_addr().unwrap(), addr);
    }

    #[test]
    fn a_listener_without_reuseport_blocks_even_a_handover() {
        let other = TcpListener::bind(loopback()).unwrap();
        let addr = other.local_addr().unwrap();
        for sharing in [Sharing::Exclusive, Sharing::Handover] {
            assert!(matches!(
                bind_group(addr, 1, sharing),
                Err(BindFailure::InUse)
            ));
        }
        drop(other);
        let freed = bind_group(addr, 2, Sharing::Exclusive).unwrap();
        assert_eq!(freed.len(), 2);
    }
}
