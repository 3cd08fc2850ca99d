//! Spike: ringrelay's Session on a bare io_uring completion loop (no executor): multishot accept,
//! multishot recv into a provided-buffer ring, one send per connection per loop turn, one
//! io_uring_enter per turn (SINGLE_ISSUER | DEFER_TASKRUN).
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Instant;

use io_uring::{cqueue, opcode, types, IoUring};
use ringrelay::proto::{Session, SessionConfig};

const BUFS: u16 = 512;
const BUF_SIZE: usize = 16384;
const BGID: u16 = 0;
const T_ACCEPT: u64 = 1;
const T_RECV: u64 = 2;
const T_SEND: u64 = 3;

struct Conn {
    fd: RawFd,
    session: Session,
    carry: Vec<u8>,
    out: Vec<u8>,
    sending: Vec<u8>,
    send_off: usize,
    in_send: bool,
    recv_live: bool,
    closing: bool,
}

struct BufRing {
    ring: *mut types::BufRingEntry,
    mem: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn push(&mut self, bid: u16) {
        unsafe {
            let e = &mut *self.ring.add((self.tail & (BUFS - 1)) as usize);
            e.set_addr(self.mem.as_ptr().add(bid as usize * BUF_SIZE) as u64);
            e.set_len(BUF_SIZE as u32);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }
    fn publish(&self) {
        unsafe {
            let t = types::BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*t).store(self.tail, Ordering::Release);
        }
    }
}

fn main() {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:2601".into());
    let listener = TcpListener::bind(&addr).unwrap();
    let lfd = listener.as_raw_fd();
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .build(1024)
        .unwrap();
    let layout = std::alloc::Layout::from_size_align(BUFS as usize * 16, 4096).unwrap();
    let rp = unsafe { std::alloc::alloc_zeroed(layout) } as *mut types::BufRingEntry;
    let mut br = BufRing {
        ring: rp,
        mem: vec![0u8; BUFS as usize * BUF_SIZE],
        tail: 0,
    };
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(rp as u64, BUFS, BGID, 0)
            .unwrap()
    };
    for b in 0..BUFS {
        br.push(b);
    }
    br.publish();
    let cfg = Arc::new(SessionConfig::default());
    let mut conns: slab::Slab<Conn> = slab::Slab::new();
    let mut dirty: Vec<usize> = Vec::new();
    let accept = opcode::AcceptMulti::new(types::Fd(lfd))
        .build()
        .user_data(T_ACCEPT);
    unsafe { ring.submission().push(&accept).unwrap() };
    eprintln!("raw sink on {addr}");
    loop {
        // One send per dirty connection, all in this turn's submission.
        for key in dirty.drain(..) {
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            if c.in_send || (c.out.is_empty()) {
                continue;
            }
            std::mem::swap(&mut c.sending, &mut c.out);
            c.send_off = 0;
            c.in_send = true;
            let e = opcode::Send::new(types::Fd(c.fd), c.sending.as_ptr(), c.sending.len() as u32)
                .build()
                .user_data(((key as u64) << 8) | T_SEND);
            unsafe { ring.submission().push(&e).unwrap() };
        }
        br.publish();
        ring.submit_and_wait(1).unwrap();
        let cqes: Vec<cqueue::Entry> = ring.completion().collect();
        for cqe in cqes {
            let ud = cqe.user_data();
            let res = cqe.result();
            match ud & 0xff {
                T_ACCEPT => {
                    if res >= 0 {
                        let fd = res;
                        let s = unsafe { std::net::TcpStream::from_raw_fd(fd) };
                        let _ = s.set_nodelay(true);
                        let peer = s.peer_addr().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                        std::mem::forget(s);
                        let mut session = Session::new(cfg.clone(), peer, Instant::now());
                        ringrelay_engine_spike::greet(&mut session);
                        let mut out = Vec::with_capacity(256);
                        session.poll_output(&mut out);
                        let key = conns.insert(Conn {
                            fd,
                            session,
                            carry: Vec::new(),
                            out,
                            sending: Vec::new(),
                            send_off: 0,
                            in_send: false,
                            recv_live: true,
                            closing: false,
                        });
                        let r = opcode::RecvMulti::new(types::Fd(fd), BGID)
                            .build()
                            .user_data(((key as u64) << 8) | T_RECV);
                        unsafe { ring.submission().push(&r).unwrap() };
                        dirty.push(key);
                    }
                    if !cqueue::more(cqe.flags()) {
                        unsafe { ring.submission().push(&accept).unwrap() };
                    }
                }
                T_RECV => {
                    let key = (ud >> 8) as usize;
                    let more = cqueue::more(cqe.flags());
                    let c = &mut conns[key];
                    if res > 0 {
                        let bid = cqueue::buffer_select(cqe.flags()).unwrap();
                        let data = &br.mem[bid as usize * BUF_SIZE..][..res as usize];
                        if !c.closing {
                            ringrelay_engine_spike::feed(&mut c.session, &mut c.carry, data);
                            c.session.poll_output(&mut c.out);
                            dirty.push(key);
                            if c.session.is_closed() {
                                c.closing = true;
                            }
                        }
                        br.push(bid);
                    } else if res == 0 || res != -libc::ENOBUFS {
                        c.closing = true;
                    }
                    if !more {
                        c.recv_live = false;
                        if !c.closing {
                            // ENOBUFS or a terminated multishot: arm again.
                            c.recv_live = true;
                            let r = opcode::RecvMulti::new(types::Fd(c.fd), BGID)
                                .build()
                                .user_data(ud);
                            unsafe { ring.submission().push(&r).unwrap() };
                        }
                    }
                    if c.closing && !c.in_send && c.out.is_empty() {
                        if c.recv_live {
                            unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
                        } else {
                            unsafe { libc::close(c.fd) };
                            conns.remove(key);
                        }
                    }
                }
                T_SEND => {
                    let key = (ud >> 8) as usize;
                    let c = &mut conns[key];
                    c.in_send = false;
                    if res > 0 {
                        c.send_off += res as usize;
                        if c.send_off < c.sending.len() {
                            c.in_send = true;
                            let e = opcode::Send::new(
                                types::Fd(c.fd),
                                c.sending[c.send_off..].as_ptr(),
                                (c.sending.len() - c.send_off) as u32,
                            )
                            .build()
                            .user_data(ud);
                            unsafe { ring.submission().push(&e).unwrap() };
                            continue;
                        }
                        c.sending.clear();
                        if !c.out.is_empty() {
                            dirty.push(key);
                        }
                    } else {
                        c.closing = true;
                        c.out.clear();
                    }
                    if c.closing && !c.in_send && c.out.is_empty() {
                        if c.recv_live {
                            unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
                        } else {
                            unsafe { libc::close(c.fd) };
                            conns.remove(key);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}
