//! What a fault rule is matched against: the `Match` a rule names (sender and recipient
//! domains, a local-part glob, the client's network, a size range, a header present), the
//! `Facts` of the moment it is asked at, the glob itself, and the built-in address triggers
//! (a recipient whose local part asks for `tempfail`, `permfail` or a code). No I/O and no
//! randomness here: `rules` decides, with the draw.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::proto::{EnhancedCode, Reply};

/// Which sessions, envelopes and messages a rule is for; every field given must fit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The sender's domain (case-insensitive).
    #[serde(default)]
    pub sender_domain: Option<String>,
    /// A recipient's domain (at `rcpt`, the one being decided; later, any of them).
    #[serde(default)]
    pub recipient_domain: Option<String>,
    /// A glob (`*`, `?`) over the recipient's local part (as above).
    #[serde(default)]
    pub local_part: Option<String>,
    /// The client's network (CIDR).
    #[serde(default)]
    pub client: Option<String>,
    /// Smallest message size in octets (the SIZE parameter at `mail`, the content at `dot`).
    #[serde(default)]
    pub size_min: Option<u64>,
    /// Largest message size in octets.
    #[serde(default)]
    pub size_max: Option<u64>,
    /// A header field name present in the message (`dot` stage only).
    #[serde(default)]
    pub header: Option<String>,
}

/// What a rule is matched against at one stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts<'a> {
    /// The client's address.
    pub client: Option<IpAddr>,
    /// The sender.
    pub sender: Option<&'a str>,
    /// The recipients to consider (the one being decided at `rcpt`).
    pub recipients: &'a [&'a str],
    /// The message size, when known.
    pub size: Option<u64>,
    /// Header field names seen (lower case), at `dot`.
    pub headers: &'a [String],
}

pub(super) fn domain_of(addr: &str) -> &str {
    addr.rsplit_once('@').map_or("", |(_, d)| d)
}

pub(super) fn local_of(addr: &str) -> &str {
    addr.rsplit_once('@').map_or(addr, |(l, _)| l)
}

/// `*` and `?` globbing, case-insensitive.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (
        pattern.to_lowercase().chars().collect(),
        text.to_lowercase().chars().collect(),
    );
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The reply an address trigger gives a recipient, if its local part asks for one.
pub fn address_trigger(recipient: &str) -> Option<Reply> {
    let local = local_of(recipient);
    let starts = |prefix: &str| {
        local
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    };
    for (prefix, code, class) in [("450-", 450u16, 4u8), ("550-", 550, 5), ("250-", 250, 2)] {
        if starts(prefix) {
            return (code != 250).then(|| {
                Reply::new(
                    code,
                    EnhancedCode::new(class, 0, 0),
                    "Error: requested by the recipient address",
                )
            });
        }
    }
    let contains = |word: &str| {
        local
            .as_bytes()
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
    };
    if contains("tempfail") {
        return Some(Reply::new(
            451,
            EnhancedCode::new(4, 2, 0),
            "Temporary failure requested",
        ));
    }
    if contains("permfail") {
        return Some(Reply::new(
            550,
            EnhancedCode::new(5, 1, 1),
            "Permanent failure requested",
        ));
    }
    None
}
