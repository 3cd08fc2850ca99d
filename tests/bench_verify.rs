//! `ringload --verify` (the load generator in bench/loadgen/) against recording targets on
//! loopback, bounded in count and time:
//! - ringrelay `debug` with its stdout captured to a file: closed loop (pipelined DATA, BDAT)
//!   and open loop; every acknowledged message is in the record exactly once, exit 0;
//! - a scripted server that acknowledges every message but records all but one: the missing
//!   id is named and ringload exits 1;
//! - a server that records a message it then refuses: reported as unexpected, exit 1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod ringload_run;

use ringload_run::{ringload, text};
const RINGRELAY: &str = env!("CARGO_BIN_EXE_ringrelay");

fn scratch(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("it-tmp")
        .join(format!("bench-verify-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// ringrelay debug on an ephemeral port with stdout going to `record`.
struct Debug(Child);

impl Debug {
    fn start(record: &Path) -> (Debug, SocketAddr) {
        let mut child = Command::new(RINGRELAY)
            .args([
                "debug",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "none",
                "--shards",
                "1",
            ])
            .stdout(std::fs::File::create(record).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("ringrelay: listening on ") {
                    let addr = rest.split_whitespace().next().unwrap().to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("ringrelay debug printed its listening line");
        (Debug(child), addr.parse().unwrap())
    }
}

impl Drop for Debug {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn verify_passes_against_ringrelay_debug() {
    let dir = scratch("debug");
    let record = dir.join("record.txt");
    let (_server, addr) = Debug::start(&record);
    let target = addr.to_string();
    let json = dir.join("r.json");
    let svg = dir.join("r.svg");
    let runs: [&[&str]; 3] = [
        &[
            "-s", "4", "-m", "300", "-k", "7", "--rcpts", "2", "--size", "200-9000",
        ],
        &[
            "-s",
            "3",
            "-m",
            "100",
            "--bdat",
            "--bdat-chunk",
            "1000",
            "--size",
            "5k",
        ],
        &["-s", "4", "--rate", "300", "--duration", "0.5"],
    ];
    for extra in runs {
        let mut args = vec!["-t", &target, "--threads", "2", "--verify"];
        let rec = record.to_str().unwrap();
        args.push(rec);
        args.extend([
            "--json",
            json.to_str().unwrap(),
            "--svg",
            svg.to_str().unwrap(),
        ]);
        args.extend_from_slice(extra);
        let o = ringload(&args);
        let t = text(&o);
        assert!(o.status.success(), "{extra:?}: {t}");
        assert!(
            t.contains("0 missing, 0 duplicated, 0 unexpected: OK"),
            "{t}"
        );
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(j["verify"]["ok"], true);
        assert_eq!(j["failed"], 0);
        let acked = j["acknowledged"].as_u64().unwrap();
        assert!(acked > 0);
        assert_eq!(j["latency_us"]["message"]["count"].as_u64(), Some(acked));
        assert!(j["latency_us"]["data"]["p99"].as_u64().unwrap() > 0);
        let plot = std::fs::read_to_string(&svg).unwrap();
        assert!(plot.starts_with("<svg") && plot.contains("<polyline"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A one-connection-at-a-time SMTP server (no PIPELINING) that writes each message to
/// `record` unless `skip(n)` for the n-th message (0-based), and answers the final dot
/// with `final_reply(n)`.
fn scripted_server(
    record: PathBuf,
    skip: fn(usize) -> bool,
    final_reply: fn(usize) -> &'static str,
) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut n = 0usize;
        let mut file = std::fs::File::create(&record).unwrap();
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
            if serve_one(&mut s, &mut n, &mut file, skip, final_reply).is_err() {
                continue;
            }
        }
    });
    addr
}

fn serve_one(
    s: &mut TcpStream,
    n: &mut usize,
    file: &mut std::fs::File,
    skip: fn(usize) -> bool,
    final_reply: fn(usize) -> &'static str,
) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    s.write_all(b"220 scripted\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => s.write_all(b"250-scripted\r\n250 8BITMIME\r\n")?,
            "DATA" => {
                s.write_all(b"354 go\r\n")?;
                let mut msg = Vec::new();
                while !msg.ends_with(b"\r\n.\r\n") {
                    let mut b = [0u8; 1];
                    r.read_exact(&mut b)?;
                    msg.push(b[0]);
                }
                if !skip(*n) {
                    file.write_all(&msg)?;
                    file.flush()?;
                }
                s.write_all(final_reply(*n).as_bytes())?;
                *n += 1;
            }
            "QUIT" => {
                s.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => s.write_all(b"250 ok\r\n")?,
        }
    }
}

#[test]
fn verify_names_a_message_acknowledged_but_not_recorded() {
    let dir = scratch("missing");
    let record = dir.join("record.txt");
    let addr = scripted_server(record.clone(), |n| n == 2, |_| "250 ok\r\n");
    let o = ringload(&[
        "-t",
        &addr.to_string(),
        "-s",
        "1",
        "-m",
        "5",
        "--verify",
        record.to_str().unwrap(),
        "--verify-wait",
        "0.5",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("5 acknowledged, 0 failed"), "{t}");
    assert!(
        t.contains("5 acknowledged, 4 delivered, 1 missing, 0 duplicated, 0 unexpected: FAILED"),
        "{t}"
    );
    // The third message (ticket 2) is the one named.
    let missing = t
        .lines()
        .find_map(|l| l.trim().strip_prefix("missing: "))
        .expect("missing ids listed");
    assert!(
        missing.ends_with(".2") && !missing.contains(' '),
        "{missing}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn verify_flags_a_message_recorded_but_refused() {
    let dir = scratch("unexpected");
    let record = dir.join("record.txt");
    let addr = scripted_server(
        record.clone(),
        |_| false,
        |n| {
            if n == 1 {
                "451 try later\r\n"
            } else {
                "250 ok\r\n"
            }
        },
    );
    let o = ringload(&[
        "-t",
        &addr.to_string(),
        "-m",
        "3",
        "--verify",
        record.to_str().unwrap(),
        "--verify-wait",
        "0.5",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("2 acknowledged, 1 failed"), "{t}");
    assert!(t.contains("end of data 451"), "{t}");
    assert!(
        t.contains("2 acknowledged, 3 delivered, 0 missing, 0 duplicated, 1 unexpected"),
        "{t}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
