//! Running the `ringload` binary from the bench tests, with a time limit.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The load generator built by this package.
pub const RINGLOAD: &str = env!("CARGO_BIN_EXE_ringload");

/// Runs ringload with `args`; panics if it takes more than 60 s.
pub fn ringload(args: &[&str]) -> Output {
    let mut child = Command::new(RINGLOAD)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ringload did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Its stdout and stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
