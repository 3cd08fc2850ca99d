//! What a handler may read of a `Session` while it decides (state, peer, greeting, envelope,
//! pending recipient or credentials, TLS, configuration, error count), how the client came
//! (a Unix-domain socket), and the STARTTLS hand-over. Part of `Session`; see the parent module for the contract.

use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::super::address::Mailbox;
use super::super::config::SessionConfig;
use super::super::envelope::Envelope;
use super::{Awaiting, Credentials, Session, State};

/// The address a client on a Unix-domain socket is given (see `Session::is_local`).
pub const LOCAL_PEER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));

/// A client as the log shows it (`Session::client_label`): its address, or `local`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLabel(pub Option<SocketAddr>);

impl core::fmt::Display for ClientLabel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("local"),
        }
    }
}

impl Session {
    /// The session's place in the command sequence (the seed's `smtp_state`, refined).
    pub fn state(&self) -> State {
        self.state
    }

    /// The client's address (the seed's `peer`); `127.0.0.1:0` for a client on a Unix-domain
    /// socket (see `is_local`).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The client connected over a Unix-domain socket: it has no address of its own, so
    /// `peer()` says `127.0.0.1:0`, as Postfix's smtpd says of such clients, and what is
    /// written for people (smtp-sink's dumps, the log) says `local`, as smtp-sink does.
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// The client as people read it: `ADDR:PORT`, or `local` for a Unix-domain client.
    pub fn client_label(&self) -> ClientLabel {
        ClientLabel((!self.local).then_some(self.peer))
    }

    /// Marks the client as one on a Unix-domain socket (the server does, before the first
    /// input; `peer` should be `LOCAL_PEER`).
    pub fn set_local(&mut self) {
        self.local = true;
    }

    /// The name from the accepted HELO/EHLO (the seed's `seen_greeting`).
    pub fn helo_name(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// The HELO/EHLO awaiting a decision: (name, is EHLO).
    pub fn pending_helo(&self) -> Option<(&str, bool)> {
        self.pending_helo.as_ref().map(|(n, e)| (n.as_str(), *e))
    }

    /// True when the accepted greeting was EHLO.
    pub fn is_esmtp(&self) -> bool {
        self.esmtp
    }

    /// Our own name (the seed's `fqdn`).
    pub fn hostname(&self) -> &str {
        &self.config.hostname
    }

    /// The current transaction.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The RCPT awaiting a decision (the newest one, when decisions are pipelined): (address,
    /// parameters).
    pub fn pending_recipient(&self) -> Option<(&Mailbox, &[String])> {
        if self.decisions.back()?.kind != Awaiting::Rcpt {
            return None;
        }
        let (m, p) = self.pending_rcpts.back()?;
        Some((m, p.as_slice()))
    }

    /// The AUTH credentials awaiting a decision (`Event::Auth`).
    pub fn pending_auth(&self) -> Option<&Credentials> {
        self.pending_auth.as_ref()
    }

    /// The identity a successful AUTH established (RFC 4954), if any.
    pub fn authenticated(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    /// True after STARTTLS was accepted (`220` written) and before `tls_started`: the driver
    /// must send the pending output, discard nothing but require that no input follows the
    /// STARTTLS line in plaintext (RFC 3207 §5; otherwise it closes the connection), start TLS,
    /// then call `tls_started`. The session reads no input meanwhile.
    pub fn starttls_requested(&self) -> bool {
        self.starttls_pending
    }

    /// TLS is now active: the session forgets everything the client said before (RFC 3207
    /// §4.2) and expects a new EHLO.
    pub fn tls_started(&mut self) {
        self.starttls_pending = false;
        self.tls = true;
        self.abort_transaction();
        self.mail_refused = false;
        self.failed_chunks = None;
        self.helo = None;
        self.esmtp = false;
        self.authenticated = None;
        if self.state != State::Closed {
            self.state = State::ExpectHelo;
        }
    }

    /// True once TLS is active.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The configuration this session runs with.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Protocol errors counted against the error budget so far.
    pub fn error_count(&self) -> u32 {
        self.errors
    }
}
