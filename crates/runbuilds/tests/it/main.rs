//! Integration tests of runbuilds: the claim strategies interleaved phase by
//! phase on one real file, all-or-nothing booking, unsatisfiable requests, and
//! end-to-end runs of the real binary (two schedulers at once, wake-ups, lease
//! expiry, startup refusals). Every test gets its own migrated SQLite file in a
//! temp dir; contention tests and real processes run one at a time.
#![allow(clippy::unwrap_used)]

mod claim;
mod cli;
mod e2e;
mod interleave;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use runbuilds::Scheduler;
use schema::db::{LabConn, Policy, Tx};
use schema::models::{Booking, Build, BuildRequest, Environment, Needs, NewRequest, Project};
use schema::settings::{ClaimStrategy, JournalMode, TxnMode};
use schema::{Lab, RequestId, TxError};
use testkit::TestLab;

/// The environments of every test: 3 qemux86 and 2 qemuarm.
pub const ENVIRONMENTS: &str = "qemux86:3,qemuarm:2";

/// Contention tests and real daemons run one at a time: two of them at once on
/// two cores distort each other.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh migrated file with [`ENVIRONMENTS`].
pub fn test_lab(journal: JournalMode) -> TestLab {
    TestLab::new(journal, ENVIRONMENTS).unwrap()
}

pub fn policy(timeout: Duration, mode: TxnMode) -> Policy {
    Policy {
        busy_timeout: timeout,
        txn_mode: mode,
        ..Policy::default()
    }
}

/// A scheduler with its own stats, as one runbuilds process has.
pub fn scheduler(name: &str, strategy: ClaimStrategy) -> Scheduler {
    Scheduler::new(Lab::new(name), strategy, Duration::from_secs(10))
}

/// Runs `body` in one write transaction of the test's own connection.
pub fn write<T>(conn: &mut LabConn, mut body: impl FnMut(&mut Tx<'_>) -> Result<T, TxError>) -> T {
    conn.write_txn("test", &mut body)
        .map(|(v, _, _)| v)
        .unwrap()
}

/// `{kind: count, ...}`
pub fn needs(pairs: &[(&str, u32)]) -> Needs {
    Needs(pairs.iter().map(|(k, n)| ((*k).to_string(), *n)).collect())
}

/// Creates queued requests (one per `needs` entry) with the model functions,
/// in one transaction, oldest first.
pub fn create_requests(conn: &mut LabConn, all: &[(Needs, i32)]) -> Vec<RequestId> {
    write(conn, |tx| {
        let project = Project::get_or_create(tx.conn(), "tests")?;
        let mut ids = Vec::new();
        for (needs, priority) in all {
            ids.push(BuildRequest::create(
                tx.conn(),
                &NewRequest {
                    project_id: project,
                    needs,
                    priority: *priority,
                    submitted_by: "tests",
                    client_request_id: None,
                    build_id: None,
                },
            )?);
        }
        Ok(ids)
    })
}

pub fn create_request(conn: &mut LabConn, needs: Needs, priority: i32) -> RequestId {
    create_requests(conn, &[(needs, priority)])[0]
}

pub fn request(conn: &mut LabConn, id: RequestId) -> BuildRequest {
    BuildRequest::get(conn.diesel(), id).unwrap().unwrap()
}

pub fn builds_of(conn: &mut LabConn, id: RequestId) -> Vec<Build> {
    Build::for_request(conn.diesel(), id).unwrap()
}

pub fn bookings_of(conn: &mut LabConn, id: RequestId) -> Vec<Booking> {
    Booking::all(conn.diesel())
        .unwrap()
        .into_iter()
        .filter(|b| b.request_id == id)
        .collect()
}

pub fn held(conn: &mut LabConn) -> Vec<Environment> {
    Environment::held(conn.diesel()).unwrap()
}

/// The kind of each environment booked by `id`, sorted.
pub fn booked_kinds(conn: &mut LabConn, id: RequestId) -> Vec<String> {
    let envs = Environment::all(conn.diesel()).unwrap();
    let mut kinds: Vec<String> = bookings_of(conn, id)
        .iter()
        .map(|b| {
            envs.iter()
                .find(|e| e.id == b.environment_id)
                .unwrap()
                .kind
                .clone()
        })
        .collect();
    kinds.sort();
    kinds
}

/// The kinds `needs` asks for, one entry per environment, sorted.
pub fn wanted_kinds(needs: &Needs) -> Vec<String> {
    let mut kinds: Vec<String> = needs
        .0
        .iter()
        .flat_map(|(k, n)| std::iter::repeat_n(k.clone(), *n as usize))
        .collect();
    kinds.sort();
    kinds
}
