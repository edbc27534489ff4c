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
use super::retrieve::SubOutcome;
use super::state::{Operation, RetrieveKind};
use super::transfer::Transfer;
use super::QueryRetrieve;
use crate::cluster::{Event, Forward, STREAM_WINDOW};
use crate::store::StoredDataset;

/// How often the service looks for the catalogue's next C-FIND page.
const FIND_POLL: Duration = Duration::from_millis(2);

/// How often a forwarded C-MOVE's outcome is looked for (the holders'
/// sub-operations take at least milliseconds each).
const FORWARD_POLL: Duration = Duration::from_millis(20);

/// Cluster mode: the instances of `query` other nodes hold (and this one
/// does not, `local`) are moved by them to the same destination (C-MOVE),
/// or fetched from them to be sent from here on the requester's
/// association (C-GET); those of a holder that is down are read from the
/// object store. `None` without cluster mode.
pub(super) fn forward(
    shared: &ServerShared,
    kind: &RetrieveKind,
    query: Query,
    local: &[StoredDataset],
) -> Option<Forward> {
    let cluster = shared.cluster.as_ref()?;
    // Its address, for the instances of a holder that is down, read from
    // the object store and sent from here.
    let destination = match kind {
        RetrieveKind::Move { destination } => Some((
            destination.clone(),
            shared.move_destinations.get(destination).copied().flatten(),
        )),
        RetrieveKind::Get => None,
    };
    let local: HashSet<String> = local
        .iter()
        .map(|dataset| dataset.triplet.sop_instance_uid.clone())
        .collect();
    let objects = shared.store.objects().cloned();
    Some(cluster.forward(query, local, destination, objects))
}

/// A cluster C-FIND whose next page is not there yet: its step again
/// shortly (or, when no timer can be armed, after its next send).
pub(super) fn find_wait(core: &mut Core, serial: u64, waiting_for_sends: &mut bool) {
    if let Err(error) = core.timer(FIND_POLL, tag(TagKind::FindStep, serial)) {
        tracing::warn!(%error, "cannot arm a C-FIND step; it waits for a send instead");
        *waiting_for_sends = true;
    }
}

/// What one look at a forward brought.
#[derive(Debug, Default)]
struct Pulled {
    /// Instances were queued (C-GET).
    staged: bool,
    /// The counts changed.
    counts: bool,
    /// The holders are done.
    done: bool,
}

impl QueryRetrieve {
    /// Takes a forwarded retrieve's reports (see `crate::cluster::forward`):
    /// all of them while fewer than [`STREAM_WINDOW`] fetched instances
    /// taken are unanswered (beyond that the thread, and the holder, wait;
    /// this node's own instances do not count), and all after a C-CANCEL
    /// (so the thread never waits for a core that waits for it).
    fn forward_pull(&mut self, serial: u64) -> Pulled {
        let mut pulled = Pulled::default();
        let Some(Operation::Retrieve(op)) = self.operations.get_mut(&serial) else {
            return pulled;
        };
        while let Some(forward) = &mut op.forward {
            let room = op.retrieve.is_cancelled() || op.staged_unsent < STREAM_WINDOW;
            if !room {
                break;
            }
            let Some(event) = forward.next() else {
                break;
            };
            match event {
                Event::Found(count) => {
                    op.retrieve.remote_found(count);
                    pulled.counts = true;
                }
                Event::Counts(counts) => {
                    op.retrieve.remote_counts(counts);
                    pulled.counts = true;
                }
                Event::Staged(dataset) => {
                    op.staged_unsent += 1;
                    op.retrieve.remote_staged(dataset);
                    pulled.staged = true;
                }
                Event::Done(done) => {
                    op.staging = forward.take_staging();
                    op.forward = None;
                    op.retrieve.remote_done(done);
                    pulled.done = true;
                }
            }
        }
        pulled
    }

    /// A forwarded retrieve's reports taken (C-GET: its association idle
    /// while the others' instances were fetched sends them now; counts
    /// changed: a pending response), then looked for again shortly.
    pub(super) fn forward_poll(&mut self, core: &mut Core, conns: &mut Connections, serial: u64) {
        let pulled = self.forward_pull(serial);
        self.forward_pulled(core, conns, serial, &pulled);
        let Some(Operation::Retrieve(op)) = self.operations.get_mut(&serial) else {
            return;
        };
        if op.forward.is_none() {
            return;
        }
        if let Err(error) = core.timer(FORWARD_POLL, tag(TagKind::FindStep, serial)) {
            // Nothing else wakes it: the holders' outcome is lost.
            tracing::error!(%error, "cannot arm the poll of a forwarded retrieve; its other nodes' instances count as failed");
            // Its fetched instances queued still go (their directory with
            // the operation); the thread stops (the forward dropped).
            op.staging = op
                .forward
                .take()
                .and_then(|mut forward| forward.take_staging());
            op.retrieve.remote_done(crate::cluster::Forwarded {
                reason: Some(format!("cannot wait for the other nodes: {error}")),
                ..crate::cluster::Forwarded::default()
            });
            self.maybe_finish(core, conns, serial);
        }
    }

    /// Acts on what [`Self::forward_pull`] brought.
    fn forward_pulled(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        serial: u64,
        pulled: &Pulled,
    ) {
        if pulled.counts {
            self.send_pending(core, conns, serial);
            if let Some(conn) = conns.get_mut(serial) {
                conn.flush_sends(core);
            }
        }
        let idle = self
            .lanes
            .get(&serial)
            .is_some_and(|lane| lane.transfer.is_none() && lane.ahead.is_empty());
        if pulled.staged && idle {
            self.lane_next(core, conns, serial);
        } else if pulled.done {
            self.maybe_finish(core, conns, serial);
        }
    }

    /// A sub-operation of the retrieve of association `origin` ended: its
    /// counts, its staging file deleted (an instance fetched from another
    /// node), and the next fetched instances taken.
    pub(super) fn sub_operation_done(
        &mut self,
        origin: u64,
        (transfer, outcome): (&Transfer, SubOutcome),
    ) {
        let Some(Operation::Retrieve(op)) = self.operations.get_mut(&origin) else {
            return;
        };
        op.bytes_sent += transfer.bytes_sent;
        let sop = &transfer.dataset.triplet.sop_instance_uid;
        let staged = op
            .forward
            .as_ref()
            .and_then(|forward| forward.staging())
            .or(op.staging.as_ref())
            .and_then(|staging| staging.holds(&transfer.dataset));
        if let Some(path) = staged {
            op.staged_unsent = op.staged_unsent.saturating_sub(1);
            tracing::debug!(sop_instance_uid = %sop, "a remote instance sent on the C-GET association");
            if let Err(error) = std::fs::remove_file(path) {
                tracing::warn!(%error, path = %path.display(), "cannot remove a C-GET staging file; it goes with its directory");
            }
        }
        op.retrieve.done(sop, outcome);
        // The caller sends the pending response and the lane's next
        // instance, and finishes the retrieve when it is done.
        self.forward_pull(origin);
    }
}
