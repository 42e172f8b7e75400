//! `bulk` (Django's bulk_create) and `LAB_CHECKPOINT=background`, on real
//! SQLite files.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};
use schema::backend::Conn;
use schema::db::Policy;
use schema::models::{BuildRequest, Needs, Project};
use schema::settings::{CheckpointMode, JournalMode};
use schema::strategy::create::CreateSpec;
use schema::types::RequestState;

use crate::TestDb;

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = BigInt)]
    v: i64,
}

/// A create of one request by "test", tagged with `client_request_id`.
fn spec(client_request_id: &str) -> CreateSpec {
    CreateSpec {
        project: "test".into(),
        count: 1,
        needs: Needs::default(),
        priority: 0,
        client_request_id: client_request_id.into(),
        submitted_by: "test".into(),
    }
}

#[test]
fn create_many_inserts_every_row_and_returns_each_id() {
    let db = TestDb::new(JournalMode::Wal);
    let mut conn = db.conn(Policy::default());
    bulk_creates_every_row(conn.diesel());
}

/// `create_many` on a fresh database of any backend: every row stored, each
/// id returned once, and the capped queue count right on both sides of its
/// cap.
pub fn bulk_creates_every_row(c: &mut Conn) {
    let project = Project::create(c, "bulk").unwrap();
    let spec = spec("bulk-1");
    let new = spec.new_request(project, None);
    // 63 = one statement of 50, one of 10 and three of 1.
    let ids = BuildRequest::create_many(c, &new, 63).unwrap();
    assert_eq!(ids.len(), 63);
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 63, "ids repeat: {ids:?}");
    for id in &ids {
        let row = BuildRequest::get(c, *id)
            .unwrap()
            .expect("a returned id has its row");
        assert_eq!(row.state, RequestState::Queued);
        assert_eq!(row.client_request_id.as_deref(), Some("bulk-1"));
    }
    let stored: Value = diesel::sql_query(
        "SELECT COUNT(*) AS v FROM build_request WHERE client_request_id = 'bulk-1'",
    )
    .get_result(c)
    .unwrap();
    assert_eq!(stored.v, 63);
    // The capped count: the cap when the queue is longer, else the count.
    assert_eq!(BuildRequest::queue_length_up_to(c, 40).unwrap(), 40);
    assert_eq!(BuildRequest::queue_length_up_to(c, 63).unwrap(), 63);
    assert_eq!(BuildRequest::queue_length_up_to(c, 1000).unwrap(), 63);
    assert_eq!(BuildRequest::create_many(c, &new, 0).unwrap().len(), 0);
}

#[derive(QueryableByName)]
struct Pages {
    #[diesel(sql_type = Integer)]
    wal_autocheckpoint: i32,
}

#[test]
fn background_checkpoints_leave_the_wal_to_the_checkpointer() {
    let db = TestDb::new(JournalMode::Wal);
    let policy = Policy {
        checkpoint: CheckpointMode::Background,
        ..Policy::default()
    };
    let stop = policy.stop.clone();
    let mut conn = db.conn(policy.clone());
    let c = conn.diesel();
    let pages: Pages = diesel::sql_query("PRAGMA wal_autocheckpoint")
        .get_result(c)
        .unwrap();
    assert_eq!(pages.wal_autocheckpoint, 0, "writers must not checkpoint");
    let auto: Pages = diesel::sql_query("PRAGMA wal_autocheckpoint")
        .get_result(TestDb::conn(&db, Policy::default()).diesel())
        .unwrap();
    assert_eq!(auto.wal_autocheckpoint, 1000, "SQLite's default under auto");

    let thread = schema::db::start_checkpointer("test", &db.target, &policy)
        .unwrap()
        .expect("background on SQLite starts a checkpointer");
    let project = Project::create(c, "ckpt").unwrap();
    let spec = spec("ckpt-1");
    let new = spec.new_request(project, None);
    BuildRequest::create_many(c, &new, 500).unwrap();
    // Give the thread a few of its 100 ms turns with frames to copy.
    std::thread::sleep(Duration::from_millis(500));
    stop.set();
    let done = thread.join().unwrap();
    assert!(done.done >= 1, "no checkpoint ran: {done:?}");
    assert!(done.pages > 0, "the checkpoints copied nothing: {done:?}");
}
