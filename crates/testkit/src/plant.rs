//! Planted violations: named operations that break one invariant each, so that
//! tests can see `locklab check` find them. A dev-only crate: nothing in the
//! lab's binaries can call these.

use diesel::prelude::*;
use schema::backend::Conn;

use schema::models::{Booking, Build};
use schema::schema::{booking, build_environment, build_event};
use schema::types::{now_micros, BuildId, EnvironmentId, LockState, RequestId};

/// Deletes one stored event (check: lost).
pub fn delete_event(conn: &mut Conn, build: BuildId, seq: i32) -> QueryResult<usize> {
    diesel::delete(
        build_event::table
            .filter(build_event::build_id.eq(build))
            .filter(build_event::seq.eq(seq)),
    )
    .execute(conn)
}

/// Changes one stored event's payload (check: mismatched).
pub fn change_payload(
    conn: &mut Conn,
    build: BuildId,
    seq: i32,
    payload: &str,
) -> QueryResult<usize> {
    diesel::update(
        build_event::table
            .filter(build_event::build_id.eq(build))
            .filter(build_event::seq.eq(seq)),
    )
    .set(build_event::payload.eq(payload))
    .execute(conn)
}

/// Books an environment for a request over an interval that overlaps its
/// first booking (check: double_booked).
pub fn overlapping_booking(
    conn: &mut Conn,
    env: EnvironmentId,
    request: RequestId,
) -> QueryResult<usize> {
    let first: Option<Booking> = booking::table
        .filter(booking::environment_id.eq(env))
        .select(Booking::as_select())
        .order(booking::id)
        .first(conn)
        .optional()?;
    let at = first.map(|b| b.booked_at + 1).unwrap_or_else(now_micros);
    diesel::insert_into(booking::table)
        .values((
            booking::environment_id.eq(env),
            booking::request_id.eq(request),
            booking::booked_by.eq("planted"),
            booking::booked_at.eq(at),
            booking::released_at.eq(None::<i64>),
        ))
        .execute(conn)
}

/// Locks an environment for no request (check: leaked_bookings).
pub fn leak_environment(conn: &mut Conn, env: EnvironmentId) -> QueryResult<usize> {
    diesel::update(build_environment::table.filter(build_environment::id.eq(env)))
        .set((
            build_environment::lock_state.eq(LockState::Locked),
            build_environment::request_id.eq(None::<RequestId>),
        ))
        .execute(conn)
}

/// Gives a request a second, completed build (check: double_claimed).
pub fn second_build(conn: &mut Conn, request: RequestId) -> QueryResult<BuildId> {
    let id = Build::create(conn, request, "planted", 7, now_micros())?;
    diesel::update(schema::schema::build::table.filter(schema::schema::build::id.eq(id)))
        .set(schema::schema::build::completed_at.eq(Some(now_micros())))
        .execute(conn)?;
    Ok(id)
}

/// Forgets every applied migration, as if the file were behind this build's
/// migrations (the daemons must then refuse it).
pub fn forget_migrations(conn: &mut Conn) -> QueryResult<usize> {
    diesel::sql_query(format!("DELETE FROM {}", schema::migrate::MIGRATIONS_TABLE)).execute(conn)
}

/// Sets a build's seed (tests that need a known stream).
pub fn set_seed(conn: &mut Conn, build: BuildId, seed: i64) -> QueryResult<usize> {
    diesel::update(schema::schema::build::table.filter(schema::schema::build::id.eq(build)))
        .set(schema::schema::build::seed.eq(Some(seed)))
        .execute(conn)
}

/// A queued request row as webui would write it for the HTTP request
/// `client_request_id` (check: rows against the loadgen log).
pub fn request_row(conn: &mut Conn, client_request_id: Option<&str>) -> QueryResult<RequestId> {
    let project = schema::models::Project::get_or_create(conn, "planted")?;
    schema::models::BuildRequest::create(
        conn,
        &schema::models::NewRequest {
            project_id: project,
            needs: &schema::models::Needs::default(),
            priority: 0,
            submitted_by: "planted",
            client_request_id,
            build_id: None,
        },
    )
}

/// Deletes a request row (check: a row a 2xx promised is lost).
pub fn delete_request(conn: &mut Conn, id: RequestId) -> QueryResult<usize> {
    schema::models::BuildRequest::delete(conn, id)
}
