//! The io_uring engine on its own, through its public API: multishot accept and receive into
//! the DATA pool, batched sends, client sockets, timers, wakes from other threads, cancelled
//! operations, and byte-exact transfer through a pool shrunk to a handful of buffers.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringrelay::engine::{self, Engine, EngineOptions, Listener, Socket};
use ringrelay::rt;

fn listener() -> (Listener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (Listener::from_std(l), addr)
}

/// Echoes every connection's input back until it ends.
fn echo_server(l: Listener, connections: usize) {
    engine::spawn_local(async move {
        for _ in 0..connections {
            let (s, _) = l.accept().await.unwrap();
            engine::spawn_local(async move {
                while let Ok(Some(chunk)) = s.recv().await {
                    s.send(&chunk);
                    if s.unsent() > 256 * 1024 {
                        s.flush().await.unwrap();
                    }
                }
                s.close().await;
            });
        }
    });
}

/// A deterministic body of `len` octets.
fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed as u32) as u8
        })
        .collect()
}

async fn read_exactly(c: &Socket, len: usize) -> Vec<u8> {
    let mut got = BytesMut::new();
    while got.len() < len {
        let (r, b) = c.read(got).await;
        got = b;
        assert!(r.unwrap() > 0, "peer closed after {} of {len}", got.len());
    }
    got.to_vec()
}

#[test]
fn echo_through_the_ring() {
    let engine = Engine::new(&EngineOptions::default()).unwrap();
    let echoed = engine.block_on(async {
        let (l, addr) = listener();
        echo_server(l, 1);
        let c = Socket::connect(addr).await.unwrap();
        c.write_all(vec![
            Bytes::from_static(b"hello "),
            Bytes::from_static(b"ring"),
        ])
        .await
        .unwrap();
        read_exactly(&c, 10).await
    });
    assert_eq!(echoed, b"hello ring");
}

#[test]
fn a_tiny_pool_moves_megabytes_byte_exact_on_many_connections() {
    tiny_pool(true);
}

#[test]
fn a_tiny_pool_of_whole_buffers_moves_megabytes_byte_exact() {
    // As on a kernel before 6.12: one buffer per receive.
    tiny_pool(false);
}

fn tiny_pool(incremental: bool) {
    // Four 512-octet buffers for eight connections each sending 1 MiB: receives keep finding
    // the pool empty, wait, and resume; nothing may be lost or reordered.
    let opts = EngineOptions {
        buffers: 4,
        buffer_size: 512,
        incremental_buffers: incremental,
        ..EngineOptions::default()
    };
    let engine = Engine::new(&opts).unwrap();
    assert_eq!(engine.setup().incremental_buffers, incremental);
    let (ok, exhausted) = engine.block_on(async {
        let (l, addr) = listener();
        echo_server(l, 8);
        let results = Rc::new(RefCell::new(Vec::new()));
        let done = Rc::new(std::cell::Cell::new(0));
        for i in 0..8u8 {
            let (results, done) = (results.clone(), done.clone());
            engine::spawn_local(async move {
                let data = body(1 << 20, i);
                let c = Rc::new(Socket::connect(addr).await.unwrap());
                let writer = c.clone();
                let sent = Bytes::from(data.clone());
                engine::spawn_local(async move {
                    // Pieces of varied size, as a relay writes them.
                    let pieces: Vec<Bytes> = (0..sent.len())
                        .step_by(7919)
                        .map(|s| sent.slice(s..(s + 7919).min(sent.len())))
                        .collect();
                    writer.write_all(pieces).await.unwrap();
                });
                let got = read_exactly(&c, data.len()).await;
                results.borrow_mut().push(got == data);
                done.set(done.get() + 1);
            });
        }
        while done.get() < 8 {
            rt::sleep(Duration::from_millis(5)).await;
        }
        let stats = engine::pool_stats().unwrap();
        let ok = results.borrow().iter().all(|&x| x);
        (ok, stats.exhausted)
    });
    assert!(ok, "a connection's bytes came back altered");
    assert!(
        exhausted > 0,
        "the pool was never empty: the test did not test that"
    );
}

#[test]
fn timers_fire_in_order_and_timeouts_cancel_reads() {
    let engine = Engine::new(&EngineOptions::default()).unwrap();
    let (order, timed_out, then_read) = engine.block_on(async {
        let order = Rc::new(RefCell::new(Vec::new()));
        for (i, ms) in [(3, 60u64), (1, 20), (2, 40)] {
            let order = order.clone();
            engine::spawn_local(async move {
                rt::sleep(Duration::from_millis(ms)).await;
                order.borrow_mut().push(i);
            });
        }
        // A read on a silent peer, abandoned by a timeout: it is cancelled, the socket stays
        // usable, and a later read gets later bytes.
        let (l, addr) = listener();
        let c = Socket::connect(addr).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let started = Instant::now();
        let r = rt::timeout(Duration::from_millis(50), c.read(BytesMut::new())).await;
        let timed_out = r.is_err() && started.elapsed() >= Duration::from_millis(50);
        rt::sleep(Duration::from_millis(30)).await;
        server.send(b"late");
        let (n, buf) = c.read(BytesMut::new()).await;
        n.unwrap();
        let order = order.borrow().clone();
        (order, timed_out, buf.to_vec())
    });
    assert_eq!(order, vec![1, 2, 3]);
    assert!(timed_out);
    assert_eq!(then_read, b"late");
}

#[test]
fn a_wake_from_another_thread_ends_the_wait() {
    let engine = Engine::new(&EngineOptions::default()).unwrap();
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        tx.send_replace(true);
        // Keep the sender until the engine has seen it.
        std::thread::sleep(Duration::from_millis(200));
    });
    let started = Instant::now();
    let seen = engine.block_on(async move {
        // No timer and no I/O: only the eventfd wake can end this wait.
        rx.wait_for(|v| *v).await.map(|v| *v).unwrap_or(false)
    });
    assert!(seen && started.elapsed() < Duration::from_secs(5));
    t.join().unwrap();
}

#[test]
fn closing_a_listener_returns_what_it_accepted() {
    let engine = Engine::new(&EngineOptions::default()).unwrap();
    let (refused, after) = engine.block_on(async {
        let (l, addr) = listener();
        // Arm the accept, then let two clients connect while nobody takes them.
        let accept = l.accept();
        let first = rt::timeout(Duration::from_millis(20), accept).await;
        assert!(first.is_err());
        let a = std::net::TcpStream::connect(addr).unwrap();
        let b = std::net::TcpStream::connect(addr).unwrap();
        rt::sleep(Duration::from_millis(50)).await;
        let pending = l.close().await;
        let n = pending.len();
        for s in pending {
            s.send(b"421 closing\r\n");
            s.close().await;
        }
        let after = std::net::TcpStream::connect(addr).is_err();
        drop((a, b));
        (n, after)
    });
    assert_eq!(refused, 2);
    assert!(after, "the listening socket is closed");
}

#[test]
fn setup_flags_downgrade_without_defer_taskrun() {
    let opts = EngineOptions {
        defer_taskrun: false,
        ..EngineOptions::default()
    };
    let setup = engine::probe(&opts).unwrap();
    assert!(!setup.defer_taskrun);
    let full = engine::probe(&EngineOptions::default()).unwrap();
    assert!(full.defer_taskrun && full.single_issuer, "{full}");
    // And the engine works without it.
    let engine = Engine::new(&opts).unwrap();
    assert!(!engine.setup().defer_taskrun);
    let echoed = engine.block_on(async {
        let (l, addr) = listener();
        echo_server(l, 1);
        let c = Socket::connect(addr).await.unwrap();
        c.write_all(vec![Bytes::from_static(b"no defer")])
            .await
            .unwrap();
        read_exactly(&c, 8).await
    });
    assert_eq!(echoed, b"no defer");
}
