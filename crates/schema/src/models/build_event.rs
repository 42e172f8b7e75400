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

/// SQLite binds at most 32766 variables per statement; 7 per row.
const ROWS_PER_INSERT: usize = 1000;

impl BuildEvent {
    /// Inserts events of one build. Several statements for a large batch, all in
    /// the caller's transaction (or each autocommitting, if there is none).
    pub fn insert(conn: &mut Conn, build: BuildId, events: &[StreamEvent]) -> QueryResult<usize> {
        let now = now_micros();
        let mut n = 0;
        for chunk in events.chunks(ROWS_PER_INSERT) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|e| {
                    (
                        build_event::build_id.eq(build),
                        build_event::seq.eq(e.seq),
                        build_event::kind.eq(e.kind),
                        build_event::name.eq(&e.name),
                        build_event::payload.eq(&e.payload),
                        build_event::timestamp.eq(now),
                    )
                })
                .collect();
            n += on_each_backend!(&mut *conn, c => diesel::insert_into(build_event::table)
                .values(&rows)
                .execute(c))?;
        }
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
