//! Shared by both spike sinks: feed input to ringrelay's Session, answer every decision at once.
use ringrelay::proto::Session;
use std::time::Instant;

fn drive(session: &mut Session, input: &[u8], now: Instant) -> usize {
    let mut pos = 0;
    loop {
        pos += session.handle_input(now, &input[pos..]);
        let mut any = false;
        while let Some(ev) = session.poll_event() {
            any = true;
            if ev.needs_reply() {
                session.handler_reply(None);
            }
        }
        if !any {
            return pos;
        }
    }
}

/// Feeds `input` (after any carried partial input); returns nothing, replies via poll_output.
pub fn feed(session: &mut Session, carry: &mut Vec<u8>, input: &[u8]) {
    let now = Instant::now();
    if carry.is_empty() {
        let used = drive(session, input, now);
        carry.extend_from_slice(&input[used.min(input.len())..]);
    } else {
        carry.extend_from_slice(input);
        let used = drive(session, carry, now);
        carry.drain(..used.min(carry.len()));
    }
}

pub fn greet(session: &mut Session) {
    let _ = drive(session, &[], Instant::now());
}
