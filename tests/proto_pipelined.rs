//! Pipelined decisions (`Session::set_pipelined_decisions`): a session that reads on past a
//! pending MAIL or RCPT decision must, whatever the answers turn out to be, give the client
//! exactly the replies (and the metrics exactly the observations) of a session that waited for
//! each answer. The oracle is that waiting session, driven by the same handler policy.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use core::net::SocketAddr;
use ringrelay::proto::{EnhancedCode, Event, Observation, Reply, Session, SessionConfig};

type Policy = fn(&Event, &Session) -> Option<Reply>;

/// What one run produced.
#[derive(Debug, Default)]
struct Run {
    out: String,
    events: Vec<Event>,
    observations: Vec<Observation>,
    messages: Vec<Vec<u8>>,
    /// Most decisions outstanding at once.
    max_outstanding: usize,
}

/// Feeds `input` in pieces of `step` octets. The handler's answers are computed when each
/// decision is raised but given only when the session can read no further, oldest first.
fn run(config: &SessionConfig, input: &[u8], step: usize, pipelined: bool, policy: Policy) -> Run {
    let now = Instant::now();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut s = Session::new(Arc::new(config.clone()), peer, now);
    s.set_observing(true);
    s.set_pipelined_decisions(pipelined);
    let mut r = Run::default();
    let mut answers: VecDeque<Option<Reply>> = VecDeque::new();
    let mut pending = Vec::new();
    let mut pieces = input.chunks(step.max(1));
    let mut content = Vec::new();
    let mut raw = Vec::new();
    loop {
        let used = s.handle_input(now, &pending);
        pending.drain(..used);
        let mut progressed = used > 0;
        while let Some(ev) = s.poll_event() {
            progressed = true;
            match &ev {
                Event::DataChunk(c) => c.extend_content(&mut content),
                Event::DataEnd => r.messages.push(std::mem::take(&mut content)),
                Event::Reset => content.clear(),
                _ => {}
            }
            if ev.needs_reply() {
                answers.push_back(policy(&ev, &s));
                r.max_outstanding = r.max_outstanding.max(answers.len());
            }
            r.events.push(ev);
        }
        s.poll_output(&mut raw);
        while let Some(o) = s.poll_observation() {
            r.observations.push(o);
        }
        if progressed {
            continue;
        }
        if let Some(a) = answers.pop_front() {
            s.handler_reply(a);
        } else if let Some(p) = pieces.next() {
            pending.extend_from_slice(p);
        } else {
            break;
        }
    }
    r.out = String::from_utf8(raw).unwrap();
    r
}

fn reply(code: u16, class: u8, subject: u16, detail: u16, text: &'static str) -> Option<Reply> {
    Some(Reply::new(
        code,
        EnhancedCode::new(class, subject, detail),
        text,
    ))
}

/// Refuses senders and recipients whose local part says so, and DATA from `nodata@`.
fn policy(ev: &Event, s: &Session) -> Option<Reply> {
    let from = s
        .envelope()
        .mail_from
        .as_ref()
        .map_or("", |m| m.as_str())
        .to_string();
    match ev {
        Event::Mail if from.starts_with("refused") => reply(550, 5, 7, 1, "sender refused"),
        Event::Mail if from.starts_with("later") => reply(451, 4, 3, 0, "try later"),
        Event::Rcpt => {
            let (to, _) = s
                .pending_recipient()
                .expect("RCPT event without its recipient");
            match to.local_part() {
                "nobody" => reply(550, 5, 1, 1, "no such user"),
                "full" => reply(452, 4, 2, 2, "mailbox full"),
                _ => None,
            }
        }
        Event::DataStart if from.starts_with("nodata") => reply(451, 4, 3, 0, "no data now"),
        Event::DataEnd => reply(250, 2, 0, 0, "queued upstream"),
        _ => None,
    }
}

const HELLO: &str = "EHLO c.example\r\n";

fn scripts() -> Vec<(&'static str, String)> {
    let tx = |from: &str, rcpts: &[&str], tail: &str| {
        let mut s = format!("MAIL FROM:<{from}>\r\n");
        for r in rcpts {
            s.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        s.push_str(tail);
        s
    };
    let body = "DATA\r\nSubject: t\r\n\r\n..dot\r\nhi\r\n.\r\n";
    vec![
        ("all accepted", tx("a@x", &["b@x", "c@x"], body)),
        ("one refused", tx("a@x", &["nobody@x", "c@x"], body)),
        ("sender refused", tx("refused@x", &["b@x", "c@x"], body)),
        ("sender deferred", tx("later@x", &["b@x"], body)),
        (
            "all recipients refused",
            tx("a@x", &["nobody@x", "full@x"], body),
        ),
        ("data refused", tx("nodata@x", &["b@x"], body)),
        (
            "over the recipient limit",
            tx("a@x", &["b@x", "c@x", "d@x", "e@x"], body),
        ),
        (
            "limit with refusals",
            tx("a@x", &["nobody@x", "c@x", "d@x", "e@x"], body),
        ),
        (
            "noop inside",
            tx("a@x", &["b@x"], "NOOP\r\nRCPT TO:<c@x>\r\n") + body,
        ),
        (
            "bad lines inside",
            tx(
                "a@x",
                &["b@x"],
                "RCPT TO:<>\r\nFOO\r\nRCPT TO:<c@x> X=1\r\n",
            ) + body,
        ),
        ("utf8 without smtputf8", tx("a@x", &["b@x", "ü@x"], body)),
        (
            "bdat after recipients",
            tx("a@x", &["b@x"], "BDAT 4 LAST\r\nhi\r\n"),
        ),
        (
            "two transactions",
            tx("a@x", &["b@x"], body) + &tx("refused@x", &["c@x"], body),
        ),
        (
            "rset after rcpt",
            tx("a@x", &["b@x"], "RSET\r\n") + &tx("a@x", &["c@x"], body),
        ),
        (
            "rcpt before mail",
            "RCPT TO:<b@x>\r\nDATA\r\n".to_string() + &tx("a@x", &["b@x"], body),
        ),
        (
            "errors close it",
            tx("refused@x", &["b@x", "c@x", "d@x", "e@x", "f@x"], body),
        ),
        (
            "quit after data",
            tx("a@x", &["b@x"], "DATA\r\nx\r\n.\r\nQUIT\r\n"),
        ),
    ]
}

fn config() -> SessionConfig {
    SessionConfig {
        max_recipients: 3,
        max_errors: 5,
        ..SessionConfig::default()
    }
}

#[test]
fn pipelined_decisions_give_the_same_replies_as_waiting_for_each() {
    let config = config();
    for (name, script) in scripts() {
        let input = format!("{HELLO}{script}");
        let oracle = run(&config, input.as_bytes(), input.len(), false, policy);
        assert_eq!(oracle.max_outstanding, 1, "{name}: the oracle waits");
        if std::env::var_os("SHOW_TRANSCRIPTS").is_some() {
            eprintln!("== {name}\n{}", oracle.out);
        }
        for step in [input.len(), 1, 7, 23] {
            let got = run(&config, input.as_bytes(), step, true, policy);
            if step == input.len() {
                assert!(got.max_outstanding > 1, "{name}: nothing was taken ahead");
            }
            assert_eq!(got.out, oracle.out, "{name}, step {step}: replies differ");
            assert_eq!(got.observations, oracle.observations, "{name}, step {step}");
            assert_eq!(got.messages, oracle.messages, "{name}, step {step}");
        }
    }
}

#[test]
fn recipients_and_data_reach_the_handler_before_mail_is_answered() {
    let input =
        format!("{HELLO}MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nRCPT TO:<nobody@x>\r\nDATA\r\n");
    let got = run(&config(), input.as_bytes(), input.len(), true, policy);
    // MAIL, two RCPTs and DATA outstanding together (plus nothing else).
    assert_eq!(got.max_outstanding, 4, "{got:?}");
    assert!(got.out.ends_with("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 no such user\r\n354 End data with <CR><LF>.<CR><LF>\r\n"), "{}", got.out);
}

#[test]
fn a_data_accepted_by_the_handler_but_void_is_followed_by_reset() {
    // Every recipient is refused, so DATA gets 554 although the handler said 354 to it.
    let input = format!("{HELLO}MAIL FROM:<a@x>\r\nRCPT TO:<nobody@x>\r\nDATA\r\nNOOP\r\n");
    let got = run(&config(), input.as_bytes(), input.len(), true, policy);
    assert!(
        got.out.ends_with(
            "550 5.1.1 no such user\r\n554 5.5.1 Error: no valid recipients\r\n250 2.0.0 Ok\r\n"
        ),
        "{}",
        got.out
    );
    let tail: Vec<_> = got
        .events
        .iter()
        .skip_while(|e| **e != Event::DataStart)
        .collect();
    assert_eq!(tail, [&Event::DataStart, &Event::Reset], "{:?}", got.events);
    // Without pipelining the handler never hears of that DATA.
    let oracle = run(&config(), input.as_bytes(), input.len(), false, policy);
    assert!(!oracle.events.contains(&Event::DataStart));
    assert_eq!(got.out, oracle.out);
}
