//! The in-memory relay test kit (tests/relay_memory.rs): a scripted upstream over
//! `tokio::io::duplex` and a client session driven as the shard drives it, with no sockets.
#![allow(dead_code)]

pub mod client;
pub mod upstream;

pub use client::{relay, run, Client};
pub use upstream::Mode;
