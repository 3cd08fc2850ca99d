//! What the relay says to its upstream and how the upstream's replies become ours: the MAIL
//! command built for the upstream's extensions, the client identity passed with XCLIENT or
//! XFORWARD, the mapping of replies and failures (never a 250 the upstream did not give;
//! everything but its own 5xx becomes a 4xx).

use std::net::IpAddr;

use super::pool::unavailable;
use crate::client::core::Phase;
use crate::client::{ClientError, SmtpClient};
use crate::proto::{EnhancedCode, Reply, Session};

/// The upstream's reply as ours: 2xx and 5xx as they are (with an enhanced code), 421 and
/// other 4xx as a 4xx that does not close our session.
pub(super) fn mirror(r: Reply) -> Reply {
    let code = if r.code() == 421 { 451 } else { r.code() };
    let class = (code / 100) as u8;
    if r.enhanced().is_none() {
        // An upstream that does not offer ENHANCEDSTATUSCODES may still write one at the start
        // of its text (aiosmtpd passes a handler's "250 2.0.0 ..." through): use it rather
        // than writing a second one in front of it.
        if let Some((e, rest)) = EnhancedCode::parse_prefix(r.text()) {
            if e.class == class {
                return Reply::new(code, e, rest.to_string());
            }
        }
    }
    let enhanced = r
        .enhanced()
        .filter(|e| e.class == class)
        .unwrap_or(EnhancedCode::new(class, 0, 0));
    Reply::new(code, enhanced, r.text().to_string())
}

/// Who the client is, for Postfix's XCLIENT / XFORWARD toward the upstream.
#[derive(Clone, Debug)]
pub(super) struct Identity {
    addr: IpAddr,
    helo: Option<String>,
    esmtp: bool,
}

impl Identity {
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

/// The MAIL command for this upstream connection. A parameter goes only to an upstream that
/// offered its extension (RFC 5321 §4.1.1.11): SIZE (RFC 1870) and BODY (RFC 6152; 8-bit
/// content is still sent as it is, as Postfix does) are dropped otherwise, or an upstream
/// that does not offer them may refuse every message (Postfix in front always sends SIZE=).
/// SMTPUTF8 cannot be dropped (RFC 6531 §3.2): without it upstream the transaction is refused.
pub(super) fn mail_command(
    from: &str,
    options: &[String],
    up: &SmtpClient,
) -> Result<String, Reply> {
    let mut line = format!("MAIL FROM:<{from}>");
    for o in options {
        let key = o.split_once('=').map_or(o.as_str(), |(k, _)| k);
        let extension = match key.to_ascii_uppercase().as_str() {
            "SIZE" => Some("size"),
            "BODY" => Some("8bitmime"),
            "SMTPUTF8" => Some("smtputf8"),
            _ => None,
        };
        match extension {
            Some(ext) if !up.has_extn(ext) => {
                if ext == "smtputf8" {
                    return Err(Reply::new(
                        553,
                        EnhancedCode::new(5, 6, 7),
                        "Upstream does not support SMTPUTF8",
                    ));
                }
            }
            _ => {
                line.push(' ');
                line.push_str(o);
            }
        }
    }
    Ok(line)
}

/// A reply the upstream may not give to that command (a 3xx to MAIL or RCPT): temporary.
pub(super) fn out_of_protocol(r: &Reply) -> Reply {
    unavailable(format!(
        "Upstream protocol error: unexpected reply {}",
        r.code()
    ))
}

/// A failure talking to the upstream, for the client: always temporary.
pub(super) fn failure(e: &ClientError) -> Reply {
    let text = e.to_string().replace(['\r', '\n'], " ");
    unavailable(format!(
        "Upstream error: {}",
        text.chars().take(200).collect::<String>()
    ))
}

/// True when a failure on a reused connection means it had gone stale before we used it.
pub(super) fn stale(r: &Result<Reply, ClientError>) -> bool {
    match r {
        Ok(reply) => reply.code() == 421,
        Err(ClientError::ServerDisconnected | ClientError::Io(_) | ClientError::Protocol(_)) => {
            true
        }
        Err(_) => false,
    }
}

pub(super) fn relay_denied() -> Reply {
    Reply::new(554, EnhancedCode::new(5, 7, 1), "Relay access denied")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_keeps_one_enhanced_code() {
        let cases: &[(Reply, &str)] = &[
            // Parsed by the client (ENHANCEDSTATUSCODES offered).
            (
                Reply::new(250, EnhancedCode::new(2, 0, 0), "queued"),
                "250 2.0.0 queued\r\n",
            ),
            // Not offered, but written in the text anyway (aiosmtpd handlers do this).
            (
                Reply::plain(250, "2.0.0 recorded as 1"),
                "250 2.0.0 recorded as 1\r\n",
            ),
            (Reply::plain(250, "OK"), "250 2.0.0 OK\r\n"),
            (
                Reply::plain(550, "5.1.1 no such user"),
                "550 5.1.1 no such user\r\n",
            ),
            // A code of the wrong class in the text is text.
            (Reply::plain(250, "5.0.0 odd"), "250 2.0.0 5.0.0 odd\r\n"),
            // 421 does not close our session: 451, its enhanced code kept.
            (
                Reply::plain(421, "4.4.2 idle, closing"),
                "451 4.4.2 idle, closing\r\n",
            ),
            (
                Reply::new(421, EnhancedCode::new(4, 3, 2), "bye"),
                "451 4.3.2 bye\r\n",
            ),
        ];
        for (r, want) in cases {
            let mut out = Vec::new();
            mirror(r.clone()).write_to(&mut out, true);
            assert_eq!(String::from_utf8(out).unwrap(), *want, "{r:?}");
        }
    }
}
