//! A shard's thread: pin it, start its event loop (the io_uring engine or epoll), accept on
//! its listeners until the drain, wait for its connections, and publish its metrics along the
//! way.

use std::rc::Rc;
use std::sync::{mpsc, Arc};

use tokio::sync::watch;

use super::accept::{accept_loop, Acceptor};
use super::shard::{self, ConnLimit, Shard};
use super::{epoll, uring, Driver, Factory};
use crate::engine::{Engine, EngineOptions};
use crate::handler::Service;
use crate::metrics::{Hub, ShardRecorder};
use crate::proto::SessionConfig;
use crate::rt;

/// Everything a shard thread needs to start.
pub(super) struct ShardStart<H> {
    pub index: usize,
    pub cpu: Option<usize>,
    pub listeners: Vec<super::listener::ListenSocket>,
    pub driver: Driver,
    pub engine: EngineOptions,
    pub factory: Factory<H>,
    pub session: Arc<SessionConfig>,
    pub drain: watch::Receiver<bool>,
    pub abandon: watch::Receiver<bool>,
    pub limit: Arc<ConnLimit>,
    pub hub: Option<Arc<Hub>>,
    pub front: shard::Front,
    pub ready: mpsc::Sender<Result<(), std::io::Error>>,
    pub done: tokio::sync::mpsc::UnboundedSender<usize>,
}

impl<H: Service> ShardStart<H> {
    pub(super) fn run(self) {
        if let Some(cpu) = self.cpu {
            shard::pin_to(cpu);
        }
        let index = self.index;
        let done = self.done.clone();
        let ready = self.ready.clone();
        let (listeners, shard_ready) = (self.listeners, self.ready);
        // One shard state for either event loop, built on the shard's own thread.
        let (session, factory, drain, abandon, limit, hub, front) = (
            self.session,
            self.factory,
            self.drain,
            self.abandon,
            self.limit,
            self.hub,
            self.front,
        );
        let make_shard = move || {
            let metrics = hub.map(|h| ShardRecorder::new(h, index));
            Shard::new(
                session,
                factory(index),
                drain,
                abandon,
                limit,
                metrics,
                front,
            )
        };
        let result = match self.driver {
            Driver::Uring => Engine::new(&self.engine).map(|engine| {
                engine.block_on(async move {
                    let acceptors = listeners
                        .into_iter()
                        .map(uring::UringListener::new)
                        .collect::<Vec<_>>();
                    serve_shard(acceptors, make_shard(), shard_ready).await;
                })
            }),
            Driver::Epoll => epoll::block_on(async move {
                let acceptors: Result<Vec<_>, _> = listeners
                    .into_iter()
                    .map(epoll::EpollListener::new)
                    .collect();
                match acceptors {
                    Ok(acceptors) => serve_shard(acceptors, make_shard(), shard_ready).await,
                    Err(e) => {
                        let _ = shard_ready.send(Err(e));
                    }
                }
            }),
        };
        if let Err(e) = result {
            let _ = ready.send(Err(e));
        }
        let _ = done.send(index);
    }
}

/// A shard's main task: accept on every listener until draining, then wait for its
/// connections and let the handler publish its totals.
async fn serve_shard<A: Acceptor + 'static, H: Service>(
    acceptors: Vec<A>,
    shard: Rc<Shard<H>>,
    ready: mpsc::Sender<Result<(), std::io::Error>>,
) {
    let loops: Vec<_> = acceptors
        .into_iter()
        .map(|a| Box::pin(accept_loop(a, shard.clone())))
        .collect();
    if let Some(m) = &shard.metrics {
        // Before `ready`: once the listening line is out, /readyz must say 200.
        m.set_accepting(true);
        rt::spawn_local(publish_metrics(shard.clone()));
    }
    {
        let shard = shard.clone();
        rt::spawn_local(async move { shard.watch_drain().await });
    }
    H::start(&shard.handler);
    let _ = ready.send(Ok(()));
    rt::join_all(loops).await;
    if let Some(m) = &shard.metrics {
        m.set_accepting(false);
    }
    shard.wait_idle().await;
    H::close(&shard.handler).await;
    shard.handler.borrow_mut().shutdown();
    if let Some(m) = &shard.metrics {
        let h = shard.handler.borrow();
        m.set_upstream(h.upstream_stats(), h.mailman_stats());
        drop(h);
        m.set_pool(crate::engine::pool_stats());
        shard.handler.borrow_mut().drain_metrics(&mut m.record());
        m.publish(u64::MAX, 0, true);
    }
}

/// Publishes the shard's metrics every interval and whenever a scrape asks.
async fn publish_metrics<H: Service>(shard: Rc<Shard<H>>) {
    let Some(m) = &shard.metrics else {
        return;
    };
    let mut asked = m.requests();
    loop {
        tokio::select! {
            _ = rt::sleep(m.interval()) => {}
            r = asked.changed() => if r.is_err() { return },
        }
        let generation = *asked.borrow_and_update();
        let h = shard.handler.borrow();
        m.set_upstream(h.upstream_stats(), h.mailman_stats());
        drop(h);
        m.set_pool(crate::engine::pool_stats());
        shard.handler.borrow_mut().drain_metrics(&mut m.record());
        m.publish(generation, shard.conns.borrow().len(), false);
    }
}
