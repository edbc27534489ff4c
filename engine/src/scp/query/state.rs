//! What the Q/R service keeps per association: its operation (a C-FIND,
//! or a C-MOVE/C-GET and its bookkeeping) and, per lane, the association
//! carrying a retrieve's C-STOREs with the instance it sends, those sent
//! and awaiting their answer, and the next.
//! The service (`super::QueryRetrieve`) keeps them keyed by serial and
//! drives them; these are the states, and how a lane starts.

use std::time::Instant;

use sluice_net::dimse::dataset::SmallDatasetEncoding;

use super::find::FindOp;
use super::retrieve::Retrieve;
use super::transfer::Transfer;

/// The operation of one association.
#[derive(Debug)]
pub(super) enum Operation {
    Find(Box<FindOp>),
    Retrieve(Box<RetrieveOp>),
}

/// Where a retrieve's instances go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RetrieveKind {
    /// To this AE, on associations Sluice opens.
    Move { destination: String },
    /// Back to the requester, on its own association.
    Get,
}

/// A C-MOVE or C-GET in progress.
#[derive(Debug)]
pub(super) struct RetrieveOp {
    pub(super) kind: RetrieveKind,
    pub(super) context_id: u8,
    pub(super) message_id: u16,
    pub(super) sop_class_uid: String,
    pub(super) encoding: SmallDatasetEncoding,
    pub(super) retrieve: Retrieve,
    /// The lanes carrying its C-STOREs.
    pub(super) lanes: Vec<u64>,
    /// The requester's AE title (Move Originator).
    pub(super) originator_ae_title: String,
    /// When its sub-operations started (its instances resolved).
    pub(super) started: Instant,
    /// How long resolving its instances took (before `started`).
    pub(super) resolved_in: std::time::Duration,
    pub(super) bytes_sent: u64,
    /// Cluster mode: the instances other nodes hold, moved by them
    /// (C-MOVE) or fetched from them (C-GET).
    pub(super) forward: Option<crate::cluster::Forward>,
    /// C-GET: where the fetched instances wait to be sent (removed with
    /// the operation).
    pub(super) staging: Option<crate::cluster::StagingDir>,
    /// C-GET: instances fetched from other nodes, taken from the forward
    /// and not yet answered by the requester (the window's count).
    pub(super) staged_unsent: usize,
    /// C-GET: a pending C-GET-RSP is due but a C-STORE's data set is going
    /// out on the association (no other message may come between its
    /// PDUs): it goes once that data set is sent.
    pub(super) pending_deferred: bool,
}

impl RetrieveOp {
    /// C-CANCEL: nothing more is started here, nor by the other nodes.
    pub(super) fn cancel(&mut self, serial: u64) {
        self.retrieve.cancel();
        if let Some(forward) = &self.forward {
            forward.cancel();
        }
        tracing::debug!(serial, "retrieve cancelled");
    }
}

/// An association carrying a retrieve's C-STOREs.
#[derive(Debug)]
pub(super) struct Lane {
    /// The serial of the retrieve's association.
    pub(super) origin: u64,
    /// The sub-operation being sent (its file opened, its command and data
    /// set going out); once every byte is queued it joins `outstanding`.
    pub(super) transfer: Option<Transfer>,
    /// Sub-operations sent whose C-STORE-RSP is awaited, in the order sent
    /// (answers may come in any order: matched by Message ID).
    pub(super) outstanding: Vec<Transfer>,
    /// How many may be outstanding at once: 1 (one at a time, PS3.7's
    /// default), or a C-GET's negotiated Asynchronous Operations Window.
    pub(super) window: usize,
    /// The most that were outstanding at once (logged with the answer).
    pub(super) outstanding_peak: usize,
    /// The next one, its file opened (and its first chunk read) while the
    /// window is full, i.e. while the answers it waits for are awaited.
    pub(super) next: Option<Transfer>,
    /// `next` was given up while its open was in flight: the open's
    /// completion closes the file and gives the instance back (until then
    /// the lane starts no other open, so a completion always finds its
    /// transfer).
    pub(super) next_abandoned: bool,
    /// Waiting for a chunk or for its sends to drain.
    pub(super) waiting: bool,
    /// Its association is established (a C-MOVE lane's AC arrived; a
    /// C-GET's own association always is).
    pub(super) accepted: bool,
    /// Its release was asked for (nothing more goes on it).
    pub(super) released: bool,
}

impl Lane {
    pub(super) fn new(origin: u64, accepted: bool) -> Lane {
        Lane {
            origin,
            transfer: None,
            outstanding: Vec::new(),
            window: 1,
            outstanding_peak: 0,
            next: None,
            next_abandoned: false,
            waiting: false,
            accepted,
            released: false,
        }
    }
}
