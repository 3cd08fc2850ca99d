//! The client's typed errors, one per smtplib exception class plus the transport failures.

use super::core::CoreError;
use super::message::EnvelopeError;
use crate::proto::Reply;

/// Recipients the server refused, with its reply to each, in order.
pub type Refused = Vec<(String, Reply)>;

/// Everything that can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TCP/Unix connect failed (smtplib: OSError).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The greeting was not 220 (SMTPConnectError).
    #[error("server refused the connection: {0}")]
    ConnectRefused(Reply),
    /// HELO/EHLO refused (SMTPHeloError).
    #[error("server refused HELO/EHLO: {0}")]
    Helo(Reply),
    /// MAIL refused (SMTPSenderRefused).
    #[error("sender {sender} refused: {reply}")]
    SenderRefused {
        /// The reply.
        reply: Reply,
        /// The sender.
        sender: String,
    },
    /// Every recipient refused (SMTPRecipientsRefused).
    #[error("all recipients refused: {}", fmt_refused(.0))]
    RecipientsRefused(Refused),
    /// DATA or the end of data refused (SMTPDataError).
    #[error("message refused: {0}")]
    Data(Reply),
    /// The server lacks an extension this needs (SMTPNotSupportedError).
    #[error("not supported by the server: {0}")]
    NotSupported(String),
    /// Authentication failed (SMTPAuthenticationError).
    #[error("authentication failed: {0}")]
    Authentication(Reply),
    /// The server closed the connection (SMTPServerDisconnected).
    #[error("server disconnected")]
    ServerDisconnected,
    /// An unexpected reply to a command (SMTPResponseException).
    #[error("unexpected reply to {command}: {reply}")]
    Response {
        /// The command.
        command: String,
        /// The reply.
        reply: Reply,
    },
    /// Garbage, a late reply, or an unsolicited one.
    #[error(transparent)]
    Protocol(#[from] CoreError),
    /// The message's headers give no usable envelope (smtplib: ValueError).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// TLS failed: a sentence naming the server, what failed and the option that changes it.
    #[error(transparent)]
    Tls(Box<super::TlsError>),
    /// Reading or writing failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl From<super::TlsError> for ClientError {
    fn from(e: super::TlsError) -> Self {
        ClientError::Tls(Box::new(e))
    }
}

fn fmt_refused(r: &Refused) -> String {
    r.iter()
        .map(|(a, rep)| format!("{a}: {rep}"))
        .collect::<Vec<_>>()
        .join("; ")
}
