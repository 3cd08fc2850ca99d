//! A bounded soak of the relay: `ringload --verify` drives pipelined DATA and BDAT sessions
//! through `ringrelay proxy` to an upstream that misbehaves at random (tests/peers/
//! relay_upstream.py `chaos`: unsolicited lines after its 250 at once or while the
//! connection idles in the pool, 421 or a silent close while idle, a drop mid-DATA, 451 to
//! DATA or to the final dot). The relay's promise is checked message by message: every
//! message it acknowledged is in the upstream's record exactly once, and no message it
//! refused is (issue 16's "unsolicited upstream" case, under load). Both drivers; each run is
//! bounded in messages and by ringload's 60 s limit.

mod common;
mod relay_common;
mod ringload_run;

use common::*;
use relay_common::*;
use ringload_run::{ringload, text};
use std::time::Duration;

#[test]
fn acknowledged_equals_delivered_with_a_chaotic_upstream() {
    let _heavy = heavy();
    let mut faults = 0;
    for (seed, io) in IO_MODES.iter().enumerate() {
        let dir = TempDir::new("relay-soak");
        let record = dir.join("delivered.txt");
        std::fs::write(&record, b"").unwrap();
        let port = free_port();
        let args: Vec<String> = [
            &port.to_string(),
            "chaos",
            "--record",
            record.to_str().unwrap(),
            "--seed",
            &(seed + 11).to_string(),
        ]
        .map(String::from)
        .to_vec();
        let mut up = Peer::python("relay_upstream.py", &args);
        up.wait_for_line("ready", PEER_START);
        let server = proxy(io, &[port], &["--shards", "2", "--upstream-timeout", "10"]);
        let target = format!("127.0.0.1:{}", server.port());
        let json = dir.join("r.json");
        let runs: [&[&str]; 2] = [
            &["-s", "4", "-m", "240", "--rcpts", "2", "--size", "200-20k"],
            &[
                "-s",
                "3",
                "-m",
                "120",
                "--bdat",
                "--bdat-chunk",
                "1500",
                "--size",
                "6k",
            ],
        ];
        for extra in runs {
            let mut a = vec!["-t", &target, "--threads", "1"];
            a.extend(["--verify", record.to_str().unwrap()]);
            a.extend(["--json", json.to_str().unwrap()]);
            a.extend_from_slice(extra);
            let o = ringload(&a);
            let t = text(&o);
            let j: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&json).unwrap())
                    .unwrap_or_else(|e| panic!("{io} {extra:?}: no report ({e}): {t}"));
            assert_eq!(j["verify"]["ok"], true, "{io} {extra:?}: {t}");
            assert!(
                t.contains("0 missing, 0 duplicated, 0 unexpected"),
                "{io} {extra:?}: {t}"
            );
            assert!(
                j["acknowledged"].as_u64().unwrap() > 0,
                "{io} {extra:?}: {t}"
            );
            eprintln!(
                "{io} {extra:?}: acknowledged {}, failed {}",
                j["acknowledged"], j["failed"]
            );
        }
        server.stop().assert_success();
        let out = up.finish(Duration::from_secs(30));
        out.assert_success("relay_upstream.py");
        faults += out
            .stdout
            .lines()
            .filter(|l| l.starts_with("DROPPED ") || l.starts_with("REFUSED "))
            .count();
    }
    // The upstream did misbehave (about one message in ten is dropped or refused).
    assert!(faults > 0, "the chaos upstream never failed a message");
}
