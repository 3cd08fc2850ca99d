//! The fault options of `sink` and `debug` — smtp-sink's flags (`-f`, `-r`, `-q`, `-Q`, `-w`,
//! `-W`, `-A`, `-M`, `-n`) and the rules file (`--faults`) — turned into one validated rule
//! set: the flags' rules first, in that order, then the file's. `None` when nothing is asked
//! for, so the sink runs without the fault layer.

use std::time::Duration;

use ringrelay::faults::rules::{Action, Dist, RuleFile, RuleSpec, Stage};
use ringrelay::faults::{FaultConfig, RuleSet};
use ringrelay::reload::Swap;

use crate::cli::{CliError, ServeArgs};

fn stages(flag: &str, cmds: &[String]) -> Result<Vec<Stage>, CliError> {
    cmds.iter()
        .flat_map(|c| c.split_whitespace())
        .map(|c| {
            Stage::parse(c).ok_or_else(|| {
                CliError::Invalid(format!("{flag}: unknown command {c:?} (CONNECT, HELO, EHLO, LHLO, MAIL, RCPT, DATA, \".\", BDAT, RSET, NOOP, QUIT, VRFY, AUTH, STARTTLS)"))
            })
        })
        .collect()
}

fn seconds(flag: &str, secs: f64) -> Result<Dist, CliError> {
    if !(0.0..=3600.0).contains(&secs) {
        return Err(CliError::Invalid(format!(
            "{flag}: {secs} s is out of range (0 to 3600)"
        )));
    }
    Ok(Dist::Fixed(Duration::from_secs_f64(secs)))
}

fn rule(stage: Stage, action: Action) -> RuleSpec {
    RuleSpec {
        stage,
        matches: Default::default(),
        probability: 1.0,
        action,
    }
}

/// The fault configuration the flags and the rules file ask for (command line over file).
pub fn fault_config(cli: &ServeArgs, file: &ServeArgs) -> Result<Option<FaultConfig>, CliError> {
    let pick = |a: &Vec<String>, b: &Vec<String>| if a.is_empty() { b.clone() } else { a.clone() };
    let mut spec = RuleFile::default();
    for s in stages("-f", &pick(&cli.hard_reject, &file.hard_reject))? {
        let text = "Error: command failed".to_string();
        let action = Action::Reply {
            code: 500,
            enhanced: Some("5.3.0".into()),
            text,
        };
        spec.rules.push(rule(s, action));
    }
    for s in stages("-r", &pick(&cli.soft_reject, &file.soft_reject))? {
        let text = "Error: command failed".to_string();
        let action = Action::Reply {
            code: 450,
            enhanced: Some("4.3.0".into()),
            text,
        };
        spec.rules.push(rule(s, action));
    }
    for s in stages("-q", &pick(&cli.disconnect_after, &file.disconnect_after))? {
        spec.rules.push(rule(s, Action::Disconnect));
    }
    for s in stages("-Q", &pick(&cli.close_after, &file.close_after))? {
        spec.rules.push(rule(s, Action::Close));
    }
    if let Some(secs) = cli.data_delay.or(file.data_delay) {
        let delay = seconds("-w", secs)?;
        spec.rules.push(rule(Stage::Data, Action::Delay { delay }));
    }
    for w in pick(&cli.delay, &file.delay) {
        let bad = || CliError::Invalid(format!("-W {w:?}: expected CMD:SECS[:ODDS]"));
        let mut parts = w.split(':');
        let (Some(cmd), Some(secs)) = (parts.next(), parts.next()) else {
            return Err(bad());
        };
        let stage = stages("-W", &[cmd.to_string()])?[0];
        let secs: f64 = secs.trim().parse().map_err(|_| bad())?;
        let delay = match parts.next() {
            None => seconds("-W", secs)?,
            Some(odds) => {
                let odds: u32 = odds.trim().parse().map_err(|_| bad())?;
                if !(1..=99).contains(&odds) {
                    return Err(bad());
                }
                Dist::Dice(Duration::from_secs_f64(secs.clamp(0.0, 3600.0)), odds)
            }
        };
        spec.rules.push(rule(stage, Action::Delay { delay }));
    }
    if let Some(secs) = cli.abort_data.or(file.abort_data) {
        let delay = seconds("-A", secs)?;
        spec.rules.push(rule(Stage::Data, Action::Abort { delay }));
    }
    let rules_file = cli.faults.as_ref().or(file.faults.as_ref());
    if let Some(path) = rules_file {
        let text = std::fs::read_to_string(path).map_err(|source| CliError::Read {
            path: path.clone(),
            source,
        })?;
        let from_file = RuleSet::from_toml(&text)
            .map_err(|e| CliError::Invalid(format!("--faults {}: {e}", path.display())))?;
        spec.seed = from_file.spec.seed;
        spec.address_triggers = from_file.spec.address_triggers;
        spec.rules.extend(from_file.spec.rules);
    }
    spec.address_triggers |= cli.address_triggers || file.address_triggers;
    if let Some(seed) = cli.fault_seed.or(file.fault_seed) {
        spec.seed = seed;
    }
    let stop_after_messages = cli.max_messages.or(file.max_messages);
    let stop_after_sessions = cli.max_sessions.or(file.max_sessions);
    let rules = RuleSet::new(spec).map_err(CliError::Invalid)?;
    // A rules file, even an empty one, keeps the layer for changes while running.
    let nothing = rules.is_empty() && rules_file.is_none();
    if nothing && stop_after_messages.is_none() && stop_after_sessions.is_none() {
        return Ok(None);
    }
    Ok(Some(FaultConfig {
        rules: Swap::new(rules),
        stop_after_messages,
        stop_after_sessions,
        counts: Default::default(),
    }))
}
