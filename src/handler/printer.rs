//! The printer thread behind `debug`: shards hand it whole message blocks, and it writes each
//! one (then flushes) before the message's end of data is answered.
//!
//! Contract: a message is acknowledged (250) only after its block was written; what waits to
//! be written is bounded (`QUEUE_BYTES`), so a stdout that is slow or never read holds the
//! clients back instead of growing memory; once a write fails (EPIPE: the reader went away)
//! every message from then on gets 451 and one line on stderr says why. Blocks never
//! interleave. `finish` waits for the printer at most a given time, so an unread stdout
//! cannot keep the process from exiting.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::proto::{EnhancedCode, Reply};

/// Octets of blocks that may wait for the printer (in KiB permits).
const QUEUE_KIB: u32 = 64 * 1024;

/// What the printer thread is asked to do, in order.
enum Msg {
    /// Print a block.
    Print(Job),
    /// Every block sent before is written: stop (`Printer::finish`).
    Stop,
}

/// One block to print and where to say it was printed.
struct Job {
    block: Vec<u8>,
    done: oneshot::Sender<io::Result<()>>,
    /// Its share of the queue budget, given back once written.
    _permit: OwnedSemaphorePermit,
}

/// The printer thread; `finish` stops it.
#[derive(Debug)]
pub struct Printer {
    out: PrintQueue,
    thread: thread::JoinHandle<()>,
}

/// Where shards send blocks (cheap to clone: one per shard handler).
#[derive(Clone, Debug)]
pub struct PrintQueue {
    tx: mpsc::UnboundedSender<Msg>,
    budget: Arc<Semaphore>,
    failed: Arc<AtomicBool>,
}

impl Printer {
    /// Starts a printer writing blocks to `out` (normally stdout).
    pub fn start(mut out: impl Write + Send + 'static) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let failed = Arc::new(AtomicBool::new(false));
        let failed_here = failed.clone();
        let thread = thread::Builder::new()
            .name("ringrelay-printer".into())
            .spawn(move || {
                while let Some(Msg::Print(job)) = rx.blocking_recv() {
                    let r = if failed_here.load(Ordering::Acquire) {
                        Err(io::Error::from(io::ErrorKind::BrokenPipe))
                    } else {
                        out.write_all(&job.block).and_then(|_| out.flush())
                    };
                    if let Err(e) = &r {
                        if !failed_here.swap(true, Ordering::AcqRel) {
                            eprintln!(
                                "ringrelay: cannot write messages to the output ({e}); \
                                 messages are refused with 451 from now on"
                            );
                        }
                    }
                    let _ = job.done.send(r);
                }
            })
            .expect("spawn printer thread");
        Self {
            out: PrintQueue {
                tx,
                budget: Arc::new(Semaphore::new(QUEUE_KIB as usize)),
                failed,
            },
            thread,
        }
    }

    /// The queue shards print through.
    pub fn queue(&self) -> PrintQueue {
        self.out.clone()
    }

    /// Stops taking blocks and waits (at most `limit`) until every block sent before is
    /// written. Returns false when the printer was still blocked at the limit (an output
    /// nobody reads); the blocks it holds were never acknowledged. Queues still held elsewhere
    /// (a shard not yet torn down) get 451 from then on.
    pub fn finish(self, limit: Duration) -> bool {
        let _ = self.out.tx.send(Msg::Stop);
        drop(self.out);
        let deadline = Instant::now() + limit;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.thread.join();
        true
    }
}

impl PrintQueue {
    /// Prints `block` and resolves once it is written: `None` (the default 250), or a 451
    /// when it cannot be written. Waits while the queue is full.
    pub async fn print(&self, block: Vec<u8>) -> Option<Reply> {
        if self.failed.load(Ordering::Acquire) {
            return Some(not_recorded());
        }
        let kib = (block.len() / 1024 + 1).min(QUEUE_KIB as usize) as u32;
        let Ok(permit) = self.budget.clone().acquire_many_owned(kib).await else {
            return Some(not_recorded());
        };
        let (done, written) = oneshot::channel();
        let job = Job {
            block,
            done,
            _permit: permit,
        };
        if self.tx.send(Msg::Print(job)).is_err() {
            return Some(not_recorded());
        }
        match written.await {
            Ok(Ok(())) => None,
            _ => Some(not_recorded()),
        }
    }
}

fn not_recorded() -> Reply {
    Reply::new(
        451,
        EnhancedCode::new(4, 3, 0),
        "Cannot record the message now (output unavailable), try again later",
    )
}
