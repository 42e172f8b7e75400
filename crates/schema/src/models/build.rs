//! `build`: one claimed request's build, owned by one ingester under a lease.
//! Deliberately no UNIQUE on `request_id`: a double claim stays visible.

use crate::backend::Conn;
use diesel::prelude::*;
use serde::Serialize;

use crate::schema::{build, build_request};
use crate::types::{now_micros, BuildId, Outcome, RequestId, RequestState};

/// A row of `build`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Serialize)]
#[diesel(table_name = build)]
pub struct Build {
    pub id: BuildId,
    /// None for a Build row webui made (Toaster's create shape) that no
    /// scheduler has filled in yet.
    pub request_id: Option<RequestId>,
    pub claimed_by: Option<String>,
    pub owner: Option<String>,
    pub lease_until: Option<i64>,
    pub seed: Option<i64>,
    pub events_expected: Option<i32>,
    pub events_ingested: i32,
    pub events_given_up: i32,
    pub outcome: Option<Outcome>,
    pub started_at: i64,
    pub completed_at: Option<i64>,
}

impl Build {
    /// The Build row Toaster's `schedule_build` makes before its request:
    /// nothing but its creation time, until a scheduler fills it in.
    pub fn create_empty(conn: &mut Conn) -> QueryResult<BuildId> {
        diesel::insert_into(build::table)
            .values(build::started_at.eq(now_micros()))
            .execute(conn)?;
        super::last_insert_rowid(conn).map(BuildId)
    }

    /// Fills in the Build row webui made for `request`, if nobody has: 1 if
    /// this caller did. A second claim of the same request finds it filled and
    /// creates a build of its own instead, so the double claim stays visible.
    pub fn fill(
        conn: &mut Conn,
        id: BuildId,
        request: RequestId,
        claimed_by: &str,
        seed: i64,
        lease_until: i64,
    ) -> QueryResult<usize> {
        diesel::update(
            build::table
                .filter(build::id.eq(id))
                .filter(build::claimed_by.is_null()),
        )
        .set((
            build::request_id.eq(Some(request)),
            build::claimed_by.eq(Some(claimed_by)),
            build::seed.eq(Some(seed)),
            build::lease_until.eq(Some(lease_until)),
            build::started_at.eq(now_micros()),
        ))
        .execute(conn)
    }

    /// Creates the build of a claimed request. Its lease gives an ingester time to
    /// take it.
    pub fn create(
        conn: &mut Conn,
        request: RequestId,
        claimed_by: &str,
        seed: i64,
        lease_until: i64,
    ) -> QueryResult<BuildId> {
        diesel::insert_into(build::table)
            .values((
                build::request_id.eq(Some(request)),
                build::claimed_by.eq(Some(claimed_by)),
                build::seed.eq(Some(seed)),
                build::lease_until.eq(Some(lease_until)),
                build::started_at.eq(now_micros()),
            ))
            .execute(conn)?;
        super::last_insert_rowid(conn).map(BuildId)
    }

    /// The oldest unfinished build that has no live owner: no owner, an expired
    /// lease, or this very owner from before a restart.
    pub fn next_unowned(conn: &mut Conn, owner: &str) -> QueryResult<Option<BuildId>> {
        let now = now_micros();
        build::table
            .inner_join(build_request::table)
            .filter(build::completed_at.is_null())
            // A completed request may still have an unfinished duplicate build
            // (a double claim): it is ingested too, so its environments come free.
            .filter(build_request::state.eq_any([
                RequestState::InProgress,
                RequestState::Cancelling,
                RequestState::Completed,
            ]))
            .filter(
                build::owner
                    .is_null()
                    .or(build::lease_until.lt(now))
                    .or(build::owner.eq(owner)),
            )
            .select(build::id)
            .order(build::id)
            .first(conn)
            .optional()
    }

    /// Takes a build if it still has no live owner: a conditional UPDATE, so two
    /// ingesters that saw the same candidate cannot both get it.
    pub fn take(
        conn: &mut Conn,
        id: BuildId,
        owner: &str,
        lease_until: i64,
    ) -> QueryResult<Option<Build>> {
        let now = now_micros();
        let taken = diesel::update(
            build::table
                .filter(build::id.eq(id))
                .filter(build::completed_at.is_null())
                .filter(
                    build::owner
                        .is_null()
                        .or(build::lease_until.lt(now))
                        .or(build::owner.eq(owner)),
                ),
        )
        .set((
            build::owner.eq(Some(owner)),
            build::lease_until.eq(Some(lease_until)),
        ))
        .execute(conn)?;
        if taken == 0 {
            return Ok(None);
        }
        Build::get(conn, id)
    }

    /// Sets `events_expected` the first time a build is taken; a resumed build
    /// keeps the count it started with.
    pub fn set_events_expected(conn: &mut Conn, id: BuildId, expected: i32) -> QueryResult<usize> {
        diesel::update(
            build::table
                .filter(build::id.eq(id))
                .filter(build::events_expected.is_null()),
        )
        .set(build::events_expected.eq(Some(expected)))
        .execute(conn)
    }

    /// Renews the lease while `owner` still owns the build; 0 means it lost it.
    pub fn renew(
        conn: &mut Conn,
        id: BuildId,
        owner: &str,
        lease_until: i64,
    ) -> QueryResult<usize> {
        diesel::update(
            build::table
                .filter(build::id.eq(id))
                .filter(build::owner.eq(owner))
                .filter(build::completed_at.is_null()),
        )
        .set(build::lease_until.eq(Some(lease_until)))
        .execute(conn)
    }

    /// Adds to the ingester's counters.
    pub fn add_progress(
        conn: &mut Conn,
        id: BuildId,
        ingested: i32,
        given_up: i32,
    ) -> QueryResult<usize> {
        diesel::update(build::table.filter(build::id.eq(id)))
            .set((
                build::events_ingested.eq(build::events_ingested + ingested),
                build::events_given_up.eq(build::events_given_up + given_up),
            ))
            .execute(conn)
    }

    /// Finishes a build owned by `owner`; 0 if it no longer owns it.
    pub fn finish(
        conn: &mut Conn,
        id: BuildId,
        owner: &str,
        outcome: Outcome,
    ) -> QueryResult<usize> {
        diesel::update(
            build::table
                .filter(build::id.eq(id))
                .filter(build::owner.eq(owner))
                .filter(build::completed_at.is_null()),
        )
        .set((
            build::outcome.eq(Some(outcome)),
            build::completed_at.eq(Some(now_micros())),
            build::lease_until.eq(None::<i64>),
        ))
        .execute(conn)
    }

    /// Fails unfinished builds whose owner's lease ran out before `cutoff` (the
    /// ingester crashed and nobody took over), in one UPDATE. A build no
    /// ingester ever took has no holder that could have crashed: it waits for
    /// one. Returns the rows it changed and their requests.
    pub fn expire(conn: &mut Conn, cutoff: i64) -> QueryResult<(usize, Vec<RequestId>)> {
        let stamp = now_micros();
        let n = diesel::update(
            build::table
                .filter(build::completed_at.is_null())
                .filter(build::owner.is_not_null())
                .filter(build::lease_until.lt(cutoff)),
        )
        .set((
            build::outcome.eq(Some(Outcome::Failed)),
            build::completed_at.eq(Some(stamp)),
        ))
        .execute(conn)?;
        if n == 0 {
            return Ok((0, Vec::new()));
        }
        // The rows this UPDATE just stamped.
        let requests: Vec<Option<RequestId>> = build::table
            .filter(build::completed_at.eq(stamp))
            .filter(build::outcome.eq(Outcome::Failed))
            .filter(build::lease_until.lt(cutoff))
            .select(build::request_id)
            .load(conn)?;
        Ok((n, requests.into_iter().flatten().collect()))
    }

    /// Unfinished builds whose owner's lease ran out before `cutoff`: what
    /// [`Build::expire`] would fail (a read, to decide whether to write).
    pub fn expirable(conn: &mut Conn, cutoff: i64) -> QueryResult<i64> {
        build::table
            .filter(build::completed_at.is_null())
            .filter(build::owner.is_not_null())
            .filter(build::lease_until.lt(cutoff))
            .count()
            .get_result(conn)
    }

    pub fn get(conn: &mut Conn, id: BuildId) -> QueryResult<Option<Build>> {
        build::table
            .find(id)
            .select(Build::as_select())
            .first(conn)
            .optional()
    }

    pub fn for_request(conn: &mut Conn, request: RequestId) -> QueryResult<Vec<Build>> {
        build::table
            .filter(build::request_id.eq(Some(request)))
            .select(Build::as_select())
            .order(build::id)
            .load(conn)
    }

    /// The builds of these requests (a page of requests shows their
    /// progress), by the `build_request_id` index.
    pub fn for_requests(conn: &mut Conn, requests: &[RequestId]) -> QueryResult<Vec<Build>> {
        build::table
            .filter(build::request_id.assume_not_null().eq_any(requests))
            .select(Build::as_select())
            .order(build::id)
            .load(conn)
    }

    pub fn all(conn: &mut Conn) -> QueryResult<Vec<Build>> {
        build::table
            .select(Build::as_select())
            .order(build::id)
            .load(conn)
    }

    /// Builds still running (not completed).
    pub fn unfinished(conn: &mut Conn) -> QueryResult<Vec<Build>> {
        build::table
            .filter(build::completed_at.is_null())
            .select(Build::as_select())
            .order(build::id)
            .load(conn)
    }

    /// Requests with more than one build, and their build ids.
    pub fn double_claims(conn: &mut Conn) -> QueryResult<Vec<(RequestId, Vec<BuildId>)>> {
        let rows: Vec<(Option<RequestId>, BuildId)> = build::table
            .filter(build::request_id.is_not_null())
            .select((build::request_id, build::id))
            .order((build::request_id, build::id))
            .load(conn)?;
        let mut out: Vec<(RequestId, Vec<BuildId>)> = Vec::new();
        for (req, id) in rows.into_iter().filter_map(|(r, id)| r.map(|r| (r, id))) {
            match out.last_mut() {
                Some((last, ids)) if *last == req => ids.push(id),
                _ => out.push((req, vec![id])),
            }
        }
        out.retain(|(_, ids)| ids.len() > 1);
        Ok(out)
    }

    pub fn count(conn: &mut Conn) -> QueryResult<i64> {
        build::table.count().get_result(conn)
    }

    /// Build rows that no request points at and no scheduler filled: what
    /// Toaster's create leaves behind when it fails part way (`check`).
    pub fn orphans(conn: &mut Conn) -> QueryResult<Vec<BuildId>> {
        use crate::schema::build_request as br;
        build::table
            .filter(build::request_id.is_null())
            .filter(diesel::dsl::not(diesel::dsl::exists(
                br::table.filter(br::build_id.eq(build::id.nullable())),
            )))
            .select(build::id)
            .order(build::id)
            .load(conn)
    }
}
