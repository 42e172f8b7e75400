//! `per-event`: every event is its own autocommit INSERT (`write_event`),
//! retried as the policy says.

use super::{insert_events, Commit, IngestCtx, Tally};
use crate::db::LabConn;
use crate::stream::StreamEvent;
use crate::types::BuildId;

pub struct PerEvent;

impl Commit for PerEvent {
    fn name(&self) -> String {
        "per-event".to_string()
    }

    fn event(
        &mut self,
        ctx: &IngestCtx<'_>,
        conn: &mut LabConn,
        build: BuildId,
        e: StreamEvent,
    ) -> Tally {
        let events = [e];
        let ok = ctx
            .lab
            .op("write_event", |op| {
                op.autocommit(conn, |tx| insert_events(tx, build, &events))
            })
            .is_ok();
        Tally::of(1, ok)
    }

    fn flush(&mut self, _: &IngestCtx<'_>, _: &mut LabConn, _: BuildId) -> Tally {
        Tally::default()
    }
}
