//! The metered way of feeding a session, used when metrics are on: input goes in one framing
//! unit at a time (a command line; a DATA stretch up to the next place a terminator could
//! be; the octets of a BDAT chunk), and the replies written for each unit are read back. So
//! every reply is tied to the command that caused it, which gives the per-verb command counts,
//! recipient outcomes, message verdicts (including the session's own refusals at end of data,
//! which no handler event shows) and the transaction and data-phase timings.
//!
//! The session sees the same bytes in the same order as with one `handle_input_buf` over the
//! whole buffer, only in more calls, which its contract allows, so it writes the same replies
//! (a test below compares both ways byte for byte). A decision answered later (a relay
//! waiting on its upstream) keeps its unit open until the answer is in, so its reply is still
//! read back as that unit's. Does no I/O: `conn` reads and writes.

use std::time::Instant;

use bytes::BytesMut;

use crate::metrics::labels::{for_each_reply, MessageResult, Verb};
use crate::metrics::ShardRecorder;
use crate::proto::{parse_command, Command, Session, State};

/// Per-connection metering state.
#[derive(Debug)]
pub(crate) struct Tap {
    /// The next command-mode octet starts a line (false while the tail of an over-long line
    /// is still to come, so it is not counted as a second command).
    line_start: bool,
    /// Octets of the current BDAT chunk still to come.
    chunk_left: u64,
    /// When the transaction's MAIL was accepted.
    transaction_start: Option<Instant>,
    /// When its data phase began (354, or the first BDAT).
    data_start: Option<Instant>,
    /// The unit whose answer is pending.
    open: Option<OpenUnit>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    Line,
    Data,
    Chunk,
}

/// In the data phase of a transaction.
fn in_data(s: State) -> bool {
    matches!(s, State::InData | State::InBdat)
}

/// Inside a transaction (MAIL accepted, no verdict yet).
fn in_transaction(s: State) -> bool {
    matches!(
        s,
        State::ExpectRcpt | State::ExpectRcptOrData | State::InData | State::InBdat
    )
}

/// Length of the next DATA unit: up to and including the first `.CRLF` that opens a line
/// (every real terminator is such a place, so the session cannot read past its terminator
/// into the commands after it), or the whole buffer.
fn data_unit(buf: &[u8]) -> usize {
    if buf.starts_with(b".\r\n") {
        return 3;
    }
    memchr::memmem::find(buf, b"\n.\r\n").map_or(buf.len(), |p| p + 4)
}

/// The chunk size of a BDAT command line that parses.
fn bdat_size(line: &[u8]) -> Option<u64> {
    let end = memchr::memchr2(b'\r', b'\n', line).unwrap_or(line.len());
    match parse_command(&line[..end]) {
        Ok(Command::Bdat { size, .. }) => Some(size),
        _ => None,
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What dispatching a unit's events came to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dispatched {
    /// A decision was answered (the session may use more input).
    pub answered: bool,
    /// An answer is still being worked out (`Answer::Later`): feed no more until it is in.
    pub pending: bool,
}

/// A unit fed to the session whose replies have not all been read back yet.
#[derive(Debug)]
struct OpenUnit {
    kind: Unit,
    len: usize,
    consumed: usize,
    verb: Option<Verb>,
    bdat: Option<u64>,
    ends_line: bool,
    fed_at: Instant,
    /// Session state before the unit, and right after the session took it.
    before: State,
    mid: State,
    /// Content size of a message received in full by this unit.
    received: Option<u64>,
}

impl Tap {
    pub(crate) fn new() -> Self {
        Self {
            line_start: true,
            chunk_left: 0,
            transaction_start: None,
            data_start: None,
            open: None,
        }
    }

    /// Feeds `buf` to the session unit by unit, calling `dispatch` after each (it answers the
    /// session's events), appending the replies to `out` and recording what happened, until
    /// the session can use no more of `buf` or an answer is pending. After a pending answer
    /// has been given to the session, call `feed` again: it first finishes that unit.
    pub(crate) fn feed(
        &mut self,
        session: &mut Session,
        buf: &mut BytesMut,
        out: &mut Vec<u8>,
        rec: &ShardRecorder,
        dispatch: &mut dyn FnMut(&mut Session) -> Dispatched,
    ) {
        if let Some(open) = self.open.take() {
            let d = dispatch(session);
            if d.pending {
                self.open = Some(open);
                return;
            }
            self.finish(open, session, out, rec);
        }
        loop {
            let state = session.state();
            let (len, kind) = if state == State::InData {
                (data_unit(buf), Unit::Data)
            } else if self.chunk_left > 0 {
                let left = usize::try_from(self.chunk_left).unwrap_or(usize::MAX);
                (left.min(buf.len()), Unit::Chunk)
            } else {
                let end = memchr::memchr(b'\n', buf).map_or(buf.len(), |p| p + 1);
                (end, Unit::Line)
            };
            let verb = (kind == Unit::Line && self.line_start && len > 0)
                .then(|| Verb::of_line(&buf[..len]));
            let bdat = match verb {
                Some(Verb::Bdat) => bdat_size(&buf[..len]),
                _ => None,
            };
            let ends_line = len > 0 && buf[len - 1] == b'\n';

            let fed_at = Instant::now();
            let total = buf.len();
            if len == total {
                session.handle_input_buf(fed_at, buf);
            } else {
                let rest = buf.split_off(len);
                session.handle_input_buf(fed_at, buf);
                buf.unsplit(rest);
            }
            let consumed = total - buf.len();
            let mid = session.state();
            // A message received in full waits for its verdict: its size is still readable.
            let received =
                (session.is_awaiting_reply() && in_data(mid)).then(|| session.envelope().data_size);
            let open = OpenUnit {
                kind,
                len,
                consumed,
                verb,
                bdat,
                ends_line,
                fed_at,
                before: state,
                mid,
                received,
            };
            let d = dispatch(session);
            if d.pending {
                self.open = Some(open);
                return;
            }
            self.finish(open, session, out, rec);
            if d.answered {
                continue;
            }
            if session.is_closed() || buf.is_empty() || consumed < len {
                return;
            }
        }
    }

    /// Reads back the replies to `u` and records what they mean.
    fn finish(
        &mut self,
        u: OpenUnit,
        session: &mut Session,
        out: &mut Vec<u8>,
        rec: &ShardRecorder,
    ) {
        let mark = out.len();
        session.poll_output(out);
        let after = session.state();
        let mut r = rec.record();
        let mut first = None;
        let replies = for_each_reply(&out[mark..], |code| {
            r.counters.reply(code);
            first.get_or_insert(code);
        });
        if u.kind == Unit::Line && u.consumed > 0 {
            if let Some(v) = u.verb {
                r.counters.commands[v as usize] += 1;
                if v == Verb::Rcpt {
                    match first {
                        Some(200..=299) => r.counters.recipients_accepted += 1,
                        Some(_) => r.counters.recipients_rejected += 1,
                        None => {}
                    }
                }
            }
            self.line_start = u.consumed != u.len || u.ends_line;
            if let Some(size) = u.bdat.filter(|&s| s > 0 && replies == 0) {
                self.chunk_left = size;
            }
        } else if u.kind == Unit::Chunk {
            self.chunk_left -= u.consumed as u64;
        }
        if !in_transaction(u.before) && in_transaction(after) {
            self.transaction_start = Some(u.fed_at);
        }
        if !in_data(u.before) && (in_data(u.mid) || in_data(after)) {
            self.data_start = Some(u.fed_at);
        }
        let ended = (in_data(u.before) || in_data(u.mid)) && !in_data(after);
        let verdict_unit = u.kind != Unit::Line || u.bdat.is_some();
        if ended && verdict_unit {
            if let Some(result) = first.and_then(MessageResult::of_code) {
                let end = Instant::now();
                r.counters.messages[result as usize] += 1;
                if let Some(t) = self.transaction_start {
                    r.transaction.record(micros(end - t));
                }
                if let Some(t) = self.data_start {
                    r.data_phase.record(micros(end - t));
                }
                if let Some(size) = u.received {
                    r.counters.message_bytes += size;
                    r.message_size.record(size);
                }
            }
        }
        drop(r);
        if !in_transaction(after) {
            self.transaction_start = None;
        }
        if !in_data(after) {
            self.data_start = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::labels::error_code_slot;
    use crate::metrics::Hub;
    use crate::proto::{Event, Reply, SessionConfig};
    use std::sync::Arc;
    use std::time::Duration;

    /// A handler stand-in: accepts everything, but answers `process_message` with `verdict`
    /// (None = the default 250) and refuses recipients whose address starts with "nobody".
    fn decide(session: &Session, ev: &Event, verdict: Option<u16>) -> Option<Reply> {
        match ev {
            Event::Rcpt => session
                .pending_recipient()
                .filter(|(m, _)| m.to_string().starts_with("nobody"))
                .map(|_| Reply::plain(550, "no such user")),
            Event::DataEnd => verdict.map(|c| Reply::plain(c, "verdict")),
            _ => None,
        }
    }

    /// Answers every queued event at once; true if a decision was answered.
    fn answer(session: &mut Session, verdict: Option<u16>) -> bool {
        let mut answered = false;
        while let Some(ev) = session.poll_event() {
            if ev.needs_reply() {
                let reply = decide(session, &ev, verdict);
                session.handler_reply(reply);
                answered = true;
            }
        }
        answered
    }

    /// Like `answer`, but every decision is answered "later": it is parked in `later` and
    /// dispatching stops, as with `Answer::Later` in the server.
    fn answer_later(
        session: &mut Session,
        verdict: Option<u16>,
        later: &mut Option<Option<Reply>>,
    ) -> Dispatched {
        while later.is_none() {
            let Some(ev) = session.poll_event() else {
                break;
            };
            if ev.needs_reply() {
                *later = Some(decide(session, &ev, verdict));
            }
        }
        Dispatched {
            answered: false,
            pending: later.is_some(),
        }
    }

    fn config() -> Arc<SessionConfig> {
        Arc::new(SessionConfig {
            data_size_limit: 100,
            ..SessionConfig::default()
        })
    }

    fn peer() -> core::net::SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    /// Runs `input`, delivered in `pieces` of at most that many octets, the plain way.
    fn plain(input: &[u8], piece: usize, verdict: Option<u16>) -> Vec<u8> {
        let mut s = Session::new(config(), peer(), Instant::now());
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut chunks = input.chunks(piece.max(1)).peekable();
        loop {
            loop {
                s.handle_input_buf(Instant::now(), &mut buf);
                if !answer(&mut s, verdict) {
                    break;
                }
            }
            s.poll_output(&mut out);
            match chunks.next() {
                Some(c) if !s.is_closed() => buf.extend_from_slice(c),
                _ => return out,
            }
        }
    }

    /// Runs `input` the metered way; returns the output and what was recorded.
    fn metered(
        input: &[u8],
        piece: usize,
        verdict: Option<u16>,
        defer: bool,
    ) -> (Vec<u8>, crate::metrics::Merged) {
        let (_, drain) = tokio::sync::watch::channel(false);
        let hub = Arc::new(Hub::new(
            1,
            Duration::from_secs(1),
            "epoll".into(),
            false,
            drain,
        ));
        let rec = ShardRecorder::new(hub.clone(), 0);
        let mut tap = Tap::new();
        let mut s = Session::new(config(), peer(), Instant::now());
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut chunks = input.chunks(piece.max(1));
        let mut later = None;
        loop {
            tap.feed(&mut s, &mut buf, &mut out, &rec, &mut |s| {
                if defer {
                    answer_later(s, verdict, &mut later)
                } else {
                    let answered = answer(s, verdict);
                    Dispatched {
                        answered,
                        pending: false,
                    }
                }
            });
            if let Some(reply) = later.take() {
                s.handler_reply(reply);
                continue;
            }
            match chunks.next() {
                Some(c) if !s.is_closed() => buf.extend_from_slice(c),
                _ => break,
            }
        }
        rec.publish(0, 0, true);
        (out, hub.merged())
    }

    const TRANSCRIPT: &[u8] = b"EHLO client\r\n\
        MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<nobody@example.org>\r\n\
        DATA\r\nSubject: one\r\n\r\n..dot\r\nbody\r\n.\r\n\
        MAIL FROM:<a@example.org> SIZE=20\r\nRCPT TO:<b@example.org>\r\nDATA\r\n\
        bare\nline\r\n.\r\nNOOP\r\n\
        MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n\
        0123456789012345678901234567890123456789012345678901234567890123456789\r\n\
        0123456789012345678901234567890123456789012345678901234567890123456789\r\n.\r\nRSET\r\n\
        MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nBDAT 5\r\nhelloBDAT 6 LAST\r\n world\
        MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nBDAT 0 LAST\r\n\
        MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nBDAT 200\r\n";

    fn transcript() -> Vec<u8> {
        let mut t = TRANSCRIPT.to_vec();
        t.extend(std::iter::repeat_n(b'x', 200));
        t.extend_from_slice(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nRSET\r\n");
        t.extend_from_slice(b"FOO\r\n");
        t.extend(std::iter::repeat_n(b'y', 700));
        t.extend_from_slice(b"\r\nQUIT\r\n");
        t
    }

    #[test]
    fn metered_feeding_writes_the_same_replies() {
        let input = transcript();
        for (piece, defer) in [1, 2, 3, 5, 7, 64, 4096]
            .iter()
            .flat_map(|&p| [(p, false), (p, true)])
        {
            for verdict in [None, Some(451), Some(554)] {
                let want = plain(&input, piece, verdict);
                let (got, _) = metered(&input, piece, verdict, defer);
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want),
                    "piece {piece}, defer {defer}, verdict {verdict:?}"
                );
            }
        }
    }

    #[test]
    fn records_commands_verdicts_and_sizes() {
        let input = transcript();
        for (piece, defer) in [
            (1, false),
            (1, true),
            (3, false),
            (4096, false),
            (4096, true),
        ] {
            let (_, m) = metered(&input, piece, None, defer);
            let c = &m.total.counters;
            let count = |v: Verb| c.commands[v as usize];
            assert_eq!(count(Verb::Ehlo), 1, "piece {piece}");
            assert_eq!(count(Verb::Mail), 7);
            assert_eq!(count(Verb::Rcpt), 8);
            assert_eq!(count(Verb::Data), 3);
            assert_eq!(count(Verb::Bdat), 4);
            assert_eq!(count(Verb::Noop), 1);
            assert_eq!(count(Verb::Rset), 2);
            assert_eq!(count(Verb::Quit), 1);
            // FOO and the over-long line (counted once, not once per piece of it).
            assert_eq!(count(Verb::Unknown), 2, "piece {piece}");
            assert_eq!(c.recipients_accepted, 7);
            assert_eq!(c.recipients_rejected, 1);
            // Accepted: the first DATA message, the BDAT message, the empty BDAT message.
            // Rejected by the session: bare LF (554), too big at the dot (552), too big BDAT (552).
            assert_eq!(c.messages, [3, 3, 0], "piece {piece}");
            assert_eq!(c.error_replies[error_code_slot(552).unwrap()], 2);
            assert_eq!(c.error_replies[error_code_slot(554).unwrap()], 1);
            assert_eq!(c.error_replies[error_code_slot(550).unwrap()], 1);
            assert_eq!(c.message_bytes, 28 + 11);
            assert_eq!(m.total.message_size.count(), 3);
            assert_eq!(m.total.transaction.count(), 6);
            assert_eq!(m.total.data_phase.count(), 6);
        }
    }

    #[test]
    fn handler_verdicts_set_the_result() {
        let input = transcript();
        let (_, m) = metered(&input, 4096, Some(451), false);
        assert_eq!(m.total.counters.messages, [0, 3, 3]);
        let (_, m) = metered(&input, 4096, Some(554), true);
        assert_eq!(m.total.counters.messages, [0, 6, 0]);
    }

    #[test]
    fn data_units_stop_at_possible_terminators() {
        assert_eq!(data_unit(b".\r\nMAIL"), 3);
        assert_eq!(data_unit(b"abc\r\n.\r\nQUIT\r\n"), 8);
        assert_eq!(data_unit(b"abc\r\n..\r\n"), 9);
        assert_eq!(data_unit(b""), 0);
    }
}
