//! What differs per database. Today one backend, SQLite: its connection with
//! the lab's busy handler and hooks, the pool, and where the file is. The
//! server backends (issue 11) join here.

pub mod sqlite;
