//! ringrelay: a high-throughput SMTP sink, debugging server and relay.
//!
//! Layers, data flowing only downwards:
//!
//! ```text
//!  main.rs / cli    parse args + TOML config; pick a mode; start shards
//!  server/          shard threads: pinned, one event loop each (io_uring or epoll), listener,
//!                   connection slab, graceful drain. The only code that does server I/O.
//!  handler/         what a transaction means: the Handler trait (sink, debug, yours) and the
//!                   Service/Connection layer whose answers may come later
//!  relay/           the proxy: transaction mirroring, per-shard upstream pool, relay policy
//!  client/          sans-IO SMTP/LMTP client core + its tokio driver (relay, send, ringload)
//!  proto/           sans-IO SMTP: parser, replies, session state machine, DATA/BDAT scanner
//!  metrics/         shard-local counters and HDR histograms; an admin HTTP thread merges
//!                   and serves them (/metrics, /stats.json, /healthz, /readyz)
//! ```
//!
//! The protocol core (`proto`) is usable on its own: feed bytes to a [`proto::Session`], take
//! its replies and events, answer the events.

pub mod client;
pub mod engine;
pub mod handler;
pub mod metrics;
pub mod proto;
pub mod relay;
pub mod rt;
pub mod server;

pub use handler::Handler;
pub use proto::{Reply, Session, SessionConfig};
pub use server::{Server, ServerConfig};
