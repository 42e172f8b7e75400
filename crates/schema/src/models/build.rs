//! `build`: one claimed request's build, owned by one ingester under a lease.
//! Deliberately no UNIQUE on `request_id`: a double claim stays visible.

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use serde::Serialize;

use crate::schema::{build, build_request};
use crate::types::{now_micros, BuildId, Outcome, RequestId, RequestState};

/// A row of `build`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Serialize)]
#[diesel(table_name = build)]
pub struct Build {
    pub id: BuildId,
    pub request_id: RequestId,
    pub claimed_by: String,
    pub owner: Option<String>,
    pub lease_until: Option<i64>,
    pub seed: i64,
    pub events_expected: Option<i32>,
    pub events_ingested: i32,
    pub events_given_up: i32,
    pub outcome: Option<Outcome>,
    pub started_at: i64,
    pub completed_at: Option<i64>,
}

impl Build {
    /// Creates the build of a claimed request. Its lease gives an ingester time to
    /// take it.
    pub fn create(
        conn: &mut SqliteConnection,
        request: RequestId,
        claimed_by: &str,
        seed: i64,
        lease_until: i64,
    ) -> QueryResult<BuildId> {
        diesel::insert_into(build::table)
            .values((
                build::request_id.eq(request),
                build::claimed_by.eq(claimed_by),
                build::seed.eq(seed),
                build::lease_until.eq(Some(lease_until)),
                build::started_at.eq(now_micros()),
            ))
            .execute(conn)?;
        super::last_insert_rowid(conn).map(BuildId)
    }

    /// The oldest unfinished build that has no live owner: no owner, an expired
    /// lease, or this very owner from before a restart.
    pub fn next_unowned(conn: &mut SqliteConnection, owner: &str) -> QueryResult<Option<BuildId>> {
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
        conn: &mut SqliteConnection,
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
    pub fn set_events_expected(
        conn: &mut SqliteConnection,
        id: BuildId,
        expected: i32,
    ) -> QueryResult<usize> {
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
        conn: &mut SqliteConnection,
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
        conn: &mut SqliteConnection,
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
        conn: &mut SqliteConnection,
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

    /// Fails unfinished builds whose lease ran out before `cutoff` (their holder
    /// crashed and nobody took over), in one UPDATE. Returns their requests.
    pub fn expire(conn: &mut SqliteConnection, cutoff: i64) -> QueryResult<Vec<RequestId>> {
        let stamp = now_micros();
        let n = diesel::update(
            build::table
                .filter(build::completed_at.is_null())
                .filter(build::lease_until.lt(cutoff)),
        )
        .set((
            build::outcome.eq(Some(Outcome::Failed)),
            build::completed_at.eq(Some(stamp)),
        ))
        .execute(conn)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        // The rows this UPDATE just stamped.
        build::table
            .filter(build::completed_at.eq(stamp))
            .filter(build::outcome.eq(Outcome::Failed))
            .filter(build::lease_until.lt(cutoff))
            .select(build::request_id)
            .load(conn)
    }

    pub fn get(conn: &mut SqliteConnection, id: BuildId) -> QueryResult<Option<Build>> {
        build::table
            .find(id)
            .select(Build::as_select())
            .first(conn)
            .optional()
    }

    pub fn for_request(conn: &mut SqliteConnection, request: RequestId) -> QueryResult<Vec<Build>> {
        build::table
            .filter(build::request_id.eq(request))
            .select(Build::as_select())
            .order(build::id)
            .load(conn)
    }

    pub fn all(conn: &mut SqliteConnection) -> QueryResult<Vec<Build>> {
        build::table
            .select(Build::as_select())
            .order(build::id)
            .load(conn)
    }

    /// Builds still running (not completed).
    pub fn unfinished(conn: &mut SqliteConnection) -> QueryResult<Vec<Build>> {
        build::table
            .filter(build::completed_at.is_null())
            .select(Build::as_select())
            .order(build::id)
            .load(conn)
    }

    /// Requests with more than one build, and their build ids.
    pub fn double_claims(
        conn: &mut SqliteConnection,
    ) -> QueryResult<Vec<(RequestId, Vec<BuildId>)>> {
        let rows: Vec<(RequestId, BuildId)> = build::table
            .select((build::request_id, build::id))
            .order((build::request_id, build::id))
            .load(conn)?;
        let mut out: Vec<(RequestId, Vec<BuildId>)> = Vec::new();
        for (req, id) in rows {
            match out.last_mut() {
                Some((last, ids)) if *last == req => ids.push(id),
                _ => out.push((req, vec![id])),
            }
        }
        out.retain(|(_, ids)| ids.len() > 1);
        Ok(out)
    }

    pub fn count(conn: &mut SqliteConnection) -> QueryResult<i64> {
        build::table.count().get_result(conn)
    }
}
