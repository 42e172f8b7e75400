//! One module per table, re-exported flat: callers write `schema::models::Build`.
//! Each module holds the table's row types and every query on it, as named
//! functions taking a diesel connection and returning `QueryResult`.

mod booking;
mod build;
mod build_event;
mod build_request;
mod environment;
mod project;
mod request_child;

pub use booking::*;
pub use build::*;
pub use build_event::*;
pub use build_request::*;
pub use environment::*;
pub use project::*;
pub use request_child::*;

use crate::backend::Conn;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

/// The id of the last row this connection inserted: SQLite's
/// `last_insert_rowid()`, MySQL's `LAST_INSERT_ID()`, PostgreSQL's `lastval()`
/// (the session's last sequence value, which the insert's serial id drew).
///
/// Writes use `execute` and this, never `INSERT ... RETURNING`: diesel reports
/// a failed `execute` to its instrumentation before it cleans the statement up,
/// which is when the lab reads the failing handle's extended code (see
/// `crate::db`); a failed row-loading query loses that code.
pub(crate) fn last_insert_rowid(conn: &mut Conn) -> QueryResult<i64> {
    let expr = match conn {
        Conn::Sqlite(_) => "last_insert_rowid()",
        Conn::Postgres(_) => "lastval()",
        Conn::Mysql(_) => "CAST(LAST_INSERT_ID() AS SIGNED)",
    };
    diesel::select(diesel::dsl::sql::<BigInt>(expr)).get_result(conn)
}
