//! `build_request`: what webui creates, runbuilds claims and buildinfohelper
//! finishes. Three writers on one table.

use std::collections::BTreeMap;

use crate::backend::Conn;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::schema::{build_request, project};
use crate::types::{now_micros, BuildId, EnvironmentId, ProjectId, RequestId, RequestState};

/// What a request needs: environment kind to count. Stored as JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Needs(pub BTreeMap<String, u32>);

impl Default for Needs {
    /// A missing `needs` means one qemux86, as in DESIGN.md.
    fn default() -> Self {
        Needs(BTreeMap::from([("qemux86".to_string(), 1)]))
    }
}

impl Needs {
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".to_string())
    }

    pub fn from_json(text: &str) -> Needs {
        serde_json::from_str(text)
            .map(Needs)
            .unwrap_or_else(|_| Needs(BTreeMap::new()))
    }

    pub fn total(&self) -> u32 {
        self.0.values().sum()
    }

    /// Why `capacity` (kind to count of registered environments) can never
    /// satisfy these needs, if it cannot.
    pub fn unsatisfiable_by(&self, capacity: &BTreeMap<String, u32>) -> Option<String> {
        for (kind, want) in &self.0 {
            let have = capacity.get(kind).copied().unwrap_or(0);
            if have == 0 {
                return Some(format!("unknown environment kind {kind:?}"));
            }
            if *want > have {
                return Some(format!("needs {want} {kind} but only {have} exist"));
            }
        }
        None
    }
}

/// Rows of [`BuildRequest::create_many`]'s largest statement (the default
/// load's NUM): nine bound values each.
pub const BULK_ROWS: usize = 50;

/// A row of `build_request`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Serialize)]
#[diesel(table_name = build_request)]
pub struct BuildRequest {
    pub id: RequestId,
    pub project_id: ProjectId,
    pub state: RequestState,
    pub needs: String,
    pub priority: i32,
    pub submitted_by: String,
    pub client_request_id: Option<String>,
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The Build row webui made first (Toaster's create shape), if any.
    pub build_id: Option<BuildId>,
    /// The environment runbuilds assigned (Toaster's claim).
    pub environment_id: Option<EnvironmentId>,
}

/// A request to create.
#[derive(Debug, Clone)]
pub struct NewRequest<'a> {
    pub project_id: ProjectId,
    pub needs: &'a Needs,
    pub priority: i32,
    pub submitted_by: &'a str,
    pub client_request_id: Option<&'a str>,
    /// The Build row made before the request (Toaster's create shape).
    pub build_id: Option<BuildId>,
}

/// A queued request as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRequest {
    pub id: RequestId,
    pub needs: Needs,
}

impl BuildRequest {
    pub fn needs(&self) -> Needs {
        Needs::from_json(&self.needs)
    }

    /// Inserts one queued request.
    pub fn create(conn: &mut Conn, new: &NewRequest<'_>) -> QueryResult<RequestId> {
        let now = now_micros();
        diesel::insert_into(build_request::table)
            .values((
                build_request::project_id.eq(new.project_id),
                build_request::state.eq(RequestState::Queued),
                build_request::needs.eq(new.needs.to_json()),
                build_request::priority.eq(new.priority),
                build_request::submitted_by.eq(new.submitted_by),
                build_request::client_request_id.eq(new.client_request_id),
                build_request::created_at.eq(now),
                build_request::updated_at.eq(now),
                build_request::build_id.eq(new.build_id),
            ))
            .execute(conn)?;
        super::last_insert_rowid(conn).map(RequestId)
    }

    /// Inserts `count` queued requests as Django's `bulk_create` does: one
    /// multi-row INSERT … RETURNING id (SQLite 3.35+, PostgreSQL), in
    /// statements of [`BULK_ROWS`] rows, then of 10, then single rows: each
    /// size is one prepared statement, cached by the connection (a statement
    /// of any other size would be parsed again on every call). MySQL cannot
    /// return the ids of a multi-row INSERT, so there each request is its own
    /// INSERT, as [`Self::create`].
    pub fn create_many(
        conn: &mut Conn,
        new: &NewRequest<'_>,
        count: usize,
    ) -> QueryResult<Vec<RequestId>> {
        if let Conn::Mysql(_) = conn {
            return (0..count).map(|_| Self::create(conn, new)).collect();
        }
        let now = now_micros();
        let needs = new.needs.to_json();
        // Owned values: a cached statement's type must not borrow.
        let submitted_by = new.submitted_by.to_string();
        let client_request_id = new.client_request_id.map(str::to_string);
        let mut ids = Vec::with_capacity(count);
        let mut left = count;
        macro_rules! insert_rows {
            ($n:expr) => {
                while left >= $n {
                    let rows: [_; $n] = std::array::from_fn(|_| {
                        (
                            build_request::project_id.eq(new.project_id),
                            build_request::state.eq(RequestState::Queued),
                            build_request::needs.eq(needs.clone()),
                            build_request::priority.eq(new.priority),
                            build_request::submitted_by.eq(submitted_by.clone()),
                            build_request::client_request_id.eq(client_request_id.clone()),
                            build_request::created_at.eq(now),
                            build_request::updated_at.eq(now),
                            build_request::build_id.eq(new.build_id),
                        )
                    });
                    let insert = diesel::insert_into(build_request::table).values(&rows);
                    let chunk: Vec<RequestId> = match conn {
                        Conn::Sqlite(c) => insert.returning(build_request::id).get_results(c)?,
                        Conn::Postgres(c) => insert.returning(build_request::id).get_results(c)?,
                        Conn::Mysql(_) => unreachable!("MySQL returned above"),
                    };
                    ids.extend(chunk);
                    left -= $n;
                }
            };
        }
        insert_rows!(BULK_ROWS);
        insert_rows!(10);
        insert_rows!(1);
        Ok(ids)
    }

    /// Saves the request again, unchanged but for its time (Toaster's
    /// `br.save()` after the child rows).
    pub fn touch(conn: &mut Conn, id: RequestId) -> QueryResult<usize> {
        diesel::update(build_request::table.find(id))
            .set(build_request::updated_at.eq(now_micros()))
            .execute(conn)
    }

    /// Deletes a request; its child rows go with it (ON DELETE CASCADE).
    pub fn delete(conn: &mut Conn, id: RequestId) -> QueryResult<usize> {
        diesel::delete(build_request::table.find(id)).execute(conn)
    }

    /// Toaster's `_selectBuildRequest`: the first queued request by primary key.
    /// No priority and no skipping ahead.
    pub fn first_queued(conn: &mut Conn) -> QueryResult<Option<BuildRequest>> {
        build_request::table
            .filter(build_request::state.eq(RequestState::Queued))
            .order(build_request::id.asc())
            .select(BuildRequest::as_select())
            .first(conn)
            .optional()
    }

    /// Points the request at its environment (`br.environment = be; br.save()`).
    pub fn set_environment(
        conn: &mut Conn,
        id: RequestId,
        env: EnvironmentId,
    ) -> QueryResult<usize> {
        diesel::update(build_request::table.find(id))
            .set((
                build_request::environment_id.eq(Some(env)),
                build_request::updated_at.eq(now_micros()),
            ))
            .execute(conn)
    }

    /// How many requests are queued (what a Django view shows before it writes).
    /// The queue's length as a view reads it, counted up to `cap`: a longer
    /// queue reads as `cap`. The view keeps its read before its write (the
    /// pattern the lab studies), but the read costs at most `cap` index
    /// entries. A full COUNT grew with the queue: under the default load,
    /// where requests arrive far faster than 7 environments build them,
    /// webui spent most of its CPU counting (perf: sqlite3VdbeExec,
    /// btreeParseCellPtrIndex, countStep).
    pub fn queue_length_up_to(conn: &mut Conn, cap: i64) -> QueryResult<i64> {
        // Whether a `cap`-th queued request exists, then (for a shorter
        // queue) the count: both cached statements that step over index
        // entries without loading them. Loading up to `cap` ids to count
        // them cost webui a sixth of its CPU under load.
        if cap <= 0 {
            return Ok(0);
        }
        let capped = build_request::table
            .filter(build_request::state.eq(RequestState::Queued))
            .select(build_request::id)
            .offset(cap - 1)
            .first::<RequestId>(conn)
            .optional()?;
        match capped {
            Some(_) => Ok(cap),
            None => Self::queue_length(conn),
        }
    }

    pub fn queue_length(conn: &mut Conn) -> QueryResult<i64> {
        build_request::table
            .filter(build_request::state.eq(RequestState::Queued))
            .count()
            .get_result(conn)
    }

    pub fn get(conn: &mut Conn, id: RequestId) -> QueryResult<Option<BuildRequest>> {
        build_request::table
            .find(id)
            .select(BuildRequest::as_select())
            .first(conn)
            .optional()
    }

    /// A page by key: ids greater than `after`, oldest first.
    pub fn page(
        conn: &mut Conn,
        state: Option<RequestState>,
        after: Option<RequestId>,
        limit: i64,
    ) -> QueryResult<Vec<BuildRequest>> {
        let mut q = build_request::table
            .select(BuildRequest::as_select())
            .into_boxed();
        if let Some(state) = state {
            q = q.filter(build_request::state.eq(state));
        }
        if let Some(after) = after {
            q = q.filter(build_request::id.gt(after));
        }
        q.order(build_request::id.asc()).limit(limit).load(conn)
    }

    /// The newest requests with their project names, for the HTML page.
    pub fn recent(conn: &mut Conn, limit: i64) -> QueryResult<Vec<(BuildRequest, String)>> {
        build_request::table
            .inner_join(project::table)
            .select((BuildRequest::as_select(), project::name))
            .order(build_request::id.desc())
            .limit(limit)
            .load(conn)
    }

    /// Requests per state.
    pub fn count_by_state(conn: &mut Conn) -> QueryResult<BTreeMap<String, i64>> {
        let rows: Vec<(RequestState, i64)> = build_request::table
            .group_by(build_request::state)
            .select((build_request::state, diesel::dsl::count_star()))
            .load(conn)?;
        Ok(rows.into_iter().map(|(s, n)| (s.to_string(), n)).collect())
    }

    /// Every request as the queue measures it: (id, state, needs, created_at).
    pub fn queue_facts(conn: &mut Conn) -> QueryResult<Vec<(RequestId, RequestState, Needs, i64)>> {
        let rows: Vec<(RequestId, RequestState, String, i64)> = build_request::table
            .select((
                build_request::id,
                build_request::state,
                build_request::needs,
                build_request::created_at,
            ))
            .order(build_request::id)
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|(id, state, needs, at)| (id, state, Needs::from_json(&needs), at))
            .collect())
    }

    /// The highest request id this connection can see (any state).
    pub fn max_id(conn: &mut Conn) -> QueryResult<Option<i64>> {
        use diesel::dsl::max;
        build_request::table
            .select(max(build_request::id))
            .first::<Option<RequestId>>(conn)
            .map(|m| m.map(|id| id.0))
    }

    pub fn count(conn: &mut Conn) -> QueryResult<i64> {
        build_request::table.count().get_result(conn)
    }

    /// Queued requests in queue order: priority DESC, then created_at, then id.
    pub fn queued_in_order(conn: &mut Conn, limit: i64) -> QueryResult<Vec<QueuedRequest>> {
        let rows: Vec<(RequestId, String)> = build_request::table
            .filter(build_request::state.eq(RequestState::Queued))
            .order((
                build_request::priority.desc(),
                build_request::created_at.asc(),
                build_request::id.asc(),
            ))
            .select((build_request::id, build_request::needs))
            .limit(limit)
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|(id, needs)| QueuedRequest {
                id,
                needs: Needs::from_json(&needs),
            })
            .collect())
    }

    /// [`BuildRequest::queued_in_order`], locking the rows it returns and
    /// skipping rows another transaction holds (`FOR UPDATE SKIP LOCKED`, on
    /// PostgreSQL and MySQL/MariaDB). SQLite has no row locks: a plain read,
    /// which its one writer at a time makes safe inside a write transaction.
    pub fn queued_skip_locked(conn: &mut Conn, limit: i64) -> QueryResult<Vec<QueuedRequest>> {
        let query = build_request::table
            .filter(build_request::state.eq(RequestState::Queued))
            .order((
                build_request::priority.desc(),
                build_request::created_at.asc(),
                build_request::id.asc(),
            ))
            .select((build_request::id, build_request::needs))
            .limit(limit);
        let rows: Vec<(RequestId, String)> = match conn {
            Conn::Sqlite(c) => query.load(c)?,
            Conn::Postgres(c) => query.for_update().skip_locked().load(c)?,
            Conn::Mysql(c) => query.for_update().skip_locked().load(c)?,
        };
        Ok(rows
            .into_iter()
            .map(|(id, needs)| QueuedRequest {
                id,
                needs: Needs::from_json(&needs),
            })
            .collect())
    }

    /// Sets the state whatever it was (Toaster's save of a request it read in an
    /// earlier transaction).
    pub fn set_state(conn: &mut Conn, id: RequestId, state: RequestState) -> QueryResult<usize> {
        diesel::update(build_request::table.find(id))
            .set((
                build_request::state.eq(state),
                build_request::updated_at.eq(now_micros()),
            ))
            .execute(conn)
    }

    /// Moves a request from `from` to `to` only if it is still in `from`; the
    /// rows affected (0 or 1) say whether this caller won.
    pub fn transition(
        conn: &mut Conn,
        id: RequestId,
        from: RequestState,
        to: RequestState,
        reason: Option<&str>,
    ) -> QueryResult<usize> {
        diesel::update(
            build_request::table
                .filter(build_request::id.eq(id))
                .filter(build_request::state.eq(from)),
        )
        .set((
            build_request::state.eq(to),
            build_request::reason.eq(reason),
            build_request::updated_at.eq(now_micros()),
        ))
        .execute(conn)
    }

    /// Ids of rows created by one HTTP request (`check`).
    pub fn ids_by_client_request(conn: &mut Conn) -> QueryResult<Vec<(Option<String>, RequestId)>> {
        build_request::table
            .select((build_request::client_request_id, build_request::id))
            .order(build_request::id)
            .load(conn)
    }

    /// Requests in a state, with ids (`check`).
    pub fn ids_in_state(conn: &mut Conn, state: RequestState) -> QueryResult<Vec<RequestId>> {
        build_request::table
            .filter(build_request::state.eq(state))
            .select(build_request::id)
            .order(build_request::id)
            .load(conn)
    }
}
