//! Server-side TLS after STARTTLS (RFC 3207), over either driver's stream: rustls through its
//! buffer API, so io_uring and epoll share this code and no tokio-uring call leaves the driver
//! modules. Until `start` is called, `Wire` passes bytes straight through.
//!
//! Contract (the same as the drivers'): an operation on the inner stream, once started, is
//! awaited to completion. The handshake needs no loop of its own: the connection's next reads
//! and writes drive it, so the read timeout and the drain apply to it as to any read.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::conn::ConnStream;

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
    /// Ciphertext read from the socket and not yet handed to rustls.
    cipher: BytesMut,
    /// Ciphertext for the socket, reused from write to write (None while being written).
    out: Option<Vec<u8>>,
}

/// A connection's stream, plain until `start`, TLS after.
pub(crate) struct Wire<S> {
    inner: S,
    tls: RefCell<Option<Tls>>,
}

/// Ciphertext read size (a TLS record is at most 16 KiB plus overhead).
const CIPHER_READ: usize = 17 * 1024;

impl<S: ConnStream> Wire<S> {
    /// A plain stream.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            tls: RefCell::new(None),
        }
    }

    /// Switches to TLS: from now on reads and writes go through rustls (the client's
    /// ClientHello comes next).
    pub fn start(&self, config: Arc<rustls::ServerConfig>) -> Result<(), rustls::Error> {
        let conn = rustls::ServerConnection::new(config)?;
        *self.tls.borrow_mut() = Some(Tls {
            conn,
            cipher: BytesMut::with_capacity(CIPHER_READ),
            out: Some(Vec::with_capacity(CIPHER_READ)),
        });
        Ok(())
    }

    fn is_tls(&self) -> bool {
        self.tls.borrow().is_some()
    }

    /// Writes every TLS record rustls has queued (handshake messages, data, alerts).
    async fn flush_tls(&self) -> io::Result<()> {
        loop {
            let out = {
                let mut g = self.tls.borrow_mut();
                let Some(t) = g.as_mut() else {
                    return Ok(());
                };
                if !t.conn.wants_write() {
                    return Ok(());
                }
                let mut out = t.out.take().unwrap_or_default();
                out.clear();
                t.conn.write_tls(&mut out)?;
                out
            };
            let (res, out) = self.inner.write_all(out).await;
            if let Some(t) = self.tls.borrow_mut().as_mut() {
                t.out = Some(out);
            }
            res?;
        }
    }

    /// Hands buffered ciphertext to rustls; false when it took nothing (it needs more).
    fn feed(&self) -> io::Result<bool> {
        let mut g = self.tls.borrow_mut();
        let Some(t) = g.as_mut() else {
            return Ok(false);
        };
        let mut fed = false;
        while !t.cipher.is_empty() {
            let mut rd = &t.cipher[..];
            let n = match t.conn.read_tls(&mut rd) {
                Ok(n) => n,
                // Its plaintext buffer is full: the caller takes plaintext out first.
                Err(e) if e.kind() == io::ErrorKind::Other && fed => break,
                Err(e) => return Err(e),
            };
            t.cipher.advance(n);
            fed = true;
            t.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if n == 0 {
                break;
            }
        }
        Ok(fed)
    }

    async fn read_tls(&self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        loop {
            {
                let mut g = self.tls.borrow_mut();
                let Some(t) = g.as_mut() else {
                    return (Ok(0), buf);
                };
                let mut plain = [0u8; 8192];
                match t.conn.reader().read(&mut plain) {
                    Ok(n) => {
                        // 0: the client's close_notify, an orderly end.
                        buf.extend_from_slice(&plain[..n]);
                        return (Ok(n), buf);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return (Err(e), buf),
                }
            }
            let fed = self.feed();
            // Whatever rustls has to say (handshake messages, or an alert before failing).
            if let Err(e) = self.flush_tls().await {
                return (Err(e), buf);
            }
            match fed {
                Err(e) => return (Err(e), buf),
                Ok(true) => continue,
                Ok(false) => {}
            }
            let mut cipher = match self.tls.borrow_mut().as_mut() {
                Some(t) => std::mem::take(&mut t.cipher),
                None => return (Ok(0), buf),
            };
            if cipher.capacity() - cipher.len() < CIPHER_READ / 2 {
                cipher.reserve(CIPHER_READ);
            }
            let (res, cipher) = self.inner.read(cipher).await;
            if let Some(t) = self.tls.borrow_mut().as_mut() {
                t.cipher = cipher;
            }
            match res {
                Ok(0) => return (Ok(0), buf),
                Ok(_) => {}
                Err(e) => return (Err(e), buf),
            }
        }
    }
}

impl<S: ConnStream> ConnStream for Wire<S> {
    async fn read(&self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        if self.is_tls() {
            self.read_tls(buf).await
        } else {
            self.inner.read(buf).await
        }
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        if !self.is_tls() {
            return self.inner.write_all(buf).await;
        }
        let queued = match self.tls.borrow_mut().as_mut() {
            Some(t) => t.conn.writer().write_all(&buf),
            None => Ok(()),
        };
        if let Err(e) = queued {
            return (Err(e), buf);
        }
        (self.flush_tls().await, buf)
    }

    fn shutdown_read(&self) {
        self.inner.shutdown_read();
    }
}
