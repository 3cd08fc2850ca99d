//! A listening socket on the engine: one multishot accept, whose completions queue accepted
//! descriptors until the accept loop takes them.
//!
//! A listener is a TCP or a Unix-domain (stream) socket; the engine treats both alike, and
//! only the peer's address differs (a Unix-domain client has none to report).
//!
//! Closing cancels the multishot accept and waits for its final completion before the
//! listening socket is closed; connections accepted in the meantime are handed back to the
//! caller (to be told 421), never dropped silently.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};

use io_uring::{cqueue, opcode, types};

use super::stream::Stream;
use super::{with_core, Core, Tag};

struct AcceptSide {
    ready: VecDeque<Result<RawFd, i32>>,
    armed: bool,
    closing: bool,
    waker: Option<Waker>,
}

/// A listener's state, shared by its handle and the engine's routing table.
pub(crate) struct ListenerShared {
    socket: OwnedFd,
    /// A TCP listener (its peers have an address), not a Unix-domain one.
    inet: bool,
    key: Cell<usize>,
    st: RefCell<AcceptSide>,
}

/// A listening socket.
pub struct Listener {
    shared: Rc<ListenerShared>,
}

impl Listener {
    /// Takes over a bound, listening TCP socket (on the engine's thread).
    pub fn from_std(socket: std::net::TcpListener) -> Listener {
        Self::from_fd(socket.into(), true)
    }

    /// Takes over a bound, listening Unix-domain socket (on the engine's thread).
    pub fn from_unix(socket: std::os::unix::net::UnixListener) -> Listener {
        Self::from_fd(socket.into(), false)
    }

    fn from_fd(socket: OwnedFd, inet: bool) -> Listener {
        let shared = Rc::new(ListenerShared {
            socket,
            inet,
            key: Cell::new(usize::MAX),
            st: RefCell::new(AcceptSide {
                ready: VecDeque::new(),
                armed: false,
                closing: false,
                waker: None,
            }),
        });
        with_core(|c| {
            shared
                .key
                .set(c.listeners.borrow_mut().insert(shared.clone()))
        });
        Listener { shared }
    }

    /// The listening descriptor.
    pub fn fd(&self) -> RawFd {
        self.shared.socket.as_raw_fd()
    }

    /// The next connection and its peer's address (`None` on a Unix-domain listener).
    pub async fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        let fd = std::future::poll_fn(|cx| {
            let mut st = self.shared.st.borrow_mut();
            if let Some(r) = st.ready.pop_front() {
                return Poll::Ready(r.map_err(io::Error::from_raw_os_error));
            }
            if st.closing {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::ConnectionAborted)));
            }
            if !st.armed {
                arm(&self.shared);
                st.armed = true;
            }
            st.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        let stream = Stream::from_fd(fd);
        let peer = self.shared.inet.then(|| peer_of(fd));
        Ok((stream, peer))
    }

    /// Stops accepting: cancels the multishot accept, waits for its end, closes the socket.
    /// Returns the connections the kernel accepted that nobody took yet.
    pub async fn close(self) -> Vec<Stream> {
        let shared = self.shared.clone();
        stop_accepting(&shared);
        std::future::poll_fn(|cx| {
            let mut st = shared.st.borrow_mut();
            if !st.armed {
                return Poll::Ready(());
            }
            st.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        with_core(|c| c.listeners.borrow_mut().try_remove(shared.key.get()));
        let ready = std::mem::take(&mut shared.st.borrow_mut().ready);
        ready
            .into_iter()
            .filter_map(Result::ok)
            .map(Stream::from_fd)
            .collect()
        // The socket closes when the last reference (this one) drops.
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if !super::is_current() {
            return;
        }
        self.shared.st.borrow_mut().waker = None;
        stop_accepting(&self.shared);
        if !self.shared.st.borrow().armed {
            forget(&self.shared);
        }
    }
}

/// Marks the listener closing and cancels its accept.
fn stop_accepting(l: &ListenerShared) {
    let mut st = l.st.borrow_mut();
    if st.closing {
        return;
    }
    st.closing = true;
    if st.armed {
        with_core(|c| c.cancel(Tag::Accept.user_data(l.key.get())));
    }
}

/// Removes a closed listener from the engine's table, closing what it accepted unclaimed.
fn forget(l: &ListenerShared) {
    with_core(|c| c.listeners.borrow_mut().try_remove(l.key.get()));
    for fd in std::mem::take(&mut l.st.borrow_mut().ready)
        .into_iter()
        .flatten()
    {
        // SAFETY: an accepted descriptor nobody took; closing it refuses the connection.
        unsafe { libc::close(fd) };
    }
}

fn arm(l: &ListenerShared) {
    let e = opcode::AcceptMulti::new(types::Fd(l.socket.as_raw_fd()))
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(Tag::Accept.user_data(l.key.get()));
    // SAFETY: points to nothing (no peer address is asked for).
    with_core(|c| unsafe { c.ring.borrow_mut().push(&e) });
}

/// An accept completion.
pub(crate) fn on_accept(
    _c: &Core,
    l: &Rc<ListenerShared>,
    res: i32,
    flags: u32,
    woken: &mut Vec<Waker>,
) {
    let mut st = l.st.borrow_mut();
    if res >= 0 {
        st.ready.push_back(Ok(res));
    } else if res != -libc::ECANCELED {
        st.ready.push_back(Err(-res));
    }
    if !cqueue::more(flags) {
        st.armed = false;
    }
    if let Some(w) = st.waker.take() {
        woken.push(w);
    } else if !st.armed && st.closing {
        // Its handle is gone (dropped without `close`): nobody else will finish it.
        drop(st);
        forget(l);
    }
}

/// The peer address of an accepted socket (multishot accept does not report it).
fn peer_of(fd: RawFd) -> SocketAddr {
    // SAFETY: the descriptor was just accepted and is open for the duration of the borrow.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&fd)
        .peer_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
}
