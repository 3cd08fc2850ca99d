//! smtplib's connection-level commands on `SmtpClient`: helo, ehlo, ehlo_or_helo_if_needed,
//! starttls, login and auth, verify, noop, rset, docmd and quit, each with smtplib's meaning
//! and its typed errors. Part of `SmtpClient`; see the parent module for the driver.

use super::super::auth::Mechanism;
use super::super::core::Phase;
use super::super::error::ClientError;
use super::super::features::Features;
use super::super::transport::{Stream, TlsOptions, TlsStream};
use super::super::{TlsError, TlsFailure};
use super::SmtpClient;
use crate::proto::Reply;

impl SmtpClient {
    /// HELO (`name` defaults to the local host name).
    pub async fn helo(&mut self, name: Option<&str>) -> Result<Reply, ClientError> {
        let name = name.unwrap_or(&self.local_hostname).to_string();
        let r = self.cmd(&format!("HELO {name}"), Phase::Hello).await?;
        if r.code() != 250 {
            return Err(ClientError::Helo(r));
        }
        self.features = None;
        self.helo_done = true;
        self.core.enhanced_codes = false;
        Ok(r)
    }

    /// EHLO, or LHLO for LMTP; parses the features.
    pub async fn ehlo(&mut self, name: Option<&str>) -> Result<Reply, ClientError> {
        let name = name.unwrap_or(&self.local_hostname).to_string();
        let verb = if self.lmtp { "LHLO" } else { "EHLO" };
        let r = self.cmd(&format!("{verb} {name}"), Phase::Hello).await?;
        if r.code() != 250 {
            return Err(ClientError::Helo(r));
        }
        let f = Features::parse(&r);
        self.core.enhanced_codes = f.has("enhancedstatuscodes");
        self.features = Some(f);
        self.helo_done = true;
        Ok(r)
    }

    /// smtplib's `ehlo_or_helo_if_needed`: EHLO, falling back to HELO when it is refused.
    pub async fn ehlo_or_helo_if_needed(&mut self) -> Result<(), ClientError> {
        if self.helo_done {
            return Ok(());
        }
        match self.ehlo(None).await {
            Ok(_) => Ok(()),
            Err(ClientError::Helo(r)) if (500..600).contains(&r.code()) && !self.lmtp => {
                self.helo(None).await.map(drop)
            }
            Err(e) => Err(e),
        }
    }

    /// STARTTLS (RFC 3207), then EHLO again; `NotSupported` when not offered.
    pub async fn starttls(&mut self, tls: &TlsOptions) -> Result<Reply, ClientError> {
        self.ehlo_or_helo_if_needed().await?;
        if !self.has_extn("starttls") {
            return Err(ClientError::NotSupported("STARTTLS".into()));
        }
        let r = self.cmd("STARTTLS", Phase::Other).await?;
        if r.code() != 220 {
            return Err(ClientError::Response {
                command: "STARTTLS".into(),
                reply: r,
            });
        }
        if !self.core.take_buffered_input().is_empty() {
            // RFC 3207 §6: bytes after the 220 were sent in plaintext; refuse them.
            return Err(TlsError {
                peer: self.peer.clone(),
                failure: TlsFailure::CleartextAfterStartTls,
                flags: tls.flag_names,
            }
            .into());
        }
        let plain = match self.stream.take() {
            Some(Stream::Plain(p)) => p,
            other => {
                self.stream = other;
                return Err(ClientError::NotSupported(
                    "STARTTLS on a TLS connection".into(),
                ));
            }
        };
        let tls_stream = TlsStream::establish(plain, tls, &self.peer, &self.server_name).await?;
        if self.debug_level > 0 {
            self.trace("tls", &tls_stream.describe());
        }
        self.stream = Some(Stream::Tls(Box::new(tls_stream)));
        self.features = None;
        self.helo_done = false;
        self.ehlo(None).await?;
        Ok(r)
    }

    /// smtplib's `login`: the first mechanism the server offers among CRAM-MD5, PLAIN, LOGIN.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<Reply, ClientError> {
        self.ehlo_or_helo_if_needed().await?;
        let offered = self
            .features
            .as_ref()
            .and_then(|f| f.params("auth"))
            .ok_or_else(|| ClientError::NotSupported("AUTH".into()))?
            .to_string();
        let offered: Vec<Mechanism> = offered
            .split_whitespace()
            .filter_map(Mechanism::from_name)
            .collect();
        let mut last = None;
        for m in Mechanism::PREFERRED
            .into_iter()
            .filter(|m| offered.contains(m))
        {
            match self.auth(m, user, password, true).await {
                Ok(r) => return Ok(r),
                Err(ClientError::Authentication(r)) => last = Some(r),
                Err(e) => return Err(e),
            }
        }
        match last {
            Some(r) => Err(ClientError::Authentication(r)),
            None => Err(ClientError::NotSupported(
                "no AUTH mechanism in common".into(),
            )),
        }
    }

    /// `AUTH mechanism`, answering 334 challenges; `initial_response_ok` sends the initial
    /// response on the AUTH line (RFC 4954 §4).
    pub async fn auth(
        &mut self,
        mech: Mechanism,
        user: &str,
        password: &str,
        initial_response_ok: bool,
    ) -> Result<Reply, ClientError> {
        let initial = if initial_response_ok {
            mech.initial_response(user, password)
        } else {
            None
        };
        let line = match &initial {
            Some(ir) => format!("AUTH {} {ir}", mech.name()),
            None => format!("AUTH {}", mech.name()),
        };
        let mut r = self.cmd_quiet(&line, Phase::Other, true).await?;
        let mut rounds = 0;
        while r.code() == 334 && rounds < 5 {
            rounds += 1;
            let answer = mech
                .respond(r.text(), user, password)
                .ok_or_else(|| ClientError::Authentication(r.clone()))?;
            r = self.cmd_quiet(&answer, Phase::Other, true).await?;
        }
        if r.code() == 235 || r.code() == 503 {
            Ok(r)
        } else {
            Err(ClientError::Authentication(r))
        }
    }

    /// VRFY.
    pub async fn verify(&mut self, address: &str) -> Result<Reply, ClientError> {
        self.cmd(&format!("VRFY {address}"), Phase::Other).await
    }

    /// NOOP.
    pub async fn noop(&mut self) -> Result<Reply, ClientError> {
        self.cmd("NOOP", Phase::Other).await
    }

    /// RSET.
    pub async fn rset(&mut self) -> Result<Reply, ClientError> {
        self.cmd("RSET", Phase::Other).await
    }

    /// Any command; returns the reply whatever its code (smtplib's `docmd`).
    pub async fn docmd(&mut self, cmd: &str, args: &str) -> Result<Reply, ClientError> {
        let line = if args.is_empty() {
            cmd.to_string()
        } else {
            format!("{cmd} {args}")
        };
        self.cmd(&line, Phase::Other).await
    }

    /// QUIT, then close.
    pub async fn quit(mut self) -> Result<Reply, ClientError> {
        let r = self.cmd("QUIT", Phase::Other).await;
        if let Some(s) = self.stream.take() {
            s.shutdown();
        }
        r
    }
}
