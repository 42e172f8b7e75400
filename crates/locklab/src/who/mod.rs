//! `locklab who`: which process holds SQLite's lock, seen from the operating
//! system, for any program that uses the database file. The sampler lives in
//! the `who` crate (webui's dashboard uses it too); here are its command line
//! ([`cli`]) and `locklab run`'s witness ([`witness`]): the OS-observed hold
//! time of each daemon beside its own trace, and any foreign holder named.

pub mod cli;
pub mod witness;

pub use ::who::ProbeMode;
pub use ::who::{decode, procinfo, proclocks, sampler, target, watch};
pub use ::who::{
    snapshot, Hold, HolderStats, LiveEvent, Party, Sampler, SamplerOptions, WhoReport, WriteMode,
};
