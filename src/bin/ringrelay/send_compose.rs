//! What `ringrelay send` makes of its arguments before it speaks SMTP: addresses reduced to
//! their mailbox as smtplib does (`email.utils.parseaddr`), and a message built from
//! swaks-style `--header "Name: value"` and `--body TEXT` when no file is given. Pure
//! functions of their input and the clock; no I/O.

use std::time::{SystemTime, UNIX_EPOCH};

/// The mailbox of an address as `email.utils.parseaddr` gives it: `Jane <jane@example.com>`
/// and `"Doe, Jane" <jane@example.com>` give `jane@example.com`, `jane@example.com (Jane)`
/// gives `jane@example.com`, a bare mailbox stays as it is.
pub fn mailbox(addr: &str) -> String {
    let mut quoted = false;
    let mut depth = 0u32;
    let mut open = None;
    let mut bare = String::new();
    for (i, c) in addr.char_indices() {
        match c {
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                continue;
            }
            '<' if !quoted && depth == 0 => open = Some(i + 1),
            '>' if !quoted && depth == 0 => {
                if let Some(start) = open {
                    return addr[start..i].trim().to_string();
                }
            }
            _ => {}
        }
        if depth == 0 && c != ')' {
            bare.push(c);
        }
    }
    bare.trim().to_string()
}

/// Why `--header` values cannot make a message.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    /// A `--header` without `Name:`.
    #[error("--header {0:?}: give it as \"Name: value\"")]
    Header(String),
}

/// Builds a message from `--header` lines and `--body`: the headers as given, then `From:`
/// (from `--from`), `To:` (from `--to`), `Date:` and `Subject:` where the headers have none,
/// an empty line and the body. Lines end in CRLF.
pub fn compose(
    headers: &[String],
    body: &str,
    from: Option<&str>,
    to: &[String],
) -> Result<Vec<u8>, ComposeError> {
    let mut names = Vec::with_capacity(headers.len());
    for h in headers {
        match h.split_once(':') {
            Some((name, _)) if is_field_name(name) => names.push(name.to_ascii_lowercase()),
            _ => return Err(ComposeError::Header(h.clone())),
        }
    }
    let has = |n: &str| names.iter().any(|x| x == n);
    let mut out = String::new();
    for h in headers {
        out.push_str(h.trim_end());
        out.push_str("\r\n");
    }
    if let (false, Some(from)) = (has("from"), from) {
        out.push_str(&format!("From: {from}\r\n"));
    }
    if !has("to") && !to.is_empty() {
        out.push_str(&format!("To: {}\r\n", to.join(", ")));
    }
    if !has("date") {
        out.push_str(&format!("Date: {}\r\n", rfc5322_date(SystemTime::now())));
    }
    if !has("subject") {
        out.push_str("Subject: ringrelay send\r\n");
    }
    out.push_str("\r\n");
    for line in body.split_inclusive('\n') {
        out.push_str(line.trim_end_matches(['\r', '\n']));
        out.push_str("\r\n");
    }
    Ok(out.into_bytes())
}

fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// `Fri, 27 Nov 2026 11:51:20 +0000` (RFC 5322 §3.3, in UTC).
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (H. Hinnant's algorithm), 1970-01-01 was a Thursday.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day} {} {year} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn display_names_go_as_parseaddr_drops_them() {
        let cases = [
            ("jane@example.com", "jane@example.com"),
            ("Jane <jane@example.com>", "jane@example.com"),
            ("\"Doe, Jane\" <jane@example.com>", "jane@example.com"),
            ("\"a <b>\" <c@example.com>", "c@example.com"),
            ("<jane@example.com>", "jane@example.com"),
            ("jane@example.com (Jane Doe)", "jane@example.com"),
            ("  jane@example.com  ", "jane@example.com"),
        ];
        for (given, want) in cases {
            assert_eq!(mailbox(given), want, "{given}");
        }
    }

    #[test]
    fn a_message_from_headers_and_body() {
        let msg = compose(
            &["Subject: hello".into(), "X-Test: 1".into()],
            "Hi Bob\nsecond line",
            Some("alice@example.org"),
            &["bob@example.org".into()],
        )
        .unwrap();
        let text = String::from_utf8(msg).unwrap();
        assert!(text.starts_with(
            "Subject: hello\r\nX-Test: 1\r\nFrom: alice@example.org\r\nTo: bob@example.org\r\nDate: "
        ));
        assert!(
            text.ends_with("\r\n\r\nHi Bob\r\nsecond line\r\n"),
            "{text}"
        );
        assert!(!text.contains("Subject: ringrelay send"));
        assert_eq!(
            compose(&["no colon".into()], "", None, &[]),
            Err(ComposeError::Header("no colon".into()))
        );
    }

    #[test]
    fn dates_are_rfc5322() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_780_005);
        assert_eq!(rfc5322_date(t), "Fri, 27 Nov 2026 11:46:45 +0000");
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 1 Jan 1970 00:00:00 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }
}
