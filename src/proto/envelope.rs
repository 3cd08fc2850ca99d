//! The transaction as handlers see it: the seed's `mailfrom`, `rcpttos`, `mail_options` and
//! `rcpt_options`, plus what the ESMTP parameters declared. Owned by the session; handlers read it.

use super::address::{Mailbox, ReversePath};

/// The BODY= parameter of MAIL (RFC 6152).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyType {
    /// No BODY parameter.
    #[default]
    Unspecified,
    /// BODY=7BIT.
    SevenBit,
    /// BODY=8BITMIME.
    EightBitMime,
}

/// One mail transaction's envelope.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// MAIL FROM (set while the MAIL decision is pending, kept once accepted).
    pub mail_from: Option<ReversePath>,
    /// MAIL parameters, upper-cased as the seed passes them (`SIZE=100`, `BODY=8BITMIME`).
    pub mail_options: Vec<String>,
    /// Accepted recipients, in order.
    pub rcpt_tos: Vec<Mailbox>,
    /// The parameters of each accepted recipient (parallel to `rcpt_tos`).
    pub rcpt_options: Vec<Vec<String>>,
    /// `SIZE=` as declared at MAIL.
    pub declared_size: Option<u64>,
    /// `BODY=` at MAIL.
    pub body: BodyType,
    /// MAIL carried the SMTPUTF8 parameter.
    pub smtputf8: bool,
    /// Content octets received so far (dot-unstuffed, terminator excluded).
    pub data_size: u64,
}

impl Envelope {
    pub(crate) fn clear(&mut self) {
        self.mail_from = None;
        self.mail_options.clear();
        self.rcpt_tos.clear();
        self.rcpt_options.clear();
        self.declared_size = None;
        self.body = BodyType::Unspecified;
        self.smtputf8 = false;
        self.data_size = 0;
    }
}
