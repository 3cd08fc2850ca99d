//! The printer thread behind `debug`: shards hand it whole message blocks, and it writes each
//! one (then flushes) before the message's end of data is answered.
//!
//! Contract: a message is acknowledged (250) only after its block was written; the queue is
//! `BlockWriter`'s, bounded, so a stdout that is slow or never read holds the clients back
//! instead of growing memory; once a write fails (EPIPE: the reader went away) every message
//! from then on gets 451 and one line on stderr says why. Blocks never interleave. `finish`
//! waits for the printer at most a given time, so an unread stdout cannot keep the process
//! from exiting.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::block_writer::{BlockQueue, BlockWriter};
use crate::proto::{EnhancedCode, Reply};

/// The printer thread; `finish` stops it.
#[derive(Debug)]
pub struct Printer {
    writer: BlockWriter,
    failed: Arc<AtomicBool>,
}

/// Where shards send blocks (cheap to clone: one per shard handler).
#[derive(Clone, Debug)]
pub struct PrintQueue {
    queue: BlockQueue,
    failed: Arc<AtomicBool>,
}

impl Printer {
    /// Starts a printer writing blocks to `out` (normally stdout).
    pub fn start(mut out: impl Write + Send + 'static) -> Self {
        let failed = Arc::new(AtomicBool::new(false));
        let failed_here = failed.clone();
        let writer = BlockWriter::start("ringrelay-printer", move |block| {
            if failed_here.load(Ordering::Acquire) {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            let r = out.write_all(block).and_then(|_| out.flush());
            if let Err(e) = &r {
                if !failed_here.swap(true, Ordering::AcqRel) {
                    eprintln!(
                        "ringrelay: cannot write messages to the output ({e}); \
                         messages are refused with 451 from now on"
                    );
                }
            }
            r
        })
        .expect("spawn printer thread");
        Self { writer, failed }
    }

    /// The queue shards print through.
    pub fn queue(&self) -> PrintQueue {
        PrintQueue {
            queue: self.writer.queue(),
            failed: self.failed.clone(),
        }
    }

    /// Stops taking blocks and waits (at most `limit`) until every block sent before is
    /// written. Returns false when the printer was still blocked at the limit (an output
    /// nobody reads); the blocks it holds were never acknowledged. Queues still held elsewhere
    /// (a shard not yet torn down) get 451 from then on.
    pub fn finish(self, limit: Duration) -> bool {
        self.writer.finish(limit)
    }
}

impl PrintQueue {
    /// Prints `block` and resolves once it is written: `None` (the default 250), or a 451
    /// when it cannot be written. Waits while the queue is full.
    pub async fn print(&self, block: Vec<u8>) -> Option<Reply> {
        if self.failed.load(Ordering::Acquire) {
            return Some(not_recorded());
        }
        self.queue.write(block).await.err().map(|_| not_recorded())
    }
}

fn not_recorded() -> Reply {
    Reply::new(
        451,
        EnhancedCode::new(4, 3, 0),
        "Cannot record the message now (output unavailable), try again later",
    )
}
