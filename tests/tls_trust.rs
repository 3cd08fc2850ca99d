//! TLS trust as OpenSSL-based clients have it: the certificate the standard one-liner makes
//! (`openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost`: self-signed, CA:TRUE, no
//! subjectAltName), given with `--tls-ca`, is trusted as presented by `ringrelay send`, by the
//! relay toward its upstream (`--upstream-tls-ca`) and by ringload, against ringrelay's own
//! STARTTLS sink; a different certificate, a wrong name or a certificate outside its validity
//! is refused, with a sentence that names the host, what failed and the flag that changes it.
//! A proper CA chain still verifies strictly. `send -v` shows the TLS version, cipher and peer
//! subject. Certificates are made with openssl at test time; loopback only, bounded in time.

mod common;
mod relay_common;
mod ringload_run;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ringrelay::client::cert_info::CertInfo;
use ringrelay::client::TlsOptions;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use common::*;
use relay_common::*;

/// How long one `ringrelay send` may take.
const SEND_LIMIT: Duration = Duration::from_secs(30);

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed by scripts/install-test-deps.sh");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The standard one-liner, as a new user types it: `NAME.pem` and `NAME.key`.
fn one_liner(dir: &TempDir, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(&format!("{name}.pem")),
        dir.join(&format!("{name}.key")),
    );
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        k,
        "-out",
        c,
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
    ]);
    (cert, key)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A STARTTLS sink with `cert` and `key`.
fn tls_sink(io: &str, cert: &Path, key: &Path) -> Server {
    Server::sink(io, &["--tls-cert", path(cert), "--tls-key", path(key)])
}

/// `ringrelay send --starttls` of one message to `server`, with `extra` flags.
fn send(dir: &TempDir, server: &str, extra: &[&str]) -> PeerOutput {
    let msg = dir.write("msg.eml", b"Subject: trust\r\n\r\nover TLS\r\n");
    let mut args: Vec<String> = ["send", "--server", server, "--starttls"]
        .iter()
        .chain(["--from", "a@example.com", "--to", "b@example.com"].iter())
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    args.push(path(&msg).into());
    Peer::spawn(BIN, &args).finish(SEND_LIMIT)
}

/// The sentence for a self-signed certificate that is not the one given.
fn not_trusted(peer: &str, flag: &str) -> String {
    format!(
        "TLS with {peer} failed: the server's certificate is not trusted (a self-signed or CA \
         certificate that is not in the CA file); give that very certificate with {flag} FILE \
         to trust it as presented"
    )
}

#[test]
fn send_trusts_the_one_liner_certificate_given_with_tls_ca() {
    let dir = TempDir::new("tls-trust-send");
    let (cert, key) = one_liner(&dir, "cert");
    let (other, _) = one_liner(&dir, "other");
    for io in IO_MODES {
        let sink = tls_sink(io, &cert, &key);
        let server = format!("localhost:{}", sink.port());
        let out = send(&dir, &server, &["--tls-ca", path(&cert), "-v"]);
        out.assert_success("send with the one-liner certificate");
        assert!(
            out.stderr.contains("tls: TLSv1.3, cipher TLS13_")
                && out.stderr.contains(", peer subject \"CN=localhost\"\n"),
            "{io}: -v shows no TLS summary:\n{}",
            out.stderr
        );
        // Another self-signed certificate, or none, is not trusted.
        for extra in [&["--tls-ca", path(&other)][..], &[]] {
            let out = send(&dir, &server, extra);
            assert_eq!(out.status.code(), Some(1), "{io} {extra:?}: {}", out.stderr);
            let want = format!("ringrelay send: {}\n", not_trusted(&server, "--tls-ca"));
            assert_eq!(out.stderr, want, "{io} {extra:?}");
        }
        // The right certificate, the wrong name: 127.0.0.1 is not localhost.
        let by_ip = format!("127.0.0.1:{}", sink.port());
        let out = send(&dir, &by_ip, &["--tls-ca", path(&cert)]);
        assert_eq!(out.status.code(), Some(1), "{io}: {}", out.stderr);
        let want = format!(
            "ringrelay send: TLS with {by_ip} failed: the server's certificate is not valid for \
             127.0.0.1 (it is for localhost); connect by a name it holds, or give one with \
             --tls-server-name NAME\n"
        );
        assert_eq!(out.stderr, want, "{io}");
        let named = ["--tls-ca", path(&cert), "--tls-server-name", "localhost"];
        send(&dir, &by_ip, &named).assert_success("send by address, named localhost");
        let stopped = sink.stop();
        stopped.assert_success();
        assert_eq!(stopped.sink_summary().messages, 2, "{io}");
    }
}

#[test]
fn a_ca_chain_still_verifies_strictly() {
    let dir = TempDir::new("tls-trust-chain");
    let (ca, ca_key) = one_liner(&dir, "ca");
    let (leaf, leaf_key, csr) = (
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
        dir.join("leaf.csr"),
    );
    let ext = dir.write("ext.cnf", b"subjectAltName=DNS:localhost\n");
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        path(&leaf_key),
        "-out",
        path(&csr),
        "-subj",
        "/CN=mail.example",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        path(&csr),
        "-CA",
        path(&ca),
        "-CAkey",
        path(&ca_key),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        path(&ext),
        "-out",
        path(&leaf),
    ]);
    let sink = tls_sink("epoll", &leaf, &leaf_key);
    let server = format!("localhost:{}", sink.port());
    send(&dir, &server, &["--tls-ca", path(&ca)]).assert_success("send through a CA chain");
    // A name the leaf does not hold is refused even though its CA is trusted (its common
    // name does not count where it has a subjectAltName).
    let named = ["--tls-ca", path(&ca), "--tls-server-name", "mail.example"];
    let out = send(&dir, &server, &named);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "failed: the server's certificate is not valid for mail.example (it is for localhost)"
        ),
        "{}",
        out.stderr
    );
    // The leaf alone is not a root: webpki's verdict stands (only a CA-as-leaf refusal of a
    // certificate given as it is presented is overridden).
    let out = send(&dir, &server, &["--tls-ca", path(&leaf)]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let want = format!("ringrelay send: TLS with {server} failed: the server's certificate ");
    assert!(out.stderr.starts_with(&want), "{}", out.stderr);
    let stopped = sink.stop();
    stopped.assert_success();
    assert_eq!(stopped.sink_summary().messages, 1);
}

#[test]
fn trust_as_presented_still_checks_name_and_validity() {
    let dir = TempDir::new("tls-trust-verifier");
    let (cert, _) = one_liner(&dir, "cert");
    let der = CertificateDer::from_pem_file(&cert).unwrap();
    let info = CertInfo::parse(&der).unwrap();
    let options = TlsOptions {
        ca_file: Some(cert.clone()),
        ..TlsOptions::default()
    };
    let verifier = options.verifier().unwrap();
    let localhost = ServerName::try_from("localhost").unwrap();
    let at = |secs: i64| UnixTime::since_unix_epoch(Duration::from_secs(secs as u64));
    let verify =
        |name: &ServerName<'_>, now| verifier.verify_server_cert(&der, &[], name, &[], now);
    assert!(verify(&localhost, UnixTime::now()).is_ok());
    let other = ServerName::try_from("other.example").unwrap();
    let e = verify(&other, UnixTime::now()).unwrap_err();
    assert!(
        e.to_string()
            .contains("not valid for name \"other.example\""),
        "{e}"
    );
    let e = verify(&localhost, at(info.not_after + 60)).unwrap_err();
    assert!(e.to_string().contains("certificate expired"), "{e}");
    let e = verify(&localhost, at(info.not_before - 60)).unwrap_err();
    assert!(e.to_string().contains("not valid yet"), "{e}");
}

#[test]
fn certificate_fields_are_read_as_openssl_wrote_them() {
    let dir = TempDir::new("tls-trust-fields");
    let (cert, key) = (dir.join("c.pem"), dir.join("c.key"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        path(&key),
        "-out",
        path(&cert),
        "-days",
        "2",
        "-subj",
        "/C=DE/O=Example Mail/CN=mx.example",
        "-addext",
        "subjectAltName=DNS:mx.example,DNS:localhost,IP:127.0.0.1,IP:::1",
    ]);
    let der = CertificateDer::from_pem_file(&cert).unwrap();
    let info = CertInfo::parse(&der).unwrap();
    assert_eq!(info.subject, "C=DE, O=Example Mail, CN=mx.example");
    assert_eq!(info.common_name.as_deref(), Some("mx.example"));
    assert_eq!(info.dns_names, ["mx.example", "localhost"]);
    let ips: Vec<String> = info.ip_addresses.iter().map(|ip| ip.to_string()).collect();
    assert_eq!(ips, ["127.0.0.1", "::1"]);
    assert_eq!(info.not_after - info.not_before, 2 * 86_400);
    let now = UnixTime::now().as_secs() as i64;
    assert!((info.not_before - now).abs() < 600, "{info:?}");
}

#[test]
fn the_relay_trusts_the_one_liner_certificate_upstream() {
    let dir = TempDir::new("tls-trust-relay");
    let (cert, key) = one_liner(&dir, "cert");
    let (other, _) = one_liner(&dir, "other");
    let upstream = tls_sink("epoll", &cert, &key);
    let peer = format!("localhost:{}", upstream.port());
    for (ca, want) in [(&cert, 250), (&other, 451)] {
        let args = [
            "--upstream",
            &peer,
            "--upstream-tls",
            "required",
            "--upstream-tls-ca",
            path(ca),
        ];
        let relay = proxy("epoll", &[], &args);
        let mut c = Client::connect(relay.port());
        c.ehlo("client.example");
        // The upstream connection, and its TLS, is opened at MAIL.
        let (mut code, mut line) = c.cmd("MAIL FROM:<a@example.com>");
        if code == 250 {
            c.ok("RCPT TO:<b@example.com>");
            (code, line) = c.data(&tagged("tls"));
        }
        c.quit();
        let stopped = relay.stop();
        stopped.assert_success();
        assert_eq!(code, want, "{line}\n{}", stopped.stderr);
        if want == 451 {
            let sentence = not_trusted(&peer, "--upstream-tls-ca");
            assert!(stopped.stderr.contains(&sentence), "{}", stopped.stderr);
        }
    }
    let stopped = upstream.stop();
    stopped.assert_success();
    assert_eq!(stopped.sink_summary().messages, 1);
}

#[test]
fn ringload_trusts_the_one_liner_certificate() {
    let dir = TempDir::new("tls-trust-ringload");
    let (cert, key) = one_liner(&dir, "cert");
    let (other, _) = one_liner(&dir, "other");
    let sink = tls_sink("epoll", &cert, &key);
    let target = format!("127.0.0.1:{}", sink.port());
    let run = |ca: &Path| {
        ringload_run::ringload(&[
            "-t",
            &target,
            "--starttls",
            "--tls-ca",
            path(ca),
            "--tls-server-name",
            "localhost",
            "-s",
            "2",
            "-m",
            "20",
            "--max-errors",
            "4",
            "--threads",
            "1",
        ])
    };
    let o = run(&cert);
    let t = ringload_run::text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("20 acknowledged, 0 failed"), "{t}");
    let o = run(&other);
    let t = ringload_run::text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains(&not_trusted(&target, "--tls-ca")), "{t}");
    let stopped = sink.stop();
    stopped.assert_success();
    assert_eq!(stopped.sink_summary().messages, 20);
}
