//! Fault rules: at which stage of a session, for which clients, senders, recipients or
//! messages, with which probability, what to do instead of the normal answer.
//!
//! A rule set comes from TOML (`--faults FILE`), JSON (`PUT /faults`) or smtp-sink-style
//! flags (`-f`, `-r`, `-q`, `-Q`, `-w`, `-W`, `-A`); it is validated whole before use. The
//! first rule whose stage and match fit and whose probability draw succeeds decides. Delays
//! are drawn from fixed, uniform, exponential or log-normal distributions, written
//! `fixed:100ms`, `uniform:10ms..200ms`, `exp:50ms` (mean) or `lognormal:50ms,0.5` (median,
//! sigma); smtp-sink's `-W cmd:delay:odds` dice is `dice:1s,70`.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

pub use super::dist::Dist;
pub use super::matching::{address_trigger, glob, Facts, Match};
use super::matching::{domain_of, local_of};
use crate::net::Network;
use crate::proto::{EnhancedCode, Reply};

/// Where in a session a rule applies (smtp-sink's command names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The connection, before the greeting.
    Connect,
    /// HELO.
    Helo,
    /// EHLO.
    Ehlo,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA (before 354).
    Data,
    /// The end of the message (the final dot, or BDAT LAST).
    #[serde(rename = "dot", alias = ".")]
    Dot,
    /// A BDAT chunk before the last.
    Bdat,
    /// RSET.
    Rset,
    /// NOOP.
    Noop,
    /// QUIT.
    Quit,
    /// VRFY.
    Vrfy,
    /// AUTH (the credentials).
    Auth,
    /// STARTTLS.
    Starttls,
}

impl Stage {
    /// Every stage, in label order.
    pub const ALL: [Stage; 14] = [
        Stage::Connect,
        Stage::Helo,
        Stage::Ehlo,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::Dot,
        Stage::Bdat,
        Stage::Rset,
        Stage::Noop,
        Stage::Quit,
        Stage::Vrfy,
        Stage::Auth,
        Stage::Starttls,
    ];

    /// The label value (smtp-sink's command name, lower case; `dot` for ".").
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Helo => "helo",
            Stage::Ehlo => "ehlo",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Dot => "dot",
            Stage::Bdat => "bdat",
            Stage::Rset => "rset",
            Stage::Noop => "noop",
            Stage::Quit => "quit",
            Stage::Vrfy => "vrfy",
            Stage::Auth => "auth",
            Stage::Starttls => "starttls",
        }
    }

    /// A stage from an smtp-sink command name (`CONNECT`, `HELO`, ..., `.`); LHLO is EHLO.
    pub fn parse(name: &str) -> Option<Stage> {
        let n = name.trim().to_ascii_lowercase();
        if n == "." || n == "lhlo" {
            return Some(if n == "." { Stage::Dot } else { Stage::Ehlo });
        }
        Stage::ALL.into_iter().find(|s| s.name() == n)
    }

    /// True for stages only seen as command lines (not as decisions of their own).
    pub fn is_line_only(self) -> bool {
        matches!(
            self,
            Stage::Rset | Stage::Noop | Stage::Quit | Stage::Vrfy | Stage::Starttls
        )
    }
}

/// What a rule does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    /// Answer with this reply instead (a 4xx or 5xx; at `connect`, the greeting).
    Reply {
        /// The reply code.
        code: u16,
        /// The enhanced status code (`4.2.1`); derived from the code's class when absent.
        #[serde(default)]
        enhanced: Option<String>,
        /// The text.
        #[serde(default = "default_text")]
        text: String,
    },
    /// Close the connection without a reply (smtp-sink `-q`).
    Disconnect,
    /// `421 4.3.2` and close (smtp-sink `-Q`).
    Close,
    /// Answer normally, after a delay (smtp-sink `-w`, `-W`); at `dot` the delay is the
    /// "slow end of data" of a busy server.
    Delay {
        /// The delay.
        delay: Dist,
    },
    /// Read the message body at most this fast (`data` and `bdat` stages).
    Throttle {
        /// Octets per second.
        bytes_per_second: u64,
    },
    /// After 354, wait, then `550` and stop reading (smtp-sink `-A`; `data` stage).
    Abort {
        /// The wait.
        #[serde(default = "zero_delay")]
        delay: Dist,
    },
}

fn default_text() -> String {
    "Error: command failed (injected fault)".into()
}

fn zero_delay() -> Dist {
    Dist::Fixed(Duration::ZERO)
}

impl Action {
    /// The label value of `ringrelay_faults_injected_total{action}`.
    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }

    /// Every action label, in order.
    pub const NAMES: [&'static str; 7] = [
        "reply_4xx",
        "reply_5xx",
        "disconnect",
        "close_421",
        "delay",
        "throttle",
        "abort",
    ];

    /// Index of `name()` in `NAMES`.
    pub fn index(&self) -> usize {
        match self {
            Action::Reply { code, .. } => Self::reply_index(*code),
            Action::Disconnect => 2,
            Action::Close => 3,
            Action::Delay { .. } => 4,
            Action::Throttle { .. } => 5,
            Action::Abort { .. } => 6,
        }
    }

    /// Index in `NAMES` of a reply with `code` (`reply_4xx` or `reply_5xx`).
    pub fn reply_index(code: u16) -> usize {
        usize::from(code >= 500)
    }

    /// The reply of a `Reply` action.
    pub fn reply(code: u16, enhanced: Option<&str>, text: &str) -> Reply {
        let class = (code / 100) as u8;
        let e = enhanced
            .and_then(|e| EnhancedCode::parse_prefix(&format!("{e} ")).map(|(e, _)| e))
            .filter(|e| e.class == class)
            .unwrap_or(EnhancedCode::new(class, 0, 0));
        Reply::new(code, e, text.to_string())
    }
}

/// A validated rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Its stage.
    pub stage: Stage,
    /// Its match, with the client network parsed.
    pub matches: Match,
    client: Option<Network>,
    /// The chance it fires when it matches (0 to 1).
    pub probability: f64,
    /// What it does.
    pub action: Action,
    /// The reply of a `Reply` action, built once when the rule was validated.
    reply: Option<Reply>,
}

impl Rule {
    /// The reply a `Reply` rule answers with (`None` for other actions).
    pub fn reply(&self) -> Option<&Reply> {
        self.reply.as_ref()
    }

    /// True when the facts fit every field of the match.
    pub fn fits(&self, f: &Facts<'_>) -> bool {
        let m = &self.matches;
        if let (Some(net), Some(ip)) = (&self.client, f.client) {
            if !net.contains(ip) {
                return false;
            }
        }
        if let Some(d) = &m.sender_domain {
            if !f
                .sender
                .is_some_and(|s| domain_of(s).eq_ignore_ascii_case(d))
            {
                return false;
            }
        }
        if m.recipient_domain.is_some() || m.local_part.is_some() {
            let any = f.recipients.iter().any(|r| {
                m.recipient_domain
                    .as_ref()
                    .is_none_or(|d| domain_of(r).eq_ignore_ascii_case(d))
                    && m.local_part.as_ref().is_none_or(|g| glob(g, local_of(r)))
            });
            if !any {
                return false;
            }
        }
        if m.size_min.is_some() || m.size_max.is_some() {
            let Some(size) = f.size else {
                return false;
            };
            if m.size_min.is_some_and(|min| size < min) || m.size_max.is_some_and(|max| size > max)
            {
                return false;
            }
        }
        if let Some(h) = &m.header {
            if !f.headers.iter().any(|n| n.eq_ignore_ascii_case(h)) {
                return false;
            }
        }
        true
    }
}

/// A rule as written (TOML `[[rule]]` or JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleSpec {
    /// The stage.
    pub stage: Stage,
    /// The match.
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// The chance (default 1).
    #[serde(default = "one")]
    pub probability: f64,
    /// The action and its parameters.
    #[serde(flatten)]
    pub action: Action,
}

fn one() -> f64 {
    1.0
}

/// A rule set as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// Seed of the per-shard random draws (shard `n` uses `seed + n`), so a run repeats.
    #[serde(default)]
    pub seed: u64,
    /// KumoMTA-style address triggers at RCPT: a local part containing `tempfail` gets 451,
    /// `permfail` 550, one starting with `450-`, `550-` or `250-` that code.
    #[serde(default)]
    pub address_triggers: bool,
    /// The rules, first match wins.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleSpec>,
}

/// A validated rule set, ready for the shards.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    /// What it was built from (for `GET /faults`).
    pub spec: RuleFile,
    /// The rules.
    pub rules: Vec<Rule>,
    /// Bit `s as u32` set: some rule applies at stage `s` (most events have none).
    stages: u32,
    /// Bit `s as u32` set: some rule at that stage matches on recipients.
    recipient_stages: u32,
    /// Some rule matches on header names.
    headers: bool,
}

impl RuleSet {
    /// Validates `spec` whole: the first problem is the error.
    pub fn new(spec: RuleFile) -> Result<Self, String> {
        let mut rules = Vec::with_capacity(spec.rules.len());
        for (i, r) in spec.rules.iter().enumerate() {
            let at = |e: String| format!("rule {}: {e}", i + 1);
            if !(0.0..=1.0).contains(&r.probability) {
                return Err(at(format!(
                    "probability {} is not between 0 and 1",
                    r.probability
                )));
            }
            match &r.action {
                Action::Reply { code, .. } if !(400..=599).contains(code) => {
                    let ok = r.stage == Stage::Connect && (200..300).contains(code);
                    if !ok {
                        return Err(at(format!("reply code {code} is not a 4xx or 5xx")));
                    }
                }
                Action::Throttle {
                    bytes_per_second: 0,
                } => return Err(at("throttle needs bytes_per_second above 0".into())),
                Action::Throttle { .. } if !matches!(r.stage, Stage::Data | Stage::Bdat) => {
                    return Err(at("throttle applies to the data or bdat stage".into()))
                }
                Action::Abort { .. } if r.stage != Stage::Data => {
                    return Err(at("abort applies to the data stage".into()))
                }
                _ => {}
            }
            if r.matches.header.is_some() && r.stage != Stage::Dot {
                return Err(at("a header match applies to the dot stage".into()));
            }
            let client = match &r.matches.client {
                Some(c) => Some(c.parse::<Network>().map_err(|e| at(e.to_string()))?),
                None => None,
            };
            let reply = match &r.action {
                Action::Reply {
                    code,
                    enhanced,
                    text,
                } => Some(Action::reply(*code, enhanced.as_deref(), text)),
                _ => None,
            };
            rules.push(Rule {
                stage: r.stage,
                matches: r.matches.clone(),
                client,
                probability: r.probability,
                action: r.action.clone(),
                reply,
            });
        }
        let bit = |st: Stage| 1u32 << st as u32;
        let stages = rules.iter().fold(0, |m, r| m | bit(r.stage));
        let recipient_stages = rules
            .iter()
            .filter(|r| r.matches.recipient_domain.is_some() || r.matches.local_part.is_some())
            .fold(0, |m, r| m | bit(r.stage));
        let headers = rules.iter().any(|r| r.matches.header.is_some());
        Ok(Self {
            spec,
            rules,
            stages,
            recipient_stages,
            headers,
        })
    }

    /// True when some rule applies at `stage`.
    pub fn has_stage(&self, stage: Stage) -> bool {
        self.stages & (1 << stage as u32) != 0
    }

    /// True when some rule at `stage` matches on recipients.
    pub fn needs_recipients(&self, stage: Stage) -> bool {
        self.recipient_stages & (1 << stage as u32) != 0
    }

    /// Parses and validates TOML.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        Self::new(toml::from_str(text).map_err(|e| e.to_string())?)
    }

    /// Parses and validates JSON.
    pub fn from_json(text: &[u8]) -> Result<Self, String> {
        Self::new(serde_json::from_slice(text).map_err(|e| e.to_string())?)
    }

    /// True when nothing is configured (the sink runs as if there were no fault layer).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && !self.spec.address_triggers
    }

    /// True when some rule needs every command line (RSET, NOOP, QUIT, VRFY, STARTTLS).
    pub fn needs_lines(&self) -> bool {
        self.rules.iter().any(|r| r.stage.is_line_only())
    }

    /// True when some rule matches on header names.
    pub fn needs_headers(&self) -> bool {
        self.headers
    }

    /// The first rule for `stage` that fits and whose draw succeeds.
    pub fn decide(&self, stage: Stage, facts: &Facts<'_>, rng: &mut impl Rng) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            r.stage == stage
                && r.fits(facts)
                && (r.probability >= 1.0 || rng.random::<f64>() < r.probability)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_validate_and_match() {
        let set = RuleSet::from_toml(
            r#"
seed = 7
[[rule]]
stage = "rcpt"
probability = 0.5
action = "reply"
code = 451
enhanced = "4.2.1"
text = "busy"
match = { recipient_domain = "example.com", local_part = "t*st" }

[[rule]]
stage = "dot"
action = "delay"
delay = "lognormal:20ms,0.5"
"#,
        )
        .unwrap();
        assert_eq!(set.rules.len(), 2);
        let r = &set.rules[0];
        let to = ["teeest@Example.COM"];
        assert!(r.fits(&Facts {
            recipients: &to,
            ..Facts::default()
        }));
        let other = ["best@example.com"];
        assert!(!r.fits(&Facts {
            recipients: &other,
            ..Facts::default()
        }));
        for bad in [
            "[[rule]]\nstage = \"rcpt\"\naction = \"reply\"\ncode = 250\n",
            "[[rule]]\nstage = \"rcpt\"\nprobability = 2.0\naction = \"disconnect\"\n",
            "[[rule]]\nstage = \"mail\"\naction = \"abort\"\n",
            "[[rule]]\nstage = \"rcpt\"\naction = \"delay\"\ndelay = \"soon\"\n",
            "[[rule]]\nstage = \"nope\"\naction = \"disconnect\"\n",
        ] {
            assert!(RuleSet::from_toml(bad).is_err(), "{bad}");
        }
        // The spec round-trips through JSON (GET then PUT).
        let json = serde_json::to_vec(&set.spec).unwrap();
        assert_eq!(RuleSet::from_json(&json).unwrap().spec, set.spec);
    }

    #[test]
    fn globs_and_triggers() {
        assert!(glob("a*c", "abbbc") && glob("*", "") && glob("a?c", "abc"));
        assert!(!glob("a*c", "abbb") && !glob("a?c", "ac"));
        assert_eq!(address_trigger("x.tempfail@d").unwrap().code(), 451);
        assert_eq!(address_trigger("permfail@d").unwrap().code(), 550);
        assert_eq!(address_trigger("450-busy@d").unwrap().code(), 450);
        assert!(address_trigger("250-ok@d").is_none());
        assert!(address_trigger("plain@d").is_none());
    }
}
