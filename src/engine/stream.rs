//! An accepted connection on the engine: a multishot receive into the shard's DATA pool and
//! queued sends, one per loop turn.
//!
//! Receiving: while the connection wants input, one multishot receive is armed; each completion
//! carries a pool buffer, queued here as a `Bytes` view until the connection takes it. A
//! connection that stops taking input (waiting for its handler) holds at most `PAUSE_AT`
//! buffers: then the receive is cancelled, and the bytes wait in the socket (TCP flow control)
//! until the queue drains. An empty pool ends the receive with ENOBUFS; the connection is parked
//! and armed again when buffers come back. Bytes are never lost or reordered: there is never
//! more than one receive per socket, and the queue is consumed in order.
//!
//! Sending: `send` appends to the connection's output; at the end of the loop turn the engine
//! submits one send per connection with output, all in the same `io_uring_enter`.
//!
//! Closing: `close` flushes; then (as on any drop of a `Stream`) the engine cancels the
//! receive and any send still in flight, and closes the descriptor only after their final
//! completions have arrived, so no operation can outlive the descriptor number.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use io_uring::{cqueue, opcode, types};

use super::{with_core, Core, Tag};

/// Buffers queued on a connection that is not waiting for input (busy with its handler)
/// before its receive is paused.
const PAUSE_AT: usize = 4;
/// Queue length under which a paused receive is armed again.
const RESUME_BELOW: usize = 2;

/// Where a connection's receive stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arm {
    /// No receive in the kernel.
    Idle,
    /// A multishot receive is in the kernel.
    Armed,
    /// Cancelled (paused); its final completion has not arrived yet.
    Cancelling,
    /// Ended by an empty pool; waiting in the engine's list for buffers.
    Starved,
}

/// How the input ended.
#[derive(Clone, Copy, Debug)]
enum End {
    Eof,
    Error(i32),
}

struct RecvSide {
    arm: Arm,
    chunks: VecDeque<Bytes>,
    end: Option<End>,
    waker: Option<Waker>,
    /// The connection's last `poll_recv` found nothing: it is waiting for input and will take
    /// everything queued when it runs next, so its receive is never paused meanwhile.
    waiting: bool,
}

struct SendSide {
    /// Output not handed to the kernel yet.
    queued: Vec<u8>,
    /// Output the kernel is sending (never touched while `busy`).
    inflight: Vec<u8>,
    offset: usize,
    busy: bool,
    dirty: bool,
    error: Option<i32>,
    waker: Option<Waker>,
}

/// A connection's state, shared by its `Stream` handle and the engine's routing table.
pub(crate) struct StreamShared {
    fd: RawFd,
    key: Cell<usize>,
    /// The handle is gone (closed or dropped): finish once the kernel is done.
    released: Cell<bool>,
    recv: RefCell<RecvSide>,
    send: RefCell<SendSide>,
}

/// An accepted connection.
pub struct Stream {
    shared: Rc<StreamShared>,
}

impl Stream {
    /// Takes over an accepted socket (on the engine's thread).
    pub(crate) fn from_fd(fd: RawFd) -> Stream {
        let shared = Rc::new(StreamShared {
            fd,
            key: Cell::new(usize::MAX),
            released: Cell::new(false),
            recv: RefCell::new(RecvSide {
                arm: Arm::Idle,
                chunks: VecDeque::new(),
                end: None,
                waker: None,
                waiting: false,
            }),
            send: RefCell::new(SendSide {
                queued: Vec::new(),
                inflight: Vec::new(),
                offset: 0,
                busy: false,
                dirty: false,
                error: None,
                waker: None,
            }),
        });
        with_core(|c| {
            let key = c.streams.borrow_mut().insert(shared.clone());
            shared.key.set(key);
        });
        Stream { shared }
    }

    /// The socket's descriptor (for socket options).
    pub fn fd(&self) -> RawFd {
        self.shared.fd
    }

    /// The next chunk of input (a view of a pool buffer), `None` at the end of input.
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn recv(&self) -> io::Result<Option<Bytes>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// `recv` as a poll: stores the task's waker when nothing is there yet.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        let s = &self.shared;
        let mut r = s.recv.borrow_mut();
        if let Some(chunk) = r.chunks.pop_front() {
            r.waiting = false;
            if r.arm == Arm::Idle && r.end.is_none() && r.chunks.len() < RESUME_BELOW {
                arm(s, &mut r);
            }
            return Poll::Ready(Ok(Some(chunk)));
        }
        r.waiting = true;
        match r.end {
            Some(End::Eof) => return Poll::Ready(Ok(None)),
            Some(End::Error(e)) => return Poll::Ready(Err(io::Error::from_raw_os_error(e))),
            None => {}
        }
        if r.arm == Arm::Idle {
            arm(s, &mut r);
        }
        match &r.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => r.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Queues `data`; it goes out with this loop turn's submission.
    pub fn send(&self, data: &[u8]) {
        let s = &self.shared;
        let mut w = s.send.borrow_mut();
        if w.error.is_some() || data.is_empty() {
            return;
        }
        w.queued.extend_from_slice(data);
        if !w.dirty && !w.busy {
            w.dirty = true;
            with_core(|c| c.dirty.borrow_mut().push(s.clone()));
        }
    }

    /// Octets queued or being sent.
    pub fn unsent(&self) -> usize {
        let w = self.shared.send.borrow();
        w.queued.len() + (w.inflight.len() - w.offset.min(w.inflight.len()))
    }

    /// Waits until everything queued has been sent (or sending failed).
    pub async fn flush(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// `flush` as a poll.
    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut w = self.shared.send.borrow_mut();
        if let Some(e) = w.error {
            return Poll::Ready(Err(io::Error::from_raw_os_error(e)));
        }
        if !w.busy && w.queued.is_empty() {
            return Poll::Ready(Ok(()));
        }
        w.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Sends what is queued, then shuts the connection down; the engine closes the socket once
    /// the kernel has finished with it.
    pub async fn close(self) {
        let _ = self.flush().await;
        // Drop does the rest.
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let s = &self.shared;
        s.released.set(true);
        if !super::is_current() {
            return;
        }
        {
            let mut w = s.send.borrow_mut();
            w.queued.clear();
        }
        // End the receive (and a send stuck on a peer that does not read) by cancelling them:
        // cancellation by user data runs inline at submission, whereas an IORING_OP_SHUTDOWN
        // names the descriptor and runs later on a worker, possibly after the descriptor was
        // closed and its number reused by the next accepted connection.
        let key = s.key.get();
        let recv_armed = {
            let mut r = s.recv.borrow_mut();
            let armed = r.arm == Arm::Armed;
            if armed {
                r.arm = Arm::Cancelling;
            }
            armed
        };
        let busy = s.send.borrow().busy;
        with_core(|c| {
            for (armed, tag) in [(recv_armed, Tag::Recv), (busy, Tag::Send)] {
                if armed {
                    c.cancel(tag.user_data(key));
                }
            }
        });
        with_core(|c| finish_if_done(c, s));
    }
}

/// Arms the multishot receive.
fn arm(s: &StreamShared, r: &mut RecvSide) {
    let e = opcode::RecvMulti::new(types::Fd(s.fd), super::pool::GROUP)
        .build()
        .user_data(Tag::Recv.user_data(s.key.get()));
    // SAFETY: the receive writes only into pool buffers, which outlive the ring's use of them.
    with_core(|c| unsafe { c.ring.borrow_mut().push(&e) });
    r.arm = Arm::Armed;
}

/// A receive completion.
pub(crate) fn on_recv(
    c: &Core,
    s: &Rc<StreamShared>,
    res: i32,
    flags: u32,
    woken: &mut Vec<Waker>,
) {
    let more = cqueue::more(flags);
    let mut r = s.recv.borrow_mut();
    let mut starved = false;
    if res > 0 {
        let bid = cqueue::buffer_select(flags).expect("a receive with data names its buffer");
        let chunk = c.pool.take(bid, res as usize, cqueue::buffer_more(flags));
        if !s.released.get() && r.end.is_none() {
            r.chunks.push_back(chunk);
            if more && r.arm == Arm::Armed && !r.waiting && r.chunks.len() >= PAUSE_AT {
                c.cancel(Tag::Recv.user_data(s.key.get()));
                r.arm = Arm::Cancelling;
            }
        }
    } else if res == 0 {
        r.end = Some(End::Eof);
    } else if res == -libc::ENOBUFS {
        c.pool.count_exhausted();
        starved = true;
    } else if res != -libc::ECANCELED {
        r.end.get_or_insert(End::Error(-res));
    }
    if !more {
        r.arm = if starved && r.end.is_none() && !s.released.get() {
            c.starved.borrow_mut().push(s.clone());
            Arm::Starved
        } else {
            Arm::Idle
        };
    }
    if let Some(w) = r.waker.take() {
        woken.push(w);
    }
    drop(r);
    finish_if_done(c, s);
}

/// Arms again a receive that found the pool empty, if the connection still wants input.
pub(crate) fn rearm_starved(_c: &Core, s: &Rc<StreamShared>) {
    let mut r = s.recv.borrow_mut();
    if r.arm == Arm::Starved {
        r.arm = Arm::Idle;
        if !s.released.get() && r.end.is_none() {
            arm(s, &mut r);
        }
    }
}

/// Submits the connection's queued output (one send).
pub(crate) fn start_send(c: &Core, s: &Rc<StreamShared>) {
    let mut w = s.send.borrow_mut();
    w.dirty = false;
    if w.busy || w.queued.is_empty() || w.error.is_some() {
        return;
    }
    let w = &mut *w;
    std::mem::swap(&mut w.queued, &mut w.inflight);
    w.queued.clear();
    w.offset = 0;
    w.busy = true;
    push_send(c, s, w);
}

fn push_send(c: &Core, s: &StreamShared, w: &SendSide) {
    let rest = &w.inflight[w.offset..];
    let e = opcode::Send::new(types::Fd(s.fd), rest.as_ptr(), rest.len() as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(Tag::Send.user_data(s.key.get()));
    // SAFETY: `inflight` is not touched while `busy`, and the shared state outlives the send
    // (the engine's table holds it until the completion).
    unsafe { c.ring.borrow_mut().push(&e) };
}

/// A send completion.
pub(crate) fn on_send(c: &Core, s: &Rc<StreamShared>, res: i32, woken: &mut Vec<Waker>) {
    let mut w = s.send.borrow_mut();
    w.busy = false;
    if res < 0 {
        w.error = Some(-res);
        w.queued.clear();
        w.inflight.clear();
    } else {
        w.offset += res as usize;
        if w.offset < w.inflight.len() {
            w.busy = true;
            push_send(c, s, &w);
            return;
        }
        w.inflight.clear();
        if !w.queued.is_empty() && !s.released.get() {
            drop(w);
            start_send(c, s);
            return;
        }
    }
    if let Some(waker) = w.waker.take() {
        woken.push(waker);
    }
    drop(w);
    finish_if_done(c, s);
}

/// Closes the socket once its handle is gone and the kernel has finished with it.
fn finish_if_done(c: &Core, s: &Rc<StreamShared>) {
    if !s.released.get() {
        return;
    }
    // Output is discarded on release, so a pending `dirty` mark never sends anything.
    let quiet = !s.send.borrow().busy && matches!(s.recv.borrow().arm, Arm::Idle | Arm::Starved);
    if !quiet {
        return;
    }
    let key = s.key.replace(usize::MAX);
    if key == usize::MAX {
        return;
    }
    c.streams.borrow_mut().try_remove(key);
    s.recv.borrow_mut().chunks.clear();
    let e = opcode::Close::new(types::Fd(s.fd))
        .build()
        .user_data(Tag::Ignore.user_data(0));
    // SAFETY: points to nothing; no operation on this descriptor remains.
    unsafe { c.ring.borrow_mut().push(&e) };
}

/// Ends every connection whose handle is gone (the engine is stopping).
pub(crate) fn finish_released(c: &Core) {
    let all: Vec<Rc<StreamShared>> = c.streams.borrow().iter().map(|(_, s)| s.clone()).collect();
    for s in all {
        finish_if_done(c, &s);
    }
}
