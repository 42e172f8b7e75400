//! Strategies: the good and the bad patterns the lab turns on by name, one
//! file each, each owning its transaction boundaries. The daemons run them;
//! tests call the very same functions.
//!
//! - [`claim`]: how runbuilds claims a request (`LAB_CLAIM`): `toaster`,
//!   `single`, `guarded`.
//! - [`commit`]: how buildinfohelper writes a build's events (`LAB_COMMIT`):
//!   `per-event`, `every-3-tasks` (Toaster's manual mode), `batch:N`.
//! - [`retry`]: what happens after a failed attempt (`LAB_RETRY`): `none`,
//!   `toaster` (the patched save), `backoff`.

pub mod claim;
pub mod commit;
pub mod create;
pub mod retry;
