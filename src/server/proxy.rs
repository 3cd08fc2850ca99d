//! The PROXY protocol on the SMTP listeners (`--proxy-protocol`): behind HAProxy or a cloud
//! load balancer, the client's real address arrives in a header before any SMTP, and it is
//! that address — not the balancer's — that relay networks, `Received:`, `X-Peer:`,
//! XCLIENT/XFORWARD, per-client limits, logs and metrics see.
//!
//! Contract: when enabled, every connection must start with a PROXY header (version 1 or 2;
//! never guessed): the greeting waits for it. A connection from outside `trusted` is closed
//! at once; one whose header is missing, malformed, too long or not complete within
//! `timeout` is closed without a word. Both are counted (`connections_rejected_total`,
//! reasons `proxy_untrusted` and `proxy_header`). A version 2 LOCAL header (the balancer's
//! own health check) and the UNKNOWN forms keep the connection's real address. The parsing
//! itself is sans-IO (`proto::proxy_header`); this reads the octets and enforces the rules.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::stream::ConnStream;
use crate::metrics::labels::RejectReason;
use crate::net::Network;
use crate::proto::proxy_header::{parse, Parsed, Proxied};
use crate::rt;

/// PROXY protocol settings of the SMTP listeners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// Who may send the header (the balancers); others are closed. Loopback by default:
    /// name a remote balancer's network explicitly.
    pub trusted: Vec<Network>,
    /// How long the whole header may take to arrive (at least 3 s, as the specification
    /// recommends; 5 s by default, as Postfix's smtpd_upstream_proxy_timeout).
    pub timeout: Duration,
}

impl Default for ProxyProtocol {
    fn default() -> Self {
        Self {
            trusted: ["127.0.0.0/8", "::1"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Who the client is, and what it already sent after the header.
pub(crate) struct Arrival {
    /// The client's address the header gave (`None` for LOCAL and UNKNOWN: the real peer
    /// is the client).
    pub proxied: Option<SocketAddr>,
    /// Octets that followed the header in the same reads (SMTP input).
    pub rest: Option<Bytes>,
}

/// Reads and checks the PROXY header on a new connection from `real`; the reason to close it
/// otherwise.
pub(crate) async fn arrive<S: ConnStream>(
    stream: &S,
    real: SocketAddr,
    config: &ProxyProtocol,
) -> Result<Arrival, RejectReason> {
    if !config.trusted.iter().any(|n| n.contains(real.ip())) {
        tracing::info!(
            target: crate::log::CONNECTION,
            client = %real,
            "PROXY protocol listener reached from outside --proxy-trusted: closed"
        );
        return Err(RejectReason::ProxyUntrusted);
    }
    let read = async {
        let mut got = BytesMut::new();
        loop {
            let chunk = std::future::poll_fn(|cx| stream.poll_recv(cx)).await;
            let chunk = match chunk {
                Ok(Some(c)) => c,
                Ok(None) | Err(_) => return Err("connection closed before the header"),
            };
            got.extend_from_slice(&chunk);
            match parse(&got) {
                Ok(Parsed::Incomplete) => continue,
                Ok(Parsed::Header { len, proxied }) => {
                    let rest = got.split_off(len);
                    return Ok((proxied, (!rest.is_empty()).then(|| rest.freeze())));
                }
                Err(_) => return Err("not a valid PROXY header"),
            }
        }
    };
    let (proxied, rest) = match rt::timeout(config.timeout, read).await {
        Ok(Ok(v)) => v,
        Ok(Err(why)) => {
            tracing::debug!(target: crate::log::CONNECTION, client = %real, "{why}: closed");
            return Err(RejectReason::ProxyHeader);
        }
        Err(_) => {
            tracing::debug!(
                target: crate::log::CONNECTION,
                client = %real,
                "no complete PROXY header in {:?}: closed",
                config.timeout
            );
            return Err(RejectReason::ProxyHeader);
        }
    };
    let proxied = match proxied {
        Proxied::Tcp { source, .. } => Some(source),
        Proxied::Local | Proxied::Unknown => None,
    };
    Ok(Arrival { proxied, rest })
}
