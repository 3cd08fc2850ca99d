//! `ringrelay completions SHELL` and `ringrelay man [MODE]`: the shell completion scripts
//! (clap_complete) and the manual pages (clap_mangen, roff), both generated from the same
//! clap definition as the parser, so they cannot drift from the flags. Writes to stdout only.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::Cli;

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "ringrelay", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// Prints ringrelay(1), or the page of one mode (ringrelay-MODE(1)).
pub fn man(mode: Option<&str>) -> ExitCode {
    let mut cmd = Cli::command();
    cmd.build();
    let page = match mode {
        None => cmd,
        Some(name) => match cmd.find_subcommand(name) {
            Some(sub) => {
                let title = format!("ringrelay-{}", sub.get_name());
                sub.clone().display_name(title)
            }
            None => {
                let modes: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
                eprintln!(
                    "ringrelay man: no mode {name:?}; one of: {}",
                    modes.join(", ")
                );
                return ExitCode::from(2);
            }
        },
    };
    let mut out = Vec::new();
    if let Err(e) = clap_mangen::Man::new(page).render(&mut out) {
        eprintln!("ringrelay man: {e}");
        return ExitCode::from(2);
    }
    match std::io::stdout().write_all(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringrelay man: {e}");
            ExitCode::from(2)
        }
    }
}
