//! `ringrelay mailman` (and `smtpd -c MailmanProxy`) in front of a real Mailman 3 core
//! (tests/mailman_kit) and a recording aiosmtpd upstream (tests/relay_common), loopback only.
//! Mailman starts once (10–15 s) and every case runs against it in one test, in order; the
//! last ones stop it. Mailman's smarthost is the same ringrelay (its usual place), so the
//! list's copies to its members come back through it and are relayed to the recorder.

mod common;
mod mailman_kit;
mod postfix_kit;
mod relay_common;

use common::*;
use mailman_kit::Mailman;
use postfix_kit::Postfix;
use relay_common::*;
use std::time::{Duration, Instant};

const LIST: &str = "ant@example.com";
const MEMBERS: [&str; 2] = ["alice@members.test", "bob@members.test"];

/// `ringrelay mailman` on 127.0.0.1:`port` toward Mailman's LMTP and the upstream recorder.
fn mailman_relay(m: &Mailman, port: u16, upstream: u16) -> Server {
    let lmtp = format!("127.0.0.1:{}", m.lmtp_port);
    let data = m.data_dir().to_string_lossy().into_owned();
    let up = format!("127.0.0.1:{upstream}");
    let listen = format!("127.0.0.1:{port}");
    Server::start(&[
        "mailman",
        "--listen",
        &listen,
        "--hostname",
        RELAY_HOST,
        "--shards",
        "1",
        "--metrics-listen",
        "127.0.0.1:0",
        "--upstream",
        &up,
        "--mailman-lmtp",
        &lmtp,
        "--mailman-data",
        &data,
        "--smtputf8",
    ])
}

fn post(subject: &str, from: &str, to: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}.{}@members.test>\r\nDate: Fri, 27 Nov 2026 12:00:00 +0000\r\n\
         \r\nHello list.\r\n",
        std::process::id()
    )
    .into_bytes()
}

/// Waits until the recorder in `dir` holds a message containing `text`: at most 120 s, as
/// Mailman's runners are slow on a loaded machine.
fn wait_for_message(dir: &TempDir, text: &str) {
    let t0 = Instant::now();
    loop {
        let found = std::fs::read_dir(dir.path()).unwrap().any(|e| {
            let content = std::fs::read(e.unwrap().path()).unwrap_or_default();
            String::from_utf8_lossy(&content).contains(text)
        });
        if found {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no message with {text:?} from Mailman within 120 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// RCPT's reply after a fresh MAIL.
fn rcpt_after_mail(c: &mut Client, from: &str, to: &str) -> Answer {
    c.ok(&format!("MAIL FROM:<{from}>"));
    c.cmd(&format!("RCPT TO:<{to}>"))
}

#[test]
fn list_mail_goes_to_mailman_and_the_rest_upstream() {
    let _heavy = heavy();
    let upstream = Recorder::start(&["--smtputf8"]);
    let port = free_port();
    let mut mm = Mailman::start(port);
    mm.create_list(LIST, &MEMBERS);
    let relay = mailman_relay(&mm, port, upstream.port);
    let mut c = Client::connect(relay.port());
    let kw = c.ehlo_keywords("client.test");
    assert!(kw.contains(&"SMTPUTF8".to_string()), "{kw:?}");

    // A post from a member: accepted by Mailman over LMTP, our 250 is its 250.
    let (code, line) = c.transaction(MEMBERS[0], &[LIST], &post("first", MEMBERS[0], LIST));
    assert_eq!(code, 250, "post to the list: {line}");

    // The loop guard holds toward Mailman too: 101 Received: fields, 554 5.4.6.
    let mut looping = "Received: from a by b; Fri, 27 Nov 2026 12:00:00 +0000\r\n".repeat(101);
    looping.push_str(std::str::from_utf8(&post("loop", MEMBERS[0], LIST)).unwrap());
    let (code, line) = c.transaction(MEMBERS[0], &[LIST], looping.as_bytes());
    assert_eq!(code, 554, "a looping post: {line}");
    assert!(line.contains("5.4.6"), "{line}");

    // Mailman does not offer SMTPUTF8: refused at RCPT, the upstream still takes it.
    c.ok(&format!("MAIL FROM:<{}> SMTPUTF8", MEMBERS[0]));
    let (code, line) = c.cmd(&format!("RCPT TO:<{LIST}>"));
    assert_eq!(code, 553, "SMTPUTF8 to Mailman: {line}");
    assert!(line.contains("5.6.7"), "{line}");
    c.ok("RSET");

    // A recipient in the list domain that is no list: 550 5.1.1 at RCPT.
    let (code, line) = rcpt_after_mail(&mut c, MEMBERS[0], "nope@example.com");
    assert_eq!(code, 550, "{line}");
    assert!(line.contains("5.1.1"), "{line}");
    c.ok("RSET");

    // List sub-addresses are Mailman's.
    for sub in [
        "ant-request@example.com",
        "ant-owner@example.com",
        "ant+tag@example.com",
    ] {
        let (code, line) = rcpt_after_mail(&mut c, MEMBERS[0], sub);
        assert_eq!(code, 250, "{sub}: {line}");
        c.ok("RSET");
    }

    // Elsewhere: relayed upstream, byte-exact after our Received: field.
    let body = post("relayed", MEMBERS[0], "carol@elsewhere.test");
    let (code, line) = c.transaction(MEMBERS[0], &["carol@elsewhere.test"], &body);
    assert_eq!(code, 250, "{line}");

    // Mixed: the second destination waits for another transaction (452 4.5.3).
    let (code, _) = rcpt_after_mail(&mut c, MEMBERS[0], "dave@elsewhere.test");
    assert_eq!(code, 250);
    let (code, line) = c.cmd(&format!("RCPT TO:<{LIST}>"));
    assert_eq!(code, 452, "list after upstream: {line}");
    assert!(line.contains("4.5.3"), "{line}");
    let (code, line) = c.data(&post("mixed", MEMBERS[0], "dave@elsewhere.test"));
    assert_eq!(code, 250, "{line}");
    let (code, _) = rcpt_after_mail(&mut c, MEMBERS[0], LIST);
    assert_eq!(code, 250);
    for second in ["erin@elsewhere.test", "ant-request@example.com"] {
        let (code, line) = c.cmd(&format!("RCPT TO:<{second}>"));
        assert_eq!(code, 452, "{second} after the list: {line}");
    }
    c.ok("RSET");

    // smtpd -c MailmanProxy localaddr remoteaddr, the seed's order.
    let local = format!("127.0.0.1:{}", free_port());
    let remote = format!("127.0.0.1:{}", upstream.port);
    let lmtp = format!("127.0.0.1:{}", mm.lmtp_port);
    let data = mm.data_dir().to_string_lossy().into_owned();
    let smtpd = Server::start(&[
        "smtpd",
        "-n",
        "-c",
        "MailmanProxy",
        "--mailman-lmtp",
        &lmtp,
        "--mailman-data",
        &data,
        &local,
        &remote,
    ]);
    let mut s = Client::connect(smtpd.port());
    s.ehlo("client.test");
    let (code, line) = rcpt_after_mail(&mut s, MEMBERS[1], "nope@example.com");
    assert_eq!(code, 550, "smtpd MailmanProxy: {line}");
    s.ok("RSET");
    let (code, line) = rcpt_after_mail(&mut s, MEMBERS[1], LIST);
    assert_eq!(code, 250, "smtpd MailmanProxy: {line}");
    s.ok("RSET");
    let (code, line) = s.transaction(
        MEMBERS[1],
        &["frank@elsewhere.test"],
        &post("smtpd", MEMBERS[1], "frank@elsewhere.test"),
    );
    assert_eq!(code, 250, "{line}");
    s.quit();
    smtpd.stop().assert_success();

    // The [mailman] table of a config file, and SIGHUP: Mailman's LMTP address first wrong
    // (451 4.4.1 for the list), then corrected in the file and reloaded (250), on a session
    // opened after the reload.
    let conf_dir = TempDir::new("mailman-config");
    let write_conf = |lmtp_port: u16| {
        conf_dir.write(
            "ringrelay.toml",
            format!(
                "listen = [\"127.0.0.1:0\"]\nmetrics_listen = \"none\"\n\
                 [proxy]\nupstream = [\"127.0.0.1:{}\"]\n\
                 [mailman]\nmailman_lmtp = \"127.0.0.1:{lmtp_port}\"\n\
                 mailman_data = {:?}\nmailman_cache_ttl = 0\nmailman_timeout = 5\n",
                upstream.port,
                mm.data_dir().display().to_string()
            )
            .as_bytes(),
        )
    };
    let conf = write_conf(free_port());
    let filed = Server::start(&["mailman", "--config", conf.to_str().unwrap()]);
    let mut f = Client::connect(filed.port());
    f.ehlo("client.test");
    let (code, line) = rcpt_after_mail(&mut f, MEMBERS[1], LIST);
    assert_eq!(code, 451, "LMTP address wrong: {line}");
    f.quit();
    write_conf(mm.lmtp_port);
    filed.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !filed.stderr().contains("ringrelay: SIGHUP: reloaded") {
        assert!(Instant::now() < deadline, "no reload: {}", filed.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        filed.stderr().contains("Mailman's LMTP address"),
        "{}",
        filed.stderr()
    );
    let mut f = Client::connect(filed.port());
    f.ehlo("client.test");
    let (code, line) = rcpt_after_mail(&mut f, MEMBERS[1], LIST);
    assert_eq!(code, 250, "LMTP address reloaded: {line}");
    f.ok("RSET");
    f.quit();
    filed.stop().assert_success();

    // Postfix in front, one message to the list and elsewhere: the 452 makes it send the
    // second recipient in a transaction of its own, by itself, and both arrive.
    let pf_dir = TempDir::new("mailman-postfix");
    let pf = Postfix::start(pf_dir.path(), port);
    let mut p = Client::connect(pf.port);
    p.ehlo("client.test");
    let both = [LIST, "hank@elsewhere.test"];
    let mut msg = post("viapostfix", MEMBERS[1], LIST);
    msg.splice(0..0, b"Cc: hank@elsewhere.test\r\n".iter().copied());
    let (code, line) = p.transaction(MEMBERS[1], &both, &msg);
    assert_eq!(code, 250, "Postfix took the message: {line}");
    p.quit();
    wait_for_message(&upstream.dir, "Subject: viapostfix");
    wait_for_message(&upstream.dir, "Subject: [Ant] viapostfix");
    let log = pf.maillog();
    assert!(log.contains("4.5.3"), "Postfix met the 452 4.5.3:\n{log}");
    pf.stop();

    // Mailman's copies of the post come back through us to the members (checked below).
    wait_for_message(&upstream.dir, "Subject: [Ant] first");
    std::thread::sleep(Duration::from_secs(2));

    // Mailman stopped: 451 4.4.1 for its domains, and other mail still flows.
    mm.stop();
    let mut c2 = Client::connect(relay.port());
    c2.ehlo("client.test");
    for to in [LIST, "ant+down@example.com"] {
        let (code, line) = rcpt_after_mail(&mut c2, MEMBERS[0], to);
        assert_eq!(code, 451, "{to} with Mailman down: {line}");
        assert!(line.contains("4.4.1"), "{line}");
        c2.ok("RSET");
    }
    let late = post("late", MEMBERS[0], "gina@elsewhere.test");
    let (code, line) = c2.transaction(MEMBERS[0], &["gina@elsewhere.test"], &late);
    assert_eq!(code, 250, "upstream with Mailman down: {line}");
    c2.quit();
    c.quit();

    // The pool metrics are split by destination.
    let (status, text) = http_get(metrics_addr(&relay), "/metrics");
    assert_eq!(status, 200);
    let checkouts = |dest: &str| -> u64 {
        let key = format!("ringrelay_upstream_checkouts_total{{destination=\"{dest}\"}} ");
        let line = text.lines().find(|l| l.starts_with(&key));
        line.unwrap_or_else(|| panic!("no {key} in:\n{text}"))[key.len()..]
            .trim()
            .parse()
            .unwrap()
    };
    assert!(
        checkouts("mailman") >= 5,
        "probes and the post went to Mailman"
    );
    assert!(
        checkouts("upstream") >= 5,
        "five messages and the list's copies went upstream"
    );
    // So are the latency histograms: Mailman's LMTP verdicts are counted on their own.
    let eod_count = |dest: &str| -> u64 {
        let key = format!(
            "ringrelay_upstream_end_of_data_duration_seconds_count{{destination=\"{dest}\"}} "
        );
        let line = text.lines().find(|l| l.starts_with(&key));
        line.unwrap_or_else(|| panic!("no {key} in:\n{text}"))[key.len()..]
            .trim()
            .parse()
            .unwrap()
    };
    assert!(eod_count("mailman") >= 2, "the posts Mailman answered");
    assert!(eod_count("upstream") >= 5, "the messages relayed upstream");
    let (_, stats) = http_get(metrics_addr(&relay), "/stats.json");
    assert!(stats.contains("\"mailman_end_of_data\""), "{stats}");
    relay.stop().assert_success();

    let (copies, relayed): (Vec<Stored>, Vec<Stored>) = upstream
        .finish()
        .into_iter()
        .partition(|m| m.rcpts.iter().any(|r| r.ends_with("@members.test")));
    // Each post's copies go to both members, with the list's prefix and List-* fields.
    for subject in ["first", "viapostfix"] {
        let prefixed = format!("Subject: [Ant] {subject}\r\n");
        let of: Vec<&Stored> = copies
            .iter()
            .filter(|m| String::from_utf8_lossy(&m.content).contains(&prefixed))
            .collect();
        let mut got: Vec<String> = of.iter().flat_map(|m| m.rcpts.clone()).collect();
        got.sort();
        assert_eq!(got, MEMBERS, "the copies of {subject:?} go to the members");
        for m in of {
            let text = String::from_utf8_lossy(&m.content);
            assert!(text.contains("List-Id: <ant.example.com>"), "{text}");
            assert!(
                text.contains("List-Post: <mailto:ant@example.com>"),
                "{text}"
            );
        }
    }
    // The looping post reached nobody.
    for m in &copies {
        assert!(!String::from_utf8_lossy(&m.content).contains("Subject: [Ant] loop"));
    }

    let mut rcpts: Vec<&str> = relayed.iter().map(|m| m.rcpts[0].as_str()).collect();
    rcpts.sort();
    let others = ["carol", "dave", "frank", "gina", "hank"].map(|n| format!("{n}@elsewhere.test"));
    assert_eq!(rcpts, others, "each non-list message relayed once");
    let first = &relayed[0];
    assert!(first.content.starts_with(b"Received: "));
    assert!(first.content.ends_with(&body), "relayed byte-exact");
}
