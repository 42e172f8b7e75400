//! `toaster`: Toaster's `Project.schedule_build` (bitbake's
//! `lib/toaster/orm/models.py`), once per request, each step a patched save:
//!
//! 1. the Build row;
//! 2. the BuildRequest, queued, pointing at that Build;
//! 3. its child rows: one bitbake row, then one row per target (and the
//!    Build's own Target row), per layer and per variable;
//! 4. the request saved again;
//! 5. runbuilds woken.
//!
//! If a step fails after the request exists, the request is deleted (a
//! delete, not retried), which cascades to its child rows; the Build and
//! Target rows stay.

use super::CreateSpec;
use crate::db::LabConn;
use crate::error::OpError;
use crate::models::{children, create_build_target, Build, BuildRequest, Child};
use crate::ops::Op;
use crate::types::{ProjectId, RequestId};

pub fn write(
    op: &mut Op<'_>,
    conn: &mut LabConn,
    project: ProjectId,
    spec: &CreateSpec,
    notify: &(dyn Fn() + Sync),
) -> Result<Vec<RequestId>, OpError> {
    let mut ids = Vec::with_capacity(usize::try_from(spec.count).unwrap_or(0));
    for _ in 0..spec.count {
        ids.push(schedule_build(op, conn, project, spec)?);
        notify();
    }
    Ok(ids)
}

/// One `schedule_build`.
pub fn schedule_build(
    op: &mut Op<'_>,
    conn: &mut LabConn,
    project: ProjectId,
    spec: &CreateSpec,
) -> Result<RequestId, OpError> {
    let build = op.save(conn, |tx| Ok(tx.inserted(Build::create_empty)?))?;
    let new = spec.new_request(project, Some(build));
    let request = op.save(conn, |tx| {
        Ok(tx.inserted(|c| BuildRequest::create(c, &new))?)
    })?;
    let rest = (|| {
        for child in children() {
            op.save(conn, |tx| Ok(tx.counted(|c| child.create(c, request))?))?;
            if let Child::Target(target, task) = child {
                op.save(conn, |tx| {
                    Ok(tx.counted(|c| create_build_target(c, build, target, task))?)
                })?;
            }
        }
        op.save(conn, |tx| {
            Ok(tx.counted(|c| BuildRequest::touch(c, request))?)
        })
    })();
    match rest {
        Ok(_) => Ok(request),
        Err(e) => {
            // `br.delete()`: not retried, and counted as an operation of its own.
            let deleted = op.lab().op("delete_request", |op| {
                op.statement(conn, |tx| {
                    Ok(tx.counted(|c| BuildRequest::delete(c, request))?)
                })
            });
            if deleted.is_err() {
                log::warn!("deleting request {request} after a failed create failed too");
            }
            Err(e)
        }
    }
}
