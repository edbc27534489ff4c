//! Configuration errors and where a setting came from.
//!
//! Every error names where the bad value was written, so an administrator
//! can go straight to it: `sluice.toml:12: option `network.max_pdu_length`:
//! ...` for the file, `command line: flag `--max-pdu-length`: ...` for flags.

use std::fmt;
use std::path::PathBuf;

/// Where the value of an option came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Not from the file or a flag: Sluice's built-in default, or a value an
    /// embedder set in code.
    Default,
    /// A line of a configuration file (1-based).
    File {
        /// The file as named on the command line.
        path: PathBuf,
        /// The line where the option's key is written.
        line: usize,
    },
    /// A command-line flag.
    Flag {
        /// The flag, without the leading `--`.
        flag: &'static str,
    },
}

impl fmt::Display for Origin {
    /// A short form for "set at ..." remarks: `sluice.toml:8`,
    /// `flag --port`, `default`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => formatter.write_str("default"),
            Origin::File { path, line } => write!(formatter, "{}:{line}", path.display()),
            Origin::Flag { flag } => write!(formatter, "flag --{flag}"),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file as named.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}:{line}: invalid TOML: {message}", path.display())]
    Syntax {
        /// The file as named.
        path: PathBuf,
        /// Line of the error (1-based).
        line: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// A key in the file that names no option (a misspelling, an option of
    /// another section, or an option of a newer Sluice).
    #[error("{}:{line}: unknown option `{option}`{}", path.display(), hint.as_deref().map(|hint| format!("; {hint}")).unwrap_or_default())]
    UnknownOption {
        /// The file as named.
        path: PathBuf,
        /// Line of the key (1-based).
        line: usize,
        /// The dotted key as written, for example `network.prot`.
        option: String,
        /// A suggestion, for example "did you mean `network.port`?".
        hint: Option<String>,
    },
    /// A value that is not valid for its option, alone or together with
    /// another option.
    #[error("{}", invalid_message(origin, option, message))]
    Invalid {
        /// Where the bad value was written.
        origin: Origin,
        /// The option's dotted key, for example `network.max_pdu_length`.
        option: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The command line could not be parsed: an unknown flag, a missing
    /// value, or `--help` (call [`clap::Error::exit`] to print it).
    #[error(transparent)]
    Usage(#[from] clap::Error),
}

fn invalid_message(origin: &Origin, option: &str, message: &str) -> String {
    match origin {
        Origin::File { path, line } => {
            format!("{}:{line}: option `{option}`: {message}", path.display())
        }
        Origin::Flag { flag } => format!("command line: flag `--{flag}`: {message}"),
        Origin::Default => format!("option `{option}`: {message}"),
    }
}

impl ConfigError {
    /// The line of the configuration file the error is about, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Syntax { line, .. } | ConfigError::UnknownOption { line, .. } => {
                Some(*line)
            }
            ConfigError::Invalid {
                origin: Origin::File { line, .. },
                ..
            } => Some(*line),
            _ => None,
        }
    }

    /// The dotted key of the option the error is about, if any.
    pub fn option(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownOption { option, .. } => Some(option),
            ConfigError::Invalid { option, .. } => Some(option),
            _ => None,
        }
    }
}
