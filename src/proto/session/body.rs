//! Receiving message bodies: the DATA and BDAT input modes, the scanned pieces turned into
//! chunk events (counted against the size limit), and the verdict at the body's end.
//! Part of `Session`; see the parent module for the contract.

use bytes::Bytes;

use super::super::data::{DataChunk, PieceSource};
use super::super::event::{Event, Observation};
use super::super::reply::{EnhancedCode, Reply};
use super::{Awaiting, Mode, Session};

impl Session {
    /// Scans DATA input from `input[pos..]`; returns octets consumed (0 = need more input).
    pub(super) fn data_step(&mut self, input: &[u8], pos: usize) -> usize {
        let Some(body) = self.body.as_mut() else {
            self.mode = Mode::Command;
            return 0;
        };
        let r = body.scanner.scan(&input[pos..], &mut self.pieces);
        self.data_octets += r.consumed as u64;
        self.emit_pieces(pos);
        if r.done {
            self.finish_body();
        }
        r.consumed
    }

    /// Takes the octets of the current BDAT chunk from `input[pos..]`.
    pub(super) fn bdat_step(&mut self, input: &[u8], pos: usize) -> usize {
        let Mode::Bdat(chunk) = &mut self.mode else {
            return 0;
        };
        let avail = (input.len() - pos) as u64;
        let take = chunk.remaining.min(avail) as usize;
        chunk.remaining -= take as u64;
        self.data_octets += take as u64;
        let accept = chunk.refusal.is_none();
        let done = chunk.remaining == 0;
        if accept {
            if let Some(body) = self.body.as_mut() {
                body.scanner.scan(&input[pos..pos + take], &mut self.pieces);
                self.emit_pieces(pos);
            }
        }
        if done {
            self.finish_bdat_chunk();
        }
        take
    }

    /// All octets of a BDAT chunk are in: answer it.
    pub(super) fn finish_bdat_chunk(&mut self) {
        let Mode::Bdat(chunk) = std::mem::replace(&mut self.mode, Mode::Command) else {
            return;
        };
        if let Some(refusal) = chunk.refusal {
            return if chunk.follow_on {
                self.follow_on_refusal(refusal)
            } else {
                self.protocol_error(refusal)
            };
        }
        let too_big = self.body.as_ref().is_some_and(|b| b.too_big);
        if too_big {
            // RFC 3030 §4.2: a 5xx to BDAT fails the whole transaction.
            self.abort_transaction();
            let reply = too_big_reply();
            self.observe(Observation::Message {
                code: reply.code(),
                size: None,
            });
            return self.write(&reply);
        }
        if chunk.last {
            if let Some(body) = self.body.as_mut() {
                body.scanner.finish(&mut self.pieces);
                self.emit_pieces(0);
            }
            self.finish_body();
        } else {
            self.decide(Awaiting::ChunkEnd(chunk.size), Event::ChunkEnd);
        }
    }

    /// The handler's verdict on an intermediate BDAT chunk: the default `250`, or a refusal
    /// that fails the whole transaction (RFC 3030 §4.2) and answers its remaining chunks.
    pub(super) fn apply_chunk_verdict(&mut self, size: u64, reply: Option<Reply>) {
        match reply {
            Some(r) if r.class() >= 4 => {
                self.abort_transaction();
                self.observe(Observation::Message {
                    code: r.code(),
                    size: None,
                });
                self.write(&r);
                self.failed_chunks = Some(r);
            }
            Some(r) if r.class() == 2 => self.write(&r),
            _ => {
                let text = format!("Ok: {size} octets received");
                self.write(&Reply::new(250, EnhancedCode::new(2, 0, 0), text));
            }
        }
    }

    /// The body is complete: refuse it for a broken rule, or ask the handler.
    fn finish_body(&mut self) {
        self.mode = Mode::Command;
        let Some(body) = self.body.as_ref() else {
            return;
        };
        let refusal = if body.too_big {
            Some(too_big_reply())
        } else if body.scanner.bare_line_ending && !self.normalizing() {
            Some(Reply::new(
                554,
                EnhancedCode::new(5, 6, 0),
                "Error: bare <CR> or <LF> in message; lines must end with <CR><LF>",
            ))
        } else if body.scanner.long_line {
            Some(Reply::new(
                554,
                EnhancedCode::new(5, 6, 0),
                format!(
                    "Error: message has a line longer than {} octets",
                    self.config.max_text_line
                ),
            ))
        } else {
            None
        };
        match refusal {
            Some(reply) => {
                self.abort_transaction();
                self.observe(Observation::Message {
                    code: reply.code(),
                    size: None,
                });
                self.write(&reply);
            }
            None => {
                self.decide(Awaiting::DataEnd, Event::DataEnd);
            }
        }
    }
}

fn too_big_reply() -> Reply {
    Reply::new(
        552,
        EnhancedCode::new(5, 3, 4),
        "Error: message size exceeds fixed maximum message size",
    )
}

/// Scanned body pieces to chunk events (with their bytes fixed up once the input buffer is
/// known), and the size limit counted on the way.
impl Session {
    /// A message body begins now (354 given, or the first BDAT chunk taken).
    pub(super) fn body_started(&mut self) {
        self.data_started = Some(self.last_activity);
        self.data_octets = 0;
    }

    pub(super) fn resolve_fixups(
        &mut self,
        mut bytes_of: impl FnMut(std::ops::Range<usize>) -> Bytes,
    ) {
        for (index, range) in self.fixups.drain(..) {
            if let Some(Event::DataChunk(chunk)) = self.events.get_mut(index) {
                chunk.set_wire(bytes_of(range));
            }
        }
    }

    /// Turns scanned pieces (offsets relative to `base` in the input) into chunk events and
    /// counts their content against the size limit.
    pub(super) fn emit_pieces(&mut self, base: usize) {
        let limit = self.config.data_size_limit;
        let mut pieces = std::mem::take(&mut self.pieces);
        for piece in pieces.drain(..) {
            let len = match &piece.source {
                PieceSource::Input(r) => r.len(),
                PieceSource::Static(b) => b.len(),
            };
            self.envelope.data_size += (len - piece.dots.len()) as u64;
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            if limit != 0 && self.envelope.data_size > limit {
                body.too_big = true;
            }
            if body.too_big || body.scanner.bare_line_ending && !self.normalizing() {
                continue;
            }
            match piece.source {
                PieceSource::Static(b) => self.events.push_back(Event::DataChunk(DataChunk::new(
                    Bytes::from_static(b),
                    piece.dots,
                ))),
                PieceSource::Input(r) => {
                    self.fixups
                        .push((self.events.len(), base + r.start..base + r.end));
                    self.events
                        .push_back(Event::DataChunk(DataChunk::new(Bytes::new(), piece.dots)));
                }
            }
        }
        self.pieces = pieces;
    }

    pub(super) fn normalizing(&self) -> bool {
        self.config.bare_line_endings == super::super::config::BareLineEndings::Normalize
    }
}
