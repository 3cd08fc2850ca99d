//! The server's view of a handler: a per-shard `Service` that opens one `Connection` per
//! client, whose answers may take time (`Answer::Later`). A relay uses this to wait for its
//! upstream without blocking the shard: the connection's session holds further input until
//! the pending answer resolves. Every `Handler` is a `Service` whose answers are immediate.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use super::Handler;
use crate::proto::{CommandHook, Event, Extensions, Reply, Session};

/// An answer still being worked out; it runs on the shard's event loop.
pub type Pending = Pin<Box<dyn Future<Output = Option<Reply>>>>;

/// A connection's answer to one event. For notifications (data chunks, reset, quit) the
/// reply is ignored, but a `Later` is still awaited before the next event (backpressure).
pub enum Answer {
    /// Decided: `None` lets the session's default reply stand.
    Now(Option<Reply>),
    /// To be decided when the future resolves.
    Later(Pending),
    /// End the connection instead: after `delay` (reading nothing more), write `reply` if
    /// there is one and close (`None` hangs up without a word). Fault injection uses it
    /// (smtp-sink's `-q`, `-Q`, `-A`).
    Close {
        /// The last reply, if any.
        reply: Option<Reply>,
        /// How long to wait first.
        delay: std::time::Duration,
    },
}

pub use crate::metrics::UpstreamStats;

/// Per-shard handler state that opens connections.
pub trait Service: 'static {
    /// The per-connection part.
    type Conn: Connection;
    /// A client connected (its `Event::Connect` follows).
    fn open(this: &Rc<RefCell<Self>>, session: &Session) -> Self::Conn;
    /// The shard begins serving: a service may spawn its background work here (with
    /// `crate::rt::spawn_local`, on the shard's event loop); that work must end by itself
    /// once `close` has run.
    fn start(_this: &Rc<RefCell<Self>>) {}
    /// The shard is stopping and has no connection left: a chance to end upstream
    /// conversations politely. Awaited before `shutdown`, so it must be bounded in time.
    fn close(_this: &Rc<RefCell<Self>>) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(std::future::ready(()))
    }
    /// The shard is stopping.
    fn shutdown(&mut self) {}
    /// True when the service wants each pipelined RCPT and DATA as soon as it is read, before
    /// the decisions ahead of it are answered (`Session::set_pipelined_decisions`). A relay
    /// uses this to pipeline the transaction to its upstream.
    fn pipelines_decisions(&self) -> bool {
        false
    }
    /// The extensions a new session offers, given the configured ones (a relay withholds
    /// those its upstream does not offer).
    fn session_extensions(&self, configured: Extensions) -> Extensions {
        configured
    }
    /// Which command lines a new session hands over as `Event::Command`
    /// (`Session::set_command_hook`); none by default, so the core answers every line.
    fn command_hook(&self) -> CommandHook {
        CommandHook::Off
    }
    /// Keywords a new session adds to its EHLO reply (`Session::set_ehlo_keywords`).
    fn ehlo_keywords(&self) -> Vec<String> {
        Vec::new()
    }
    /// Adds what the service measured since the last call to `into` (the shard's metrics
    /// delta) and forgets it: a relay's upstream latencies, injected faults.
    fn drain_metrics(&mut self, _into: &mut crate::metrics::snapshot::Snapshot) {}
    /// True when connections from `ip` do not count against `--max-connections-per-client`
    /// (a relay exempts its relay networks: the MTA in front opens many).
    fn exempt_from_client_limit(&self, _ip: std::net::IpAddr) -> bool {
        false
    }
    /// Upstream pool counters, for a service that relays (None otherwise).
    fn upstream_stats(&self) -> Option<UpstreamStats> {
        None
    }
    /// The counters of the pool toward Mailman's LMTP, for `mailman` mode (None otherwise):
    /// the upstream metrics are then split by destination.
    fn mailman_stats(&self) -> Option<UpstreamStats> {
        None
    }
}

/// Inside `impl<S: Service> Service for Wrapper<S>`, where `Wrapper` holds the wrapped service
/// in a field `inner: Rc<RefCell<S>>`: writes the named `Service` methods (or `all` of them
/// but `open`) as calls passed on to `inner` unchanged. A wrapper (fault injection, the transaction log, the load-test
/// target options) names every method it does not change itself, so that whatever the
/// wrapped service says (its extensions, hooks, metrics, pool counters) is not lost.
macro_rules! forward_service {
    // Every method but `open`: for a wrapper that changes only what its connections do.
    (all) => {
        forward_service!(
            start,
            close,
            shutdown,
            pipelines_decisions,
            session_extensions,
            command_hook,
            ehlo_keywords,
            drain_metrics,
            exempt_from_client_limit,
            upstream_stats,
            mailman_stats,
        );
    };
    ($($method:ident),* $(,)?) => { $( forward_service!(@ $method); )* };
    (@start) => {
        fn start(this: &std::rc::Rc<std::cell::RefCell<Self>>) {
            let inner = this.borrow().inner.clone();
            $crate::handler::Service::start(&inner);
        }
    };
    (@close) => {
        fn close(
            this: &std::rc::Rc<std::cell::RefCell<Self>>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
            let inner = this.borrow().inner.clone();
            $crate::handler::Service::close(&inner)
        }
    };
    (@shutdown) => {
        fn shutdown(&mut self) {
            self.inner.borrow_mut().shutdown();
        }
    };
    (@pipelines_decisions) => {
        fn pipelines_decisions(&self) -> bool {
            self.inner.borrow().pipelines_decisions()
        }
    };
    (@session_extensions) => {
        fn session_extensions(
            &self,
            configured: $crate::proto::Extensions,
        ) -> $crate::proto::Extensions {
            self.inner.borrow().session_extensions(configured)
        }
    };
    (@command_hook) => {
        fn command_hook(&self) -> $crate::proto::CommandHook {
            self.inner.borrow().command_hook()
        }
    };
    (@ehlo_keywords) => {
        fn ehlo_keywords(&self) -> Vec<String> {
            self.inner.borrow().ehlo_keywords()
        }
    };
    (@drain_metrics) => {
        fn drain_metrics(&mut self, into: &mut $crate::metrics::snapshot::Snapshot) {
            self.inner.borrow_mut().drain_metrics(into);
        }
    };
    (@exempt_from_client_limit) => {
        fn exempt_from_client_limit(&self, ip: std::net::IpAddr) -> bool {
            self.inner.borrow().exempt_from_client_limit(ip)
        }
    };
    (@upstream_stats) => {
        fn upstream_stats(&self) -> Option<$crate::handler::UpstreamStats> {
            self.inner.borrow().upstream_stats()
        }
    };
    (@mailman_stats) => {
        fn mailman_stats(&self) -> Option<$crate::handler::UpstreamStats> {
            self.inner.borrow().mailman_stats()
        }
    };
}
pub(crate) use forward_service;

/// One client connection's handler.
pub trait Connection: 'static {
    /// Answers (or takes note of) one session event.
    fn event(&mut self, session: &Session, event: Event) -> Answer;
    /// The connection ended.
    fn close(&mut self, _session: &Session) {}
}

/// A `Handler` seen as a `Service`.
pub struct HandlerConn<H> {
    handler: Rc<RefCell<H>>,
    message: Vec<u8>,
    collect: bool,
}

impl<H: Handler> Service for H {
    type Conn = HandlerConn<H>;

    fn open(this: &Rc<RefCell<Self>>, _session: &Session) -> HandlerConn<H> {
        let collect = this.borrow().collects_message();
        HandlerConn {
            handler: this.clone(),
            message: Vec::new(),
            collect,
        }
    }

    fn shutdown(&mut self) {
        Handler::shutdown(self);
    }

    fn command_hook(&self) -> CommandHook {
        Handler::command_hook(self)
    }

    fn ehlo_keywords(&self) -> Vec<String> {
        Handler::ehlo_keywords(self)
    }
}

impl<H: Handler> Connection for HandlerConn<H> {
    fn event(&mut self, session: &Session, event: Event) -> Answer {
        let mut h = self.handler.borrow_mut();
        Answer::Now(match event {
            Event::Connect => h.connect(session),
            Event::Hello => h.hello(session),
            Event::Auth => h.auth(session),
            Event::Mail => h.mail(session),
            Event::Rcpt => h.rcpt(session),
            Event::DataStart => h.data_start(session),
            Event::Command => h.command(session),
            Event::DataChunk(chunk) => {
                if self.collect {
                    chunk.extend_content(&mut self.message);
                }
                h.data_chunk(session, &chunk);
                None
            }
            Event::DataEnd => {
                let r = h.process_message(session, &self.message);
                self.message.clear();
                r
            }
            Event::Reset => {
                self.message.clear();
                h.reset(session);
                None
            }
            Event::Quit | Event::ChunkEnd | Event::RecipientVerdict => None,
        })
    }

    fn close(&mut self, session: &Session) {
        self.handler.borrow_mut().disconnect(session);
    }
}
