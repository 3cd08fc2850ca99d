//! `ringload`: the SMTP/LMTP load generator (`bench/loadgen/`), built on ringrelay's sans-IO
//! client core (`ringrelay::client::core::ClientCore`).
//!
//! One worker thread per core, each with its own current-thread tokio runtime (epoll) and its
//! share of the sessions; threads share nothing on the hot path but the closed-loop ticket
//! counter. The main thread only watches: live progress on a terminal, the error budget, then
//! the merged report, JSON, SVG and `--verify`.
//!
//! Modules: `args` (command line, size distributions), `schedule` (closed/open loop tickets),
//! `session` (connection setup and one transaction, timed), `conn` (the socket around
//! `ClientCore`; the only I/O), `message` (zero-copy message bodies with a unique id), `stats`
//! (HDR histograms per phase), `report`/`svg` (output), `verify` (delivered = acknowledged).
//!
//! Exit status: 0 when every message was acknowledged (and verified, with --verify), 1 when
//! any failed or verification failed, 2 for bad usage or setup.

mod args;
mod conn;
mod message;
mod report;
mod schedule;
mod session;
mod stats;
mod svg;
mod verify;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;

use args::Args;
use schedule::{Budget, OpenQueue, Tickets};
use session::{Ctx, Plan};
use stats::{Live, Stage, Stats};

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("ringload: {e}");
        return ExitCode::from(2);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or(cores).clamp(1, args.sessions);
    let started = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let run_id = format!(
        "{:x}{:04x}",
        started.as_millis() & 0xffff_ffff_ffff,
        std::process::id() & 0xffff
    );
    let tls = if args.starttls {
        let opts = ringrelay::client::TlsOptions {
            ca_file: args.tls_ca.clone(),
            insecure: args.tls_ca.is_none(),
            flag_names: args::TLS_FLAGS,
            ..Default::default()
        };
        match opts.client_config() {
            Ok(c) => Some(c),
            Err(failure) => {
                let e = ringrelay::client::TlsError {
                    peer: args.target.to_string(),
                    failure,
                    flags: args::TLS_FLAGS,
                };
                eprintln!("ringload: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let plan = Arc::new(Plan::new(args, run_id.clone(), tls));
    let a = &plan.args;
    // Open loop: a little slack so every thread is running before the first ticket is due.
    // Closed loop: sessions start at once.
    let slack = if a.rate.is_some() { 20 } else { 0 };
    let t0 = Instant::now() + Duration::from_millis(slack);
    let budget = Arc::new(Budget::new(t0, a.message_limit(), a.duration()));

    let mut handles = Vec::new();
    let mut lives = Vec::new();
    for t in 0..threads {
        let live = Arc::new(Live::default());
        lives.push(live.clone());
        let (plan, budget) = (plan.clone(), budget.clone());
        let sessions = a.sessions / threads + usize::from(t < a.sessions % threads);
        let h = std::thread::Builder::new()
            .name(format!("ringload-{t}"))
            .spawn(move || worker(plan, budget, live, t, threads, sessions))
            .expect("spawn worker thread");
        handles.push(h);
    }

    let progress = !a.no_progress && !a.quiet && std::io::stderr().is_terminal();
    let mut bar = report::Progress::new();
    let mut next_draw = Instant::now() + Duration::from_secs(1);
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        let sum = |f: fn(&Live) -> u64| lives.iter().map(|l| f(l)).sum::<u64>();
        let errors = sum(|l| Live::get(&l.errors));
        if a.max_errors > 0 && errors >= a.max_errors && !budget.aborted() {
            budget.abort();
            let mut f = plan.fatal.lock().unwrap_or_else(|e| e.into_inner());
            f.get_or_insert_with(|| format!("{errors} errors (--max-errors {})", a.max_errors));
        }
        if progress && Instant::now() >= next_draw {
            next_draw += Duration::from_secs(1);
            let t = Instant::now().saturating_duration_since(t0).as_secs_f64();
            bar.draw(
                t,
                sum(|l| Live::get(&l.acked)),
                errors,
                sum(|l| Live::get(&l.open)),
            );
        }
    }
    if progress {
        bar.clear();
    }
    let mut total = Stats::new(a.verify.is_some());
    let mut max_backlog = None;
    for h in handles {
        let (s, backlog) = h.join().expect("worker thread panicked");
        total.merge(s);
        if let Some(b) = backlog {
            max_backlog = Some(max_backlog.unwrap_or(0).max(b));
        }
    }
    let end = total.last_ack.unwrap_or_else(Instant::now);
    let elapsed = end.saturating_duration_since(t0.min(end));

    let verdict = match &a.verify {
        Some(record) => {
            let wait = Duration::from_secs_f64(a.verify_wait.max(0.0));
            match verify::verify(record, &run_id, &total.acked_ids, wait) {
                Ok(v) => Some(v),
                Err(e) => {
                    eprintln!("ringload: cannot read the record {}: {e}", record.display());
                    return ExitCode::from(2);
                }
            }
        }
        None => None,
    };
    let fatal = plan.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let outcome = report::Outcome {
        args: a,
        run_id: &run_id,
        threads,
        stats: &total,
        elapsed,
        max_backlog,
        verdict: verdict.as_ref(),
        fatal,
        started_unix: started.as_secs_f64(),
    };
    if a.quiet {
        println!("{}", outcome.verdict_line());
        for line in outcome.problem_lines() {
            eprintln!("{line}");
        }
    } else {
        print!("{}", outcome.text());
    }
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&outcome.json()).expect("JSON of plain values");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("ringload: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if let Some(path) = &a.svg {
        let series: Vec<(&str, &hdrhistogram::Histogram<u64>)> = Stage::ALL
            .iter()
            .map(|&s| (s.name(), total.of(s)))
            .collect();
        let title = format!(
            "ringload: latency by phase, {} messages, {:.0} msg/s",
            total.acked,
            outcome.rate()
        );
        if let Err(e) = std::fs::write(path, svg::plot(&title, &outcome.workload(), &series)) {
            eprintln!("ringload: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if outcome.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One worker thread: its own event loop, its sessions, and (open loop) its ticker.
fn worker(
    plan: Arc<Plan>,
    budget: Arc<Budget>,
    live: Arc<Live>,
    thread: usize,
    threads: usize,
    sessions: usize,
) -> (Stats, Option<usize>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let rate = plan.args.rate;
        let ctx = Rc::new(Ctx::new(plan, budget.clone(), live, thread as u64));
        let (tickets, queue) = match rate {
            Some(r) => {
                let q = OpenQueue::new();
                let ticker = q
                    .clone()
                    .run_ticker(budget, r, thread as u64, threads as u64);
                (
                    Tickets::Open(q.clone()),
                    Some((q, tokio::task::spawn_local(ticker))),
                )
            }
            None => (Tickets::Closed(budget), None),
        };
        let tickets = Rc::new(tickets);
        let tasks: Vec<_> = (0..sessions)
            .map(|_| tokio::task::spawn_local(session::run(ctx.clone(), tickets.clone())))
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        let backlog = match queue {
            Some((q, ticker)) => {
                let _ = ticker.await;
                Some(q.max_backlog.get())
            }
            None => None,
        };
        let stats = std::mem::replace(&mut *ctx.stats.borrow_mut(), Stats::new(false));
        (stats, backlog)
    })
}
