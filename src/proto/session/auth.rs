//! SMTP AUTH on the server side (RFC 4954): PLAIN (RFC 4616) and LOGIN, with or without an
//! initial response, the `334` exchange, cancellation with `*`, and the decision that lets
//! the handler check the credentials. Part of `Session`.
//!
//! The session never checks a password: `Event::Auth` is a decision whose default answer is a
//! refusal (`535 5.7.8`); a positive answer authenticates the session (`235 2.7.0`). AUTH is
//! offered only when `Extensions::auth` is on (and, when STARTTLS is on offer, only inside
//! TLS: `538 5.7.11` before), only after EHLO, once per session and never inside a
//! transaction. A failed attempt counts against the error budget.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::super::event::Event;
use super::super::reply::{EnhancedCode, Reply};
use super::{Awaiting, Mode, Session, State};

/// What a client presented with AUTH, for the handler to check (`Session::pending_auth`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `PLAIN` or `LOGIN`.
    pub mechanism: &'static str,
    /// The identity to act as (PLAIN's authzid; empty means the username itself).
    pub authzid: String,
    /// The identity whose password this is.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("mechanism", &self.mechanism)
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Where an AUTH exchange stands while the client owes a response line.
#[derive(Debug)]
pub(super) enum AuthStep {
    /// PLAIN, after an empty `334`.
    Plain,
    /// LOGIN, after `334 VXNlcm5hbWU6` ("Username:").
    LoginUser,
    /// LOGIN, after `334 UGFzc3dvcmQ6` ("Password:").
    LoginPassword(String),
}

const fn esc(class: u8, subject: u16, detail: u16) -> EnhancedCode {
    EnhancedCode::new(class, subject, detail)
}

impl Session {
    /// The AUTH command line.
    pub(super) fn auth_command(&mut self, line: &[u8]) {
        if !self.extensions.auth {
            return self.write(&Reply::new(
                502,
                esc(5, 5, 1),
                "Error: command not implemented",
            ));
        }
        if self.extensions.starttls && !self.tls {
            // RFC 4954 §4: cleartext passwords only inside TLS when TLS is on offer.
            return self.protocol_error(Reply::new(
                538,
                esc(5, 7, 11),
                "Error: encryption required for requested authentication mechanism",
            ));
        }
        let refusal = if !self.esmtp {
            Some("Error: send EHLO first")
        } else if self.authenticated.is_some() {
            Some("Error: already authenticated")
        } else if self.state != State::ExpectMail {
            Some("Error: AUTH not permitted during a mail transaction")
        } else {
            None
        };
        if let Some(text) = refusal {
            return self.protocol_error(Reply::new(503, esc(5, 5, 1), text));
        }
        let args = String::from_utf8_lossy(&line[4..]);
        let mut words = args.split_ascii_whitespace();
        let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
        let initial = words.next();
        if words.next().is_some() {
            return self.protocol_error(Reply::new(501, esc(5, 5, 4), "Syntax: AUTH mechanism"));
        }
        match (mechanism.as_str(), initial) {
            ("PLAIN", None) => self.challenge(AuthStep::Plain, ""),
            ("PLAIN", Some(r)) => self.auth_step(AuthStep::Plain, r.as_bytes()),
            ("LOGIN", None) => self.challenge(AuthStep::LoginUser, "VXNlcm5hbWU6"),
            ("LOGIN", Some(r)) => self.auth_step(AuthStep::LoginUser, r.as_bytes()),
            ("", _) => self.protocol_error(Reply::new(501, esc(5, 5, 4), "Syntax: AUTH mechanism")),
            _ => self.protocol_error(Reply::new(
                504,
                esc(5, 5, 4),
                "Error: unrecognized authentication type",
            )),
        }
    }

    fn challenge(&mut self, step: AuthStep, text: &'static str) {
        self.write(&Reply::plain(334, text));
        self.mode = Mode::AuthResponse(step);
    }

    /// Frames one response line while an AUTH exchange waits for it; 0 = need more input.
    pub(super) fn auth_response_step(&mut self, rest: &[u8]) -> usize {
        let limit = self.config.command_line_limit();
        let Some(p) = memchr::memchr(b'\n', rest) else {
            if rest.len() >= limit {
                self.auth_failed(Reply::new(500, esc(5, 5, 2), "Error: line too long"));
                self.mode = Mode::SkipLine;
                return rest.len();
            }
            return 0;
        };
        let Mode::AuthResponse(step) = std::mem::replace(&mut self.mode, Mode::Command) else {
            return 0;
        };
        if p >= limit {
            self.auth_failed(Reply::new(500, esc(5, 5, 2), "Error: line too long"));
        } else {
            match rest[..p].strip_suffix(b"\r") {
                Some(line) => self.auth_step(step, line),
                None => {
                    self.auth_failed(Reply::new(500, esc(5, 5, 2), "Error: bare <LF> received"));
                    // The rest of the line, up to its CRLF, is not a command.
                    self.mode = Mode::SkipLine;
                }
            }
        }
        p + 1
    }

    /// One client response (base64, `=` for empty, `*` to cancel).
    fn auth_step(&mut self, step: AuthStep, response: &[u8]) {
        if response == b"*" {
            return self.auth_failed(Reply::new(501, esc(5, 0, 0), "Authentication cancelled"));
        }
        let decoded = if response == b"=" {
            Ok(Vec::new())
        } else {
            B64.decode(response)
        };
        let Ok(decoded) = decoded.map(String::from_utf8) else {
            return self.bad_response();
        };
        let Ok(text) = decoded else {
            return self.bad_response();
        };
        match step {
            AuthStep::Plain => {
                let mut parts = text.split('\0');
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some(authzid), Some(user), Some(pass), None) if !user.is_empty() => self
                        .auth_decide(Credentials {
                            mechanism: "PLAIN",
                            authzid: authzid.to_string(),
                            username: user.to_string(),
                            password: pass.to_string(),
                        }),
                    _ => self.bad_response(),
                }
            }
            AuthStep::LoginUser => self.challenge(AuthStep::LoginPassword(text), "UGFzc3dvcmQ6"),
            AuthStep::LoginPassword(user) => self.auth_decide(Credentials {
                mechanism: "LOGIN",
                authzid: String::new(),
                username: user,
                password: text,
            }),
        }
    }

    fn bad_response(&mut self) {
        self.auth_failed(Reply::new(
            501,
            esc(5, 5, 2),
            "Error: cannot decode the AUTH response",
        ));
    }

    /// Ends an exchange that went wrong: the reply, and one unit of the error budget.
    fn auth_failed(&mut self, reply: Reply) {
        self.mode = Mode::Command;
        self.protocol_error(reply);
    }

    fn auth_decide(&mut self, credentials: Credentials) {
        self.pending_auth = Some(credentials);
        self.decide(Awaiting::Auth, Event::Auth);
    }

    /// Applies the handler's answer to `Event::Auth`: positive authenticates, anything else
    /// (and no answer) refuses.
    pub(super) fn apply_auth(&mut self, reply: Option<Reply>) {
        let Some(c) = self.pending_auth.take() else {
            return;
        };
        match reply {
            Some(r) if r.is_positive() => {
                let identity = if c.authzid.is_empty() {
                    c.username
                } else {
                    c.authzid
                };
                self.authenticated = Some(identity);
                let r = if r.code() == 235 {
                    r
                } else {
                    Reply::new(235, esc(2, 7, 0), "Authentication successful")
                };
                self.write(&r);
            }
            Some(r) => self.protocol_error(r),
            None => self.protocol_error(Reply::new(
                535,
                esc(5, 7, 8),
                "Error: authentication credentials invalid",
            )),
        }
    }
}
