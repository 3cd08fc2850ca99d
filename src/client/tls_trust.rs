//! How the client decides to trust a server's certificate: `TlsOptions` (a CA file, or no
//! checks at all) turned into a rustls `ClientConfig`, and the verifiers behind it.
//!
//! The default is webpki's strict verification against the system's roots plus the CA file.
//! One exception, for what OpenSSL-based clients (Python's `ssl`, swaks) accept: a certificate
//! that is itself in the CA file is trusted as presented, even when it is a self-signed
//! `CA:TRUE` certificate (what `openssl req -x509 -subj /CN=localhost` makes), which webpki
//! refuses as "CA used as end entity". Only that refusal, and only for a byte-identical copy,
//! is overridden; the validity period and the server name are still checked (the name against
//! the subjectAltName, or, as OpenSSL does, the common name when there is no DNS name in it),
//! and handshake signatures are verified as always. Never touches a socket.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::cert_info::CertInfo;
use super::tls_error::{is_ca_used_as_end_entity, TlsFailure};

/// The names by which a program's user gives the TLS options, so that an error can say which
/// one changes the outcome. The default is `ringrelay send`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsFlagNames {
    /// The CA file option.
    pub ca_file: &'static str,
    /// The option that turns certificate checks off, if there is one.
    pub insecure: Option<&'static str>,
    /// The option that names the server name to check, if there is one.
    pub server_name: Option<&'static str>,
}

impl TlsFlagNames {
    /// `ringrelay send`'s (and `ringload`'s) flags.
    pub const SEND: TlsFlagNames = TlsFlagNames {
        ca_file: "--tls-ca",
        insecure: Some("--tls-insecure"),
        server_name: Some("--tls-server-name"),
    };
    /// `ringrelay proxy`'s flags toward the upstream.
    pub const UPSTREAM: TlsFlagNames = TlsFlagNames {
        ca_file: "--upstream-tls-ca",
        insecure: Some("--upstream-tls-insecure"),
        server_name: None,
    };
}

impl Default for TlsFlagNames {
    fn default() -> Self {
        Self::SEND
    }
}

/// How to check the server's certificate.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// PEM file with CA certificates to trust (in addition to the system's); a certificate in
    /// it is also trusted when the server presents exactly that one (see the module header).
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (smtplib's default context does this; ringrelay does not by
    /// default).
    pub insecure: bool,
    /// What the user calls these options, for error messages.
    pub flag_names: TlsFlagNames,
    /// The configuration once built: every connection made with these options (and their
    /// clones) shares it, instead of reading the system roots and the CA file again. A new
    /// `TlsOptions` (a reload) builds its own.
    pub cache: Arc<std::sync::OnceLock<Arc<rustls::ClientConfig>>>,
}

impl TlsOptions {
    /// The rustls client configuration, built on first use and then shared.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsFailure> {
        if let Some(config) = self.cache.get() {
            return Ok(config.clone());
        }
        let config = self.build_client_config()?;
        Ok(self.cache.get_or_init(|| config).clone())
    }

    fn build_client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsFailure> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsFailure::Handshake(e.to_string()))?;
        let verifier = self.verifier_with(provider)?;
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// The certificate verifier these options make.
    pub fn verifier(&self) -> Result<Arc<dyn ServerCertVerifier>, TlsFailure> {
        self.verifier_with(Arc::new(rustls::crypto::ring::default_provider()))
    }

    fn verifier_with(
        &self,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<dyn ServerCertVerifier>, TlsFailure> {
        if self.insecure {
            return Ok(Arc::new(AcceptAnyCert(provider)));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let given = match &self.ca_file {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        for cert in &given {
            roots.add(cert.clone()).map_err(|e| TlsFailure::CaFile {
                path: self.ca_file.clone().unwrap_or_default(),
                reason: e.to_string(),
            })?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|_| TlsFailure::NoRoots)?;
        Ok(Arc::new(CaFileVerifier { webpki, given }))
    }
}

/// The certificates of a PEM file (at least one).
fn read_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, TlsFailure> {
    use rustls::pki_types::pem::PemObject;
    let failure = |reason: String| TlsFailure::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| failure(pem_reason(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failure(pem_reason(e)))?;
    if certs.is_empty() {
        return Err(failure("it holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn pem_reason(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        other => format!("it is not a valid PEM file ({other})"),
    }
}

/// webpki's verification, plus trust in a certificate of the CA file presented as it is.
#[derive(Debug)]
struct CaFileVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    /// The CA file's certificates.
    given: Vec<CertificateDer<'static>>,
}

impl CaFileVerifier {
    /// Checks a certificate of the CA file presented as the server's: its validity period
    /// (webpki had checked it before it refused the certificate, but that is its internal
    /// order) and the server name.
    fn as_presented(
        &self,
        cert: &CertificateDer<'_>,
        name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let info = CertInfo::parse(cert).ok_or(CertificateError::BadEncoding)?;
        let at = |secs: i64| {
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs.max(0) as u64))
        };
        let secs = now.as_secs() as i64;
        if secs < info.not_before {
            let not_before = at(info.not_before);
            return Err(CertificateError::NotValidYetContext {
                time: now,
                not_before,
            }
            .into());
        }
        if secs > info.not_after {
            let not_after = at(info.not_after);
            return Err(CertificateError::ExpiredContext {
                time: now,
                not_after,
            }
            .into());
        }
        let parsed = rustls::server::ParsedCertificate::try_from(cert)?;
        match rustls::client::verify_server_name(&parsed, name) {
            Ok(()) => Ok(ServerCertVerified::assertion()),
            Err(_) if common_name_matches(&info, name) => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(explain(e, &info)),
        }
    }
}

/// OpenSSL's rule for a certificate without DNS names in its subjectAltName: the subject's
/// common name is the host name (exact, ignoring case and a final dot; no wildcards).
fn common_name_matches(info: &CertInfo, name: &ServerName<'_>) -> bool {
    let (ServerName::DnsName(dns), Some(cn)) = (name, &info.common_name) else {
        return false;
    };
    let want = dns.as_ref().trim_end_matches('.');
    info.dns_names.is_empty() && cn.trim_end_matches('.').eq_ignore_ascii_case(want)
}

/// A name mismatch says the names the certificate holds, written plainly.
fn explain(e: rustls::Error, info: &CertInfo) -> rustls::Error {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected,
            ..
        }) => {
            let mut presented: Vec<String> = info.dns_names.clone();
            presented.extend(info.ip_addresses.iter().map(|ip| ip.to_string()));
            if presented.is_empty() {
                presented.extend(info.common_name.clone());
            }
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            }
            .into()
        }
        other => other,
    }
}

impl ServerCertVerifier for CaFileVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match verdict {
            Ok(v) => Ok(v),
            Err(e)
                if is_ca_used_as_end_entity(&e)
                    && self.given.iter().any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                self.as_presented(end_entity, server_name, now)
            }
            Err(e) => Err(match CertInfo::parse(end_entity) {
                Some(info) => explain(e, &info),
                None => e,
            }),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.webpki.root_hint_subjects()
    }
}

/// The verifier behind `TlsOptions::insecure`: any certificate, but handshake signatures are
/// still checked (the peer must hold the key of the certificate it sent).
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The negotiated version and cipher suite and the server certificate's subject, as a
/// transcript line: `TLSv1.3, cipher TLS13_AES_256_GCM_SHA384, peer subject "CN=localhost"`.
pub fn describe_session(conn: &rustls::ClientConnection) -> String {
    let version = conn
        .protocol_version()
        .and_then(|v| v.as_str())
        .map_or_else(|| "TLS".to_string(), |v| v.replace('_', "."));
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|c| c.suite().as_str())
        .unwrap_or("unknown");
    let subject = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|c| CertInfo::parse(c))
        .map_or_else(|| "unknown".to_string(), |i| format!("\"{}\"", i.subject));
    format!("{version}, cipher {cipher}, peer subject {subject}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_configuration_is_built_once_per_options() {
        let options = TlsOptions::default();
        let first = options.client_config().unwrap();
        assert!(Arc::ptr_eq(&first, &options.client_config().unwrap()));
        // Clones (every shard's copy of the upstream settings) share it...
        assert!(Arc::ptr_eq(
            &first,
            &options.clone().client_config().unwrap()
        ));
        // ...and new options (a reload) build their own.
        let reloaded = TlsOptions::default();
        assert!(!Arc::ptr_eq(&first, &reloaded.client_config().unwrap()));
    }
}
