//! How the upstream's replies and failures become ours. The rule (RFC 5321 §6.1, and the MTA
//! in front keeping what we cannot deliver): never a positive reply the upstream did not give;
//! its 2xx and 5xx are passed on as they are, and everything else — its 4xx and 421, a reply it
//! may not give to that command, a broken or timed-out connection, no connection at all —
//! becomes a 4xx. Pure functions: nothing here talks to anyone.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::client::ClientError;
use crate::proto::{EnhancedCode, Reply};

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

/// Why no upstream connection could be had, or the one we had was lost: always a 4xx.
pub(super) fn unavailable(text: impl Into<std::borrow::Cow<'static, str>>) -> Reply {
    Reply::new(451, EnhancedCode::new(4, 4, 1), text)
}

/// A reply the upstream may not give to that command (a 3xx to MAIL or RCPT): temporary.
pub(super) fn out_of_protocol(r: &Reply) -> Reply {
    incident(&format!("protocol error: unexpected reply {r}"))
}

/// A failure talking to the upstream, for the client: always temporary.
pub(super) fn failure(e: &ClientError) -> Reply {
    incident(&e.to_string())
}

/// A temporary failure whose details are for the operator, not the client (addresses, system
/// errors, what a broken upstream said): the client gets `451 4.4.1 Upstream unavailable
/// (incident ID)` and stderr gets the same ID with the details.
pub(super) fn incident(details: &str) -> Reply {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = format!(
        "{:x}.{:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let details: String = details
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        // Room for a TLS failure's sentence (server, what failed, the option to change).
        .take(500)
        .collect();
    note_incident(&id, &details);
    unavailable(format!("Upstream unavailable (incident {id})"))
}

thread_local! {
    /// Incident lines written in the current second on this thread, and the second's start.
    static NOTED: Cell<(u32, Option<Instant>, u64)> = const { Cell::new((0, None, 0)) };
}

/// Logs an incident line (target `ringrelay::upstream`, warn): at most 10 a second per shard (an outage fails every
/// message), the number left out said on the next line written.
fn note_incident(id: &str, details: &str) {
    const PER_SECOND: u32 = 10;
    NOTED.with(|n| {
        let (count, since, skipped) = n.get();
        let now = Instant::now();
        let fresh = since.is_none_or(|s| now.duration_since(s).as_secs() >= 1);
        let (count, since) = if fresh {
            (0, now)
        } else {
            (count, since.unwrap_or(now))
        };
        if count >= PER_SECOND {
            n.set((count, Some(since), skipped + 1));
            return;
        }
        let more = if skipped > 0 {
            format!(" ({skipped} similar incidents not shown)")
        } else {
            String::new()
        };
        tracing::warn!(
            target: crate::log::UPSTREAM,
            incident = %id,
            "upstream incident {id}: {details}{more}"
        );
        n.set((count + 1, Some(since), 0));
    });
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

/// Our own refusal of a client that may not relay, or of a recipient domain we do not serve.
pub(super) fn relay_denied() -> Reply {
    Reply::new(554, EnhancedCode::new(5, 7, 1), "Relay access denied")
}

/// Our own refusal of a message that has passed through too many hosts (RFC 5321 §6.3).
pub(super) fn mail_loop() -> Reply {
    Reply::new(
        554,
        EnhancedCode::new(5, 4, 6),
        "Mail loop detected: too many Received headers",
    )
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incidents_keep_the_details_from_the_client() {
        let e = ClientError::Connect {
            addr: "127.0.0.1:36041".into(),
            source: std::io::Error::from_raw_os_error(libc::ECONNREFUSED),
        };
        let mut out = Vec::new();
        failure(&e).write_to(&mut out, true);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("451 4.4.1 Upstream unavailable (incident "),
            "{text}"
        );
        assert!(
            !text.contains("127.0.0.1") && !text.contains("os error"),
            "{text}"
        );
    }

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
