//! `CliError`: why the command line or the config file cannot become a configuration. The
//! binary prints it after `ringrelay: ` and exits 2.

use std::path::PathBuf;

use crate::cli_values::ValueError;

/// Why the arguments could not be turned into a configuration.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The config file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("{path}: {source}")]
    Parse {
        /// File.
        path: PathBuf,
        /// TOML error.
        source: toml::de::Error,
    },
    /// Any other option or combination that cannot be used; the text says which and why.
    #[error("{0}")]
    Invalid(String),
    /// A size or an address that cannot be used.
    #[error(transparent)]
    Value(#[from] ValueError),
}
