//! SIGHUP for the binary: the command line is resolved again (the config file and every file
//! it or a flag names are re-read: TLS certificate and key, AUTH users), and what may change
//! while running is swapped in — the STARTTLS certificate, the relay's networks, domains and
//! AUTH users, its upstreams and their settings, and in `mailman` Mailman's LMTP address and
//! its timeout and pool settings (its domains file is re-read by itself when it changes).
//! Sessions in progress keep what they started
//! with; the fault rules of `sink` and `debug` (`--faults` and the fault flags) are re-read
//! too and apply to every session from its next command. A new set that does not resolve (a broken file, a bad value) is refused whole and
//! the old settings stay; so is one that would turn STARTTLS or AUTH on or off, which needs a
//! restart (the EHLO reply of running sessions would be wrong). Listen addresses, limits and
//! the rest are read at start only.

use std::sync::Arc;

use ringrelay::server::{Reloader, ServerConfig};

use crate::cli::{self, Kind, Mode};

/// The reloader for `mode` as started (`None` for `smtpd`, which reads no files).
pub fn reloader(mode: Mode, kind: &Kind, config: &ServerConfig) -> Option<Reloader> {
    if !matches!(
        mode,
        Mode::Sink(_) | Mode::Debug(_) | Mode::Proxy(_) | Mode::Mailman(_)
    ) {
        return None;
    }
    let tls = config.tls.clone();
    let faults = config.faults.as_ref().map(|f| f.rules.clone());
    let relay = match kind {
        Kind::Proxy(r) => Some((r.upstream.clone(), r.policy.clone())),
        _ => None,
    };
    let lmtp = match kind {
        Kind::Proxy(r) => r.mailman.as_ref().map(|m| m.lmtp.clone()),
        _ => None,
    };
    Some(Reloader(Arc::new(move || {
        let (new_kind, new_config) = cli::resolve(mode.clone()).map_err(|e| e.to_string())?;
        // Check everything before changing anything.
        let new_tls = match (&tls, &new_config.tls) {
            (Some(_), Some(new)) => Some((*new.load()).clone()),
            (None, None) => None,
            _ => return Err("STARTTLS cannot be turned on or off by a reload; restart".into()),
        };
        let new_faults = match (&faults, &new_config.faults) {
            (Some(_), Some(new)) => Some((*new.rules.load()).clone()),
            (Some(_), None) => Some(Default::default()),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(
                    "fault injection cannot be turned on by a reload; restart (or \
                            start with an empty --faults file)"
                        .into(),
                )
            }
        };
        let new_lmtp = match (&lmtp, &new_kind) {
            (Some(_), Kind::Proxy(new)) => new.mailman.as_ref().map(|m| (*m.lmtp.load()).clone()),
            _ => None,
        };
        let new_relay = match (&relay, new_kind) {
            (Some((up, policy)), Kind::Proxy(new)) => {
                let new_policy = (*new.policy.load()).clone();
                if new_policy.users.is_some() != policy.load().users.is_some() {
                    return Err("AUTH cannot be turned on or off by a reload; restart".into());
                }
                let mut new_up = (*new.upstream.load()).clone();
                // Readiness is about the process, not one configuration.
                new_up.health = up.load().health.clone();
                Some((new_up, new_policy))
            }
            _ => None,
        };
        let mut changed = Vec::new();
        if let (Some(slot), Some(value)) = (&tls, new_tls) {
            slot.store(value);
            changed.push("the STARTTLS certificate");
        }
        if let (Some(slot), Some(set)) = (&faults, new_faults) {
            slot.store(set);
            changed.push("the fault rules");
        }
        if let (Some((up, policy)), Some((new_up, new_policy))) = (&relay, new_relay) {
            up.store(new_up);
            policy.store(new_policy);
            changed.push("the relay networks, domains and AUTH users, the upstreams");
        }
        if let (Some(slot), Some(value)) = (&lmtp, new_lmtp) {
            slot.store(value);
            changed.push("Mailman's LMTP address and settings");
        }
        Ok(if changed.is_empty() {
            "nothing that can change while running".into()
        } else {
            changed.join("; ")
        })
    })))
}
