//! How webui creates build requests (`LAB_CREATE_SHAPE`), one file per shape,
//! each owning its transaction boundaries, under one operation
//! (`create_request`) per HTTP request.
//!
//! Both shapes read first, as a Django view does: they get or create the
//! project by name and read the queue length, then write. With
//! ATOMIC_REQUESTS the whole view is one atomic block (BEGIN as the
//! transaction mode says), and every write inside it is a savepoint; without
//! it every write is its own transaction, so a failure part way leaves a
//! partial write, which `check` counts.
//!
//! - [`lab`]: the original demo's view: the requests, one INSERT each.
//! - [`toaster`]: Toaster's `Project.schedule_build` per request: the Build row
//!   first, then the request, then its child rows, then the request saved
//!   again, then runbuilds woken. Each a patched save.
//! - [`bulk`]: Django's `bulk_create`: `lab`'s reads, then one multi-row
//!   INSERT … RETURNING id for all the requests.

pub mod bulk;
pub mod lab;
pub mod toaster;

use crate::db::LabConn;
use crate::error::OpError;
use crate::models::{BuildRequest, Needs, NewRequest, Project};
use crate::ops::{Lab, Op};
use crate::settings::CreateShape;
use crate::types::{BuildId, ProjectId, RequestId};

/// One validated create.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub project: String,
    pub count: i64,
    pub needs: Needs,
    pub priority: i32,
    /// The client's X-Request-Id, stored on every row it creates.
    pub client_request_id: String,
    /// The process that submits (webui's name).
    pub submitted_by: String,
}

impl CreateSpec {
    /// The request row this spec creates in `project`, pointing at `build`
    /// where the shape made a Build first.
    pub fn new_request(&self, project: ProjectId, build: Option<BuildId>) -> NewRequest<'_> {
        NewRequest {
            project_id: project,
            needs: &self.needs,
            priority: self.priority,
            submitted_by: &self.submitted_by,
            client_request_id: Some(&self.client_request_id),
            build_id: build,
        }
    }
}

/// The create's answer counts the queue up to this many requests; a longer
/// queue reads as this many ("1000 or more").
pub const QUEUE_LENGTH_CAP: i64 = 1000;

/// What a create made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub ids: Vec<RequestId>,
    pub queue_length: i64,
}

/// Runs one create with the shape, as the operation `create_request`.
/// `notify` wakes runbuilds (a no-op under `LAB_WAKE=poll`).
pub fn create(
    lab: &Lab,
    conn: &mut LabConn,
    shape: CreateShape,
    atomic_requests: bool,
    spec: &CreateSpec,
    notify: &(dyn Fn() + Sync),
) -> Result<Created, OpError> {
    lab.op("create_request", |op| {
        let created = if atomic_requests {
            // ATOMIC_REQUESTS: the whole view is one block.
            op.block(conn, |op, conn| view(op, conn, shape, spec, notify))
        } else {
            view(op, conn, shape, spec, notify)
        }?;
        if shape != CreateShape::Toaster {
            notify();
        }
        Ok(created)
    })
}

/// The view's body: the reads, then the writes of the shape.
fn view(
    op: &mut Op<'_>,
    conn: &mut LabConn,
    shape: CreateShape,
    spec: &CreateSpec,
    notify: &(dyn Fn() + Sync),
) -> Result<Created, OpError> {
    let project = get_or_create_project(op, conn, &spec.project)?;
    let queue_length = op.read(conn, |c| {
        BuildRequest::queue_length_up_to(c, QUEUE_LENGTH_CAP)
    })?;
    let ids = match shape {
        CreateShape::Lab => lab::write(op, conn, project, spec)?,
        CreateShape::Bulk => bulk::write(op, conn, project, spec)?,
        CreateShape::Toaster => toaster::write(op, conn, project, spec, notify)?,
    };
    Ok(Created { ids, queue_length })
}

/// Django's `get_or_create`: a read (the get), then, if missing, a save that
/// only inserts; a unique violation there means another view created it
/// since the read, and the get runs again.
fn get_or_create_project(
    op: &mut Op<'_>,
    conn: &mut LabConn,
    name: &str,
) -> Result<ProjectId, OpError> {
    if let Some(id) = op.read(conn, |c| Project::find(c, name))? {
        return Ok(id);
    }
    // The unique violation rolls the save back (a savepoint inside an open
    // transaction: PostgreSQL refuses every later statement of a transaction
    // until the failed part is rolled back), as Django's get_or_create does
    // with its atomic block around the create.
    const EXISTS: &str = "the project was created since the read";
    let created = op.save(conn, |tx| match tx.inserted(|c| Project::create(c, name)) {
        Ok(id) => Ok(id),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Err(crate::error::TxError::abort(EXISTS)),
        Err(e) => Err(e.into()),
    });
    match created {
        Ok(id) => Ok(id),
        Err(OpError::Aborted(reason)) if reason == EXISTS => op
            .read(conn, |c| Project::find(c, name))?
            .ok_or_else(|| OpError::Aborted(format!("project {name:?} vanished"))),
        Err(e) => Err(e),
    }
}
