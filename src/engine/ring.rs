//! The shard's io_uring instance: set up with the best flags this kernel accepts (probed, with
//! a graceful downgrade), submission that never loses an entry, and the one wait per loop turn.
//!
//! Contract: created and used on one thread (SINGLE_ISSUER). Every wait carries GETEVENTS, so
//! deferred task work (DEFER_TASKRUN) runs exactly when the loop asks for completions.

use std::io;
use std::time::Duration;

use io_uring::{cqueue, squeue, types, IoUring, Probe};

/// Which optional set-up flags the ring was created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    /// IORING_SETUP_SINGLE_ISSUER: only the shard's thread submits.
    pub single_issuer: bool,
    /// IORING_SETUP_DEFER_TASKRUN: completion work runs only when the loop waits.
    pub defer_taskrun: bool,
    /// IORING_SETUP_COOP_TASKRUN: no interrupting IPIs for completion work.
    pub coop_taskrun: bool,
    /// Provided buffers are consumed incrementally (IOU_PBUF_RING_INC, kernel 6.12); known
    /// once a pool has been registered (`engine::probe` tries one).
    pub incremental_buffers: bool,
    /// Buffers in each shard's DATA pool (0 until the pool is sized).
    pub buffers: u16,
    /// Size of each DATA pool buffer in octets.
    pub buffer_size: u32,
}

impl std::fmt::Display for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names = Vec::new();
        if self.single_issuer {
            names.push("SINGLE_ISSUER");
        }
        if self.defer_taskrun {
            names.push("DEFER_TASKRUN");
        }
        if self.coop_taskrun {
            names.push("COOP_TASKRUN");
        }
        if names.is_empty() {
            f.write_str("no optional set-up flags")?;
        } else {
            f.write_str(&names.join("|"))?;
        }
        if self.buffers > 0 {
            write!(
                f,
                "; DATA pool {} x {} octets per shard",
                self.buffers, self.buffer_size
            )?;
            if self.incremental_buffers {
                f.write_str(", consumed incrementally")?;
            }
        }
        Ok(())
    }
}

/// The ring.
pub(crate) struct Ring {
    uring: IoUring,
    setup: Setup,
}

/// IORING_ENTER_GETEVENTS (the crate keeps its `sys` module private).
const ENTER_GETEVENTS: u32 = 1;

/// Submission queue entries per ring (completions get four times as many).
const ENTRIES: u32 = 1024;

impl Ring {
    /// Creates a ring with SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN, dropping flags the
    /// kernel refuses (EINVAL) one combination at a time. `allow_defer` false never asks for
    /// DEFER_TASKRUN (a kernel without it, simulated).
    pub(super) fn new(allow_defer: bool) -> io::Result<Ring> {
        // (SINGLE_ISSUER, DEFER_TASKRUN, COOP_TASKRUN), best first.
        const TRIES: [(bool, bool, bool); 5] = [
            (true, true, true),
            (true, true, false),
            (true, false, true),
            (false, false, true),
            (false, false, false),
        ];
        let tries = TRIES.map(|(si, dt, coop)| Setup {
            single_issuer: si,
            defer_taskrun: dt,
            coop_taskrun: coop,
            incremental_buffers: false,
            buffers: 0,
            buffer_size: 0,
        });
        let mut last = io::Error::from_raw_os_error(libc::EINVAL);
        for setup in tries.iter().filter(|s| allow_defer || !s.defer_taskrun) {
            let mut b = IoUring::builder();
            b.setup_cqsize(ENTRIES * 4).setup_submit_all();
            if setup.single_issuer {
                b.setup_single_issuer();
            }
            if setup.defer_taskrun {
                b.setup_defer_taskrun();
            }
            if setup.coop_taskrun {
                b.setup_coop_taskrun();
            }
            match b.build(ENTRIES) {
                Ok(uring) => {
                    return Ok(Ring {
                        uring,
                        setup: *setup,
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// The flags in force.
    pub(super) fn setup(&self) -> Setup {
        self.setup
    }

    /// Checks what the engine needs beyond a ring: the operations it submits, the extended
    /// wait argument (timeouts) and provided-buffer rings.
    pub(super) fn check_features(&mut self) -> io::Result<()> {
        if !self.uring.params().is_feature_ext_arg() {
            return Err(unsupported("IORING_FEAT_EXT_ARG (kernel 5.11)"));
        }
        let mut probe = Probe::new();
        self.uring.submitter().register_probe(&mut probe)?;
        use io_uring::opcode::*;
        for (code, name) in [
            (Accept::CODE, "ACCEPT"),
            (Recv::CODE, "RECV"),
            (Send::CODE, "SEND"),
            (SendMsg::CODE, "SENDMSG"),
            (Connect::CODE, "CONNECT"),
            (AsyncCancel::CODE, "ASYNC_CANCEL"),
            (Shutdown::CODE, "SHUTDOWN"),
            (Close::CODE, "CLOSE"),
            (Read::CODE, "READ"),
        ] {
            if !probe.is_supported(code) {
                return Err(unsupported(name));
            }
        }
        // Multishot receive into a provided-buffer ring arrived in 6.0.
        if !kernel_at_least(6, 0) {
            return Err(unsupported("multishot receive (kernel 6.0)"));
        }
        Ok(())
    }

    /// Queues an entry; when the submission queue is full it is handed to the kernel first.
    ///
    /// # Safety
    /// Whatever the entry points to must stay valid until its completion arrives.
    pub(super) unsafe fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: forwarded to the caller.
            if unsafe { self.uring.submission().push(entry) }.is_ok() {
                return;
            }
            if let Err(e) = self.uring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) && e.raw_os_error() != Some(libc::EINTR) {
                    panic!("io_uring submit failed: {e}");
                }
            }
        }
    }

    /// Submits what is queued and, when `wait`, sleeps until a completion arrives or `timeout`
    /// passes; without `wait` it only collects the completions already there.
    pub(super) fn enter(&mut self, wait: bool, timeout: Option<Duration>) {
        let r = if !wait {
            let n = self.uring.submission().len() as u32;
            // SAFETY: a plain io_uring_enter with no argument; GETEVENTS runs deferred work.
            unsafe {
                self.uring
                    .submitter()
                    .enter::<libc::sigset_t>(n, 0, ENTER_GETEVENTS, None)
            }
        } else if let Some(t) = timeout {
            let ts = types::Timespec::from(t);
            let args = types::SubmitArgs::new().timespec(&ts);
            self.uring.submitter().submit_with_args(1, &args)
        } else {
            self.uring.submitter().submit_and_wait(1)
        };
        if let Err(e) = r {
            match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                _ => panic!("io_uring_enter failed: {e}"),
            }
        }
    }

    /// Moves the available completions into `into` (so handlers may submit while they run).
    pub(super) fn reap(&mut self, into: &mut Vec<cqueue::Entry>) {
        into.extend(self.uring.completion());
    }

    /// The submitter, for registrations.
    pub(super) fn submitter(&self) -> io_uring::Submitter<'_> {
        self.uring.submitter()
    }
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("the kernel's io_uring lacks {what}"),
    )
}

/// True when the running kernel's release is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: utsname is plain data that uname fills.
    let release = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return false;
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    };
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}
