//! A session's deadlines: the idle timeout, a command line's time from its first octet, the
//! data timeout, and under stress the minimum body rate; time is always passed in. Part of
//! `Session`; see the parent module for the contract.

use std::time::{Duration, Instant};

use super::super::reply::{EnhancedCode, Reply};
use super::{Mode, Session, State};

impl Session {
    /// When the session wants `handle_timeout` called; `None` while it waits for its handler
    /// or is closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.decisions.is_empty() || self.state == State::Closed {
            return None;
        }
        let in_body = matches!(self.mode, Mode::Data | Mode::Bdat(_));
        let limit = if in_body {
            self.config.data_timeout
        } else {
            self.config.idle_timeout
        };
        let mut deadline = self.last_activity + limit;
        if let Some(started) = self.line_started {
            // A command line gets the idle timeout from its first octet, however it trickles.
            deadline = deadline.min(started + self.config.idle_timeout);
        }
        let rate = self.config.min_data_rate;
        if let (true, true, Some(started)) = (in_body, self.stressed && rate > 0, self.data_started)
        {
            // Under stress a body must keep `rate` octets a second after its first second.
            let due = Duration::from_secs_f64((self.data_octets + rate) as f64 / rate as f64);
            deadline = deadline.min(started + due);
        }
        Some(deadline)
    }

    /// Tells the session whether the server is under stress (the driver decides: more than
    /// half of its connection budget in use); message bodies must then keep the configured
    /// minimum rate.
    pub fn set_stressed(&mut self, stressed: bool) {
        self.stressed = stressed;
    }

    /// Ends the session with `421 4.4.2` if its deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.poll_timeout(), Some(t) if now >= t) {
            let text = format!("{} Error: timeout exceeded", self.config.hostname);
            self.close_with(Reply::new(421, EnhancedCode::new(4, 4, 2), text));
        }
    }
}
