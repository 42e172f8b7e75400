//! Where a setting came from, and reading the environment.

use std::fmt;

/// A way to read environment variables.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    Alias(&'static str),
    Preset(&'static str),
    Default,
    /// Read back from the database file (journal mode, synchronous).
    File,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "flag({flag})"),
            Source::Env(name) => write!(f, "env({name})"),
            Source::Alias(name) => write!(f, "env({name})"),
            Source::Preset(name) => write!(f, "preset({name})"),
            Source::Default => f.write_str("default"),
            Source::File => f.write_str("file"),
        }
    }
}

/// A resolved value and its source.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Sourced<T> {
    pub fn new(value: T, source: Source) -> Self {
        Sourced { value, source }
    }
}

/// A setting that failed to parse, naming where the bad value came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct SettingError {
    pub source_name: String,
    pub message: String,
}
