//! Fuzz target `pipelined`: differential check of pipelined decisions
//! (`Session::set_pipelined_decisions`). The same fuzzer-chosen SMTP input and the same handler
//! policy drive two sessions: one that waits for each answer, one that reads on past pending
//! MAIL/RCPT decisions and gets its answers only when it can read no further, with the input
//! cut at fuzzer-chosen points. Replies, observations and accepted messages must be identical.
//!
//! Input layout:
//!   bytes 0..2   configuration (recipient limit, error budget, SMTPUTF8, BDAT, which command
//!                lines go to the handler as `Event::Command`)
//!   bytes 2..10  the handler's answer table (see `policy`)
//!   then         one byte per token: low 6 bits pick a token, bit 7 cuts the input after it

#![no_main]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use ringrelay::proto::{
    CommandHook, EnhancedCode, Event, Extensions, Observation, Reply, Session, SessionConfig,
};

const TOKENS: &[&[u8]] = &[
    b"EHLO x\r\n",
    b"HELO x\r\n",
    b"MAIL FROM:<a@b>\r\n",
    b"MAIL FROM:<z@b>\r\n",
    b"MAIL FROM:<> SIZE=50\r\n",
    b"MAIL FROM:<\xc3\xbc@b> SMTPUTF8\r\n",
    b"RCPT TO:<c@d>\r\n",
    b"RCPT TO:<e@d>\r\n",
    b"RCPT TO:<g@d>\r\n",
    b"RCPT TO:<\xc3\xbc@d>\r\n",
    b"RCPT TO:<>\r\n",
    b"RCPT TO:<c@d> NOTIFY=NEVER\r\n",
    b"DATA\r\n",
    b"BDAT 3\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT 5 LAST\r\n",
    b".\r\n",
    b"\r\n",
    b"..x\r\n",
    b"text\r\n",
    b"RSET\r\n",
    b"QUIT\r\n",
    b"NOOP\r\n",
    b"VRFY a\r\n",
    b"FOO\r\n",
    b"x",
    b"\r",
    b"\n",
    b"RCPT TO:<c@d>",
    b"DAT",
];

fn answer(b: u8) -> Option<Reply> {
    match b % 8 {
        0 => None,
        1 => Some(Reply::new(250, EnhancedCode::new(2, 0, 0), "Ok")),
        2 => Some(Reply::new(451, EnhancedCode::new(4, 3, 0), "Try later")),
        3 => Some(Reply::new(550, EnhancedCode::new(5, 7, 1), "Rejected")),
        4 => Some(Reply::plain(354, "Go ahead")),
        5 => Some(Reply::plain(250, "first\nsecond")),
        6 => Some(Reply::new(421, EnhancedCode::new(4, 3, 2), "Closing")),
        _ => Some(Reply::new(552, EnhancedCode::new(5, 3, 4), "Too big")),
    }
}

/// The handler's answer depends only on what is decided (kind and address), never on when.
fn policy(table: &[u8; 8], ev: &Event, s: &Session) -> Option<Reply> {
    let sum = |t: &str| t.bytes().fold(0usize, |a, b| a.wrapping_add(b as usize));
    let slot = match ev {
        Event::Connect => return None,
        Event::Hello => 0,
        Event::Mail => 1 + sum(s.envelope().mail_from.as_ref().map_or("", |m| m.as_str())) % 2,
        Event::Rcpt => 3 + sum(s.pending_recipient().map_or("", |(m, _)| m.as_str())) % 3,
        Event::DataStart => 6,
        // A handed-over line: the answer depends on the line.
        Event::Command => {
            let line = s.pending_command().map_or(&b""[..], |c| c.line());
            let n = line.iter().fold(0u8, |a, &b| a.wrapping_add(b));
            return answer(table[7].wrapping_add(n) >> 2);
        }
        _ => 7,
    };
    answer(table[slot] >> (slot % 3))
}

#[derive(Debug, PartialEq)]
struct Run {
    out: Vec<u8>,
    observations: Vec<Observation>,
    messages: Vec<Vec<u8>>,
}

fn run(
    cfg: &Arc<SessionConfig>,
    hook: CommandHook,
    pieces: &[Vec<u8>],
    pipelined: bool,
    table: &[u8; 8],
) -> Run {
    let now = Instant::now();
    let peer: SocketAddr = "192.0.2.1:25000".parse().unwrap();
    let mut s = Session::new(cfg.clone(), peer, now);
    s.set_command_hook(hook);
    s.set_observing(true);
    s.set_pipelined_decisions(pipelined);
    let mut r = Run {
        out: Vec::new(),
        observations: Vec::new(),
        messages: Vec::new(),
    };
    let mut answers: VecDeque<Option<Reply>> = VecDeque::new();
    let mut pending = Vec::new();
    let mut next = pieces.iter();
    let mut content = Vec::new();
    loop {
        let used = s.handle_input(now, &pending);
        assert!(used <= pending.len());
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
                answers.push_back(policy(table, &ev, &s));
                assert!(
                    pipelined || answers.len() == 1,
                    "two decisions without pipelining"
                );
            }
        }
        s.poll_output(&mut r.out);
        while let Some(o) = s.poll_observation() {
            r.observations.push(o);
        }
        if progressed {
            continue;
        }
        if let Some(a) = answers.pop_front() {
            s.handler_reply(a);
        } else if let Some(p) = next.next() {
            pending.extend_from_slice(p);
        } else {
            break;
        }
    }
    r
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let cfg = Arc::new(SessionConfig {
        max_recipients: data[0] as usize % 4 + 1,
        max_errors: (data[0] as u32 >> 2) % 12,
        extensions: Extensions {
            smtputf8: data[1] & 1 == 1,
            chunking: data[1] & 2 == 0,
            ..Extensions::default()
        },
        ..SessionConfig::default()
    });
    let hook = [
        CommandHook::Off,
        CommandHook::UnknownVerbs,
        CommandHook::EveryLine,
    ][(data[1] >> 2) as usize % 3];
    let table: [u8; 8] = data[2..10].try_into().unwrap();
    let mut pieces = vec![Vec::new()];
    let mut whole = Vec::new();
    for &b in &data[10..] {
        let t = TOKENS[(b & 0x3f) as usize % TOKENS.len()];
        pieces.last_mut().unwrap().extend_from_slice(t);
        whole.extend_from_slice(t);
        if b & 0x80 != 0 {
            pieces.push(Vec::new());
        }
    }
    let waiting = run(&cfg, hook, &[whole], false, &table);
    let pipelined = run(&cfg, hook, &pieces, true, &table);
    assert_eq!(
        String::from_utf8_lossy(&pipelined.out),
        String::from_utf8_lossy(&waiting.out),
        "replies differ"
    );
    assert_eq!(pipelined, waiting);
});
