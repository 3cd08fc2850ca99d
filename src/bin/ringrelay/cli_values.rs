//! Values of the command line and the config file that are more than a number or a path:
//! sizes with binary suffixes (`10M`) and listen addresses that may name a host
//! (`localhost:2525`). It parses and resolves; it never listens (the server does).
//!
//! A size is octets, optionally followed by `k`, `M` or `G` (also `KiB`, `MiB`, `GiB`, any
//! case): binary multiples, 1024, 1024² and 1024³. In the config file a size may be an integer
//! or such a string.
//!
//! A listen address is `IP:PORT`, `[IPv6]:PORT` or `NAME:PORT`. A name is resolved once, at
//! start, and listened on at every address it resolves to (`localhost:2525` gives 127.0.0.1
//! and ::1 where both resolve). An address of a name that this machine cannot listen on at all
//! (its address family is missing: `EADDRNOTAVAIL` or `EAFNOSUPPORT`, such as ::1 in a
//! container without IPv6) is skipped with a line on stderr saying so; any other failure is
//! left to the server to report. A literal IP address is never skipped.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;
use socket2::{Domain, Protocol, Socket, Type};

/// Why a value could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not a size.
    #[error(
        "{0:?} is not a size: give octets, optionally with k, M or G (binary: 1k = 1024), \
         like 10M"
    )]
    Size(String),
    /// A size too large for where it goes.
    #[error("{value} is too large for {what} (at most {max})")]
    SizeRange {
        /// The option.
        what: &'static str,
        /// The size given.
        value: u64,
        /// The largest allowed.
        max: u64,
    },
    /// An address without a port.
    #[error("{0:?} has no port: give HOST:PORT, like localhost:2525 or 127.0.0.1:2525")]
    NoPort(String),
    /// `unix:` with nothing after it.
    #[error("{0:?}: give the socket's path after unix:, like unix:/run/ringrelay/smtp.sock")]
    NoPath(String),
    /// `smtpd` was given an address without a port (the sentence says which).
    #[error("{0}")]
    SmtpdNoPort(String),
    /// A port that is not a number from 0 to 65535.
    #[error("{0:?}: the port is not a number from 0 to 65535")]
    BadPort(String),
    /// A name that does not resolve.
    #[error("cannot resolve {addr}: {why}")]
    Resolve {
        /// The address as given.
        addr: String,
        /// The resolver's answer.
        why: String,
    },
    /// Every address of a name is one this machine cannot listen on.
    #[error("{0}: this machine cannot listen on any of its addresses ({1})")]
    NoUsableAddress(String, String),
}

/// A size in octets: `1048576`, `1024k`, `1M`, `1MiB`, `2G`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size as a `u32`, for `what` (the option's name) when it is larger.
    pub fn to_u32(self, what: &'static str) -> Result<u32, ValueError> {
        u32::try_from(self.0).map_err(|_| ValueError::SizeRange {
            what,
            value: self.0,
            max: u64::from(u32::MAX),
        })
    }
}

impl FromStr for ByteSize {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = || ValueError::Size(s.to_string());
        let t = s.trim();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, suffix) = t.split_at(digits);
        if num.is_empty() {
            return Err(bad());
        }
        let shift = match suffix.trim().to_ascii_lowercase().as_str() {
            "" => 0,
            "k" | "kib" => 10,
            "m" | "mib" => 20,
            "g" | "gib" => 30,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        n.checked_mul(1u64 << shift).map(ByteSize).ok_or_else(bad)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: an integer, or a string like \"10M\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{v} is not a size (negative)")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A listen address as given: a host (IP address or name) and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddr {
    /// The IP address or name, without brackets.
    pub host: String,
    /// The port (0: the kernel picks one).
    pub port: u16,
}

impl FromStr for ListenAddr {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let t = s.trim();
        if let Ok(addr) = t.parse::<SocketAddr>() {
            return Ok(ListenAddr {
                host: addr.ip().to_string(),
                port: addr.port(),
            });
        }
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (host, tail) = rest
                .split_once(']')
                .ok_or_else(|| ValueError::NoPort(s.to_string()))?;
            let port = tail
                .strip_prefix(':')
                .ok_or_else(|| ValueError::NoPort(s.to_string()))?;
            (host, port)
        } else {
            match t.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, p),
                _ => return Err(ValueError::NoPort(s.to_string())),
            }
        };
        if host.is_empty() {
            return Err(ValueError::NoPort(s.to_string()));
        }
        let port = port
            .parse()
            .map_err(|_| ValueError::BadPort(s.to_string()))?;
        Ok(ListenAddr {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl ListenAddr {
    /// The addresses to listen on: the IP address itself, or every address the name
    /// resolves to (in the resolver's order, without repeats) that this machine has an
    /// address family for. A skipped address is reported on stderr.
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, ValueError> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let resolved = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| ValueError::Resolve {
                addr: self.to_string(),
                why: e.to_string(),
            })?;
        let mut all: Vec<SocketAddr> = Vec::new();
        for a in resolved {
            if !all.contains(&a) {
                all.push(a);
            }
        }
        let mut usable = Vec::with_capacity(all.len());
        let mut skipped = Vec::new();
        for a in all {
            match unavailable(a) {
                None => usable.push(a),
                Some(why) => skipped.push(format!("{}: {why}", a.ip())),
            }
        }
        if usable.is_empty() {
            if skipped.is_empty() {
                return Err(ValueError::Resolve {
                    addr: self.to_string(),
                    why: "no address".into(),
                });
            }
            return Err(ValueError::NoUsableAddress(
                self.to_string(),
                skipped.join("; "),
            ));
        }
        for s in &skipped {
            eprintln!(
                "ringrelay: {self}: not listening on {s} (this machine has no such address \
                 family or address)"
            );
        }
        Ok(usable)
    }
}

/// A `--listen` value: a TCP address, or `unix:/path` for a Unix-domain socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// HOST:PORT.
    Inet(ListenAddr),
    /// `unix:PATH`.
    Unix(PathBuf),
}

impl FromStr for Listen {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s.trim().strip_prefix("unix:") {
            Some("") => Err(ValueError::NoPath(s.to_string())),
            Some(path) => Ok(Listen::Unix(PathBuf::from(path))),
            None => s.parse().map(Listen::Inet),
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Inet(a) => a.fmt(f),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Why this machine cannot listen on `addr`'s IP at all, if it cannot: binding a socket to
/// it (port 0) fails with `EADDRNOTAVAIL` or `EAFNOSUPPORT`. Other failures (a port in use,
/// a permission) are not this: the server reports those when it binds.
fn unavailable(addr: SocketAddr) -> Option<String> {
    let probe = SocketAddr::new(addr.ip(), 0);
    let result = Socket::new(
        Domain::for_address(probe),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .and_then(|s| {
        if probe.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.bind(&probe.into())
    });
    match result {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT)
            ) =>
        {
            Some(e.to_string())
        }
        _ => None,
    }
}

/// The value of `--metrics-listen` / `metrics_listen`: an address, or `none`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsListen {
    /// `none`: no metrics at all.
    Off,
    /// Serve them here (every address of a name).
    On(ListenAddr),
}

impl FromStr for MetricsListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("none") {
            return Ok(MetricsListen::Off);
        }
        s.parse()
            .map(MetricsListen::On)
            .map_err(|e| format!("{e}; or none for no metrics"))
    }
}

impl<'de> Deserialize<'de> for MetricsListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An address of `smtpd` (its `what`, with `example`): `host:port` as Python's smtpd
/// requires ("Bad local spec" without a port), resolved to one address, IPv4 first, as
/// Python's smtpd effectively binds `localhost`.
pub fn smtpd_addr(spec: &str, what: &str, example: &str) -> Result<SocketAddr, ValueError> {
    match spec.parse::<ListenAddr>() {
        Err(ValueError::NoPort(_)) => {
            return Err(ValueError::SmtpdNoPort(format!(
                "smtpd: {what} {spec:?} has no port: give host:port, like {example} \
                 (Python's smtpd needs one too)"
            )))
        }
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let resolve = |why: String| ValueError::Resolve {
        addr: spec.to_string(),
        why,
    };
    let addrs: Vec<SocketAddr> = spec
        .to_socket_addrs()
        .map_err(|e| resolve(e.to_string()))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| resolve("no address".into()))
}

/// Resolves every listen address, in order, without repeats: the TCP addresses, and the
/// Unix-domain socket paths.
pub fn resolve_all(addrs: &[Listen]) -> Result<(Vec<SocketAddr>, Vec<PathBuf>), ValueError> {
    let mut tcp: Vec<SocketAddr> = Vec::new();
    let mut unix: Vec<PathBuf> = Vec::new();
    for a in addrs {
        match a {
            Listen::Inet(a) => {
                for s in a.resolve()? {
                    if !tcp.contains(&s) {
                        tcp.push(s);
                    }
                }
            }
            Listen::Unix(p) => {
                if !unix.contains(p) {
                    unix.push(p.clone());
                }
            }
        }
    }
    Ok((tcp, unix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        let cases = [
            ("0", 0),
            ("512", 512),
            ("1k", 1024),
            ("1K", 1024),
            ("10M", 10 << 20),
            ("10m", 10 << 20),
            ("2G", 2 << 30),
            ("4KiB", 4096),
            ("3 MiB", 3 << 20),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(want)), "{text}");
        }
        for bad in ["", "k", "1.5M", "10MB", "-1", "1T", "99999999999G"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad:?} accepted");
        }
        assert!(ByteSize(1 << 32).to_u32("--x").is_err());
        assert_eq!(ByteSize(65536).to_u32("--x"), Ok(65536));
    }

    #[test]
    fn listen_addresses_need_a_port() {
        let ok = [
            ("127.0.0.1:2525", "127.0.0.1", 2525),
            ("[::1]:25", "::1", 25),
            ("localhost:0", "localhost", 0),
            ("mx.example:587", "mx.example", 587),
        ];
        for (text, host, port) in ok {
            let a: ListenAddr = text.parse().unwrap();
            assert_eq!((a.host.as_str(), a.port), (host, port), "{text}");
        }
        assert!(matches!(
            "localhost".parse::<ListenAddr>(),
            Err(ValueError::NoPort(_))
        ));
        assert!(matches!(
            "::1".parse::<ListenAddr>(),
            Err(ValueError::NoPort(_))
        ));
        assert!(matches!(
            "localhost:http".parse::<ListenAddr>(),
            Err(ValueError::BadPort(_))
        ));
        assert_eq!(
            "[::1]:25".parse::<ListenAddr>().unwrap().to_string(),
            "[::1]:25"
        );
    }

    #[test]
    fn an_address_this_machine_lacks_is_unavailable() {
        // TEST-NET-1 (RFC 5737): on no interface here.
        assert!(unavailable("192.0.2.1:25".parse().unwrap()).is_some());
        assert!(unavailable("127.0.0.1:25".parse().unwrap()).is_none());
    }

    #[test]
    fn a_literal_address_is_never_skipped() {
        let a: ListenAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(a.resolve().unwrap(), vec!["127.0.0.1:0".parse().unwrap()]);
    }
}
