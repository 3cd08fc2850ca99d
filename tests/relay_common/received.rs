//! Checks of the `Received:` field the relay adds (shared by the relay test files).

use super::RELAY_HOST;

// ---------------------------------------------------------------------------------------------
// The Received: field

/// RFC 5322 atext (an `id` of a Received: field must be an Atom or a msg-id).
pub fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

pub fn check_date(d: &str) {
    let f: Vec<&str> = d.split(' ').collect();
    let ok = f.len() == 6
        && ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"].contains(&f[0])
        && f[1].len() == 2
        && f[1].parse::<u32>().is_ok_and(|d| (1..=31).contains(&d))
        && [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .contains(&f[2])
        && f[3].len() == 4
        && f[3].parse::<u32>().is_ok_and(|y| y >= 2024)
        && f[4].len() == 8
        && f[4]
            .split(':')
            .all(|p| p.len() == 2 && p.parse::<u8>().is_ok())
        && f[5] == "+0000";
    assert!(ok, "not an RFC 5322 date: {d:?}");
}

/// Checks that `content` is exactly one Received: field of ours followed by `original`;
/// returns the field's id.
pub fn check_received(
    content: &[u8],
    original: &[u8],
    helo: &str,
    protocol: &str,
    recipient: Option<&str>,
) -> String {
    assert!(
        content.ends_with(original),
        "delivered content does not end with the original message\n--- delivered ---\n{}\n--- original ---\n{}",
        String::from_utf8_lossy(content),
        String::from_utf8_lossy(original)
    );
    let field = &content[..content.len() - original.len()];
    let field = std::str::from_utf8(field).expect("the Received: field is ASCII");
    assert!(
        field.ends_with("\r\n"),
        "prepended part not CRLF-terminated: {field:?}"
    );
    let lines: Vec<&str> = field.trim_end_matches("\r\n").split("\r\n").collect();
    let rest = &lines[1..];
    assert_eq!(
        lines[0],
        format!("Received: from {helo} ([127.0.0.1])"),
        "first line of {field:?}"
    );
    // Every continuation line is folded (starts with whitespace): one field only.
    assert!(
        rest.iter().all(|l| l.starts_with('\t')),
        "more than one field prepended: {field:?}"
    );
    let by_prefix = format!("\tby {RELAY_HOST} (ringrelay) with {protocol} id ");
    let id_part = rest[0]
        .strip_prefix(&by_prefix)
        .unwrap_or_else(|| panic!("second line {:?} is not {by_prefix:?}...", rest[0]));
    let (id, date_line) = match recipient {
        Some(r) => {
            assert_eq!(rest.len(), 3, "{field:?}");
            assert_eq!(rest[1], format!("\tfor <{r}>;"), "{field:?}");
            (id_part, rest[2])
        }
        None => {
            assert_eq!(rest.len(), 2, "{field:?}");
            (
                id_part
                    .strip_suffix(';')
                    .unwrap_or_else(|| panic!("no ';' before the date: {field:?}")),
                rest[1],
            )
        }
    };
    assert!(
        !id.is_empty() && id.chars().all(is_atext),
        "the id {id:?} is not an RFC 5321 Atom: {field:?}"
    );
    check_date(date_line.strip_prefix('\t').unwrap());
    id.to_string()
}

/// The Received: fields in the header section of a message.
pub fn received_count(content: &[u8]) -> usize {
    let head = match content.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &content[..i + 2],
        None => content,
    };
    head.split(|&b| b == b'\n')
        .filter(|l| l.len() >= 9 && l[..9].eq_ignore_ascii_case(b"received:"))
        .count()
}
