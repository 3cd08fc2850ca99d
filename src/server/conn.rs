//! One connection's life, shared by both I/O drivers: take input chunks, feed the session,
//! dispatch its events to the shard's handler, queue the batch of replies, repeat.
//!
//! Contract with the drivers (`ConnStream`): everything is a poll, so a connection's task
//! stores no I/O future (an idle connection costs little) and a timeout or a drain that wins
//! the race loses no input (it stays with the driver); `send` only queues (io_uring sends
//! everything a loop turn produced in one submission; epoll writes at once); `close` hands the
//! socket back to the driver, which ends it once the kernel has finished with it. Input is fed
//! as the driver's chunks (views of the DATA pool under io_uring), so message bodies reach the
//! handler without a copy.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::input::Input;
use super::observe::Observer;
use super::shard::Shard;
use super::stream::{flush, ConnStream};
use super::tls::Wire;
use super::transcript::Transcript;
use crate::handler::{Answer, Connection, Pending, Service};
use crate::metrics::labels::for_each_reply;
use crate::metrics::ShardRecorder;
use crate::proto::{EnhancedCode, Reply, Session, State, LOCAL_PEER};
use crate::rt;

/// Past the drain timeout, how long the last replies get to be written.
const ABANDON_FLUSH: Duration = Duration::from_secs(1);

/// Output queued beyond this waits for the peer to read before more input is taken.
const OUTPUT_HIGH: usize = 64 * 1024;

/// What ended a wait for input.
enum Woke {
    Input(io::Result<Option<Bytes>>),
    Timer,
    Drain,
    /// The drain timeout passed with the session still open.
    Abandon,
}

/// Serves one accepted connection until it closes; `peer` is `None` for a client on a
/// Unix-domain socket.
pub(crate) async fn serve<S: ConnStream, H: Service>(
    stream: S,
    peer: Option<core::net::SocketAddr>,
    key: usize,
    shard: Rc<Shard<H>>,
) {
    let started = Instant::now();
    let stream = Wire::new(stream);
    let mut input = Input::default();
    let real = peer.unwrap_or(LOCAL_PEER);
    let (peer, local) = match &shard.proxy {
        None => (real, peer.is_none()),
        Some(proxy) => match arrive_proxied(&stream, real, proxy, key, &shard, &mut input).await {
            Some(client) => (client.unwrap_or(real), client.is_none() && peer.is_none()),
            None => {
                stream.close();
                return;
            }
        },
    };
    let mut session = Session::new(shard.session_config.clone(), peer, Instant::now());
    if local {
        session.set_local();
    }
    let mut conn = H::open(&shard.handler, &session);
    let mut pending: Answers = VecDeque::new();
    let metrics = shard.metrics.as_ref();
    let mut observer = metrics.map(|_| Observer::default());
    // Armed lazily, moved only to an earlier deadline: a later one is noticed when it fires.
    let mut timer: Option<rt::Sleep> = None;
    session.set_observing(metrics.is_some());
    {
        let service = shard.handler.borrow();
        session.set_pipelined_decisions(service.pipelines_decisions());
        session.set_extensions(service.session_extensions(session.extensions()));
        session.set_command_hook(service.command_hook());
        let keywords = service.ehlo_keywords();
        if !keywords.is_empty() {
            session.set_ehlo_keywords(keywords);
        }
    }
    let client = session.client_label();
    tracing::debug!(target: crate::log::CONNECTION, %client, "connected");
    let mut transcript = Transcript::start(client.0);
    // Nothing more may be written: the peer is gone, or TLS could not start after its 220.
    let mut silent = false;
    loop {
        feed(
            &mut session,
            &mut input,
            observer.as_mut(),
            transcript.as_mut(),
            &shard,
            &mut conn,
            &mut pending,
        );
        if let Some((mut future, then)) = pending.pop_front() {
            // The handler is working on an answer (a relay waiting for its upstream). If it
            // is not ready, send what is, and wait; then go on with the input already here.
            let reply = match poll_once(&mut future).await {
                Poll::Ready(reply) => reply,
                Poll::Pending => {
                    send_output(&stream, &mut session, &shard, metrics);
                    match answer_or_abandon(&mut future, &shard, key).await {
                        Some(reply) => reply,
                        None => {
                            // The drain timeout passed: say 421 rather than a bare close.
                            drop(future);
                            pending.clear();
                            session.close_with(shutdown_reply(&session));
                            finish_pending(&mut session, &mut conn, &mut pending, &shard, key)
                                .await;
                            break;
                        }
                    }
                }
            };
            match then {
                Then::Reply => session.handler_reply(reply),
                Then::Nothing => {}
                Then::Close(None) => {
                    // The handler hangs up without a word (an injected fault).
                    pending.clear();
                    silent = true;
                    break;
                }
                Then::Close(Some(last)) => {
                    pending.clear();
                    session.close_with(last);
                }
            }
            continue;
        }
        if shard.draining() && is_idle(&session) {
            session.close_with(shutdown_reply(&session));
        }
        send_output(&stream, &mut session, &shard, metrics);
        if stream.unsent() > OUTPUT_HIGH && flush(&stream).await.is_err() {
            silent = true;
            break;
        }
        if session.starttls_requested() {
            // RFC 3207 §5: nothing may follow STARTTLS in cleartext; input that did (command
            // injection) ends the connection, as does a TLS setup that cannot start.
            let started = match &shard.tls {
                Some(config) if input.is_empty() => {
                    flush(&stream).await.is_ok() && stream.start(config.load()).is_ok()
                }
                _ => false,
            };
            if !started {
                silent = true;
                break;
            }
            session.tls_started();
        }
        if session.is_closed() {
            let max = session.config().max_errors;
            if max != 0 && session.error_count() >= max {
                tracing::info!(
                    target: crate::log::CONNECTION,
                    %client,
                    errors = session.error_count(),
                    "error budget spent: 421 and close"
                );
            }
            break;
        }
        input.settle(&session);
        session.set_stressed(shard.limit.stressed());
        let deadline = session.poll_timeout();
        // Watched whenever idle: a drain that began after the check above still wakes us.
        let watch_drain = is_idle(&session);
        if let Some(d) = deadline {
            match &mut timer {
                Some(t) if t.deadline() <= d => {}
                Some(t) => t.reset(d),
                None => timer = Some(rt::sleep_until(d)),
            }
        }
        let woke = poll_fn(|cx| {
            if let Poll::Ready(r) = stream.poll_recv(cx) {
                return Poll::Ready(Woke::Input(r));
            }
            if let (Some(t), Some(_)) = (timer.as_mut(), deadline) {
                if Pin::new(t).poll(cx).is_ready() {
                    return Poll::Ready(Woke::Timer);
                }
            }
            if watch_drain && shard.poll_drain(key, cx).is_ready() {
                return Poll::Ready(Woke::Drain);
            }
            if shard.poll_abandon(key, cx).is_ready() {
                return Poll::Ready(Woke::Abandon);
            }
            Poll::Pending
        })
        .await;
        match woke {
            Woke::Input(Ok(Some(chunk))) => {
                if let Some(m) = metrics {
                    m.record().counters.received_bytes += chunk.len() as u64;
                }
                input.push(chunk);
            }
            Woke::Input(_) => {
                silent = true;
                break;
            }
            Woke::Timer => {
                session.handle_timeout(rt::now());
                if session.is_closed() {
                    tracing::info!(target: crate::log::CONNECTION, %client, "timeout: 421 and close");
                    finish_pending(&mut session, &mut conn, &mut pending, &shard, key).await;
                    break;
                }
                // Fired early (the deadline moved on): wait for the real one.
                if let (Some(t), Some(d)) = (&mut timer, session.poll_timeout()) {
                    t.reset(d);
                }
            }
            Woke::Drain | Woke::Abandon => {
                // Idle when the drain began, or still busy (mid-message) when its time ran out.
                session.close_with(shutdown_reply(&session));
                finish_pending(&mut session, &mut conn, &mut pending, &shard, key).await;
                break;
            }
        }
    }
    if !session.is_closed() {
        // Peer went away or an I/O error: void any transaction in progress.
        session.close_with(Reply::new(
            421,
            EnhancedCode::new(4, 4, 0),
            "connection lost",
        ));
        finish_pending(&mut session, &mut conn, &mut pending, &shard, key).await;
    }
    if silent {
        // What the session says last is counted, not sent.
        let mut out = shard.scratch.borrow_mut();
        take_output(&mut session, &mut out, metrics);
        out.clear();
    } else {
        send_output(&stream, &mut session, &shard, metrics);
        stream.goodbye();
    }
    // What was queued goes out (the 220 before a failed STARTTLS, the 221 after QUIT), within
    // the idle timeout: a peer that does not read must not keep the task alive. Past the
    // drain timeout the process is about to go: a moment is all it gets.
    let limit = if shard.abandoned() {
        ABANDON_FLUSH
    } else {
        session.config().idle_timeout
    };
    let _ = rt::timeout(limit, flush(&stream)).await;
    stream.close();
    if let (Some(obs), Some(rec)) = (observer.as_mut(), &shard.metrics) {
        obs.record(&mut session, rec);
    }
    conn.close(&session);
    tracing::debug!(
        target: crate::log::CONNECTION,
        %client,
        duration_ms = started.elapsed().as_millis() as u64,
        errors = session.error_count(),
        "closed"
    );
    if let Some(m) = metrics {
        let lived = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        m.record().session.record(lived);
    }
}

/// Behind the PROXY protocol: the client's address from the header (what followed it goes
/// to `input`), or `None` when the connection is refused (to be closed).
async fn arrive_proxied<S: ConnStream, H: Service>(
    stream: &Wire<S>,
    real: core::net::SocketAddr,
    proxy: &super::proxy::ProxyProtocol,
    key: usize,
    shard: &Shard<H>,
    input: &mut Input,
) -> Option<Option<core::net::SocketAddr>> {
    match super::proxy::arrive(stream, real, proxy).await {
        Ok(arrival) => {
            if let Some(rest) = arrival.rest {
                input.push(rest);
            }
            if let Some(client) = arrival.proxied {
                if let Err(reply) = shard.admit_client(key, client.ip()) {
                    stream.send(reply);
                    let _ = rt::timeout(ABANDON_FLUSH, flush(stream)).await;
                    return None;
                }
            }
            Some(arrival.proxied)
        }
        Err(reason) => {
            shard.count_rejected(reason);
            None
        }
    }
}

/// Answers being worked out, oldest first, each with what to do once it resolves.
type Answers = VecDeque<(Pending, Then)>;

/// What a resolved pending answer means.
enum Then {
    /// The session waits for it: its reply answers the decision.
    Reply,
    /// A notification's backpressure: nothing more.
    Nothing,
    /// The handler ends the connection: this last reply (if any), then close.
    Close(Option<Reply>),
}

/// Feeds the queued input to the session and answers its events, until it can use no more,
/// then records what the session observed when metrics are on.
fn feed<H: Service>(
    session: &mut Session,
    input: &mut Input,
    observer: Option<&mut Observer>,
    mut transcript: Option<&mut Transcript>,
    shard: &Shard<H>,
    conn: &mut H::Conn,
    pending: &mut Answers,
) {
    let now = rt::now();
    // The first round hands out events raised without input (the greeting's Connect).
    let mut progressed = true;
    while progressed {
        progressed = dispatch(session, conn, pending);
        progressed |= input.step(session, now, transcript.as_deref_mut());
    }
    if let (Some(obs), Some(rec)) = (observer, &shard.metrics) {
        obs.record(session, rec);
    }
}

/// Queues the session's pending replies (if any) on the stream.
fn send_output<S: ConnStream, H: Service>(
    stream: &Wire<S>,
    session: &mut Session,
    shard: &Shard<H>,
    metrics: Option<&ShardRecorder>,
) {
    if !session.has_output() {
        return;
    }
    let mut out = shard.scratch.borrow_mut();
    take_output(session, &mut out, metrics);
    stream.send(&out);
    out.clear();
}

/// Appends the session's pending replies to `out`, counting them when metrics are on.
fn take_output(session: &mut Session, out: &mut Vec<u8>, metrics: Option<&ShardRecorder>) {
    let mark = out.len();
    session.poll_output(out);
    Transcript::replies(&out[mark..]);
    if let (Some(m), true) = (metrics, out.len() > mark) {
        let mut r = m.record();
        for_each_reply(&out[mark..], |code| r.counters.reply(code));
    }
}

fn shutdown_reply(session: &Session) -> Reply {
    Reply::new(
        421,
        EnhancedCode::new(4, 3, 2),
        format!(
            "{} Service shutting down, closing connection",
            session.hostname()
        ),
    )
}

/// Idle: between transactions and not waiting on the handler.
fn is_idle(session: &Session) -> bool {
    matches!(session.state(), State::ExpectHelo | State::ExpectMail) && !session.is_awaiting_reply()
}

/// Polls a pending answer once (with the task's waker, so awaiting it later is fine).
async fn poll_once(future: &mut Pending) -> Poll<Option<Reply>> {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}

/// Hands queued events to the connection's handler, in order. Events wait behind a pending
/// answer, except decisions behind decisions when the session pipelines them (the handler has
/// then been told of each before the first is answered). Returns true if an event was handed
/// over (the session may then use more buffered input).
fn dispatch<C: Connection>(session: &mut Session, conn: &mut C, pending: &mut Answers) -> bool {
    let mut progressed = false;
    loop {
        if !pending.is_empty() {
            let all_decisions = pending.iter().all(|(_, then)| matches!(then, Then::Reply));
            if !(session.pipelines_decisions() && all_decisions && session.is_awaiting_reply()) {
                break;
            }
        }
        let Some(ev) = session.poll_event() else {
            break;
        };
        progressed = true;
        let needs_reply = ev.needs_reply();
        match conn.event(session, ev) {
            Answer::Now(reply) => {
                if !needs_reply {
                    continue;
                }
                if pending.is_empty() {
                    session.handler_reply(reply);
                } else {
                    // Answers go to the session in the order the decisions were raised.
                    let ready: Pending = Box::pin(std::future::ready(reply));
                    pending.push_back((ready, Then::Reply));
                }
            }
            Answer::Later(future) => {
                let then = if needs_reply {
                    Then::Reply
                } else {
                    Then::Nothing
                };
                pending.push_back((future, then));
            }
            Answer::Close { reply, delay } => {
                let wait: Pending = Box::pin(async move {
                    if !delay.is_zero() {
                        rt::sleep(delay).await;
                    }
                    None
                });
                pending.push_back((wait, Then::Close(reply)));
            }
        }
    }
    progressed
}

/// Ends a closing session's events: awaits what is pending, then hands over the rest. Once
/// the drain timeout has passed it waits for nothing: answers still pending are dropped and
/// the session closes with 421 (if it had not closed already).
async fn finish_pending<H: Service>(
    session: &mut Session,
    conn: &mut H::Conn,
    pending: &mut Answers,
    shard: &Shard<H>,
    key: usize,
) {
    loop {
        while let Some((mut future, then)) = pending.pop_front() {
            match answer_or_abandon(&mut future, shard, key).await {
                Some(reply) if matches!(then, Then::Reply) => session.handler_reply(reply),
                Some(_) => {}
                None => {
                    pending.clear();
                    session.close_with(shutdown_reply(session));
                }
            }
        }
        dispatch(session, conn, pending);
        if pending.is_empty() {
            break;
        }
    }
}

/// Awaits a pending answer; `None` if the drain timeout passes first.
async fn answer_or_abandon<H: Service>(
    future: &mut Pending,
    shard: &Shard<H>,
    key: usize,
) -> Option<Option<Reply>> {
    poll_fn(|cx| {
        if let Poll::Ready(reply) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(reply));
        }
        if shard.poll_abandon(key, cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}
