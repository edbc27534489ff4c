//! The store lane: C-STOREs of prepared data sets sent as their cached
//! framed chunks with the per-send values patched in ([`StoreInFlight`]),
//! and Storage Commitment after each study ([`Commit`]), its report on the
//! same association or on our listener ([`super::reports`]).

use std::io::Write;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use sluice_io::Core;
use sluice_net::assoc::NegotiatedAssociation;
use sluice_net::dimse::commitment::{
    CommitmentRequest, SopReference, ACTION_TYPE_REQUEST_STORAGE_COMMITMENT,
};
use sluice_net::dimse::dataset::SmallDatasetEncoding;
use sluice_net::dimse::{
    CStoreRq, Command, NActionRq, NActionRsp, NEventReportRq, Priority, Status, StatusCategory,
};
use sluice_net::uid;

use super::reports::{record_report, send_report_response};
use super::worker::{commitment_context, send_refusal, Next, WorkerPhase};
use super::{LoadCore, PENDING_COMMITS_MAX, TAG_DATA};
use crate::history::{HistoryLine, Outcome};
use crate::stats::Measurements;
use crate::study::StudyValues;
use crate::workload::{Framed, SlotKind};

/// Sends of one data set queued on a connection at once: enough to keep the
/// socket busy, few enough to bound memory per association.
const SEND_WINDOW: usize = 8;

/// The C-STORE a worker has in flight: what is sent, how far, and when.
#[derive(Debug)]
pub(super) struct StoreInFlight {
    framed: Rc<Framed>,
    instance_serial: u64,
    study_serial: u64,
    series_serial: u64,
    study_values: StudyValues,
    sop_instance_uid: String,
    message_id: u16,
    next_chunk: usize,
    sends_in_flight: usize,
    all_queued: bool,
    pub last_byte_at: Option<Instant>,
    arrival: Option<Instant>,
    pub started_at: Instant,
    hasher: Option<Sha256>,
}

/// A commitment request awaiting its response and report.
#[derive(Debug)]
pub(super) struct Commit {
    transaction_uid: String,
    pub sent_at: Instant,
    message_id: u16,
    rsp_received: bool,
    report_received: bool,
}

impl LoadCore {
    /// The store lane's accepted contexts; `Err` when none of the
    /// workload's can be sent.
    pub(super) fn store_contexts(
        &mut self,
        w: usize,
        negotiated: &NegotiatedAssociation,
    ) -> Result<(), &'static str> {
        let contexts: Vec<Option<u8>> = self
            .plan()
            .workload
            .iter()
            .map(|prepared| {
                negotiated
                    .presentation_contexts
                    .iter()
                    .find(|context| {
                        context.abstract_syntax == prepared.sop_class_uid
                            && context.transfer_syntax == prepared.transfer_syntax_uid
                    })
                    .map(|context| context.id)
            })
            .collect();
        let worker = &mut self.workers[w];
        worker.commit_context = commitment_context(negotiated);
        let usable = contexts.iter().any(Option::is_some);
        worker.contexts = contexts;
        if usable {
            Ok(())
        } else {
            Err("no storage presentation context accepted")
        }
    }

    /// What was in flight on the store lane is lost.
    pub(super) fn lose_store(&mut self, w: usize) {
        let worker = &mut self.workers[w];
        if let Some(store) = worker.store.take() {
            self.stats.instances_unanswered += 1;
            self.shared.live_failures.fetch_add(1, Ordering::Relaxed);
            if let Some(history) = &mut self.history {
                let line = HistoryLine::unanswered(store.sop_instance_uid);
                let _ = writeln!(history, "{}", line.to_json());
            }
        }
        if let Some(commit) = worker.commit.take() {
            // With a listener the report may still come there; otherwise
            // it is lost with the association.
            if self.shared.plan.commit_listen.is_none() {
                if let Ok(mut pending) = self.shared.pending_commits.lock() {
                    pending.remove(&commit.transaction_uid);
                }
                Measurements::bump(
                    &mut self.stats.commit_errors,
                    "association ended before the report",
                );
            }
        }
    }

    pub(super) fn next_store(&mut self, core: &mut Core, w: usize) {
        let commitment = self.plan().commitment;
        if commitment && self.workers[w].commit_due {
            self.start_commit(core, w);
            return;
        }
        let per_association = self.plan().instances_per_association;
        match self.next_for(w, per_association) {
            Next::Go(arrival) => self.start_store(core, w, arrival),
            Next::Wait => self.wait_for_arrival(w),
            Next::Stop => {
                // A study cut short by the end of the run or of the
                // association is committed before the association is released.
                if commitment && !self.workers[w].study_refs.is_empty() {
                    self.start_commit(core, w);
                } else {
                    self.release(core, w);
                }
            }
        }
    }

    fn pick(&mut self) -> usize {
        let plan = &self.shared.plan;
        if plan.weights.is_empty() {
            return self.shared.cursor.fetch_add(1, Ordering::Relaxed) % plan.workload.len().max(1);
        }
        let total: u64 = plan.weights.iter().map(|&weight| u64::from(weight)).sum();
        let mut ticket = self.rng.u64(0..total.max(1));
        for (index, &weight) in plan.weights.iter().enumerate() {
            if ticket < u64::from(weight) {
                return index;
            }
            ticket -= u64::from(weight);
        }
        0
    }

    fn start_store(&mut self, core: &mut Core, w: usize, arrival: Option<Instant>) {
        let pick = self.pick();
        let Some(context) = self.workers[w].contexts.get(pick).copied().flatten() else {
            self.stats.instances_failed += 1;
            let why = format!(
                "presentation context not accepted for {}",
                self.plan().workload[pick].sop_class_uid
            );
            Measurements::bump(&mut self.stats.store_lane.aborts, why);
            self.release(core, w);
            return;
        };
        let pdu_max = self.workers[w].pdu_length_max_peer();
        let key = (pick, context, pdu_max);
        let framed = match self.framed.get(&key) {
            Some(framed) => Rc::clone(framed),
            None => match Framed::new(Arc::clone(&self.plan().workload[pick]), context, pdu_max) {
                Ok(framed) => {
                    let framed = Rc::new(framed);
                    self.framed.insert(key, Rc::clone(&framed));
                    framed
                }
                Err(_) => {
                    self.abort(core, w, "peer maximum PDU length too small");
                    return;
                }
            },
        };
        let plan = &self.shared.plan;
        let study_size = plan.study_size.max(1);
        let series_size = (study_size / plan.series_per_study.max(1)).max(1);
        let (run_id, studies_per_patient) = (plan.run_id, plan.studies_per_patient);
        let uids = &self.shared.uids;
        let worker = &mut self.workers[w];
        if worker.in_study == 0 || worker.study_serial == 0 {
            worker.study_serial = uids.next_serial();
            worker.series_serial = uids.next_serial();
            let study = self.shared.studies.fetch_add(1, Ordering::Relaxed);
            worker.study_values = StudyValues::new(run_id, study, studies_per_patient);
        } else if worker.in_study % series_size == 0 {
            worker.series_serial = uids.next_serial();
        }
        let instance_serial = uids.next_serial();
        let prepared = &framed.prepared;
        let sop_instance_uid = match prepared
            .slots
            .iter()
            .find(|slot| slot.kind == SlotKind::Instance)
        {
            Some(slot) => uids.to_string(instance_serial, slot.width),
            None => prepared.fixed_sop_instance_uid.clone(),
        };
        let message_id = worker.endpoint.next_message_id();
        let command = Command::CStoreRq(CStoreRq {
            message_id,
            priority: Priority::Medium,
            affected_sop_class_uid: prepared.sop_class_uid.clone(),
            affected_sop_instance_uid: sop_instance_uid.clone(),
            move_originator: None,
        });
        if worker.conn.is_none() {
            return;
        }
        // The data set goes out as the cached framed chunks (`pump`), so
        // the fragmenter the endpoint returns is not needed.
        let queued =
            worker
                .endpoint
                .send_command_for_data_set(context, &command, framed.dataset_length);
        if let Err(error) = queued {
            self.abort(core, w, send_refusal(&error, "cannot encode C-STORE-RQ"));
            return;
        }
        let worker = &mut self.workers[w];
        worker.phase = WorkerPhase::Storing;
        worker.on_association += 1;
        worker.in_study += 1;
        worker.store = Some(StoreInFlight {
            study_serial: worker.study_serial,
            series_serial: worker.series_serial,
            study_values: worker.study_values,
            framed,
            instance_serial,
            sop_instance_uid,
            message_id,
            next_chunk: 0,
            sends_in_flight: 0,
            all_queued: false,
            last_byte_at: None,
            arrival,
            started_at: Instant::now(),
            hasher: self.history.is_some().then(Sha256::new),
        });
        if self.transmit(core, w).is_err() {
            self.abort(core, w, "send refused by the runtime");
            return;
        }
        self.pump(core, w);
    }

    /// Queues data-set sends up to the window.
    fn pump(&mut self, core: &mut Core, w: usize) {
        let uids = &self.shared.uids;
        let worker = &mut self.workers[w];
        let (Some(conn), Some(store)) = (worker.conn, worker.store.as_mut()) else {
            return;
        };
        let mut failed = false;
        while store.sends_in_flight < SEND_WINDOW && store.next_chunk < store.framed.chunks.len() {
            let Some(chunk) = store.framed.chunks.get(store.next_chunk) else {
                break;
            };
            let (study, series, instance, values) = (
                store.study_serial,
                store.series_serial,
                store.instance_serial,
                store.study_values,
            );
            let fill = |kind: SlotKind, slot: &mut [u8]| {
                let serial = match kind {
                    SlotKind::Study => study,
                    SlotKind::Series => series,
                    SlotKind::Instance => instance,
                    SlotKind::PatientId => {
                        values.write_patient_id(slot);
                        return;
                    }
                    SlotKind::PatientName => {
                        values.write_patient_name(slot);
                        return;
                    }
                    SlotKind::StudyDate => {
                        values.write_study_date(slot);
                        return;
                    }
                };
                uids.write(serial, slot);
            };
            let buf = chunk.to_io_buf(&fill);
            if let Some(hasher) = store.hasher.as_mut() {
                hasher.update(buf.as_slice().get(chunk.value_skip..).unwrap_or_default());
            }
            if let Some(headers) = chunk.headers {
                if core.send(conn, headers.to_vec(), TAG_DATA).is_err() {
                    failed = true;
                    break;
                }
                store.sends_in_flight += 1;
            }
            if core.send(conn, buf, TAG_DATA).is_err() {
                failed = true;
                break;
            }
            store.sends_in_flight += 1;
            store.next_chunk += 1;
        }
        if store.next_chunk >= store.framed.chunks.len() {
            store.all_queued = true;
        }
        if failed {
            self.abort(core, w, "send refused by the runtime");
        }
    }

    /// A send of worker `w` completed.
    pub(super) fn on_sent(&mut self, core: &mut Core, w: usize, tag: u64) {
        if tag != TAG_DATA {
            return;
        }
        let Some(store) = self.workers[w].store.as_mut() else {
            return;
        };
        store.sends_in_flight = store.sends_in_flight.saturating_sub(1);
        if store.all_queued {
            if store.sends_in_flight == 0 && store.last_byte_at.is_none() {
                store.last_byte_at = Some(Instant::now());
            }
        } else {
            self.pump(core, w);
        }
    }

    pub(super) fn on_store_response(
        &mut self,
        core: &mut Core,
        w: usize,
        message_id: u16,
        status: Status,
    ) {
        let Some(store) = self.workers[w]
            .store
            .take_if(|store| store.message_id == message_id)
        else {
            Measurements::bump(
                &mut self.stats.store_lane.aborts,
                "C-STORE-RSP for an unknown message",
            );
            return;
        };
        let now = Instant::now();
        let last_byte = store.last_byte_at.unwrap_or(now);
        Measurements::record(
            &mut self.stats.store_latency_us,
            now.saturating_duration_since(last_byte).as_micros() as u64,
        );
        if let Some(arrival) = store.arrival {
            Measurements::record(
                &mut self.stats.arrival_latency_us,
                now.saturating_duration_since(arrival).as_micros() as u64,
            );
        }
        *self.stats.statuses.entry(status.0).or_insert(0) += 1;
        let ok = matches!(
            status.category(),
            StatusCategory::Success | StatusCategory::Warning
        );
        if ok {
            let bytes = store.framed.dataset_length;
            self.stats.instances_ok += 1;
            self.stats.bytes_ok += bytes;
            let second = (self.since_start_us(now) / 1_000_000) as usize;
            self.stats.count_in_timeline(second, bytes);
            self.shared
                .live_instances_ok
                .fetch_add(1, Ordering::Relaxed);
            self.shared
                .live_bytes_ok
                .fetch_add(bytes, Ordering::Relaxed);
            self.workers[w].study_refs.push(SopReference {
                sop_class_uid: store.framed.prepared.sop_class_uid.clone(),
                sop_instance_uid: store.sop_instance_uid.clone(),
            });
        } else {
            self.stats.instances_failed += 1;
            self.shared.live_failures.fetch_add(1, Ordering::Relaxed);
        }
        if self.history.is_some() {
            let line = self.history_line(store, status, ok);
            if let Some(history) = &mut self.history {
                let _ = writeln!(history, "{}", line.to_json());
            }
        }
        let study_size = self.plan().study_size.max(1);
        let commitment = self.plan().commitment;
        let worker = &mut self.workers[w];
        if worker.in_study >= study_size {
            worker.in_study = 0;
            worker.study_serial = 0;
            worker.commit_due = commitment && !worker.study_refs.is_empty();
            if !worker.commit_due {
                worker.study_refs.clear();
            }
        }
        worker.phase = WorkerPhase::Ready;
        self.next_work(core, w);
    }

    /// The history line of an answered C-STORE: its UIDs and query keys as
    /// sent (slots' values, else the file's own).
    fn history_line(&self, store: StoreInFlight, status: Status, ok: bool) -> HistoryLine {
        let prepared = &store.framed.prepared;
        let has_slot = |kind: SlotKind| prepared.slots.iter().any(|slot| slot.kind == kind);
        let uid_of = |kind: SlotKind, serial: u64| {
            prepared
                .slots
                .iter()
                .find(|slot| slot.kind == kind)
                .map(|slot| self.shared.uids.to_string(serial, slot.width))
                .unwrap_or_default()
        };
        let value = |kind: SlotKind, slot_value: String, own: &str| {
            if has_slot(kind) {
                slot_value
            } else {
                own.to_string()
            }
        };
        let keys = &prepared.keys;
        let sha256 = store
            .hasher
            .map(|hasher| {
                hasher
                    .finalize()
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect::<String>()
            })
            .unwrap_or_default();
        HistoryLine {
            sop_class_uid: prepared.sop_class_uid.clone(),
            study_instance_uid: uid_of(SlotKind::Study, store.study_serial),
            series_instance_uid: uid_of(SlotKind::Series, store.series_serial),
            patient_id: value(
                SlotKind::PatientId,
                store.study_values.patient_id(),
                &keys.patient_id,
            ),
            patient_name: value(
                SlotKind::PatientName,
                store.study_values.patient_name(),
                &keys.patient_name,
            ),
            study_date: value(
                SlotKind::StudyDate,
                store.study_values.study_date(),
                &keys.study_date,
            ),
            modality: keys.modality.clone(),
            transfer_syntax_uid: prepared.transfer_syntax_uid.clone(),
            sha256,
            status: format!("{:04X}", status.0),
            outcome: if ok { Outcome::Stored } else { Outcome::Failed },
            sop_instance_uid: store.sop_instance_uid,
        }
    }

    // ----- storage commitment (report on the same association or the listener) -----

    fn start_commit(&mut self, core: &mut Core, w: usize) {
        let transaction_serial = self.shared.uids.next_serial();
        let transaction_uid = self.shared.uids.to_string(transaction_serial, 44);
        let worker = &mut self.workers[w];
        worker.commit_due = false;
        let references = std::mem::take(&mut worker.study_refs);
        let Some(context) = worker.commit_context else {
            Measurements::bump(
                &mut self.stats.commit_errors,
                "commitment context not accepted",
            );
            self.next_work(core, w);
            return;
        };
        let request = CommitmentRequest {
            transaction_uid,
            references,
        };
        let message_id = worker.endpoint.next_message_id();
        let command = Command::NActionRq(NActionRq {
            message_id,
            requested_sop_class_uid: uid::STORAGE_COMMITMENT_PUSH_MODEL.to_string(),
            requested_sop_instance_uid: uid::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE.to_string(),
            action_type_id: ACTION_TYPE_REQUEST_STORAGE_COMMITMENT,
            data_set: true,
        });
        let Ok(data_bytes) = request.encode(SmallDatasetEncoding::ImplicitVrLittleEndian) else {
            self.abort(core, w, "cannot encode N-ACTION-RQ");
            return;
        };
        if let Err(error) = worker
            .endpoint
            .send_message(context, &command, Some(&data_bytes))
        {
            self.abort(core, w, send_refusal(&error, "cannot encode N-ACTION-RQ"));
            return;
        }
        let worker = &mut self.workers[w];
        if worker.conn.is_none() {
            return;
        }
        worker.phase = WorkerPhase::Committing;
        let sent_at = Instant::now();
        if let Ok(mut pending) = self.shared.pending_commits.lock() {
            if pending.len() < PENDING_COMMITS_MAX {
                pending.insert(request.transaction_uid.clone(), sent_at);
            }
        }
        let worker = &mut self.workers[w];
        worker.commit = Some(Commit {
            transaction_uid: request.transaction_uid.clone(),
            sent_at,
            message_id,
            rsp_received: false,
            report_received: false,
        });
        self.stats.commit_requests += 1;
        if self.transmit(core, w).is_err() {
            self.abort(core, w, "send refused by the runtime");
        }
    }

    fn commit_progress(&mut self, core: &mut Core, w: usize) {
        // With a listener of our own the report may come on a new
        // association from the SCP (or still on this one): the worker goes
        // on once the N-ACTION is answered. Releasing here instead would race
        // with an SCP that is sending the report on this association.
        let listener = self.shared.plan.commit_listen.is_some();
        let worker = &mut self.workers[w];
        let finished = worker
            .commit
            .as_ref()
            .is_some_and(|commit| commit.rsp_received && (commit.report_received || listener));
        if finished && worker.phase == WorkerPhase::Committing {
            worker.commit = None;
            worker.phase = WorkerPhase::Ready;
            self.next_work(core, w);
        }
    }

    /// The report did not come in time: counted, the worker goes on.
    pub(super) fn commit_timed_out(&mut self, core: &mut Core, w: usize) {
        Measurements::bump(&mut self.stats.commit_errors, "report not received in time");
        let worker = &mut self.workers[w];
        if let Some(commit) = worker.commit.take() {
            if let Ok(mut pending) = self.shared.pending_commits.lock() {
                pending.remove(&commit.transaction_uid);
            }
        }
        worker.phase = WorkerPhase::Ready;
        self.next_work(core, w);
    }

    pub(super) fn on_commit_response(&mut self, core: &mut Core, w: usize, rsp: &NActionRsp) {
        let worker = &mut self.workers[w];
        let Some(commit) = worker
            .commit
            .as_mut()
            .filter(|commit| commit.message_id == rsp.message_id_being_responded_to)
        else {
            return;
        };
        commit.rsp_received = true;
        if !rsp.status.is_success() {
            if let Ok(mut pending) = self.shared.pending_commits.lock() {
                pending.remove(&commit.transaction_uid);
            }
            Measurements::bump(
                &mut self.stats.commit_errors,
                format!("N-ACTION-RSP status {:04X}", rsp.status.0),
            );
            // No report will come for a refused request.
            commit.report_received = true;
        }
        self.commit_progress(core, w);
    }

    pub(super) fn on_commit_report(
        &mut self,
        core: &mut Core,
        w: usize,
        context_id: u8,
        rq: &NEventReportRq,
        data: Option<&[u8]>,
    ) {
        // We proposed Implicit VR Little Endian only for commitment.
        let (status, transaction_uid) = record_report(
            &self.shared,
            &mut self.stats,
            rq,
            data,
            SmallDatasetEncoding::ImplicitVrLittleEndian,
            false,
        );
        let worker = &mut self.workers[w];
        if let Some(commit) = worker.commit.as_mut() {
            if transaction_uid.as_deref() == Some(commit.transaction_uid.as_str()) {
                commit.report_received = true;
            }
        }
        send_report_response(&mut worker.endpoint, rq, status, context_id);
        if self.transmit(core, w).is_err() {
            self.close(core, w);
        }
        self.commit_progress(core, w);
    }
}
