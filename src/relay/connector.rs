//! How the pool reaches an upstream. A `Connector` opens the byte stream to one configured
//! server and reads its greeting — over TCP or a Unix-domain socket (`Dial`, the default),
//! or over whatever a test
//! hands in (an in-memory duplex through `SmtpClient::over_stream`) — and `open` then makes the
//! connection ready for transactions: EHLO (HELO when EHLO is refused), STARTTLS as configured,
//! AUTH when configured.

use std::future::Future;
use std::pin::Pin;

use super::pool::{UpstreamConfig, UpstreamTls};
use crate::client::{ClientError, ConnectOptions, SmtpClient};

/// A connection being opened.
pub type Connecting = Pin<Box<dyn Future<Output = Result<SmtpClient, ClientError>>>>;

/// Opens client connections to upstream servers (one shard's; it need not be `Send`).
pub trait Connector {
    /// A connection to `server` (an entry of `UpstreamConfig::servers`), greeted, with
    /// `opts` (timeouts, our EHLO name, implicit TLS) applied.
    fn connect(&self, server: &str, opts: ConnectOptions) -> Connecting;
}

/// TCP to `host:port` (`[v6]:port`; port 25 when none is given), or the Unix-domain socket
/// of `unix:PATH` (a content filter or an MTA listening on one).
#[derive(Clone, Copy, Debug, Default)]
pub struct Dial;

impl Connector for Dial {
    fn connect(&self, server: &str, opts: ConnectOptions) -> Connecting {
        if let Some(path) = server.strip_prefix("unix:") {
            let path = std::path::PathBuf::from(path);
            return Box::pin(async move { SmtpClient::connect_unix(&path, opts).await });
        }
        let (host, port) = match server.rsplit_once(':') {
            Some((h, p)) => (h.trim_matches(['[', ']']), p.parse().unwrap_or(25)),
            None => (server, 25),
        };
        let host = host.to_string();
        Box::pin(async move { SmtpClient::connect(&host, port, opts).await })
    }
}

/// Opens, greets, secures and authenticates one upstream connection.
pub(super) async fn open(
    connector: &dyn Connector,
    config: &UpstreamConfig,
    server: &str,
) -> Result<SmtpClient, ClientError> {
    let opts = ConnectOptions {
        timeouts: config.timeouts,
        local_hostname: config.helo.clone(),
        implicit_tls: (config.tls == UpstreamTls::Implicit).then(|| config.tls_options.clone()),
        lmtp: config.lmtp,
        ..ConnectOptions::default()
    };
    let mut client = connector.connect(server, opts).await?;
    client.ehlo_or_helo_if_needed().await?;
    match config.tls {
        UpstreamTls::Required => {
            client.starttls(&config.tls_options).await?;
        }
        UpstreamTls::Opportunistic if client.has_extn("starttls") => {
            client.starttls(&config.tls_options).await?;
        }
        _ => {}
    }
    if let Some((user, password)) = &config.auth {
        client.login(user, password).await?;
    }
    Ok(client)
}
