//! SIGHUP reloads without dropping a connection: a swapped STARTTLS certificate reaches new
//! sessions while a TLS session opened before it goes on (Python smtplib on both); the
//! relay's networks and upstreams change from an edited config file; a broken certificate or
//! config file is refused with a clear line and the old settings stay.

mod common;
mod relay_common;

use common::*;
use relay_common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn openssl_cert(dir: &TempDir, name: &str, cn: &str) -> (String, String) {
    let cert = dir.join(&format!("{name}.crt"));
    let key = dir.join(&format!("{name}.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", &format!("/CN={cn}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

/// Sends SIGHUP and waits for the reload's line on stderr (the `n`-th such line).
fn hup(server: &Server, n: usize) -> String {
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let err = server.stderr();
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("ringrelay: SIGHUP:"))
            .collect();
        if lines.len() >= n {
            return lines[n - 1].to_string();
        }
        assert!(Instant::now() < deadline, "no reload line: {err}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_new_certificate_reaches_new_sessions_and_spares_open_ones() {
    for io in IO_MODES {
        let dir = TempDir::new("reload-tls");
        let (cert, key) = openssl_cert(&dir, "live", "one.example");
        let (cert2, key2) = openssl_cert(&dir, "next", "two.example");
        let mut server = Server::sink(io, &["--tls-cert", &cert, "--tls-key", &key]);
        let mut client = Peer::python(
            "tls_reload_client.py",
            &[
                server.port().to_string(),
                dir.path().to_string_lossy().into_owned(),
            ],
        );
        client.wait_for_line("A CN=one.example", Duration::from_secs(30));
        // A broken certificate file is refused whole; the old one stays.
        std::fs::write(&cert, "not a certificate\n").unwrap();
        let line = hup(&server, 1);
        assert!(line.contains("reload refused"), "{io}: {line}");
        // The new pair in place: reloaded.
        std::fs::copy(&cert2, &cert).unwrap();
        std::fs::copy(&key2, &key).unwrap();
        let line = hup(&server, 2);
        assert!(
            line.contains("reloaded") && line.contains("STARTTLS"),
            "{io}: {line}"
        );
        assert!(server.running());
        client.send_line("go");
        client.wait_for_line("B CN=two.example", Duration::from_secs(30));
        client.wait_for_line("A sent", Duration::from_secs(30));
        client.wait_for_line("B sent", Duration::from_secs(30));
        client
            .finish(Duration::from_secs(30))
            .assert_success("tls_reload_client.py");
        let stopped = server.stop();
        stopped.assert_success();
        assert_eq!(stopped.sink_summary().messages, 2, "{io}");
    }
}

fn write_config(path: &std::path::Path, networks: &str, upstream: u16) {
    std::fs::write(
        path,
        format!("[proxy]\nupstream = [\"127.0.0.1:{upstream}\"]\nrelay_networks = [{networks}]\n"),
    )
    .unwrap();
}

/// Relays from 127.0.0.2 once a reload lets it, to the upstream the edited file names.
#[test]
fn relay_networks_and_upstreams_change_on_reload() {
    let first = Recorder::start(&[]);
    let second = Recorder::start(&[]);
    let dir = TempDir::new("reload-relay");
    let config = dir.join("ringrelay.toml");
    write_config(&config, "\"127.0.0.1/32\"", first.port);
    let server = Server::mode(
        "proxy",
        "uring",
        &["--config", config.to_str().unwrap(), "--shards", "2"],
    );
    let send = |from: &str, token: &str| {
        let mut c = Client::connect_from(Some(from), server.port());
        c.ehlo("reload.example");
        c.ok("MAIL FROM:<a@example.com>");
        let (code, line) = c.cmd("RCPT TO:<b@example.com>");
        if code == 250 {
            let (code, line) = c.data(&tagged(token));
            assert_eq!(code, 250, "{line}");
        }
        c.quit();
        (code, line)
    };
    assert_eq!(send("127.0.0.2", "before").0, 554);
    assert_eq!(send("127.0.0.1", "to-first").0, 250);
    write_config(&config, "\"127.0.0.1/32\", \"127.0.0.2/32\"", second.port);
    let line = hup(&server, 1);
    assert!(
        line.contains("reloaded") && line.contains("relay networks"),
        "{line}"
    );
    // Every shard sees it (several connections land on both shards).
    for i in 0..4 {
        assert_eq!(send("127.0.0.2", &format!("after-{i}")).0, 250);
    }
    // A broken file: refused, the reloaded settings stay.
    std::fs::write(&config, "[proxy\nupstream = 1\n").unwrap();
    let line = hup(&server, 2);
    assert!(line.contains("reload refused"), "{line}");
    assert_eq!(send("127.0.0.2", "still").0, 250);
    server.stop().assert_success();
    let one = first.finish();
    let two = second.finish();
    assert_eq!(one.len(), 1, "only the message before the reload");
    assert_eq!(
        two.len(),
        5,
        "every message after it went to the new upstream"
    );
}
