//! Process-wide concerns of the control thread: SIGTERM/SIGINT, and the open-files limit that
//! many connections need.

/// SIGTERM and SIGINT.
pub(super) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(super) fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

pub(super) async fn wait_signal(signals: &mut Option<Signals>) {
    match signals {
        Some(s) => {
            tokio::select! {
                _ = s.term.recv() => {}
                _ = s.int.recv() => {}
            }
        }
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
