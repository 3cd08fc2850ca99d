//! How the client reaches a server: resolve `host:port` (without blocking a shard), open one
//! TCP connection (on the io_uring engine when this thread runs one, else on tokio), and the
//! local name for HELO/EHLO.

use std::net::SocketAddr;

use tokio::net::{TcpSocket, TcpStream};

use super::transport::Plain;
use crate::engine;

/// The addresses of `host:port`: an IP literal at once; a name through tokio's resolver, or
/// on the engine through a short-lived thread (getaddrinfo blocks; the shard must not).
pub(super) async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let text = format!("{host}:{port}");
    if !engine::is_current() {
        return Ok(tokio::net::lookup_host(&text).await?.collect());
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ringrelay-resolve".into())
        .spawn(move || {
            use std::net::ToSocketAddrs;
            let _ = tx.send(text.to_socket_addrs().map(Iterator::collect));
        })?;
    rx.await
        .unwrap_or_else(|_| Err(std::io::Error::other("resolver thread failed")))
}

/// One TCP connection attempt, on the engine when this thread runs one.
pub(super) async fn connect_one(
    addr: SocketAddr,
    source: Option<SocketAddr>,
) -> std::io::Result<Plain> {
    if engine::is_current() {
        let s = match source {
            Some(src) => engine::Socket::connect_from(addr, src).await?,
            None => engine::Socket::connect(addr).await?,
        };
        return Ok(Plain::Ring(s));
    }
    let tcp = match source {
        Some(src) => {
            let sock = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            sock.bind(src)?;
            sock.connect(addr).await?
        }
        None => TcpStream::connect(addr).await?,
    };
    let _ = tcp.set_nodelay(true);
    Ok(Plain::Tcp(tcp))
}

/// The local host name for HELO/EHLO.
pub(super) fn local_fqdn() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(n) if ok && !n.is_empty() && n.contains('.') => n.to_string(),
        _ => "[127.0.0.1]".to_string(),
    }
}
