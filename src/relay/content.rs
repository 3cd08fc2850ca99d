//! What the relay does to a message's content on its way upstream, chunk by chunk as the
//! client sends it: the loop guard counts the `Received:` fields of its header section, content
//! that came by BDAT is dot-stuffed for the upstream's DATA, and the seed's `X-Peer:` field is
//! placed (`--x-peer`). Everything stays a zero-copy view of the client's chunks. Knows nothing
//! of the upstream: the transaction writes what comes out.

use bytes::Bytes;

use super::headers::LoopGuard;
use super::reply_map::mail_loop;
use super::x_peer::XPeer;
use crate::client::message::BodyEncoder;
use crate::proto::{DataChunk, Reply};

/// How the client framed the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// DATA: the chunks' wire form is already dot-stuffed and goes out as it is.
    Data,
    /// BDAT: the content is stuffed here, for the upstream's DATA.
    Bdat,
}

/// One message's outgoing content.
#[derive(Debug)]
pub(super) struct Outgoing {
    guard: LoopGuard,
    /// BDAT content to dot-stuff.
    stuffer: Option<BodyEncoder>,
    /// Places `X-Peer:`, when on.
    x_peer: Option<XPeer>,
}

impl Outgoing {
    /// The content of a message framed as `framing`, with `X-Peer:` placed when `x_peer`.
    pub(super) fn new(framing: Framing, x_peer: Option<XPeer>) -> Self {
        Self {
            guard: LoopGuard::default(),
            stuffer: (framing == Framing::Bdat).then(|| BodyEncoder::new(true)),
            x_peer,
        }
    }

    /// The wire pieces for one chunk; `Err` with our refusal once the message is seen to
    /// loop (it must then not be delivered).
    pub(super) fn pass(&mut self, chunk: &DataChunk) -> Result<Vec<Bytes>, Reply> {
        if self.guard.looping() {
            return Err(mail_loop());
        }
        for piece in chunk.content() {
            self.guard.feed(&piece);
        }
        if self.guard.looping() {
            return Err(mail_loop());
        }
        let mut pieces = Vec::new();
        match self.stuffer.as_mut() {
            Some(enc) => {
                for piece in chunk.content() {
                    enc.encode(&piece, &mut pieces);
                }
            }
            None => pieces.push(chunk.wire().clone()),
        }
        Ok(self.place(pieces))
    }

    /// The last pieces, at the end of the message: the line end stuffed content needs before
    /// the terminator, and `X-Peer:` if the message had no header section end to put it at.
    pub(super) fn finish(mut self) -> Vec<Bytes> {
        let mut tail = Vec::new();
        if let Some(enc) = self.stuffer.as_mut() {
            enc.finish(&mut tail);
        }
        let mut tail = self.place(tail);
        if let Some(x) = self.x_peer.as_mut() {
            x.finish(&mut tail);
        }
        tail
    }

    /// Passes `pieces` through the `X-Peer:` placer, if there is one.
    fn place(&mut self, pieces: Vec<Bytes>) -> Vec<Bytes> {
        let Some(x) = self.x_peer.as_mut() else {
            return pieces;
        };
        let mut placed = Vec::with_capacity(pieces.len() + 2);
        for p in pieces {
            x.pass(p, &mut placed);
        }
        placed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(out: &[Bytes]) -> Vec<u8> {
        out.concat()
    }

    #[test]
    fn data_passes_wire_bdat_is_stuffed_x_peer_placed() {
        let chunk = DataChunk::new(Bytes::from_static(b"Subject: s\r\n\r\n..dot\r\n"), vec![14]);
        let mut data = Outgoing::new(Framing::Data, None);
        assert_eq!(
            wire(&data.pass(&chunk).unwrap()),
            b"Subject: s\r\n\r\n..dot\r\n"
        );
        assert!(data.finish().is_empty());

        let bdat_chunk = DataChunk::new(Bytes::from_static(b"Subject: s\r\n\r\n.dot"), vec![]);
        let peer = XPeer::new("192.0.2.9".parse().unwrap());
        let mut bdat = Outgoing::new(Framing::Bdat, Some(peer));
        assert_eq!(
            wire(&bdat.pass(&bdat_chunk).unwrap()),
            b"Subject: s\r\nX-Peer: 192.0.2.9\r\n\r\n..dot"
        );
        assert_eq!(wire(&bdat.finish()), b"\r\n");
    }

    #[test]
    fn looping_message_is_refused_from_the_chunk_that_shows_it() {
        let hops = "Received: from x\r\n".repeat(101);
        let mut out = Outgoing::new(Framing::Data, None);
        let first = DataChunk::new(Bytes::from(hops[..900].to_string()), vec![]);
        assert!(out.pass(&first).is_ok());
        let rest = DataChunk::new(Bytes::from(hops[900..].to_string()), vec![]);
        assert_eq!(out.pass(&rest).unwrap_err().code(), 554);
        let more = DataChunk::new(Bytes::from_static(b"\r\nbody\r\n"), vec![]);
        assert_eq!(out.pass(&more).unwrap_err().code(), 554);
    }
}
