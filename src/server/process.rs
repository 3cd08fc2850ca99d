//! Process-wide concerns of the control thread: SIGTERM/SIGINT (drain and exit), SIGHUP (no
//! reload yet: it is noted and changes nothing, instead of killing the process), and the
//! open-files limit that many connections need.

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

/// Waits for SIGTERM or SIGINT; a SIGHUP meanwhile is acknowledged on stderr and ignored.
pub(super) async fn wait_signal(signals: &mut Option<Signals>) {
    match signals {
        Some(s) => loop {
            tokio::select! {
                _ = s.term.recv() => return,
                _ = s.int.recv() => return,
                _ = s.hup.recv() => eprintln!(
                    "ringrelay: SIGHUP: configuration reload is not supported yet; \
                     nothing changed, still serving"
                ),
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
