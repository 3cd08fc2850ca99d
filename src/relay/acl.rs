//! Who may relay: client networks (CIDR), clients that authenticated (AUTH against a user
//! file), and an optional recipient-domain allow-list. Loopback only by default, so a fresh
//! relay is never an open relay.

use std::net::IpAddr;

pub use crate::net::{Network, NetworkError};

/// Users who may authenticate (AUTH PLAIN/LOGIN) and then relay from anywhere.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthUsers(std::collections::HashMap<String, String>);

/// A user file that did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {0}: expected USER:PASSWORD")]
pub struct AuthUsersError(pub usize);

impl AuthUsers {
    /// Parses `USER:PASSWORD` lines (the password is everything after the first colon);
    /// blank lines and lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Self, AuthUsersError> {
        let mut users = std::collections::HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((user, pass)) if !user.is_empty() => {
                    users.insert(user.to_string(), pass.to_string());
                }
                _ => return Err(AuthUsersError(n + 1)),
            }
        }
        Ok(Self(users))
    }

    /// True when `user` exists and `password` is its password (compared without an early
    /// exit, so the time taken does not tell how much of it matched).
    pub fn check(&self, user: &str, password: &str) -> bool {
        let Some(want) = self.0.get(user) else {
            return false;
        };
        let (a, b) = (want.as_bytes(), password.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, &x) in a.iter().enumerate() {
            diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
        }
        diff == 0
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for AuthUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthUsers({} users)", self.0.len())
    }
}

/// The relay policy.
#[derive(Clone, Debug)]
pub struct RelayPolicy {
    /// Clients allowed to relay.
    pub networks: Vec<Network>,
    /// Recipient domains allowed (empty = any).
    pub domains: Vec<String>,
    /// Users who may AUTH and then relay from any network (None: AUTH is not offered).
    pub users: Option<std::sync::Arc<AuthUsers>>,
}

impl Default for RelayPolicy {
    fn default() -> Self {
        Self {
            networks: vec![
                "127.0.0.0/8".parse().expect("valid"),
                "::1/128".parse().expect("valid"),
            ],
            domains: Vec::new(),
            users: None,
        }
    }
}

impl RelayPolicy {
    /// May this client relay at all?
    pub fn client_allowed(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// May mail go to this recipient domain? (Subdomains do not match implicitly.)
    pub fn domain_allowed(&self, domain: Option<&str>) -> bool {
        self.domains.is_empty()
            || domain.is_some_and(|d| self.domains.iter().any(|a| a.eq_ignore_ascii_case(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let rows: &[(&str, &str, bool)] = &[
            ("127.0.0.1/32", "127.0.0.1", true),
            ("127.0.0.1/32", "127.0.0.2", false),
            ("127.0.0.0/8", "127.9.9.9", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("0.0.0.0/0", "192.0.2.1", true),
            ("::1/128", "::1", true),
            ("::1", "::2", false),
            ("2001:db8::/32", "2001:db8:1::1", true),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("127.0.0.0/8", "::1", false),
        ];
        for (net, ip, want) in rows {
            let n: Network = net.parse().unwrap();
            assert_eq!(n.contains(ip.parse().unwrap()), *want, "{net} {ip}");
        }
        assert!("1.2.3.4/33".parse::<Network>().is_err());
        assert!("nope".parse::<Network>().is_err());
    }

    #[test]
    fn default_policy_is_loopback_only() {
        let p = RelayPolicy::default();
        assert!(p.client_allowed("127.0.0.1".parse().unwrap()));
        assert!(p.client_allowed("::1".parse().unwrap()));
        assert!(!p.client_allowed("192.0.2.1".parse().unwrap()));
        let d = RelayPolicy {
            domains: vec!["example.com".into()],
            ..p
        };
        assert!(d.domain_allowed(Some("EXAMPLE.com")));
        assert!(!d.domain_allowed(Some("sub.example.com")));
        assert!(!d.domain_allowed(None));
    }

    #[test]
    fn user_file() {
        let u = AuthUsers::parse("# users\nalice:s3cret\r\n\nbob:with:colon\n").unwrap();
        assert_eq!(u.len(), 2);
        assert!(u.check("alice", "s3cret"));
        assert!(!u.check("alice", "s3cre"));
        assert!(!u.check("alice", "s3crets"));
        assert!(!u.check("alice", ""));
        assert!(u.check("bob", "with:colon"));
        assert!(!u.check("carol", "s3cret"));
        assert_eq!(AuthUsers::parse("ok:1\nnocolon\n"), Err(AuthUsersError(2)));
        assert!(!format!("{u:?}").contains("s3cret"));
    }
}
