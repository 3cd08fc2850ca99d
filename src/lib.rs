//! ringrelay: a high-throughput SMTP sink, debugging server and relay.
//!
//! Layers, data flowing only downwards:
//!
//! ```text
//!  bin/ringrelay/   the binary (not the library): parse args + TOML config; pick a mode;
//!                   start shards
//!  server/          shard threads: pinned, one event loop each (the io_uring engine, or tokio
//!                   on epoll), listeners, connection slab, graceful drain; the connection
//!                   logic both drivers share
//!  handler/         what a transaction means: the Handler trait (sink, debug, yours) and the
//!                   Service/Connection layer whose answers may come later
//!  faults/          fault and latency injection: a Service wrapper for sink and debug
//!  relay/           an implementation of handler's Service: transaction mirroring, the
//!                   per-shard upstream pool, relay policy
//!  client/          sans-IO SMTP/LMTP client core + its driver (relay, send, ringload)
//!  proto/           sans-IO SMTP: parser, replies, session state machine, DATA/BDAT scanner
//!  metrics/         shard-local counters and HDR histograms; an admin HTTP thread merges
//!                   and serves them (/metrics, /stats.json, /healthz, /readyz)
//!  reload           settings a SIGHUP replaces (TLS, relay policy, upstreams): Swap, Cached
//!  net              CIDR networks (relay networks, trusted PROXY senders)
//!  log              the operator's log: tracing lines to a writer thread, never blocking
//!  rt               spawn, sleep and time out on whichever loop runs this thread
//!  engine/          the native io_uring engine: ring, tasks, timers, the DATA buffer pool,
//!                   listeners, connections and client sockets. The only code that calls
//!                   io_uring; server/ (accepted connections) and client/ (the relay's
//!                   upstream sockets, in a uring shard) use it.
//! ```
//!
//! The protocol core (`proto`) is usable on its own: feed bytes to a [`proto::Session`], take
//! its replies and events, answer the events.

// Every public item is documented, and nothing is `pub` that the crate does not export;
// keep it so.
#![warn(missing_docs, unreachable_pub)]

pub mod client;
pub mod engine;
pub mod faults;
pub mod handler;
pub mod log;
pub mod metrics;
pub mod net;
pub mod proto;
pub mod relay;
pub mod reload;
pub mod rt;
pub mod server;

pub use handler::Handler;
pub use proto::{Reply, Session, SessionConfig};
pub use server::{Server, ServerConfig};
