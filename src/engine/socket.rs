//! A client socket on the engine (the relay's upstream connections): connect, receive into the
//! caller's buffer, vectored sends of `Bytes` pieces. Every operation is a one-shot `Op` that
//! owns its memory, so a timeout that drops one is safe (it is cancelled, and its memory lives
//! until the kernel says so). Receives use the caller's buffer, never the DATA pool: a relay
//! waiting for its upstream must not depend on the pool its clients may have exhausted.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use bytes::{Buf, Bytes, BytesMut};
use io_uring::{opcode, types};
use socket2::{Domain, SockAddr, Socket as RawSocket, Type};

use super::op::Op;

/// Most iovecs in one sendmsg (Linux's IOV_MAX).
const IOV_MAX: usize = 1024;

/// A connected client socket.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
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
        Ok(Socket { fd })
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

    /// Sends every piece, in order, with as few `sendmsg` calls as the kernel allows.
    pub async fn write_all(&self, mut pieces: Vec<Bytes>) -> io::Result<()> {
        pieces.retain(|p| !p.is_empty());
        while !pieces.is_empty() {
            let batch = Batch::new(pieces);
            let e = opcode::SendMsg::new(types::Fd(self.fd.as_raw_fd()), &*batch.msg)
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
        }
        Ok(())
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
