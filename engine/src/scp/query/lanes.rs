//! The transfers on a retrieve's lanes: which instance a lane carries
//! next, its file opened and its first chunk read ahead while the previous
//! C-STORE-RSP is awaited, its reads and sends pumped, and a failed
//! transfer's instance given its outcome. The state is each [`Lane`]'s
//! `transfer` and `next`; the retrieve's bookkeeping (answers, counts, the
//! end of an operation) stays in the parent module.

use super::*;

impl QueryRetrieve {
    /// The next instance of the lane's retrieve that the lane can carry, as
    /// a transfer whose file is being opened; the instances no accepted
    /// context fits fail on the way (said so). `None` when none is left.
    pub(super) fn next_transfer(
        op: &mut RetrieveOp,
        conn: &mut Connection,
        core: &mut Core,
        (lane, fetched): (u64, &Arc<FetchedQueue>),
    ) -> Option<Transfer> {
        let get = op.kind == RetrieveKind::Get;
        let contexts = conn
            .negotiated()
            .map(|negotiated| negotiated.presentation_contexts.clone())
            .unwrap_or_default();
        let pdu_length = pdu_length_for(conn.pdu_length_max_peer().unwrap_or(0), CHUNK_SIZE);
        while let Some(dataset) = op.retrieve.next() {
            let sop = dataset.triplet.sop_instance_uid.clone();
            let Some((context_id, mode)) = choose_context(&contexts, &dataset, get) else {
                let reason = format!(
                    "the destination accepts no transfer syntax Sluice can send for SOP class {} stored as {}",
                    dataset.sop_class_uid, dataset.transfer_syntax_uid
                );
                tracing::warn!(peer = ?conn.peer, called_ae = %conn.called_ae_title, sop_instance_uid = %sop, "{reason}");
                op.retrieve.done(&sop, SubOutcome::Failed(reason));
                continue;
            };
            let message_id = conn.message_id();
            let command = Command::CStoreRq(CStoreRq {
                message_id,
                priority: Priority::Medium,
                affected_sop_class_uid: dataset.sop_class_uid.clone(),
                affected_sop_instance_uid: sop.clone(),
                move_originator: match op.kind {
                    RetrieveKind::Move { .. } => Some(MoveOriginator {
                        ae_title: op.originator_ae_title.clone(),
                        message_id: op.message_id,
                    }),
                    RetrieveKind::Get => None,
                },
            });
            let mut transfer = Transfer::new(
                dataset,
                (context_id, mode),
                (command, message_id),
                pdu_length,
            );
            match transfer.start(core, lane, fetched) {
                Ok(()) => return Some(transfer),
                Err(reason) => op.retrieve.done(&sop, SubOutcome::Failed(reason)),
            }
        }
        None
    }

    /// Starts a lane's next sub-operation (the one already opened while the
    /// window was full, if any) when none is being sent and its window has
    /// room, or releases a C-MOVE lane with nothing left to send and
    /// nothing outstanding.
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
        lane.transfer = if lane.next_abandoned {
            // Cancelled or failing: no other open before the abandoned one
            // completes.
            None
        } else {
            match lane.next.take() {
                Some(next) => Some(next),
                None => Self::next_transfer(op, conn, core, (serial, &self.fetched)),
            }
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
        self.maybe_finish(core, conns, origin);
    }

    /// The lane's transfer has every byte queued: it joins the sub-operations
    /// awaiting their answer, a pending C-GET-RSP held back while its data
    /// set went out goes now, and the next instance starts at once when the
    /// window has room (with an Asynchronous Operations Window), else is
    /// opened ahead (one at a time: its open is off the critical path).
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
            self.prefetch(core, conns, serial);
        }
        if deferred {
            // It went with the next C-STORE-RQ, or goes now.
            if let Some(conn) = conns.get_mut(origin) {
                conn.flush_sends(core);
            }
        }
    }

    /// Opens the lane's next instance while the window is full (one at a
    /// time: while the current one's response is awaited), so its open is
    /// off the critical path.
    pub(super) fn prefetch(&mut self, core: &mut Core, conns: &mut Connections, serial: u64) {
        let Some(lane) = self.lanes.get_mut(&serial) else {
            return;
        };
        if lane.next.is_some() || lane.released {
            return;
        }
        let (Some(conn), Some(Operation::Retrieve(op))) =
            (conns.get_mut(serial), self.operations.get_mut(&lane.origin))
        else {
            return;
        };
        lane.next = Self::next_transfer(op, conn, core, (serial, &self.fetched));
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

    /// A lane's file opened: the current transfer's (it begins) or the
    /// prefetched next one's (it waits).
    pub(crate) fn opened(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        serial: u64,
        result: Result<FileHandle, OpenError>,
    ) {
        let Some(lane) = self.lanes.get_mut(&serial) else {
            // The lane ended while the open was in flight.
            if let Ok(file) = result {
                let _ = core.close_file(file, tag(TagKind::Ignored, 0));
            }
            return;
        };
        let opening = |transfer: &Option<Transfer>| {
            transfer
                .as_ref()
                .is_some_and(|transfer| transfer.phase == Phase::Opening)
        };
        let is_next = opening(&lane.next);
        if is_next && lane.next_abandoned {
            if let Ok(file) = result {
                let _ = core.close_file(file, tag(TagKind::Ignored, 0));
            }
            let origin = lane.origin;
            lane.next_abandoned = false;
            if let Some(next) = lane.next.take() {
                if let Some(Operation::Retrieve(op)) = self.operations.get_mut(&origin) {
                    op.retrieve.give_back(next.dataset);
                }
            }
            self.maybe_finish(core, conns, origin);
            return;
        }
        let target = if is_next {
            lane.next.as_mut()
        } else if opening(&lane.transfer) {
            lane.transfer.as_mut()
        } else {
            None
        };
        let Some(transfer) = target else {
            // Its transfer was given up while the open was in flight.
            if let Ok(file) = result {
                let _ = core.close_file(file, tag(TagKind::Ignored, 0));
            }
            return;
        };
        match result {
            Ok(file) => {
                transfer.opened(file);
                if is_next {
                    self.prime_next(core, serial);
                } else {
                    self.begin(core, conns, serial);
                }
            }
            Err(error) => {
                if transfer.reopen(core, serial, &error, (&self.shared.store, &self.fetched)) {
                    return;
                }
                let reason = error.to_string();
                if is_next {
                    // Fails now; the lane goes on with the current one.
                    if let Some(next) = lane.next.take() {
                        let origin = lane.origin;
                        if let Some(Operation::Retrieve(op)) = self.operations.get_mut(&origin) {
                            op.retrieve.done(
                                &next.dataset.triplet.sop_instance_uid,
                                SubOutcome::Failed(reason),
                            );
                        }
                    }
                } else {
                    self.transfer_failed(core, conns, serial, &reason);
                }
            }
        }
    }

    /// The lane's next instance, opened while the current one's response is
    /// awaited, reads its first chunk ahead (`Transfer::prime`).
    pub(super) fn prime_next(&mut self, core: &mut Core, serial: u64) {
        let Some(next) = self
            .lanes
            .get_mut(&serial)
            .and_then(|lane| lane.next.as_mut())
        else {
            return;
        };
        let mut sending = Sending {
            pool: &self.chunks,
            share: &mut self.share,
        };
        next.prime(core, &mut sending, serial);
    }

    /// The lane's prefetched next instance, not started, goes back to its
    /// retrieve's queue (its file closed): the lane cannot carry it. One
    /// whose open or first read is in flight on a lane that stays
    /// (`removed` false) is only marked abandoned: [`QueryRetrieve::opened`]
    /// or [`QueryRetrieve::read`] gives it back, so that the completion is
    /// not taken for a later transfer's.
    pub(super) fn give_back_next(
        lane: &mut Lane,
        operations: &mut HashMap<u64, Operation>,
        core: &mut Core,
        removed: bool,
    ) {
        let in_flight = lane
            .next
            .as_ref()
            .is_some_and(|next| next.phase == Phase::Opening || next.reading());
        if in_flight && !removed {
            lane.next_abandoned = true;
            return;
        }
        lane.next_abandoned = false;
        let Some(mut next) = lane.next.take() else {
            return;
        };
        debug_assert!(
            !next.command_sent(),
            "a prefetched transfer sent its command"
        );
        next.close(core);
        if let Some(Operation::Retrieve(op)) = operations.get_mut(&lane.origin) {
            op.retrieve.give_back(next.dataset);
        }
    }

    /// A lane's read completed: its current transfer's, or the first chunk
    /// its next one read ahead.
    pub(crate) fn read(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        serial: u64,
        chunk: Chunk,
        result: Result<u64, IoError>,
    ) {
        let Some(lane) = self.lanes.get_mut(&serial) else {
            // Its lane ended while the read was in flight: the chunk goes
            // back to the pool.
            return;
        };
        let current = lane
            .transfer
            .as_ref()
            .is_some_and(|transfer| transfer.reading());
        if !current && lane.next.as_ref().is_some_and(|next| next.reading()) {
            return self.next_read(core, conns, serial, chunk, result);
        }
        let transfer = lane.transfer.as_mut().filter(|transfer| transfer.reading());
        let (Some(transfer), Some(conn)) = (transfer, conns.get_mut(serial)) else {
            // Its transfer ended while the read was in flight: the chunk
            // goes back to the pool.
            return;
        };
        let step = transfer.read_done(core, conn, chunk, result);
        self.pump_or_fail(core, conns, serial, step);
    }

    /// The first chunk a lane's next transfer read ahead: it waits for the
    /// lane to be free; a failed read fails that instance (its command not
    /// sent); an abandoned next goes back to its retrieve's queue.
    pub(super) fn next_read(
        &mut self,
        core: &mut Core,
        conns: &mut Connections,
        serial: u64,
        chunk: Chunk,
        result: Result<u64, IoError>,
    ) {
        let (Some(lane), Some(conn)) = (self.lanes.get_mut(&serial), conns.get_mut(serial)) else {
            return;
        };
        let origin = lane.origin;
        let failed = if lane.next_abandoned {
            None
        } else {
            let Some(next) = lane.next.as_mut() else {
                return;
            };
            match next.read_done(core, conn, chunk, result) {
                Ok(()) => return,
                Err(reason) => Some(reason),
            }
        };
        lane.next_abandoned = false;
        let Some(mut next) = lane.next.take() else {
            return;
        };
        next.close(core);
        if let Some(Operation::Retrieve(op)) = self.operations.get_mut(&origin) {
            match failed {
                Some(reason) => {
                    tracing::warn!(sop_instance_uid = %next.dataset.triplet.sop_instance_uid, reason = %reason, "a retrieve sub-operation failed");
                    op.retrieve.done(
                        &next.dataset.triplet.sop_instance_uid,
                        SubOutcome::Failed(reason),
                    );
                }
                None => op.retrieve.give_back(next.dataset),
            }
        }
        self.maybe_finish(core, conns, origin);
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
        match transfer.pump(core, conn, &mut sending, serial) {
            Pump::Reading => {}
            Pump::Sent => self.lane_sent(core, conns, serial),
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
            Self::give_back_next(lane, &mut self.operations, core, false);
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
