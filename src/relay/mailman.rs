//! The `mailman` mode's router (the seed's MailmanProxy done right): which recipients belong
//! to a Mailman 3 core, decided at RCPT time and never after DATA.
//!
//! A recipient outside the Mailman domains (`--mailman-domains`, or Mailman's generated
//! `postfix_domains` file, re-read when its mtime changes) is relayed upstream as in `proxy`.
//! One inside them is asked of Mailman itself with a live probe on a pooled LMTP connection
//! (`MAIL FROM:<>`, `RCPT TO:`, read, `RSET`): its 250 makes the recipient Mailman's, its 5xx
//! becomes our `550 5.1.1`, and anything else — LMTP down, slow, or a 4xx — our `451 4.4.1`,
//! never a guess. Definite answers are cached for a short while per shard.
//!
//! Contract: the router only decides; it never opens a transaction. The mirror fixes each
//! transaction's destination at its first accepted recipient (see `RelayConn`), and a
//! recipient for the other destination, or a second Mailman recipient, gets `452 4.5.3`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use super::pool::{UpstreamConfig, UpstreamPool};
use super::reply_map::stale;
use crate::client::core::Phase;
use crate::proto::{EnhancedCode, Reply};
use crate::reload::Swap;

/// Where a transaction's mail goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The upstream smarthosts, as in `proxy`.
    Upstream,
    /// Mailman's LMTP runner.
    Mailman,
}

/// Which domains are Mailman's.
#[derive(Clone, Debug)]
pub enum MailmanDomains {
    /// Listed on the command line.
    Listed(Vec<String>),
    /// Mailman's generated `postfix_domains` map (one domain first on each line).
    File(PathBuf),
}

/// The `mailman` mode's settings.
#[derive(Clone, Debug)]
pub struct MailmanConfig {
    /// How to reach Mailman's LMTP runner (`lmtp` set) and pool the connections.
    pub lmtp: Swap<UpstreamConfig>,
    /// Mailman's domains.
    pub domains: MailmanDomains,
    /// How long a probe's definite answer is reused (zero: probe every recipient).
    pub cache_ttl: Duration,
    /// The longest a probe may take before the recipient gets `451 4.4.1`.
    pub probe_timeout: Duration,
}

/// One shard's router: Mailman's domains, its LMTP pool and the probe cache.
pub struct MailmanRouter {
    config: MailmanConfig,
    pool: Rc<RefCell<UpstreamPool>>,
    domains: RefCell<DomainSet>,
    cache: RefCell<HashMap<String, (bool, Instant)>>,
}

/// The domains as last read.
#[derive(Default)]
struct DomainSet {
    mtime: Option<SystemTime>,
    names: Vec<String>,
}

/// Cache entries kept at most (then the cache starts over).
const CACHE_MAX: usize = 10_000;

impl MailmanRouter {
    /// The router for one shard, reaching Mailman through `pool`.
    pub fn new(config: MailmanConfig, pool: Rc<RefCell<UpstreamPool>>) -> Self {
        let names = match &config.domains {
            MailmanDomains::Listed(d) => d.iter().map(|d| d.to_ascii_lowercase()).collect(),
            MailmanDomains::File(_) => Vec::new(),
        };
        Self {
            config,
            pool,
            domains: RefCell::new(DomainSet { mtime: None, names }),
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// The LMTP pool.
    pub fn pool(&self) -> &Rc<RefCell<UpstreamPool>> {
        &self.pool
    }

    /// True when `domain` is one of Mailman's (the file is re-read when it changed).
    pub fn is_mailman_domain(&self, domain: Option<&str>) -> bool {
        let Some(domain) = domain else {
            return false;
        };
        if let MailmanDomains::File(path) = &self.config.domains {
            let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let mut set = self.domains.borrow_mut();
            if mtime != set.mtime {
                set.mtime = mtime;
                set.names = std::fs::read_to_string(path)
                    .map(|t| parse_domains(&t))
                    .unwrap_or_default();
            }
        }
        let domain = domain.to_ascii_lowercase();
        self.domains.borrow().names.contains(&domain)
    }

    /// Where mail to `to` goes, or our refusal of it (`550 5.1.1`, `451 4.4.1`).
    pub async fn route(&self, to: &str, domain: Option<&str>) -> Result<Destination, Reply> {
        if !self.is_mailman_domain(domain) {
            return Ok(Destination::Upstream);
        }
        let key = to.to_ascii_lowercase();
        let ttl = self.config.cache_ttl;
        let cached = self.cache.borrow().get(&key).copied();
        let known = match cached {
            Some((known, at)) if at.elapsed() < ttl => known,
            _ => {
                let known = self.probe(to).await?;
                if !ttl.is_zero() {
                    let mut cache = self.cache.borrow_mut();
                    if cache.len() >= CACHE_MAX {
                        cache.clear();
                    }
                    cache.insert(key, (known, Instant::now()));
                }
                known
            }
        };
        if known {
            Ok(Destination::Mailman)
        } else {
            Err(no_such_list(to))
        }
    }

    /// Asks Mailman whether it takes mail for `to`: `Ok(true)` on 250, `Ok(false)` on 5xx.
    async fn probe(&self, to: &str) -> Result<bool, Reply> {
        let limit = self.config.probe_timeout;
        match crate::rt::timeout(limit, self.probe_once(to)).await {
            Ok(r) => r,
            Err(_) => Err(mailman_unavailable("Mailman did not answer in time")),
        }
    }

    async fn probe_once(&self, to: &str) -> Result<bool, Reply> {
        let mut fresh = false;
        loop {
            let mut up = UpstreamPool::checkout(&self.pool, fresh)
                .await
                .map_err(|_| mailman_unavailable("Mailman unavailable, try again later"))?;
            let mail = up.client.command("MAIL FROM:<>", Phase::Mail).await;
            if up.reused && !fresh && stale(&mail) {
                // Gone while idle in the pool: once more on a new connection.
                self.pool.borrow_mut().discard(up);
                fresh = true;
                continue;
            }
            let rcpt = match mail {
                Ok(m) if m.class() == 2 => {
                    up.client
                        .command(&format!("RCPT TO:<{to}>"), Phase::Rcpt)
                        .await
                }
                Ok(m) => Ok(m),
                Err(e) => Err(e),
            };
            let rset = match &rcpt {
                Ok(_) => up.client.rset().await.is_ok_and(|r| r.code() == 250),
                Err(_) => false,
            };
            let verdict = match rcpt {
                Ok(r) if r.class() == 2 => Ok(true),
                Ok(r) if r.class() == 5 => Ok(false),
                _ => Err(mailman_unavailable("Mailman unavailable, try again later")),
            };
            self.pool.borrow_mut().checkin(up, rset);
            return verdict;
        }
    }
}

/// The domains of a `postfix_domains` map: the first word of each line that is not blank or
/// a comment, lower-cased.
pub fn parse_domains(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// MAIL parameters Mailman's LMTP runner is not told: DSN's `RET=` and `ENVID=`.
pub fn lmtp_mail_options(options: &[String]) -> Vec<String> {
    strip(options, &["RET", "ENVID"])
}

/// RCPT parameters Mailman's LMTP runner is not told: DSN's `NOTIFY=` and `ORCPT=`.
pub fn lmtp_rcpt_params(params: &[String]) -> Vec<String> {
    strip(params, &["NOTIFY", "ORCPT"])
}

fn strip(params: &[String], keys: &[&str]) -> Vec<String> {
    params
        .iter()
        .filter(|p| {
            let key = p.split_once('=').map_or(p.as_str(), |(k, _)| k);
            !keys.iter().any(|k| k.eq_ignore_ascii_case(key))
        })
        .cloned()
        .collect()
}

/// Our reply to a recipient in a Mailman domain that Mailman does not know.
fn no_such_list(to: &str) -> Reply {
    let to = crate::log::clean(to);
    Reply::new(
        550,
        EnhancedCode::new(5, 1, 1),
        format!("<{to}>: Recipient address rejected: no such list"),
    )
}

/// Our reply when Mailman cannot say.
fn mailman_unavailable(text: &'static str) -> Reply {
    Reply::new(451, EnhancedCode::new(4, 4, 1), text)
}

/// Our reply to a recipient that must wait for a later transaction.
pub fn one_destination() -> Reply {
    Reply::new(
        452,
        EnhancedCode::new(4, 5, 3),
        "Too many recipients: one list address per transaction, and list mail apart \
         from other mail; send this one again in a new transaction",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_domains_lines() {
        let text = "# generated\n\nExample.COM example.com\nlists.example.org lists.example.org\n";
        assert_eq!(parse_domains(text), ["example.com", "lists.example.org"]);
    }

    #[test]
    fn dsn_parameters_are_stripped_for_lmtp() {
        let mail = ["SIZE=10".to_string(), "RET=HDRS".into(), "envid=x".into()];
        assert_eq!(lmtp_mail_options(&mail), ["SIZE=10"]);
        let rcpt = ["NOTIFY=NEVER".to_string(), "ORCPT=rfc822;a@b".into()];
        assert!(lmtp_rcpt_params(&rcpt).is_empty());
    }

    #[test]
    fn listed_domains_match_case_insensitively() {
        let config = MailmanConfig {
            lmtp: Swap::new(UpstreamConfig::default()),
            domains: MailmanDomains::Listed(vec!["Lists.Example.com".into()]),
            cache_ttl: Duration::ZERO,
            probe_timeout: Duration::from_secs(1),
        };
        let pool = UpstreamPool::new(config.lmtp.clone());
        let r = MailmanRouter::new(config, pool);
        assert!(r.is_mailman_domain(Some("lists.example.COM")));
        assert!(!r.is_mailman_domain(Some("example.com")));
        assert!(!r.is_mailman_domain(None));
    }
}
