//! The admin HTTP listener: one thread serving `/metrics`, `/healthz`, `/readyz` and
//! `/stats.json` with tiny_http. It never touches a shard: it reads the published slots.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response};

use super::exposition::{prometheus_text, stats_json, TEXT_CONTENT_TYPE};
use super::hub::Hub;

/// How long a scrape waits for the shards to publish fresh figures.
const SCRAPE_WAIT: Duration = Duration::from_millis(250);

/// A bound admin listener, not yet serving.
pub(crate) struct AdminListener {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
}

impl std::fmt::Debug for AdminListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminListener")
            .field("addr", &self.addr)
            .finish()
    }
}

/// The running admin thread; dropping it stops the thread.
pub(crate) struct AdminThread {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl AdminListener {
    /// Binds `addr` (port 0 picks a free port).
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let server = tiny_http::Server::from_listener(listener, None).map_err(io::Error::other)?;
        Ok(Self {
            server: Arc::new(server),
            addr,
        })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving on a thread of its own.
    pub(crate) fn start(self, hub: Arc<Hub>) -> io::Result<AdminThread> {
        let server = self.server.clone();
        let thread = std::thread::Builder::new()
            .name("ringrelay-admin".into())
            .spawn(move || {
                while let Ok(req) = server.recv() {
                    respond(&hub, req);
                }
            })?;
        Ok(AdminThread {
            server: self.server,
            thread: Some(thread),
        })
    }
}

impl Drop for AdminThread {
    /// Stops serving and waits for the thread (it finishes the request in hand, if any).
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header is valid")
}

fn respond(hub: &Hub, req: Request) {
    let path = req.url().split('?').next().unwrap_or("");
    let (status, content_type, body) = if !matches!(req.method(), Method::Get | Method::Head) {
        (405, "text/plain", "method not allowed\n".to_string())
    } else {
        match path {
            "/metrics" => {
                hub.refresh(SCRAPE_WAIT);
                (200, TEXT_CONTENT_TYPE, prometheus_text(hub, &hub.merged()))
            }
            "/stats.json" => {
                hub.refresh(SCRAPE_WAIT);
                let doc = stats_json(hub, &hub.merged());
                (200, "application/json", format!("{doc:#}\n"))
            }
            "/healthz" => (200, "text/plain", "ok\n".to_string()),
            "/readyz" if hub.ready() => (200, "text/plain", "ready\n".to_string()),
            "/readyz" if hub.draining() => (503, "text/plain", "draining\n".to_string()),
            "/readyz" => (503, "text/plain", "not accepting\n".to_string()),
            "/" => (
                200,
                "text/plain",
                "ringrelay admin: /metrics /stats.json /healthz /readyz\n".to_string(),
            ),
            _ => (404, "text/plain", "not found\n".to_string()),
        }
    };
    let response = Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type));
    let _ = req.respond(response);
}
