//! The load-test target options of `sink` and `debug`, as a `Service` wrapped around either:
//! accept any AUTH credentials (`--auth-any`), dump each accepted message (`--dump-dir`,
//! `--dump-mbox`: `dump`), and running counters on stderr (`-c`).
//!
//! Contract: every event goes to the wrapped service first and its answer stands, except
//! that `Event::Auth` is answered `235` when any credentials are accepted (unless the wrapped
//! service refuses them: a fault rule), and that an
//! accepted message is acknowledged only once its dump is written (`452 4.3.1` otherwise).
//! The counters count only what was acknowledged (a message whose dump failed is not); with
//! `-c` their line is printed when a session ends, at most once a second, so a busy target
//! spends a few relaxed atomic adds per message and session on them. Without any option the
//! binary runs the bare service, so none of this is on its hot path.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::dump::{format_dump, DumpQueue};
use super::{Answer, Connection, Service};
use crate::handler::service::forward_service;
use crate::proto::{EnhancedCode, Event, Reply, Session};

/// Totals for `-c`, shared by every shard (only touched when counters are on).
#[derive(Debug)]
pub struct Counters {
    sessions: AtomicU64,
    messages: AtomicU64,
    recipients: AtomicU64,
    bytes: AtomicU64,
    /// Milliseconds after `start` of the last line printed.
    printed_ms: AtomicU64,
    start: Instant,
    /// Print the line when sessions end (`-c`); otherwise only count.
    print: bool,
}

impl Counters {
    /// Counters that print their line when sessions end (`print`, for `-c`) or only count.
    pub fn new(print: bool) -> Self {
        Self {
            sessions: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            recipients: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            printed_ms: AtomicU64::new(0),
            start: Instant::now(),
            print,
        }
    }

    /// The totals: (sessions, messages acknowledged, their recipients, their octets).
    pub fn totals(&self) -> [u64; 4] {
        [
            &self.sessions,
            &self.messages,
            &self.recipients,
            &self.bytes,
        ]
        .map(|a| a.load(Ordering::Relaxed))
    }
}

impl Counters {
    /// The counters line: `sessions=N messages=N recipients=N bytes=N`.
    pub fn line(&self) -> String {
        let [s, m, r, b] = self.totals();
        format!("counters: sessions={s} messages={m} recipients={r} bytes={b}")
    }

    /// A session ended: counts it, and prints the line unless one went out less than a
    /// second ago.
    fn session_ended(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        if !self.print {
            return;
        }
        let now = self.start.elapsed().as_millis() as u64 + 1000;
        let last = self.printed_ms.load(Ordering::Relaxed);
        if now >= last + 1000
            && self
                .printed_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            eprintln!("{}", self.line());
        }
    }
}

/// What the wrapper adds.
#[derive(Clone, Debug, Default)]
pub struct TargetOptions {
    /// Accept any AUTH credentials (the session must offer AUTH: `Extensions::auth`).
    pub auth_any: bool,
    /// Dump each accepted message here.
    pub dumps: Option<DumpQueue>,
    /// Counts of sessions and acknowledged messages (printed as they go with `-c`).
    pub counters: Option<Arc<Counters>>,
}

/// A service with the target options around it.
pub struct Target<S> {
    inner: Rc<RefCell<S>>,
    options: TargetOptions,
}

impl<S: Service> Target<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, options: TargetOptions) -> Self {
        Self {
            inner: Rc::new(RefCell::new(inner)),
            options,
        }
    }
}

/// One connection of a `Target`.
pub struct TargetConn<C> {
    inner: C,
    options: TargetOptions,
    message: Vec<u8>,
}

impl<S: Service> Service for Target<S> {
    type Conn = TargetConn<S::Conn>;

    forward_service!(all);

    fn open(this: &Rc<RefCell<Self>>, session: &Session) -> Self::Conn {
        let t = this.borrow();
        TargetConn {
            inner: S::open(&t.inner, session),
            options: t.options.clone(),
            message: Vec::new(),
        }
    }
}

impl<C: Connection> Connection for TargetConn<C> {
    fn event(&mut self, session: &Session, event: Event) -> Answer {
        match event {
            // Any credentials, unless the wrapped service refuses them (a fault rule).
            Event::Auth if self.options.auth_any => match self.inner.event(session, Event::Auth) {
                Answer::Now(Some(r)) if !r.is_positive() => Answer::Now(Some(r)),
                Answer::Now(_) => Answer::Now(Some(auth_ok())),
                Answer::Later(f) => Answer::Later(Box::pin(async move {
                    match f.await {
                        Some(r) if !r.is_positive() => Some(r),
                        _ => Some(auth_ok()),
                    }
                })),
                close @ Answer::Close { .. } => close,
            },
            Event::DataChunk(chunk) => {
                if self.options.dumps.is_some() {
                    chunk.extend_content(&mut self.message);
                }
                self.inner.event(session, Event::DataChunk(chunk))
            }
            Event::Reset => {
                self.message.clear();
                self.inner.event(session, Event::Reset)
            }
            Event::DataEnd => self.data_end(session),
            other => self.inner.event(session, other),
        }
    }

    fn close(&mut self, session: &Session) {
        self.inner.close(session);
        if let Some(c) = &self.options.counters {
            c.session_ended();
        }
    }
}

impl<C: Connection> TargetConn<C> {
    /// The inner answer, then (when it accepts) the dump, then the counters.
    fn data_end(&mut self, session: &Session) -> Answer {
        let block = self
            .options
            .dumps
            .as_ref()
            .map(|_| format_dump(session, &self.message));
        self.message = Vec::new();
        let inner = self.inner.event(session, Event::DataEnd);
        if matches!(inner, Answer::Close { .. }) {
            return inner;
        }
        let env = session.envelope();
        let counted = self
            .options
            .counters
            .clone()
            .map(|c| (c, env.rcpt_tos.len() as u64, env.data_size));
        let dumps = self.options.dumps.clone();
        if block.is_none() {
            if let (Answer::Now(r), Some((c, rcpts, size))) = (&inner, &counted) {
                if r.as_ref().is_none_or(Reply::is_positive) {
                    count(c, *rcpts, *size);
                }
            }
            if matches!(inner, Answer::Now(_)) {
                return inner;
            }
        }
        Answer::Later(Box::pin(async move {
            let reply = match inner {
                Answer::Now(r) => r,
                Answer::Later(f) => f.await,
                Answer::Close { reply, .. } => reply,
            };
            if reply.as_ref().is_some_and(|r| !r.is_positive()) {
                return reply;
            }
            if let (Some(q), Some(block)) = (dumps, block) {
                if let Some(refusal) = q.write(block).await {
                    return Some(refusal);
                }
            }
            if let Some((c, rcpts, size)) = counted {
                count(&c, rcpts, size);
            }
            reply
        }))
    }
}

fn auth_ok() -> Reply {
    Reply::new(235, EnhancedCode::new(2, 7, 0), "Authentication successful")
}

fn count(c: &Counters, recipients: u64, bytes: u64) {
    c.messages.fetch_add(1, Ordering::Relaxed);
    c.recipients.fetch_add(recipients, Ordering::Relaxed);
    c.bytes.fetch_add(bytes, Ordering::Relaxed);
}
