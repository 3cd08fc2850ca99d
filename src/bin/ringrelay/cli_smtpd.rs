//! `ringrelay smtpd`: the drop-in for `python -m smtpd` — its options (`-n`, `-c CLASS`,
//! `-s SIZE`, `-u`, `-d`, `localaddr`, `remoteaddr`) and their translation into a mode
//! (SMTPServer: sink, DebuggingServer: debug, PureProxy: proxy, MailmanProxy: mailman).

use clap::Args;

use crate::cli::{metrics_config, CliError, Kind, PROXY_PER_CLIENT};
use crate::cli_values::{smtpd_addr, ByteSize};
use ringrelay::proto::SessionConfig;
use ringrelay::server::ServerConfig;

/// `python -m smtpd` options.
#[derive(Clone, Debug, Args)]
pub struct SmtpdArgs {
    /// Accepted for compatibility (ringrelay never changes user).
    #[arg(short = 'n', long = "nosetuid")]
    pub nosetuid: bool,
    /// SMTPServer (sink), DebuggingServer (debug), PureProxy (relay) or MailmanProxy.
    #[arg(
        short = 'c',
        long = "class",
        value_name = "CLASSNAME",
        default_value = "PureProxy"
    )]
    pub class: String,
    /// Largest message in octets (k, M, G: binary multiples).
    #[arg(short = 's', long = "size", value_name = "LIMIT")]
    pub size: Option<ByteSize>,
    /// Offer SMTPUTF8.
    #[arg(short = 'u', long = "smtputf8")]
    pub smtputf8: bool,
    /// Print each session's transcript to stderr, as Python's smtpd -d does.
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
    /// Share the address with a ringrelay already listening there (a planned handover).
    #[arg(long)]
    pub reuse_port: bool,
    /// host:port to listen on (default localhost:8025).
    pub localaddr: Option<String>,
    /// host:port of the upstream for PureProxy and MailmanProxy (default localhost:25).
    pub remoteaddr: Option<String>,
    /// Where Mailman is, for MailmanProxy.
    #[command(flatten)]
    pub mailman: crate::cli_mailman::MailmanOpts,
}

/// `smtpd`'s class and addresses as a mode and a server configuration.
pub fn smtpd_config(a: SmtpdArgs) -> Result<(Kind, ServerConfig), CliError> {
    let local = a.localaddr.as_deref().unwrap_or("localhost:8025");
    let addr = smtpd_addr(local, "localaddr", "localhost:8025")?;
    let kind = match a.class.rsplit('.').next().unwrap_or("") {
        "SMTPServer" => Kind::Sink,
        "DebuggingServer" => Kind::Debug,
        class @ ("PureProxy" | "MailmanProxy") => {
            let remote = a
                .remoteaddr
                .clone()
                .unwrap_or_else(|| "localhost:25".into());
            smtpd_addr(&remote, "remoteaddr", "localhost:25")?;
            let relay = crate::cli_proxy::RelayArgs {
                upstream: vec![remote],
                ..Default::default()
            };
            let relay = crate::cli_proxy::relay_config(relay, None)?;
            Kind::Proxy(Box::new(match class {
                "MailmanProxy" => crate::cli_mailman::smtpd_mailman(relay, a.mailman.clone())?,
                _ => relay,
            }))
        }
        other => {
            return Err(CliError::Invalid(format!(
            "unknown class {other:?}: use SMTPServer, DebuggingServer, PureProxy or MailmanProxy"
        )))
        }
    };
    let mut cfg = ServerConfig {
        listen: vec![addr],
        reuse_port: a.reuse_port,
        metrics: metrics_config(None)?,
        ..ServerConfig::default()
    };
    cfg.log.transcript = a.debug;
    if matches!(kind, Kind::Proxy(_)) {
        cfg.max_connections_per_client = PROXY_PER_CLIENT;
    }
    cfg.session.hostname = system_hostname();
    if let Some(size) = a.size {
        cfg.session.data_size_limit = size.0;
    }
    cfg.session.extensions.smtputf8 = a.smtputf8;
    Ok((kind, cfg))
}

/// The system host name (the default `--hostname`), or the session default when unknown.
pub(crate) fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if ok && !name.is_empty() => name.to_string(),
        _ => SessionConfig::default().hostname,
    }
}
