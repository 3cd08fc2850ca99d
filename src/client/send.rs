//! Sending: smtplib's `sendmail` and `send_message`, with PIPELINING (MAIL, every RCPT and
//! DATA in one write, RFC 2920), CHUNKING (BDAT, for messages of unknown length too), SIZE
//! declared when offered, and LMTP's per-recipient replies. The body is sent as the caller's
//! chunks (zero-copy pieces), never glued into one buffer.

use bytes::Bytes;

use super::core::Phase;
use super::error::{ClientError, Refused};
use super::message::{envelope_from_headers, parse_headers, strip_bcc, BodyEncoder};
use super::smtp::SmtpClient;
use crate::proto::Reply;

/// How to send one message.
#[derive(Clone, Debug, Default)]
pub struct SendOptions {
    /// Extra MAIL parameters (smtplib's `mail_options`).
    pub mail_options: Vec<String>,
    /// Extra RCPT parameters (smtplib's `rcpt_options`).
    pub rcpt_options: Vec<String>,
    /// Use BDAT when the server offers CHUNKING.
    pub chunking: bool,
    /// Do not pipeline even when offered.
    pub no_pipelining: bool,
}

/// BDAT replies allowed to be outstanding before we wait for one.
const BDAT_WINDOW: usize = 8;

impl SmtpClient {
    /// smtplib's `sendmail` for a message held in memory.
    pub async fn sendmail(
        &mut self,
        from: &str,
        to: &[&str],
        msg: &[u8],
        opts: &SendOptions,
    ) -> Result<Refused, ClientError> {
        let len = super::message::normalized_len(msg);
        let msg = Bytes::copy_from_slice(msg);
        self.send_chunks(from, to, std::iter::once(msg), Some(len), opts)
            .await
    }

    /// Sends a message given as chunks (`size` when known, for SIZE=). Returns the refused
    /// recipients (an error when all were refused or the message was).
    pub async fn send_chunks(
        &mut self,
        from: &str,
        to: &[&str],
        chunks: impl IntoIterator<Item = Bytes>,
        size: Option<u64>,
        opts: &SendOptions,
    ) -> Result<Refused, ClientError> {
        self.ehlo_or_helo_if_needed().await?;
        let esmtp = self.features().is_some();
        let mut mail_opts: Vec<String> = Vec::new();
        if let (true, Some(n)) = (self.has_extn("size"), size) {
            mail_opts.push(format!("SIZE={n}"));
        }
        let international = !from.is_ascii() || to.iter().any(|t| !t.is_ascii());
        if international {
            if !self.has_extn("smtputf8") {
                return Err(ClientError::NotSupported(
                    "SMTPUTF8 (the addresses are not ASCII)".into(),
                ));
            }
            if !opts
                .mail_options
                .iter()
                .any(|o| o.eq_ignore_ascii_case("SMTPUTF8"))
            {
                mail_opts.push("SMTPUTF8".into());
            }
        }
        if esmtp {
            mail_opts.extend(opts.mail_options.iter().cloned());
        }
        let pipelining = esmtp && self.has_extn("pipelining") && !opts.no_pipelining;
        let bdat = esmtp && opts.chunking && self.has_extn("chunking");
        if opts.chunking && !bdat {
            return Err(ClientError::NotSupported("CHUNKING".into()));
        }
        let rcpt_suffix = if esmtp && !opts.rcpt_options.is_empty() {
            format!(" {}", opts.rcpt_options.join(" "))
        } else {
            String::new()
        };
        let mail_line = if mail_opts.is_empty() {
            format!("MAIL FROM:<{from}>")
        } else {
            format!("MAIL FROM:<{from}> {}", mail_opts.join(" "))
        };

        // Envelope: one write when pipelining, a round trip per command otherwise.
        self.queue(&mail_line, Phase::Mail);
        let mut pending_rcpts = 0;
        if pipelining {
            for t in to {
                self.queue(&format!("RCPT TO:<{t}>{rcpt_suffix}"), Phase::Rcpt);
                pending_rcpts += 1;
            }
            if !bdat {
                self.queue("DATA", Phase::DataStart);
            }
        }
        self.flush().await?;
        let mail = self.read_reply().await?;
        if !(200..300).contains(&mail.code()) {
            if pipelining {
                for _ in 0..pending_rcpts + usize::from(!bdat) {
                    self.read_reply().await?;
                }
            }
            self.reset_after_failure(&mail).await;
            return Err(ClientError::SenderRefused {
                reply: mail,
                sender: from.to_string(),
            });
        }
        let mut refused: Refused = Vec::new();
        let mut accepted: Vec<&str> = Vec::new();
        for t in to {
            let r = if pipelining {
                self.read_reply().await?
            } else {
                self.cmd(&format!("RCPT TO:<{t}>{rcpt_suffix}"), Phase::Rcpt)
                    .await?
            };
            if r.code() == 250 || r.code() == 251 {
                accepted.push(t);
            } else {
                let fatal = r.code() == 421;
                refused.push((t.to_string(), r));
                if fatal {
                    self.stream = None;
                    return Err(ClientError::RecipientsRefused(refused));
                }
            }
        }
        let data_reply = if pipelining && !bdat {
            Some(self.read_reply().await?)
        } else {
            None
        };
        if accepted.is_empty() {
            if data_reply.as_ref().is_some_and(|r| r.code() == 354) {
                // The server accepted DATA although no recipient was; end it empty and reset.
                self.queue_raw(Bytes::from_static(b".\r\n"));
                self.core
                    .expect_reply(Phase::DataEnd, std::time::Instant::now());
                self.flush().await?;
                self.read_reply().await?;
            }
            let _ = self.rset().await;
            return Err(ClientError::RecipientsRefused(refused));
        }
        if bdat {
            self.send_bdat(chunks).await?;
        } else {
            let r = match data_reply {
                Some(r) => r,
                None => self.cmd("DATA", Phase::DataStart).await?,
            };
            if r.code() != 354 {
                let _ = self.rset().await;
                return Err(ClientError::Data(r));
            }
            let mut enc = BodyEncoder::new(true);
            let mut pieces = Vec::new();
            for chunk in chunks {
                enc.encode(&chunk, &mut pieces);
                for p in pieces.drain(..) {
                    self.queue_raw(p);
                }
                self.flush().await?;
            }
            enc.finish(&mut pieces);
            for p in pieces.drain(..) {
                self.queue_raw(p);
            }
            self.queue_raw(Bytes::from_static(b".\r\n"));
            self.core
                .expect_reply(Phase::DataEnd, std::time::Instant::now());
        }
        if self.lmtp {
            for _ in 1..accepted.len() {
                self.core
                    .expect_reply(Phase::DataEnd, std::time::Instant::now());
            }
        }
        self.flush().await?;
        self.finish_data(&accepted, refused).await
    }

    /// Sends the body as BDAT chunks and queues the expectation of the final reply.
    async fn send_bdat(
        &mut self,
        chunks: impl IntoIterator<Item = Bytes>,
    ) -> Result<(), ClientError> {
        let mut enc = BodyEncoder::new(false);
        let mut pieces = Vec::new();
        let mut outstanding = 0usize;
        for chunk in chunks {
            enc.encode(&chunk, &mut pieces);
            let n: usize = pieces.iter().map(Bytes::len).sum();
            if n == 0 {
                continue;
            }
            self.queue(&format!("BDAT {n}"), Phase::Bdat);
            for p in pieces.drain(..) {
                self.queue_raw(p);
            }
            self.flush().await?;
            outstanding += 1;
            while outstanding > BDAT_WINDOW {
                let r = self.read_reply().await?;
                outstanding -= 1;
                if r.code() != 250 {
                    return self.fail_bdat(r, outstanding).await;
                }
            }
        }
        enc.finish(&mut pieces);
        let n: usize = pieces.iter().map(Bytes::len).sum();
        self.queue(&format!("BDAT {n} LAST"), Phase::DataEnd);
        for p in pieces.drain(..) {
            self.queue_raw(p);
        }
        self.flush().await?;
        for _ in 0..outstanding {
            let r = self.read_reply().await?;
            if r.code() != 250 {
                return self.fail_bdat(r, 1).await;
            }
        }
        Ok(())
    }

    async fn fail_bdat(&mut self, r: Reply, still_owed: usize) -> Result<(), ClientError> {
        for _ in 0..still_owed {
            self.read_reply().await?;
        }
        let _ = self.rset().await;
        Err(ClientError::Data(r))
    }

    /// Reads the end-of-data reply (one per accepted recipient for LMTP).
    async fn finish_data(
        &mut self,
        accepted: &[&str],
        mut refused: Refused,
    ) -> Result<Refused, ClientError> {
        if !self.lmtp {
            let r = self.read_reply().await?;
            if r.code() != 250 {
                let _ = self.rset().await;
                return Err(ClientError::Data(r));
            }
            return Ok(refused);
        }
        let mut first_failure = None;
        let mut delivered = 0;
        for t in accepted {
            let r = self.read_reply().await?;
            if r.code() == 250 {
                delivered += 1;
            } else {
                first_failure.get_or_insert_with(|| r.clone());
                refused.push((t.to_string(), r));
            }
        }
        match (delivered, first_failure) {
            (0, Some(r)) => Err(ClientError::Data(r)),
            _ => Ok(refused),
        }
    }

    /// After a refused MAIL: smtplib closes on 421 and sends RSET otherwise.
    async fn reset_after_failure(&mut self, reply: &Reply) {
        if reply.code() == 421 {
            if let Some(s) = self.stream.take() {
                s.shutdown();
            }
        } else {
            let _ = self.rset().await;
        }
    }

    /// smtplib's `send_message`: envelope from the headers unless given; Bcc and Resent-Bcc
    /// are removed before sending; SMTPUTF8 and BODY=8BITMIME added for non-ASCII addresses.
    pub async fn send_message(
        &mut self,
        msg: &[u8],
        from: Option<&str>,
        to: Option<&[&str]>,
        opts: &SendOptions,
    ) -> Result<Refused, ClientError> {
        let (headers, _) = parse_headers(msg);
        let (hdr_from, hdr_to) = match (from, to) {
            (Some(f), Some(t)) => (f.to_string(), t.iter().map(|s| s.to_string()).collect()),
            _ => envelope_from_headers(&headers)?,
        };
        let from = from.map(str::to_string).unwrap_or(hdr_from);
        let to: Vec<String> = match to {
            Some(t) => t.iter().map(|s| s.to_string()).collect(),
            None => hdr_to,
        };
        let mut opts = opts.clone();
        if !from.is_ascii() || to.iter().any(|t| !t.is_ascii()) {
            self.ehlo_or_helo_if_needed().await?;
            if !self.has_extn("smtputf8") {
                return Err(ClientError::NotSupported("SMTPUTF8".into()));
            }
            opts.mail_options.push("SMTPUTF8".into());
            if self.has_extn("8bitmime") {
                opts.mail_options.push("BODY=8BITMIME".into());
            }
        }
        let body = strip_bcc(msg);
        let to_refs: Vec<&str> = to.iter().map(String::as_str).collect();
        self.sendmail(&from, &to_refs, &body, &opts).await
    }
}
