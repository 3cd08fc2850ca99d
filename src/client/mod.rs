//! The SMTP/LMTP client: smtplib's API plus PIPELINING, CHUNKING, SIZE and LMTP.
//!
//! - `core`: the sans-IO connection (commands out, replies in, per-phase deadlines).
//! - `reply`, `message`, `auth`: sans-IO pieces (reply parsing, body encoding and
//!   `send_message` envelope rules, SASL encoders).
//! - `transport` and `smtp`: the tokio driver (`SmtpClient`), used by `ringrelay send`.
//! - `tls_trust`, `tls_error`, `cert_info`: which server certificates to trust, TLS failures
//!   as sentences, and the certificate fields shown or checked.

pub mod auth;
pub mod cert_info;
pub mod core;
mod dial;
pub mod error;
mod features;
pub mod message;
pub mod reply;
mod send;
pub mod smtp;
pub mod tls_error;
pub mod tls_trust;
pub mod transport;

pub use error::{ClientError, Refused};
pub use features::Features;
pub use send::SendOptions;
pub use smtp::{ConnectOptions, SmtpClient};
pub use tls_error::{TlsError, TlsFailure};
pub use tls_trust::{TlsFlagNames, TlsOptions};
