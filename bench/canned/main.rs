//! `smtp-canned`: the physical-limit stand-in for the benchmarks. It answers SMTP with canned
//! replies and as little work as an SMTP server can do: no parsing beyond the first four
//! octets of a command line, no envelope, no limits, no timeouts, no metrics. DATA ends at the
//! first CRLF.CRLF (found with memmem); BDAT chunks are skipped by length. It offers
//! PIPELINING and CHUNKING and answers every complete command in a read before writing once.
//!
//! One thread per core (`--threads`), each a current-thread tokio runtime (epoll) with its own
//! SO_REUSEPORT listener. Reads go into one per-thread scratch buffer, so an idle connection
//! holds no buffer at all; only a partial line (or the last 4 octets of data, for a terminator
//! split across reads) is kept per connection.
//!
//! It is not a mail server and must never be used as one: it accepts anything.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use memchr::memmem;
use tokio::net::{TcpListener, TcpStream};

const GREETING: &[u8] = b"220 canned ESMTP\r\n";
const EHLO: &[u8] =
    b"250-canned\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-8BITMIME\r\n250 SIZE 0\r\n";
const OK: &[u8] = b"250 2.0.0 Ok\r\n";
const GO_AHEAD: &[u8] = b"354 End data with <CR><LF>.<CR><LF>\r\n";
const QUEUED: &[u8] = b"250 2.0.0 Ok: queued\r\n";
const BYE: &[u8] = b"221 2.0.0 Bye\r\n";
const UNKNOWN: &[u8] = b"500 5.5.2 Error: command not recognized\r\n";
const SCRATCH: usize = 64 * 1024;
const TERMINATOR: &[u8] = b"\r\n.\r\n";

fn main() {
    let mut listen: SocketAddr = "127.0.0.1:2525".parse().expect("valid default");
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }
    // The first listener fixes the port (when 0 was asked for); the others share it.
    let first = bind(listen).unwrap_or_else(|e| {
        eprintln!("smtp-canned: cannot listen on {listen}: {e}");
        std::process::exit(2)
    });
    let addr = first.local_addr().expect("bound socket has an address");
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(bind(addr).expect("SO_REUSEPORT listener on the same port"));
    }
    eprintln!("smtp-canned: listening on {addr} (threads={threads})");
    let handles: Vec<_> = listeners
        .into_iter()
        .map(|l| std::thread::spawn(move || serve(l)))
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

fn usage() -> ! {
    eprintln!("usage: smtp-canned [--listen ADDR] [--threads N]");
    std::process::exit(2)
}

fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

fn serve(l: std::net::TcpListener) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let l = TcpListener::from_std(l).expect("listener on the runtime");
        let scratch = Rc::new(RefCell::new(vec![0u8; SCRATCH]));
        loop {
            if let Ok((s, _)) = l.accept().await {
                let _ = s.set_nodelay(true);
                tokio::task::spawn_local(conn(s, scratch.clone()));
            }
        }
    });
}

/// Where a connection is in the protocol.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Command,
    /// In DATA; `at_start` while nothing of the body has been seen (".\r\n" ends it at once).
    Data {
        at_start: bool,
    },
    Bdat {
        left: u64,
        last: bool,
    },
    Quit,
}

async fn conn(s: TcpStream, scratch: Rc<RefCell<Vec<u8>>>) {
    let mut state = State::Command;
    let mut keep: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    if write_all(&s, GREETING).await.is_err() {
        return;
    }
    loop {
        if s.readable().await.is_err() {
            return;
        }
        {
            let mut buf = scratch.borrow_mut();
            let n = match s.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            };
            on_read(&buf[..n], &mut state, &mut keep, &mut out);
        }
        if keep.capacity() > SCRATCH && keep.len() < 1024 {
            keep.shrink_to(1024);
        }
        if !out.is_empty() {
            if write_all(&s, &out).await.is_err() {
                return;
            }
            out.clear();
            if out.capacity() > 4096 {
                out = Vec::new();
            }
        }
        if state == State::Quit {
            return;
        }
    }
}

/// Handles one read: `keep` holds what earlier reads left unconsumed (a partial line, or the
/// last 4 octets of a body); it is only appended to when it already holds a partial line, so
/// bodies are scanned in the read buffer and never copied.
fn on_read(data: &[u8], state: &mut State, keep: &mut Vec<u8>, out: &mut Vec<u8>) {
    let mut start = 0;
    if *state == (State::Data { at_start: false }) && !keep.is_empty() && data.len() >= 4 {
        // Only the kept tail of the body so far: look for a terminator across the boundary.
        let k = keep.len();
        let mut w = [0u8; 8];
        w[..k].copy_from_slice(keep);
        w[k..k + 4].copy_from_slice(&data[..4]);
        keep.clear();
        if let Some(i) = memmem::find(&w[..k + 4], TERMINATOR) {
            start = i + TERMINATOR.len() - k;
            out.extend_from_slice(QUEUED);
            *state = State::Command;
        }
    }
    if keep.is_empty() {
        let used = start + handle(&data[start..], state, out);
        keep.extend_from_slice(&data[used..]);
    } else {
        keep.extend_from_slice(data);
        let used = handle(keep, state, out);
        keep.drain(..used);
    }
}

/// Consumes what it can of `input`, appending replies; returns the octets used.
fn handle(input: &[u8], state: &mut State, out: &mut Vec<u8>) -> usize {
    let mut pos = 0;
    loop {
        match *state {
            State::Quit => return input.len(),
            State::Command => {
                let Some(nl) = memchr::memchr(b'\n', &input[pos..]) else {
                    return pos;
                };
                let line = &input[pos..pos + nl + 1];
                pos += nl + 1;
                command(line, state, out);
            }
            State::Data { at_start } => {
                let rest = &input[pos..];
                if at_start && rest.starts_with(b".\r\n") {
                    pos += 3;
                    out.extend_from_slice(QUEUED);
                    *state = State::Command;
                    continue;
                }
                if at_start && rest.len() < 3 {
                    return pos;
                }
                match memmem::find(rest, TERMINATOR) {
                    Some(i) => {
                        pos += i + 5;
                        out.extend_from_slice(QUEUED);
                        *state = State::Command;
                    }
                    None => {
                        // Keep the last 4 octets: a terminator may be split across reads.
                        *state = State::Data { at_start: false };
                        return input.len() - rest.len().min(4);
                    }
                }
            }
            State::Bdat { left, last } => {
                let take = (left as usize).min(input.len() - pos);
                pos += take;
                let left = left - take as u64;
                if left > 0 {
                    *state = State::Bdat { left, last };
                    return pos;
                }
                if last {
                    out.extend_from_slice(QUEUED);
                } else {
                    out.extend_from_slice(OK);
                }
                *state = State::Command;
            }
        }
    }
}

fn command(line: &[u8], state: &mut State, out: &mut Vec<u8>) {
    let verb = line.get(..4).map(|v| v.to_ascii_uppercase());
    match verb.as_deref() {
        Some(b"EHLO" | b"LHLO") => out.extend_from_slice(EHLO),
        Some(b"HELO" | b"MAIL" | b"RCPT" | b"RSET" | b"NOOP") => out.extend_from_slice(OK),
        Some(b"DATA") => {
            out.extend_from_slice(GO_AHEAD);
            *state = State::Data { at_start: true };
        }
        Some(b"BDAT") => {
            let args = std::str::from_utf8(&line[4..]).unwrap_or("");
            let mut words = args.split_ascii_whitespace();
            match words.next().and_then(|n| n.parse::<u64>().ok()) {
                Some(left) => {
                    let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
                    *state = State::Bdat { left, last };
                }
                None => out.extend_from_slice(UNKNOWN),
            }
        }
        Some(b"QUIT") => {
            out.extend_from_slice(BYE);
            *state = State::Quit;
        }
        _ => out.extend_from_slice(UNKNOWN),
    }
}

/// Writes all of `data`, trying the socket before waiting for readiness (a fresh connection's
/// greeting then goes out without a trip through the event loop).
async fn write_all(s: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match s.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut state = State::Command;
        let mut keep = Vec::new();
        let mut out = Vec::new();
        for c in chunks {
            on_read(c, &mut state, &mut keep, &mut out);
        }
        out
    }

    #[test]
    fn terminator_split_at_every_offset() {
        let mut body = b"DATA\r\n".to_vec();
        body.extend_from_slice(&[b'x'; 100]);
        body.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
        for cut in 1..body.len() {
            for cut2 in cut..body.len() {
                let out = run(&[&body[..cut], &body[cut..cut2], &body[cut2..]]);
                let text = String::from_utf8(out).unwrap();
                assert_eq!(text.matches("Ok: queued").count(), 1, "{cut} {cut2}");
                assert!(text.ends_with("250 2.0.0 Ok\r\n"), "{cut} {cut2}");
            }
        }
    }

    #[test]
    fn pipelined_data_bdat_and_split_terminators() {
        let out = run(&[
            b"EHLO x\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n",
            b"body\r\n.",
            b"\r\nQUIT\r\n",
        ]);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("Ok: queued").count(), 1);
        assert!(text.ends_with("221 2.0.0 Bye\r\n"));
        let out = run(&[
            b"DATA\r\n",
            b".\r\n",
            b"DATA\r\nx\r",
            b"\n",
            b".",
            b"\r",
            b"\n",
        ]);
        assert_eq!(
            String::from_utf8(out)
                .unwrap()
                .matches("Ok: queued")
                .count(),
            2
        );
        let out = run(&[b"BDAT 5\r\nab", b"cdeBDAT 3 LAST\r\nxyzNOOP\r\n"]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "250 2.0.0 Ok\r\n250 2.0.0 Ok: queued\r\n250 2.0.0 Ok\r\n"
        );
    }
}
