//! What the Q/R service keeps per association: its operation (a C-FIND,
//! or a C-MOVE/C-GET and its bookkeeping) and, per lane, the association
//! carrying a retrieve's C-STOREs with the instance it sends, those sent
//! and awaiting their answer, the next ones read ahead, and the segment
//! files it holds open for them.
//! The service (`super::QueryRetrieve`) keeps them keyed by serial and
//! drives them; these are the states, and how a lane starts.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Instant;

use sluice_io::{Core, FileHandle};
use sluice_net::dimse::dataset::SmallDatasetEncoding;

use super::super::tag::{tag, TagKind};
use super::find::FindOp;
use super::retrieve::Retrieve;
use super::transfer::Transfer;

/// Segment files a lane holds open for its transfers' reads (the records
/// of a retrieve lie in few segments: no open and close per instance).
const SEGMENTS_HELD_MAX: usize = 4;

/// The most transfers a lane reads ahead (opened, first chunk read) while
/// it sends the current one: at most its window, and this many.
pub(super) const AHEAD_MAX: usize = 8;

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
    /// How its data sets go out (`query.retrieve_send`).
    pub(super) send: crate::config::RetrieveSend,
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
    /// The next ones, in the order they will be sent: their files opened
    /// and first chunks read ahead (`Transfer::prime`) while the current
    /// one is sent or the window is full; at most [`Lane::ahead_max`].
    pub(super) ahead: VecDeque<Transfer>,
    /// The identity the next transfer of this lane gets (its io tags carry
    /// it, so a completion finds its own transfer, or none if it was given
    /// up meanwhile).
    pub(super) next_id: u32,
    /// Segment files held open for this lane's records (path, handle):
    /// closed when the lane ends or its retrieve finishes.
    pub(super) segments: Vec<(PathBuf, FileHandle)>,
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
            ahead: VecDeque::new(),
            next_id: 0,
            segments: Vec::new(),
            waiting: false,
            accepted,
            released: false,
        }
    }

    /// How many transfers the lane reads ahead: one without a window (the
    /// next, while the current one's answer is awaited), else up to its
    /// window, at most [`AHEAD_MAX`].
    pub(super) fn ahead_max(&self) -> usize {
        self.window.clamp(1, AHEAD_MAX)
    }

    /// The io tag value of transfer `id` on lane `serial`: the lane in the
    /// low [`IO_SERIAL_BITS`] bits, the transfer above (see [`split_io`]).
    /// A core would need 2^40 connections (35 years at 1,000 a second)
    /// before a serial no longer fits; a lane has at most its window plus
    /// [`AHEAD_MAX`] transfers alive, so identities wrapping at 2^16 never
    /// meet a live one.
    pub(super) fn io_value(serial: u64, id: u32) -> u64 {
        debug_assert!(serial <= IO_SERIAL_MASK, "lane serial {serial}");
        (serial & IO_SERIAL_MASK) | (u64::from(id & IO_ID_MASK) << IO_SERIAL_BITS)
    }

    /// A fresh identity for the lane's next transfer.
    pub(super) fn take_id(&mut self) -> u32 {
        let id = self.next_id & IO_ID_MASK;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// The segment file held open for `path`, if any.
    pub(super) fn segment(&self, path: &std::path::Path) -> Option<FileHandle> {
        self.segments
            .iter()
            .find(|(held, _)| held == path)
            .map(|(_, file)| *file)
    }

    /// Keeps `file`, just opened for `path`, open for the lane's next
    /// records of that segment: true when kept (the transfer borrows it). At
    /// most [`SEGMENTS_HELD_MAX`]: a full table gives up a segment no
    /// transfer of the lane reads from, else keeps nothing.
    pub(super) fn hold_segment(
        &mut self,
        core: &mut Core,
        path: &std::path::Path,
        file: FileHandle,
    ) -> bool {
        if self.segment(path).is_some() {
            return false;
        }
        if self.segments.len() >= SEGMENTS_HELD_MAX {
            let in_use = |held: FileHandle| {
                self.transfer
                    .iter()
                    .chain(self.ahead.iter())
                    .any(|transfer| transfer.reads_from(held))
            };
            let Some(free) = self.segments.iter().position(|(_, held)| !in_use(*held)) else {
                return false;
            };
            let (_, old) = self.segments.swap_remove(free);
            // A read still in flight completes first (io's close waits).
            let _ = core.close_file(old, tag(TagKind::Ignored, 0));
        }
        self.segments.push((path.to_owned(), file));
        true
    }

    /// Closes the segment files the lane holds (its transfers are gone or
    /// done with them).
    pub(super) fn close_segments(&mut self, core: &mut Core) {
        for (_, file) in self.segments.drain(..) {
            let _ = core.close_file(file, tag(TagKind::Ignored, 0));
        }
    }
}

/// Bits of an io tag's value that carry the lane's connection serial.
const IO_SERIAL_BITS: u32 = 40;
const IO_SERIAL_MASK: u64 = (1 << IO_SERIAL_BITS) - 1;

/// Bits of a transfer's identity in an io tag (above the lane's serial;
/// 40 + 16 fill the tag's 56-bit value).
const IO_ID_MASK: u32 = (1 << 16) - 1;

/// The lane serial and transfer identity of an io tag's value
/// ([`Lane::io_value`]).
pub(super) fn split_io(value: u64) -> (u64, u32) {
    (
        value & IO_SERIAL_MASK,
        u32::try_from(value >> IO_SERIAL_BITS).unwrap_or(u32::MAX) & IO_ID_MASK,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lane's serial and a transfer's identity come back from the io tag
    /// as they went in, up to the largest serial that fits, and the value
    /// fits a tag.
    #[test]
    fn an_io_value_gives_back_its_lane_and_transfer() {
        for serial in [1, u64::from(u32::MAX) + 7, IO_SERIAL_MASK] {
            for id in [0, 1, u32::from(u16::MAX)] {
                let value = Lane::io_value(serial, id);
                assert!(value <= crate::scp::tag::VALUE_MAX, "{value:#x}");
                assert_eq!(split_io(value), (serial, id));
            }
        }
        // Identities wrap within their bits, never into the serial's.
        let mut lane = Lane::new(3, true);
        lane.next_id = u32::from(u16::MAX);
        assert_eq!(lane.take_id(), u32::from(u16::MAX));
        assert_eq!(split_io(Lane::io_value(3, lane.take_id())), (3, 0));
    }
}
