//! The server backends' side of the backend interface: PostgreSQL and
//! MySQL/MariaDB, through diesel's own connections.
//!
//! # Where a class comes from
//!
//! diesel hands back only part of a server's error. So:
//!
//! - **MySQL/MariaDB**: right after the failing call, on the same connection and
//!   before any ROLLBACK, the lab runs `GET DIAGNOSTICS CONDITION 1 @errno =
//!   MYSQL_ERRNO, @sqlstate = RETURNED_SQLSTATE` and reads the real errno:
//!   1213 `deadlock`, 1205 `lock_wait_timeout`, 1020 `serialization` (MariaDB
//!   with `innodb_snapshot_isolation`), 1062/1451/1452/1048 `constraint`.
//! - **PostgreSQL**: diesel keeps no SQLSTATE. 40001 arrives as its
//!   `SerializationFailure` kind, and the constraint SQLSTATEs as their kinds;
//!   everything else is `Unknown` with the server's message. Those messages are
//!   read with `lc_messages` set to `C` on every lab connection, so that
//!   "deadlock detected" (40P01) and "canceling statement due to lock timeout"
//!   (55P03) are PostgreSQL's own English text. This is the one place in the lab
//!   where a class comes from text; the table is [`pg_class_from_message`].
//!
//! A server waits for locks inside the server, so the lab cannot time the wait
//! of a statement the way SQLite's busy handler lets it: `lock_wait` is not
//! measured ([`Engine::total_lock_wait`] is `None`).

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::DatabaseErrorKind;
use diesel::sql_types::{Integer, Nullable, Text};

use crate::backend::engine::{Engine, Kind};
use crate::backend::sqlite::BusyRecord;
use crate::backend::target::ServerUrl;
use crate::backend::Conn;
use crate::db::Policy;
use crate::error::{DbError, LockClass, Phase, ServerCode};
use crate::settings::TxnMode;

use super::conn::OpenError;

/// One server connection's engine: which server, and the session's lock wait.
pub struct ServerEngine {
    kind: Kind,
    lock_timeout: Duration,
}

/// Opens a connection to the server and sets the session up: the isolation
/// level, the lock wait (`LAB_BUSY_TIMEOUT` as PostgreSQL's `lock_timeout` or
/// MySQL's `innodb_lock_wait_timeout`, whole seconds, at least 1), and on
/// PostgreSQL `lc_messages = 'C'`.
pub fn open(server: &ServerUrl, policy: &Policy) -> Result<(Conn, ServerEngine), OpenError> {
    let path = server.display();
    let setup = |message: String| OpenError::Setup {
        path: path.clone(),
        message,
    };
    let open_err = |e: diesel::ConnectionError| OpenError::Open {
        path: path.clone(),
        message: one_line(&e.to_string()),
    };
    let isolation = policy.isolation.sql();
    let (conn, lock_timeout) = match server.kind() {
        Kind::Postgres => {
            let mut c =
                diesel::pg::PgConnection::establish(&server.connect_url()).map_err(open_err)?;
            let ms = policy.busy_timeout.as_millis().max(1);
            // lc_messages is a superuser setting: a user without it (or
            // without GRANT SET ON PARAMETER lc_messages) keeps the server's
            // language, and the few classes read from messages may then be
            // `other`. Said once per process, not refused.
            if let Err(e) = c.batch_execute("SET lc_messages TO 'C'") {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    log::warn!(
                        "{path}: SET lc_messages TO 'C' was refused ({}); the classes read from \
                         messages (deadlock 40P01, lock_timeout 55P03) need English messages: \
                         connect as a superuser or GRANT SET ON PARAMETER lc_messages TO the user",
                        one_line(&e.to_string())
                    )
                });
            }
            let session = format!(
                "SET lock_timeout = '{ms}ms'; \
                 SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL {isolation}"
            );
            c.batch_execute(&session)
                .map_err(|e| setup(format!("{session}: {e}")))?;
            (Conn::Postgres(c), Duration::from_millis(ms as u64))
        }
        Kind::Mysql => {
            let mut c = diesel::mysql::MysqlConnection::establish(&server.connect_url())
                .map_err(open_err)?;
            // innodb_lock_wait_timeout counts whole seconds, 1 at least.
            let secs = policy.busy_timeout.as_secs_f64().ceil().max(1.0) as u64;
            let session = format!(
                "SET SESSION innodb_lock_wait_timeout = {secs}; \
                 SET SESSION TRANSACTION ISOLATION LEVEL {isolation}"
            );
            c.batch_execute(&session)
                .map_err(|e| setup(format!("{session}: {e}")))?;
            (Conn::Mysql(c), Duration::from_secs(secs))
        }
        Kind::Sqlite => return Err(setup("not a server URL".to_string())),
    };
    Ok((
        conn,
        ServerEngine {
            kind: server.kind(),
            lock_timeout,
        },
    ))
}

/// The first line of a driver's message (libpq's span several).
fn one_line(message: &str) -> String {
    message.lines().next().unwrap_or("").trim().to_string()
}

#[derive(QueryableByName)]
struct Diagnostics {
    #[diesel(sql_type = Nullable<Integer>)]
    errno: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    state_code: Option<String>,
}

/// MySQL's errno and SQLSTATE of the last failed statement on this connection,
/// from its diagnostics area (which only the next statement would clear).
pub fn mysql_diagnostics(conn: &mut Conn) -> QueryResult<(Option<i32>, Option<String>)> {
    conn.batch_execute(
        "GET DIAGNOSTICS CONDITION 1 @lab_errno = MYSQL_ERRNO, @lab_sqlstate = RETURNED_SQLSTATE",
    )?;
    let d = diesel::sql_query("SELECT @lab_errno AS errno, @lab_sqlstate AS state_code")
        .get_result::<Diagnostics>(conn)?;
    Ok((d.errno, d.state_code))
}

#[derive(QueryableByName)]
struct Condition {
    #[diesel(sql_type = Nullable<diesel::sql_types::BigInt>)]
    n: Option<i64>,
    #[diesel(sql_type = Nullable<Integer>)]
    errno: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    message: Option<String>,
}

/// The first condition MySQL raised on the last statement (a warning, after
/// a ROLLBACK), from its diagnostics area: GET DIAGNOSTICS does not clear it,
/// the SELECT that reads the variables comes after.
pub fn mysql_first_condition(conn: &mut Conn) -> QueryResult<Option<(i32, String)>> {
    conn.batch_execute(
        "GET DIAGNOSTICS @lab_n = NUMBER; \
         GET DIAGNOSTICS CONDITION 1 @lab_errno = MYSQL_ERRNO, @lab_text = MESSAGE_TEXT",
    )?;
    let c = diesel::sql_query(
        "SELECT CAST(@lab_n AS SIGNED) AS n, @lab_errno AS errno, CAST(@lab_text AS CHAR) AS message",
    )
    .get_result::<Condition>(conn)?;
    Ok(match (c.n, c.errno) {
        (Some(n), Some(errno)) if n > 0 => Some((errno, c.message.unwrap_or_default())),
        _ => None,
    })
}

/// MySQL's warning 1196 (ER_WARNING_NOT_COMPLETE_ROLLBACK): "Some
/// non-transactional changed tables couldn't be rolled back".
pub const MYSQL_NONTRANSACTIONAL_NOT_ROLLED_BACK: i32 = 1196;

/// The class of a MySQL/MariaDB errno.
pub fn mysql_class(errno: i32) -> LockClass {
    match errno {
        1213 => LockClass::Deadlock,
        1205 => LockClass::LockWaitTimeout,
        1020 => LockClass::Serialization,
        1062 | 1451 | 1452 | 1048 | 4025 => LockClass::Constraint,
        _ => LockClass::Other,
    }
}

/// PostgreSQL's class from what diesel keeps: its error kind, else the
/// message (under `lc_messages = 'C'`), with the SQLSTATE it stands for.
pub fn pg_class_from_message(
    kind: &DatabaseErrorKind,
    message: &str,
) -> (LockClass, Option<&'static str>) {
    match kind {
        DatabaseErrorKind::SerializationFailure => (LockClass::Serialization, Some("40001")),
        DatabaseErrorKind::UniqueViolation => (LockClass::Constraint, Some("23505")),
        DatabaseErrorKind::ForeignKeyViolation => (LockClass::Constraint, Some("23503")),
        DatabaseErrorKind::NotNullViolation => (LockClass::Constraint, Some("23502")),
        DatabaseErrorKind::CheckViolation => (LockClass::Constraint, Some("23514")),
        _ if message.starts_with("deadlock detected") => (LockClass::Deadlock, Some("40P01")),
        _ if message.starts_with("canceling statement due to lock timeout")
            || message.starts_with("could not obtain lock on row") =>
        {
            (LockClass::LockWaitTimeout, Some("55P03"))
        }
        _ => (LockClass::Other, None),
    }
}

impl Engine for ServerEngine {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn begin_sql(&self, _mode: TxnMode, _implicit: bool) -> &'static str {
        // The isolation level is the session's (set at open); a server has
        // no deferred or immediate BEGIN.
        match self.kind {
            Kind::Mysql => "START TRANSACTION",
            _ => "BEGIN",
        }
    }

    fn savepoint_begins_transaction(&self) -> bool {
        false
    }

    fn in_transaction(&self) -> Option<bool> {
        None
    }

    fn holds_write_lock(&self) -> Option<bool> {
        None
    }

    fn classify(&mut self, conn: &mut Conn, phase: Phase, err: &diesel::result::Error) -> DbError {
        let diesel::result::Error::DatabaseError(kind, info) = err else {
            return DbError::other(phase, err.to_string());
        };
        let message = info.message().to_string();
        let (class, code) = match self.kind {
            Kind::Mysql => match mysql_diagnostics(conn) {
                Ok((Some(errno), _)) => (mysql_class(errno), ServerCode::new(&errno.to_string())),
                Ok((None, _)) => (LockClass::Other, None),
                Err(e) => {
                    log::warn!("reading MySQL's diagnostics after a failure failed too: {e}");
                    (LockClass::Other, None)
                }
            },
            _ => {
                let (class, sqlstate) = pg_class_from_message(kind, &message);
                (class, sqlstate.and_then(ServerCode::new))
            }
        };
        DbError {
            class,
            phase,
            extended_code: 0,
            server_code: code,
            waited: Duration::ZERO,
            busy_calls: 0,
            message,
        }
    }

    fn busy_record(&self) -> BusyRecord {
        BusyRecord::default()
    }

    fn total_lock_wait(&self) -> Option<Duration> {
        None
    }

    fn busy_timeout(&self) -> Duration {
        self.lock_timeout
    }

    fn lock_acquired_at(&self) -> Option<i64> {
        None
    }

    fn reset_acquired(&self) {}

    fn rollback_warning(&mut self, conn: &mut Conn) -> Option<(i32, String)> {
        if self.kind != Kind::Mysql {
            return None;
        }
        // Only 1196 says the rollback did not undo everything. MariaDB's
        // ROLLBACK can leave the failed statement's error (e.g. 1062) in the
        // diagnostics area: that is not a rollback warning.
        match mysql_first_condition(conn) {
            Ok(c) => c.filter(|(errno, _)| *errno == MYSQL_NONTRANSACTIONAL_NOT_ROLLED_BACK),
            Err(e) => {
                log::debug!("reading MySQL's warnings after a ROLLBACK: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_classes_from_kind_then_message() {
        let unknown = DatabaseErrorKind::Unknown;
        assert_eq!(
            pg_class_from_message(&DatabaseErrorKind::SerializationFailure, "x").0,
            LockClass::Serialization
        );
        assert_eq!(
            pg_class_from_message(&unknown, "deadlock detected").0,
            LockClass::Deadlock
        );
        assert_eq!(
            pg_class_from_message(&unknown, "canceling statement due to lock timeout").0,
            LockClass::LockWaitTimeout
        );
        assert_eq!(
            pg_class_from_message(&unknown, "relation \"x\" does not exist").0,
            LockClass::Other
        );
        assert_eq!(mysql_class(1213), LockClass::Deadlock);
        assert_eq!(mysql_class(1205), LockClass::LockWaitTimeout);
        assert_eq!(mysql_class(1020), LockClass::Serialization);
        assert_eq!(mysql_class(1146), LockClass::Other);
    }
}
