//! `bulk`: Django's `bulk_create`. The view's reads are `lab`'s; its writes
//! are multi-row INSERT … RETURNING id ([`BuildRequest::create_many`]: one
//! statement for the default NUM of 50, several for more). Like
//! `bulk_create`, which wraps its INSERTs in `atomic()`, they are one atomic
//! unit: a transaction of their own without ATOMIC_REQUESTS, so a failure
//! part way leaves nothing and a retry cannot insert a committed part twice;
//! a savepoint inside the view's transaction with it (Django uses
//! `savepoint=False` there, which would roll the whole view back instead).

use super::CreateSpec;
use crate::db::LabConn;
use crate::error::OpError;
use crate::models::BuildRequest;
use crate::ops::Op;
use crate::types::{ProjectId, RequestId};

pub fn write(
    op: &mut Op<'_>,
    conn: &mut LabConn,
    project: ProjectId,
    spec: &CreateSpec,
) -> Result<Vec<RequestId>, OpError> {
    let new = spec.new_request(project, None);
    let count = usize::try_from(spec.count).unwrap_or(0);
    op.write(conn, |tx| {
        let mut ids = Vec::new();
        tx.counted(|c| {
            ids = BuildRequest::create_many(c, &new, count)?;
            Ok(ids.len())
        })?;
        Ok(ids)
    })
}
