//! What the three daemons do alike, written once:
//!
//! - [`CommonArgs`]: the settings every daemon takes, as flags and env vars with
//!   the same names natively and in compose, resolved by
//!   [`schema::settings::Resolver`] (flag > `LAB_*` > demo alias > preset >
//!   default), and logged at startup with their sources;
//! - [`Daemon::start`]: logging, the read-only startup check, the pool, and the
//!   effective settings read back from the database;
//! - [`serve`]: the HTTP endpoints `/healthz`, `/metrics`, `/api/stats` and
//!   `POST /drain` beside the daemon's own routes, the periodic summary line,
//!   the stats file, and graceful shutdown on SIGTERM/SIGINT.

mod config;
mod server;
pub mod spawn;
pub mod wake;

pub use config::*;
pub use server::*;
