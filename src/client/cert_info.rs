//! The few fields of an X.509 certificate (RFC 5280) the client shows or checks itself: the
//! subject (for `send -v`, as swaks prints it), its common name, the validity period and the
//! subjectAltName DNS names and IP addresses. A minimal DER reader over the certificate rustls
//! hands us; it verifies nothing (signatures and chains are webpki's job) and gives up, with
//! `None`, on anything it does not expect.

use std::net::IpAddr;

/// What `CertInfo::parse` reads from a certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject as `C=US, O=Example, CN=mail.example` (attributes in encoded order).
    pub subject: String,
    /// The subject's (last) common name.
    pub common_name: Option<String>,
    /// Start of the validity period, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of the validity period, seconds since the Unix epoch.
    pub not_after: i64,
    /// The subjectAltName DNS names.
    pub dns_names: Vec<String>,
    /// The subjectAltName IP addresses.
    pub ip_addresses: Vec<IpAddr>,
}

/// One DER element: its tag and its contents.
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
}

/// Reads DER elements one after another from a slice.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn next(&mut self) -> Option<Tlv<'a>> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |a, &b| a << 8 | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        self.0 = &rest[len..];
        Some(Tlv {
            tag,
            body: &rest[..len],
        })
    }

    /// The next element, which must carry `tag`.
    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        self.next().filter(|t| t.tag == tag).map(|t| t.body)
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const SAN: &[u8] = &[0x55, 0x1d, 0x11];

impl CertInfo {
    /// Reads a DER certificate; `None` when it is not one this reader understands.
    pub fn parse(der: &[u8]) -> Option<CertInfo> {
        let cert = Der(der).expect(SEQUENCE)?;
        let mut tbs = Der(Der(cert).expect(SEQUENCE)?);
        if tbs.next()?.tag == 0xa0 {
            // That was the [0] version; this is the serial number.
            tbs.next()?;
        }
        tbs.expect(SEQUENCE)?; // signature algorithm
        tbs.expect(SEQUENCE)?; // issuer
        let mut validity = Der(tbs.expect(SEQUENCE)?);
        let not_before = time(&validity.next()?)?;
        let not_after = time(&validity.next()?)?;
        let (subject, common_name) = name(tbs.expect(SEQUENCE)?)?;
        tbs.expect(SEQUENCE)?; // subject public key info
        let mut info = CertInfo {
            subject,
            common_name,
            not_before,
            not_after,
            ..CertInfo::default()
        };
        while let Some(t) = tbs.next() {
            if t.tag == 0xa3 {
                info.read_extensions(Der(t.body).expect(SEQUENCE)?)?;
            }
        }
        Some(info)
    }

    fn read_extensions(&mut self, exts: &[u8]) -> Option<()> {
        let mut exts = Der(exts);
        while let Some(ext) = exts.next() {
            let mut ext = Der(ext.body);
            let id = ext.expect(OID)?;
            let mut value = ext.next()?;
            if value.tag == 0x01 {
                // critical BOOLEAN
                value = ext.next()?;
            }
            if id != SAN || value.tag != OCTET_STRING {
                continue;
            }
            let mut names = Der(Der(value.body).expect(SEQUENCE)?);
            while let Some(n) = names.next() {
                match (n.tag, n.body.len()) {
                    (0x82, _) => self
                        .dns_names
                        .push(String::from_utf8_lossy(n.body).into_owned()),
                    (0x87, 4) => {
                        let b: [u8; 4] = n.body.try_into().ok()?;
                        self.ip_addresses.push(IpAddr::from(b));
                    }
                    (0x87, 16) => {
                        let b: [u8; 16] = n.body.try_into().ok()?;
                        self.ip_addresses.push(IpAddr::from(b));
                    }
                    _ => {}
                }
            }
        }
        Some(())
    }
}

/// A Name as text, and its last common name.
fn name(der: &[u8]) -> Option<(String, Option<String>)> {
    let mut parts = Vec::new();
    let mut cn = None;
    let mut rdns = Der(der);
    while let Some(rdn) = rdns.next().filter(|t| t.tag == SET) {
        let mut atvs = Der(rdn.body);
        while let Some(atv) = atvs.next() {
            let mut atv = Der(atv.body);
            let oid = atv.expect(OID)?;
            let value = string(&atv.next()?);
            let key = attribute_name(oid);
            if key == "CN" {
                cn = Some(value.clone());
            }
            parts.push(format!("{key}={value}"));
        }
    }
    Some((parts.join(", "), cn))
}

fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC".into(),
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress".into(),
        _ => dotted(oid),
    }
}

/// An OID in dotted form.
fn dotted(oid: &[u8]) -> String {
    let mut arcs = Vec::new();
    let mut v: u64 = 0;
    for &b in oid {
        v = v << 7 | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (v / 40).min(2);
                arcs.push(first);
                arcs.push(v - first * 40);
            } else {
                arcs.push(v);
            }
            v = 0;
        }
    }
    let arcs: Vec<String> = arcs.iter().map(u64::to_string).collect();
    arcs.join(".")
}

/// A directory string as text (unknown types as `#` and hex, as OpenSSL does).
fn string(t: &Tlv<'_>) -> String {
    match t.tag {
        // UTF8String, PrintableString, IA5String, VisibleString
        0x0c | 0x13 | 0x16 | 0x1a => String::from_utf8_lossy(t.body).into_owned(),
        // T61String: Latin-1 in practice
        0x14 => t.body.iter().map(|&b| char::from(b)).collect(),
        // BMPString: UTF-16BE
        0x1e => {
            let units: Vec<u16> = t
                .body
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => {
            let hex: String = t.body.iter().map(|b| format!("{b:02x}")).collect();
            format!("#{hex}")
        }
    }
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn time(t: &Tlv<'_>) -> Option<i64> {
    let s = std::str::from_utf8(t.body).ok()?.strip_suffix('Z')?;
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (t.tag, s.len()) {
        (0x17, 12) => {
            let yy: i64 = s[..2].parse().ok()?;
            // RFC 5280 §4.1.2.5.1: 50..99 are 19xx.
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        (0x18, 14) => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    let n = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, h, m, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_unix_seconds() {
        let utc = |s: &str| {
            time(&Tlv {
                tag: 0x17,
                body: s.as_bytes(),
            })
        };
        let gen = |s: &str| {
            time(&Tlv {
                tag: 0x18,
                body: s.as_bytes(),
            })
        };
        assert_eq!(utc("700101000000Z"), Some(0));
        assert_eq!(utc("491231235959Z"), Some(2_524_607_999));
        assert_eq!(gen("20000301000000Z"), Some(951_868_800));
        assert_eq!(gen("20240229120000Z"), Some(1_709_208_000));
        assert_eq!(utc("700101000000"), None);
        assert_eq!(utc("7001010000+0Z"), None);
    }

    #[test]
    fn oids_and_strings() {
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            "1.2.840.113549"
        );
        assert_eq!(attribute_name(&[0x55, 0x04, 0x2a]), "2.5.4.42");
        let bmp = Tlv {
            tag: 0x1e,
            body: &[0, b'h', 0, b'i'],
        };
        assert_eq!(string(&bmp), "hi");
        let odd = Tlv {
            tag: 0x03,
            body: &[0xab, 0x01],
        };
        assert_eq!(string(&odd), "#ab01");
    }

    #[test]
    fn truncated_input_is_refused_not_misread() {
        assert_eq!(CertInfo::parse(&[]), None);
        assert_eq!(CertInfo::parse(&[0x30, 0x82, 0x01]), None);
        assert_eq!(CertInfo::parse(&[0x30, 0x03, 0x02, 0x01, 0x01]), None);
    }
}
