//! `sink` and `debug` as load-test targets (issue 13, items 4-6) against real peers: LMTP
//! with Python's smtplib.LMTP and Postfix's smtp-source -L, dumps read back by
//! `ringload --verify`, a dump that cannot be written (452, never an acknowledged loss),
//! `--auth-any`, `debug --envelope` and `-c`.

mod common;
mod ringload_run;

use common::*;
use ringload_run::{ringload, text};
use std::time::Duration;

const PEER_TIMEOUT: Duration = Duration::from_secs(60);

fn run_python(script: &str, port: u16) -> PeerOutput {
    let mut p = Peer::spawn(&python(), &["-c".into(), script.into(), port.to_string()]);
    let out = p.finish(PEER_TIMEOUT);
    out.assert_success("python peer");
    out
}

const LMTP_CLIENT: &str = r#"
import smtplib, sys
s = smtplib.LMTP('127.0.0.1', int(sys.argv[1]))
code, text = s.ehlo()
assert code == 250 and b'PIPELINING' in text, (code, text)
code, text = s.docmd('EHLO', 'client.example')
assert code == 500, (code, text)
code, text = s.docmd('HELO', 'client.example')
assert code == 500, (code, text)
assert s.mail('sender@example.org')[0] == 250
assert s.rcpt('one@example.org')[0] == 250
assert s.rcpt('two@example.org')[0] == 250
# --max-recipients 2: the third is refused and gets no reply after the data.
assert s.rcpt('three@example.org')[0] == 452
code, text = s.data(b'Subject: lmtp\r\nX-Ringload-Id: t.1\r\n\r\nbody\r\n')
assert code == 250, (code, text)
code, text = s.getreply()
assert code == 250, ('second recipient', code, text)
# In step: the next reply is NOOP's own.
code, text = s.noop()
assert code == 250 and b'2.0.0 Ok' == text, (code, text)
s.quit()
print('OK')
"#;

/// smtplib.LMTP: LHLO accepted, HELO and EHLO refused, one reply per accepted recipient
/// after the data and none for the refused one; the dump says LMTP and lists both.
#[test]
fn lmtp_smtplib_one_reply_per_recipient() {
    let dir = TempDir::new("lmtp-smtplib");
    let dumps = dir.join("dumps");
    let d = dumps.to_str().unwrap();
    let server = Server::sink("epoll", &["--lmtp", "-d", d, "--max-recipients", "2"]);
    let out = run_python(LMTP_CLIENT, server.port());
    assert!(out.stdout.contains("OK"), "{}", out.stdout);
    let stopped = server.stop();
    stopped.assert_success();
    let sum = stopped.sink_summary();
    assert_eq!((sum.messages, sum.recipients), (1, 2), "{sum:?}");
    let files: Vec<_> = std::fs::read_dir(&dumps).unwrap().collect();
    assert_eq!(files.len(), 1);
    let dump = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    assert!(
        dump.starts_with("X-Client-Addr: 127.0.0.1\nX-Client-Proto: LMTP\n"),
        "{dump}"
    );
    assert!(
        dump.contains("X-Mail-Args: <sender@example.org>\n"),
        "{dump}"
    );
    assert!(
        dump.contains(
            "X-Rcpt-Args: <one@example.org>\nX-Rcpt-Args: <two@example.org>\nReceived: from "
        ),
        "{dump}"
    );
    assert!(
        dump.ends_with("\nSubject: lmtp\nX-Ringload-Id: t.1\n\nbody\n\n"),
        "{dump}"
    );
}

/// Postfix's smtp-source -L: 200 messages of three recipients each over 4 sessions; it
/// expects one reply per recipient after each message and fails on anything else.
#[test]
fn lmtp_smtp_source() {
    let server = Server::sink("uring", &["-L"]);
    smtp_source(
        server.port(),
        "localhost",
        &["-L", "-s", "4", "-m", "200", "-r", "3", "-d", "-l", "1000"],
        PEER_TIMEOUT,
    );
    let stopped = server.stop();
    stopped.assert_success();
    let sum = stopped.sink_summary();
    assert_eq!((sum.messages, sum.recipients), (200, 600), "{sum:?}");
}

/// `sink -d DIR` read back by `ringload --verify DIR`: every acknowledged message is there
/// exactly once (DATA and BDAT, several recipients).
#[test]
fn ringload_verifies_the_dump_dir() {
    let _heavy = heavy();
    let dir = TempDir::new("dump-verify");
    let dumps = dir.join("dumps");
    let d = dumps.to_str().unwrap();
    let server = Server::sink(
        "uring",
        &["-d", d, "-D", dir.join("all.mbox").to_str().unwrap()],
    );
    let target = format!("127.0.0.1:{}", server.port());
    for extra in [&["--rcpts", "2"][..], &["--bdat", "--size", "5k"][..]] {
        let mut args = vec!["-t", &target, "--threads", "2", "-s", "4", "-m", "300"];
        args.extend_from_slice(&["--verify", d]);
        args.extend_from_slice(extra);
        let o = ringload(&args);
        let t = text(&o);
        assert!(o.status.success(), "{extra:?}: {t}");
        assert!(
            t.contains("0 missing, 0 duplicated, 0 unexpected: OK"),
            "{t}"
        );
    }
    let stopped = server.stop();
    stopped.assert_success();
    assert_eq!(stopped.sink_summary().messages, 600);
    let mbox = std::fs::read_to_string(dir.join("all.mbox")).unwrap();
    assert_eq!(mbox.matches("\nX-Ringload-Id: ").count(), 600);
    assert_eq!(std::fs::read_dir(&dumps).unwrap().count(), 600);
}

const ONE_MESSAGE: &str = r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))
try:
    s.sendmail('a@example.org', ['b@example.org'], b'Subject: x\r\n\r\nbody\r\n')
    print('ACCEPTED')
except smtplib.SMTPDataError as e:
    print('REFUSED', e.smtp_code, e.smtp_error.decode())
print('NOOP', s.noop()[0])
s.quit()
"#;

/// A dump that cannot be written (a full disk: /dev/full) answers 452 4.3.1; the session
/// goes on, and the summary does not count the refused message.
#[test]
fn a_dump_write_error_answers_452() {
    let server = Server::sink("epoll", &["--dump-mbox", "/dev/full"]);
    let out = run_python(ONE_MESSAGE, server.port());
    assert!(out.stdout.contains("REFUSED 452 4.3.1"), "{}", out.stdout);
    assert!(out.stdout.contains("NOOP 250"), "{}", out.stdout);
    let stopped = server.stop();
    stopped.assert_success();
    let sum = stopped.sink_summary();
    assert_eq!((sum.sessions, sum.messages), (1, 0), "{sum:?}");
}

const AUTH_BCC: &str = r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))
s.ehlo('client.example')
assert 'auth' in s.esmtp_features, s.esmtp_features
assert s.login('anyone', 'any password')[0] == 235
s.sendmail('from@example.org', ['to@example.org', 'hidden@example.org'],
           b'Subject: bcc\r\nTo: to@example.org\r\n\r\nhello\r\n')
s.quit()
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))
s.ehlo('client.example')
s.user, s.password = 'other', 'secret'
assert s.auth('LOGIN', s.auth_login)[0] == 235
s.quit()
print('OK')
"#;

/// `debug --auth-any --envelope -c`: any credentials (PLAIN and LOGIN) are accepted, the
/// envelope with the Bcc recipient comes before the message block, and the counters line
/// goes to stderr.
#[test]
fn debug_auth_any_envelope_and_counters() {
    let server = Server::debug("epoll", &["--auth-any", "--envelope", "-c"]);
    let out = run_python(AUTH_BCC, server.port());
    assert!(out.stdout.contains("OK"), "{}", out.stdout);
    let stopped = server.stop();
    stopped.assert_success();
    let printed = stopped.stdout_str();
    let expected = "---------- ENVELOPE ----------\nMAIL FROM:<from@example.org>\n\
RCPT TO:<to@example.org>\nRCPT TO:<hidden@example.org>\n---------- MESSAGE FOLLOWS ----------\n";
    assert!(printed.contains(expected), "{printed}");
    assert!(
        stopped
            .stderr
            .contains("counters: sessions=2 messages=1 recipients=2"),
        "{}",
        stopped.stderr
    );
}

const REFUSED_BY_FAULTS: &str = r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]))
s.ehlo('client.example')
code, text = s.docmd('AUTH', 'PLAIN AGFueW9uZQBwdw==')
print('AUTH', code)
try:
    s.sendmail('a@example.org', ['b@example.org'], b'Subject: x\r\n\r\nbody\r\n')
    print('ACCEPTED')
except smtplib.SMTPDataError as e:
    print('REFUSED', e.smtp_code)
s.quit()
"#;

/// With fault flags too, a fault wins: `-f auth` refuses the credentials `--auth-any` would
/// take, and a message `-r .` refuses is neither dumped nor counted.
#[test]
fn faults_win_over_the_target_options() {
    let dir = TempDir::new("target-faults");
    let dumps = dir.join("dumps");
    let d = dumps.to_str().unwrap();
    let server = Server::sink("epoll", &["-d", d, "--auth-any", "-f", "auth", "-r", "."]);
    let out = run_python(REFUSED_BY_FAULTS, server.port());
    assert!(out.stdout.contains("AUTH 500"), "{}", out.stdout);
    assert!(out.stdout.contains("REFUSED 450"), "{}", out.stdout);
    let stopped = server.stop();
    stopped.assert_success();
    assert_eq!(stopped.sink_summary().messages, 0);
    assert_eq!(std::fs::read_dir(&dumps).unwrap().count(), 0);
}
