//! The database behind the lab: where it is ([`DbTarget`]), the lab's
//! connection ([`LabConn`]) and pool, written once, and the backend interface
//! ([`Engine`]) that each database implements for what differs: SQLite
//! ([`sqlite`]) and the servers, PostgreSQL and MySQL/MariaDB ([`server`]).

mod conn;
mod engine;
mod pool;
pub mod server;
pub mod sqlite;
mod target;

pub use conn::{
    AttemptError, AttemptFailure, AttemptTimes, Block, Committed, LabConn, OpenError, Tx,
};
pub use engine::{Engine, Kind};
pub use pool::{build_pool, LabManager, Pool, PooledConn};
pub use target::{DbTarget, ServerUrl};

/// Runs the same diesel expression on whichever backend `conn` holds, each arm
/// compiled for its concrete connection. For the few queries the multi backend
/// cannot express (multi-row inserts), where the SQL is the same but diesel's
/// types are not.
macro_rules! on_each_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::backend::Conn::Sqlite($c) => $body,
            $crate::backend::Conn::Postgres($c) => $body,
            $crate::backend::Conn::Mysql($c) => $body,
        }
    };
}
pub(crate) use on_each_backend;

/// The connection every model function, strategy and operation takes: one
/// diesel connection over the three backends, so that each query is written
/// once. Where SQL truly differs (insert ids, upserts, locking clauses) a model
/// matches on the variant.
#[derive(diesel::MultiConnection)]
pub enum Conn {
    Sqlite(diesel::sqlite::SqliteConnection),
    Postgres(diesel::pg::PgConnection),
    Mysql(diesel::mysql::MysqlConnection),
}
