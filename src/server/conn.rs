//! One connection's life, shared by both I/O drivers: read, feed the session, dispatch its
//! events to the shard's handler, write the batch of replies, repeat.
//!
//! Contract with the drivers (`ConnStream`): an operation, once started, is always awaited to
//! completion; a timeout or drain never drops an in-flight read. Instead the socket's read side
//! is shut down, which completes the read, and the session then says 421. This is what keeps
//! io_uring from leaving an orphaned read in the kernel that would swallow later bytes.

use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use bytes::BytesMut;

use super::observe::Observer;
use super::shard::Shard;
use super::tls::Wire;
use crate::handler::{Answer, Connection, Pending, Service};
use crate::metrics::labels::for_each_reply;
use crate::metrics::ShardRecorder;
use crate::proto::{EnhancedCode, Reply, Session, State};

/// Smallest read a connection posts; grows while reads fill it.
const MIN_READ: usize = 4096;
/// Largest read a connection posts.
const MAX_READ: usize = 64 * 1024;

/// A connected socket as the connection logic needs it; implemented by each driver.
pub(crate) trait ConnStream {
    /// Reads into `buf`'s spare capacity, appending; returns the buffer back.
    async fn read(&self, buf: BytesMut) -> (io::Result<usize>, BytesMut);
    /// Writes all of `buf`; returns the buffer back.
    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>);
    /// Shuts down the read side so a pending read completes.
    fn shutdown_read(&self);
}

/// Why the read wait ended early.
enum Wake {
    Data,
    Timeout,
    Drain,
}

/// Serves one accepted connection until it closes.
pub(crate) async fn serve<S: ConnStream, H: Service>(
    stream: S,
    peer: core::net::SocketAddr,
    shard: Rc<Shard<H>>,
) {
    let started = Instant::now();
    let stream = Wire::new(stream);
    let mut session = Session::new(shard.session_config.clone(), peer, started);
    let mut buf = BytesMut::with_capacity(MIN_READ);
    let mut out: Vec<u8> = Vec::with_capacity(512);
    let mut conn = H::open(&shard.handler, &session);
    let mut pending: Answers = VecDeque::new();
    let mut drain = shard.drain.clone();
    let mut read_size = MIN_READ;
    let metrics = shard.metrics.as_ref();
    let mut observer = metrics.map(|_| Observer::default());
    session.set_observing(metrics.is_some());
    {
        let service = shard.handler.borrow();
        session.set_pipelined_decisions(service.pipelines_decisions());
        session.set_extensions(service.session_extensions(session.extensions()));
    }
    loop {
        feed(
            &mut session,
            &mut buf,
            observer.as_mut(),
            &shard,
            &mut conn,
            &mut pending,
        );
        if let Some((mut future, needs_reply)) = pending.pop_front() {
            // The handler is working on an answer (a relay waiting for its upstream). If it
            // is not ready, send what is, and wait; then go on with the input already buffered.
            let reply = match poll_once(&mut future).await {
                Poll::Ready(reply) => reply,
                Poll::Pending => {
                    if !send_output(&stream, &mut session, &mut out, metrics).await {
                        // The client is gone: its answers are moot. They run on tokio's
                        // reactor, never io_uring, so dropping them cancels cleanly.
                        pending.clear();
                        break;
                    }
                    future.await
                }
            };
            if needs_reply {
                session.handler_reply(reply);
            }
            continue;
        }
        if *drain.borrow() && is_idle(&session) {
            session.close_with(shutdown_reply(&session));
        }
        if !send_output(&stream, &mut session, &mut out, metrics).await {
            break;
        }
        if session.starttls_requested() {
            // RFC 3207 §5: nothing may follow STARTTLS in cleartext; input that did (command
            // injection) ends the connection, as does a TLS setup that cannot start.
            let started = match &shard.tls {
                Some(config) if buf.is_empty() => stream.start(config.clone()).is_ok(),
                _ => false,
            };
            if !started {
                break;
            }
            session.tls_started();
        }
        if session.is_closed() {
            break;
        }
        if buf.capacity() - buf.len() < read_size / 2 {
            buf.reserve(read_size);
        }
        let deadline = session.poll_timeout();
        // Watched whenever idle: a drain that began after the check above still wakes us.
        let watch_drain = is_idle(&session);
        let read = stream.read(buf);
        tokio::pin!(read);
        let mut wake = Wake::Data;
        let (res, b) = tokio::select! {
            r = &mut read => r,
            _ = sleep_until(deadline) => {
                wake = Wake::Timeout;
                stream.shutdown_read();
                read.await
            }
            _ = drain.changed(), if watch_drain => {
                wake = Wake::Drain;
                stream.shutdown_read();
                read.await
            }
        };
        buf = b;
        match res {
            Ok(n) if n > 0 => {
                if let Some(m) = metrics {
                    m.record().counters.received_bytes += n as u64;
                }
                if n >= read_size && read_size < MAX_READ {
                    read_size *= 2;
                }
                if !matches!(wake, Wake::Data) {
                    // Bytes raced the shutdown: take them, then end the session below.
                    feed(
                        &mut session,
                        &mut buf,
                        observer.as_mut(),
                        &shard,
                        &mut conn,
                        &mut pending,
                    );
                }
            }
            _ if matches!(wake, Wake::Data) => break,
            _ => {}
        }
        match wake {
            Wake::Data => {}
            Wake::Timeout => {
                session.handle_timeout(Instant::now());
                if !session.is_closed() {
                    // Input arrived just in time, but the read side is gone: end politely.
                    session.close_with(Reply::new(
                        421,
                        EnhancedCode::new(4, 4, 2),
                        "Error: timeout exceeded",
                    ));
                }
            }
            Wake::Drain => session.close_with(shutdown_reply(&session)),
        }
        if !matches!(wake, Wake::Data) {
            finish_pending(&mut session, &mut conn, &mut pending).await;
            take_output(&mut session, &mut out, metrics);
            let _ = stream.write_all(out).await;
            break;
        }
    }
    if !session.is_closed() {
        // Peer went away or an I/O error: void any transaction in progress.
        session.close_with(Reply::new(
            421,
            EnhancedCode::new(4, 4, 0),
            "connection lost",
        ));
        finish_pending(&mut session, &mut conn, &mut pending).await;
    }
    if let (Some(obs), Some(rec)) = (observer.as_mut(), &shard.metrics) {
        obs.record(&mut session, rec);
    }
    conn.close(&session);
    if let Some(m) = metrics {
        let lived = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        m.record().session.record(lived);
    }
}

/// Answers being worked out, oldest first, each with whether the session waits for it.
type Answers = VecDeque<(Pending, bool)>;

/// Feeds the buffered input to the session and answers its events, until it can use no
/// more, then records what the session observed when metrics are on.
fn feed<H: Service>(
    session: &mut Session,
    buf: &mut BytesMut,
    observer: Option<&mut Observer>,
    shard: &Shard<H>,
    conn: &mut H::Conn,
    pending: &mut Answers,
) {
    loop {
        session.handle_input_buf(Instant::now(), buf);
        if !dispatch(session, conn, pending) {
            break;
        }
    }
    if let (Some(obs), Some(rec)) = (observer, &shard.metrics) {
        obs.record(session, rec);
    }
}

/// Writes the session's pending replies (if any) in one write; false if the write failed.
async fn send_output<S: ConnStream>(
    stream: &S,
    session: &mut Session,
    out: &mut Vec<u8>,
    metrics: Option<&ShardRecorder>,
) -> bool {
    take_output(session, out, metrics);
    if out.is_empty() {
        return true;
    }
    let (res, mut o) = stream.write_all(std::mem::take(out)).await;
    o.clear();
    *out = o;
    res.is_ok()
}

/// Appends the session's pending replies to `out`, counting them when metrics are on.
fn take_output(session: &mut Session, out: &mut Vec<u8>, metrics: Option<&ShardRecorder>) {
    let mark = out.len();
    session.poll_output(out);
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

/// Hands queued events to the connection's handler, in order. Events wait behind a pending
/// answer, except decisions behind decisions when the session pipelines them (the handler has
/// then been told of each before the first is answered). Returns true if an event was handed
/// over (the session may then use more buffered input).
fn dispatch<C: Connection>(session: &mut Session, conn: &mut C, pending: &mut Answers) -> bool {
    let mut progressed = false;
    loop {
        if !pending.is_empty() {
            let all_decisions = pending.iter().all(|(_, needs_reply)| *needs_reply);
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
                    pending.push_back((ready, true));
                }
            }
            Answer::Later(future) => pending.push_back((future, needs_reply)),
        }
    }
    progressed
}

/// Ends a closing session's events: awaits what is pending, then hands over the rest.
async fn finish_pending<C: Connection>(session: &mut Session, conn: &mut C, pending: &mut Answers) {
    loop {
        while let Some((future, needs_reply)) = pending.pop_front() {
            let reply = future.await;
            if needs_reply {
                session.handler_reply(reply);
            }
        }
        dispatch(session, conn, pending);
        if pending.is_empty() {
            break;
        }
    }
}
