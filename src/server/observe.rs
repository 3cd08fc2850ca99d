//! Turns the session's observations into shard metrics: commands by verb, recipient
//! outcomes, message verdicts (including the session's own refusals at end of data, which no
//! handler event shows) and the transaction and data-phase timings. The session does the
//! accounting where the protocol happens (`Session::set_observing`); this only times and
//! records it. Replies by class and code are counted from the output bytes in `conn`.

use std::time::Instant;

use crate::metrics::labels::{MessageResult, RefusalStage, Verb};
use crate::metrics::ShardRecorder;
use crate::proto::{Observation, Session};

/// Per-connection timing state.
#[derive(Debug, Default)]
pub(crate) struct Observer {
    transaction_start: Option<Instant>,
    data_start: Option<Instant>,
    /// A message verdict was just counted: the BDAT LAST reply that carries it is not
    /// counted again as a data-stage refusal.
    verdict_counted: bool,
}

/// Counts a 4xx or 5xx reply at `stage` (other classes are not refusals).
fn refusal(counts: &mut [[u64; 2]; RefusalStage::COUNT], stage: RefusalStage, code: u16) {
    match code / 100 {
        4 => counts[stage as usize][0] += 1,
        5 => counts[stage as usize][1] += 1,
        _ => {}
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Observer {
    /// Records everything the session observed since the last call.
    pub(crate) fn record(&mut self, session: &mut Session, rec: &ShardRecorder) {
        let Some(first) = session.poll_observation() else {
            return;
        };
        let now = Instant::now();
        let mut r = rec.record();
        let mut next = Some(first);
        while let Some(o) = next {
            match o {
                Observation::Command { verb, code } => {
                    r.counters.commands[verb as usize] += 1;
                    let counted = std::mem::take(&mut self.verdict_counted);
                    if !(counted && verb == Verb::Bdat) {
                        refusal(&mut r.counters.refusals, RefusalStage::of_verb(verb), code);
                    }
                    if verb == Verb::Rcpt {
                        if (200..300).contains(&code) {
                            r.counters.recipients_accepted += 1;
                        } else {
                            r.counters.recipients_rejected += 1;
                        }
                    }
                }
                Observation::TransactionStart => self.transaction_start = Some(now),
                Observation::DataStart => self.data_start = Some(now),
                Observation::Message { code, size } => {
                    if let Some(result) = MessageResult::of_code(code) {
                        r.counters.messages[result as usize] += 1;
                    }
                    refusal(&mut r.counters.refusals, RefusalStage::EndOfData, code);
                    self.verdict_counted = true;
                    if let Some(t) = self.transaction_start.take() {
                        r.transaction.record(micros(now - t));
                    }
                    if let Some(t) = self.data_start.take() {
                        r.data_phase.record(micros(now - t));
                    }
                    if let Some(size) = size {
                        r.counters.message_bytes += size;
                        r.message_size.record(size);
                    }
                }
            }
            next = session.poll_observation();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::labels::{error_code_slot, for_each_reply};
    use crate::metrics::Hub;
    use crate::proto::{Event, Reply, SessionConfig};
    use std::sync::Arc;
    use std::time::Duration;

    /// A handler stand-in: accepts everything, but answers the end of data with `verdict`
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

    /// Runs `input` in pieces with observing on; returns what was recorded.
    fn metered(input: &[u8], piece: usize, verdict: Option<u16>) -> crate::metrics::Merged {
        let (_, drain) = tokio::sync::watch::channel(false);
        let hub = Arc::new(Hub::new(
            1,
            Duration::from_secs(1),
            "epoll".into(),
            false,
            drain,
        ));
        let rec = ShardRecorder::new(hub.clone(), 0);
        let mut obs = Observer::default();
        let config = Arc::new(SessionConfig {
            data_size_limit: 100,
            ..SessionConfig::default()
        });
        let mut s = Session::new(config, "127.0.0.1:40000".parse().unwrap(), Instant::now());
        s.set_observing(true);
        let mut pending = Vec::new();
        let mut out = Vec::new();
        let mut chunks = input.chunks(piece.max(1));
        loop {
            loop {
                let used = s.handle_input(Instant::now(), &pending);
                pending.drain(..used);
                let mut answered = false;
                while let Some(ev) = s.poll_event() {
                    if ev.needs_reply() {
                        let reply = decide(&s, &ev, verdict);
                        s.handler_reply(reply);
                        answered = true;
                    }
                }
                if !answered {
                    break;
                }
            }
            obs.record(&mut s, &rec);
            match chunks.next() {
                Some(c) if !s.is_closed() => pending.extend_from_slice(c),
                _ => break,
            }
        }
        s.poll_output(&mut out);
        {
            let mut r = rec.record();
            for_each_reply(&out, |code| r.counters.reply(code));
        }
        rec.publish(0, 0, true);
        hub.merged()
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
    fn records_commands_verdicts_and_sizes_at_every_split() {
        let input = transcript();
        for piece in [1, 2, 3, 7, 64, 4096] {
            let m = metered(&input, piece, None);
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
        let m = metered(&input, 4096, Some(451));
        assert_eq!(m.total.counters.messages, [0, 3, 3]);
        let m = metered(&input, 4096, Some(554));
        assert_eq!(m.total.counters.messages, [0, 6, 0]);
    }
}
