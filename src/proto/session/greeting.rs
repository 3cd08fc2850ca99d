//! The EHLO reply: what a session offers, in the order smtplib and Postfix list it. Part of
//! `Session`; see the parent module for the contract.

use std::borrow::Cow;

use super::Session;

impl Session {
    /// The EHLO reply's text: our greeting line, then the keywords this session offers
    /// (the handler's own before HELP).
    pub(super) fn ehlo_text(&self, name: &str) -> Cow<'static, str> {
        let ext = self.extensions;
        let mut t = format!("{} Hello {}", self.config.hostname, name);
        if ext.pipelining {
            t.push_str("\nPIPELINING");
        }
        if ext.size {
            match self.config.data_size_limit {
                0 => t.push_str("\nSIZE"),
                n => t.push_str(&format!("\nSIZE {n}")),
            }
        }
        if ext.eightbitmime {
            t.push_str("\n8BITMIME");
        }
        if ext.smtputf8 {
            t.push_str("\nSMTPUTF8");
        }
        if ext.enhanced_status_codes {
            t.push_str("\nENHANCEDSTATUSCODES");
        }
        if ext.starttls && !self.tls {
            t.push_str("\nSTARTTLS");
        }
        if ext.auth && (self.tls || !ext.starttls) {
            t.push_str("\nAUTH PLAIN LOGIN");
        }
        if ext.chunking {
            t.push_str("\nCHUNKING");
        }
        t.push_str(&self.hooks.ehlo);
        if ext.help {
            t.push_str("\nHELP");
        }
        Cow::Owned(t)
    }
}
