//! `bulk`: Django's `bulk_create`. The view's reads are `lab`'s; its writes
//! are one multi-row INSERT … RETURNING id ([`BuildRequest::create_many`]).
//! Like `bulk_create`, which wraps its INSERTs in `atomic(savepoint=False)`,
//! it joins the open transaction (ATOMIC_REQUESTS) without a savepoint, or
//! autocommits on its own.

use super::CreateSpec;
use crate::db::LabConn;
use crate::error::OpError;
use crate::models::{BuildRequest, NewRequest};
use crate::ops::Op;
use crate::types::{ProjectId, RequestId};

pub fn write(
    op: &mut Op<'_>,
    conn: &mut LabConn,
    project: ProjectId,
    spec: &CreateSpec,
) -> Result<Vec<RequestId>, OpError> {
    let new = NewRequest {
        project_id: project,
        needs: &spec.needs,
        priority: spec.priority,
        submitted_by: &spec.submitted_by,
        client_request_id: Some(&spec.client_request_id),
        build_id: None,
    };
    let count = usize::try_from(spec.count).unwrap_or(0);
    op.autocommit(conn, |tx| {
        let mut ids = Vec::new();
        tx.counted(|c| {
            ids = BuildRequest::create_many(c, &new, count)?;
            Ok(ids.len())
        })?;
        Ok(ids)
    })
}
