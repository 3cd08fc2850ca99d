//! The options of `ringrelay mailman` (every `proxy` option plus where Mailman is; also the
//! `[mailman]` table of the config file, whose keys are the flags' names) and of
//! `smtpd -c MailmanProxy`, and their translation into a `RelayConfig` whose `mailman` part
//! routes list mail to Mailman 3's LMTP runner. A flag wins over its key.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use ringrelay::relay::mailman::{MailmanConfig, MailmanDomains};
use ringrelay::relay::pool::UpstreamConfig;
use ringrelay::relay::RelayConfig;

use crate::cli::CliError;

/// Where Mailman is and which domains are its own.
#[derive(Clone, Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailmanOpts {
    /// Mailman's LMTP runner, HOST:PORT (its `[mta] lmtp_host`/`lmtp_port`; default
    /// 127.0.0.1:8024).
    #[arg(long, value_name = "HOST:PORT")]
    pub mailman_lmtp: Option<String>,
    /// Mailman's domains (comma-separated); recipients elsewhere are relayed upstream.
    #[arg(long, value_name = "DOMAIN", value_delimiter = ',')]
    #[serde(default)]
    pub mailman_domains: Vec<String>,
    /// Mailman's data directory (its `var/data`): the domains are read from its generated
    /// `postfix_domains` map, again whenever it changes.
    #[arg(long, value_name = "DIR", conflicts_with = "mailman_domains")]
    pub mailman_data: Option<PathBuf>,
    /// Seconds a probe's answer (list address or not) is reused; 0 probes every recipient
    /// (default 10).
    #[arg(long, value_name = "SECS")]
    pub mailman_cache_ttl: Option<u64>,
    /// Seconds Mailman has to answer a probe or a command before the client gets 451 4.4.1
    /// (default 10).
    #[arg(long, value_name = "SECS")]
    pub mailman_timeout: Option<u64>,
}

/// Options of `mailman`: the serving options, the relay's, and Mailman's.
#[derive(Clone, Debug, Args)]
pub struct MailmanArgs {
    /// Serving and relay options, as for `proxy`.
    #[command(flatten)]
    pub proxy: crate::cli::ProxyArgs,
    /// Mailman options.
    #[command(flatten)]
    pub mailman: MailmanOpts,
}

/// Debian's Mailman 3 data directory, where `smtpd -c MailmanProxy` looks by default.
const DEFAULT_DATA: &str = "/var/lib/mailman3/data";

impl MailmanOpts {
    /// These options, each one not given taken from `file` (the config file's `[mailman]`
    /// table). Domains and a data directory are one choice: either, given as a flag, wins.
    fn or(self, file: MailmanOpts) -> MailmanOpts {
        let named = !self.mailman_domains.is_empty() || self.mailman_data.is_some();
        let (mailman_domains, mailman_data) = if named {
            (self.mailman_domains, self.mailman_data)
        } else {
            (file.mailman_domains, file.mailman_data)
        };
        MailmanOpts {
            mailman_lmtp: self.mailman_lmtp.or(file.mailman_lmtp),
            mailman_domains,
            mailman_data,
            mailman_cache_ttl: self.mailman_cache_ttl.or(file.mailman_cache_ttl),
            mailman_timeout: self.mailman_timeout.or(file.mailman_timeout),
        }
    }
}

/// Adds the `mailman` part to `relay`, from `opts` and the config file's `[mailman]` table
/// (`file`). `default_data` is the data directory used when neither names domains nor one
/// (`None`: that is an error).
pub fn with_mailman(
    mut relay: RelayConfig,
    opts: MailmanOpts,
    file: Option<MailmanOpts>,
    default_data: Option<&str>,
) -> Result<RelayConfig, CliError> {
    let opts = opts.or(file.unwrap_or_default());
    if !opts.mailman_domains.is_empty() && opts.mailman_data.is_some() {
        return Err(CliError::Invalid(
            "mailman: give mailman_domains or mailman_data, not both".into(),
        ));
    }
    let domains = if !opts.mailman_domains.is_empty() {
        MailmanDomains::Listed(opts.mailman_domains)
    } else if let Some(dir) = opts.mailman_data.or(default_data.map(PathBuf::from)) {
        MailmanDomains::File(dir.join("postfix_domains"))
    } else {
        return Err(CliError::Invalid(
            "mailman needs --mailman-domains DOMAIN,... or --mailman-data DIR".into(),
        ));
    };
    let timeout = Duration::from_secs(opts.mailman_timeout.unwrap_or(10).max(1));
    let upstream = relay.upstream.load();
    let lmtp = UpstreamConfig {
        servers: vec![opts.mailman_lmtp.unwrap_or_else(|| "127.0.0.1:8024".into())],
        helo: upstream.helo.clone(),
        timeouts: ringrelay::client::core::Timeouts::uniform(timeout),
        max_connections: upstream.max_connections,
        idle_ttl: upstream.idle_ttl,
        max_messages: upstream.max_messages,
        max_age: upstream.max_age,
        lmtp: true,
        ..UpstreamConfig::default()
    };
    relay.mailman = Some(MailmanConfig {
        lmtp: ringrelay::reload::Swap::new(lmtp),
        domains,
        cache_ttl: Duration::from_secs(opts.mailman_cache_ttl.unwrap_or(10)),
        probe_timeout: timeout,
    });
    Ok(relay)
}

/// `smtpd -c MailmanProxy localaddr remoteaddr`: the relay for `remoteaddr`, with Mailman's
/// LMTP runner and data directory where Debian puts them unless the options say otherwise.
pub fn smtpd_mailman(relay: RelayConfig, opts: MailmanOpts) -> Result<RelayConfig, CliError> {
    with_mailman(relay, opts, None, Some(DEFAULT_DATA))
}
