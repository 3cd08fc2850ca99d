//! Server-side TLS after STARTTLS (RFC 3207), over either driver's stream: rustls through its
//! buffer API, so io_uring and epoll share this code and no I/O call leaves the driver
//! modules. Until `start` is called, `Wire` passes chunks straight through.
//!
//! Contract (the same as the drivers'): `recv` is cancel-safe (ciphertext not yet processed
//! stays here between calls), and `send` only queues (ciphertext goes to the driver's queue).
//! The handshake needs no loop of its own: the connection's next receives and sends drive it,
//! so the read timeout and the drain apply to it as to any receive.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::stream::ConnStream;

/// Why a TLS server configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The certificate chain file.
    #[error("reading certificates from {path}: {source}")]
    Certificates {
        /// The file.
        path: String,
        /// What went wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// The private key file.
    #[error("reading the private key from {path}: {source}")]
    Key {
        /// The file.
        path: String,
        /// What went wrong.
        source: rustls::pki_types::pem::Error,
    },
    /// The pair did not make a configuration (for example a key that does not match).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A rustls server configuration from PEM files: the certificate chain (leaf first) and its
/// private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsConfigError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsConfigError::Certificates {
            path: cert.display().to_string(),
            source,
        })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsConfigError::Key {
        path: key.display().to_string(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?)
}

/// TLS state once started.
struct Tls {
    conn: rustls::ServerConnection,
    /// Ciphertext received and not yet taken by rustls.
    cipher: Bytes,
    /// Scratch for ciphertext on its way to the driver.
    out: Vec<u8>,
    /// The completed handshake was logged.
    announced: bool,
}

/// A connection's stream, plain until `start`, TLS after (boxed: most connections never
/// start TLS, and an idle connection should cost little).
pub(crate) struct Wire<S> {
    inner: S,
    tls: RefCell<Option<Box<Tls>>>,
}

impl<S: ConnStream> Wire<S> {
    /// A plain stream.
    pub(super) fn new(inner: S) -> Self {
        Self {
            inner,
            tls: RefCell::new(None),
        }
    }

    /// Switches to TLS: from now on input and output go through rustls (the client's
    /// ClientHello comes next).
    pub(super) fn start(&self, config: Arc<rustls::ServerConfig>) -> Result<(), rustls::Error> {
        let conn = rustls::ServerConnection::new(config)?;
        *self.tls.borrow_mut() = Some(Box::new(Tls {
            conn,
            cipher: Bytes::new(),
            out: Vec::new(),
            announced: false,
        }));
        Ok(())
    }

    /// Queues TLS's close_notify alert, when TLS is on (before the last flush).
    pub(super) fn goodbye(&self) {
        if let Some(t) = self.tls.borrow_mut().as_mut() {
            t.conn.send_close_notify();
            let _ = self.queue_tls(t);
        }
    }

    /// Queues every TLS record rustls has ready (handshake messages, data, alerts).
    fn queue_tls(&self, t: &mut Tls) -> io::Result<()> {
        while t.conn.wants_write() {
            t.out.clear();
            t.conn.write_tls(&mut t.out)?;
            self.inner.send(&t.out);
        }
        Ok(())
    }

    /// Plaintext from rustls, feeding it buffered ciphertext as needed: `Some(Some(bytes))`,
    /// `Some(None)` at the client's close_notify, `None` when it needs more ciphertext.
    fn take_plain(&self, t: &mut Tls) -> io::Result<Option<Option<Bytes>>> {
        loop {
            let state = t.conn.process_new_packets();
            // Whatever rustls has to say (handshake messages, or an alert before failing).
            self.queue_tls(t)?;
            let state = state.map_err(|e| {
                tracing::info!(target: crate::log::CONNECTION, "TLS handshake or record failed: {e}");
                io::Error::new(io::ErrorKind::InvalidData, e)
            })?;
            if !t.announced && !t.conn.is_handshaking() {
                t.announced = true;
                tracing::debug!(
                    target: crate::log::CONNECTION,
                    version = ?t.conn.protocol_version(),
                    cipher = ?t.conn.negotiated_cipher_suite().map(|c| c.suite()),
                    "TLS established"
                );
            }
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let mut plain = BytesMut::zeroed(n);
                let got = t.conn.reader().read(&mut plain)?;
                plain.truncate(got);
                return Ok(Some(Some(plain.freeze())));
            }
            if state.peer_has_closed() {
                return Ok(Some(None));
            }
            if t.cipher.is_empty() {
                return Ok(None);
            }
            let mut rd = &t.cipher[..];
            let taken = t.conn.read_tls(&mut rd)?;
            t.cipher.advance(taken);
            if taken == 0 {
                return Ok(None);
            }
        }
    }

    fn poll_recv_tls(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            {
                let mut g = self.tls.borrow_mut();
                let Some(t) = g.as_mut() else {
                    return Poll::Ready(Ok(None));
                };
                if let Some(r) = self.take_plain(t)? {
                    return Poll::Ready(Ok(r));
                }
            }
            let Some(chunk) = ready!(self.inner.poll_recv(cx))? else {
                return Poll::Ready(Ok(None));
            };
            if let Some(t) = self.tls.borrow_mut().as_mut() {
                if t.cipher.is_empty() {
                    t.cipher = chunk;
                } else {
                    let mut joined = BytesMut::from(&t.cipher[..]);
                    joined.extend_from_slice(&chunk);
                    t.cipher = joined.freeze();
                }
            }
        }
    }
}

impl<S: ConnStream> ConnStream for Wire<S> {
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if self.tls.borrow().is_some() {
            self.poll_recv_tls(cx)
        } else {
            self.inner.poll_recv(cx)
        }
    }

    fn send(&self, data: &[u8]) {
        let mut g = self.tls.borrow_mut();
        match g.as_mut() {
            None => self.inner.send(data),
            Some(t) => {
                if t.conn.writer().write_all(data).is_ok() {
                    let _ = self.queue_tls(t);
                }
            }
        }
    }

    fn unsent(&self) -> usize {
        self.inner.unsent()
    }

    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_flush(cx)
    }

    fn close(self) {
        self.inner.close();
    }
}
