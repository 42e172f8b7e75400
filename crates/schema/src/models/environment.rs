//! `build_environment`: the machines runbuilds books, all or nothing.

use std::collections::BTreeMap;

use crate::backend::Conn;
use diesel::prelude::*;
use serde::Serialize;

use crate::schema::build_environment;
use crate::types::{now_micros, EnvironmentId, LockState, RequestId};

/// A row of `build_environment`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Serialize)]
#[diesel(table_name = build_environment)]
pub struct Environment {
    pub id: EnvironmentId,
    pub name: String,
    pub kind: String,
    pub lock_state: LockState,
    pub request_id: Option<RequestId>,
    pub lease_until: Option<i64>,
    pub updated_at: i64,
}

#[derive(Insertable)]
#[diesel(table_name = build_environment)]
struct NewEnvironment<'a> {
    name: &'a str,
    kind: &'a str,
    lock_state: LockState,
    updated_at: i64,
}

impl Environment {
    /// Registers `kind:count` environments as `kind-1 .. kind-count`. Names that
    /// exist are left as they are, so a second run changes nothing. Returns (rows
    /// added, environments in the table).
    pub fn register(conn: &mut Conn, kinds: &[(String, u32)]) -> QueryResult<(usize, usize)> {
        let now = now_micros();
        let names: Vec<(String, &str)> = kinds
            .iter()
            .flat_map(|(kind, count)| {
                (1..=*count).map(move |i| (format!("{kind}-{i}"), kind.as_str()))
            })
            .collect();
        let rows: Vec<NewEnvironment<'_>> = names
            .iter()
            .map(|(name, kind)| NewEnvironment {
                name,
                kind,
                lock_state: LockState::Free,
                updated_at: now,
            })
            .collect();
        let mut added = 0;
        for row in &rows {
            // An existing name is skipped: SQLite's `INSERT OR IGNORE`, MySQL's
            // `INSERT IGNORE`, PostgreSQL's `ON CONFLICT DO NOTHING`.
            added += match &mut *conn {
                Conn::Sqlite(c) => diesel::insert_or_ignore_into(build_environment::table)
                    .values(row)
                    .execute(c)?,
                Conn::Mysql(c) => diesel::insert_or_ignore_into(build_environment::table)
                    .values(row)
                    .execute(c)?,
                Conn::Postgres(c) => diesel::insert_into(build_environment::table)
                    .values(row)
                    .on_conflict_do_nothing()
                    .execute(c)?,
            };
        }
        let total: i64 = build_environment::table.count().get_result(conn)?;
        Ok((added, usize::try_from(total).unwrap_or(0)))
    }

    pub fn all(conn: &mut Conn) -> QueryResult<Vec<Environment>> {
        build_environment::table
            .select(Environment::as_select())
            .order(build_environment::id)
            .load(conn)
    }

    /// How many environments of each kind exist: what any request could ever get.
    pub fn capacity(conn: &mut Conn) -> QueryResult<BTreeMap<String, u32>> {
        let kinds: Vec<String> = build_environment::table
            .select(build_environment::kind)
            .load(conn)?;
        let mut cap = BTreeMap::new();
        for k in kinds {
            *cap.entry(k).or_insert(0) += 1;
        }
        Ok(cap)
    }

    /// Free environments of the given kinds, by id.
    pub fn free_of_kinds(conn: &mut Conn, kinds: &[&str]) -> QueryResult<Vec<Environment>> {
        build_environment::table
            .filter(build_environment::lock_state.eq(LockState::Free))
            .filter(build_environment::kind.eq_any(kinds))
            .select(Environment::as_select())
            .order(build_environment::id)
            .load(conn)
    }

    /// [`Environment::free_of_kinds`], locking the rows it returns and
    /// skipping rows another transaction holds (`FOR UPDATE SKIP LOCKED`;
    /// SQLite: a plain read).
    pub fn free_of_kinds_skip_locked(
        conn: &mut Conn,
        kinds: &[&str],
    ) -> QueryResult<Vec<Environment>> {
        // One query per backend: the selected columns' types are the backend's.
        macro_rules! free {
            () => {
                build_environment::table
                    .filter(build_environment::lock_state.eq(LockState::Free))
                    .filter(build_environment::kind.eq_any(kinds))
                    .select(Environment::as_select())
                    .order(build_environment::id)
            };
        }
        match conn {
            Conn::Sqlite(c) => free!().load(c),
            Conn::Postgres(c) => free!().for_update().skip_locked().load(c),
            Conn::Mysql(c) => free!().for_update().skip_locked().load(c),
        }
    }

    /// Toaster's `_selectBuildEnvironment` read: the first free environment of
    /// any kind, by id (`filter(lock=FREE)[0]`, no `select_for_update`).
    pub fn first_free(conn: &mut Conn) -> QueryResult<Option<Environment>> {
        build_environment::table
            .filter(build_environment::lock_state.eq(LockState::Free))
            .select(Environment::as_select())
            .order(build_environment::id)
            .first(conn)
            .optional()
    }

    /// Marks an environment running: its build was triggered.
    pub fn set_running(conn: &mut Conn, id: EnvironmentId, lease_until: i64) -> QueryResult<usize> {
        diesel::update(build_environment::table.find(id))
            .set((
                build_environment::lock_state.eq(LockState::Running),
                build_environment::lease_until.eq(Some(lease_until)),
                build_environment::updated_at.eq(now_micros()),
            ))
            .execute(conn)
    }

    /// Toaster's `cleanup()` `.update(lock=FREE)`: one UPDATE of the
    /// environments locked (not running) since before `held_before` (µs) whose
    /// request failed, completed or is being cancelled. It runs whether or not
    /// any row matches.
    pub fn free_stale_locked(conn: &mut Conn, held_before: i64) -> QueryResult<usize> {
        use crate::schema::build_request as br;
        let ended = [
            crate::types::RequestState::Failed,
            crate::types::RequestState::Completed,
            crate::types::RequestState::Cancelling,
        ];
        diesel::update(
            build_environment::table
                .filter(build_environment::lock_state.eq(LockState::Locked))
                .filter(build_environment::updated_at.lt(held_before))
                .filter(diesel::dsl::exists(
                    br::table
                        .filter(br::id.nullable().eq(build_environment::request_id))
                        .filter(br::state.eq_any(ended)),
                )),
        )
        .set((
            build_environment::lock_state.eq(LockState::Free),
            build_environment::request_id.eq(None::<RequestId>),
            build_environment::lease_until.eq(None::<i64>),
            build_environment::updated_at.eq(now_micros()),
        ))
        .execute(conn)
    }

    /// Frees one environment whatever holds it (`be.lock = FREE; be.save()`).
    pub fn free_one(conn: &mut Conn, id: EnvironmentId) -> QueryResult<usize> {
        diesel::update(build_environment::table.find(id))
            .set((
                build_environment::lock_state.eq(LockState::Free),
                build_environment::request_id.eq(None::<RequestId>),
                build_environment::lease_until.eq(None::<i64>),
                build_environment::updated_at.eq(now_micros()),
            ))
            .execute(conn)
    }

    /// The environments a request holds.
    pub fn of_request(conn: &mut Conn, request: RequestId) -> QueryResult<Vec<EnvironmentId>> {
        build_environment::table
            .filter(build_environment::request_id.eq(Some(request)))
            .filter(build_environment::lock_state.ne(LockState::Free))
            .select(build_environment::id)
            .order(build_environment::id)
            .load(conn)
    }

    /// Every free environment: the read phase of a claim.
    pub fn free(conn: &mut Conn) -> QueryResult<Vec<Environment>> {
        build_environment::table
            .filter(build_environment::lock_state.eq(LockState::Free))
            .select(Environment::as_select())
            .order(build_environment::id)
            .load(conn)
    }

    /// Locks environments for a request without a condition (after a read in the
    /// same transaction said they were free).
    pub fn lock_for(
        conn: &mut Conn,
        ids: &[EnvironmentId],
        request: RequestId,
        lease_until: i64,
    ) -> QueryResult<usize> {
        diesel::update(build_environment::table.filter(build_environment::id.eq_any(ids)))
            .set((
                build_environment::lock_state.eq(LockState::Locked),
                build_environment::request_id.eq(Some(request)),
                build_environment::lease_until.eq(Some(lease_until)),
                build_environment::updated_at.eq(now_micros()),
            ))
            .execute(conn)
    }

    /// Locks one environment only if it is free; 1 if this caller got it.
    pub fn lock_if_free(
        conn: &mut Conn,
        id: EnvironmentId,
        request: RequestId,
        lease_until: i64,
    ) -> QueryResult<usize> {
        diesel::update(
            build_environment::table
                .filter(build_environment::id.eq(id))
                .filter(build_environment::lock_state.eq(LockState::Free)),
        )
        .set((
            build_environment::lock_state.eq(LockState::Locked),
            build_environment::request_id.eq(Some(request)),
            build_environment::lease_until.eq(Some(lease_until)),
            build_environment::updated_at.eq(now_micros()),
        ))
        .execute(conn)
    }

    /// Marks a request's environments running and renews their lease with the
    /// build's (the ingester's lease).
    pub fn renew_for_request(
        conn: &mut Conn,
        request: RequestId,
        lease_until: i64,
    ) -> QueryResult<usize> {
        diesel::update(
            build_environment::table
                .filter(build_environment::request_id.eq(request))
                .filter(build_environment::lock_state.ne(LockState::Free)),
        )
        .set((
            build_environment::lock_state.eq(LockState::Running),
            build_environment::lease_until.eq(Some(lease_until)),
            build_environment::updated_at.eq(now_micros()),
        ))
        .execute(conn)
    }

    /// Frees the environments of the given requests. Returns the rows freed.
    pub fn free_for_requests(conn: &mut Conn, requests: &[RequestId]) -> QueryResult<usize> {
        diesel::update(
            build_environment::table.filter(build_environment::request_id.eq_any(requests)),
        )
        .set((
            build_environment::lock_state.eq(LockState::Free),
            build_environment::request_id.eq(None::<RequestId>),
            build_environment::lease_until.eq(None::<i64>),
            build_environment::updated_at.eq(now_micros()),
        ))
        .execute(conn)
    }

    /// Environments that are not free.
    pub fn held(conn: &mut Conn) -> QueryResult<Vec<Environment>> {
        build_environment::table
            .filter(build_environment::lock_state.ne(LockState::Free))
            .select(Environment::as_select())
            .order(build_environment::id)
            .load(conn)
    }

    /// Environments per lock state.
    pub fn count_by_state(conn: &mut Conn) -> QueryResult<BTreeMap<String, i64>> {
        let rows: Vec<(LockState, i64)> = build_environment::table
            .group_by(build_environment::lock_state)
            .select((build_environment::lock_state, diesel::dsl::count_star()))
            .load(conn)?;
        Ok(rows.into_iter().map(|(s, n)| (s.to_string(), n)).collect())
    }
}
