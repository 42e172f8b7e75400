//! `booking`: the history that proves or refutes double booking. Intervals are
//! half-open, `[booked_at, released_at)`.

use crate::backend::{on_each_backend, Conn};
use diesel::prelude::*;
use serde::Serialize;

use crate::schema::booking;
use crate::types::{now_micros, BookingId, EnvironmentId, RequestId};

/// A row of `booking`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Identifiable, Serialize)]
#[diesel(table_name = booking)]
pub struct Booking {
    pub id: BookingId,
    pub environment_id: EnvironmentId,
    pub request_id: RequestId,
    pub booked_by: String,
    pub booked_at: i64,
    pub released_at: Option<i64>,
}

/// Two bookings of one environment whose intervals overlap.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overlap {
    pub environment_id: EnvironmentId,
    pub first: BookingId,
    pub second: BookingId,
}

impl Booking {
    /// Books every environment for a request. Call it after a write of the same
    /// transaction, so `booked_at` is taken while the write lock is held.
    pub fn book_all(
        conn: &mut Conn,
        environments: &[EnvironmentId],
        request: RequestId,
        booked_by: &str,
    ) -> QueryResult<usize> {
        let now = now_micros();
        let rows: Vec<_> = environments
            .iter()
            .map(|env| {
                (
                    booking::environment_id.eq(*env),
                    booking::request_id.eq(request),
                    booking::booked_by.eq(booked_by),
                    booking::booked_at.eq(now),
                )
            })
            .collect();
        on_each_backend!(conn, c => diesel::insert_into(booking::table)
            .values(&rows)
            .execute(c))
    }

    /// Closes the open bookings of the given requests. Call it after a write of
    /// the same transaction, so `released_at` is taken while the lock is held.
    pub fn release_for_requests(conn: &mut Conn, requests: &[RequestId]) -> QueryResult<usize> {
        diesel::update(
            booking::table
                .filter(booking::request_id.eq_any(requests))
                .filter(booking::released_at.is_null()),
        )
        .set(booking::released_at.eq(Some(now_micros())))
        .execute(conn)
    }

    /// Closes the open bookings of environments that are free now.
    pub fn release_for_free_environments(conn: &mut Conn) -> QueryResult<usize> {
        use crate::schema::build_environment as env;
        diesel::update(
            booking::table
                .filter(booking::released_at.is_null())
                .filter(
                    booking::environment_id.eq_any(
                        env::table
                            .filter(env::lock_state.eq(crate::types::LockState::Free))
                            .select(env::id),
                    ),
                ),
        )
        .set(booking::released_at.eq(Some(now_micros())))
        .execute(conn)
    }

    /// Closes the open bookings of the given environments.
    pub fn release_for_environments(
        conn: &mut Conn,
        environments: &[EnvironmentId],
    ) -> QueryResult<usize> {
        diesel::update(
            booking::table
                .filter(booking::environment_id.eq_any(environments))
                .filter(booking::released_at.is_null()),
        )
        .set(booking::released_at.eq(Some(now_micros())))
        .execute(conn)
    }

    pub fn all(conn: &mut Conn) -> QueryResult<Vec<Booking>> {
        booking::table
            .select(Booking::as_select())
            .order((booking::environment_id, booking::booked_at, booking::id))
            .load(conn)
    }

    /// Every pair of overlapping bookings of one environment. An open booking
    /// runs to infinity.
    pub fn overlaps(conn: &mut Conn) -> QueryResult<Vec<Overlap>> {
        let all = Booking::all(conn)?;
        let mut out = Vec::new();
        for (i, a) in all.iter().enumerate() {
            for b in all[i + 1..]
                .iter()
                .take_while(|b| b.environment_id == a.environment_id)
            {
                let a_end = a.released_at.unwrap_or(i64::MAX);
                let b_end = b.released_at.unwrap_or(i64::MAX);
                if a.booked_at < b_end && b.booked_at < a_end {
                    out.push(Overlap {
                        environment_id: a.environment_id,
                        first: a.id,
                        second: b.id,
                    });
                }
            }
        }
        Ok(out)
    }

    pub fn count(conn: &mut Conn) -> QueryResult<i64> {
        booking::table.count().get_result(conn)
    }

    /// A request's bookings, oldest first, with each environment's name and
    /// kind (the `booking_request` index).
    pub fn for_request(
        conn: &mut Conn,
        request: RequestId,
    ) -> QueryResult<Vec<(Booking, String, String)>> {
        use crate::schema::build_environment as env;
        booking::table
            .inner_join(env::table)
            .filter(booking::request_id.eq(request))
            .select((Booking::as_select(), env::name, env::kind))
            .order((booking::booked_at, booking::id))
            .load(conn)
    }
}
