//! A connection's unread input: the chunks the driver received (pool buffers under io_uring),
//! fed to the session as they are, so DATA reaches the handler as views of those buffers.
//!
//! Contract: input is fed in order and every octet exactly once. Where the session needs more
//! octets than the front chunk holds (a command line, or up to two octets of a possible DATA
//! terminator, split across chunks), the remainder is joined with a prefix of the next chunk,
//! never more than it needs. A remainder left waiting for input that has not arrived yet is
//! copied out of its pool buffer, so a partial line never holds a buffer (an empty pool must
//! not wait on connections that wait for input). Input held while the session waits for its
//! handler stays in its buffers; the driver's receive is paused meanwhile.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};

use super::transcript::Transcript;
use crate::proto::{Session, State};

/// The smallest prefix of the next chunk joined to a remainder.
const MIN_JOIN: usize = 64;

/// Unread input, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Input {
    chunks: VecDeque<Bytes>,
    /// The front chunk is our own copy (joined or copied out), not a driver buffer.
    front_owned: bool,
}

impl Input {
    /// Appends a received chunk.
    pub(super) fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.chunks.push_back(chunk);
        }
    }

    /// True when nothing is left to feed.
    pub(super) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Offers the input to the session once: true if the session took octets (or two chunks
    /// were joined), so its events should be dispatched and the feed repeated.
    /// A transcript, when there is one, sees the octets the session took.
    pub(super) fn step(
        &mut self,
        session: &mut Session,
        now: Instant,
        transcript: Option<&mut Transcript>,
    ) -> bool {
        let Some(front) = self.chunks.front_mut() else {
            return false;
        };
        let in_data = session.state() == State::InData;
        let used = session.handle_input_bytes(now, front);
        if let (Some(t), true) = (transcript, used > 0) {
            t.input(in_data, &front[..used.min(front.len())]);
        }
        if used > 0 {
            if used >= front.len() {
                self.chunks.pop_front();
                self.front_owned = false;
            } else {
                front.advance(used);
            }
            return true;
        }
        if session.is_awaiting_reply() || session.starttls_requested() || session.is_closed() {
            // Held for the handler (or the TLS switch): the session reads on later.
            return false;
        }
        if self.chunks.len() < 2 {
            return false;
        }
        // The session needs octets from the next chunk to go on: join just enough.
        let first = self.chunks.pop_front().expect("two chunks");
        let next = self.chunks.front_mut().expect("two chunks");
        let take = next.len().min(first.len().max(MIN_JOIN));
        let mut joined = BytesMut::with_capacity(first.len() + take);
        joined.extend_from_slice(&first);
        joined.extend_from_slice(&next[..take]);
        next.advance(take);
        if next.is_empty() {
            self.chunks.pop_front();
        }
        self.chunks.push_front(joined.freeze());
        self.front_owned = true;
        true
    }

    /// Called when the session can take nothing more until new input arrives: a remainder
    /// still in a driver buffer is copied out so the buffer can go back to its pool.
    pub(super) fn settle(&mut self, session: &Session) {
        if self.front_owned || self.chunks.len() != 1 || session.is_awaiting_reply() {
            return;
        }
        if let Some(front) = self.chunks.front_mut() {
            *front = Bytes::copy_from_slice(front);
            self.front_owned = true;
        }
    }
}
