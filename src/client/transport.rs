//! Byte transports for the client driver: TCP and Unix sockets (LMTP) on tokio, sockets on the
//! io_uring engine (the relay's upstream connections in a uring shard), and TLS on top of any
//! of them (rustls driven through its sans-IO API, so the same code serves every runtime).
//!
//! A read dropped by a timeout is safe on both: tokio's reads are readiness based, and the
//! engine cancels the operation and keeps its buffer until the kernel is done with it. The
//! connection is unusable afterwards either way (the client core then reports the timeout).

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::engine;

/// A plain connection.
#[derive(Debug)]
pub enum Plain {
    /// TCP on tokio.
    Tcp(TcpStream),
    /// A Unix-domain socket (LMTP) on tokio.
    Unix(UnixStream),
    /// TCP or a Unix-domain socket on the io_uring engine.
    Ring(engine::Socket),
}

impl Plain {
    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Plain::Tcp(s) => s.read_buf(buf).await,
            Plain::Unix(s) => s.read_buf(buf).await,
            Plain::Ring(s) => {
                let (r, b) = s.read(std::mem::take(buf)).await;
                *buf = b;
                r
            }
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Plain::Tcp(s) => s.write_all(data).await,
            Plain::Unix(s) => s.write_all(data).await,
            Plain::Ring(s) => s.write_all(vec![Bytes::copy_from_slice(data)]).await,
        }
    }

    fn shutdown(&self) {
        let how = std::net::Shutdown::Both;
        let _ = match self {
            Plain::Tcp(s) => socket2::SockRef::from(s).shutdown(how),
            Plain::Unix(s) => socket2::SockRef::from(s).shutdown(how),
            Plain::Ring(s) => {
                s.shutdown();
                Ok(())
            }
        };
    }
}

/// A connection, plain or TLS.
#[derive(Debug)]
pub enum Stream {
    /// No TLS.
    Plain(Plain),
    /// TLS over a plain connection.
    Tls(Box<TlsStream>),
}

impl Stream {
    /// Reads what is available into `buf` (0 = end of stream).
    pub async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Plain(p) => p.read_buf(buf).await,
            Stream::Tls(t) => t.read_buf(buf).await,
        }
    }

    /// Writes all of `data`.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(p) => p.write_all(data).await,
            Stream::Tls(t) => t.write_all(data).await,
        }
    }

    /// Shuts the socket down so a pending read completes.
    pub fn shutdown(&self) {
        match self {
            Stream::Plain(p) => p.shutdown(),
            Stream::Tls(t) => t.inner.shutdown(),
        }
    }

    /// True after a TLS handshake.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

/// rustls over a plain connection.
#[derive(Debug)]
pub struct TlsStream {
    inner: Plain,
    conn: rustls::ClientConnection,
    scratch: BytesMut,
}

/// How to check the server's certificate.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// PEM file with CA certificates to trust (in addition to the system's).
    pub ca_file: Option<std::path::PathBuf>,
    /// Accept any certificate (smtplib's default context does this; ringrelay does not by
    /// default).
    pub insecure: bool,
}

impl TlsOptions {
    /// Builds the rustls client configuration.
    pub fn client_config(&self) -> io::Result<Arc<rustls::ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?;
        let config = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if let Some(path) = &self.ca_file {
                use rustls::pki_types::pem::PemObject;
                for cert in rustls::pki_types::CertificateDer::pem_file_iter(path)
                    .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?
                {
                    let cert =
                        cert.map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
                    roots.add(cert).map_err(io::Error::other)?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(Arc::new(config))
    }
}

impl TlsStream {
    /// Performs the TLS handshake as a client for `server_name`.
    pub async fn handshake(
        inner: Plain,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> io::Result<Self> {
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut s = Self {
            inner,
            conn,
            scratch: BytesMut::with_capacity(16 * 1024),
        };
        while s.conn.is_handshaking() {
            s.flush_tls().await?;
            if s.conn.is_handshaking() && s.conn.wants_read() && s.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during TLS handshake",
                ));
            }
        }
        s.flush_tls().await?;
        Ok(s)
    }

    async fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            let mut out = Vec::new();
            self.conn.write_tls(&mut out)?;
            self.inner.write_all(&out).await?;
        }
        Ok(())
    }

    /// Reads ciphertext and processes it; returns the ciphertext octets read.
    async fn fill(&mut self) -> io::Result<usize> {
        self.scratch.clear();
        let n = self.inner.read_buf(&mut self.scratch).await?;
        if n > 0 {
            let mut slice = &self.scratch[..n];
            while !slice.is_empty() {
                self.conn.read_tls(&mut slice)?;
                self.conn
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
        }
        Ok(n)
    }

    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            let mut tmp = [0u8; 8192];
            match self.conn.reader().read(&mut tmp) {
                Ok(n) => {
                    buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            self.flush_tls().await?;
            if self.fill().await? == 0 {
                return Ok(0);
            }
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.conn.writer().write_all(data)?;
        self.flush_tls().await
    }
}

/// The verifier behind `TlsOptions::insecure`.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
