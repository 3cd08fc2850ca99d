//! `--verify`: did the target deliver exactly what it acknowledged?
//!
//! The record is whatever the target wrote the messages to: a file (ringrelay `debug`'s stdout
//! captured to a file, aiosmtpd's Debugging handler output, an mbox, Python smtpd's
//! DebuggingServer output) or a directory of such files, one level deep (smtp-sink `-d` dumps).
//! The format does not matter: every message ringload sends carries the header line
//! `X-Ringload-Id: <run-id>.<n>`, and the record is searched for that line with this run's id.
//! Messages of other runs in the same record are ignored.
//!
//! Verdict: every acknowledged id appears exactly once, and no id of this run appears that was
//! not acknowledged. Recorders may write late (a printer thread, buffered stdout), so the
//! record is read again until it is complete or `--verify-wait` has passed.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::message::ID_HEADER;

/// The outcome of a verification.
#[derive(Debug, Default, serde::Serialize)]
pub struct Verdict {
    pub acknowledged: u64,
    /// Distinct ids of this run found in the record.
    pub delivered: u64,
    /// Acknowledged but not in the record.
    pub missing: u64,
    /// In the record more than once.
    pub duplicated: u64,
    /// In the record but never acknowledged.
    pub unexpected: u64,
    /// Up to ten missing ids, for the report.
    pub missing_examples: Vec<String>,
    pub ok: bool,
}

/// Reads the record (again and again, up to `wait`) and compares it with `acked`.
pub fn verify(
    record: &Path,
    run_id: &str,
    acked: &[u64],
    wait: Duration,
) -> std::io::Result<Verdict> {
    let deadline = Instant::now() + wait;
    let acked_set: HashSet<u64> = acked.iter().copied().collect();
    loop {
        let seen = scan(record, run_id)?;
        let v = compare(run_id, &acked_set, &seen);
        if v.missing == 0 || Instant::now() >= deadline {
            return Ok(v);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn compare(run_id: &str, acked: &HashSet<u64>, seen: &HashMap<u64, u32>) -> Verdict {
    let mut v = Verdict {
        acknowledged: acked.len() as u64,
        delivered: seen.len() as u64,
        ..Verdict::default()
    };
    let mut missing: Vec<u64> = acked
        .iter()
        .filter(|id| !seen.contains_key(id))
        .copied()
        .collect();
    missing.sort_unstable();
    v.missing = missing.len() as u64;
    v.missing_examples = missing
        .iter()
        .take(10)
        .map(|n| format!("{run_id}.{n}"))
        .collect();
    v.duplicated = seen.values().filter(|&&c| c > 1).count() as u64;
    v.unexpected = seen.keys().filter(|id| !acked.contains(id)).count() as u64;
    v.ok = v.missing == 0 && v.duplicated == 0 && v.unexpected == 0;
    v
}

/// Counts each id of this run in the record.
pub fn scan(record: &Path, run_id: &str) -> std::io::Result<HashMap<u64, u32>> {
    let needle = format!("{ID_HEADER}: {run_id}.");
    let finder = memchr::memmem::Finder::new(needle.as_bytes());
    let mut seen = HashMap::new();
    let mut files = Vec::new();
    if record.is_dir() {
        for e in std::fs::read_dir(record)? {
            let p = e?.path();
            if p.is_file() {
                files.push(p);
            }
        }
    } else {
        files.push(record.to_path_buf());
    }
    for f in files {
        let data = match std::fs::read(&f) {
            Ok(d) => d,
            // A dump file may vanish or be renamed while we look.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for at in finder.find_iter(&data) {
            // Only a header line: at the start of the data or of a line.
            if at > 0 && data[at - 1] != b'\n' {
                continue;
            }
            let digits = &data[at + needle.len()..];
            let end = digits
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(digits.len());
            if end == 0 || !matches!(digits.get(end), Some(b'\r' | b'\n') | None) {
                continue;
            }
            if let Some(n) = std::str::from_utf8(&digits[..end])
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            {
                *seen.entry(n).or_insert(0) += 1;
            }
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_header_lines_of_this_run_only() {
        let dir = std::env::temp_dir().join(format!("ringload-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("record");
        std::fs::write(
            &f,
            "X-Ringload-Id: r1.0\nSubject: ringload r1.5\nX-Ringload-Id: r1.1\r\n\
             X-Ringload-Id: r2.1\nX-Ringload-Id: r1.1\nbody X-Ringload-Id: r1.9\nX-Ringload-Id: r1.7x\n",
        )
        .unwrap();
        let seen = scan(&f, "r1").unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[&0], 1);
        assert_eq!(seen[&1], 2);
        let v = verify(&f, "r1", &[0, 1, 2], Duration::ZERO).unwrap();
        assert_eq!(
            (v.acknowledged, v.delivered, v.missing, v.duplicated),
            (3, 2, 1, 1)
        );
        assert_eq!(v.missing_examples, vec!["r1.2"]);
        assert!(!v.ok);
        let v = verify(&dir, "r1", &[0], Duration::ZERO).unwrap();
        assert_eq!(v.unexpected, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
