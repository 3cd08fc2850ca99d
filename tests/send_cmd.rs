//! `ringrelay send` as a new user meets it, against aiosmtpd (a recording peer that prints
//! each envelope and message): `--from`/`--to` with display names go on the wire as bare
//! mailboxes (as smtplib's parseaddr makes them); swaks-style `--header`/`--body` build the
//! message; a file that cannot be read is named in the error; on a terminal it says it is
//! reading stdin (a Python pty plays the terminal), and says nothing when stdin is a pipe.
//! Loopback only; every process is bounded in time.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(30);

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// aiosmtpd on a free port, ready.
fn recorder() -> (Peer, u16) {
    let port = free_port();
    let mut peer = Peer::python("aiosmtpd_print.py", &[port.to_string()]);
    peer.wait_for_line("ready", LIMIT);
    (peer, port)
}

/// The recorded messages.
fn messages(mut peer: Peer) -> Vec<serde_json::Value> {
    let out = peer.finish(LIMIT);
    out.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("MESSAGE "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect()
}

#[test]
fn display_names_are_dropped_and_header_and_body_build_the_message() {
    let (peer, port) = recorder();
    let server = format!("127.0.0.1:{port}");
    let out = Peer::spawn(
        BIN,
        &strings(&[
            "send",
            "--server",
            &server,
            "--from",
            "Jane Doe <jane@example.com>",
            "--to",
            "\"Roe, Bob\" <bob@example.org>",
            "--to",
            "carol@example.org (Carol)",
            "--header",
            "Subject: hello from send",
            "--header",
            "X-Test: 1",
            "--body",
            "Hi Bob,\nsecond line",
        ]),
    )
    .finish(LIMIT);
    out.assert_success("ringrelay send --header --body");
    let got = messages(peer);
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!(m["from"], "jane@example.com");
    assert_eq!(
        m["to"],
        serde_json::json!(["bob@example.org", "carol@example.org"])
    );
    let content = m["content"].as_str().unwrap();
    for want in [
        "Subject: hello from send\r\n",
        "X-Test: 1\r\n",
        "From: Jane Doe <jane@example.com>\r\n",
        "To: \"Roe, Bob\" <bob@example.org>, carol@example.org (Carol)\r\n",
        "Date: ",
        "\r\n\r\nHi Bob,\r\nsecond line\r\n",
    ] {
        assert!(content.contains(want), "no {want:?} in {content:?}");
    }
}

#[test]
fn a_display_name_in_from_is_dropped_for_a_message_file_too() {
    let (peer, port) = recorder();
    let tmp = TempDir::new("send-file");
    let file = tmp.write("m.eml", b"Subject: file\r\n\r\nbody\r\n");
    let server = format!("127.0.0.1:{port}");
    let out = Peer::spawn(
        BIN,
        &strings(&[
            "send",
            "--server",
            &server,
            "--from",
            "Jane <jane@example.com>",
            "--to",
            "Bob <bob@example.org>",
            file.to_str().unwrap(),
        ]),
    )
    .finish(LIMIT);
    out.assert_success("ringrelay send FILE");
    let got = messages(peer);
    assert_eq!(got[0]["from"], "jane@example.com");
    assert_eq!(got[0]["to"], serde_json::json!(["bob@example.org"]));
}

#[test]
fn a_file_that_cannot_be_read_is_named() {
    let missing = "/nonexistent-ringrelay-test/message.eml";
    let out = Peer::spawn(
        BIN,
        &strings(&["send", "--server", "127.0.0.1:9", "--to", "b@c", missing]),
    )
    .finish(LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.starts_with(&format!(
            "ringrelay send: cannot read the message file {missing}: No such file or directory"
        )),
        "{}",
        out.stderr
    );
    let tmp = TempDir::new("send-pw");
    let file = tmp.write("m.eml", b"Subject: x\r\n\r\nbody\r\n");
    let pw = "/nonexistent-ringrelay-test/password";
    let out = Peer::spawn(
        BIN,
        &strings(&[
            "send",
            "--server",
            "127.0.0.1:9",
            "--auth-user",
            "u",
            "--auth-password-file",
            pw,
            file.to_str().unwrap(),
        ]),
    )
    .finish(LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("cannot read the password file {pw}: No such file")),
        "{}",
        out.stderr
    );
}

/// Runs `ringrelay send` with a pty as stdin: waits for the notice on stderr, then types a
/// message and Ctrl-D. Prints the stderr it saw.
const ON_A_TERMINAL: &str = r#"
import os, pty, subprocess, sys, time
master, slave = pty.openpty()
p = subprocess.Popen(sys.argv[1:], stdin=slave, stderr=subprocess.PIPE)
os.close(slave)
os.set_blocking(p.stderr.fileno(), False)
seen = b""
deadline = time.time() + 20
while b"reading the message from stdin" not in seen:
    if time.time() > deadline:
        p.kill()
        sys.exit("no notice on stderr: %r" % seen)
    chunk = p.stderr.read()
    if chunk:
        seen += chunk
    time.sleep(0.05)
os.write(master, b"Subject: typed\n\ntyped body\n\x04")
p.wait(timeout=20)
os.set_blocking(p.stderr.fileno(), True)
seen += p.stderr.read()
print(seen.decode())
sys.exit(p.returncode)
"#;

#[test]
fn on_a_terminal_it_says_it_reads_stdin() {
    let (peer, port) = recorder();
    let server = format!("127.0.0.1:{port}");
    let mut args = strings(&["-c", ON_A_TERMINAL, BIN, "send", "--server", &server]);
    args.extend(strings(&[
        "--from",
        "a@example.com",
        "--to",
        "b@example.org",
    ]));
    let out = Peer::spawn(&python(), &args).finish(LIMIT);
    out.assert_success("ringrelay send on a pty");
    assert!(
        out.stdout.contains(
            "ringrelay send: reading the message from stdin (end it with Ctrl-D; or give a FILE, \
             or --header/--body)"
        ),
        "{}",
        out.stdout
    );
    let got = messages(peer);
    assert!(
        got[0]["content"]
            .as_str()
            .unwrap()
            .contains("Subject: typed\r\n\r\ntyped body\r\n"),
        "{got:?}"
    );

    // From a pipe: no notice.
    let (peer, port) = recorder();
    let server = format!("127.0.0.1:{port}");
    let mut send = Peer::spawn(
        BIN,
        &strings(&[
            "send",
            "--server",
            &server,
            "--from",
            "a@example.com",
            "--to",
            "b@example.org",
        ]),
    );
    send.send_line("Subject: piped\n\npiped body");
    let out = send.finish(LIMIT);
    out.assert_success("ringrelay send from a pipe");
    assert!(
        !out.stderr.contains("reading the message"),
        "{}",
        out.stderr
    );
    assert_eq!(messages(peer).len(), 1);
}
