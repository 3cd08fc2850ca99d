//! TLS failures in words a user can act on: `TlsFailure` says what failed (sorted out of
//! rustls's errors), `TlsError` adds with whom and which option changes it —
//! "TLS with localhost:2525 failed: the server's certificate is not trusted (unknown issuer);
//! give its CA with --tls-ca FILE". Pure: it only reads errors.

use std::fmt;
use std::io;
use std::path::PathBuf;

use rustls::CertificateError;

use super::tls_trust::TlsFlagNames;

/// What went wrong setting up TLS or during the handshake.
#[derive(Clone, Debug, thiserror::Error)]
pub enum TlsFailure {
    /// The CA file could not be read or holds no certificate.
    #[error("cannot use the CA file {}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// There is nothing to trust: the system has no CA certificates and no CA file was given.
    #[error("there are no trusted CA certificates (the system has none)")]
    NoRoots,
    /// The name to check is neither a DNS name nor an IP address.
    #[error("{0:?} is not a name a certificate can be checked against")]
    BadServerName(String),
    /// The certificate does not chain to a trusted CA.
    #[error("the server's certificate is not trusted (unknown issuer)")]
    UnknownIssuer,
    /// The server presented a CA certificate (not in the CA file) as its own.
    #[error(
        "the server's certificate is not trusted (a self-signed or CA certificate that is not \
         in the CA file)"
    )]
    CaAsServerCert,
    /// The certificate is not valid for the name we connected to.
    #[error(
        "the server's certificate is not valid for {expected} (it is for {})",
        names(presented)
    )]
    WrongName {
        /// The name checked.
        expected: String,
        /// The names the certificate holds.
        presented: Vec<String>,
    },
    /// The certificate has expired.
    #[error("the server's certificate has expired")]
    Expired,
    /// The certificate is not valid yet.
    #[error("the server's certificate is not valid yet (is this machine's clock right?)")]
    NotValidYet,
    /// Another certificate problem.
    #[error("the server's certificate was refused ({0})")]
    BadCertificate(String),
    /// The server sent an alert.
    #[error("the server refused the handshake ({0})")]
    Alert(String),
    /// The server closed the connection during the handshake.
    #[error("the server closed the connection during the handshake")]
    Closed,
    /// Octets followed the STARTTLS reply in cleartext (RFC 3207 §6).
    #[error("the server sent cleartext after its reply to STARTTLS")]
    CleartextAfterStartTls,
    /// Anything else in the handshake (no common version or cipher suite, I/O, protocol).
    #[error("{0}")]
    Handshake(String),
}

fn names(presented: &[String]) -> String {
    if presented.is_empty() {
        "no name".into()
    } else {
        presented.join(", ")
    }
}

impl TlsFailure {
    /// Sorts out an error from `TlsStream::handshake`.
    pub fn from_handshake(e: &io::Error) -> TlsFailure {
        let inner = e.get_ref();
        if let Some(r) = inner.and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return Self::from_rustls(r);
        }
        if let Some(f) = inner.and_then(|i| i.downcast_ref::<TlsFailure>()) {
            return f.clone();
        }
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => TlsFailure::Closed,
            _ => TlsFailure::Handshake(e.to_string()),
        }
    }

    /// Sorts out a rustls error.
    pub fn from_rustls(e: &rustls::Error) -> TlsFailure {
        use rustls::Error as E;
        match e {
            E::InvalidCertificate(_) if is_ca_used_as_end_entity(e) => TlsFailure::CaAsServerCert,
            E::InvalidCertificate(c) => Self::from_certificate(c),
            E::AlertReceived(a) => TlsFailure::Alert(words(&format!("{a:?}"))),
            E::PeerIncompatible(p) => TlsFailure::Handshake(format!(
                "the server and this client have no TLS version or cipher suite in common ({})",
                words(&format!("{p:?}"))
            )),
            E::PeerMisbehaved(p) => TlsFailure::Handshake(format!(
                "the server broke the TLS protocol ({})",
                words(&format!("{p:?}"))
            )),
            other => TlsFailure::Handshake(other.to_string()),
        }
    }

    fn from_certificate(c: &CertificateError) -> TlsFailure {
        match c {
            CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                TlsFailure::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                TlsFailure::NotValidYet
            }
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            } => TlsFailure::WrongName {
                expected: expected.to_str().into_owned(),
                presented: presented.clone(),
            },
            CertificateError::Other(o) => TlsFailure::BadCertificate(words(&o.to_string())),
            other => TlsFailure::BadCertificate(words(&format!("{other:?}"))),
        }
    }
}

/// True for webpki's refusal of a CA certificate presented as a server's.
pub(super) fn is_ca_used_as_end_entity(e: &rustls::Error) -> bool {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => matches!(
            other.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::CaUsedAsEndEntity)
        ),
        _ => false,
    }
}

/// `HandshakeFailure` → `handshake failure`; anything not a plain identifier as it is.
fn words(ident: &str) -> String {
    if !ident.chars().all(|c| c.is_ascii_alphanumeric()) {
        return ident.to_string();
    }
    let mut out = String::with_capacity(ident.len() + 8);
    for (i, c) in ident.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A TLS failure with one server, as a sentence: with whom, what failed, and the option that
/// changes it.
#[derive(Debug)]
pub struct TlsError {
    /// The server (`host:port`, or a socket path).
    pub peer: String,
    /// What failed.
    pub failure: TlsFailure,
    /// The options to name.
    pub flags: TlsFlagNames,
}

impl TlsError {
    /// The advice that follows the failure, naming the option that changes it.
    fn hint(&self) -> String {
        let f = &self.flags;
        let skip = |why: &str| match f.insecure {
            Some(insecure) => format!("; {why}{insecure} skips the check (for tests only)"),
            None => String::new(),
        };
        match &self.failure {
            TlsFailure::CaFile { .. } => format!("; check the file given with {}", f.ca_file),
            TlsFailure::NoRoots | TlsFailure::UnknownIssuer => {
                format!("; give its CA with {} FILE", f.ca_file)
            }
            TlsFailure::CaAsServerCert => format!(
                "; give that very certificate with {} FILE to trust it as presented",
                f.ca_file
            ),
            TlsFailure::BadServerName(_) | TlsFailure::WrongName { .. } => match f.server_name {
                Some(flag) => format!("; connect by a name it holds, or give one with {flag} NAME"),
                None => "; connect by a name it holds".into(),
            },
            TlsFailure::Expired => skip("the server must renew it; "),
            TlsFailure::NotValidYet | TlsFailure::BadCertificate(_) => skip(""),
            _ => String::new(),
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TLS with {} failed: {}{}",
            self.peer,
            self.failure,
            self.hint()
        )
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentence(failure: TlsFailure, flags: TlsFlagNames) -> String {
        TlsError {
            peer: "localhost:2525".into(),
            failure,
            flags,
        }
        .to_string()
    }

    #[test]
    fn sentences_name_the_host_what_failed_and_the_flag() {
        let rows: &[(TlsFailure, TlsFlagNames, &str)] = &[
            (
                TlsFailure::UnknownIssuer,
                TlsFlagNames::SEND,
                "TLS with localhost:2525 failed: the server's certificate is not trusted \
                 (unknown issuer); give its CA with --tls-ca FILE",
            ),
            (
                TlsFailure::UnknownIssuer,
                TlsFlagNames::UPSTREAM,
                "TLS with localhost:2525 failed: the server's certificate is not trusted \
                 (unknown issuer); give its CA with --upstream-tls-ca FILE",
            ),
            (
                TlsFailure::WrongName {
                    expected: "mx.example".into(),
                    presented: vec!["localhost".into(), "127.0.0.1".into()],
                },
                TlsFlagNames::SEND,
                "TLS with localhost:2525 failed: the server's certificate is not valid for \
                 mx.example (it is for localhost, 127.0.0.1); connect by a name it holds, or \
                 give one with --tls-server-name NAME",
            ),
            (
                TlsFailure::Expired,
                TlsFlagNames::UPSTREAM,
                "TLS with localhost:2525 failed: the server's certificate has expired; the \
                 server must renew it; --upstream-tls-insecure skips the check (for tests only)",
            ),
            (
                TlsFailure::Closed,
                TlsFlagNames::SEND,
                "TLS with localhost:2525 failed: the server closed the connection during the \
                 handshake",
            ),
        ];
        for (failure, flags, want) in rows {
            assert_eq!(sentence(failure.clone(), *flags), *want);
        }
    }

    #[test]
    fn rustls_errors_are_sorted_out() {
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        assert_eq!(
            TlsFailure::from_rustls(&alert).to_string(),
            "the server refused the handshake (handshake failure)"
        );
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "closed");
        assert!(matches!(
            TlsFailure::from_handshake(&eof),
            TlsFailure::Closed
        ));
        let wrapped = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert!(matches!(
            TlsFailure::from_handshake(&wrapped),
            TlsFailure::UnknownIssuer
        ));
        assert_eq!(words("CaUsedAsEndEntity"), "ca used as end entity");
        assert_eq!(words("odd (text)"), "odd (text)");
    }
}
