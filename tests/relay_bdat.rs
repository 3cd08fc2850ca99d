//! The relay with a BDAT (CHUNKING) client: a message that can no longer be delivered fails
//! at the end of the chunk that learns it, not only at BDAT LAST, so the client stops
//! sending (RFC 3030 §4.2), and the chunks it had already pipelined get the same reply
//! without ending the session. Real scripted upstreams (tests/peers/relay_upstream.py), both
//! I/O drivers.

mod common;
mod relay_common;

use common::*;
use relay_common::*;
use std::time::Duration;

fn chunk(c: &mut Client, body: &[u8], last: bool) {
    let verb = if last { " LAST" } else { "" };
    c.send(format!("BDAT {}{verb}\r\n", body.len()).as_bytes());
    c.send(body);
}

/// The upstream closes its connection in the middle of the message: the next chunk gets
/// 451 at once, the chunks pipelined behind it get the same 451, and the session goes on.
#[test]
fn intermediate_chunk_fails_once_the_upstream_dropped() {
    for io in IO_MODES {
        let mut up = Scripted::start("drop-mid-data");
        let server = proxy(io, &[up.port], &[]);
        let mut c = Client::connect(server.port());
        c.ehlo("bdat.example");
        c.ok("MAIL FROM:<a@example.com>");
        c.ok("RCPT TO:<b@example.com>");
        let mut first = tagged("dropped-bdat");
        first.extend_from_slice(&b"filler line\r\n".repeat(20));
        chunk(&mut c, &first, false);
        // Whether the drop is already known at the first chunk's end depends on timing.
        let (code, line) = c.reply();
        assert!(code == 250 || code == 451, "{io}: {line}");
        if code == 250 {
            up.wait_for("DROPPED 1");
            // The upstream's FIN reaches the relay's socket on loopback at once; give it a
            // moment all the same.
            std::thread::sleep(Duration::from_millis(200));
            // Three chunks in one write: the first learns of the drop, the rest follow it.
            let mut batch = Vec::new();
            for (n, last) in [(1, false), (2, false), (3, true)] {
                let body = format!("more {n}\r\n");
                let verb = if last { " LAST" } else { "" };
                batch.extend_from_slice(format!("BDAT {}{verb}\r\n", body.len()).as_bytes());
                batch.extend_from_slice(body.as_bytes());
            }
            c.send(&batch);
            for n in 1..=3 {
                let (code, line) = c.reply();
                assert_eq!(code, 451, "{io}: chunk {n}: {line}");
                assert!(line.contains("4.4."), "{io}: chunk {n}: {line}");
            }
        } else {
            // Already failed: the rest of the message is refused the same way.
            chunk(&mut c, b"rest\r\n", true);
            let (code, line) = c.reply();
            assert_eq!(code, 451, "{io}: {line}");
        }
        // The session is intact and not charged for the follow-on chunks.
        c.ok("NOOP");
        c.ok("RSET");
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert!(seen.delivered.is_empty(), "{io}: {}", seen.stdout);
    }
}

/// An upstream that refuses DATA: the client's first chunk gets the refusal itself, not
/// `250 octets received` followed by a refusal at BDAT LAST.
#[test]
fn first_chunk_gets_the_upstreams_refusal_of_data() {
    for io in IO_MODES {
        let (up, server, mut c) = scripted_relay(io, "data-554", &[], "bdat.example");
        c.ok("MAIL FROM:<a@example.com>");
        c.ok("RCPT TO:<b@example.com>");
        chunk(&mut c, &tagged("refused-data"), false);
        let (code, line) = c.reply();
        assert_eq!(code, 554, "{io}: {line}");
        chunk(&mut c, b"rest\r\n", true);
        let (code, line) = c.reply();
        assert_eq!(code, 554, "{io}: the follow-on chunk: {line}");
        // A new transaction starts clean: MAIL is accepted again.
        c.ok("MAIL FROM:<a@example.com>");
        c.ok("RSET");
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert!(seen.delivered.is_empty(), "{io}: {}", seen.stdout);
    }
}

/// The control case: a healthy upstream, several chunks, each answered 250 and the message
/// delivered whole.
#[test]
fn healthy_chunks_are_acknowledged_and_delivered() {
    for io in IO_MODES {
        let (up, server, mut c) = scripted_relay(io, "ok", &[], "bdat.example");
        c.ok("MAIL FROM:<a@example.com>");
        c.ok("RCPT TO:<b@example.com>");
        chunk(&mut c, &tagged("chunks-ok"), false);
        let line = c.expect(250);
        assert!(line.contains("octets received"), "{io}: {line}");
        chunk(&mut c, b"second\r\n", false);
        c.expect(250);
        chunk(&mut c, b"third\r\n", true);
        c.expect(250);
        c.quit();
        server.stop().assert_success();
        let seen = up.finish();
        assert_eq!(seen.delivered.len(), 1, "{io}: {}", seen.stdout);
    }
}
