//! What differs per database. Today one backend, SQLite: its connection with
//! the lab's busy handler and hooks, the pool, and where the file is. The
//! server backends (issue 11) join here.

pub mod sqlite;

/// The connection every model function, strategy and operation takes. One
/// name, so that the backend behind it changes in one place: today it is
/// SQLite's connection; with the server backends it becomes the enum over all
/// three.
pub type Conn = diesel::sqlite::SqliteConnection;
