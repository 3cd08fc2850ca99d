//! Fault and latency injection for `sink` and `debug`: the load-test target that answers
//! like a real, imperfect server (smtp-sink's fault flags and a rules file; see `rules`).
//!
//! `Faulty<S>` wraps a service: each session event first meets the rule set; a rule that
//! fires answers instead (a reply, a hang-up, a 421, a delayed answer, a throttled or aborted
//! body), and otherwise the wrapped service answers as usual. Contract:
//! - per shard and lock-free on the hot path: the rules are read through `reload::Cached`
//!   (one atomic load per event while they do not change) and drawn from with the shard's
//!   own random generator, seeded `seed + shard`, so a run can be repeated;
//! - a new rule set (`PUT /faults`, SIGHUP re-reading `--faults`) reaches every shard at its
//!   next event; sessions in progress follow it from then on;
//! - every injected fault is counted by stage and action (`ringrelay_faults_injected_total`),
//!   and the delay injected (`ringrelay_faults_delay_seconds_total`), so a dashboard tells
//!   injected failures from real ones;
//! - with no rule configured the sink does not pay for this layer: the binary leaves it out.

pub mod dist;
pub mod matching;
pub mod rules;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::handler::service::forward_service;
use crate::handler::{Answer, Connection, Service};
use crate::metrics::snapshot::Snapshot;
use crate::proto::{CommandHook, EnhancedCode, Event, Reply, Session};
use crate::reload::{Cached, Swap};
pub use rules::{Action, RuleFile, RuleSet, Stage};

/// Process-wide fault settings: the rule set (replaceable while running) and smtp-sink's
/// `-M` / `-n` (stop after that many messages or sessions).
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    /// The rules.
    pub rules: Swap<RuleSet>,
    /// Stop the process (a graceful drain) after this many messages were accepted.
    pub stop_after_messages: Option<u64>,
    /// Stop after this many sessions.
    pub stop_after_sessions: Option<u64>,
    /// Counts towards the two limits, shared by every shard.
    pub counts: Arc<[AtomicU64; 2]>,
}

/// The rules as the admin listener's `/faults` document.
#[derive(Debug)]
pub struct FaultsDoc(pub Swap<RuleSet>);

impl crate::metrics::AdminDocument for FaultsDoc {
    fn get(&self) -> String {
        serde_json::to_string_pretty(&self.0.load().spec).unwrap_or_default() + "\n"
    }

    fn put(&self, body: &[u8]) -> Result<String, String> {
        let set = RuleSet::from_json(body)?;
        let n = set.rules.len();
        self.0.store(set);
        tracing::info!(target: crate::log::CONNECTION, "fault rules replaced over HTTP: {n} rules");
        Ok(format!("fault rules replaced: {n} rules"))
    }
}

/// What a shard's fault layer keeps: rules, random generator, counts not yet published.
struct Shared {
    config: FaultConfig,
    rules: Cached<RuleSet>,
    rng: RefCell<SmallRng>,
    injected: RefCell<[[u64; Action::NAMES.len()]; Stage::ALL.len()]>,
    delay_us: Cell<u64>,
}

/// A service with fault injection in front of it.
pub struct Faulty<S> {
    inner: Rc<RefCell<S>>,
    shared: Rc<Shared>,
}

impl<S: Service> Faulty<S> {
    /// Wraps `inner` (shard `shard`) with the rules of `config`.
    pub fn new(inner: S, config: FaultConfig, shard: usize) -> Self {
        let rules = Cached::new(config.rules.clone());
        let seed = rules.get().spec.seed.wrapping_add(shard as u64);
        Self {
            inner: Rc::new(RefCell::new(inner)),
            shared: Rc::new(Shared {
                config,
                rules,
                rng: RefCell::new(SmallRng::seed_from_u64(seed)),
                injected: RefCell::new([[0; Action::NAMES.len()]; Stage::ALL.len()]),
                delay_us: Cell::new(0),
            }),
        }
    }
}

/// One connection behind the fault layer.
pub struct FaultyConn<C> {
    inner: C,
    shared: Rc<Shared>,
    /// Read the body at most this fast (a `throttle` rule fired at DATA).
    throttle: Option<u64>,
    /// Abort the body at this time (an `abort` rule fired at DATA).
    abort_at: Option<Instant>,
    /// The start of the message's content, for header matches (bounded).
    head: Vec<u8>,
}

const HEAD_MAX: usize = 16 * 1024;

impl<S: Service> Service for Faulty<S> {
    type Conn = FaultyConn<S::Conn>;

    forward_service!(
        start,
        close,
        shutdown,
        pipelines_decisions,
        session_extensions,
        ehlo_keywords,
        exempt_from_client_limit,
        upstream_stats,
        mailman_stats,
    );

    fn open(this: &Rc<RefCell<Self>>, session: &Session) -> Self::Conn {
        let f = this.borrow();
        FaultyConn {
            inner: S::open(&f.inner, session),
            shared: f.shared.clone(),
            throttle: None,
            abort_at: None,
            head: Vec::new(),
        }
    }

    fn command_hook(&self) -> CommandHook {
        if self.shared.rules.get().needs_lines() {
            CommandHook::EveryLine
        } else {
            self.inner.borrow().command_hook()
        }
    }

    fn drain_metrics(&mut self, into: &mut Snapshot) {
        let mut injected = self.shared.injected.borrow_mut();
        for (a, b) in into.counters.faults.iter_mut().zip(injected.iter()) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        *injected = Default::default();
        into.counters.fault_delay_us += self.shared.delay_us.replace(0);
        self.inner.borrow_mut().drain_metrics(into);
    }
}

/// The stage an event stands for (`None`: no rule applies to it).
fn stage_of(session: &Session, event: &Event) -> Option<Stage> {
    Some(match event {
        Event::Connect => Stage::Connect,
        Event::Hello => match session.pending_helo() {
            Some((_, true)) => Stage::Ehlo,
            _ => Stage::Helo,
        },
        Event::Mail => Stage::Mail,
        Event::Rcpt => Stage::Rcpt,
        Event::DataStart => Stage::Data,
        // In LMTP the end of data is judged per recipient (each one can be failed).
        Event::DataEnd if session.config().lmtp => return None,
        Event::DataEnd | Event::RecipientVerdict => Stage::Dot,
        Event::ChunkEnd => Stage::Bdat,
        Event::Auth => Stage::Auth,
        Event::Command => {
            let line = session.pending_command()?;
            let verb = std::str::from_utf8(line.verb()).ok()?;
            Stage::parse(verb).filter(|s| s.is_line_only())?
        }
        _ => return None,
    })
}

fn header_names(head: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(head);
    text.split("\r\n")
        .take_while(|l| !l.is_empty())
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, _)| n.trim().to_ascii_lowercase())
        })
        .collect()
}

impl<C: Connection> FaultyConn<C> {
    fn count(&self, stage: Stage, action: usize) {
        let s = Stage::ALL.iter().position(|x| *x == stage).unwrap_or(0);
        self.shared.injected.borrow_mut()[s][action] += 1;
    }

    fn delay(&self, d: Duration) -> Duration {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_us.set(self.shared.delay_us.get() + us);
        d
    }

    /// The inner connection's answer, once `wait` has passed.
    fn later(&mut self, session: &Session, event: Event, wait: Duration) -> Answer {
        let inner = self.inner.event(session, event);
        Answer::Later(Box::pin(async move {
            crate::rt::sleep(wait).await;
            match inner {
                Answer::Now(r) => r,
                Answer::Later(f) => f.await,
                Answer::Close { reply, .. } => reply,
            }
        }))
    }

    /// Answers `event` with an injected refusal.
    fn refuse(&mut self, session: &Session, event: &Event, reply: Reply) -> Answer {
        if matches!(event, Event::DataEnd) {
            // The wrapped service collected this message: it is void.
            let _ = self.inner.event(session, Event::Reset);
        }
        Answer::Now(Some(reply))
    }

    /// A rule's verdict on `event`, if one fires.
    fn inject(&mut self, session: &Session, stage: Stage, event: &Event) -> Option<Fired> {
        let set = self.shared.rules.borrow();
        let triggers = stage == Stage::Rcpt && set.spec.address_triggers;
        if !set.has_stage(stage) && !triggers {
            return None;
        }
        let env = session.envelope();
        let one = match event {
            Event::RecipientVerdict => session.verdict_recipient().map(|(_, m)| m.as_str()),
            _ if stage == Stage::Rcpt => session.pending_recipient().map(|(m, _)| m.as_str()),
            _ => None,
        };
        if triggers {
            if let Some(reply) = one.and_then(rules::address_trigger) {
                return Some(Fired::Reply(reply));
            }
        }
        let all: Vec<&str> = if one.is_none() && set.needs_recipients(stage) {
            env.rcpt_tos.iter().map(|m| m.as_str()).collect()
        } else {
            Vec::new()
        };
        let recipients: &[&str] = match &one {
            Some(r) => std::slice::from_ref(r),
            None => &all,
        };
        let headers = if stage == Stage::Dot && set.needs_headers() {
            header_names(&self.head)
        } else {
            Vec::new()
        };
        let size = match stage {
            Stage::Dot => Some(env.data_size),
            _ => env.declared_size,
        };
        let facts = rules::Facts {
            client: Some(session.peer().ip()),
            sender: env.mail_from.as_ref().map(|m| m.as_str()),
            recipients,
            size,
            headers: &headers,
        };
        let mut rng = self.shared.rng.borrow_mut();
        set.decide(stage, &facts, &mut *rng)
            .map(|r| match r.reply() {
                Some(reply) => Fired::Reply(reply.clone()),
                None => Fired::Act(r.action.clone()),
            })
    }
}

impl<C: Connection> Connection for FaultyConn<C> {
    fn event(&mut self, session: &Session, event: Event) -> Answer {
        if let Event::DataChunk(chunk) = &event {
            if self.head.len() < HEAD_MAX && self.shared.rules.borrow().needs_headers() {
                chunk.extend_content(&mut self.head);
                self.head.truncate(HEAD_MAX);
            }
            if let Some(at) = self.abort_at.take() {
                return abort(at);
            }
            if let Some(rate) = self.throttle {
                let wait = Duration::from_secs_f64(chunk.wire().len() as f64 / rate as f64);
                let wait = self.delay(wait);
                return self.later(session, event, wait);
            }
            return self.inner.event(session, event);
        }
        if matches!(event, Event::Reset | Event::DataEnd | Event::Quit) {
            self.throttle = None;
            self.head.clear();
        }
        if matches!(event, Event::DataEnd) {
            if let Some(at) = self.abort_at.take() {
                return abort(at);
            }
        }
        if matches!(event, Event::Connect) {
            self.note_session();
        }
        let Some(stage) = stage_of(session, &event) else {
            if matches!(event, Event::DataEnd) {
                self.note_message();
            }
            return self.inner.event(session, event);
        };
        let Some(fired) = self.inject(session, stage, &event) else {
            if matches!(event, Event::DataEnd) {
                self.note_message();
            }
            return self.inner.event(session, event);
        };
        let action = match fired {
            Fired::Reply(reply) => {
                self.count(stage, Action::reply_index(reply.code()));
                return self.refuse(session, &event, reply);
            }
            Fired::Act(action) => action,
        };
        self.count(stage, action.index());
        match action {
            Action::Reply {
                code,
                enhanced,
                text,
            } => self.refuse(
                session,
                &event,
                Action::reply(code, enhanced.as_deref(), &text),
            ),
            Action::Disconnect => Answer::Close {
                reply: None,
                delay: Duration::ZERO,
            },
            Action::Close => Answer::Close {
                reply: Some(Reply::new(
                    421,
                    EnhancedCode::new(4, 3, 2),
                    format!("{} Service closing (injected fault)", session.hostname()),
                )),
                delay: Duration::ZERO,
            },
            Action::Delay { delay } => {
                let d = delay.sample(&mut *self.shared.rng.borrow_mut());
                let d = self.delay(d);
                if matches!(event, Event::DataEnd) {
                    self.note_message();
                }
                self.later(session, event, d)
            }
            Action::Throttle { bytes_per_second } => {
                self.throttle = Some(bytes_per_second);
                self.inner.event(session, event)
            }
            Action::Abort { delay } => {
                let d = delay.sample(&mut *self.shared.rng.borrow_mut());
                self.abort_at = Some(Instant::now() + d);
                self.inner.event(session, event)
            }
        }
    }

    fn close(&mut self, session: &Session) {
        self.inner.close(session);
    }
}

/// What fired: a reply ready to send (a reply rule's, built once when the rule was
/// validated, or an address trigger's), or another action.
enum Fired {
    Reply(Reply),
    Act(Action),
}

/// smtp-sink `-A`: at `at`, 550 and no more reading.
fn abort(at: Instant) -> Answer {
    Answer::Close {
        reply: Some(Reply::new(
            550,
            EnhancedCode::new(5, 3, 0),
            "Error: transaction aborted (injected fault)",
        )),
        delay: at.saturating_duration_since(Instant::now()),
    }
}

impl<C: Connection> FaultyConn<C> {
    /// A session began: smtp-sink `-n` stops the process once the count is reached.
    fn note_session(&self) {
        let c = &self.shared.config;
        if let Some(limit) = c.stop_after_sessions {
            if c.counts[1].fetch_add(1, Ordering::AcqRel) + 1 == limit {
                stop_process("sessions", limit);
            }
        }
    }

    /// A message reached its end of data unharmed: smtp-sink `-M`.
    fn note_message(&self) {
        let c = &self.shared.config;
        if let Some(limit) = c.stop_after_messages {
            if c.counts[0].fetch_add(1, Ordering::AcqRel) + 1 == limit {
                stop_process("messages", limit);
            }
        }
    }
}

/// Starts the graceful drain, as SIGTERM does.
fn stop_process(what: &str, n: u64) {
    tracing::info!(target: crate::log::CONNECTION, "{n} {what} reached: stopping");
    // SAFETY: a signal to this process; the server's handler drains and exits.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGTERM);
    }
}
