//! A session: take a ticket, open a connection when there is none (connect, greeting,
//! EHLO/LHLO, optional STARTTLS), run one SMTP transaction, and QUIT after `--per-connection`
//! messages. Every phase is timed into the thread's histograms.
//!
//! In the closed loop a session without a connection opens one before it takes its ticket
//! (the message's latency still counts from the start of the connect): when the budget is
//! spent while it is still connecting, it is cancelled quietly, since it never had a message
//! to send. A failed connect is charged to the ticket it then takes, so a dead server still
//! spends the budget. In the open loop the ticket comes first, as its time is fixed.
//!
//! A transaction with PIPELINING writes MAIL, every RCPT and DATA at once (RFC 2920); with BDAT
//! the chunks go in the same write too (RFC 3030 allows BDAT anywhere in a group), with at most
//! `BDAT_WINDOW` chunk replies outstanding. Without PIPELINING each command waits for its reply.
//! A refused message (4xx/5xx to MAIL, every RCPT, DATA or the final dot) is counted as failed
//! and the connection is RSET and kept; anything else (I/O, timeout, garbage) drops it.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringrelay::client::core::Phase;
use ringrelay::client::Features;

use crate::args::{Args, SizeSpec};
use crate::conn::{micros, Conn, ConnError, Timed};
use crate::message::{Corpus, Rng};
use crate::schedule::{Budget, Ticket, Tickets};
use crate::stats::{Live, Stage, Stats};

/// BDAT chunk replies allowed outstanding before we wait for one.
const BDAT_WINDOW: usize = 8;

/// What every thread shares: the options and what is derived from them once.
pub struct Plan {
    pub args: Args,
    pub run_id: String,
    pub corpus: Corpus,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub rcpt_lines: Vec<Vec<u8>>,
    /// The first fatal condition (a missing extension), reported at the end.
    pub fatal: Mutex<Option<String>>,
}

impl Plan {
    /// Derives the recipient lines and the corpus.
    pub fn new(args: Args, run_id: String, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        let rcpt_lines = (0..args.rcpts)
            .map(|i| {
                let addr = if args.rcpts == 1 {
                    args.to.clone()
                } else {
                    match args.to.split_once('@') {
                        Some((l, d)) => format!("{l}{}@{d}", i + 1),
                        None => format!("{}{}", args.to, i + 1),
                    }
                };
                format!("RCPT TO:<{addr}>").into_bytes()
            })
            .collect();
        let corpus = Corpus::new(args.size.max(), &args.from, &args.to);
        Self {
            args,
            run_id,
            corpus,
            tls,
            rcpt_lines,
            fatal: Mutex::new(None),
        }
    }
}

/// One thread's context.
pub struct Ctx {
    pub plan: Arc<Plan>,
    pub budget: Arc<Budget>,
    pub live: Arc<Live>,
    pub stats: RefCell<Stats>,
    rng: RefCell<Rng>,
}

impl Ctx {
    /// The context of worker thread `thread`.
    pub fn new(plan: Arc<Plan>, budget: Arc<Budget>, live: Arc<Live>, thread: u64) -> Self {
        let keep_ids = plan.args.verify.is_some();
        let rng = Rng::new(
            plan.args
                .seed
                .wrapping_add(thread.wrapping_mul(0x1000_0001)),
        );
        Self {
            plan,
            budget,
            live,
            stats: RefCell::new(Stats::new(keep_ids)),
            rng: RefCell::new(rng),
        }
    }

    fn record(&self, stage: Stage, micros: u64) {
        self.stats.borrow_mut().record(stage, micros);
    }

    fn fatal(&self, why: String) {
        let mut f = self.plan.fatal.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert(why);
        self.budget.abort();
    }
}

/// What the server offered after EHLO.
struct Offer {
    pipelining: bool,
    chunking: bool,
    size: bool,
}

/// Why a message was not acknowledged.
enum Failure {
    /// The connection is broken.
    Conn(ConnError),
    /// The server refused (label like "RCPT 452"); the connection is still usable.
    Refused(String),
    /// The server refused during connection setup; the connection is dropped.
    Setup(String),
    /// The run cannot go on (a required extension is missing).
    Fatal(String),
}

impl From<ConnError> for Failure {
    fn from(e: ConnError) -> Self {
        Failure::Conn(e)
    }
}

/// Runs one session until its tickets run out.
pub async fn run(ctx: Rc<Ctx>, tickets: Rc<Tickets>) {
    let per_conn = ctx.plan.args.per_connection;
    let mut conn: Option<(Conn, Offer)> = None;
    let mut on_conn = 0u64;
    while let Some(ticket) = next_message(&ctx, &tickets, &mut conn, &mut on_conn).await {
        let Some((c, offer)) = conn.as_mut() else {
            continue;
        };
        let id = format!("{}.{}", ctx.plan.run_id, ticket.seq);
        match transaction(&ctx, c, offer, &id).await {
            Ok(len) => {
                let now = Instant::now();
                ctx.record(Stage::Message, micros(now - ticket.intended));
                ctx.stats.borrow_mut().ack(ticket.seq, len, now);
                Live::bump(&ctx.live.acked);
            }
            Err(f @ Failure::Refused(_)) => fail(&ctx, f),
            Err(f) => {
                fail(&ctx, f);
                conn = None;
                ctx.live
                    .open
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
        }
        on_conn += 1;
        if per_conn > 0 && on_conn >= per_conn {
            if let Some((c, _)) = conn.take() {
                c.quit().await;
                ctx.live
                    .open
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    if let Some((c, _)) = conn.take() {
        c.quit().await;
        ctx.live
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The next message to send and a connection to send it on (opened here when there is
/// none); None when the run is over for this session.
async fn next_message(
    ctx: &Ctx,
    tickets: &Tickets,
    conn: &mut Option<(Conn, Offer)>,
    on_conn: &mut u64,
) -> Option<Ticket> {
    loop {
        if conn.is_some() {
            return tickets.next().await;
        }
        let (ticket, opened) = match tickets.closed_budget() {
            Some(budget) => {
                let started = Instant::now();
                let opened = tokio::select! {
                    biased;
                    r = open(ctx) => r,
                    // Still connecting when the last ticket went: cancelled, not failed.
                    _ = budget.closed_over() => return None,
                };
                let Some(mut t) = tickets.next().await else {
                    if let Ok((c, _)) = opened {
                        c.quit().await;
                    }
                    return None;
                };
                t.intended = started;
                (t, opened)
            }
            None => {
                let t = tickets.next().await?;
                (t, open(ctx).await)
            }
        };
        match opened {
            Ok(c) => {
                *conn = Some(c);
                *on_conn = 0;
                ctx.stats.borrow_mut().connections += 1;
                Live::bump(&ctx.live.open);
                return Some(ticket);
            }
            Err(f) => {
                let backoff = matches!(f, Failure::Conn(ConnError::Connect(_)));
                fail(ctx, f);
                if backoff {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

fn fail(ctx: &Ctx, f: Failure) {
    let label = match f {
        Failure::Conn(e) => e.label(),
        Failure::Refused(l) | Failure::Setup(l) => l,
        Failure::Fatal(why) => {
            let label = format!("fatal: {why}");
            ctx.fatal(why);
            label
        }
    };
    let mut s = ctx.stats.borrow_mut();
    s.failed += 1;
    s.error(label);
    Live::bump(&ctx.live.errors);
}

/// Connects, reads the greeting, says EHLO (or LHLO; HELO if EHLO is refused) and optionally
/// STARTTLS.
async fn open(ctx: &Ctx) -> Result<(Conn, Offer), Failure> {
    let a = &ctx.plan.args;
    let timeout = Duration::from_secs_f64(a.timeout);
    let t0 = Instant::now();
    let mut conn = Conn::connect(&a.target, timeout).await?;
    ctx.record(Stage::Connect, micros(t0.elapsed()));
    let greeting = conn.reply().await?;
    ctx.record(Stage::Banner, greeting.micros());
    if greeting.reply.code() != 220 {
        return Err(Failure::Setup(format!(
            "greeting {}",
            greeting.reply.code()
        )));
    }
    let mut features = hello(ctx, &mut conn).await?;
    if a.starttls {
        let t = Instant::now();
        if !features.as_ref().is_some_and(|f| f.has("starttls")) {
            return Err(Failure::Fatal("the server does not offer STARTTLS".into()));
        }
        let r = conn.roundtrip(b"STARTTLS", Phase::Other).await?;
        if r.reply.code() != 220 {
            return Err(Failure::Setup(format!("STARTTLS {}", r.reply.code())));
        }
        let config = ctx
            .plan
            .tls
            .clone()
            .expect("TLS config built for --starttls");
        let host = match &a.tls_server_name {
            Some(name) => name.clone(),
            None => a.target.tls_name(),
        };
        conn = conn.start_tls(config, &a.target.to_string(), &host).await?;
        features = hello(ctx, &mut conn).await?;
        ctx.record(Stage::StartTls, micros(t.elapsed()));
    }
    let f = features.unwrap_or_default();
    conn.set_enhanced_codes(f.has("enhancedstatuscodes"));
    let offer = Offer {
        pipelining: f.has("pipelining") && !a.no_pipelining,
        chunking: f.has("chunking"),
        size: f.has("size"),
    };
    if a.bdat && !offer.chunking {
        return Err(Failure::Fatal(
            "--bdat, but the server does not offer CHUNKING".into(),
        ));
    }
    Ok((conn, offer))
}

/// EHLO/LHLO, falling back to HELO for SMTP; returns the features (None after HELO).
async fn hello(ctx: &Ctx, conn: &mut Conn) -> Result<Option<Features>, Failure> {
    let a = &ctx.plan.args;
    let verb = if a.lmtp { "LHLO" } else { "EHLO" };
    let r = conn
        .roundtrip(format!("{verb} {}", a.helo).as_bytes(), Phase::Hello)
        .await?;
    ctx.record(Stage::Ehlo, r.micros());
    if r.reply.code() == 250 {
        return Ok(Some(Features::parse(&r.reply)));
    }
    if a.lmtp || r.reply.code() < 500 {
        return Err(Failure::Setup(format!("{verb} {}", r.reply.code())));
    }
    let r = conn
        .roundtrip(format!("HELO {}", a.helo).as_bytes(), Phase::Hello)
        .await?;
    if r.reply.code() != 250 {
        return Err(Failure::Setup(format!("HELO {}", r.reply.code())));
    }
    Ok(None)
}

/// The replies of one transaction as they come back.
#[derive(Default)]
struct Txn {
    mail_sent: Option<Instant>,
    data_sent: Option<Instant>,
    mail_ok: bool,
    rcpts_answered: usize,
    accepted: usize,
    data_start: Option<u16>,
    finals_ok: usize,
    finals: usize,
    refusal: Option<String>,
}

impl Txn {
    fn take(&mut self, ctx: &Ctx, t: &Timed) {
        let code = t.reply.code();
        let ok = (200..300).contains(&code);
        match t.phase {
            Phase::Mail => {
                self.mail_sent = Some(t.sent);
                ctx.record(Stage::Mail, t.micros());
                self.mail_ok = ok;
                self.refuse(ok, "MAIL", code);
            }
            Phase::Rcpt => {
                ctx.record(Stage::Rcpt, t.micros());
                self.rcpts_answered += 1;
                if ok {
                    self.accepted += 1;
                } else {
                    let mut s = ctx.stats.borrow_mut();
                    s.error(format!("RCPT {code}"));
                }
            }
            Phase::DataStart => {
                self.data_sent.get_or_insert(t.sent);
                self.data_start = Some(code);
                if code != 354 {
                    self.refuse(false, "DATA", code);
                }
            }
            Phase::Bdat => {
                self.data_sent.get_or_insert(t.sent);
                self.refuse(ok, "BDAT", code);
            }
            Phase::DataEnd => {
                self.data_sent.get_or_insert(t.sent);
                self.finals += 1;
                if ok {
                    self.finals_ok += 1;
                    if self.finals_ok == 1 {
                        let at = t.at;
                        let data = at.saturating_duration_since(self.data_sent.unwrap_or(t.sent));
                        ctx.record(Stage::Data, micros(data));
                        let mail = self.mail_sent.unwrap_or(t.sent);
                        ctx.record(
                            Stage::Transaction,
                            micros(at.saturating_duration_since(mail)),
                        );
                    }
                } else {
                    self.refuse(false, "end of data", code);
                }
            }
            Phase::Greeting | Phase::Hello | Phase::Other => {}
        }
    }

    fn refuse(&mut self, ok: bool, what: &str, code: u16) {
        if !ok && self.refusal.is_none() {
            self.refusal = Some(format!("{what} {code}"));
        }
    }
}

/// Sends one message; returns its size when acknowledged.
async fn transaction(ctx: &Ctx, conn: &mut Conn, offer: &Offer, id: &str) -> Result<u64, Failure> {
    let plan = &ctx.plan;
    let a = &plan.args;
    let size = match &a.size {
        SizeSpec::Fixed(n) => *n,
        spec => spec.draw(ctx.rng.borrow_mut().unit()),
    };
    let msg = plan.corpus.message(id, size);
    let mail = if offer.size {
        format!("MAIL FROM:<{}> SIZE={}", a.from, msg.len)
    } else {
        format!("MAIL FROM:<{}>", a.from)
    };
    let n_rcpt = plan.rcpt_lines.len();
    let mut txn = Txn::default();

    conn.command(mail.as_bytes(), Phase::Mail);
    if offer.pipelining {
        for r in &plan.rcpt_lines {
            conn.command(r, Phase::Rcpt);
        }
    } else {
        conn.flush().await?;
        let t = conn.reply().await?;
        txn.take(ctx, &t);
        if !txn.mail_ok {
            return refused(conn, txn).await;
        }
        for r in &plan.rcpt_lines {
            let t = conn.roundtrip(r, Phase::Rcpt).await?;
            txn.take(ctx, &t);
        }
        if txn.accepted == 0 {
            txn.refusal
                .get_or_insert_with(|| "every RCPT refused".into());
            return refused(conn, txn).await;
        }
    }

    if a.bdat {
        send_bdat(ctx, conn, &mut txn, msg.pieces, msg.len, n_rcpt).await?;
    } else {
        conn.command(b"DATA", Phase::DataStart);
        conn.flush().await?;
        while txn.data_start.is_none() {
            let t = conn.reply().await?;
            txn.take(ctx, &t);
        }
        if txn.data_start != Some(354) {
            return refused(conn, txn).await;
        }
        if !txn.mail_ok || txn.accepted == 0 {
            // A server that says 354 after refusing the envelope: end the (empty) data.
            txn.refusal
                .get_or_insert_with(|| "every RCPT refused".into());
            conn.raw(Bytes::from_static(b".\r\n"));
            conn.expect(Phase::DataEnd);
            conn.flush().await?;
            let t = conn.reply().await?;
            txn.take(ctx, &t);
            return refused(conn, txn).await;
        }
        for p in msg.pieces {
            conn.raw(p);
        }
        conn.raw(Bytes::from_static(b".\r\n"));
        conn.expect(Phase::DataEnd);
        if a.lmtp {
            for _ in 1..txn.accepted {
                conn.expect(Phase::DataEnd);
            }
        }
        conn.flush().await?;
    }
    while conn.owed() > 0 {
        let t = conn.reply().await?;
        txn.take(ctx, &t);
    }
    if txn.finals_ok > 0 {
        if txn.finals_ok < txn.finals {
            let mut s = ctx.stats.borrow_mut();
            s.error("LMTP recipient refused at end of data".into());
        }
        Ok(msg.len)
    } else {
        refused(conn, txn).await
    }
}

/// Sends the body as BDAT chunks (the envelope may still be in flight when pipelining).
async fn send_bdat(
    ctx: &Ctx,
    conn: &mut Conn,
    txn: &mut Txn,
    pieces: Vec<Bytes>,
    len: u64,
    n_rcpt: usize,
) -> Result<(), Failure> {
    let a = &ctx.plan.args;
    let chunk = a.bdat_chunk.max(1);
    let mut pieces = pieces.into_iter();
    let mut current: Option<Bytes> = None;
    let mut left = len;
    // Envelope replies may still be owed when pipelining; chunk replies beyond the window wait.
    let bound = BDAT_WINDOW + 1 + n_rcpt;
    loop {
        let n = left.min(chunk);
        left -= n;
        let last = left == 0;
        if last {
            conn.command(format!("BDAT {n} LAST").as_bytes(), Phase::DataEnd);
        } else {
            conn.command(format!("BDAT {n}").as_bytes(), Phase::Bdat);
        }
        let mut need = n as usize;
        while need > 0 {
            let mut p = match current.take() {
                Some(p) => p,
                None => pieces.next().expect("pieces cover the length"),
            };
            if p.len() > need {
                current = Some(p.split_off(need));
            }
            need -= p.len();
            conn.raw(p);
        }
        conn.flush().await?;
        while conn.owed() > bound {
            let t = conn.reply().await?;
            txn.take(ctx, &t);
        }
        if last {
            break;
        }
    }
    if a.lmtp {
        while txn.rcpts_answered < n_rcpt {
            let t = conn.reply().await?;
            txn.take(ctx, &t);
        }
        for _ in 1..txn.accepted {
            conn.expect(Phase::DataEnd);
        }
    }
    Ok(())
}

/// Reads what is still owed, RSETs and reports the refusal.
async fn refused(conn: &mut Conn, mut txn: Txn) -> Result<u64, Failure> {
    while conn.owed() > 0 {
        let _ = conn.reply().await?;
    }
    let r = conn.roundtrip(b"RSET", Phase::Other).await?;
    if r.reply.code() != 250 {
        return Err(Failure::Setup(format!("RSET {}", r.reply.code())));
    }
    Err(Failure::Refused(
        txn.refusal.take().unwrap_or_else(|| "refused".into()),
    ))
}
