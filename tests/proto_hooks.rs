//! In-memory tests of the handler's extensions to the command set (`Session::set_command_hook`,
//! `Event::Command`, `Session::set_ehlo_keywords`): custom verbs answered or left to the core's
//! 500, the error budget, every line seen before the core's answer, EHLO keywords, observations
//! and pipelined decisions. No sockets; the base `Instant` is the only clock reading.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use core::net::SocketAddr;
use ringrelay::proto::{
    CommandHook, EnhancedCode, Event, Extensions, Observation, Reply, Session, SessionConfig,
    State, Verb,
};

const EHLO_REPLY: &str = "250-localhost Hello c.example\r\n250-PIPELINING\r\n250-SIZE 33554432\r\n\
250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250 HELP\r\n";
const G: &str = "220 localhost ESMTP ringrelay\r\n";

type Policy = Box<dyn FnMut(&Event, &Session) -> Option<Reply>>;

/// What a run produced.
#[derive(Debug, Default, PartialEq)]
struct Run {
    out: String,
    /// Every event but data chunks (their cuts follow the input's).
    events: Vec<Event>,
    /// For each `Event::Command`: (verb, argument, the core's verb) as the handler saw them.
    commands: Vec<(String, String, Verb)>,
    observations: Vec<Observation>,
    messages: usize,
    errors: u32,
    /// Most decisions outstanding at once.
    max_outstanding: usize,
}

/// Feeds `input` `step` octets at a time to a session with `hook`. `policy` decides each
/// decision when it is raised; the answers are given when the session can read no further,
/// oldest first (at once, unless the session pipelines decisions).
fn run_with(
    config: SessionConfig,
    hook: CommandHook,
    pipelined: bool,
    input: &[u8],
    step: usize,
    mut policy: Policy,
) -> Run {
    let now = Instant::now();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut s = Session::new(Arc::new(config), peer, now);
    s.set_command_hook(hook);
    s.set_observing(true);
    s.set_pipelined_decisions(pipelined);
    let mut r = Run::default();
    let mut raw = Vec::new();
    let mut pending = Vec::new();
    let mut answers = VecDeque::new();
    let mut pieces = input.chunks(step.max(1));
    loop {
        let used = s.handle_input(now, &pending);
        pending.drain(..used);
        let mut progressed = used > 0;
        while let Some(ev) = s.poll_event() {
            progressed = true;
            if ev == Event::Command {
                let c = s
                    .pending_command()
                    .expect("Event::Command without a pending command");
                r.commands.push((
                    String::from_utf8_lossy(c.verb()).into_owned(),
                    String::from_utf8_lossy(c.argument()).into_owned(),
                    c.known_verb(),
                ));
            } else if ev.needs_reply() {
                // Notifications may still be queued ahead of a pending command; decisions not.
                assert!(
                    s.pending_command().is_none(),
                    "{ev:?} with a pending command"
                );
            }
            if ev == Event::DataEnd {
                r.messages += 1;
            }
            if ev.needs_reply() {
                answers.push_back(policy(&ev, &s));
                r.max_outstanding = r.max_outstanding.max(answers.len());
            }
            if !matches!(ev, Event::DataChunk(_)) {
                r.events.push(ev);
            }
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
    r.errors = s.error_count();
    r
}

fn run(hook: CommandHook, input: &str, policy: Policy) -> Run {
    run_with(
        SessionConfig::default(),
        hook,
        false,
        input.as_bytes(),
        input.len(),
        policy,
    )
}

/// The example's handler in miniature: `XSTATS` answered with a count of the lines handed over,
/// `XSTATS` with an argument refused with 501; everything else left to the core.
fn xstats() -> Policy {
    let mut seen = 0;
    Box::new(move |ev, s| {
        if *ev != Event::Command {
            return None;
        }
        seen += 1;
        let c = s.pending_command()?;
        if !c.verb_is("XSTATS") {
            return None;
        }
        if !c.argument().is_empty() {
            return Some(Reply::new(
                501,
                EnhancedCode::new(5, 5, 4),
                "Syntax: XSTATS",
            ));
        }
        Some(Reply::new(
            250,
            EnhancedCode::new(2, 0, 0),
            format!("lines {seen}"),
        ))
    })
}

#[test]
fn off_by_default_unknown_verbs_get_500_and_spend_the_budget() {
    let r = run(
        CommandHook::Off,
        "EHLO c.example\r\nXSTATS\r\nNOOP\r\n",
        xstats(),
    );
    assert_eq!(
        r.out,
        format!(
            "{G}{EHLO_REPLY}500 5.5.1 Error: command \"XSTATS\" not recognized\r\n250 2.0.0 Ok\r\n"
        )
    );
    assert!(!r.events.contains(&Event::Command));
    assert_eq!(r.errors, 1);
}

#[test]
fn unknown_verbs_are_answered_by_the_handler_or_left_to_the_500() {
    let r = run(
        CommandHook::UnknownVerbs,
        "EHLO c.example\r\nxstats\r\nXFOO bar  baz \r\nNOOP\r\nXSTATS now\r\nMAIL FROM:<a@b>\r\n",
        xstats(),
    );
    assert_eq!(
        r.out,
        format!(
            "{G}{EHLO_REPLY}250 2.0.0 lines 1\r\n500 5.5.1 Error: command \"XFOO\" not recognized\r\n\
250 2.0.0 Ok\r\n501 5.5.4 Syntax: XSTATS\r\n250 2.1.0 Ok\r\n"
        )
    );
    // Only the unknown verbs were handed over, with their verb and argument.
    assert_eq!(
        r.commands,
        [
            ("xstats".into(), "".into(), Verb::Unknown),
            ("XFOO".into(), "bar  baz".into(), Verb::Unknown),
            ("XSTATS".into(), "now".into(), Verb::Unknown),
        ]
    );
    // The 500 the handler let stand and its own 501 are errors; its 250 is not.
    assert_eq!(r.errors, 2);
    assert!(r.observations.contains(&Observation::Command {
        verb: Verb::Unknown,
        code: 250
    }));
}

#[test]
fn answered_custom_verbs_do_not_spend_the_error_budget() {
    let config = SessionConfig {
        max_errors: 3,
        ..SessionConfig::default()
    };
    let mut input = "EHLO c.example\r\n".to_string();
    input.push_str(&"XSTATS\r\n".repeat(30));
    input.push_str("XFOO\r\nXFOO\r\nNOOP\r\nXFOO\r\nNOOP\r\n");
    let r = run_with(
        config,
        CommandHook::UnknownVerbs,
        false,
        input.as_bytes(),
        7,
        xstats(),
    );
    let lines: Vec<&str> = r.out.lines().collect();
    let answered = lines
        .iter()
        .filter(|l| l.starts_with("250 2.0.0 lines"))
        .count();
    assert_eq!(answered, 30, "{}", r.out);
    assert!(
        r.out.ends_with(
            "500 5.5.1 Error: command \"XFOO\" not recognized\r\n250 2.0.0 Ok\r\n\
500 5.5.1 Error: command \"XFOO\" not recognized\r\n421 4.7.0 localhost Error: too many errors\r\n"
        ),
        "{}",
        r.out
    );
    assert_eq!(r.errors, 3);
}

#[test]
fn every_line_is_seen_before_the_core_answers() {
    // The handler refuses VRFY itself and lets everything else through.
    let policy: Policy = Box::new(|ev, s| match ev {
        Event::Command if s.pending_command()?.verb_is("VRFY") => {
            Some(Reply::new(252, EnhancedCode::new(2, 5, 0), "Not telling"))
        }
        _ => None,
    });
    let input = "EHLO c.example\r\nVRFY bob\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n\
hello\r\n.\r\nXFOO\r\nQUIT\r\n";
    let r = run(CommandHook::EveryLine, input, policy);
    assert_eq!(
        r.out,
        format!(
            "{G}{EHLO_REPLY}252 2.5.0 Not telling\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n\
354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued\r\n\
500 5.5.1 Error: command \"XFOO\" not recognized\r\n221 2.0.0 Bye\r\n"
        )
    );
    let verbs: Vec<&str> = r.commands.iter().map(|(v, _, _)| v.as_str()).collect();
    // Message lines are not command lines.
    assert_eq!(
        verbs,
        ["EHLO", "VRFY", "MAIL", "RCPT", "DATA", "XFOO", "QUIT"]
    );
    assert_eq!(r.commands[2].2, Verb::Mail);
    // Each line's own decision follows the line's Command at once.
    let decisions: Vec<&Event> = r.events.iter().filter(|e| e.needs_reply()).collect();
    assert_eq!(
        decisions,
        [
            &Event::Connect,
            &Event::Command,
            &Event::Hello,
            &Event::Command,
            &Event::Command,
            &Event::Mail,
            &Event::Command,
            &Event::Rcpt,
            &Event::Command,
            &Event::DataStart,
            &Event::DataEnd,
            &Event::Command,
            &Event::Command,
        ]
    );
    assert_eq!(r.messages, 1);
    // One observation per line, with the reply it got.
    let commands: Vec<(Verb, u16)> = r
        .observations
        .iter()
        .filter_map(|o| match *o {
            Observation::Command { verb, code } => Some((verb, code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        commands,
        [
            (Verb::Ehlo, 250),
            (Verb::Vrfy, 252),
            (Verb::Mail, 250),
            (Verb::Rcpt, 250),
            (Verb::Data, 354),
            (Verb::Unknown, 500),
            (Verb::Quit, 221),
        ]
    );
}

#[test]
fn a_line_answered_by_the_handler_is_not_executed() {
    // MAIL refused by the line hook: no transaction begins, so RCPT is out of sequence.
    let policy: Policy = Box::new(|ev, s| match ev {
        Event::Command if s.pending_command()?.verb_is("MAIL") => {
            Some(Reply::new(550, EnhancedCode::new(5, 7, 1), "Not from you"))
        }
        Event::Mail => panic!("MAIL reached the core"),
        _ => None,
    });
    let r = run(
        CommandHook::EveryLine,
        "EHLO c.example\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n",
        policy,
    );
    assert_eq!(
        r.out,
        format!("{G}{EHLO_REPLY}550 5.7.1 Not from you\r\n503 5.5.1 Error: need MAIL command\r\n")
    );
    assert!(!r.events.contains(&Event::Mail));
    // The handler's 550 is its decision; the 503 is the client's mistake.
    assert_eq!(r.errors, 1);
}

#[test]
fn framing_errors_and_message_lines_are_not_handed_over() {
    let input = format!(
        "EHLO c.example\r\nNOOP\nX\r\nNOOP {}\r\nNOOP\r\n",
        "y".repeat(600)
    );
    let r = run(CommandHook::EveryLine, &input, Box::new(|_, _| None));
    assert_eq!(
        r.out,
        format!(
            "{G}{EHLO_REPLY}500 5.5.2 Error: bare <LF> received\r\n\
500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n"
        )
    );
    let verbs: Vec<&str> = r.commands.iter().map(|(v, _, _)| v.as_str()).collect();
    assert_eq!(verbs, ["EHLO", "NOOP"]);
}

#[test]
fn ehlo_keywords_come_before_help() {
    let now = Instant::now();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let config = Arc::new(SessionConfig::default());
    let transcript = |keywords: &[&str], greeting: &str, help: bool| {
        let mut config = (*config).clone();
        config.extensions = Extensions {
            help,
            ..Extensions::default()
        };
        let mut s = Session::new(Arc::new(config), peer, now);
        s.set_ehlo_keywords(keywords);
        let mut out = Vec::new();
        while let Some(ev) = s.poll_event() {
            assert!(ev == Event::Connect || ev == Event::Hello);
            s.handler_reply(None);
        }
        s.handle_input(now, greeting.as_bytes());
        while let Some(ev) = s.poll_event() {
            assert_eq!(ev, Event::Hello);
            s.handler_reply(None);
        }
        s.poll_output(&mut out);
        let kept: Vec<String> = s.ehlo_keywords().map(str::to_string).collect();
        (String::from_utf8(out).unwrap(), kept)
    };
    let (out, kept) = transcript(
        &["XSTATS", " XFOO 1 2 ", "", "BAD\r\nX"],
        "EHLO c.example\r\n",
        true,
    );
    assert_eq!(
        out,
        format!(
            "{G}{}250-XSTATS\r\n250-XFOO 1 2\r\n250-BAD??X\r\n250 HELP\r\n",
            EHLO_REPLY.trim_end_matches("250 HELP\r\n")
        )
    );
    assert_eq!(kept, ["XSTATS", "XFOO 1 2", "BAD??X"]);
    // Without HELP the last keyword ends the reply; HELO lists nothing.
    let (out, _) = transcript(&["XSTATS"], "EHLO c.example\r\n", false);
    assert!(out.ends_with("250-CHUNKING\r\n250 XSTATS\r\n"), "{out}");
    let (out, _) = transcript(&["XSTATS"], "HELO c.example\r\n", true);
    assert_eq!(out, format!("{G}250 localhost Hello c.example\r\n"));
    // None set: the reply is the core's own.
    let (out, kept) = transcript(&[], "EHLO c.example\r\n", true);
    assert_eq!(out, format!("{G}{EHLO_REPLY}"));
    assert!(kept.is_empty());
}

#[test]
fn every_split_gives_the_same_transcript() {
    let input = b"EHLO c.example\r\nXSTATS\r\nXFOO\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n\
DATA\r\nx\r\n.\r\nXSTATS\r\nQUIT\r\n";
    for hook in [CommandHook::UnknownVerbs, CommandHook::EveryLine] {
        let whole = run_with(
            SessionConfig::default(),
            hook,
            false,
            input,
            input.len(),
            xstats(),
        );
        assert_eq!(whole.messages, 1);
        assert!(whole.out.contains("250 2.0.0 lines"), "{}", whole.out);
        for step in 1..12 {
            let split = run_with(SessionConfig::default(), hook, false, input, step, xstats());
            assert_eq!(split, whole, "{hook:?} step {step}");
        }
    }
}

#[test]
fn every_line_does_not_take_decisions_ahead() {
    // A pipelining client's envelope in one batch: with every line handed over, the session
    // that pipelines decisions still raises one at a time, and answers exactly as one that
    // waits.
    let input = b"EHLO c.example\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\n\
DATA\r\nx\r\n.\r\nXSTATS\r\nQUIT\r\n";
    let refuse_e: fn() -> Policy = || {
        let mut inner = xstats();
        Box::new(move |ev, s| match ev {
            Event::Rcpt if s.pending_recipient()?.0.as_str() == "e@f" => {
                Some(Reply::new(550, EnhancedCode::new(5, 1, 1), "No such user"))
            }
            _ => inner(ev, s),
        })
    };
    for hook in [CommandHook::UnknownVerbs, CommandHook::EveryLine] {
        let waiting = run_with(
            SessionConfig::default(),
            hook,
            false,
            input,
            200,
            refuse_e(),
        );
        let mut pipelined = run_with(SessionConfig::default(), hook, true, input, 200, refuse_e());
        assert_eq!(waiting.max_outstanding, 1);
        // Unknown verbs alone leave pipelined decisions as they were: taken ahead.
        let ahead = if hook == CommandHook::EveryLine { 1 } else { 4 };
        assert_eq!(pipelined.max_outstanding, ahead, "{hook:?}");
        pipelined.max_outstanding = 1;
        assert_eq!(pipelined, waiting, "{hook:?}");
        assert!(waiting.out.contains("550 5.1.1 No such user"));
        assert!(waiting.out.contains("250 2.0.0 lines"));
        assert_eq!(waiting.messages, 1);
    }
}

#[test]
fn pending_command_only_while_one_is_pending() {
    let now = Instant::now();
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut s = Session::new(Arc::new(SessionConfig::default()), peer, now);
    s.set_command_hook(CommandHook::UnknownVerbs);
    assert_eq!(s.command_hook(), CommandHook::UnknownVerbs);
    assert_eq!(s.poll_event(), Some(Event::Connect));
    assert!(s.pending_command().is_none());
    s.handler_reply(None);
    s.handle_input(now, b"HELO c.example\r\n");
    assert_eq!(s.poll_event(), Some(Event::Hello));
    s.handler_reply(None);
    let used = s.handle_input(now, b"XSTATS  a b\r\nNOOP\r\n");
    assert_eq!(used, 13, "input after the command is held");
    assert_eq!(s.poll_event(), Some(Event::Command));
    let c = s.pending_command().unwrap();
    assert_eq!(c.line(), b"XSTATS  a b");
    assert_eq!(c.verb(), b"XSTATS");
    assert_eq!(c.argument(), b"a b");
    assert!(s.is_awaiting_reply());
    assert_eq!(s.poll_timeout(), None);
    s.handler_reply(Some(Reply::plain(250, "counted")));
    assert!(s.pending_command().is_none());
    assert_eq!(s.state(), State::ExpectMail);
    let mut out = Vec::new();
    s.poll_output(&mut out);
    assert!(String::from_utf8(out).unwrap().ends_with("250 counted\r\n"));
}
