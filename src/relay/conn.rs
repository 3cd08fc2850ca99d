//! One client connection of the relay: the transaction mirror. Each decision that needs the
//! upstream is an `Answer::Later` that owns the checked-out connection while it runs and puts
//! it back in the connection's slot when done.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::SystemTime;

use bytes::Bytes;

use super::acl::RelayPolicy;
use super::headers::{received, LoopGuard, TraceInfo};
use super::pool::{unavailable, Upstream, UpstreamPool};
use crate::client::core::Phase;
use crate::client::message::BodyEncoder;
use crate::client::{ClientError, SmtpClient};
use crate::handler::{Answer, Connection};
use crate::proto::{EnhancedCode, Event, Reply, Session, State};

/// The current transaction's upstream side.
#[derive(Default)]
struct Tx {
    up: Option<Upstream>,
    /// DATA was accepted upstream (354): bytes may have gone out.
    data_open: bool,
    /// Why the message will be refused at its end (set while data streams).
    failed: Option<Reply>,
    /// Client used BDAT: content must be dot-stuffed for the upstream's DATA.
    stuffer: Option<BodyEncoder>,
    guard: LoopGuard,
    /// The Received (and X-Peer) header to send after the 354.
    trace: Option<Bytes>,
}

/// The relay's per-connection handler.
pub struct RelayConn {
    pool: Rc<RefCell<UpstreamPool>>,
    policy: Rc<RelayPolicy>,
    x_peer: bool,
    shard: usize,
    next_id: Rc<Cell<u64>>,
    allowed: bool,
    tx: Rc<RefCell<Tx>>,
}

impl RelayConn {
    pub(super) fn new(
        pool: Rc<RefCell<UpstreamPool>>,
        policy: Rc<RelayPolicy>,
        x_peer: bool,
        shard: usize,
        next_id: Rc<Cell<u64>>,
        ip: IpAddr,
    ) -> Self {
        let allowed = policy.client_allowed(ip);
        Self {
            pool,
            policy,
            x_peer,
            shard,
            next_id,
            allowed,
            tx: Rc::new(RefCell::new(Tx::default())),
        }
    }

    fn trace_header(&self, session: &Session) -> Bytes {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let env = session.envelope();
        let proto = if session.is_esmtp() { "ESMTP" } else { "SMTP" };
        // An RFC 5321 `id` is an Atom or a msg-id: no dots.
        let id = format!("{:x}-{}-{id:x}", std::process::id(), self.shard);
        let recipient = (env.rcpt_tos.len() == 1).then(|| env.rcpt_tos[0].as_str());
        let mut h = received(
            &TraceInfo {
                helo: session.helo_name().unwrap_or("unknown"),
                peer: session.peer(),
                by: session.hostname(),
                protocol: proto,
                id: &id,
                recipient,
            },
            SystemTime::now(),
        );
        if self.x_peer {
            h.push_str(&format!("X-Peer: {}\r\n", session.peer().ip()));
        }
        Bytes::from(h)
    }

    /// Gives the transaction's connection back to the pool (or closes it).
    fn release(pool: &Rc<RefCell<UpstreamPool>>, tx: &mut Tx, reusable: bool) {
        if let Some(up) = tx.up.take() {
            let mut p = pool.borrow_mut();
            if reusable && !tx.data_open {
                p.checkin(up, true);
            } else {
                p.discard(up);
            }
        }
        tx.data_open = false;
        tx.failed = None;
        tx.stuffer = None;
        tx.guard = LoopGuard::default();
        tx.trace = None;
    }
}

/// The upstream's reply as ours: 2xx and 5xx as they are (with an enhanced code), 421 and
/// other 4xx as a 4xx that does not close our session.
fn mirror(r: Reply) -> Reply {
    let code = if r.code() == 421 { 451 } else { r.code() };
    let class = (code / 100) as u8;
    if r.enhanced().is_none() {
        // An upstream that does not offer ENHANCEDSTATUSCODES may still write one at the start
        // of its text (aiosmtpd passes a handler's "250 2.0.0 ..." through): use it rather
        // than writing a second one in front of it.
        if let Some((e, rest)) = EnhancedCode::parse_prefix(r.text()) {
            if e.class == class {
                return Reply::new(code, e, rest.to_string());
            }
        }
    }
    let enhanced = r
        .enhanced()
        .filter(|e| e.class == class)
        .unwrap_or(EnhancedCode::new(class, 0, 0));
    Reply::new(code, enhanced, r.text().to_string())
}

/// Who the client is, for Postfix's XCLIENT / XFORWARD toward the upstream.
#[derive(Clone, Debug)]
struct Identity {
    addr: IpAddr,
    helo: Option<String>,
    esmtp: bool,
}

impl Identity {
    fn of(session: &Session) -> Self {
        Self {
            addr: session.peer().ip(),
            helo: session.helo_name().map(str::to_string),
            esmtp: session.is_esmtp(),
        }
    }

    /// `VERB ADDR=... PROTO=... HELO=... NAME=[UNAVAILABLE]`, with only the attributes the
    /// upstream listed (`offered`, from its EHLO line); values xtext-encoded (RFC 3461 §4).
    fn command(&self, verb: &str, offered: &str) -> String {
        let listed = |a: &str| {
            offered
                .split_whitespace()
                .any(|o| o.eq_ignore_ascii_case(a))
        };
        let mut line = verb.to_string();
        if listed("ADDR") {
            line.push_str(&format!(" ADDR={}", self.addr));
        }
        if listed("PROTO") {
            line.push_str(if self.esmtp {
                " PROTO=ESMTP"
            } else {
                " PROTO=SMTP"
            });
        }
        if let (true, Some(helo)) = (listed("HELO"), &self.helo) {
            line.push_str(" HELO=");
            for b in helo.bytes() {
                if (33..=126).contains(&b) && b != b'+' && b != b'=' {
                    line.push(b as char);
                } else {
                    line.push_str(&format!("+{b:02X}"));
                }
            }
        }
        if listed("NAME") {
            line.push_str(" NAME=[UNAVAILABLE]");
        }
        line
    }
}

/// Tells the upstream who the client is, before MAIL: XCLIENT (the upstream then greets
/// again and we EHLO again) or else XFORWARD, each only when enabled and offered. A refusal
/// is not fatal to the mail; a 421 or a broken connection is returned for the caller.
async fn pass_identity(
    client: &mut SmtpClient,
    id: &Identity,
    xclient: bool,
    xforward: bool,
) -> Result<Reply, ClientError> {
    let offered = |name: &str| {
        client
            .features()
            .and_then(|f| f.params(name))
            .map(str::to_string)
    };
    if let (true, Some(attrs)) = (xclient, offered("xclient")) {
        let r = client
            .command(&id.command("XCLIENT", &attrs), Phase::Other)
            .await?;
        if r.code() != 220 {
            return Ok(r);
        }
        return client.ehlo(None).await;
    }
    if let (true, Some(attrs)) = (xforward, offered("xforward")) {
        return client
            .command(&id.command("XFORWARD", &attrs), Phase::Other)
            .await;
    }
    Ok(Reply::plain(250, "nothing to pass"))
}

/// The MAIL command for this upstream connection. A parameter goes only to an upstream that
/// offered its extension (RFC 5321 §4.1.1.11): SIZE (RFC 1870) and BODY (RFC 6152; 8-bit
/// content is still sent as it is, as Postfix does) are dropped otherwise, or an upstream
/// that does not offer them may refuse every message (Postfix in front always sends SIZE=).
/// SMTPUTF8 cannot be dropped (RFC 6531 §3.2): without it upstream the transaction is refused.
fn mail_command(from: &str, options: &[String], up: &SmtpClient) -> Result<String, Reply> {
    let mut line = format!("MAIL FROM:<{from}>");
    for o in options {
        let key = o.split_once('=').map_or(o.as_str(), |(k, _)| k);
        let extension = match key.to_ascii_uppercase().as_str() {
            "SIZE" => Some("size"),
            "BODY" => Some("8bitmime"),
            "SMTPUTF8" => Some("smtputf8"),
            _ => None,
        };
        match extension {
            Some(ext) if !up.has_extn(ext) => {
                if ext == "smtputf8" {
                    return Err(Reply::new(
                        553,
                        EnhancedCode::new(5, 6, 7),
                        "Upstream does not support SMTPUTF8",
                    ));
                }
            }
            _ => {
                line.push(' ');
                line.push_str(o);
            }
        }
    }
    Ok(line)
}

/// Writes message bytes upstream within the data-block timeout (RFC 5321 §4.5.3.2 gives 3
/// minutes per block). The client driver bounds only its reads; without this, an upstream
/// that stops reading mid-message would hold the client's session forever.
async fn write_timed(client: &mut SmtpClient, bytes: Bytes) -> Result<(), ClientError> {
    let limit = client.timeouts().data_block;
    tokio::time::timeout(limit, client.write_data(bytes))
        .await
        .unwrap_or_else(|_| Err(write_timeout()))
}

fn write_timeout() -> ClientError {
    ClientError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "timed out writing the message to the upstream",
    ))
}

/// A failure talking to the upstream, for the client: always temporary.
fn failure(e: &ClientError) -> Reply {
    let text = e.to_string().replace(['\r', '\n'], " ");
    unavailable(format!(
        "Upstream error: {}",
        text.chars().take(200).collect::<String>()
    ))
}

/// True when a failure on a reused connection means it had gone stale before we used it.
fn stale(r: &Result<Reply, ClientError>) -> bool {
    match r {
        Ok(reply) => reply.code() == 421,
        Err(ClientError::ServerDisconnected | ClientError::Io(_) | ClientError::Protocol(_)) => {
            true
        }
        Err(_) => false,
    }
}

fn relay_denied() -> Reply {
    Reply::new(554, EnhancedCode::new(5, 7, 1), "Relay access denied")
}

impl Connection for RelayConn {
    fn event(&mut self, session: &Session, event: Event) -> Answer {
        match event {
            Event::Connect | Event::Hello | Event::Quit => Answer::Now(None),
            Event::Mail => {
                if !self.allowed {
                    // Refused at RCPT (554 5.7.1), where the client expects relay decisions.
                    return Answer::Now(None);
                }
                let env = session.envelope();
                let from = env
                    .mail_from
                    .as_ref()
                    .map_or("", |f| f.as_str())
                    .to_string();
                let options = env.mail_options.clone();
                let (xclient, xforward) = {
                    let p = self.pool.borrow();
                    (p.config().xclient, p.config().xforward)
                };
                let identity = Identity::of(session);
                let pool = self.pool.clone();
                let tx = self.tx.clone();
                Answer::Later(Box::pin(async move {
                    Self::release(&pool, &mut tx.borrow_mut(), false);
                    let mut fresh = false;
                    loop {
                        let mut up = match UpstreamPool::checkout(&pool, fresh).await {
                            Ok(up) => up,
                            Err(reply) => return Some(reply),
                        };
                        // The upstream logs and checks the real client instead of us.
                        let mut r =
                            pass_identity(&mut up.client, &identity, xclient, xforward).await;
                        if matches!(&r, Ok(x) if x.code() != 421) {
                            // After XCLIENT the EHLO features may differ: build MAIL now.
                            let line = match mail_command(&from, &options, &up.client) {
                                Ok(line) => line,
                                Err(reply) => {
                                    pool.borrow_mut().checkin(up, true);
                                    return Some(reply);
                                }
                            };
                            r = up.client.command(&line, Phase::Mail).await;
                        }
                        if up.reused && stale(&r) && !fresh {
                            // A pooled connection that went away while idle: the client
                            // never sees it, we just use a new one.
                            pool.borrow_mut().discard(up);
                            fresh = true;
                            continue;
                        }
                        return match r {
                            Ok(reply) if reply.code() / 100 == 2 => {
                                tx.borrow_mut().up = Some(up);
                                Some(mirror(reply))
                            }
                            Ok(reply) => {
                                let reusable = reply.code() != 421;
                                pool.borrow_mut().checkin(up, reusable);
                                Some(mirror(reply))
                            }
                            Err(e) => {
                                pool.borrow_mut().discard(up);
                                Some(failure(&e))
                            }
                        };
                    }
                }))
            }
            Event::Rcpt => {
                let Some((to, params)) = session.pending_recipient() else {
                    return Answer::Now(None);
                };
                if !self.allowed || !self.policy.domain_allowed(to.domain()) {
                    return Answer::Now(Some(relay_denied()));
                }
                let mut line = format!("RCPT TO:<{}>", to.as_str());
                for p in params {
                    line.push(' ');
                    line.push_str(p);
                }
                let pool = self.pool.clone();
                let tx = self.tx.clone();
                Answer::Later(Box::pin(async move {
                    let Some(mut up) = tx.borrow_mut().up.take() else {
                        return Some(unavailable("Upstream connection lost"));
                    };
                    match up.client.command(&line, Phase::Rcpt).await {
                        Ok(reply) => {
                            if reply.code() == 421 {
                                pool.borrow_mut().discard(up);
                            } else {
                                tx.borrow_mut().up = Some(up);
                            }
                            Some(mirror(reply))
                        }
                        Err(e) => {
                            pool.borrow_mut().discard(up);
                            Some(failure(&e))
                        }
                    }
                }))
            }
            Event::DataStart => {
                let trace = self.trace_header(session);
                let pool = self.pool.clone();
                let tx = self.tx.clone();
                Answer::Later(Box::pin(
                    async move { open_data(&pool, &tx, trace).await.err() },
                ))
            }
            Event::DataChunk(chunk) => {
                let bdat = session.state() == State::InBdat;
                let trace =
                    (bdat && !self.tx.borrow().data_open && self.tx.borrow().failed.is_none())
                        .then(|| self.trace_header(session));
                let pool = self.pool.clone();
                let tx = self.tx.clone();
                Answer::Later(Box::pin(async move {
                    if let Some(trace) = trace {
                        if let Err(reply) = open_data(&pool, &tx, trace).await {
                            tx.borrow_mut().failed = Some(reply);
                        }
                        tx.borrow_mut().stuffer = Some(BodyEncoder::new(true));
                    }
                    let mut pieces = Vec::new();
                    {
                        let mut t = tx.borrow_mut();
                        if t.failed.is_some() || t.up.is_none() {
                            return None;
                        }
                        for piece in chunk.content() {
                            t.guard.feed(&piece);
                        }
                        if t.guard.looping() {
                            t.failed = Some(Reply::new(
                                554,
                                EnhancedCode::new(5, 4, 6),
                                "Mail loop detected: too many Received headers",
                            ));
                            // Abandon the upstream DATA without its terminator.
                            if let Some(up) = t.up.take() {
                                pool.borrow_mut().discard(up);
                            }
                            return None;
                        }
                        match t.stuffer.as_mut() {
                            Some(enc) => {
                                for piece in chunk.content() {
                                    enc.encode(&piece, &mut pieces);
                                }
                            }
                            None => pieces.push(chunk.wire().clone()),
                        }
                    }
                    write_pieces(&pool, &tx, pieces).await;
                    None
                }))
            }
            Event::DataEnd => {
                let bdat = session.state() == State::InBdat;
                let trace =
                    (bdat && !self.tx.borrow().data_open && self.tx.borrow().failed.is_none())
                        .then(|| self.trace_header(session));
                let pool = self.pool.clone();
                let tx = self.tx.clone();
                Answer::Later(Box::pin(async move {
                    if let Some(trace) = trace {
                        if let Err(reply) = open_data(&pool, &tx, trace).await {
                            tx.borrow_mut().failed = Some(reply);
                        }
                    }
                    let failed = tx.borrow_mut().failed.take();
                    if let Some(reply) = failed {
                        Self::release(&pool, &mut tx.borrow_mut(), false);
                        return Some(reply);
                    }
                    let mut tail = Vec::new();
                    if let Some(enc) = tx.borrow_mut().stuffer.as_mut() {
                        enc.finish(&mut tail);
                    }
                    write_pieces(&pool, &tx, tail).await;
                    let failed = tx.borrow_mut().failed.take();
                    if let Some(reply) = failed {
                        Self::release(&pool, &mut tx.borrow_mut(), false);
                        return Some(reply);
                    }
                    let Some(mut up) = tx.borrow_mut().up.take() else {
                        return Some(unavailable("Upstream connection lost"));
                    };
                    // The terminator's write is bounded too (the reply has its own deadline).
                    let t = up.client.timeouts();
                    let r = tokio::time::timeout(t.data_block + t.data_end, up.client.end_data())
                        .await
                        .unwrap_or_else(|_| Err(write_timeout()));
                    let mut t = tx.borrow_mut();
                    t.data_open = false;
                    t.up = Some(up);
                    match r {
                        Ok(reply) => {
                            if reply.code() / 100 == 2 {
                                if let Some(up) = t.up.as_mut() {
                                    up.delivered();
                                }
                            }
                            let reusable = reply.code() != 421;
                            Self::release(&pool, &mut t, reusable);
                            Some(mirror(reply))
                        }
                        Err(e) => {
                            Self::release(&pool, &mut t, false);
                            Some(failure(&e))
                        }
                    }
                }))
            }
            Event::Reset => {
                let mut t = self.tx.borrow_mut();
                if t.up.is_none() {
                    Self::release(&self.pool, &mut t, false);
                    return Answer::Now(None);
                }
                if t.data_open {
                    // Mid-DATA: only closing the connection aborts without delivering.
                    Self::release(&self.pool, &mut t, false);
                    return Answer::Now(None);
                }
                let up = t.up.take();
                drop(t);
                let pool = self.pool.clone();
                let tx = self.tx.clone();
                Answer::Later(Box::pin(async move {
                    if let Some(mut up) = up {
                        let ok = matches!(up.client.rset().await, Ok(r) if r.code() == 250);
                        pool.borrow_mut().checkin(up, ok);
                    }
                    Self::release(&pool, &mut tx.borrow_mut(), false);
                    None
                }))
            }
        }
    }

    fn close(&mut self, _session: &Session) {
        // A client gone mid-transaction: never send the terminator; close the upstream side.
        let mut t = self.tx.borrow_mut();
        let in_tx = t.up.is_some();
        Self::release(&self.pool, &mut t, !in_tx);
    }
}

/// Sends DATA upstream; on 354 writes the trace header. Errors are the client's reply.
async fn open_data(
    pool: &Rc<RefCell<UpstreamPool>>,
    tx: &Rc<RefCell<Tx>>,
    trace: Bytes,
) -> Result<(), Reply> {
    let Some(mut up) = tx.borrow_mut().up.take() else {
        return Err(unavailable("Upstream connection lost"));
    };
    let r = up.client.command("DATA", Phase::DataStart).await;
    match r {
        Ok(reply) if reply.code() == 354 => match write_timed(&mut up.client, trace).await {
            Ok(()) => {
                let mut t = tx.borrow_mut();
                t.up = Some(up);
                t.data_open = true;
                Ok(())
            }
            Err(e) => {
                pool.borrow_mut().discard(up);
                Err(failure(&e))
            }
        },
        Ok(reply) if reply.is_positive() => {
            // Only 354 opens the upstream's DATA. Mirrored, another 3xx would put our session
            // into DATA mode (and the body into the upstream's command parser); a 2xx would
            // answer DATA with a meaningless success.
            pool.borrow_mut().discard(up);
            Err(unavailable(format!(
                "Upstream protocol error: {} in reply to DATA",
                reply.code()
            )))
        }
        Ok(reply) => {
            if reply.code() == 421 {
                pool.borrow_mut().discard(up);
            } else {
                tx.borrow_mut().up = Some(up);
            }
            Err(mirror(reply))
        }
        Err(e) => {
            pool.borrow_mut().discard(up);
            Err(failure(&e))
        }
    }
}

/// Writes body pieces upstream; a failure is remembered for the end of data.
async fn write_pieces(pool: &Rc<RefCell<UpstreamPool>>, tx: &Rc<RefCell<Tx>>, pieces: Vec<Bytes>) {
    if pieces.is_empty() {
        return;
    }
    let Some(mut up) = tx.borrow_mut().up.take() else {
        return;
    };
    for p in pieces {
        if let Err(e) = write_timed(&mut up.client, p).await {
            let mut t = tx.borrow_mut();
            t.failed = Some(failure(&e));
            t.data_open = false;
            pool.borrow_mut().discard(up);
            return;
        }
    }
    tx.borrow_mut().up = Some(up);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_keeps_one_enhanced_code() {
        let cases: &[(Reply, &str)] = &[
            // Parsed by the client (ENHANCEDSTATUSCODES offered).
            (
                Reply::new(250, EnhancedCode::new(2, 0, 0), "queued"),
                "250 2.0.0 queued\r\n",
            ),
            // Not offered, but written in the text anyway (aiosmtpd handlers do this).
            (
                Reply::plain(250, "2.0.0 recorded as 1"),
                "250 2.0.0 recorded as 1\r\n",
            ),
            (Reply::plain(250, "OK"), "250 2.0.0 OK\r\n"),
            (
                Reply::plain(550, "5.1.1 no such user"),
                "550 5.1.1 no such user\r\n",
            ),
            // A code of the wrong class in the text is text.
            (Reply::plain(250, "5.0.0 odd"), "250 2.0.0 5.0.0 odd\r\n"),
            // 421 does not close our session: 451, its enhanced code kept.
            (
                Reply::plain(421, "4.4.2 idle, closing"),
                "451 4.4.2 idle, closing\r\n",
            ),
            (
                Reply::new(421, EnhancedCode::new(4, 3, 2), "bye"),
                "451 4.3.2 bye\r\n",
            ),
        ];
        for (r, want) in cases {
            let mut out = Vec::new();
            mirror(r.clone()).write_to(&mut out, true);
            assert_eq!(String::from_utf8(out).unwrap(), *want, "{r:?}");
        }
    }
}
