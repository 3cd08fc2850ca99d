//! Unix-domain (stream) listeners: `--listen unix:/path`, for a load generator or an MTA on the
//! same machine (Postfix's `lmtp:unix:`, smtp-source's `unix:`), as smtp-sink offers them.
//!
//! Contract:
//! - The socket is bound under a temporary name in the same directory and renamed over the
//!   path, so the path always names a listening socket: a stale socket file of a crashed run
//!   is replaced, and a planned handover (`Sharing::Handover`) takes the path over while the
//!   old process drains on its now unnamed socket. (When the temporary name would be too
//!   long for a socket address, the old file is unlinked and the path bound directly.)
//! - Without a handover, a path where another process still accepts is refused (`InUse`).
//!   A path that is not a socket is refused as it is, never deleted.
//! - The file's mode is 0666, as smtp-sink and systemd make it: who may connect is decided by
//!   the directory's permissions.
//! - One socket serves every shard (Linux does not spread Unix-domain connections across
//!   SO_REUSEPORT sockets); each shard accepts on its own duplicate of it.
//! - `UnixPath` removes the file when the server ends, unless it was replaced meanwhile (a
//!   newer process's socket is left alone).

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::listener::{BindFailure, Sharing};

/// The longest path a Unix-domain socket address holds, with its terminating NUL (Linux's
/// `sun_path`).
const SUN_PATH_MAX: usize = 108;

/// A socket file this server created; removed on drop if it is still this server's.
#[derive(Debug)]
pub(crate) struct UnixPath {
    path: PathBuf,
    /// Device and inode of the socket file we bound.
    id: (u64, u64),
}

impl UnixPath {
    /// The socket's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixPath {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds a listening Unix-domain socket at `path` and `shards` handles to it.
pub(crate) fn bind_group(
    path: &Path,
    shards: usize,
    sharing: Sharing,
) -> Result<(Vec<UnixListener>, UnixPath), BindFailure> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(BindFailure::Other(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            )))
        }
        Ok(_) if sharing == Sharing::Exclusive && UnixStream::connect(path).is_ok() => {
            return Err(BindFailure::InUse);
        }
        _ => {}
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut temp_name = name.to_os_string();
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = dir.join(temp_name);
    let listener = if temp.as_os_str().len() < SUN_PATH_MAX {
        let _ = std::fs::remove_file(&temp);
        let listener = UnixListener::bind(&temp)?;
        let placed = (|| {
            std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o666))?;
            std::fs::rename(&temp, path)
        })();
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&temp);
            return Err(e.into());
        }
        listener
    } else {
        // No room for a temporary name beside it (sun_path is 108 octets): the old socket,
        // stale or handed over, is unlinked first, and the path is bound directly.
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
        listener
    };
    let meta = std::fs::symlink_metadata(path)?;
    let guard = UnixPath {
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    };
    listener.set_nonblocking(true)?;
    let mut out = Vec::with_capacity(shards);
    for _ in 1..shards {
        out.push(listener.try_clone()?);
    }
    out.push(listener);
    Ok((out, guard))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ringrelay-unix-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn binds_replaces_a_stale_socket_and_cleans_up() {
        let d = dir();
        let path = d.join("smtp.sock");
        // A stale socket: bound, then its listener gone.
        drop(UnixListener::bind(&path).unwrap());
        let (ls, guard) = bind_group(&path, 3, Sharing::Exclusive).unwrap();
        assert_eq!(ls.len(), 3);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        let mut c = UnixStream::connect(&path).unwrap();
        ls[1].set_nonblocking(false).unwrap();
        let (mut s, _) = ls[1].accept().unwrap();
        s.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        // Someone accepts there: a second exclusive bind is refused; a handover takes over.
        assert!(matches!(
            bind_group(&path, 1, Sharing::Exclusive),
            Err(BindFailure::InUse)
        ));
        let (_new, new_guard) = bind_group(&path, 1, Sharing::Handover).unwrap();
        // The old server ends: the path is the new one's and stays.
        drop((ls, guard));
        assert!(path.exists());
        drop(new_guard);
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "no temp left");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_path_with_no_room_for_a_temporary_name_is_bound_directly() {
        let d = dir();
        let used = d.as_os_str().len() + 1;
        // 107 octets in all: the longest path a socket address holds.
        let path = d.join("s".repeat(SUN_PATH_MAX - 1 - used));
        assert_eq!(path.as_os_str().len(), SUN_PATH_MAX - 1);
        drop(UnixListener::bind(&path).unwrap());
        let (ls, guard) = bind_group(&path, 1, Sharing::Exclusive).unwrap();
        UnixStream::connect(&path).unwrap();
        drop((ls, guard));
        assert!(!path.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_path_that_is_not_a_socket_is_left_alone() {
        let d = dir();
        let path = d.join("file");
        std::fs::write(&path, b"keep").unwrap();
        match bind_group(&path, 1, Sharing::Handover) {
            Err(BindFailure::Other(e)) => assert!(e.to_string().contains("not a socket"), "{e}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
