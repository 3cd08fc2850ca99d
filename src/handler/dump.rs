//! Message dumps for `sink` and `debug` (smtp-sink's `-d` and `-D`): each accepted message,
//! with the envelope headers smtp-sink writes, to a file of its own in a directory and/or
//! appended to one mbox-like file.
//!
//! Contract: shards format the block (`format_dump`) and hand it to one writer thread
//! (`Dumper`, a `BlockWriter`), off the shard's hot path; the end-of-data reply waits until the
//! block is written (`DumpQueue::write`), so an acknowledged message is always in the dump.
//! What waits to be written is bounded: a slow disk holds the clients back instead of
//! growing memory. A write that fails (a full disk) answers that message `452 4.3.1` and
//! leaves nothing of it behind (the partial file is removed, the appended file cut back);
//! the next message tries again. Files are written but not fsync'd (as smtp-sink).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use super::block_writer::{BlockQueue, BlockWriter};
use crate::proto::{EnhancedCode, Reply, Session};

/// Why the dumps cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The dump directory cannot be created.
    #[error("cannot create the dump directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// OS error.
        source: io::Error,
    },
    /// The dump file cannot be opened for appending.
    #[error("cannot open the dump file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: io::Error,
    },
}

/// The writer thread; it stops once every `DumpQueue` is dropped.
#[derive(Debug)]
pub struct Dumper {
    writer: BlockWriter,
}

/// Where shards send blocks (cheap to clone).
#[derive(Clone, Debug)]
pub struct DumpQueue {
    queue: BlockQueue,
}

/// The writer's targets.
struct Targets {
    dir: Option<PathBuf>,
    mbox: Option<(PathBuf, File)>,
    seq: u64,
}

impl Dumper {
    /// Starts a writer for a directory of one-message files and/or an appended file; the
    /// directory (and the file's directory) are created when missing.
    pub fn start(dir: Option<PathBuf>, mbox: Option<PathBuf>) -> Result<Self, DumpError> {
        if let Some(d) = &dir {
            std::fs::create_dir_all(d).map_err(|source| DumpError::Dir {
                path: d.clone(),
                source,
            })?;
        }
        let mbox = match mbox {
            Some(p) => {
                if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|source| DumpError::Dir {
                        path: parent.to_path_buf(),
                        source,
                    })?;
                }
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)
                    .map_err(|source| DumpError::File {
                        path: p.clone(),
                        source,
                    })?;
                Some((p, f))
            }
            None => None,
        };
        let mut targets = Targets { dir, mbox, seq: 0 };
        let writer = BlockWriter::start("ringrelay-dump", move |block| targets.write(block))
            .map_err(|source| DumpError::Dir {
                path: PathBuf::from("(writer thread)"),
                source,
            })?;
        Ok(Self { writer })
    }

    /// The queue shards write through.
    pub fn queue(&self) -> DumpQueue {
        DumpQueue {
            queue: self.writer.queue(),
        }
    }

    /// Stops taking blocks and waits (at most `limit`) until every block sent before is
    /// written. Returns false when the writer was still busy at the limit; queues still held
    /// elsewhere get 452 from then on.
    pub fn finish(self, limit: std::time::Duration) -> bool {
        self.writer.finish(limit)
    }
}

impl Targets {
    fn write(&mut self, block: &[u8]) -> io::Result<()> {
        if let Some(dir) = &self.dir {
            let secs = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let (path, mut f) = loop {
                self.seq += 1;
                let name = format!("{secs}.{}.{:08x}", std::process::id(), self.seq);
                let path = dir.join(name);
                match OpenOptions::new().write(true).create_new(true).open(&path) {
                    Ok(f) => break (path, f),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            };
            if let Err(e) = f.write_all(block).and_then(|_| f.flush()) {
                drop(f);
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        }
        if let Some((_, f)) = &mut self.mbox {
            let before = f.metadata()?.len();
            if let Err(e) = f.write_all(block).and_then(|_| f.flush()) {
                // Leave no partial message behind: the next one starts clean.
                let _ = f.set_len(before);
                return Err(e);
            }
        }
        Ok(())
    }
}

impl DumpQueue {
    /// Writes `block` and resolves once it is written: `None` (the caller's reply stands),
    /// or `452 4.3.1` when it cannot be written. Waits while the queue is full.
    pub async fn write(&self, block: Vec<u8>) -> Option<Reply> {
        self.queue.write(block).await.err().map(|_| not_written())
    }
}

fn not_written() -> Reply {
    Reply::new(
        452,
        EnhancedCode::new(4, 3, 1),
        "Error: insufficient system storage to record the message",
    )
}

/// The protocol as smtp-sink names it in `X-Client-Proto` and `Received`.
fn proto(session: &Session) -> &'static str {
    if session.is_lmtp() {
        "LMTP"
    } else if session.is_esmtp() {
        "ESMTP"
    } else {
        "SMTP"
    }
}

/// Formats one dump block as smtp-sink writes it: its headers, the `Received:` header, the
/// message (dot-unstuffed, lines ending in LF) and an empty line.
pub fn format_dump(session: &Session, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 512);
    let addr = match session.peer().ip() {
        // smtp-sink's word for a client on a Unix-domain socket.
        _ if session.is_local() => "local".to_string(),
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("ipv6:{a}"),
    };
    let proto = proto(session);
    let env = session.envelope();
    let mut h = format!("X-Client-Addr: {addr}\nX-Client-Proto: {proto}\n");
    if let Some(helo) = session.helo_name() {
        h.push_str(&format!("X-Helo-Args: {helo}\n"));
    }
    let from = env
        .mail_from
        .as_ref()
        .map_or(String::new(), |f| f.to_string());
    h.push_str(&format!("X-Mail-Args: <{from}>"));
    for o in &env.mail_options {
        h.push(' ');
        h.push_str(o);
    }
    h.push('\n');
    for (i, to) in env.rcpt_tos.iter().enumerate() {
        h.push_str(&format!("X-Rcpt-Args: <{to}>"));
        for o in env.rcpt_options.get(i).into_iter().flatten() {
            h.push(' ');
            h.push_str(o);
        }
        h.push('\n');
    }
    let helo = session
        .helo_name()
        .map_or_else(|| addr.clone(), str::to_string);
    let id = format!("{:08x}", random_id(message.len()));
    h.push_str(&format!(
        "Received: from {helo} ([{addr}])\n\tby {} (ringrelay) with {proto} id {id};\n\t{}\n",
        session.hostname(),
        crate::relay::headers::rfc5322_date(SystemTime::now()),
    ));
    out.extend_from_slice(h.as_bytes());
    let body = message.strip_suffix(b"\r\n").unwrap_or(message);
    if !message.is_empty() {
        for line in body.split(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
            out.push(b'\n');
        }
    }
    out.push(b'\n');
    out
}

/// A pseudo-random id for the `Received:` header (not a secret; only distinct).
fn random_id(salt: usize) -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(salt);
    h.finish() as u32
}
