//! Spike: ringrelay's Session on compio (multishot recv into compio's buffer pool).
use compio::io::{AsyncReadMulti, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use futures_util::StreamExt;
use ringrelay::proto::{Session, SessionConfig};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:2600".into());
    let mut pb = compio::driver::ProactorBuilder::new();
    pb.single_issuer(true)
        .defer_taskrun(true)
        .coop_taskrun(true);
    pb.buffer_pool_size(std::num::NonZero::new(512).unwrap())
        .buffer_pool_buffer_len(16384);
    let rt = compio::runtime::RuntimeBuilder::new()
        .with_proactor(pb)
        .build()
        .unwrap();
    rt.block_on(async move {
        let l = TcpListener::bind(&addr).await.unwrap();
        let cfg = Arc::new(SessionConfig::default());
        eprintln!("compio sink on {addr}");
        loop {
            let (s, peer) = l.accept().await.unwrap();
            let _ = s.set_nodelay(true);
            compio::runtime::spawn(serve(s, peer, cfg.clone())).detach();
        }
    });
}

async fn serve(s: TcpStream, peer: std::net::SocketAddr, cfg: Arc<SessionConfig>) {
    let mut session = Session::new(cfg, peer, Instant::now());
    let mut carry = Vec::new();
    let mut out = Vec::with_capacity(512);
    ringrelay_engine_spike::greet(&mut session);
    session.poll_output(&mut out);
    let mut w = &s;
    let r = w.write_all(out).await;
    if r.0.is_err() {
        return;
    }
    out = r.1;
    out.clear();
    'rearm: loop {
        let mut rd = &s;
        let stream = rd.read_multi(16384);
        let mut stream = std::pin::pin!(stream);
        while let Some(buf) = stream.next().await {
            let buf = match buf {
                Ok(b) => b,
                // compio reports an empty pool as an error that ends the stream: arm again.
                Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => continue 'rearm,
                Err(_) => break 'rearm,
            };
            if buf.is_empty() {
                break 'rearm;
            }
            ringrelay_engine_spike::feed(&mut session, &mut carry, &buf);
            drop(buf);
            session.poll_output(&mut out);
            if !out.is_empty() {
                let r = w.write_all(out).await;
                if r.0.is_err() {
                    break 'rearm;
                }
                out = r.1;
                out.clear();
            }
            if session.is_closed() {
                break 'rearm;
            }
        }
        break;
    }
}
