//! The accept loop of one listener on one shard, shared by both drivers: admit or refuse each
//! connection against the shard's limit, spawn its task, and stop cleanly when draining (the
//! listener is closed through its driver, which hands back connections it accepted but nobody
//! took; those are told 421, never dropped silently).

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use super::conn::serve;
use super::shard::Shard;
use super::stream::ConnStream;
use crate::handler::Service;
use crate::metrics::labels::RejectReason;
use crate::rt;

/// A listening socket as the accept loop needs it; implemented by each driver.
pub(crate) trait Acceptor {
    /// The connected stream type.
    type Stream: ConnStream + 'static;
    /// Accepts one connection, with its peer's address (`None`: a Unix-domain client, which
    /// has none). Cancel-safe.
    async fn accept(&self) -> io::Result<(Self::Stream, Option<SocketAddr>)>;
    /// Stops accepting and closes the listener; returns connections accepted but not taken.
    async fn close(self) -> Vec<Self::Stream>;
}

const SHUTTING_DOWN: &[u8] = b"421 4.3.2 Service shutting down, try again later\r\n";

/// Accepts until the shard drains.
pub(crate) async fn accept_loop<A: Acceptor, H: Service>(acceptor: A, shard: Rc<Shard<H>>) {
    let mut drain = shard.drain.clone();
    while !shard.draining() {
        let res = tokio::select! {
            r = acceptor.accept() => r,
            _ = drain.changed() => break,
        };
        match res {
            Ok((stream, peer)) => {
                if shard.draining() {
                    shard.count_rejected(RejectReason::Draining);
                    refuse(stream, SHUTTING_DOWN);
                } else {
                    match shard.admit(peer.map(|p| p.ip())) {
                        Ok(key) => {
                            let shard = shard.clone();
                            rt::spawn_local(async move {
                                serve(stream, peer, key, shard.clone()).await;
                                shard.release(key);
                            });
                        }
                        Err(reply) => refuse(stream, reply),
                    }
                }
            }
            Err(e) => {
                // EMFILE/ENFILE: back off briefly instead of spinning.
                if !matches!(e.kind(), io::ErrorKind::ConnectionAborted) {
                    rt::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    for stream in acceptor.close().await {
        shard.count_rejected(RejectReason::Draining);
        refuse(stream, SHUTTING_DOWN);
    }
}

/// Writes a 421 to a connection we will not serve, then closes it.
fn refuse<S: ConnStream + 'static>(stream: S, reply: &'static [u8]) {
    rt::spawn_local(async move {
        stream.send(reply);
        let _ = std::future::poll_fn(|cx| stream.poll_flush(cx)).await;
        stream.close();
    });
}
