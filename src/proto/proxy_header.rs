//! The PROXY protocol header, versions 1 (text) and 2 (binary), as HAProxy's
//! `doc/proxy-protocol.txt` defines them: what a load balancer sends first on a connection to
//! say who the client really is. Sans-IO: `parse` looks at the octets received so far and
//! says "more", "this is the header, N octets long, and it names this client", or why the
//! connection must be closed. It never guesses: input that is not a PROXY header is an error
//! (the listener requires one), and so is anything malformed or longer than the limits.
//!
//! Version 2's LOCAL command (a balancer's own health check) and the UNKNOWN / UNSPEC forms
//! carry no client: the connection's real addresses apply. TLVs after the addresses are
//! skipped. UDP is refused (this is a TCP service).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Version 2's twelve-octet signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, CRLF included (the specification's 107).
pub const V1_MAX: usize = 107;
/// The most address and TLV octets a version 2 header may carry here (the specification
/// allows 65535; HAProxy's TLVs — ALPN, authority, unique id, SSL — fit well within this).
pub const V2_MAX_PAYLOAD: usize = 2048;

/// Who the header says the client is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxied {
    /// A proxied TCP connection from `source` to `destination`.
    Tcp {
        /// The client.
        source: SocketAddr,
        /// The address the client connected to (the balancer's front end).
        destination: SocketAddr,
    },
    /// Version 2 LOCAL: the sender's own connection (a health check); use the real addresses.
    Local,
    /// Version 1 UNKNOWN, or version 2 UNSPEC or an AF_UNIX pair: no client address to use.
    Unknown,
}

/// The outcome of looking at a connection's first octets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A prefix of a header so far: read more.
    Incomplete,
    /// A complete header of `len` octets (what follows it is the client's SMTP input).
    Header {
        /// Octets the header took.
        len: usize,
        /// What it says.
        proxied: Proxied,
    },
}

/// Why a connection's first octets are not an acceptable PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The input does not start like a PROXY header of either version.
    #[error("no PROXY protocol header")]
    NotProxy,
    /// It starts like one but breaks the format.
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    /// Longer than the limits (`V1_MAX`, `V2_MAX_PAYLOAD`).
    #[error("PROXY header too long")]
    TooLong,
    /// Well-formed, but for a transport this service does not take (UDP).
    #[error("PROXY header for an unsupported transport: {0}")]
    Unsupported(&'static str),
}

/// Parses the header at the start of `input` (everything received so far).
pub fn parse(input: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    const V1_PREFIX: &[u8] = b"PROXY ";
    let n = input.len().min(V2_SIGNATURE.len());
    if input[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Ok(Parsed::Incomplete)
        } else {
            parse_v2(input)
        };
    }
    let n = input.len().min(V1_PREFIX.len());
    if input[..n] == V1_PREFIX[..n] {
        return if n < V1_PREFIX.len() {
            Ok(Parsed::Incomplete)
        } else {
            parse_v1(input)
        };
    }
    Err(ProxyHeaderError::NotProxy)
}

fn parse_v1(input: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let window = &input[..input.len().min(V1_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if input.len() >= V1_MAX {
            Err(ProxyHeaderError::TooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    if window[cr] != b'\r' {
        return Err(ProxyHeaderError::Malformed("line ends without CR"));
    }
    match window.get(cr + 1) {
        None if input.len() >= V1_MAX => return Err(ProxyHeaderError::TooLong),
        None => return Ok(Parsed::Incomplete),
        Some(b'\n') => {}
        Some(_) => return Err(ProxyHeaderError::Malformed("CR without LF")),
    }
    let len = cr + 2;
    let line =
        std::str::from_utf8(&input[6..cr]).map_err(|_| ProxyHeaderError::Malformed("not ASCII"))?;
    let mut fields = line.split(' ');
    let proto = fields.next().unwrap_or("");
    if proto == "UNKNOWN" {
        // "the receiver must ignore anything presented before the CRLF"
        return Ok(Parsed::Header {
            len,
            proxied: Proxied::Unknown,
        });
    }
    let v6 = match proto {
        "TCP4" => false,
        "TCP6" => true,
        _ => {
            return Err(ProxyHeaderError::Malformed(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let parts: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = parts[..] else {
        return Err(ProxyHeaderError::Malformed(
            "expected four fields after the protocol",
        ));
    };
    let ip = |s: &str| -> Result<IpAddr, ProxyHeaderError> {
        let ip = if v6 {
            s.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            s.parse::<Ipv4Addr>().map(IpAddr::V4)
        };
        ip.map_err(|_| ProxyHeaderError::Malformed("bad address"))
    };
    let port = |s: &str| -> Result<u16, ProxyHeaderError> {
        let ok = !s.is_empty()
            && s.len() <= 5
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        ok.then(|| s.parse::<u16>().ok())
            .flatten()
            .ok_or(ProxyHeaderError::Malformed("bad port"))
    };
    Ok(Parsed::Header {
        len,
        proxied: Proxied::Tcp {
            source: SocketAddr::new(ip(src)?, port(sport)?),
            destination: SocketAddr::new(ip(dst)?, port(dport)?),
        },
    })
}

fn parse_v2(input: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    if input.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let (ver_cmd, fam) = (input[12], input[13]);
    if ver_cmd >> 4 != 2 {
        return Err(ProxyHeaderError::Malformed("version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => {
            return Err(ProxyHeaderError::Malformed(
                "command is neither LOCAL nor PROXY",
            ))
        }
    };
    let payload = usize::from(u16::from_be_bytes([input[14], input[15]]));
    if payload > V2_MAX_PAYLOAD {
        return Err(ProxyHeaderError::TooLong);
    }
    let len = 16 + payload;
    if input.len() < len {
        return Ok(Parsed::Incomplete);
    }
    if local {
        return Ok(Parsed::Header {
            len,
            proxied: Proxied::Local,
        });
    }
    let body = &input[16..len];
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let proxied = match fam {
        0x00 => Proxied::Unknown,
        0x11 => {
            if body.len() < 12 {
                return Err(ProxyHeaderError::Malformed("IPv4 addresses cut short"));
            }
            let src = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let dst = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
            Proxied::Tcp {
                source: SocketAddr::new(src.into(), port(&body[8..])),
                destination: SocketAddr::new(dst.into(), port(&body[10..])),
            }
        }
        0x21 => {
            if body.len() < 36 {
                return Err(ProxyHeaderError::Malformed("IPv6 addresses cut short"));
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            let mut b = [0u8; 16];
            b.copy_from_slice(&body[16..32]);
            Proxied::Tcp {
                source: SocketAddr::new(Ipv6Addr::from(a).into(), port(&body[32..])),
                destination: SocketAddr::new(Ipv6Addr::from(b).into(), port(&body[34..])),
            }
        }
        0x12 | 0x22 => return Err(ProxyHeaderError::Unsupported("UDP")),
        // AF_UNIX addresses name no IP client: the real addresses apply.
        0x31 | 0x32 => Proxied::Unknown,
        _ => return Err(ProxyHeaderError::Malformed("unknown address family")),
    };
    Ok(Parsed::Header { len, proxied })
}

/// A version 1 header for `source` → `destination` (both IPv4 or both IPv6), for tests and
/// clients that speak PROXY.
pub fn v1_header(source: SocketAddr, destination: SocketAddr) -> String {
    let proto = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
}

/// A version 2 PROXY header for `source` → `destination` (both IPv4 or both IPv6), followed
/// by `tlvs` (raw TLV octets).
pub fn v2_header(source: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    let mut body = Vec::new();
    let fam = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
            0x11
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            body.extend_from_slice(&v6(s).octets());
            body.extend_from_slice(&v6(d).octets());
            0x21
        }
    };
    body.extend_from_slice(&source.port().to_be_bytes());
    body.extend_from_slice(&destination.port().to_be_bytes());
    body.extend_from_slice(tlvs);
    out.push(0x21);
    out.push(fam);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\nEHLO x\r\n";
        assert_eq!(
            parse(h),
            Ok(Parsed::Header {
                len: 44,
                proxied: Proxied::Tcp {
                    source: sa("192.0.2.7:56324"),
                    destination: sa("198.51.100.1:25"),
                }
            })
        );
        let h = v1_header(sa("[2001:db8::7]:1000"), sa("[2001:db8::1]:25"));
        let Ok(Parsed::Header { len, proxied }) = parse(h.as_bytes()) else {
            panic!()
        };
        assert_eq!(len, h.len());
        assert!(
            matches!(proxied, Proxied::Tcp { source, .. } if source == sa("[2001:db8::7]:1000"))
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN whatever\r\n"),
            Ok(Parsed::Header {
                len: 24,
                proxied: Proxied::Unknown
            })
        );
    }

    #[test]
    fn v1_errors_and_prefixes() {
        let good = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n";
        for cut in 0..good.len() {
            assert_eq!(parse(&good[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
        }
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
            b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX",
        ];
        for b in bad {
            assert!(
                matches!(parse(b), Err(ProxyHeaderError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        assert_eq!(parse(b"EHLO x\r\n"), Err(ProxyHeaderError::NotProxy));
        assert_eq!(parse(b"proxy TCP4"), Err(ProxyHeaderError::NotProxy));
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(parse(&long), Err(ProxyHeaderError::TooLong));
    }

    #[test]
    fn v2_proxy_local_tlvs_and_limits() {
        let tlv = [0x05, 0x00, 0x03, b'a', b'b', b'c'];
        let h = v2_header(sa("192.0.2.7:56324"), sa("198.51.100.1:25"), &tlv);
        let mut input = h.clone();
        input.extend_from_slice(b"EHLO x\r\n");
        assert_eq!(
            parse(&input),
            Ok(Parsed::Header {
                len: h.len(),
                proxied: Proxied::Tcp {
                    source: sa("192.0.2.7:56324"),
                    destination: sa("198.51.100.1:25"),
                }
            })
        );
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
        }
        let h6 = v2_header(sa("[2001:db8::7]:1"), sa("[2001:db8::1]:25"), &[]);
        assert!(matches!(
            parse(&h6),
            Ok(Parsed::Header { proxied: Proxied::Tcp { source, .. }, .. }) if source == sa("[2001:db8::7]:1")
        ));
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(
            parse(&local),
            Ok(Parsed::Header {
                len: 16,
                proxied: Proxied::Local
            })
        );
        let mut udp = h.clone();
        udp[13] = 0x12;
        assert_eq!(parse(&udp), Err(ProxyHeaderError::Unsupported("UDP")));
        let mut v3 = h.clone();
        v3[12] = 0x31;
        assert!(matches!(parse(&v3), Err(ProxyHeaderError::Malformed(_))));
        let mut short = h.clone();
        short[15] = 4;
        assert!(matches!(parse(&short), Err(ProxyHeaderError::Malformed(_))));
        let mut huge = h;
        huge[14] = 0xff;
        assert_eq!(parse(&huge), Err(ProxyHeaderError::TooLong));
    }
}
