//! The Q/R service's hooks into cluster mode (`crate::cluster`), kept here
//! so the local path stays readable: a C-MOVE's or C-GET's instances held
//! by other nodes are moved by them or fetched from them ([`forward`]), and
//! the service polls for the outcome ([`QueryRetrieve::forward_poll`]) on
//! the C-FIND step's timer. C-FIND's cluster source is in `find`
//! (`Source::Cluster`).

use std::collections::HashSet;
use std::time::Duration;

use sluice_io::Core;
use sluice_net::query::Query;

use super::super::conn::Connections;
use super::super::shared::ServerShared;
use super::super::tag::{tag, TagKind};
use super::state::{Operation, RetrieveKind};
use super::QueryRetrieve;
use crate::cluster::Forward;
use crate::store::StoredDataset;

/// How often the service looks for the catalogue's next C-FIND page.
const FIND_POLL: Duration = Duration::from_millis(2);

/// How often a forwarded C-MOVE's outcome is looked for (the holders'
/// sub-operations take at least milliseconds each).
const FORWARD_POLL: Duration = Duration::from_millis(20);

/// Cluster mode: the instances of `query` other nodes hold (and this one
/// does not, `local`) are moved by them to the same destination (C-MOVE),
/// or fetched from them to be sent from here on the requester's
/// association (C-GET). `None` without cluster mode.
pub(super) fn forward(
    shared: &ServerShared,
    kind: &RetrieveKind,
    query: Query,
    local: &[StoredDataset],
) -> Option<Forward> {
    let cluster = shared.cluster.as_ref()?;
    let destination = match kind {
        RetrieveKind::Move { destination } => Some(destination.clone()),
        RetrieveKind::Get => None,
    };
    let local: HashSet<String> = local
        .iter()
        .map(|dataset| dataset.triplet.sop_instance_uid.clone())
        .collect();
    Some(cluster.forward(query, local, destination))
}

/// A cluster C-FIND whose next page is not there yet: its step again
/// shortly (or, when no timer can be armed, after its next send).
pub(super) fn find_wait(core: &mut Core, serial: u64, waiting_for_sends: &mut bool) {
    if let Err(error) = core.timer(FIND_POLL, tag(TagKind::FindStep, serial)) {
        tracing::warn!(%error, "cannot arm a C-FIND step; it waits for a send instead");
        *waiting_for_sends = true;
    }
}

impl QueryRetrieve {
    /// A forwarded C-MOVE: its holders' outcome added once it is there
    /// (then the final answer may go out), else looked for again shortly.
    pub(super) fn forward_poll(&mut self, core: &mut Core, conns: &mut Connections, serial: u64) {
        let Some(Operation::Retrieve(op)) = self.operations.get_mut(&serial) else {
            return;
        };
        let Some(forward) = &op.forward else {
            return;
        };
        match forward.poll() {
            Some(mut done) => {
                op.forward = None;
                op.staging = done.staging.take();
                op.retrieve.remote_done(done);
                // A C-GET's association idle while the others' instances
                // were fetched sends them now.
                let idle = self
                    .lanes
                    .get(&serial)
                    .is_some_and(|lane| lane.transfer.is_none() && lane.next.is_none());
                if idle {
                    self.lane_next(core, conns, serial);
                } else {
                    self.maybe_finish(core, conns, serial);
                }
            }
            None => {
                if let Err(error) = core.timer(FORWARD_POLL, tag(TagKind::FindStep, serial)) {
                    // Nothing else wakes it: the holders' outcome is lost.
                    tracing::error!(%error, "cannot arm the poll of a forwarded C-MOVE; its other nodes' instances count as failed");
                    op.forward = None;
                    op.retrieve.remote_done(crate::cluster::Forwarded {
                        reason: Some(format!("cannot wait for the other nodes: {error}")),
                        ..crate::cluster::Forwarded::default()
                    });
                    self.maybe_finish(core, conns, serial);
                }
            }
        }
    }
}
