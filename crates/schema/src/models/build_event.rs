//! `build_event`: each build's event stream, about 15,000 rows per build.
//! UNIQUE(build_id, seq): a retried write cannot duplicate an event.

use crate::backend::{on_each_backend, Conn};
use diesel::prelude::*;
use serde::Serialize;

use crate::schema::build_event;
use crate::stream::StreamEvent;
use crate::types::{now_micros, BuildId, EventId, EventKind};

/// A row of `build_event`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Serialize)]
#[diesel(table_name = build_event)]
pub struct BuildEvent {
    pub id: EventId,
    pub build_id: BuildId,
    pub seq: i32,
    pub kind: EventKind,
    pub name: String,
    pub payload: String,
    pub timestamp: i64,
}

/// Rows of [`BuildEvent::insert`]'s largest statement.
const ROWS_PER_INSERT: usize = 100;

impl BuildEvent {
    /// Inserts events of one build: in statements of [`ROWS_PER_INSERT`]
    /// rows, then of 10, then single rows, all in the caller's transaction
    /// (or each autocommitting, if there is none). Each size is one prepared
    /// statement that the connection caches; diesel never caches a statement
    /// built from a `Vec`, so a batch of any other shape would be parsed
    /// again on every call, while its transaction holds the write lock (15%
    /// of the ingester's CPU when it was one 500-row statement).
    pub fn insert(conn: &mut Conn, build: BuildId, events: &[StreamEvent]) -> QueryResult<usize> {
        let now = now_micros();
        let mut n = 0;
        let mut rest = events;
        macro_rules! insert_rows {
            ($k:expr) => {
                while rest.len() >= $k {
                    let (chunk, tail) = rest.split_at($k);
                    // Owned values: a cached statement's type must not borrow.
                    let rows: [_; $k] = std::array::from_fn(|i| {
                        let e = &chunk[i];
                        (
                            build_event::build_id.eq(build),
                            build_event::seq.eq(e.seq),
                            build_event::kind.eq(e.kind),
                            build_event::name.eq(e.name.clone()),
                            build_event::payload.eq(e.payload.clone()),
                            build_event::timestamp.eq(now),
                        )
                    });
                    n += on_each_backend!(&mut *conn, c => diesel::insert_into(build_event::table)
                        .values(&rows)
                        .execute(c))?;
                    rest = tail;
                }
            };
        }
        insert_rows!(ROWS_PER_INSERT);
        insert_rows!(10);
        insert_rows!(1);
        Ok(n)
    }

    /// Whether a build's event `seq` is stored (the `get` of a get_or_create).
    pub fn exists(conn: &mut Conn, build: BuildId, seq: i32) -> QueryResult<bool> {
        diesel::select(diesel::dsl::exists(
            build_event::table
                .filter(build_event::build_id.eq(build))
                .filter(build_event::seq.eq(seq)),
        ))
        .get_result(conn)
    }

    /// The highest stored seq of a build: a restart resumes after it.
    pub fn max_seq(conn: &mut Conn, build: BuildId) -> QueryResult<Option<i32>> {
        build_event::table
            .filter(build_event::build_id.eq(build))
            .select(diesel::dsl::max(build_event::seq))
            .first(conn)
    }

    /// A build's stored events in seq order (`check`).
    pub fn for_build(conn: &mut Conn, build: BuildId) -> QueryResult<Vec<BuildEvent>> {
        build_event::table
            .filter(build_event::build_id.eq(build))
            .select(BuildEvent::as_select())
            .order((build_event::seq, build_event::id))
            .load(conn)
    }

    pub fn count(conn: &mut Conn) -> QueryResult<i64> {
        build_event::table.count().get_result(conn)
    }
}
