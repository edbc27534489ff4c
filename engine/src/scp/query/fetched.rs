//! Records of evicted segments a C-MOVE or C-GET sends, fetched off the
//! core (docs/design/scale-out.md, "Reads off the io cores").
//!
//! A retrieve's list names such a record by its place in the read-through
//! cache (`store::Store::datasets_to_send`). When a lane's transfer opens
//! one that is not cached, [`FetchedQueue::fetch`] hands it to the object
//! store's fetcher threads instead of opening it, and the transfer stays in
//! its opening phase; the core goes on serving its other associations. The
//! fetcher's completion lands in this core's queue and wakes the core
//! through its mailbox (`CoreMessage::RecordsFetched`, drained before every
//! message like the index's answers); [`QueryRetrieve::records_fetched`]
//! then opens the cached file as any other (the usual open completion
//! follows), or fails the sub-operation with the fetch's reason.
//!
//! A completion whose lane ended, or whose transfer was given up meanwhile
//! (its identity is no longer on the lane), is dropped: the record stays
//! cached for the next reader.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use sluice_index::Triplet;
use sluice_io::{At, Core, OpenOptions};

use super::state;
use super::transfer::{OpenError, Phase};
use super::QueryRetrieve;
use crate::objects::{EvictedRecord, Objects};
use crate::scp::conn::Connections;
use crate::scp::tag::{tag, TagKind};
use crate::store::layout::Layout;

/// A fetch that ended, for the transfer that asked.
#[derive(Debug)]
struct Fetched {
    /// The transfer's io tag value (its lane and its identity on it).
    lane: u64,
    /// The record's cache file (which the lane's transfer names).
    path: PathBuf,
    /// The reason it failed.
    result: Result<(), String>,
}

/// One core's fetches that ended, waiting for the core.
pub(crate) struct FetchedQueue {
    objects: Option<Arc<Objects>>,
    layout: Layout,
    done: Mutex<Vec<Fetched>>,
    /// Puts one wake-up message into the core's mailbox without waiting (a
    /// full mailbox is fine: the core drains this queue before every
    /// message).
    wake: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for FetchedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedQueue").finish_non_exhaustive()
    }
}

impl FetchedQueue {
    /// The queue of a core of a server on `store`, woken by `wake`.
    pub(crate) fn new(
        store: &crate::store::Store,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> FetchedQueue {
        FetchedQueue {
            objects: store.objects().cloned(),
            layout: store.layout().clone(),
            done: Mutex::new(Vec::new()),
            wake: Box::new(wake),
        }
    }

    /// Has the fetcher fetch `record` (the cache file `path` of the
    /// instance `triplet`) for the transfer whose io tag value is `lane`;
    /// the outcome comes back through
    /// [`QueryRetrieve::records_fetched`].
    pub(super) fn fetch(
        self: &Arc<Self>,
        lane: u64,
        (path, record, triplet): (&PathBuf, &EvictedRecord, &Triplet),
    ) -> Result<(), String> {
        let Some(objects) = &self.objects else {
            return Err(format!(
                "the record is in the evicted object {}, and no object store is configured",
                record.object.key
            ));
        };
        let queue = Arc::clone(self);
        let path = path.clone();
        objects.fetch(
            &self.layout,
            record,
            triplet,
            Box::new(move |result| {
                debug_assert!(
                    result.as_ref().map_or(true, |fetched| *fetched == path),
                    "the fetcher fetched another record"
                );
                let result = result.as_ref().map(|_| ()).map_err(Clone::clone);
                queue
                    .done
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Fetched { lane, path, result });
                (queue.wake)();
            }),
        );
        Ok(())
    }

    fn take(&self) -> Vec<Fetched> {
        std::mem::take(&mut *self.done.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl QueryRetrieve {
    /// On the core: the fetches that ended since the last call. A lane
    /// still waiting for one opens the cached file, or fails its
    /// sub-operation with the reason.
    pub(crate) fn records_fetched(&mut self, core: &mut Core, conns: &mut Connections) {
        for Fetched { lane, path, result } in self.fetched.take() {
            // `lane`: the io tag value of the transfer that asked.
            let (serial, id) = state::split_io(lane);
            let Some(state) = self.lanes.get(&serial) else {
                continue;
            };
            // Its transfer, if it still waits (the lane's current one, or
            // one read ahead).
            let waits = state
                .transfer
                .iter()
                .chain(state.ahead.iter())
                .find(|transfer| transfer.id() == id && transfer.phase == Phase::Opening)
                .is_some_and(|transfer| transfer.dataset.location.file_range().0 == path.as_path());
            if !waits {
                continue;
            }
            let opened = result.and_then(|()| {
                core.open(
                    At::Cwd,
                    &path,
                    OpenOptions::new(),
                    tag(TagKind::RetrieveOpen, lane),
                )
                .map_err(|error| format!("cannot open the fetched record: {error}"))
            });
            if let Err(reason) = opened {
                self.opened(core, conns, lane, Err(OpenError::Other(reason)));
            }
        }
    }
}
