//! The relay's header work: the `Received:` trace field it prepends (RFC 5321 §4.4), what
//! that field says about a transaction (`Trace`, taken when the client sends DATA), and the
//! loop guard that counts the `Received:` fields already in a message's header section as the
//! content streams past (more than `MAX_HOPS` means a mail loop: 554 5.4.6).

use std::time::SystemTime;

use bytes::Bytes;

use super::x_peer::XPeer;
use crate::proto::Session;

/// Hops allowed before a message counts as looping (RFC 5321 §6.3 suggests 100).
pub const MAX_HOPS: usize = 100;

/// What a `Received:` field says.
#[derive(Debug)]
pub struct TraceInfo<'a> {
    /// The client's HELO/EHLO name.
    pub helo: &'a str,
    /// The client's address.
    pub peer: core::net::SocketAddr,
    /// Our host name.
    pub by: &'a str,
    /// ESMTP (EHLO) or SMTP (HELO); ESMTPS when TLS, ESMTPA when authenticated.
    pub protocol: &'a str,
    /// A transaction id.
    pub id: &'a str,
    /// The recipient, when there is exactly one.
    pub recipient: Option<&'a str>,
}

/// Builds the `Received:` field, folded, ending in CRLF. Its lines never start with a dot.
pub fn received(info: &TraceInfo<'_>, now: SystemTime) -> String {
    // RFC 5321 §4.1.3 address literals: [192.0.2.1], [IPv6:2001:db8::1].
    let literal = match info.peer.ip() {
        std::net::IpAddr::V4(v4) => format!("[{v4}]"),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("[{v4}]"),
            None => format!("[IPv6:{v6}]"),
        },
    };
    let mut s = format!(
        "Received: from {} ({literal})\r\n\tby {} (ringrelay) with {} id {}",
        helo_name(info.helo),
        sanitize(info.by),
        info.protocol,
        info.id
    );
    if let Some(r) = info.recipient {
        s.push_str(&format!("\r\n\tfor <{}>", sanitize(r)));
    }
    s.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(now)));
    s
}

/// The client's HELO name as it may stand in the field: what a domain or an address literal
/// can hold; anything else (spaces, `;` that would start the date, `(` a comment, 8-bit
/// octets) becomes `?`, so a client cannot shape the trace.
fn helo_name(s: &str) -> String {
    let name: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._:[]".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect();
    if name.is_empty() {
        "unknown".into()
    } else {
        name
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || !c.is_ascii() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// An RFC 5322 date in UTC, e.g. `Mon, 23 Nov 2026 09:17:46 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days.rem_euclid(7)) as usize];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    let rem = secs % 86_400;
    format!(
        "{weekday}, {d:02} {month} {y} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// What our `Received:` field says, taken when DATA is read; the recipient is known only
/// once the upstream has answered the pipelined RCPTs.
#[derive(Debug)]
pub(super) struct Trace {
    helo: String,
    peer: core::net::SocketAddr,
    by: String,
    protocol: &'static str,
    id: String,
    x_peer: bool,
}

impl Trace {
    /// The trace of `session`'s current transaction, numbered `id`; `x_peer`: the message
    /// also gets the seed's `X-Peer:` field.
    pub(super) fn of(session: &Session, id: String, x_peer: bool) -> Self {
        Self {
            helo: session.helo_name().unwrap_or("unknown").to_string(),
            peer: session.peer(),
            by: session.hostname().to_string(),
            // RFC 3848: ESMTP, plus S inside TLS and A once authenticated.
            protocol: match (
                session.is_esmtp(),
                session.is_tls(),
                session.authenticated().is_some(),
            ) {
                (false, ..) => "SMTP",
                (true, false, false) => "ESMTP",
                (true, false, true) => "ESMTPA",
                (true, true, false) => "ESMTPS",
                (true, true, true) => "ESMTPSA",
            },
            id,
            x_peer,
        }
    }

    /// The header lines, with `for` when the upstream accepted exactly one recipient.
    pub(super) fn render(&self, accepted: &[String]) -> Bytes {
        let recipient = (accepted.len() == 1).then(|| accepted[0].as_str());
        let h = received(
            &TraceInfo {
                helo: &self.helo,
                peer: self.peer,
                by: &self.by,
                protocol: self.protocol,
                id: &self.id,
                recipient,
            },
            SystemTime::now(),
        );
        Bytes::from(h)
    }

    /// The `X-Peer:` placer for this message, when `--x-peer` is on.
    pub(super) fn x_peer(&self) -> Option<XPeer> {
        self.x_peer.then(|| XPeer::new(self.peer.ip()))
    }
}

/// Counts `Received:` fields in the header section of streamed content.
#[derive(Debug, Default)]
pub struct LoopGuard {
    hops: usize,
    line: Vec<u8>,
    done: bool,
}

impl LoopGuard {
    /// Feeds message content (dot-unstuffed); stops looking after the header section.
    pub fn feed(&mut self, content: &[u8]) {
        let mut rest = content;
        while !self.done && !rest.is_empty() {
            match memchr::memchr(b'\n', rest) {
                Some(i) => {
                    self.take(&rest[..i]);
                    self.end_line();
                    rest = &rest[i + 1..];
                }
                None => {
                    self.take(rest);
                    rest = &[];
                }
            }
        }
    }

    /// Keeps only what identifies a line: its first few octets.
    fn take(&mut self, part: &[u8]) {
        let room = 16usize.saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
    }

    fn end_line(&mut self) {
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        if line.is_empty() {
            self.done = true;
        } else if line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:") {
            self.hops += 1;
        }
        self.line.clear();
    }

    /// True once more than `MAX_HOPS` `Received:` fields were seen.
    pub fn looping(&self) -> bool {
        self.hops > MAX_HOPS
    }

    /// `Received:` fields seen so far.
    pub fn hops(&self) -> usize {
        self.hops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_425_466);
        assert_eq!(rfc5322_date(t), "Mon, 23 Nov 2026 09:17:46 +0000");
        assert_eq!(
            rfc5322_date(SystemTime::UNIX_EPOCH),
            "Thu, 01 Jan 1970 00:00:00 +0000"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn ipv6_clients_and_odd_helo_names() {
        let mut info = TraceInfo {
            helo: "x; Thu, 01 Jan 1970 (forged) é",
            peer: "[::1]:4000".parse().unwrap(),
            by: "relay.example",
            protocol: "ESMTP",
            id: "abc123",
            recipient: None,
        };
        let t = SystemTime::UNIX_EPOCH;
        let field = received(&info, t);
        assert_eq!(
            field.lines().next(),
            Some("Received: from x??Thu??01?Jan?1970??forged??? ([IPv6:::1])")
        );
        info.peer = "[::ffff:192.0.2.7]:25".parse().unwrap();
        info.helo = "[192.0.2.7]";
        assert!(received(&info, t).starts_with("Received: from [192.0.2.7] ([192.0.2.7])\r\n"));
        info.peer = "[2001:db8::1]:25".parse().unwrap();
        info.helo = "[IPv6:2001:db8::1]";
        assert!(received(&info, t)
            .starts_with("Received: from [IPv6:2001:db8::1] ([IPv6:2001:db8::1])\r\n"));
    }

    #[test]
    fn received_field() {
        let info = TraceInfo {
            helo: "client.example",
            peer: "192.0.2.1:4000".parse().unwrap(),
            by: "relay.example",
            protocol: "ESMTP",
            id: "abc123",
            recipient: Some("u@example.com"),
        };
        let t = SystemTime::UNIX_EPOCH;
        assert_eq!(
            received(&info, t),
            "Received: from client.example ([192.0.2.1])\r\n\tby relay.example (ringrelay) with ESMTP id abc123\r\n\
\tfor <u@example.com>;\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
    }

    #[test]
    fn loop_guard_counts_headers_only_across_chunks() {
        let mut msg = String::new();
        for _ in 0..101 {
            msg.push_str("Received: from x\r\n\tby y\r\n");
        }
        msg.push_str("Subject: s\r\n\r\nReceived: in the body does not count\r\n");
        for step in [1, 7, 1000] {
            let mut g = LoopGuard::default();
            for piece in msg.as_bytes().chunks(step) {
                g.feed(piece);
            }
            assert_eq!(g.hops(), 101, "step {step}");
            assert!(g.looping());
        }
        let mut ok = LoopGuard::default();
        ok.feed(b"Received: a\r\nreceived: b\r\n\r\nReceived: c\r\n");
        assert_eq!(ok.hops(), 2);
        assert!(!ok.looping());
    }
}
