//! The `ringrelay` binary: parse the command line, start the chosen mode, print its summary.

mod cli;
mod cli_docs;
mod cli_error;
mod cli_faults;
mod cli_mailman;
mod cli_proxy;
mod cli_smtpd;
mod cli_target;
mod cli_values;
mod reload_cmd;
mod send_cmd;
mod send_compose;

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use ringrelay::handler::debug::Printer;
use ringrelay::handler::sink::{Sink, SinkTotals};
use ringrelay::Server;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Runs `make`'s services, behind the fault layer when faults are configured, and with the
/// transaction log line when asked.
fn serve<S: ringrelay::handler::Service>(
    builder: ringrelay::server::ServerBuilder,
    faults: Option<ringrelay::faults::FaultConfig>,
    log_transactions: bool,
    make: impl Fn(usize) -> S + Send + Sync + 'static,
) -> Result<ringrelay::server::RunReport, ringrelay::server::ServerError> {
    use ringrelay::faults::Faulty;
    use ringrelay::handler::logged::Logged;
    match (faults, log_transactions) {
        (None, false) => builder.handler_factory(make).run(),
        (None, true) => builder
            .handler_factory(move |shard| Logged::new(make(shard), shard))
            .run(),
        (Some(f), false) => builder
            .handler_factory(move |shard| Faulty::new(make(shard), f.clone(), shard))
            .run(),
        (Some(f), true) => builder
            .handler_factory(move |shard| {
                Logged::new(Faulty::new(make(shard), f.clone(), shard), shard)
            })
            .run(),
    }
}

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match args.mode {
        cli::Mode::Send(a) => return send_cmd::run(a),
        cli::Mode::Completions { shell } => return cli_docs::completions(shell),
        cli::Mode::Man { mode } => return cli_docs::man(mode.as_deref()),
        _ => {}
    }
    let mode = args.mode.clone();
    let target = cli_target::target_of(&mode).unwrap_or_default();
    let (kind, config) = match cli::resolve(args.mode) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("ringrelay: {e}");
            return ExitCode::from(2);
        }
    };
    let log = match ringrelay::log::init(&config.log) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("ringrelay: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = config;
    config.reload = reload_cmd::reloader(mode, &kind, &config);
    if let (cli::Kind::Proxy(relay), Some(m)) = (&kind, config.metrics.as_mut()) {
        // /readyz also says whether any upstream is reachable.
        let health: Arc<dyn ringrelay::metrics::Readiness> = relay.upstream.load().health.clone();
        m.readiness = ringrelay::metrics::ReadinessCheck(Some(health));
    }
    let faults = config.faults.clone();
    let log_transactions = config.log.transactions;
    if let (Some(f), Some(m)) = (&faults, config.metrics.as_mut()) {
        let doc: Arc<dyn ringrelay::metrics::AdminDocument> =
            Arc::new(ringrelay::faults::FaultsDoc(f.rules.clone()));
        m.faults = ringrelay::metrics::AdminDoc(Some(doc));
    }
    let builder = Server::builder().config(config);
    let result = match kind {
        k @ (cli::Kind::Sink | cli::Kind::Debug) if target.wraps() => {
            cli_target::run(k, builder, &target, faults, log_transactions)
        }
        cli::Kind::Sink => {
            let totals = Arc::new(SinkTotals::default());
            let t = totals.clone();
            let r = serve(builder, faults, log_transactions, move |_| {
                Sink::new(t.clone())
            });
            if r.is_ok() {
                println!("{}", totals.summary());
            }
            r
        }
        cli::Kind::Debug => {
            // Its own descriptor for stdout, not std's locked handle: a write blocked on an
            // output nobody reads must not hold the lock everything else on stdout needs.
            let out = match std::io::stdout().as_fd().try_clone_to_owned() {
                Ok(fd) => std::fs::File::from(fd),
                Err(e) => {
                    eprintln!("ringrelay: stdout: {e}");
                    return ExitCode::from(2);
                }
            };
            let printer = Printer::start(out);
            let tx = printer.handler();
            let r = serve(builder, faults, log_transactions, move |_| tx.clone());
            // Every acknowledged message is already written; an output nobody reads must not
            // keep the process from exiting.
            if !printer.finish(std::time::Duration::from_secs(5)) {
                eprintln!("ringrelay: the output is not being read; exiting without waiting");
            }
            r
        }
        cli::Kind::Proxy(relay) => builder
            .handler_factory(move |shard| ringrelay::relay::Relay::new(&relay, shard))
            .run(),
    };
    match result {
        Ok(report) => {
            if !report.drained {
                eprintln!("ringrelay: drain timeout passed with transactions still open");
            }
            use std::io::Write;
            let _ = std::io::stdout().flush();
            // Writes out the queued log lines (the writer waits at most a second).
            drop(log);
            // Shards that outlived the drain timeout are abandoned here.
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("ringrelay: {e}");
            ExitCode::from(2)
        }
    }
}
