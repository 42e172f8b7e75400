//! `lab`: the original demo's view writes its requests one INSERT each.

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
    let mut ids = Vec::with_capacity(usize::try_from(spec.count).unwrap_or(0));
    for _ in 0..spec.count {
        ids.push(op.autocommit(conn, |tx| {
            Ok(tx.inserted(|c| BuildRequest::create(c, &new))?)
        })?);
    }
    Ok(ids)
}
