//! Fuzzes the PROXY protocol header parser (`ringrelay::proto::proxy_header::parse`), which
//! sees attacker-controlled octets before any SMTP. Invariants, for any input:
//! - it never panics, and a header's length is within the input (and within the limits);
//! - the verdict does not depend on how the input was split: every prefix of a complete
//!   header is `Incomplete`, and the same header followed by anything parses the same;
//! - an error on a prefix stays an error on every extension of it (never "more" after "no");
//! - headers built from the first octets as addresses round-trip through v1 and v2.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use ringrelay::proto::proxy_header::{
    parse, v1_header, v2_header, Parsed, Proxied, V1_MAX, V2_MAX_PAYLOAD,
};

fn check(data: &[u8]) {
    let whole = parse(data);
    match whole {
        Ok(Parsed::Header { len, proxied }) => {
            assert!(len <= data.len());
            assert!(len <= V1_MAX.max(16 + V2_MAX_PAYLOAD));
            for cut in 0..len {
                assert_eq!(parse(&data[..cut]), Ok(Parsed::Incomplete), "prefix {cut} of {len}");
            }
            assert_eq!(parse(&data[..len]), Ok(Parsed::Header { len, proxied }));
        }
        Ok(Parsed::Incomplete) => {
            for cut in 0..data.len() {
                assert_eq!(parse(&data[..cut]), Ok(Parsed::Incomplete), "prefix {cut}");
            }
        }
        Err(_) => {
            // Once refused, more input never helps.
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n\r\n PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
            assert!(parse(&more).is_err(), "an error became something else");
        }
    }
}

fn roundtrip(data: &[u8]) {
    if data.len() < 36 {
        return;
    }
    let port = |i: usize| u16::from_be_bytes([data[i], data[i + 1]]);
    let v4 = |i: usize| IpAddr::V4(Ipv4Addr::new(data[i], data[i + 1], data[i + 2], data[i + 3]));
    let v6 = |i: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&data[i..i + 16]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    let pairs = [
        (SocketAddr::new(v4(0), port(8)), SocketAddr::new(v4(4), port(10))),
        (SocketAddr::new(v6(0), port(32)), SocketAddr::new(v6(16), port(34))),
    ];
    for (source, destination) in pairs {
        let want = Proxied::Tcp { source, destination };
        let h1 = v1_header(source, destination);
        assert_eq!(parse(h1.as_bytes()), Ok(Parsed::Header { len: h1.len(), proxied: want }));
        let h2 = v2_header(source, destination, &data[36..data.len().min(36 + 64)]);
        assert_eq!(parse(&h2), Ok(Parsed::Header { len: h2.len(), proxied: want }));
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    roundtrip(data);
});
