//! The SMTP/LMTP client: smtplib's API plus PIPELINING, CHUNKING, SIZE and LMTP.
//!
//! - `core`: the sans-IO connection (commands out, replies in, per-phase deadlines).
//! - `reply`, `message`, `auth`: sans-IO pieces (reply parsing, body encoding and
//!   `send_message` envelope rules, SASL encoders).
//! - `transport` and `smtp`: the tokio driver (`SmtpClient`), used by `ringrelay send`.

pub mod auth;
pub mod core;
pub mod error;
pub mod message;
pub mod reply;
mod send;
pub mod smtp;
pub mod transport;

pub use error::{ClientError, Refused};
pub use send::SendOptions;
pub use smtp::{ConnectOptions, Features, SmtpClient};
pub use transport::TlsOptions;
