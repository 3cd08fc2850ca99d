//! A custom handler: the Rust form of subclassing Python's `smtpd.SMTPServer`.
//!
//! Refuses recipients outside `example.com`, refuses messages without a Subject header, and
//! prints a line per accepted message. Run it, then send mail to 127.0.0.1:2526:
//!
//! ```text
//! cargo run --example custom_handler
//! swaks --server 127.0.0.1:2526 --to someone@example.com --header "Subject: hi"
//! ```

use ringrelay::proto::EnhancedCode;
use ringrelay::{Handler, Reply, Server, Session};

#[derive(Clone, Default)]
struct OnlyExampleCom {
    accepted: u64,
}

impl Handler for OnlyExampleCom {
    fn rcpt(&mut self, session: &Session) -> Option<Reply> {
        let (to, _params) = session.pending_recipient()?;
        match to.domain() {
            Some(d) if d.eq_ignore_ascii_case("example.com") => None,
            _ => Some(Reply::new(
                550,
                EnhancedCode::new(5, 7, 1),
                "Relaying denied: only example.com",
            )),
        }
    }

    fn process_message(&mut self, session: &Session, message: &[u8]) -> Option<Reply> {
        let headers = message
            .split(|&b| b == b'\n')
            .take_while(|l| *l != b"\r" && !l.is_empty());
        let has_subject = headers
            .clone()
            .any(|l| l.len() >= 8 && l[..8].eq_ignore_ascii_case(b"subject:"));
        if !has_subject {
            return Some(Reply::new(
                550,
                EnhancedCode::new(5, 6, 0),
                "A Subject header is required",
            ));
        }
        self.accepted += 1;
        let env = session.envelope();
        println!(
            "message #{} from {} ({}) to {:?}: {} octets",
            self.accepted,
            env.mail_from.as_ref().map_or("", |f| f.as_str()),
            session.peer(),
            env.rcpt_tos.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            message.len()
        );
        None
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let report = Server::builder()
        .listen("127.0.0.1:2526".parse()?)
        .shards(1)
        .handler(OnlyExampleCom::default())
        .run()?;
    eprintln!("stopped; drained cleanly: {}", report.drained);
    Ok(())
}
