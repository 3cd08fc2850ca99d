//! SMTP AUTH client side (RFC 4954): PLAIN (RFC 4616), LOGIN and CRAM-MD5 (RFC 2195), with
//! smtplib's rules: the initial response is sent on the AUTH line, and `login` tries the
//! mechanisms the server offers in the order CRAM-MD5, PLAIN, LOGIN. Sans-IO encoders only.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use md5::Md5;

/// A SASL mechanism this client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616.
    Plain,
    /// The de-facto LOGIN mechanism.
    Login,
    /// RFC 2195.
    CramMd5,
}

impl Mechanism {
    /// The name on the AUTH line.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
        }
    }

    /// smtplib's preference order.
    pub const PREFERRED: [Mechanism; 3] = [Mechanism::CramMd5, Mechanism::Plain, Mechanism::Login];

    /// Parses a name from the EHLO AUTH list.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::PREFERRED
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// The initial response sent on the AUTH line, if the mechanism has one.
    pub fn initial_response(self, user: &str, password: &str) -> Option<String> {
        match self {
            Mechanism::Plain => Some(B64.encode(format!("\0{user}\0{password}"))),
            Mechanism::Login => Some(B64.encode(user)),
            Mechanism::CramMd5 => None,
        }
    }

    /// The answer to a 334 challenge (base64 text after "334 ").
    pub fn respond(self, challenge_b64: &str, user: &str, password: &str) -> Option<String> {
        match self {
            Mechanism::Plain => Some(B64.encode(format!("\0{user}\0{password}"))),
            Mechanism::Login => Some(B64.encode(password)),
            Mechanism::CramMd5 => {
                let challenge = B64.decode(challenge_b64.trim()).ok()?;
                let mut mac = Hmac::<Md5>::new_from_slice(password.as_bytes()).ok()?;
                mac.update(&challenge);
                let digest = mac.finalize().into_bytes();
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                Some(B64.encode(format!("{user} {hex}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2195_example() {
        // RFC 2195 §2: user tim, secret tanstaaftanstaaf.
        let challenge = B64.encode("<1896.697170952@postoffice.reston.mci.net>");
        let r = Mechanism::CramMd5
            .respond(&challenge, "tim", "tanstaaftanstaaf")
            .unwrap();
        assert_eq!(
            B64.decode(r).unwrap(),
            b"tim b913a602c7eda7a495b4e6e7334d3890"
        );
    }

    #[test]
    fn plain_and_login() {
        assert_eq!(
            Mechanism::Plain.initial_response("user", "pass").unwrap(),
            "AHVzZXIAcGFzcw=="
        );
        assert_eq!(
            Mechanism::Login.initial_response("user", "p").unwrap(),
            "dXNlcg=="
        );
        assert_eq!(
            Mechanism::Login
                .respond("UGFzc3dvcmQ6", "u", "pass")
                .unwrap(),
            "cGFzcw=="
        );
        assert_eq!(Mechanism::from_name("cram-md5"), Some(Mechanism::CramMd5));
    }
}
