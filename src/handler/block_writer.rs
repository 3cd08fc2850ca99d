//! A writer thread behind a bounded queue, shared by `debug`'s printer and the message dumps:
//! shards hand it whole blocks, and each block's writer learns when it was written (or why
//! not) before the message's end of data is answered.
//!
//! Contract: blocks are written in the order sent, one at a time, never interleaved; what
//! waits to be written is bounded (`QUEUE_KIB` KiB; a block larger than the budget takes it
//! all), so a slow or stuck output holds the clients back instead of growing memory. `finish`
//! stops the thread once every block sent before is written, waiting at most a given time,
//! so an output nobody reads cannot keep the process from exiting; queues still held
//! elsewhere then get an error for every block.

use std::io;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Octets of blocks that may wait for the writer (in KiB permits).
const QUEUE_KIB: u32 = 64 * 1024;

/// What the writer thread is asked to do, in order.
enum Msg {
    /// Write a block.
    Write(Job),
    /// Every block sent before is written: stop (`BlockWriter::finish`).
    Stop,
}

/// One block to write and where to say how it went.
struct Job {
    block: Vec<u8>,
    done: oneshot::Sender<io::Result<()>>,
    /// Its share of the queue budget, given back once written.
    _permit: OwnedSemaphorePermit,
}

/// The writer thread; `finish` stops it.
#[derive(Debug)]
pub(crate) struct BlockWriter {
    queue: BlockQueue,
    thread: thread::JoinHandle<()>,
}

/// Where shards send blocks (cheap to clone: one per shard handler).
#[derive(Clone, Debug)]
pub(crate) struct BlockQueue {
    tx: mpsc::UnboundedSender<Msg>,
    budget: Arc<Semaphore>,
}

impl BlockWriter {
    /// Starts a thread named `name` that hands each block to `write`.
    pub(crate) fn start(
        name: &str,
        mut write: impl FnMut(&[u8]) -> io::Result<()> + Send + 'static,
    ) -> io::Result<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let thread = thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                while let Some(Msg::Write(job)) = rx.blocking_recv() {
                    let _ = job.done.send(write(&job.block));
                }
            })?;
        Ok(Self {
            queue: BlockQueue {
                tx,
                budget: Arc::new(Semaphore::new(QUEUE_KIB as usize)),
            },
            thread,
        })
    }

    /// The queue shards write through.
    pub(crate) fn queue(&self) -> BlockQueue {
        self.queue.clone()
    }

    /// Stops taking blocks and waits (at most `limit`) until every block sent before is
    /// written. Returns false when the writer was still busy at the limit (the blocks it
    /// holds were never acknowledged).
    pub(crate) fn finish(self, limit: Duration) -> bool {
        let _ = self.queue.tx.send(Msg::Stop);
        drop(self.queue);
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

impl BlockQueue {
    /// Writes `block`; resolves once it is written, or with why not (the write's error, or
    /// `BrokenPipe` when the writer has stopped). Waits while the queue is full.
    pub(crate) async fn write(&self, block: Vec<u8>) -> io::Result<()> {
        let stopped = || io::Error::from(io::ErrorKind::BrokenPipe);
        let kib = (block.len() / 1024 + 1).min(QUEUE_KIB as usize) as u32;
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(|_| stopped())?;
        let (done, written) = oneshot::channel();
        let job = Job {
            block,
            done,
            _permit: permit,
        };
        self.tx.send(Msg::Write(job)).map_err(|_| stopped())?;
        written.await.unwrap_or_else(|_| Err(stopped()))
    }
}
