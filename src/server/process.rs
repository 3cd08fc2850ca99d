//! Process-wide concerns of the control thread: SIGTERM/SIGINT (drain and exit), SIGHUP (the
//! configured `Reloader` runs: settings are re-read and swapped in, or a bad new set is refused
//! and the old one stays; without one it is noted and changes nothing), and the open-files
//! limit that many connections need.

use std::sync::Arc;

/// What a SIGHUP runs: re-reads the settings and stores the new ones (`crate::reload::Swap`);
/// `Ok` says what changed, `Err` why nothing did.
#[derive(Clone)]
pub struct Reloader(pub Arc<dyn Fn() -> Result<String, String> + Send + Sync>);

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reloader")
    }
}

/// SIGTERM, SIGINT and SIGHUP.
pub(super) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub(super) fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Waits for SIGTERM or SIGINT; a SIGHUP meanwhile reloads (or is noted, without a reloader).
pub(super) async fn wait_signal(signals: &mut Option<Signals>, reload: Option<&Reloader>) {
    match signals {
        Some(s) => loop {
            tokio::select! {
                _ = s.term.recv() => return,
                _ = s.int.recv() => return,
                _ = s.hup.recv() => match reload {
                    None => eprintln!(
                        "ringrelay: SIGHUP: this mode has nothing to reload; nothing changed, \
                         still serving"
                    ),
                    Some(r) => match (r.0)() {
                        Ok(what) => {
                            eprintln!("ringrelay: SIGHUP: reloaded: {what}");
                            tracing::info!(target: crate::log::CONNECTION, "reloaded: {what}");
                        }
                        Err(why) => {
                            eprintln!(
                                "ringrelay: SIGHUP: reload refused, the old settings stay: {why}"
                            );
                            tracing::warn!(
                                target: crate::log::CONNECTION,
                                "reload refused, the old settings stay: {why}"
                            );
                        }
                    },
                },
            }
        },
        None => std::future::pending().await,
    }
}

/// Raises the soft open-file limit to the hard limit (many connections need many descriptors).
pub(super) fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on this process.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
