//! `batch:N`: one write transaction per N events (`write_batch`), multi-row
//! INSERTs, retried as a unit. With IMMEDIATE transactions this is the
//! ingest half of the cure: the write lock is held for one short transaction
//! per N events instead of one per event.

use super::{insert_events, Commit, IngestCtx, Tally};
use crate::db::LabConn;
use crate::stream::StreamEvent;
use crate::types::BuildId;

pub struct Batch {
    size: usize,
    unit: Vec<StreamEvent>,
}

impl Batch {
    pub fn new(size: u32) -> Batch {
        let size = usize::try_from(size.max(1)).unwrap_or(1);
        Batch {
            size,
            unit: Vec::with_capacity(size.min(10_000)),
        }
    }
}

impl Commit for Batch {
    fn name(&self) -> String {
        format!("batch:{}", self.size)
    }

    fn start(&mut self, _conn: &mut LabConn) {
        self.unit.clear();
    }

    fn event(
        &mut self,
        ctx: &IngestCtx<'_>,
        conn: &mut LabConn,
        build: BuildId,
        e: StreamEvent,
    ) -> Tally {
        self.unit.push(e);
        if self.unit.len() >= self.size {
            self.flush(ctx, conn, build)
        } else {
            Tally::default()
        }
    }

    fn flush(&mut self, ctx: &IngestCtx<'_>, conn: &mut LabConn, build: BuildId) -> Tally {
        if self.unit.is_empty() {
            return Tally::default();
        }
        let unit = std::mem::take(&mut self.unit);
        let ok = ctx
            .lab
            .op("write_batch", |op| {
                op.write(conn, |tx| insert_events(tx, build, &unit))
            })
            .is_ok();
        self.unit = unit;
        let n = self.unit.len();
        self.unit.clear();
        Tally::of(n, ok)
    }
}
