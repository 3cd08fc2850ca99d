//! `Features`: what a server offers in its EHLO reply, as smtplib keeps it (keywords
//! lower-cased, parameters joined), for `SmtpClient::has_extn` and the relay's choices.

use std::collections::BTreeMap;

use crate::proto::Reply;

/// What the server said it supports in its EHLO reply (keywords lower-cased, as smtplib).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    map: BTreeMap<String, String>,
}

impl Features {
    /// Parses the lines after the first of an EHLO reply.
    pub fn parse(reply: &Reply) -> Self {
        let mut map = BTreeMap::new();
        for line in reply.text().split('\n').skip(1) {
            let line = line.trim();
            // Old-style "AUTH=LOGIN PLAIN" is merged into "auth", as smtplib does.
            let (key, params) = match line.split_once([' ', '=']) {
                Some((k, p)) => (k, p.trim()),
                None => (line, ""),
            };
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                continue;
            }
            let key = key.to_ascii_lowercase();
            let entry: &mut String = map.entry(key).or_default();
            if !entry.is_empty() && !params.is_empty() {
                entry.push(' ');
            }
            entry.push_str(params);
        }
        Self { map }
    }

    /// smtplib's `has_extn`.
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(&name.to_ascii_lowercase())
    }

    /// The parameters of an extension.
    pub fn params(&self, name: &str) -> Option<&str> {
        self.map.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// The SIZE limit, if the server declared one (0 = none).
    pub fn size_limit(&self) -> Option<u64> {
        self.params("size").and_then(|p| p.trim().parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_like_smtplib() {
        let r = Reply::plain(
            250,
            "mx Hello\nPIPELINING\nSIZE 1000\nAUTH PLAIN LOGIN\nAUTH=CRAM-MD5\n8BITMIME\nSTARTTLS",
        );
        let f = Features::parse(&r);
        assert!(f.has("PIPELINING") && f.has("starttls") && f.has("8bitmime"));
        assert_eq!(f.size_limit(), Some(1000));
        assert_eq!(f.params("auth"), Some("PLAIN LOGIN CRAM-MD5"));
        assert!(!f.has("chunking"));
    }
}
