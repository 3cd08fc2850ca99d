//! A client socket on the engine (the relay's upstream connections): connect, receive into the
//! caller's buffer, queued vectored sends of `Bytes` pieces. Every operation is a one-shot
//! `Op` that owns its memory, so a timeout that drops one is safe (it is cancelled, and its
//! memory lives until the kernel says so). Receives use the caller's buffer, never the DATA
//! pool: a relay waiting for its upstream must not depend on the pool its clients may have
//! exhausted.
//!
//! Sends are queued: `write_all` hands its pieces to the socket's sender task and returns (it
//! waits only while more than `QUEUE_LIMIT` octets are queued), so a command and the receive of
//! its reply go to the kernel in the same submission instead of a loop turn apart. A send error
//! is reported by the next `write_all` (and the reply's receive sees the connection fail). The
//! sender never submits once the socket is dropped, so no send can reach a reused descriptor.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use io_uring::{opcode, types};
use socket2::{Domain, SockAddr, Socket as RawSocket, Type};

use super::op::Op;

/// Most iovecs in one sendmsg (Linux's IOV_MAX).
const IOV_MAX: usize = 1024;

/// Octets queued for sending beyond which `write_all` waits.
const QUEUE_LIMIT: usize = 256 * 1024;

/// A connected client socket.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    tx: Rc<SendQueue>,
}

/// What waits to be sent, shared with the socket's sender task.
#[derive(Debug, Default)]
struct SendQueue {
    pieces: RefCell<Vec<Bytes>>,
    /// Octets queued or being sent.
    unsent: Cell<usize>,
    /// The sender task runs (it is sending, or about to).
    running: Cell<bool>,
    /// The socket is gone: send nothing more.
    closed: Cell<bool>,
    error: Cell<Option<i32>>,
    /// A `write_all` waiting for the queue to shrink.
    waiter: RefCell<Option<Waker>>,
}

impl Socket {
    /// Connects to a TCP address.
    pub async fn connect(addr: SocketAddr) -> io::Result<Socket> {
        let raw = RawSocket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
        let _ = raw.set_nodelay(true);
        Self::connect_raw(raw, SockAddr::from(addr)).await
    }

    /// Connects to a TCP address from a local one (smtplib's `source_address`).
    pub async fn connect_from(addr: SocketAddr, local: SocketAddr) -> io::Result<Socket> {
        let raw = RawSocket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
        let _ = raw.set_nodelay(true);
        raw.bind(&SockAddr::from(local))?;
        Self::connect_raw(raw, SockAddr::from(addr)).await
    }

    /// Connects to a Unix-domain socket (LMTP).
    pub async fn connect_unix(path: &Path) -> io::Result<Socket> {
        let raw = RawSocket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
        Self::connect_raw(raw, SockAddr::unix(path)?).await
    }

    async fn connect_raw(raw: RawSocket, addr: SockAddr) -> io::Result<Socket> {
        let fd: OwnedFd = raw.into();
        let addr = Box::new(addr);
        let e = opcode::Connect::new(types::Fd(fd.as_raw_fd()), addr.as_ptr(), addr.len()).build();
        // SAFETY: the entry points into the boxed address, which the Op owns.
        let (res, _, _) = unsafe { Op::submit(e, addr) }.await;
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        Ok(Socket {
            fd,
            tx: Rc::new(SendQueue::default()),
        })
    }

    /// Receives into `buf`'s spare capacity (at least 4 KiB is made available), appending;
    /// returns how many octets arrived (0: the peer closed) and the buffer.
    pub async fn read(&self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(4096);
        }
        let spare = buf.spare_capacity_mut();
        let (ptr, len) = (spare.as_mut_ptr().cast::<u8>(), spare.len());
        let e = opcode::Recv::new(types::Fd(self.fd.as_raw_fd()), ptr, len as u32).build();
        // SAFETY: the entry points into `buf`'s heap memory, which the Op owns (moving a
        // BytesMut does not move its contents).
        let (res, _, mut buf) = unsafe { Op::submit(e, buf) }.await;
        if res < 0 {
            return (Err(io::Error::from_raw_os_error(-res)), buf);
        }
        // SAFETY: the kernel initialised `res` octets of the spare capacity.
        unsafe { buf.set_len(buf.len() + res as usize) };
        (Ok(res as usize), buf)
    }

    /// Queues every piece for sending, in order (as few `sendmsg` calls as the kernel allows);
    /// returns once they are queued and the queue is under its limit, or with the error an
    /// earlier send met.
    pub async fn write_all(&self, pieces: Vec<Bytes>) -> io::Result<()> {
        let q = &self.tx;
        if let Some(e) = q.error.get() {
            return Err(io::Error::from_raw_os_error(e));
        }
        let added: usize = pieces.iter().map(Bytes::len).sum();
        if added > 0 {
            q.pieces
                .borrow_mut()
                .extend(pieces.into_iter().filter(|p| !p.is_empty()));
            q.unsent.set(q.unsent.get() + added);
            if !q.running.replace(true) {
                super::spawn_local(send_loop(self.fd.as_raw_fd(), q.clone()));
            }
        }
        std::future::poll_fn(|cx| {
            if let Some(e) = q.error.get() {
                return Poll::Ready(Err(io::Error::from_raw_os_error(e)));
            }
            if q.unsent.get() <= QUEUE_LIMIT {
                return Poll::Ready(Ok(()));
            }
            *q.waiter.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Shuts the connection down in both directions: a pending receive completes at once.
    pub fn shutdown(&self) {
        // SAFETY: shutdown on our own descriptor.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
    }

    /// The socket, for options.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Before the descriptor closes: the sender must not submit on its number again.
        self.tx.closed.set(true);
    }
}

/// The socket's sender: sends what is queued until the queue is empty, then ends (the next
/// `write_all` starts another).
async fn send_loop(fd: RawFd, q: Rc<SendQueue>) {
    loop {
        let pieces = std::mem::take(&mut *q.pieces.borrow_mut());
        if pieces.is_empty() || q.closed.get() || q.error.get().is_some() {
            break;
        }
        if let Err(e) = send_pieces(fd, &q, pieces).await {
            q.error.set(Some(e.raw_os_error().unwrap_or(libc::EIO)));
            break;
        }
    }
    q.running.set(false);
    if let Some(w) = q.waiter.borrow_mut().take() {
        w.wake();
    }
}

/// Sends `pieces` in full, counting what left the queue.
async fn send_pieces(fd: RawFd, q: &SendQueue, mut pieces: Vec<Bytes>) -> io::Result<()> {
    while !pieces.is_empty() {
        if q.closed.get() {
            return Err(io::Error::from(io::ErrorKind::NotConnected));
        }
        let batch = Batch::new(pieces);
        let e = opcode::SendMsg::new(types::Fd(fd), &*batch.msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build();
        // SAFETY: the message header points to the iovec array and the iovecs into the
        // pieces' memory; the batch (owned by the Op) holds all three.
        let (res, _, batch) = unsafe { Op::submit(e, batch) }.await;
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        if res == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        pieces = batch.pieces;
        let mut sent = res as usize;
        q.unsent.set(q.unsent.get().saturating_sub(sent));
        let whole = pieces
            .iter()
            .take_while(|p| {
                let fits = p.len() <= sent;
                if fits {
                    sent -= p.len();
                }
                fits
            })
            .count();
        pieces.drain(..whole);
        if sent > 0 {
            pieces[0].advance(sent);
        }
        if q.unsent.get() <= QUEUE_LIMIT {
            if let Some(w) = q.waiter.borrow_mut().take() {
                w.wake();
            }
        }
    }
    Ok(())
}

/// The memory of one `sendmsg`: the pieces, their iovecs, and the header pointing to them.
struct Batch {
    pieces: Vec<Bytes>,
    _iov: Vec<libc::iovec>,
    msg: Box<libc::msghdr>,
}

impl Batch {
    fn new(pieces: Vec<Bytes>) -> Batch {
        let iov: Vec<libc::iovec> = pieces
            .iter()
            .take(IOV_MAX)
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: msghdr is plain data; zero is a valid empty header.
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len() as _;
        Batch {
            pieces,
            _iov: iov,
            msg,
        }
    }
}
