//! `Server::run`: start the shard threads and the admin listener, print the listening lines,
//! then wait on the control loop for a signal or a `ShutdownHandle`; drain (after
//! `drain_delay`), tell connections still waiting at the drain timeout 421 (the abandon
//! signal), and return once every shard is done. A second signal exits at once.

use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use super::process::{wait_signal, Signals};
use super::shard;
use super::shard_thread::ShardStart;
use super::{RunReport, Server, ServerError};
use crate::handler::Service;

/// After the drain timeout, how long connections get to say 421 and close.
const ABANDON_GRACE: Duration = Duration::from_secs(2);

impl<H: Service> Server<H> {
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
