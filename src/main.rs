//! The `ringrelay` binary: parse the command line, start the chosen mode, print its summary.

mod cli;
mod cli_proxy;
mod send_cmd;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use ringrelay::handler::debug::Printer;
use ringrelay::handler::sink::{Sink, SinkTotals};
use ringrelay::Server;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    if let cli::Mode::Send(a) = args.mode {
        return send_cmd::run(a);
    }
    let (kind, config) = match cli::resolve(args.mode) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("ringrelay: {e}");
            return ExitCode::from(2);
        }
    };
    let builder = Server::builder().config(config);
    let result = match kind {
        cli::Kind::Sink => {
            let totals = Arc::new(SinkTotals::default());
            let t = totals.clone();
            let r = builder.handler_factory(move |_| Sink::new(t.clone())).run();
            if r.is_ok() {
                println!("{}", totals.summary());
            }
            r
        }
        cli::Kind::Debug => {
            let printer = Printer::start(std::io::stdout());
            let tx = printer.handler();
            let r = builder.handler_factory(move |_| tx.clone()).run();
            printer.finish();
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
            // Shards that outlived the drain timeout are abandoned here.
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("ringrelay: {e}");
            ExitCode::from(2)
        }
    }
}
