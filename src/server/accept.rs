//! The accept loop of one listener on one shard, shared by both drivers: admit or refuse each
//! connection against the shard's limit, spawn its task, and stop cleanly when draining
//! (the listener is shut down so the in-flight accept completes; it is never dropped).

use std::io;
use std::rc::Rc;

use super::conn::{serve, ConnStream};
use super::listener::shutdown_fd;
use super::shard::{Shard, TOO_MANY};
use crate::handler::Service;
use crate::metrics::labels::RejectReason;

/// A listening socket as the accept loop needs it; implemented by each driver.
pub(crate) trait Acceptor {
    /// The connected stream type.
    type Stream: ConnStream + 'static;
    /// Accepts one connection.
    async fn accept(&self) -> io::Result<(Self::Stream, core::net::SocketAddr)>;
    /// The listening descriptor (to shut it down when draining).
    fn raw_fd(&self) -> std::os::fd::RawFd;
}

const SHUTTING_DOWN: &[u8] = b"421 4.3.2 Service shutting down, try again later\r\n";

/// Accepts until the shard drains.
pub(crate) async fn accept_loop<A: Acceptor, H: Service>(acceptor: A, shard: Rc<Shard<H>>) {
    let mut drain = shard.drain.clone();
    loop {
        if shard.draining() {
            break;
        }
        let accept = acceptor.accept();
        tokio::pin!(accept);
        let mut stop = false;
        let res = tokio::select! {
            r = &mut accept => r,
            _ = drain.changed() => {
                stop = true;
                shutdown_fd(acceptor.raw_fd());
                accept.await
            }
        };
        match res {
            Ok((stream, peer)) => {
                if stop || shard.draining() {
                    shard.count_rejected(RejectReason::Draining);
                    refuse(stream, SHUTTING_DOWN);
                } else if let Some(key) = shard.admit(peer) {
                    let shard = shard.clone();
                    tokio::task::spawn_local(async move {
                        serve(stream, peer, shard.clone()).await;
                        shard.release(key);
                    });
                } else {
                    refuse(stream, TOO_MANY);
                }
            }
            Err(e) if !stop && !shard.draining() => {
                // EMFILE/ENFILE/ECONNABORTED: back off briefly instead of spinning.
                if !matches!(e.kind(), io::ErrorKind::ConnectionAborted) {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
            Err(_) => {}
        }
        if stop {
            break;
        }
    }
}

/// Writes a 421 to a connection we will not serve, then lets it close.
fn refuse<S: ConnStream + 'static>(stream: S, reply: &'static [u8]) {
    tokio::task::spawn_local(async move {
        let _ = stream.write_all(reply.to_vec()).await;
    });
}
