//! `ringrelay completions SHELL` and `ringrelay man [MODE]`: bash loads the completion script
//! and completes a real flag from it; every supported shell gets a script; groff renders the
//! manual pages without a warning, and they carry the modes and their flags. Bounded in time;
//! no network.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(20);

fn ringrelay(args: &[&str]) -> PeerOutput {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    Peer::spawn(BIN, &args).finish(LIMIT)
}

#[test]
fn bash_completes_flags_from_the_script() {
    let out = ringrelay(&["completions", "bash"]);
    out.assert_success("ringrelay completions bash");
    let tmp = TempDir::new("completions");
    let script = tmp.write("ringrelay.bash", out.stdout.as_bytes());
    let probe = format!(
        "source {}\n\
         complete -p ringrelay\n\
         COMP_WORDS=(ringrelay sink --li); COMP_CWORD=2\n\
         COMP_LINE='ringrelay sink --li'; COMP_POINT=${{#COMP_LINE}}\n\
         _ringrelay ringrelay --li sink\n\
         printf 'reply %s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display()
    );
    let bash = Peer::spawn("bash", &["-c".to_string(), probe]).finish(LIMIT);
    bash.assert_success("bash sourcing the completion script");
    assert!(
        bash.stdout.contains("-F _ringrelay ringrelay"),
        "{}",
        bash.stdout
    );
    assert!(
        bash.stdout.lines().any(|l| l == "reply --listen"),
        "{}",
        bash.stdout
    );
}

#[test]
fn every_shell_gets_a_script() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = ringrelay(&["completions", shell]);
        out.assert_success(&format!("ringrelay completions {shell}"));
        // (fish spells it `-l metrics-listen`)
        assert!(
            out.stdout.contains("metrics-listen"),
            "{shell}: {}",
            out.stdout
        );
    }
    let out = ringrelay(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

/// Renders roff with groff, warnings on; returns the text.
fn render(roff: &str) -> String {
    let mut groff = Command::new("groff")
        .args(["-man", "-Tascii", "-ww", "-P-cbou"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff (groff-base) is installed");
    groff
        .stdin
        .take()
        .unwrap()
        .write_all(roff.as_bytes())
        .unwrap();
    let out = groff.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.is_empty(), "groff: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_manual_pages_render_and_carry_the_flags() {
    let out = ringrelay(&["man"]);
    out.assert_success("ringrelay man");
    assert!(out.stdout.contains(".TH ringrelay 1"), "{}", out.stdout);
    let page = render(&out.stdout);
    for want in ["SYNOPSIS", "sink", "debug", "smtpd", "proxy", "send"] {
        assert!(page.contains(want), "no {want:?} in:\n{page}");
    }
    for (mode, flags) in [
        ("proxy", &["--upstream", "--listen", "--pool-max"][..]),
        ("send", &["--header", "--body", "--tls-ca"][..]),
        ("sink", &["--size", "--metrics-listen"][..]),
    ] {
        let out = ringrelay(&["man", mode]);
        out.assert_success(&format!("ringrelay man {mode}"));
        let title = format!(".TH ringrelay-{mode} 1");
        assert!(out.stdout.contains(&title), "{}", out.stdout);
        let page = render(&out.stdout);
        for flag in flags {
            assert!(page.contains(flag), "{mode}: no {flag} in:\n{page}");
        }
    }
    let out = ringrelay(&["man", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("no mode \"nosuch\""), "{}", out.stderr);
}
