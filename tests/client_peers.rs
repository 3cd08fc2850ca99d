//! The client core against servers we did not write: Postfix's smtp-sink (with and without
//! PIPELINING, and as an LMTP server over TCP and a Unix socket), aiosmtpd with STARTTLS and
//! AUTH, Python's own smtpd with SMTPUTF8, ringrelay's sink with BDAT, and a scripted
//! misbehaving server for every failure the client must type correctly.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, Peer, Server, TempDir};
use ringrelay::client::auth::Mechanism;
use ringrelay::client::core::{CoreError, Timeouts};
use ringrelay::client::reply::ReplyError;
use ringrelay::client::{ClientError, ConnectOptions, SendOptions, SmtpClient, TlsOptions};

const MSG: &[u8] = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: client test\r\n\r\n.leading dot\r\nbody\r\n";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn opts() -> ConnectOptions {
    ConnectOptions {
        timeouts: Timeouts::uniform(Duration::from_secs(20)),
        ..ConnectOptions::default()
    }
}

/// Waits until something accepts TCP connections on `port`.
fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Waits (bounded) until `dir` holds `n` files; smtp-sink writes its dumps asynchronously.
fn wait_files(dir: &Path, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    while files_in(dir) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    files_in(dir)
}

fn smtp_sink(args: &[&str]) -> Peer {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    Peer::spawn("/usr/sbin/smtp-sink", &args)
}

#[test]
fn smtp_sink_with_and_without_pipelining() {
    for pipelining in [true, false] {
        let dir = TempDir::new("sink-dump");
        // smtp-sink drops to `nobody` before it writes its dumps.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let template = format!("{}/msg", dir.path().display());
        let mut args = vec!["-d", &template, "-u", "nobody"];
        if !pipelining {
            args.push("-p");
        }
        args.extend([&listen[..], "10"]);
        let _sink = smtp_sink(&args);
        wait_port(port);
        rt().block_on(async {
            let mut c = SmtpClient::connect("127.0.0.1", port, opts())
                .await
                .unwrap();
            c.ehlo(None).await.unwrap();
            assert_eq!(c.has_extn("pipelining"), pipelining);
            for _ in 0..3 {
                let refused = c
                    .sendmail(
                        "a@example.com",
                        &["b@example.com", "c@example.com"],
                        MSG,
                        &SendOptions::default(),
                    )
                    .await
                    .unwrap();
                assert!(refused.is_empty());
            }
            c.quit().await.unwrap();
        });
        assert_eq!(wait_files(dir.path(), 3), 3, "pipelining={pipelining}");
    }
}

#[test]
fn lmtp_over_tcp_and_unix_socket() {
    let dir = TempDir::new("lmtp");
    let port = free_port();
    let tcp = format!("127.0.0.1:{port}");
    let sock = dir.join("lmtp.sock");
    let unix = format!("unix:{}", sock.display());
    let _a = smtp_sink(&["-L", "-u", "nobody", &tcp, "10"]);
    let _b = smtp_sink(&["-L", "-u", "nobody", &unix, "10"]);
    wait_port(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let lmtp = ConnectOptions {
        lmtp: true,
        ..opts()
    };
    rt().block_on(async {
        let mut c = SmtpClient::connect("127.0.0.1", port, lmtp.clone())
            .await
            .unwrap();
        let refused = c
            .sendmail(
                "a@x.example",
                &["b@x.example", "c@x.example"],
                MSG,
                &SendOptions::default(),
            )
            .await
            .unwrap();
        assert!(refused.is_empty());
        c.quit().await.unwrap();
        let mut u = SmtpClient::connect_unix(&sock, lmtp).await.unwrap();
        let refused = u
            .sendmail(
                "a@x.example",
                &["b@x.example"],
                MSG,
                &SendOptions::default(),
            )
            .await
            .unwrap();
        assert!(refused.is_empty());
        u.quit().await.unwrap();
    });
}

fn sha256(data: &[u8]) -> String {
    let out = Command::new(common::python())
        .args([
            "-c",
            "import hashlib,sys;print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn aiosmtpd_starttls_and_auth() {
    let dir = TempDir::new("tls");
    let (cert, key) = common::test_certificate(&dir);
    let port = free_port();
    let tls_port = free_port();
    let mut server = Peer::python(
        "aiosmtpd_server.py",
        &[
            port.to_string(),
            cert.display().to_string(),
            key.display().to_string(),
            tls_port.to_string(),
        ],
    );
    server.wait_for_line("ready", Duration::from_secs(20));
    let tls = TlsOptions {
        ca_file: Some(cert.clone()),
        ..TlsOptions::default()
    };
    rt().block_on(async {
        let mut c = SmtpClient::connect("127.0.0.1", port, opts())
            .await
            .unwrap();
        c.ehlo(None).await.unwrap();
        assert!(
            !c.has_extn("auth"),
            "aiosmtpd offers AUTH only after STARTTLS"
        );
        assert!(matches!(
            c.login("user", "secret").await,
            Err(ClientError::NotSupported(_))
        ));
        c.starttls(&tls).await.unwrap();
        assert!(c.is_tls() && c.has_extn("auth"));
        c.login("user", "secret").await.unwrap();
        let refused = c
            .sendmail(
                "a@example.com",
                &["b@example.com"],
                MSG,
                &SendOptions::default(),
            )
            .await
            .unwrap();
        assert!(refused.is_empty());
        c.quit().await.unwrap();

        let mut l = SmtpClient::connect("127.0.0.1", port, opts())
            .await
            .unwrap();
        l.starttls(&tls).await.unwrap();
        l.auth(Mechanism::Login, "user", "secret", true)
            .await
            .unwrap();
        l.quit().await.unwrap();

        let mut bad = SmtpClient::connect("127.0.0.1", port, opts())
            .await
            .unwrap();
        bad.starttls(&tls).await.unwrap();
        let e = bad.login("user", "wrong").await;
        assert!(matches!(e, Err(ClientError::Authentication(_))), "{e:?}");

        // SMTPS: TLS from the first byte (smtplib's SMTP_SSL).
        let smtps = ConnectOptions {
            implicit_tls: Some(tls.clone()),
            ..opts()
        };
        let mut implicit = SmtpClient::connect("127.0.0.1", tls_port, smtps)
            .await
            .unwrap();
        assert!(implicit.is_tls());
        let refused = implicit
            .sendmail(
                "c@example.com",
                &["d@example.com"],
                MSG,
                &SendOptions::default(),
            )
            .await
            .unwrap();
        assert!(refused.is_empty());
        implicit.quit().await.unwrap();

        let mut untrusted = SmtpClient::connect("127.0.0.1", port, opts())
            .await
            .unwrap();
        let err = untrusted
            .starttls(&TlsOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
    });
    let out = {
        server.stdin.take();
        server.finish(Duration::from_secs(20))
    };
    let want = format!(
        "MESSAGE a@example.com b@example.com {} {} tls",
        sha256(MSG),
        MSG.len()
    );
    assert!(
        out.stdout.lines().any(|l| l == want),
        "{}\nwant {want}",
        out.stdout
    );
    let smtps = format!(
        "MESSAGE c@example.com d@example.com {} {} tls",
        sha256(MSG),
        MSG.len()
    );
    assert!(
        out.stdout.lines().any(|l| l == smtps),
        "{}\nwant {smtps}",
        out.stdout
    );
}

#[test]
fn python_smtpd_with_smtputf8() {
    let port = free_port();
    let args: Vec<String> = [
        "-W",
        "ignore",
        "-m",
        "smtpd",
        "-n",
        "-c",
        "DebuggingServer",
        "-u",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("127.0.0.1:{port}")])
    .collect();
    let server = Peer::spawn(&common::python(), &args);
    wait_port(port);
    let msg = "From: jörg@bücher.example\r\nTo: zoë@example.com\r\nSubject: ü\r\n\r\nGrüße\r\n"
        .as_bytes();
    rt().block_on(async {
        let mut c = SmtpClient::connect("127.0.0.1", port, opts())
            .await
            .unwrap();
        let refused = c
            .send_message(msg, None, None, &SendOptions::default())
            .await
            .unwrap();
        assert!(refused.is_empty());
        c.quit().await.unwrap();
    });
    drop(server);
}

#[test]
fn ringrelay_sink_bdat_pipelining_and_smtputf8() {
    for io in common::IO_MODES {
        let server = Server::sink(io, &["--smtputf8", "--shards", "1"]);
        let port = server.port();
        rt().block_on(async {
            let mut c = SmtpClient::connect("127.0.0.1", port, opts())
                .await
                .unwrap();
            let bdat = SendOptions {
                chunking: true,
                ..SendOptions::default()
            };
            let chunks =
                (0..50).map(|i| bytes::Bytes::from(format!("line {i} of a streamed body\r\n")));
            let refused = c
                .send_chunks("a@x.example", &["b@x.example"], chunks, None, &bdat)
                .await
                .unwrap();
            assert!(refused.is_empty());
            c.sendmail(
                "jörg@x.example",
                &["zoë@x.example"],
                MSG,
                &SendOptions::default(),
            )
            .await
            .unwrap();
            c.sendmail("a@x.example", &["b@x.example"], b"", &bdat)
                .await
                .unwrap();
            c.quit().await.unwrap();
        });
        let summary = server.stop().sink_summary();
        assert_eq!(summary.messages, 3, "{io}");
    }
}

fn scripted(mode: &str) -> (Peer, u16) {
    let port = free_port();
    let mut p = Peer::python("scripted_smtp.py", &[port.to_string(), mode.to_string()]);
    p.wait_for_line("ready", Duration::from_secs(20));
    (p, port)
}

#[test]
fn failures_are_typed() {
    rt().block_on(async {
        let (_p, port) = scripted("refuse-sender");
        let mut c = SmtpClient::connect("127.0.0.1", port, opts())
            .await
            .unwrap();
        let e = c
            .sendmail("a@x", &["b@x"], MSG, &SendOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ClientError::SenderRefused { reply, .. } if reply.code() == 550),
            "{e:?}"
        );

        let (_p, port) = scripted("refuse-rcpt");
        let mut c = SmtpClient::connect("127.0.0.1", port, opts())
            .await
            .unwrap();
        let refused = c
            .sendmail("a@x", &["good@x", "bad@x"], MSG, &SendOptions::default())
            .await
            .unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, "bad@x");
        assert_eq!(refused[0].1.code(), 550);
        let e = c
            .sendmail("a@x", &["bad1@x", "bad2@x"], MSG, &SendOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ClientError::RecipientsRefused(r) if r.len() == 2),
            "{e:?}"
        );
        let ok = c
            .sendmail("a@x", &["good@x"], MSG, &SendOptions::default())
            .await
            .unwrap();
        assert!(
            ok.is_empty(),
            "the connection is still usable after a refusal"
        );

        let (_p, port) = scripted("drop-mid-data");
        let mut c = SmtpClient::connect("127.0.0.1", port, opts())
            .await
            .unwrap();
        let big = vec![b'x'; 200_000];
        let e = c
            .sendmail("a@x", &["b@x"], &big, &SendOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(e, ClientError::ServerDisconnected | ClientError::Io(_)),
            "{e:?}"
        );

        let (_p, port) = scripted("silent");
        let quick = ConnectOptions {
            timeouts: Timeouts::uniform(Duration::from_millis(500)),
            ..opts()
        };
        let mut c = SmtpClient::connect("127.0.0.1", port, quick).await.unwrap();
        let e = c.ehlo(None).await.unwrap_err();
        assert!(
            matches!(e, ClientError::Protocol(CoreError::Timeout(_))),
            "{e:?}"
        );

        let (_p, port) = scripted("garbage");
        let mut c = SmtpClient::connect("127.0.0.1", port, opts())
            .await
            .unwrap();
        let e = c.ehlo(None).await.unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Protocol(CoreError::Reply(ReplyError::Malformed(_)))
            ),
            "{e:?}"
        );

        let (_p, port) = scripted("421-rcpt");
        let mut c = SmtpClient::connect("127.0.0.1", port, opts())
            .await
            .unwrap();
        let e = c
            .sendmail("a@x", &["b@x"], MSG, &SendOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, ClientError::RecipientsRefused(r) if r[0].1.code() == 421),
            "{e:?}"
        );

        // A server that stops reading mid-DATA: the write times out (data-block timeout).
        let (_p, port) = scripted("stall-data");
        let quick = ConnectOptions {
            timeouts: Timeouts::uniform(Duration::from_secs(1)),
            ..opts()
        };
        let mut c = SmtpClient::connect("127.0.0.1", port, quick).await.unwrap();
        let huge = vec![b'x'; 64 << 20];
        let e = c
            .sendmail("a@x", &["b@x"], &huge, &SendOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(e, ClientError::Protocol(CoreError::WriteTimeout)),
            "{e:?}"
        );

        let e = SmtpClient::connect("127.0.0.1", free_port(), opts())
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    });
}

#[test]
fn send_command_exit_codes() {
    let dir = TempDir::new("send-cmd");
    let file = dir.write(
        "msg.eml",
        b"From: a@x\nTo: good@x\nSubject: s\n\nbody line\n",
    );
    let (_p, port) = scripted("refuse-rcpt");
    let server = format!("127.0.0.1:{port}");
    let run = |extra: &[&str]| {
        Command::new(common::BIN)
            .args(["send", "--server", &server])
            .args(extra)
            .arg(&file)
            .output()
            .unwrap()
    };
    let ok = run(&[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let partial = run(&["--from", "a@x", "--to", "good@x", "--to", "bad@x"]);
    assert!(partial.status.success());
    assert!(String::from_utf8_lossy(&partial.stderr).contains("recipient refused: bad@x"));
    let all = run(&["--from", "a@x", "--to", "bad@x"]);
    assert_eq!(all.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&all.stderr).contains("550"),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
}
