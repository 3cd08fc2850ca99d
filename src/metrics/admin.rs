//! The admin HTTP listener: one thread serving `/metrics`, `/healthz`, `/readyz` and
//! `/stats.json` with hyper (HTTP/1.1) on a current-thread tokio runtime, on one or more
//! addresses (a name given to `--metrics-listen` serves on all of its addresses). It never
//! touches a shard: it reads the published slots.
//!
//! Bounded whatever a client does: request headers at most `MAX_HEADER` octets (hyper answers
//! 431 beyond), at most `MAX_CONNECTIONS` connections at once (more are closed at once), a
//! request's headers must arrive within `HEADER_TIMEOUT` and a connection lives at most
//! `CONNECTION_LIFETIME`; request bodies are never read. A scrape waits for the shards on a
//! blocking thread, so a slow one does not stall the others.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, Semaphore};

use super::exposition::{prometheus_text, TEXT_CONTENT_TYPE};
use super::hub::Hub;
use super::stats_json::stats_json;

/// How long a scrape waits for the shards to publish fresh figures.
const SCRAPE_WAIT: Duration = Duration::from_millis(250);
/// Largest request head (request line and headers), in octets.
const MAX_HEADER: usize = 16 * 1024;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// Time allowed for a request's headers to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection is kept, however busy.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// A bound admin listener (one socket per address), not yet serving.
#[derive(Debug)]
pub(crate) struct AdminListener {
    listeners: Vec<std::net::TcpListener>,
    addrs: Vec<SocketAddr>,
}

/// The running admin thread; dropping it stops the thread.
pub(crate) struct AdminThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AdminListener {
    /// Serves on `listeners`, bound and listening (the server binds them, with its rules
    /// for sharing an address).
    pub(crate) fn new(listeners: Vec<std::net::TcpListener>) -> io::Result<Self> {
        let mut addrs = Vec::with_capacity(listeners.len());
        for l in &listeners {
            l.set_nonblocking(true)?;
            addrs.push(l.local_addr()?);
        }
        Ok(Self { listeners, addrs })
    }

    /// The bound addresses.
    pub(crate) fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Starts serving on a thread of its own.
    pub(crate) fn start(self, hub: Arc<Hub>) -> io::Result<AdminThread> {
        let (stop, stopped) = oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(2)
            .build()?;
        let listeners = self.listeners;
        let thread = std::thread::Builder::new()
            .name("ringrelay-admin".into())
            .spawn(move || rt.block_on(serve_all(listeners, hub, stopped)))?;
        Ok(AdminThread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for AdminThread {
    /// Stops serving and waits for the thread.
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accepts on every listener until told to stop; the connection cap is shared by all.
async fn serve_all(
    listeners: Vec<std::net::TcpListener>,
    hub: Arc<Hub>,
    stop: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tasks: Vec<_> = listeners
        .into_iter()
        .map(|l| tokio::spawn(serve(l, hub.clone(), slots.clone())))
        .collect();
    let _ = stop.await;
    for t in tasks {
        t.abort();
    }
}

/// Accepts on one listener; each connection is served by a task of its own.
async fn serve(listener: std::net::TcpListener, hub: Arc<Hub>, slots: Arc<Semaphore>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(_) => {
                // EMFILE and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the cap: closed at once, costing nothing.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| respond(hub.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(MAX_HEADER)
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(slot);
        });
    }
}

/// The largest `PUT /faults` body.
const MAX_BODY: usize = 64 * 1024;

/// `GET /faults` (the rules as JSON) and `PUT /faults` (replace them whole, or 400 with the
/// reason and the old rules kept).
async fn faults(hub: &Hub, req: Request<Incoming>) -> (u16, &'static str, String) {
    let Some(doc) = hub.faults.0.clone() else {
        let why = "no fault layer: start sink or debug with --faults FILE (an empty file will do) \
                   or a fault flag\n";
        return (404, "text/plain", why.to_string());
    };
    match *req.method() {
        Method::GET | Method::HEAD => (200, "application/json", doc.get()),
        Method::PUT => {
            use http_body_util::BodyExt;
            let body = http_body_util::Limited::new(req.into_body(), MAX_BODY);
            match tokio::time::timeout(HEADER_TIMEOUT, body.collect()).await {
                Ok(Ok(collected)) => match doc.put(&collected.to_bytes()) {
                    Ok(what) => (200, "text/plain", format!("{what}\n")),
                    Err(why) => (
                        400,
                        "text/plain",
                        format!("refused, the old rules stay: {why}\n"),
                    ),
                },
                Ok(Err(_)) => (413, "text/plain", format!("body over {MAX_BODY} octets\n")),
                Err(_) => (408, "text/plain", "body too slow\n".to_string()),
            }
        }
        _ => (
            405,
            "text/plain",
            "method not allowed (GET or PUT)\n".to_string(),
        ),
    }
}

async fn respond(
    hub: Arc<Hub>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let (status, content_type, body) = if path == "/faults" {
        faults(&hub, req).await
    } else if !matches!(*req.method(), Method::GET | Method::HEAD) {
        (405, "text/plain", "method not allowed\n".to_string())
    } else {
        match path.as_str() {
            "/metrics" | "/stats.json" => {
                let json = path == "/stats.json";
                let scraped = tokio::task::spawn_blocking(move || {
                    hub.refresh(SCRAPE_WAIT);
                    let merged = hub.merged();
                    if json {
                        format!("{:#}\n", stats_json(&hub, &merged))
                    } else {
                        prometheus_text(&hub, &merged)
                    }
                })
                .await;
                match scraped {
                    Ok(text) if json => (200, "application/json", text),
                    Ok(text) => (200, TEXT_CONTENT_TYPE, text),
                    Err(_) => (500, "text/plain", "scrape failed\n".to_string()),
                }
            }
            "/healthz" => (200, "text/plain", "ok\n".to_string()),
            "/readyz" if hub.draining() => (503, "text/plain", "draining\n".to_string()),
            "/readyz" if !hub.ready() => (503, "text/plain", "not accepting\n".to_string()),
            "/readyz" => match hub.readiness.not_ready() {
                Some(why) => (503, "text/plain", format!("not ready: {why}\n")),
                None => (200, "text/plain", "ready\n".to_string()),
            },
            "/" => (
                200,
                "text/plain",
                "ringrelay admin: /metrics /stats.json /healthz /readyz /faults\n".to_string(),
            ),
            _ => (404, "text/plain", "not found\n".to_string()),
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    Ok(response)
}
