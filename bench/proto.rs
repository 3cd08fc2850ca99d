//! Protocol micro-benchmark (`cargo bench --bench proto`): one core, no I/O, hand-rolled timing.
//!
//! (a) commands/s for a pipelined command mix through `Session` (EHLO once, then repeated
//!     MAIL / RCPT / RCPT / RSET / NOOP batches), fed in 64 KiB reads, every decision answered
//!     with the default reply;
//! (b) DATA body throughput for a 1 KiB and a 1 MiB message (76-column text, some lines starting
//!     with '.', dot-stuffed), fed to sessions already in DATA in 64 KiB reads through
//!     `handle_input_buf` (zero-copy chunks, dropped by the handler), up to the accepted DataEnd;
//! (c) the peer: `memchr::memmem::find` for "\r\n.\r\n" over the same bytes, and the ratio.
//!
//! Each figure is the median (and best) of several timed rounds after a warm-up round. Messages
//! are staged in memory in batches of ~64 KiB (at least one message) just before each batch is
//! timed, so (b) measures the session and not the copy a socket read would make, on bytes that
//! are cache-resident as after a read; "incl. read copy" adds that copy (each 64 KiB read
//! appended to the session's buffer) back. memmem runs on freshly written copies in the same
//! batches. Total run time is a few seconds.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringrelay::proto::{Event, Session, SessionConfig, State};

const READ: usize = 64 * 1024;
const TARGET_GBPS: f64 = 2.0;

fn peer() -> SocketAddr {
    "192.0.2.1:25000".parse().unwrap()
}

/// Deterministic xorshift for the message text.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The wire form (dot-stuffed, terminator included) of a message of about `size` octets:
/// headers, then 76-column text lines, one in 16 starting with '.'.
fn message(size: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "relay",
        "message",
        "body",
        "of",
        "a",
        "mail",
        "transfer",
        "agent",
        "line",
        "with",
        "some",
        "realistic",
        "text",
        "and",
        "words",
        "queue",
        "delivery",
        "server",
        "client",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut content = Vec::with_capacity(size + 128);
    content.extend_from_slice(
        b"From: Sender <sender@example.com>\r\nTo: <rcpt@example.net>\r\n\
Subject: benchmark message\r\nMessage-ID: <bench@example.com>\r\n\r\n",
    );
    let mut n = 0u64;
    while content.len() < size {
        let mut line = Vec::with_capacity(78);
        if n % 16 == 5 {
            line.push(b'.');
        }
        while line.len() < 76 {
            let w = WORDS[(rng.next() % WORDS.len() as u64) as usize].as_bytes();
            if line.len() + w.len() + 1 > 76 {
                line.resize(76, b'-');
                break;
            }
            line.extend_from_slice(w);
            line.push(b' ');
        }
        line.truncate(76);
        line.extend_from_slice(b"\r\n");
        content.extend_from_slice(&line);
        n += 1;
    }
    content.truncate(size.max(2) - 2);
    content.extend_from_slice(b"\r\n");
    // Dot-stuff (RFC 5321 §4.5.2) and terminate.
    let mut wire = Vec::with_capacity(content.len() + content.len() / 64 + 3);
    let mut at_line_start = true;
    for &b in &content {
        if at_line_start && b == b'.' {
            wire.push(b'.');
        }
        wire.push(b);
        at_line_start = b == b'\n';
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

/// Drains events (answering decisions with the default reply; data chunks are dropped after
/// counting their length) and output; returns (a decision was answered, content octets, DataEnd).
#[inline]
fn service(s: &mut Session, out: &mut Vec<u8>) -> (bool, usize, bool) {
    let mut answered = false;
    let mut octets = 0;
    let mut end = false;
    while let Some(ev) = s.poll_event() {
        match &ev {
            Event::DataChunk(c) => octets += c.content_len(),
            Event::DataEnd => end = true,
            _ => {}
        }
        if ev.needs_reply() {
            s.handler_reply(None);
            answered = true;
        }
        black_box(&ev);
    }
    s.poll_output(out);
    black_box(&out);
    out.clear();
    (answered, octets, end)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------------------------
// (a) pipelined commands

fn bench_commands() {
    const BATCH: &[u8] = b"MAIL FROM:<sender@example.com>\r\nRCPT TO:<rcpt1@example.net>\r\n\
RCPT TO:<rcpt2@example.net>\r\nRSET\r\nNOOP\r\n";
    const BATCH_COMMANDS: usize = 5;
    const BATCHES: usize = 40_000;
    let mut input = b"EHLO client.example.com\r\n".to_vec();
    for _ in 0..BATCHES {
        input.extend_from_slice(BATCH);
    }
    let commands = 1 + BATCHES * BATCH_COMMANDS;
    let cfg = Arc::new(SessionConfig::default());
    let mut out = Vec::with_capacity(1 << 16);
    let mut rates = Vec::new();
    for round in 0..21 {
        let now = Instant::now();
        let mut s = Session::new(cfg.clone(), peer(), now);
        service(&mut s, &mut out);
        let mut buf = BytesMut::with_capacity(2 * READ);
        let t = Instant::now();
        for read in input.chunks(READ) {
            buf.extend_from_slice(read);
            loop {
                s.handle_input_buf(now, &mut buf);
                if !service(&mut s, &mut out).0 {
                    break;
                }
            }
        }
        let el = t.elapsed();
        assert!(buf.is_empty() && s.state() == State::ExpectMail && !s.is_closed());
        if round > 0 {
            rates.push(commands as f64 / el.as_secs_f64());
        }
    }
    let best = rates.iter().cloned().fold(0.0, f64::max);
    let med = median(&mut rates);
    println!(
        "commands   pipelined mix ({} cmds, {:.1} MB/round, 64 KiB reads): {:>6.2} M cmds/s median, {:.2} M best ({:.0} ns/cmd)",
        commands,
        input.len() as f64 / 1e6,
        med / 1e6,
        best / 1e6,
        1e9 / med
    );
}

// ---------------------------------------------------------------------------------------------
// (b) + (c) DATA bodies

/// A session in DATA, ready for the body.
fn session_in_data(cfg: &Arc<SessionConfig>, now: Instant, out: &mut Vec<u8>) -> Session {
    let mut s = Session::new(cfg.clone(), peer(), now);
    service(&mut s, out);
    let mut pending: &[u8] =
        b"EHLO client.example.com\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n";
    while !pending.is_empty() {
        let used = s.handle_input(now, pending);
        pending = &pending[used..];
        service(&mut s, out);
    }
    assert_eq!(s.state(), State::InData);
    s
}

/// The message staged as 64 KiB reads cut from one contiguous buffer, so that a read can be
/// joined to the unconsumed tail of the previous one without a copy (`BytesMut::unsplit`), as
/// a driver reading into one large buffer would.
fn stage(msg: &[u8]) -> Vec<BytesMut> {
    let mut all = BytesMut::from(msg);
    let mut reads = Vec::with_capacity(msg.len() / READ + 1);
    while all.len() > READ {
        reads.push(all.split_to(READ));
    }
    reads.push(all);
    reads
}

/// Feeds one staged message to `s`; returns the content octets delivered.
#[inline]
fn feed_staged(s: &mut Session, reads: Vec<BytesMut>, now: Instant, out: &mut Vec<u8>) -> usize {
    let mut octets = 0;
    let mut done = false;
    let mut buf = BytesMut::new();
    for read in reads {
        if buf.is_empty() {
            buf = read;
        } else {
            buf.unsplit(read); // contiguous: O(1)
        }
        loop {
            s.handle_input_buf(now, &mut buf);
            let (answered, n, end) = service(s, out);
            octets += n;
            done |= end;
            if !answered {
                break;
            }
        }
    }
    assert!(done && buf.is_empty(), "message not accepted");
    octets
}

/// Feeds one message from a plain buffer, copying each 64 KiB read into the session's buffer
/// first (what a socket read does).
#[inline]
fn feed_copying(
    s: &mut Session,
    msg: &[u8],
    buf: &mut BytesMut,
    now: Instant,
    out: &mut Vec<u8>,
) -> usize {
    let mut octets = 0;
    let mut done = false;
    for read in msg.chunks(READ) {
        buf.extend_from_slice(read);
        loop {
            s.handle_input_buf(now, buf);
            let (answered, n, end) = service(s, out);
            octets += n;
            done |= end;
            if !answered {
                break;
            }
        }
    }
    assert!(done && buf.is_empty(), "message not accepted");
    octets
}

fn content_len(wire: &[u8]) -> usize {
    // Wire minus terminator minus stuffing dots.
    let body = &wire[..wire.len() - 3];
    let mut dots = usize::from(body.first() == Some(&b'.'));
    dots += memchr::memmem::find_iter(body, b"\r\n.").count();
    body.len() - dots
}

fn bench_data(label: &str, size: usize, batches: usize, rounds: usize) {
    let msg = message(size);
    let expect = content_len(&msg);
    let cfg = Arc::new(SessionConfig::default());
    let mut out = Vec::with_capacity(4096);
    // Messages are staged and timed in batches of about 64 KiB (at least one message), so the
    // bytes are freshly written and cache-resident as after a socket read, for both the
    // session and memmem, and the timer is read far less often than once per small message.
    let batch = (READ / msg.len()).max(1);
    let per_round = batch * batches;
    let bytes_per_round = (msg.len() * per_round) as f64;

    let mut session_gbps = Vec::new();
    let mut copy_gbps = Vec::new();
    let mut memmem_gbps = Vec::new();
    for round in 0..=rounds {
        let now = Instant::now();
        let (mut el, mut el_copy, mut el_mm) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let mut buf = BytesMut::with_capacity(2 * READ);
        for _ in 0..batches {
            // Session, reads staged (zero-copy).
            let mut sessions: Vec<Session> = (0..batch)
                .map(|_| session_in_data(&cfg, now, &mut out))
                .collect();
            let mut staged: Vec<Vec<BytesMut>> = (0..batch).map(|_| stage(&msg)).collect();
            let t = Instant::now();
            let mut total = 0;
            for (s, reads) in sessions.iter_mut().zip(staged.drain(..)) {
                total += feed_staged(s, reads, now, &mut out);
            }
            el += t.elapsed();
            assert_eq!(total, expect * batch, "content octets delivered");

            // Session, each 64 KiB read copied into the session's buffer first.
            let mut sessions: Vec<Session> = (0..batch)
                .map(|_| session_in_data(&cfg, now, &mut out))
                .collect();
            let t = Instant::now();
            let mut total = 0;
            for s in sessions.iter_mut() {
                total += feed_copying(s, &msg, &mut buf, now, &mut out);
            }
            el_copy += t.elapsed();
            assert_eq!(total, expect * batch);

            // memmem over the same bytes, freshly written like the staged reads.
            let copies: Vec<Vec<u8>> = (0..batch).map(|_| msg.clone()).collect();
            let t = Instant::now();
            let mut found = 0usize;
            for m in &copies {
                // The body follows the CRLF of the DATA line: CRLF.CRLF is where it ends.
                found += memchr::memmem::find(black_box(m), b"\r\n.\r\n").map_or(0, |p| p + 5);
            }
            el_mm += t.elapsed();
            assert_eq!(found, msg.len() * batch, "memmem found the terminator");
        }
        if round > 0 {
            session_gbps.push(bytes_per_round / el.as_secs_f64() / 1e9);
            copy_gbps.push(bytes_per_round / el_copy.as_secs_f64() / 1e9);
            memmem_gbps.push(bytes_per_round / el_mm.as_secs_f64() / 1e9);
        }
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let (sb, cb, mb) = (best(&session_gbps), best(&copy_gbps), best(&memmem_gbps));
    let (s, c, m) = (
        median(&mut session_gbps),
        median(&mut copy_gbps),
        median(&mut memmem_gbps),
    );
    println!(
        "data {label:<5} session (zero-copy, 64 KiB reads): {s:>6.2} GB/s median, {sb:.2} best  [{} B wire x {per_round}/round, batches of {batch}]  {}",
        msg.len(),
        if s >= TARGET_GBPS { "meets 2 GB/s" } else { "BELOW 2 GB/s target" }
    );
    println!(
        "data {label:<5} session incl. read copy:            {c:>6.2} GB/s median, {cb:.2} best"
    );
    println!(
        "data {label:<5} memchr::memmem::find CRLF.CRLF:      {m:>6.2} GB/s median, {mb:.2} best"
    );
    println!(
        "data {label:<5} ratio vs memmem: {:.2} (zero-copy), {:.2} (incl. read copy)",
        s / m,
        c / m
    );
}

fn main() {
    // `cargo bench` passes --bench; accept and ignore libtest-style arguments.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let t = Instant::now();
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs this binary too (unoptimised): a smoke run only,
        // which still asserts that every message is accepted with its exact content length.
        bench_data("1KiB", 1024, 2, 1);
        println!(
            "smoke run done in {:.1} s (cargo bench --bench proto measures)",
            t.elapsed().as_secs_f64()
        );
        return;
    }
    println!("ringrelay proto micro-benchmark (one thread, release build)");
    if want("commands") {
        bench_commands();
    }
    if want("data") {
        bench_data("1KiB", 1024, 128, 31);
        bench_data("1MiB", 1 << 20, 32, 31);
    }
    println!("total {:.1} s", t.elapsed().as_secs_f64());
}
