//! The options of `ringrelay proxy` (also the `[proxy]` table of the config file) and their
//! translation into a `RelayConfig`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use ringrelay::client::core::Timeouts;
use ringrelay::client::{TlsFlagNames, TlsOptions};
use ringrelay::relay::acl::{AuthUsers, Network, RelayPolicy};
use ringrelay::relay::pool::{UpstreamConfig, UpstreamTls};
use ringrelay::relay::RelayConfig;

use crate::cli::{serve_config, CliError, ProxyArgs, PROXY_PER_CLIENT};
use crate::cli_mailman::MailmanOpts;
use ringrelay::server::ServerConfig;

/// Relay options.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayArgs {
    /// Upstream smarthost HOST:PORT, or unix:PATH; repeat for failover, tried in order.
    #[arg(long = "upstream", value_name = "HOST:PORT|unix:PATH")]
    #[serde(default)]
    pub upstream: Vec<String>,
    /// Client networks allowed to relay (CIDR; default 127.0.0.0/8 and ::1).
    #[arg(long = "relay-networks", value_name = "CIDR", value_delimiter = ',')]
    #[serde(default)]
    pub relay_networks: Vec<String>,
    /// Recipient domains allowed (default: any).
    #[arg(long = "relay-domains", value_name = "DOMAIN", value_delimiter = ',')]
    #[serde(default)]
    pub relay_domains: Vec<String>,
    /// Offer AUTH (PLAIN, LOGIN) and let clients that authenticate against this file of
    /// `USER:PASSWORD` lines relay from any network. Cleartext: use it on loopback or behind a
    /// TLS-terminating proxy.
    #[arg(long, value_name = "FILE")]
    pub auth_users: Option<PathBuf>,
    /// Add Python smtpd's `X-Peer:` field at the end of the header section (as PureProxy did).
    #[arg(long)]
    #[serde(default)]
    pub x_peer: bool,
    /// TLS toward the upstream.
    #[arg(long, value_enum)]
    pub upstream_tls: Option<UpstreamTls>,
    /// CA file to verify the upstream's certificate.
    #[arg(long, value_name = "FILE")]
    pub upstream_tls_ca: Option<PathBuf>,
    /// Do not verify the upstream's certificate.
    #[arg(long)]
    #[serde(default)]
    pub upstream_tls_insecure: bool,
    /// AUTH user toward the upstream.
    #[arg(long, value_name = "USER", requires = "upstream_auth_password_file")]
    pub upstream_auth_user: Option<String>,
    /// File with the upstream AUTH password (first line).
    #[arg(long, value_name = "FILE")]
    pub upstream_auth_password_file: Option<PathBuf>,
    /// Pass the client's address and HELO name upstream with XFORWARD when it is offered.
    #[arg(long)]
    #[serde(default)]
    pub upstream_xforward: bool,
    /// Pass the client's identity upstream with XCLIENT when it is offered (the upstream then
    /// sees the real client: its address, HELO name and protocol).
    #[arg(long)]
    #[serde(default)]
    pub upstream_xclient: bool,
    /// Our EHLO name toward the upstream.
    #[arg(long, value_name = "NAME")]
    pub upstream_helo: Option<String>,
    /// One reply timeout toward the upstream in seconds (default: RFC 5321's per phase).
    #[arg(long, value_name = "SECS")]
    pub upstream_timeout: Option<u64>,
    /// Most upstream connections per shard (default 64).
    #[arg(long, value_name = "N")]
    pub pool_max: Option<usize>,
    /// Seconds an idle upstream connection is kept (default 30).
    #[arg(long, value_name = "SECS")]
    pub pool_idle_ttl: Option<u64>,
    /// Messages per upstream connection before it is retired (default 1000).
    #[arg(long, value_name = "N")]
    pub pool_max_messages: Option<u32>,
    /// Seconds before an upstream connection is retired (default 600).
    #[arg(long, value_name = "SECS")]
    pub pool_max_age: Option<u64>,
    /// Seconds without any reachable upstream before /readyz answers 503 with the last error
    /// (default 30; 0 = never).
    #[arg(long, value_name = "SECS")]
    pub upstream_unready_after: Option<u64>,
}

/// Merges command line and file options (the command line wins) into a relay configuration.
pub fn relay_config(cli: RelayArgs, file: Option<RelayArgs>) -> Result<RelayConfig, CliError> {
    let file = file.unwrap_or_default();
    let pick = |a: Vec<String>, b: Vec<String>| if a.is_empty() { b } else { a };
    let servers = pick(cli.upstream, file.upstream);
    if servers.is_empty() {
        return Err(CliError::Invalid(
            "proxy needs at least one --upstream HOST:PORT".into(),
        ));
    }
    let mut policy = RelayPolicy::default();
    let networks = pick(cli.relay_networks, file.relay_networks);
    if !networks.is_empty() {
        policy.networks = networks
            .iter()
            .map(|n| {
                n.parse::<Network>()
                    .map_err(|e| CliError::Invalid(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
    }
    policy.domains = pick(cli.relay_domains, file.relay_domains);
    if let Some(path) = cli.auth_users.or(file.auth_users) {
        let text =
            std::fs::read_to_string(&path).map_err(|source| CliError::Read { path, source })?;
        let users =
            AuthUsers::parse(&text).map_err(|e| CliError::Invalid(format!("--auth-users: {e}")))?;
        policy.users = Some(std::sync::Arc::new(users));
    }
    let mut up = UpstreamConfig {
        servers,
        ..UpstreamConfig::default()
    };
    up.helo = cli.upstream_helo.or(file.upstream_helo);
    if let Some(s) = cli.upstream_unready_after.or(file.upstream_unready_after) {
        up.health = std::sync::Arc::new(ringrelay::relay::health::UpstreamHealth::new(
            Duration::from_secs(s),
        ));
    }
    up.xforward = cli.upstream_xforward || file.upstream_xforward;
    up.xclient = cli.upstream_xclient || file.upstream_xclient;
    if let Some(s) = cli.upstream_timeout.or(file.upstream_timeout) {
        up.timeouts = Timeouts::uniform(Duration::from_secs(s));
    }
    up.tls = cli.upstream_tls.or(file.upstream_tls).unwrap_or_default();
    up.tls_options = TlsOptions {
        ca_file: cli.upstream_tls_ca.or(file.upstream_tls_ca),
        insecure: cli.upstream_tls_insecure || file.upstream_tls_insecure,
        flag_names: TlsFlagNames::UPSTREAM,
        ..Default::default()
    };
    let user = cli.upstream_auth_user.or(file.upstream_auth_user);
    let pw_file = cli
        .upstream_auth_password_file
        .or(file.upstream_auth_password_file);
    if let (Some(user), Some(path)) = (user, pw_file) {
        let pw =
            std::fs::read_to_string(&path).map_err(|source| CliError::Read { path, source })?;
        up.auth = Some((user, pw.lines().next().unwrap_or("").to_string()));
    }
    if let Some(n) = cli.pool_max.or(file.pool_max) {
        up.max_connections = n.max(1);
    }
    if let Some(s) = cli.pool_idle_ttl.or(file.pool_idle_ttl) {
        up.idle_ttl = Duration::from_secs(s);
    }
    if let Some(n) = cli.pool_max_messages.or(file.pool_max_messages) {
        up.max_messages = n.max(1);
    }
    if let Some(s) = cli.pool_max_age.or(file.pool_max_age) {
        up.max_age = Duration::from_secs(s);
    }
    Ok(RelayConfig {
        upstream: ringrelay::reload::Swap::new(up),
        policy: ringrelay::reload::Swap::new(policy),
        x_peer: cli.x_peer || file.x_peer,
        mailman: None,
    })
}

/// The relay and server configurations of `proxy` (and `mailman`, with the config file's
/// `[mailman]` table).
pub fn proxy_config(
    a: ProxyArgs,
) -> Result<(RelayConfig, ServerConfig, Option<MailmanOpts>), CliError> {
    // Per client address outside the relay networks (the MTA in front is exempt).
    let (mut cfg, file) = serve_config(a.serve, PROXY_PER_CLIENT)?;
    if cfg.faults.is_some() {
        return Err(CliError::Invalid(
            "fault injection (--faults, -f, -r, -q, -Q, -w, -W, -A, -M, -n) is for sink \
             and debug"
                .into(),
        ));
    }
    let relay = relay_config(a.relay, file.proxy)?;
    // AUTH is offered exactly when there are users to check it against.
    cfg.session.extensions.auth = relay.policy.load().users.is_some();
    Ok((relay, cfg, file.mailman))
}

#[cfg(test)]
mod tests {
    /// examples/ringrelay.toml, and the same with every commented-out `# key = value` line
    /// put in force: the parser (deny_unknown_fields) accepts every key it shows.
    #[test]
    fn every_key_of_the_example_config_is_accepted() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ringrelay.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let mut shown = 0;
        let all: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.bytes()
                            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
                    }) =>
                {
                    shown += 1;
                    format!("{rest}\n")
                }
                _ => format!("{l}\n"),
            })
            .collect();
        assert!(shown >= 10, "only {shown} commented keys found");
        for (what, toml_text) in [("as shipped", &text), ("every key in force", &all)] {
            let args: crate::cli::ServeArgs =
                toml::from_str(toml_text).unwrap_or_else(|e| panic!("{path} ({what}): {e}"));
            let proxy = args.proxy.expect("a [proxy] table");
            assert_eq!(proxy.upstream, ["127.0.0.1:25"], "{what}");
        }
        // It shows every key there is: each long flag of `proxy` (the serving flags and the
        // [proxy] table's) but --config.
        let cmd = <crate::cli::Cli as clap::CommandFactory>::command();
        let proxy = cmd.find_subcommand("proxy").expect("proxy mode");
        for arg in proxy.get_arguments() {
            let Some(long) = arg.get_long().filter(|l| !matches!(*l, "config" | "help")) else {
                continue;
            };
            let key = format!("\n{} = ", long.replace('-', "_"));
            assert!(all.contains(&key), "{path} does not show {key:?}");
        }
        // And every `mailman` flag of its own is a key of the [mailman] table.
        let mailman = cmd.find_subcommand("mailman").expect("mailman mode");
        for arg in mailman.get_arguments() {
            let Some(long) = arg.get_long().filter(|l| l.starts_with("mailman-")) else {
                continue;
            };
            let key = format!("\n{} = ", long.replace('-', "_"));
            assert!(all.contains(&key), "{path} does not show {key:?}");
        }
        let args: crate::cli::ServeArgs = toml::from_str(&all).unwrap();
        assert!(args
            .mailman
            .is_some_and(|m| m.mailman_cache_ttl == Some(10)));
        // As shipped it also makes a relay configuration (no file it names must exist).
        let args: crate::cli::ServeArgs = toml::from_str(&text).unwrap();
        super::relay_config(args.proxy.unwrap(), None).unwrap();
    }
}
