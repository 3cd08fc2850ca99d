//! Who the client is, told to the upstream before MAIL with Postfix's XCLIENT or XFORWARD
//! commands (each only when enabled and offered), so the upstream logs and checks the real
//! client instead of us. A refusal is not fatal to the mail.

use std::net::IpAddr;

use crate::client::core::Phase;
use crate::client::{ClientError, SmtpClient};
use crate::proto::{Reply, Session};

/// The client's address, HELO name and protocol, as XCLIENT / XFORWARD carry them.
#[derive(Clone, Debug)]
pub(super) struct Identity {
    addr: IpAddr,
    helo: Option<String>,
    esmtp: bool,
}

impl Identity {
    /// The identity of `session`'s client.
    pub(super) fn of(session: &Session) -> Self {
        Self {
            addr: session.peer().ip(),
            helo: session.helo_name().map(str::to_string),
            esmtp: session.is_esmtp(),
        }
    }

    /// `VERB ADDR=... PROTO=... HELO=... NAME=[UNAVAILABLE]`, with only the attributes the
    /// upstream listed (`offered`, from its EHLO line); values xtext-encoded (RFC 3461 §4).
    fn command(&self, verb: &str, offered: &str) -> String {
        let listed = |a: &str| {
            offered
                .split_whitespace()
                .any(|o| o.eq_ignore_ascii_case(a))
        };
        let mut line = verb.to_string();
        if listed("ADDR") {
            line.push_str(&format!(" ADDR={}", self.addr));
        }
        if listed("PROTO") {
            line.push_str(if self.esmtp {
                " PROTO=ESMTP"
            } else {
                " PROTO=SMTP"
            });
        }
        if let (true, Some(helo)) = (listed("HELO"), &self.helo) {
            line.push_str(" HELO=");
            for b in helo.bytes() {
                if (33..=126).contains(&b) && b != b'+' && b != b'=' {
                    line.push(b as char);
                } else {
                    line.push_str(&format!("+{b:02X}"));
                }
            }
        }
        if listed("NAME") {
            line.push_str(" NAME=[UNAVAILABLE]");
        }
        line
    }
}

/// Tells the upstream who the client is, before MAIL: XCLIENT (the upstream then greets
/// again and we EHLO again) or else XFORWARD, each only when enabled and offered. A refusal
/// is not fatal to the mail; a 421 or a broken connection is returned for the caller.
pub(super) async fn pass_identity(
    client: &mut SmtpClient,
    id: &Identity,
    xclient: bool,
    xforward: bool,
) -> Result<Reply, ClientError> {
    let offered = |name: &str| {
        client
            .features()
            .and_then(|f| f.params(name))
            .map(str::to_string)
    };
    if let (true, Some(attrs)) = (xclient, offered("xclient")) {
        let r = client
            .command(&id.command("XCLIENT", &attrs), Phase::Other)
            .await?;
        if r.code() != 220 {
            return Ok(r);
        }
        return client.ehlo(None).await;
    }
    if let (true, Some(attrs)) = (xforward, offered("xforward")) {
        return client
            .command(&id.command("XFORWARD", &attrs), Phase::Other)
            .await;
    }
    Ok(Reply::plain(250, "nothing to pass"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_offered_attributes_xtext_encoded() {
        let id = Identity {
            addr: "192.0.2.7".parse().unwrap(),
            helo: Some("odd name+=x".into()),
            esmtp: true,
        };
        assert_eq!(
            id.command("XFORWARD", "NAME ADDR PROTO HELO"),
            "XFORWARD ADDR=192.0.2.7 PROTO=ESMTP HELO=odd+20name+2B+3Dx NAME=[UNAVAILABLE]"
        );
        assert_eq!(id.command("XCLIENT", "addr"), "XCLIENT ADDR=192.0.2.7");
        let smtp = Identity {
            helo: None,
            esmtp: false,
            ..id
        };
        assert_eq!(smtp.command("XCLIENT", "PROTO HELO"), "XCLIENT PROTO=SMTP");
    }
}
