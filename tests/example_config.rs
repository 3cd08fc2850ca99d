//! The shipped example configuration (examples/ringrelay.toml) starts every mode it is written
//! for: `proxy`, `sink` and `debug` with `--config examples/ringrelay.toml` (the listen and
//! metrics addresses moved to free loopback ports from the command line, which wins over the
//! file) print their listening line, and smtplib sees the file's settings in the EHLO reply.
//! That every key it shows is accepted is checked in cli_proxy's unit test. Loopback only;
//! bounded in time.

mod common;

use std::time::Duration;

use common::*;

/// SIZE and the keywords smtplib saw after EHLO.
fn ehlo_keywords(port: u16) -> String {
    let script = "import smtplib, sys\n\
                  s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)\n\
                  s.ehlo('peer.example')\n\
                  print(' '.join(sorted(k + '=' + v for k, v in s.esmtp_features.items())))\n\
                  s.quit()\n";
    let args = vec!["-c".to_string(), script.to_string(), port.to_string()];
    let out = Peer::spawn(&python(), &args).finish(Duration::from_secs(20));
    out.assert_success("smtplib EHLO");
    out.stdout.trim().to_string()
}

#[test]
fn the_example_config_starts_proxy_sink_and_debug() {
    let example = manifest_dir().join("examples").join("ringrelay.toml");
    let example = example.to_str().unwrap();
    for mode in ["proxy", "sink", "debug"] {
        let server = Server::start(&[
            mode,
            "--config",
            example,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ]);
        let keywords = ehlo_keywords(server.port());
        assert!(keywords.contains("size=33554432"), "{mode}: {keywords}");
        assert!(keywords.contains("pipelining="), "{mode}: {keywords}");
        let stopped = server.stop();
        stopped.assert_success();
        assert!(
            !stopped.stderr.contains("unknown field"),
            "{mode}: {}",
            stopped.stderr
        );
    }
}
