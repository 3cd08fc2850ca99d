//! The relay under test and a client talking to it through a `proto::Session`, driven as the
//! shard's connection loop (src/server/conn.rs) drives them: feed the input, hand the events
//! to the relay's connection (decisions pipelined), await its answers in order, take the
//! replies. One current-thread runtime with a LocalSet, as on a shard.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use ringrelay::handler::{Answer, Connection, Pending, Service};
use ringrelay::proto::{Event, Session, SessionConfig};
use ringrelay::relay::pool::UpstreamConfig;
use ringrelay::relay::{Relay, RelayConfig, RelayConn};

use super::upstream::{Mode, Scripted, Shared};

/// The relay (shard 0) in front of a scripted upstream in `mode`.
pub fn relay(mode: Mode, x_peer: bool) -> (Rc<RefCell<Relay>>, Shared) {
    let seen = Shared::default();
    let config = RelayConfig {
        upstream: ringrelay::reload::Swap::new(UpstreamConfig {
            servers: vec!["upstream.test:25".into()],
            helo: Some("relay.test".into()),
            ..UpstreamConfig::default()
        }),
        x_peer,
        ..RelayConfig::default()
    };
    let connector = Rc::new(Scripted {
        mode,
        seen: seen.clone(),
    });
    let relay = Rc::new(RefCell::new(Relay::with_connector(&config, 0, connector)));
    (relay, seen)
}

/// A client's session on the relay, driven as the shard's connection loop drives it: feed the
/// input, hand the events to the relay's connection (decisions pipelined), await its answers
/// in order, take the replies.
pub struct Client {
    session: Session,
    conn: RelayConn,
    input: BytesMut,
    pending: VecDeque<(Pending, bool)>,
    /// Body chunk events handed to the relay so far.
    pub chunks: usize,
}

impl Client {
    /// Connected from 127.0.0.1 (a relay network), greeted and past EHLO.
    pub async fn start(relay: &Rc<RefCell<Relay>>) -> Client {
        let config = SessionConfig {
            hostname: "relay.test".into(),
            ..SessionConfig::default()
        };
        let peer = "127.0.0.1:40000".parse().unwrap();
        let mut session = Session::new(Arc::new(config), peer, Instant::now());
        let conn = Relay::open(relay, &session);
        {
            let r = relay.borrow();
            session.set_pipelined_decisions(r.pipelines_decisions());
            session.set_extensions(r.session_extensions(session.extensions()));
        }
        let mut c = Client {
            session,
            conn,
            input: BytesMut::new(),
            pending: VecDeque::new(),
            chunks: 0,
        };
        assert!(c.send("").await.starts_with("220 "));
        assert!(c.send("EHLO client.example\r\n").await.starts_with("250-"));
        c
    }

    /// Sends `input` and returns every reply it produced once the relay has answered.
    pub async fn send(&mut self, input: impl AsRef<[u8]>) -> String {
        self.input.extend_from_slice(input.as_ref());
        loop {
            loop {
                self.session
                    .handle_input_buf(Instant::now(), &mut self.input);
                if !self.dispatch() {
                    break;
                }
            }
            let Some((answer, needs_reply)) = self.pending.pop_front() else {
                break;
            };
            let reply = answer.await;
            if needs_reply {
                self.session.handler_reply(reply);
            }
        }
        let mut out = Vec::new();
        self.session.poll_output(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// Hands events over in order; decisions behind decisions while the session pipelines
    /// them (the shard's `dispatch`). True if any was handed over.
    fn dispatch(&mut self) -> bool {
        let mut progressed = false;
        loop {
            if !self.pending.is_empty() {
                let all_decisions = self.pending.iter().all(|(_, d)| *d);
                if !(self.session.pipelines_decisions()
                    && all_decisions
                    && self.session.is_awaiting_reply())
                {
                    break;
                }
            }
            let Some(ev) = self.session.poll_event() else {
                break;
            };
            progressed = true;
            self.chunks += usize::from(matches!(ev, Event::DataChunk(_)));
            let needs_reply = ev.needs_reply();
            match self.conn.event(&self.session, ev) {
                Answer::Now(_) if !needs_reply => {}
                Answer::Now(reply) if self.pending.is_empty() => self.session.handler_reply(reply),
                Answer::Now(reply) => {
                    self.pending
                        .push_back((Box::pin(std::future::ready(reply)), true));
                }
                Answer::Later(answer) => self.pending.push_back((answer, needs_reply)),
                Answer::Close { .. } => panic!("the relay never hangs up on its client"),
            }
        }
        progressed
    }

    pub async fn quit(mut self) {
        assert!(self.send("QUIT\r\n").await.starts_with("221 "));
        self.conn.close(&self.session);
    }
}

/// Runs a test on one current-thread runtime, inside a LocalSet (the shard's shape).
pub fn run(test: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, test);
}
