//! The transfers on a retrieve's lanes: which instance a lane carries
//! next, the next ones read ahead (their files opened and first chunks
//! read while the current one is sent and the answers are awaited), their
//! reads and sends pumped, and a failed transfer's instance given its
//! outcome. The state is each [`Lane`]'s `transfer` and `ahead`; every
//! open and read carries its transfer's identity in its io tag
//! (`Lane::io_value`), so its completion finds that transfer, or none when
//! it was given up meanwhile (its file closed, its chunk back in the
//! pool). The retrieve's bookkeeping (answers, counts, the end of an
//! operation) stays in the parent module.

use super::state::split_io;
use super::*;

/// Chunks of the core's pool that reading ahead leaves free for the lanes'
/// current transfers (their reads and sends), so a first chunk read ahead
/// never holds up the instance being sent.
const AHEAD_CHUNKS_LEFT: usize = transfer::LANE_SENDS_MAX as usize;

impl QueryRetrieve {
    /// The next instance of the lane's retrieve that the lane can carry, as
    /// a transfer whose file is being opened (or already open: a record of
    /// a segment the lane holds open); the instances no accepted context
    /// fits fail on the way (said so). `None` when none is left.
    pub(super) fn next_transfer(
        op: &mut RetrieveOp,
        conn: &mut Connection,
        core: &mut Core,
        (lane, serial, fetched): (&mut Lane, u64, &Arc<FetchedQueue>),
    ) -> Option<Transfer> {
        let get = op.kind == RetrieveKind::Get;
        let pdu_length = pdu_length_for(conn.pdu_length_max_peer().unwrap_or(0), CHUNK_SIZE);
        let splice =
            op.send == RetrieveSend::Splice && conn.tls.is_none() && core.splice_supported();
        while let Some(dataset) = op.retrieve.next() {
            let chosen = conn.negotiated().and_then(|negotiated| {
                choose_context(&negotiated.presentation_contexts, &dataset, get)
            });
            let Some((context_id, mode)) = chosen else {
                let sop = &dataset.triplet.sop_instance_uid;
                let reason = format!(
                    "the destination accepts no transfer syntax Sluice can send for SOP class {} stored as {}",
                    dataset.sop_class_uid, dataset.transfer_syntax_uid
                );
                tracing::warn!(peer = ?conn.peer, called_ae = %conn.called_ae_title, sop_instance_uid = %sop, "{reason}");
                op.retrieve.done(sop, SubOutcome::Failed(reason));
                continue;
            };
            let message_id = conn.message_id();
            let command = Command::CStoreRq(CStoreRq {
                message_id,
                priority: Priority::Medium,
                affected_sop_class_uid: dataset.sop_class_uid.clone(),
                affected_sop_instance_uid: dataset.triplet.sop_instance_uid.clone(),
                move_originator: match op.kind {
                    RetrieveKind::Move { .. } => Some(MoveOriginator {
                        ae_title: op.originator_ae_title.clone(),
                        message_id: op.message_id,
                    }),
                    RetrieveKind::Get => None,
                },
            });
            let io = Lane::io_value(serial, lane.take_id());
            let mut transfer = Transfer::new(
                dataset,
                (context_id, mode),
                (command, message_id),
                (pdu_length, io),
            );
            transfer.send_by_splice(splice);
            if let Some(file) = transfer.segment_path().and_then(|path| lane.segment(path)) {
                // Its segment is open on the lane: nothing to open.
                transfer.opened(file, true);
                return Some(transfer);
            }
            match transfer.start(core, fetched) {
                Ok(()) => return Some(transfer),
                Err(reason) => op.retrieve.done(
                    &transfer.dataset.triplet.sop_instance_uid,
                    SubOutcome::Failed(reason),
                ),
            }
        }
        None
    }

    /// Starts a lane's next sub-operation (the first of those read ahead,
    /// if any) when none is being sent and its window has room, and reads
    /// the following ones ahead; or releases a C-MOVE lane with nothing
    /// left to send and nothing outstanding.
    pub(super) fn lane_next(&mut self, core: &mut Core, conns: &mut Connections, serial: u64) {
        let Some(lane) = self.lanes.get_mut(&serial) else {
            return;
        };
        if lane.transfer.is_some() || lane.outstanding.len() >= lane.window {
            // Sending one, or the window is full: an answer or the end of
            // that one's data set comes back here.
            return;
        }
        let origin = lane.origin;
        let Some(conn) = conns.get_mut(serial) else {
            return;
        };
        let Some(Operation::Retrieve(op)) = self.operations.get_mut(&origin) else {
            // Its retrieve ended: nothing more to send here.
            if conn.is_outbound() && !lane.released {
                lane.released = true;
                conn.release(core);
            }
            return;
        };
        lane.transfer = match lane.ahead.pop_front() {
            Some(next) => Some(next),
            None => Self::next_transfer(op, conn, core, (&mut *lane, serial, &self.fetched)),
        };
        let ready = lane
            .transfer
            .as_ref()
            .is_some_and(|transfer| transfer.phase == Phase::Ready);
        if lane.transfer.is_none()
            && lane.outstanding.is_empty()
            && conn.is_outbound()
            && !op.retrieve.has_queued()
            && !lane.released
        {
            lane.released = true;
            conn.release(core);
        }
        if ready {
            self.begin(core, conns, serial);
        }
        self.read_ahead(core, conns, serial);
        self.maybe_finish(core, conns, origin);
    }

    /// The lane's transfer has every byte queued: it joins the sub-operations
    /// awaiting their answer, a pending C-GET-RSP held back while its data
    /// set went out goes now, and the next instance starts at once when the
    /// window has room (with an Asynchronous Operations Window), else the
    /// lane reads the next ones ahead while the answers are awaited.
    pub(super) fn lane_sent(&mut self, core: &mut Core, conns: &mut Connections, serial: u64) {
        let Some(lane) = self.lanes.get_mut(&serial) else {
            return;
        };
        let Some(transfer) = lane.transfer.take() else {
            return;
        };
        debug_assert_eq!(transfer.phase, Phase::AwaitingResponse);
        lane.outstanding.push(transfer);
        lane.outstanding_peak = lane.outstanding_peak.max(lane.outstanding.len());
        let room = lane.outstanding.len() < lane.window;
        let origin = lane.origin;
        let deferred = matches!(
            self.operations.get(&origin),
            Some(Operation::Retrieve(op)) if op.pending_deferred
        );
        if deferred {
            self.send_pending(core, conns, origin);
        }
        if room {
            self.lane_next(core, conns, serial);
        } else {
            self.read_ahead(core, conns, serial);
        }
        if deferred {
            // It went with the next C-STORE-RQ, or goes now.
            if let Some(conn) = conns.get_mut(origin) {
                conn.flush_sends(core);
            }
        }
    }

    /// Reads the lane's next instances ahead, up to `Lane::ahead_max`: each
    /// one's file opened (or its segment's, already open on the lane,
    /// borrowed) and, while the core's pool has chunks to spare, its first
    /// chunk read (`Transfer::prime`), so that when its turn comes its
    /// command and first PDUs leave in one send with no open or read
    /// between. They are sent in the order they were taken.
    pub(super) fn read_ahead(&mut self, core: &mut Core, conns: &mut Connections, serial: u64) {
        let Some(lane) = self.lanes.get_mut(&serial) else {
            return;
        };
        if lane.released || !lane.accepted {
            return;
        }
        let (Some(conn), Some(Operation::Retrieve(op))) =
            (conns.get_mut(serial), self.operations.get_mut(&lane.origin))
        else {
            return;
        };
        while lane.ahead.len() < lane.ahead_max() {
            let Some(next) =
                Self::next_transfer(op, conn, core, (&mut *lane, serial, &self.fetched))
            else {
                break;
            };
            lane.ahead.push_back(next);
        }
        let mut sending = Sending {
            pool: &self.chunks,
            share: &mut self.share,
        };
        for next in &mut lane.ahead {
            if sending.pool.lent() + AHEAD_CHUNKS_LEFT >= self.chunk_count {
                break;
            }
            next.prime(core, &mut sending);
        }
    }

    /// The lane's current transfer's file is open: its command goes out.
    pub(super) fn begin(&mut self, core: &mut Core, conns: &mut Connections, serial: u64) {
        let (Some(transfer), Some(conn)) = (
            self.lanes
                .get_mut(&serial)
                .and_then(|lane| lane.transfer.as_mut()),
            conns.get_mut(serial),
        ) else {
            return;
        };
        let step = transfer.begin(core, conn);
        self.pump_or_fail(core, conns, serial, step);
    }

    /// A transfer's file opened (`value`: its io tag's, its lane and
    /// identity): the lane's current transfer begins; one read ahead reads
    /// its first chunk. A record's segment stays open on the lane for its
    /// next records (`Lane::hold_segment`). One given up meanwhile has its
    /// file closed.
    pub(crate) fn opened(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        value: u64,
        result: Result<FileHandle, OpenError>,
    ) {
        let (serial, id) = split_io(value);
        let close = |core: &mut Core, result: Result<FileHandle, OpenError>| {
            if let Ok(file) = result {
                let _ = core.close_file(file, tag(TagKind::Ignored, 0));
            }
        };
        let Some(lane) = self.lanes.get_mut(&serial) else {
            // The lane ended while the open was in flight.
            return close(core, result);
        };
        let opening = |transfer: &Transfer| transfer.id() == id && transfer.phase == Phase::Opening;
        let current = lane.transfer.as_ref().is_some_and(opening);
        if !current && !lane.ahead.iter().any(opening) {
            // Its transfer was given up while the open was in flight.
            return close(core, result);
        }
        match result {
            Ok(file) => {
                let path = lane_transfer(lane, current, id)
                    .and_then(|transfer| transfer.segment_path())
                    .map(std::path::Path::to_owned);
                let borrowed = path.is_some_and(|path| lane.hold_segment(core, &path, file));
                if let Some(transfer) = lane_transfer(lane, current, id) {
                    transfer.opened(file, borrowed);
                }
                if current {
                    self.begin(core, conns, serial);
                } else {
                    self.prime_ahead(core, serial, id);
                }
            }
            Err(error) => {
                let Some(transfer) = lane_transfer(lane, current, id) else {
                    return;
                };
                if transfer.reopen(core, &error, (&self.shared.store, &self.fetched)) {
                    return;
                }
                let reason = error.to_string();
                if current {
                    self.transfer_failed(core, conns, serial, &reason);
                } else {
                    // Fails now; the lane goes on with the others.
                    self.ahead_failed(core, conns, (serial, id), reason);
                }
            }
        }
    }

    /// Transfer `id`, read ahead on lane `serial` and now open, reads its
    /// first chunk (`Transfer::prime`) if the pool has chunks to spare.
    fn prime_ahead(&mut self, core: &mut Core, serial: u64, id: u32) {
        if self.chunks.lent() + AHEAD_CHUNKS_LEFT >= self.chunk_count {
            return;
        }
        let Some(next) = self
            .lanes
            .get_mut(&serial)
            .and_then(|lane| lane.ahead.iter_mut().find(|transfer| transfer.id() == id))
        else {
            return;
        };
        let mut sending = Sending {
            pool: &self.chunks,
            share: &mut self.share,
        };
        next.prime(core, &mut sending);
    }

    /// Transfer `id` read ahead on lane `serial` cannot be sent (its open
    /// or first read failed): its instance fails (its command never went
    /// out), the lane goes on with the others.
    fn ahead_failed(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        (serial, id): (u64, u32),
        reason: String,
    ) {
        let Some(lane) = self.lanes.get_mut(&serial) else {
            return;
        };
        let Some(position) = lane.ahead.iter().position(|transfer| transfer.id() == id) else {
            return;
        };
        let Some(mut next) = lane.ahead.remove(position) else {
            return;
        };
        next.close(core);
        let origin = lane.origin;
        let sop = &next.dataset.triplet.sop_instance_uid;
        tracing::warn!(sop_instance_uid = %sop, reason = %reason, "a retrieve sub-operation failed");
        if let Some(Operation::Retrieve(op)) = self.operations.get_mut(&origin) {
            op.retrieve.done(sop, SubOutcome::Failed(reason));
        }
        self.maybe_finish(core, conns, origin);
    }

    /// The lane's transfers read ahead, not started, go back to the front
    /// of their retrieve's queue, in order (their files closed): the lane
    /// will not carry them. An open or read of theirs still in flight finds
    /// no transfer when it completes (`opened`, `read`: the file is closed,
    /// the chunk goes back to the pool).
    pub(super) fn give_back_ahead(
        lane: &mut Lane,
        operations: &mut HashMap<u64, Operation>,
        core: &mut Core,
    ) {
        let mut op = match operations.get_mut(&lane.origin) {
            Some(Operation::Retrieve(op)) => Some(op),
            _ => None,
        };
        while let Some(mut next) = lane.ahead.pop_back() {
            debug_assert!(
                !next.command_sent(),
                "a transfer read ahead sent its command"
            );
            next.close(core);
            if let Some(op) = op.as_deref_mut() {
                op.retrieve.give_back(next.dataset);
            }
        }
    }

    /// A read completed (`value`: its io tag's, its lane and transfer): the
    /// lane's current transfer's, or the first chunk of one read ahead.
    /// One whose transfer was given up meanwhile drops its chunk (back to
    /// the pool).
    pub(crate) fn read(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        value: u64,
        chunk: Chunk,
        result: Result<u64, IoError>,
    ) {
        let (serial, id) = split_io(value);
        let (Some(lane), Some(conn)) = (self.lanes.get_mut(&serial), conns.get_mut(serial)) else {
            // Its lane ended while the read was in flight.
            return;
        };
        let reading = |transfer: &&mut Transfer| transfer.id() == id && transfer.reading();
        if let Some(transfer) = lane.transfer.as_mut().filter(reading) {
            let step = transfer.read_done(core, conn, chunk, result);
            return self.pump_or_fail(core, conns, serial, step);
        }
        let Some(next) = lane.ahead.iter_mut().find(reading) else {
            // Its transfer ended while the read was in flight.
            return;
        };
        // A first chunk read ahead waits in its transfer for its turn.
        if let Err(reason) = next.read_done(core, conn, chunk, result) {
            self.ahead_failed(core, conns, (serial, id), reason);
        }
    }

    /// Moves a lane's transfer on as far as it goes now.
    pub(super) fn pump_lane(&mut self, core: &mut Core, conns: &mut Connections, serial: u64) {
        let Some(lane) = self.lanes.get_mut(&serial) else {
            return;
        };
        let (Some(transfer), Some(conn)) = (lane.transfer.as_mut(), conns.get_mut(serial)) else {
            return;
        };
        if !conn.may_send_pdata() {
            return;
        }
        let mut sending = Sending {
            pool: &self.chunks,
            share: &mut self.share,
        };
        match transfer.pump(core, conn, &mut sending) {
            Pump::Reading => {}
            Pump::Sent => {
                if let Some(by) = transfer.sent_by.take() {
                    if let Some(metrics) = self.shared.metrics.core(core.index()) {
                        metrics.retrieve_data_set_sent(by == SentBy::Splice);
                    }
                }
                self.lane_sent(core, conns, serial);
            }
            wait @ (Pump::WaitSends | Pump::WaitChunk | Pump::WaitShare) => {
                if !lane.waiting {
                    lane.waiting = true;
                    self.waiting.push_back(serial);
                }
                if wait == Pump::WaitShare {
                    if let Some(metrics) = self.shared.metrics.core(core.index()) {
                        metrics.retrieve_chunk_deferred();
                    }
                    if !self.share.timer_armed {
                        let after = self.share.next_epoch_in(Instant::now());
                        match core.timer(after, tag(TagKind::RetrieveShare, 0)) {
                            Ok(_) => self.share.timer_armed = true,
                            // The lane waits for a send to complete instead.
                            Err(error) => {
                                tracing::warn!(%error, "cannot arm the retrieve share's timer");
                            }
                        }
                    }
                }
            }
            Pump::Failed(reason) => self.transfer_failed(core, conns, serial, &reason),
        }
    }

    /// After a step of the lane's current transfer (its command queued, a
    /// chunk read): the lane pumps on, or the transfer failed.
    fn pump_or_fail(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        serial: u64,
        step: Result<(), String>,
    ) {
        match step {
            Ok(()) => self.pump_lane(core, conns, serial),
            Err(reason) => self.transfer_failed(core, conns, serial, &reason),
        }
    }

    /// A transfer cannot go on. Before its command went out, only that
    /// instance fails; after, the association cannot carry another message
    /// (a data set cannot be cut short), so it is aborted.
    pub(super) fn transfer_failed(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        serial: u64,
        reason: &str,
    ) {
        let Some(lane) = self.lanes.get_mut(&serial) else {
            return;
        };
        let Some(mut transfer) = lane.transfer.take() else {
            return;
        };
        transfer.close(core);
        let origin = lane.origin;
        let sop = transfer.dataset.triplet.sop_instance_uid.clone();
        tracing::warn!(sop_instance_uid = %sop, reason, "a retrieve sub-operation failed");
        if let Some(Operation::Retrieve(op)) = self.operations.get_mut(&origin) {
            op.retrieve
                .done(&sop, SubOutcome::Failed(reason.to_owned()));
        }
        if transfer.command_sent() {
            Self::give_back_ahead(lane, &mut self.operations, core);
            if let Some(conn) = conns.get_mut(serial) {
                conn.abort(
                    core,
                    &format!("a C-STORE sub-operation cannot be completed: {reason}"),
                );
            }
            self.maybe_finish(core, conns, origin);
        } else {
            self.send_pending(core, conns, origin);
            self.lane_next(core, conns, serial);
            if let Some(conn) = conns.get_mut(origin) {
                conn.flush_sends(core);
            }
        }
    }
}

/// The lane's `current` transfer, or the one read ahead whose identity is
/// `id`.
fn lane_transfer(lane: &mut Lane, current: bool, id: u32) -> Option<&mut Transfer> {
    if current {
        lane.transfer.as_mut()
    } else {
        lane.ahead.iter_mut().find(|transfer| transfer.id() == id)
    }
}
