//! The load-test target options of `sink` and `debug` (issue 13): LMTP, message dumps, AUTH
//! with any credentials, the envelope in `debug`'s output and running counters, with
//! smtp-sink's letters as short flags (`-L`, `-d`, `-D`, `-c`).
//!
//! Contract: every long flag is also a key of the config file's `[sink]` table (which serves
//! `debug` too); a flag on the command line wins over the file. `resolve` turns the serving
//! options plus these into the server configuration (LMTP and AUTH are session settings);
//! `run` serves with the `Target` wrapper around the mode's handler, and is used only when a
//! wrapper option is on, so the plain `sink` keeps its hot path.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde::Deserialize;

use ringrelay::handler::debug::Printer;
use ringrelay::handler::dump::Dumper;
use ringrelay::handler::sink::{Sink, SinkTotals};
use ringrelay::handler::target::{Counters, Target, TargetOptions};
use ringrelay::server::{RunReport, ServerBuilder, ServerConfig, ServerError};

use crate::cli::{CliError, Kind, Mode, ServeArgs};

/// Options of `sink` and `debug`: the serving options plus the target's.
#[derive(Clone, Debug, Args)]
pub struct SinkArgs {
    /// Serving options.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Load-test target options.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// The load-test target options (also the config file's `[sink]` table).
#[derive(Clone, Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetArgs {
    /// Speak LMTP (RFC 2033) instead of SMTP, like smtp-sink -L: LHLO instead of HELO/EHLO,
    /// and one reply per accepted recipient after the data.
    #[arg(short = 'L', long)]
    #[serde(default)]
    pub lmtp: bool,
    /// Write each accepted message, with smtp-sink's envelope headers, to a file of its own in
    /// this directory (like smtp-sink -d); a write error answers 452 4.3.1.
    #[arg(short = 'd', long, value_name = "DIR")]
    pub dump_dir: Option<PathBuf>,
    /// Append each accepted message, with smtp-sink's envelope headers, to this file (like
    /// smtp-sink -D); a write error answers 452 4.3.1.
    #[arg(short = 'D', long, value_name = "FILE")]
    pub dump_mbox: Option<PathBuf>,
    /// Offer AUTH PLAIN and LOGIN and accept any credentials (as smtp-sink and Mailpit do).
    #[arg(long)]
    #[serde(default)]
    pub auth_any: bool,
    /// debug only: print the envelope (MAIL FROM, RCPT TO: Bcc recipients too) before each
    /// message.
    #[arg(long)]
    #[serde(default)]
    pub envelope: bool,
    /// Print running counters (sessions, messages, recipients, bytes) to stderr when a
    /// session ends, at most once a second (like smtp-sink -c).
    #[arg(short = 'c', long)]
    #[serde(default)]
    pub counters: bool,
}

impl TargetArgs {
    /// True when serving needs the `Target` wrapper.
    pub fn wraps(&self) -> bool {
        self.dump_dir.is_some()
            || self.dump_mbox.is_some()
            || self.auth_any
            || self.counters
            || self.envelope
    }
}

/// The target options of a `sink` or `debug` command line, merged with the config file's
/// `[sink]` table (the defaults for any other mode).
pub fn target_of(mode: &Mode) -> Result<TargetArgs, CliError> {
    let a = match mode {
        Mode::Sink(a) | Mode::Debug(a) => a,
        _ => return Ok(TargetArgs::default()),
    };
    let file = match &a.serve.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| CliError::Read {
                path: path.clone(),
                source,
            })?;
            toml::from_str::<ServeArgs>(&text)
                .map_err(|source| CliError::Parse {
                    path: path.clone(),
                    source,
                })?
                .sink
                .unwrap_or_default()
        }
        None => TargetArgs::default(),
    };
    let cli = &a.target;
    let t = TargetArgs {
        lmtp: cli.lmtp || file.lmtp,
        dump_dir: cli.dump_dir.clone().or(file.dump_dir),
        dump_mbox: cli.dump_mbox.clone().or(file.dump_mbox),
        auth_any: cli.auth_any || file.auth_any,
        envelope: cli.envelope || file.envelope,
        counters: cli.counters || file.counters,
    };
    if t.envelope && matches!(mode, Mode::Sink(_)) {
        return Err(CliError::Invalid(
            "--envelope is for debug (sink prints nothing)".into(),
        ));
    }
    Ok(t)
}

/// The configuration of `sink` or `debug`: the serving options with the target's session
/// settings (LMTP, AUTH) applied.
pub fn resolve(
    kind: Kind,
    mode: &Mode,
    serve: ServeArgs,
) -> Result<(Kind, ServerConfig), CliError> {
    let target = target_of(mode)?;
    let (mut cfg, _) = crate::cli::serve_config(serve, 0)?;
    let s = &mut cfg.session;
    if target.lmtp {
        s.lmtp = true;
        if let Some(rest) = s.greeting.strip_prefix("ESMTP") {
            s.greeting = format!("LMTP{rest}");
        }
    }
    if target.auth_any {
        s.extensions.auth = true;
    }
    Ok((kind, cfg))
}

/// Serves `sink` or `debug` with the `Target` wrapper (`TargetArgs::wraps`), behind the fault
/// layer when faults are configured and the transaction log when asked (`crate::serve`) (a message a fault refuses is neither dumped nor counted;
/// an AUTH rule still refuses with `--auth-any`).
pub fn run(
    kind: Kind,
    builder: ServerBuilder,
    t: &TargetArgs,
    faults: Option<ringrelay::faults::FaultConfig>,
    log_transactions: bool,
) -> Result<RunReport, ServerError> {
    let dumper = if t.dump_dir.is_some() || t.dump_mbox.is_some() {
        match Dumper::start(t.dump_dir.clone(), t.dump_mbox.clone()) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("ringrelay: {e}");
                std::process::exit(2);
            }
        }
    } else {
        None
    };
    // The sink's summary counts what the wrapper acknowledged (not a message whose dump
    // failed), so the sink always has counters; debug only with -c.
    let counters =
        (t.counters || matches!(kind, Kind::Sink)).then(|| Arc::new(Counters::new(t.counters)));
    let options = TargetOptions {
        auth_any: t.auth_any,
        dumps: dumper.as_ref().map(Dumper::queue),
        counters: counters.clone(),
    };
    let r = match kind {
        Kind::Debug => {
            // As plain `debug`: its own descriptor for stdout, not std's locked handle.
            let out = match std::io::stdout().as_fd().try_clone_to_owned() {
                Ok(fd) => std::fs::File::from(fd),
                Err(e) => {
                    eprintln!("ringrelay: stdout: {e}");
                    std::process::exit(2);
                }
            };
            let printer = Printer::start(out);
            let h = printer.handler().with_envelope(t.envelope);
            let r = crate::serve(builder, faults, log_transactions, move |_| {
                Target::new(h.clone(), options.clone())
            });
            if !printer.finish(std::time::Duration::from_secs(5)) {
                eprintln!("ringrelay: the output is not being read; exiting without waiting");
            }
            r
        }
        _ => {
            let totals = Arc::new(SinkTotals::default());
            let r = crate::serve(builder, faults, log_transactions, move |_| {
                Target::new(Sink::new(totals.clone()), options.clone())
            });
            if let (Ok(_), Some(c)) = (&r, &counters) {
                let [s, m, rc, b] = c.totals();
                println!("sink: sessions={s} messages={m} recipients={rc} bytes={b}");
            }
            r
        }
    };
    if let Some(d) = dumper {
        if !d.finish(std::time::Duration::from_secs(5)) {
            eprintln!("ringrelay: the dump writer did not finish in time");
        }
    }
    if let Some(c) = counters.filter(|_| t.counters) {
        eprintln!("{}", c.line());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example config's `[sink]` table shows every target flag, and each is accepted.
    #[test]
    fn the_example_config_shows_every_target_key() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ringrelay.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let uncommented = text.replace("\n# dump_", "\ndump_");
        let args: ServeArgs = toml::from_str(&uncommented).unwrap();
        let sink = args.sink.expect("a [sink] table");
        assert!(sink.dump_dir.is_some() && sink.dump_mbox.is_some());
        let cmd = <crate::cli::Cli as clap::CommandFactory>::command();
        let debug = cmd.find_subcommand("debug").expect("debug mode");
        let mut checked = 0;
        for arg in debug.get_arguments() {
            let Some(long) = arg.get_long().filter(|l| !matches!(*l, "config" | "help")) else {
                continue;
            };
            let key = format!("\n{} = ", long.replace('-', "_"));
            let shown = text.replace("\n# ", "\n");
            assert!(shown.contains(&key), "{path} does not show {key:?}");
            checked += 1;
        }
        assert!(checked > 30, "only {checked} flags");
    }

    /// A command-line flag wins over the file; `--envelope` is refused for `sink`.
    #[test]
    fn flags_and_file_merge() {
        use clap::Parser;
        let parse = |args: &[&str]| crate::cli::Cli::try_parse_from(args).unwrap().mode;
        let t = target_of(&parse(&["ringrelay", "sink", "-L", "-d", "/tmp/x", "-c"])).unwrap();
        assert!(t.lmtp && t.counters && t.wraps());
        assert_eq!(t.dump_dir.as_deref(), Some(std::path::Path::new("/tmp/x")));
        assert!(target_of(&parse(&["ringrelay", "sink", "--envelope"])).is_err());
        let t = target_of(&parse(&["ringrelay", "debug", "--envelope"])).unwrap();
        assert!(t.envelope && t.wraps());
        let plain = target_of(&parse(&["ringrelay", "sink", "--lmtp"])).unwrap();
        assert!(!plain.wraps(), "LMTP alone needs no wrapper");
    }
}
