//! The ingest service of one core: C-STORE data sets from the receive
//! buffers to durable, indexed files, in the order [`job`] specifies.
//!
//! What it owns: the jobs of the core (each a sans-I/O [`job::Job`] plus
//! what the files layout needs of it: its file handle, paths and area), the
//! head scanner and checksum of each data set on its way, the directory
//! fsync rounds ([`dir_sync`]), the segments' flush window
//! ([`flush_window`]), the group commit ([`batcher`]), the core's
//! count of consecutive durability failures, and the checks that refuse a
//! C-STORE at its command (refusing state, in-flight limit, free-space
//! floor). It turns the jobs' steps into `sluice-io` operations and index
//! batches and their completions back into job inputs. It knows no
//! connection: the answers it produces ([`StoreAnswer`]) are sent by the
//! handler, which routes io completions and data-set fragments here.
//!
//! Inputs to jobs go through one queue ([`Ingest::pump`]): a step whose
//! submission fails synchronously feeds its failure back as the completion
//! it will never get, after the other steps of the same input.

pub(crate) mod batcher;
pub(crate) mod dir_sync;
mod files;
mod flush_window;
mod index;
mod instance;
pub(crate) mod job;
pub(crate) mod prepare;
mod records;
pub(crate) mod replies;
pub(crate) mod segments;
#[cfg(test)]
mod sim;
pub(crate) mod space;
mod timing;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use sluice_index::{Disposition, StoreOutcome};
use sluice_io::{At, Core, IoBuf, IoError, OpenOptions, SyncKind};
use sluice_net::dimse::{CStoreRq, Status};
use sluice_net::scan::{check_command, DatasetScanner, StoreCheck};
use sluice_net::uid;

use self::batcher::{BatchKind, IndexAnswer};
use self::dir_sync::{DirSyncRounds, RoundId, RoundStart};
use self::files::Files;
use self::index::IndexSide;
pub(crate) use self::index::Reply;
use self::instance::Instance;
pub(crate) use self::instance::{Answered, StoreAnswer};
use self::job::{Answer, CommitOrder, Job, JobInput, Step, Verdict};
use self::records::{jobs_buffers, record_place};
use self::segments::Segments;
use self::space::FreeSpace;
use super::failure::Failure;
use super::shared::ServerShared;
use super::tag::{tag, TagKind};
use crate::config::DuplicatePolicy as ConfigDuplicatePolicy;
use crate::escape::Escaped;
use crate::metrics::SpillReason;
use crate::store::layout::{Area, DatasetHasher, FileIdGenerator};
use crate::store::part10::{file_header, FileMeta};
use crate::store::{Counted, StoreEvent};

pub(crate) use self::job::JobKey;
pub(crate) use self::timing::JobTiming;

/// Consecutive durability failures (fsync, rename, directory sync, index
/// commit) after which the store refuses every C-STORE until restart.
pub const DURABILITY_FAILURES_BEFORE_REFUSING: u32 = 8;

/// The failure status answered when the `reject` duplicate policy refuses
/// a newcomer: 0111 Duplicate SOP Instance (PS3.7 C.4.2 lists it for
/// C-STORE-capable services; DCMTK and dcm4chee use it for the same case).
pub const STATUS_DUPLICATE_REJECTED: Status = Status::DUPLICATE_SOP_INSTANCE;

/// A C-STORE-RQ to start storing.
#[derive(Debug)]
pub(crate) struct StoreStart<'a> {
    /// The association's serial.
    pub(crate) serial: u64,
    /// The presentation context of the command.
    pub(crate) context_id: u8,
    /// The command.
    pub(crate) rq: &'a CStoreRq,
    /// The sender.
    pub(crate) calling_ae_title: &'a str,
    /// The context's abstract syntax.
    pub(crate) abstract_syntax: &'a str,
    /// The context's transfer syntax.
    pub(crate) transfer_syntax_uid: &'a str,
}

/// A C-STORE refused at its command: its data set is read and dropped,
/// then the refusal answered.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    /// The presentation context of the command.
    pub(crate) context_id: u8,
    /// The command.
    pub(crate) rq: CStoreRq,
    /// Why.
    pub(crate) failure: Failure,
}

/// The ingest service of one core (see the module documentation).
pub(crate) struct Ingest {
    shared: Arc<ServerShared>,
    core_index: usize,
    ids: FileIdGenerator,
    index: IndexSide,
    next_job: u64,
    jobs: HashMap<JobKey, Instance>,
    inputs: VecDeque<(JobKey, JobInput)>,
    /// The steps of the input being taken (a buffer reused between inputs).
    steps: Vec<Step>,
    pumping: bool,
    rounds: DirSyncRounds,
    files: Files,
    space: FreeSpace,
    /// The segments layout's segments (`None` on the files layout).
    segments: Option<Segments>,
    /// The largest record (Part 10 bytes): a larger instance is a file.
    record_max: u64,
    /// The Part 10 bytes of the core's last record: the next buffer's size.
    record_hint: usize,
    durability_failures: u32,
    answers: Vec<StoreAnswer>,
    /// When each segment flush round in flight began (for the steps'
    /// timing).
    flushes_started: HashMap<RoundId, Instant>,
    /// When each flush round in flight that the flush window held was due.
    flushes_held: HashMap<RoundId, Instant>,
    /// The segments' flush window (`flush_window`).
    flush_window: flush_window::FlushWindow<sluice_io::TimerId>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("core_index", &self.core_index)
            .field("jobs", &self.jobs.len())
            .finish_non_exhaustive()
    }
}

impl Ingest {
    pub(crate) fn new(shared: Arc<ServerShared>, core_index: usize, reply: Reply) -> Ingest {
        let index = IndexSide::new(
            shared.store.index().writer(),
            reply,
            &shared.store.config().storage,
            shared.in_doubt.clone(),
            shared.cluster.clone(),
        );
        let files = Files::new(shared.store.layout().clone());
        let space = FreeSpace::new(shared.store.config().storage.free_space_floor);
        let storage = &shared.store.config().storage;
        let segments = shared.segment_ids.clone().map(|ids| {
            Segments::new(
                ids,
                shared.store.layout().clone(),
                storage.segment_size_mib,
                storage.record_memory_per_core,
                shared.segment_preparer.get().cloned(),
                core_index,
            )
        });
        // Bounded by what a segment holds (a record carries its header too).
        let record_max = segments.as_ref().map_or(0, |segments| {
            storage
                .segment_record_max
                .min(segments.record_bytes_max() - crate::store::segment::HEADER_BYTES_MAX as u64)
        });
        Ingest {
            segments,
            record_max,
            record_hint: 0,
            ids: FileIdGenerator::new(u16::try_from(core_index).unwrap_or(u16::MAX)),
            shared,
            core_index,
            index,
            next_job: 0,
            jobs: HashMap::new(),
            inputs: VecDeque::new(),
            steps: Vec::new(),
            pumping: false,
            rounds: DirSyncRounds::default(),
            files,
            space,
            durability_failures: 0,
            answers: Vec::new(),
            flushes_started: HashMap::new(),
            flushes_held: HashMap::new(),
            flush_window: flush_window::FlushWindow::new(flush_window::FLUSH_WINDOW_MAX),
        }
    }

    fn config(&self) -> &crate::config::Config {
        self.shared.store.config()
    }

    /// The answers produced since the last call, for the handler to send
    /// (drained, so their buffer is reused).
    pub(crate) fn answers(&mut self) -> std::vec::Drain<'_, StoreAnswer> {
        self.answers.drain(..)
    }

    // ----- a C-STORE's data set -----

    /// A C-STORE-RQ: refused at once (`Err`), or a job whose file is being
    /// opened.
    pub(crate) fn start(
        &mut self,
        core: &mut Core,
        start: StoreStart<'_>,
    ) -> Result<JobKey, Failure> {
        let storage = &self.config().storage;
        let floor = storage.free_space_floor;
        let in_flight_max = storage.instances_in_flight_max_per_core as usize;
        let facts = uid::transfer_syntax(start.transfer_syntax_uid).map(|ts| ts.facts);
        // The command's UIDs follow the data set's rules (A900 when
        // malformed), before anything else: a malformed UID is never
        // answered for another reason.
        let warnings = facts
            .map(|facts| {
                check_command(&StoreCheck {
                    affected_sop_class_uid: &start.rq.affected_sop_class_uid,
                    affected_sop_instance_uid: &start.rq.affected_sop_instance_uid,
                    transfer_syntax: facts,
                    image_class: false,
                    lenient: self.shared.leniency,
                })
            })
            .transpose()
            .map_err(Failure::Rejected)?
            .unwrap_or_default();
        if start.abstract_syntax != start.rq.affected_sop_class_uid {
            return Err(Failure::SopClassNotOnContext {
                sop_class_uid: start.rq.affected_sop_class_uid.clone(),
                abstract_syntax: start.abstract_syntax.to_owned(),
            });
        }
        if self.shared.store.is_refusing() {
            return Err(Failure::Refusing);
        }
        if self.jobs.len() >= in_flight_max {
            return Err(Failure::InFlightLimit { max: in_flight_max });
        }
        let owed = self.shared.in_doubt.owed_count();
        if owed >= batcher::OWED_REMOVALS_MAX {
            return Err(Failure::RemovalsOwed { owed });
        }
        let (Some(facts), Ok(scanner)) = (
            facts,
            DatasetScanner::for_transfer_syntax(start.transfer_syntax_uid),
        ) else {
            return Err(Failure::TransferSyntaxNotScannable {
                transfer_syntax_uid: start.transfer_syntax_uid.to_owned(),
            });
        };
        let header = file_header(&FileMeta {
            sop_class_uid: &start.rq.affected_sop_class_uid,
            sop_instance_uid: &start.rq.affected_sop_instance_uid,
            transfer_syntax_uid: start.transfer_syntax_uid,
            source_ae_title: start.calling_ae_title,
        })
        .map_err(Failure::FileMeta)?;
        let file_id = self.ids.next_id().ok_or(Failure::FileIdsExhausted)?;
        let tmp_path = self.files.layout().tmp_path(self.core_index, file_id);
        let tmp_dir = self.files.layout().tmp_dir_of_core(self.core_index);
        self.files
            .ensure_dir(&tmp_dir)
            .map_err(|error| Failure::TemporaryDirectory(Arc::new(error)))?;
        // Last, so that a refusal above reserves nothing.
        let files = &self.files;
        let allocation = self.segments.as_ref().map_or(0, |segments| {
            segments.allocation_ahead(self.space.expected_bytes())
        });
        let Some(mut reservation) = self
            .space
            .admit(&self.shared.space, allocation, || files.read_free_bytes())
        else {
            return Err(Failure::BelowFreeSpaceFloor { floor });
        };
        self.next_job += 1;
        let key = JobKey(self.next_job);
        let now = Instant::now();
        if self.segments.is_some() {
            self.flush_window.request(start.serial, now);
        }
        // The segments layout holds the bytes until the record is whole;
        // the files layout opens the temporary file now.
        let record = self.segments.is_some() && header.len() as u64 <= self.record_max;
        if !record {
            if let Err(error) = core.open(
                At::Cwd,
                &tmp_path,
                OpenOptions::create_new_write(),
                tag(TagKind::Open, key.0),
            ) {
                self.space.finished(&self.shared.space, reservation, false);
                return Err(Failure::OpenSubmit(error));
            }
        }
        // Replacing removes the stored instance's entry, which an undo
        // could not give back: under `replace` the entry waits for the syncs.
        let commit = if self.config().storage.duplicate_policy == ConfigDuplicatePolicy::Replace {
            CommitOrder::AfterSyncs
        } else {
            CommitOrder::BesideSyncs
        };
        let header_bytes = header.len() as u64;
        self.space
            .wrote(&self.shared.space, &mut reservation, header_bytes);
        let (job, record_buf) = match self.segments.as_mut().filter(|_| record) {
            Some(segments) => {
                let jobs = &self.jobs;
                let buf = segments.record_buf(&header, self.record_hint, || jobs_buffers(jobs));
                (Job::new_record(header_bytes, commit), Some(buf))
            }
            None => (Job::new(header, commit), None),
        };
        self.jobs.insert(
            key,
            Instance {
                job,
                record_buf,
                written: None,
                lent: 0,
                place: None,
                serial: start.serial,
                context_id: start.context_id,
                rq: start.rq.clone(),
                calling_ae_title: start.calling_ae_title.to_owned(),
                transfer_syntax_uid: start.transfer_syntax_uid.to_owned(),
                facts,
                file_id,
                header_bytes,
                file: None,
                tmp_path,
                area: Area::Objects,
                final_path: PathBuf::new(),
                scanner: Some(scanner),
                hasher: DatasetHasher::new(),
                dataset_bytes: 0,
                instance: None,
                warnings,
                in_doubt: false,
                reservation,
                timing: JobTiming {
                    received: Some(now),
                    ..JobTiming::default()
                },
            },
        );
        if let Some(metrics) = self.shared.metrics.core(self.core_index) {
            metrics.set_instances_in_flight(self.jobs.len());
        }
        Ok(key)
    }

    /// A fragment of a job's data set: `bytes`, lent as `slice()` (the same
    /// range of the receive buffer) to the file write; a record job copies
    /// them into its buffer and never calls it (a TLS or exactly received
    /// range would otherwise be copied for nothing).
    pub(crate) fn fragment(
        &mut self,
        core: &mut Core,
        key: JobKey,
        bytes: &[u8],
        slice: impl FnOnce() -> Option<IoBuf>,
    ) {
        let Some(record) = self.jobs.get_mut(&key) else {
            panic!("job {key:?} gone while receiving");
        };
        if record.job.has_failed() {
            // The rest of the data set is dropped unread.
            return;
        }
        record.feed(bytes);
        self.space.wrote(
            &self.shared.space,
            &mut record.reservation,
            bytes.len() as u64,
        );
        if let Some(buf) = record.record_buf.as_ref() {
            let spill = if (buf.len() + bytes.len()) as u64 > self.record_max {
                Some(SpillReason::RecordMax)
            } else {
                // A buffer that must grow holds its old and its new bytes
                // for a moment: both must fit the core's budget.
                let fits = match buf.growth(bytes.len()) {
                    None => true,
                    Some(grown) => {
                        let jobs = jobs_buffers(&self.jobs);
                        self.segments
                            .as_mut()
                            .is_none_or(|segments| segments.room_for(grown, jobs))
                    }
                };
                (!fits).then_some(SpillReason::Memory)
            };
            match spill {
                None => {
                    if let Some(buf) = self
                        .jobs
                        .get_mut(&key)
                        .and_then(|record| record.record_buf.as_mut())
                    {
                        // Copied: the receive buffer is not held.
                        buf.push(bytes);
                    }
                    return;
                }
                // A file from here on, what it held first.
                Some(reason) => self.spill(core, key, reason),
            }
        }
        let Some(record) = self.jobs.get_mut(&key) else {
            panic!("job {key:?} gone while receiving");
        };
        if record.job.has_failed() {
            return;
        }
        let input = match slice() {
            Some(slice) => JobInput::Data(slice),
            None => {
                debug_assert!(false, "the decoder gave a range outside the receive buffer");
                JobInput::Failed(Failure::ReceiveSliceOutOfRange)
            }
        };
        self.feed(core, key, input);
    }

    /// The receive buffer is consumed: the job's pending bytes are written.
    pub(crate) fn flush(&mut self, core: &mut Core, key: JobKey) {
        self.feed(core, key, JobInput::Flush);
    }

    /// The last fragment arrived: the head is checked and the job goes on
    /// to be made durable (or is refused).
    pub(crate) fn complete(&mut self, core: &mut Core, key: JobKey) {
        let Some(record) = self.jobs.get_mut(&key) else {
            panic!("job {key:?} gone while receiving");
        };
        record.timing.complete = Some(Instant::now());
        let verdict = if record.job.has_failed() {
            Verdict::Unchecked
        } else {
            record.check(self.shared.leniency)
        };
        if record.record_buf.is_some() && matches!(verdict, Verdict::Accepted { .. }) {
            if let Err(failure) = self.reserve_record(core, key) {
                self.count_durability_failure(&failure);
                self.inputs.push_back((key, JobInput::Failed(failure)));
                self.feed(core, key, JobInput::Complete(Verdict::Unchecked));
                return;
            }
        }
        self.feed(core, key, JobInput::Complete(verdict));
    }

    /// The association ended while this job's data set was arriving.
    pub(crate) fn abandon(&mut self, core: &mut Core, key: JobKey) {
        self.feed(core, key, JobInput::AssociationEnded);
    }

    /// Logs the jobs of an association that ended while they were in
    /// progress (they go on; their answers are dropped).
    pub(crate) fn log_in_progress(&self, serial: u64) {
        for (key, record) in self
            .jobs
            .iter()
            .filter(|(_, record)| record.serial == serial)
        {
            tracing::debug!(
                job = key.0,
                state = ?record.job,
                "instance still in progress when its association ended"
            );
        }
    }

    // ----- io completions -----

    /// A job's temporary file's open completed.
    pub(crate) fn opened(
        &mut self,
        core: &mut Core,
        key: JobKey,
        result: Result<sluice_io::FileHandle, IoError>,
    ) {
        let Some(record) = self.jobs.get_mut(&key) else {
            panic!("an open of job {key:?}, which is gone (a job waits for its open)");
        };
        let input = match result {
            Ok(file) => {
                record.file = Some(file);
                JobInput::Opened(Ok(()))
            }
            Err(error) => {
                let failure = Failure::Open(error);
                self.count_durability_failure(&failure);
                JobInput::Opened(Err(failure))
            }
        };
        self.feed(core, key, input);
    }

    /// A job's write completed.
    pub(crate) fn written(&mut self, core: &mut Core, key: JobKey, result: Result<u64, IoError>) {
        let Some(record) = self.jobs.get_mut(&key) else {
            panic!("a write of job {key:?}, which is gone (a job waits for its writes)");
        };
        let had_failed = record.job.has_failed();
        let record_place = record.place.filter(|_| record.job.is_record());
        let result = match result {
            Ok(_) => {
                if record_place.is_some() {
                    // A record's one write puts it at its place.
                    record.timing.renamed = Some(Instant::now());
                }
                Ok(())
            }
            Err(error) => {
                let failure = Failure::Write(error);
                if !had_failed {
                    self.count_durability_failure(&failure);
                }
                if let (Some(place), Some(segments)) = (record_place, self.segments.as_mut()) {
                    tracing::error!(segment = place.segment, offset = place.offset, %error, "record write failed; the segment is sealed");
                    segments.write_failed(place.segment);
                }
                Err(failure)
            }
        };
        self.feed(core, key, JobInput::Written(result));
    }

    /// A job's rename into its area completed.
    pub(crate) fn renamed(&mut self, core: &mut Core, key: JobKey, result: Result<(), IoError>) {
        let Some(record) = self.jobs.get_mut(&key) else {
            panic!("a rename of job {key:?}, which is gone (a job waits for its rename)");
        };
        let result = match result {
            Ok(()) => {
                record.timing.renamed = Some(Instant::now());
                Ok(())
            }
            Err(error) => {
                let failure = Failure::Rename(error);
                self.count_durability_failure(&failure);
                Err(failure)
            }
        };
        self.feed(core, key, JobInput::Placed(result));
    }

    /// A job's `fdatasync` completed.
    pub(crate) fn data_synced(
        &mut self,
        core: &mut Core,
        key: JobKey,
        result: Result<(), IoError>,
    ) {
        let Some(record) = self.jobs.get_mut(&key) else {
            // A job waits for its data sync before it finishes.
            panic!("a data sync of job {key:?}, which is gone");
        };
        let result = match result {
            Ok(()) => {
                record.timing.file_synced = Some(Instant::now());
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "fdatasync failed; the instance fails");
                let failure = Failure::Fsync(error);
                self.count_durability_failure(&failure);
                Err(failure)
            }
        };
        self.feed(core, key, JobInput::DataSynced(result));
    }

    /// A directory of a sync round opened: sync it.
    pub(crate) fn dir_opened(
        &mut self,
        core: &mut Core,
        round: RoundId,
        result: Result<sluice_io::FileHandle, IoError>,
    ) {
        match result {
            Ok(dir) => {
                let submitted = core.sync(dir, SyncKind::All, tag(TagKind::DirSync, round.0));
                let _ = core.close_file(dir, tag(TagKind::Ignored, 0));
                if let Err(error) = submitted {
                    self.round_ended(core, round, Err(Failure::DirectorySyncSubmit(error)));
                }
            }
            Err(error) => self.round_ended(core, round, Err(Failure::OpenDirectory(error))),
        }
    }

    /// A directory's fsync completed.
    pub(crate) fn dir_synced(
        &mut self,
        core: &mut Core,
        round: RoundId,
        result: Result<(), IoError>,
    ) {
        self.round_ended(core, round, result.map_err(Failure::Fsync));
    }

    /// The group-commit window ended.
    pub(crate) fn window_fired(&mut self, core: &mut Core) {
        self.index.window_fired();
        self.submit_batch_by(core, true);
    }

    /// The in-doubt clears' timer fired.
    pub(crate) fn clear_fired(&mut self, core: &mut Core) {
        self.index.clear_fired(core);
    }

    /// The index writer answered batches of this core (its reply queue's
    /// wake-up, or any message: the queue is drained before each).
    pub(crate) fn index_answers(&mut self, core: &mut Core) {
        for answer in self.index.take_answers() {
            self.indexed(core, answer);
        }
    }

    /// The index writer answered a batch of this core.
    fn indexed(&mut self, core: &mut Core, answer: IndexAnswer) {
        let answered_at = answer.answered_at;
        let outcome = index::answer_outcome(answer);
        if outcome.kind == BatchKind::Maintenance {
            if outcome.failed.is_none() {
                self.shared.in_doubt.settled(&outcome.owed);
            }
            self.index
                .maintenance_answered(core, outcome.failed.as_ref());
            return;
        }
        match outcome.failed {
            None => {
                self.durability_failures = 0;
                // The owed entries it carried are gone.
                self.shared.in_doubt.settled(&outcome.owed);
            }
            // One failed transaction is one failure, however many instances
            // it carried (a batch the writer did not take answers here too).
            Some(error) => {
                self.count_durability_failure(&Failure::IndexCommit(error));
                self.index.retry_owed_later(core);
            }
        }
        let now = Instant::now();
        for (key, input) in outcome.inputs {
            if let (JobInput::Committed(Ok(_)), Some(record)) = (&input, self.jobs.get_mut(&key)) {
                record.timing.indexed = Some(answered_at);
                record.timing.committed = Some(now);
            }
            self.inputs.push_back((key, input));
        }
        self.pump(core);
    }

    /// The core stops: the in-doubt marks of instances already answered are
    /// cleared (the index finishes queued batches when it closes), so a clean
    /// shutdown leaves recovery nothing to re-verify.
    pub(crate) fn shutdown(&mut self, core: &mut Core) {
        self.index.submit_clears_at_shutdown(core);
    }

    /// No instance in progress on this core (none receiving, none on its
    /// way to durable, none waiting for its operations in flight to discard
    /// its file): a draining core may stop.
    pub(crate) fn is_idle(&self) -> bool {
        self.jobs.is_empty()
    }

    // ----- jobs -----

    fn feed(&mut self, core: &mut Core, key: JobKey, input: JobInput) {
        self.inputs.push_back((key, input));
        self.pump(core);
    }

    /// Feeds the queued inputs to their jobs and takes the steps they return,
    /// until the queue is empty. Re-entered (a step that starts a directory
    /// round whose open cannot be submitted), it leaves the queue to the
    /// outer call.
    fn pump(&mut self, core: &mut Core) {
        if self.pumping {
            return;
        }
        self.pumping = true;
        while let Some((key, input)) = self.inputs.pop_front() {
            let Some(record) = self.jobs.get_mut(&key) else {
                // Only a name sync can outlive its job: a job that failed
                // does not wait for its directory round.
                assert!(
                    matches!(input, JobInput::NameSynced(_)),
                    "input {input:?} for job {key:?}, which is gone"
                );
                continue;
            };
            let mut steps = std::mem::take(&mut self.steps);
            record.job.on(input, &mut steps);
            for step in steps.drain(..) {
                self.execute(core, key, step);
            }
            // Kept for the next input (its capacity: no allocation).
            self.steps = steps;
            self.remove_if_done(core, key);
        }
        self.pumping = false;
    }

    fn remove_if_done(&mut self, core: &mut Core, key: JobKey) {
        if self
            .jobs
            .get(&key)
            .is_some_and(|record| record.job.is_done())
        {
            if let Some(mut record) = self.jobs.remove(&key) {
                if let (Some(place), Some(segments)) = (record.place, self.segments.as_mut()) {
                    segments.recycle(record.written.take());
                    if let Some(sealed) = segments.job_finished(core, place.segment) {
                        self.index.submit_seal(sealed);
                    }
                }
                let whole = record.instance.is_some();
                self.space
                    .finished(&self.shared.space, record.reservation, whole);
                if let Some(metrics) = self.shared.metrics.core(self.core_index) {
                    metrics.set_instances_in_flight(self.jobs.len());
                }
            }
        }
    }

    /// Takes one step of a job. A submission that fails feeds its failure
    /// back (queued after this input's other steps).
    fn execute(&mut self, core: &mut Core, key: JobKey, step: Step) {
        let Some(record) = self.jobs.get_mut(&key) else {
            panic!("a step of job {key:?}, which is gone");
        };
        match step {
            Step::Write { offset, bufs } => {
                let file = open_file(record, key);
                if let Err(error) = core.write_at(file, offset, bufs, tag(TagKind::Write, key.0)) {
                    self.inputs
                        .push_back((key, JobInput::Written(Err(Failure::WriteSubmit(error)))));
                }
            }
            Step::WriteSeal { offset, seal } => {
                let file = open_file(record, key);
                let bufs = vec![IoBuf::from(seal.to_vec())];
                if let Err(error) = core.write_at(file, offset, bufs, tag(TagKind::Write, key.0)) {
                    self.inputs
                        .push_back((key, JobInput::Written(Err(Failure::SealSubmit(error)))));
                }
            }
            Step::WriteRecord { seal } => {
                if let Err(failure) = self.write_record(core, key, seal) {
                    if let (Some(segments), Some(place)) =
                        (self.segments.as_mut(), record_place(&self.jobs, key))
                    {
                        segments.write_failed(place.segment);
                    }
                    self.inputs
                        .push_back((key, JobInput::Written(Err(failure))));
                }
            }
            Step::Place => {
                if let Err(failure) = self.place(core, key) {
                    self.count_durability_failure(&failure);
                    self.inputs.push_back((key, JobInput::Placed(Err(failure))));
                }
            }
            Step::SyncData if record.job.is_record() => {
                let Some(place) = record.place else {
                    panic!("a flush of job {key:?}, which has no record");
                };
                if let (Some(received), Some(written)) =
                    (record.timing.received, record.timing.renamed)
                {
                    self.flush_window
                        .written(written.saturating_duration_since(received));
                }
                let Some(segments) = self.segments.as_mut() else {
                    panic!("a record job on the files layout");
                };
                match segments.join(place.segment, key) {
                    Ok(Some(start)) => self.flush_due(core, start),
                    Ok(None) => self.joined_held(core, place.segment),
                    // An earlier flush of the segment failed.
                    Err(failure) => self
                        .inputs
                        .push_back((key, JobInput::DataSynced(Err(failure)))),
                }
            }
            Step::SyncData => {
                let file = open_file(record, key);
                if let Err(error) = core.sync(file, SyncKind::Data, tag(TagKind::SyncData, key.0)) {
                    let failure = Failure::SyncSubmit(error);
                    self.count_durability_failure(&failure);
                    self.inputs
                        .push_back((key, JobInput::DataSynced(Err(failure))));
                }
            }
            Step::SyncName => {
                let dir = self
                    .shared
                    .store
                    .layout()
                    .fanout_dir(record.area, record.file_id);
                if let Some(start) = self.rounds.join(dir, key) {
                    self.start_round(core, start);
                }
            }
            Step::QueueForIndex => {
                if let (Some(place), Some(segments), CommitOrder::BesideSyncs) = (
                    record.place,
                    self.segments.as_mut(),
                    record.job.commit_order(),
                ) {
                    segments.queued(place);
                }
                if record.job.commit_order() == CommitOrder::BesideSyncs {
                    // Before the entry can be seen by any read transaction:
                    // commitment does not count it until it is durable.
                    self.shared.in_doubt.insert(record.file_id);
                    record.in_doubt = true;
                }
                let another_on_its_way = self
                    .jobs
                    .values()
                    .any(|other| other.job.will_queue_for_index());
                if self.index.queue(core, key, another_on_its_way) {
                    self.submit_batch(core);
                }
            }
            Step::Index { .. } => panic!("an index step outside a batch"),
            Step::Undo => {
                let Some(instance) = record.instance.as_ref() else {
                    panic!("an undo of job {key:?}, which has no entry");
                };
                tracing::warn!(
                    sop_instance_uid = %Escaped(&instance.triplet.sop_instance_uid),
                    "removing the index entry of an instance that failed to become durable"
                );
                // Owed from now on: the set keeps the file in doubt, and
                // every batch removes the entry first, until one commits.
                assert!(record.in_doubt, "an undo of an entry not in doubt");
                self.shared.in_doubt.owe(record.file_id);
                record.in_doubt = false;
                self.index.submit_undo(key, record.file_id);
            }
            Step::Close => match record.file.take() {
                // Nobody waits for a close.
                Some(file) => {
                    let _ = core.close_file(file, tag(TagKind::Ignored, 0));
                }
                None => panic!("a close of job {key:?}, whose file is not open"),
            },
            Step::Discard { placed } => {
                let path = if placed {
                    &record.final_path
                } else {
                    &record.tmp_path
                };
                // An unlink that fails is logged at its completion; recovery
                // finds the file at the next start.
                let _ = core.unlink(At::Cwd, path, tag(TagKind::Ignored, 0));
            }
            Step::Answer(Answer::Stored(outcome)) => self.settle(core, key, outcome),
            Step::Answer(Answer::Failed(failure)) => {
                if record.in_doubt {
                    self.shared.in_doubt.remove(record.file_id);
                    record.in_doubt = false;
                }
                self.answers.push(record.answer(Answered::Failed(failure)));
            }
        }
    }

    /// Every byte written: the file moves into its area (the guess of
    /// [`Files::area_guess`]).
    fn place(&mut self, core: &mut Core, key: JobKey) -> Result<(), Failure> {
        let Some(record) = self.jobs.get_mut(&key) else {
            panic!("placing job {key:?}, which is gone");
        };
        let Some(instance) = record.instance.as_ref() else {
            panic!("placing job {key:?}, whose head was not accepted");
        };
        // Under `replace` a newcomer always ends in objects/.
        let replacing = record.job.commit_order() == CommitOrder::AfterSyncs;
        let area = Files::area_guess(
            self.shared.store.index(),
            &instance.triplet,
            record.file_id,
            replacing,
        );
        let layout = self.files.layout();
        let fanout = layout.fanout_dir(area, record.file_id);
        record.area = area;
        record.final_path = layout.area_path(area, record.file_id);
        let (tmp_path, final_path) = (record.tmp_path.clone(), record.final_path.clone());
        self.files
            .ensure_dir(&fanout)
            .map_err(|error| Failure::CreateDirectory {
                path: fanout.clone(),
                source: Arc::new(error),
            })?;
        core.rename(
            At::Cwd,
            &tmp_path,
            At::Cwd,
            &final_path,
            tag(TagKind::Rename, key.0),
        )
        .map_err(Failure::RenameSubmit)
    }

    /// Starts the fsync round of a directory: open it (its completion
    /// syncs it).
    fn start_round(&mut self, core: &mut Core, start: RoundStart) {
        if let Err(error) = core.open(
            At::Cwd,
            &start.target,
            OpenOptions::directory(),
            tag(TagKind::DirOpen, start.round.0),
        ) {
            self.round_ended(core, start.round, Err(Failure::OpenDirectorySubmit(error)));
        }
    }

    fn round_ended(&mut self, core: &mut Core, round: RoundId, result: Result<(), Failure>) {
        let end = self.rounds.ended(round, result.is_ok());
        if let Some(next) = end.next {
            self.start_round(core, next);
        }
        match result {
            Ok(()) => {
                let now = Instant::now();
                for key in end.jobs {
                    if let Some(record) = self.jobs.get_mut(&key) {
                        record.timing.dir_synced = Some(now);
                    }
                    self.inputs.push_back((key, JobInput::NameSynced(Ok(()))));
                }
            }
            Err(failure) => {
                tracing::error!(
                    dir = %end.target.display(),
                    instances = end.jobs.len(),
                    reason = %Escaped(&failure),
                    "directory fsync failed; its instances fail"
                );
                // One failed fsync is one failure, however many instances.
                self.count_durability_failure(&failure);
                for key in end.jobs {
                    self.inputs
                        .push_back((key, JobInput::NameSynced(Err(failure.clone()))));
                }
            }
        }
        self.pump(core);
    }

    // ----- the index -----

    /// Submits the queued entries as one batch.
    fn submit_batch(&mut self, core: &mut Core) {
        self.submit_batch_by(core, false);
    }

    /// Submits the queued entries as one batch (`by_window`: the
    /// group-commit window's timer fired).
    fn submit_batch_by(&mut self, core: &mut Core, by_window: bool) {
        let queued = self.index.take_batch(core);
        tracing::debug!(
            target: "sluice::ingest::timing",
            instances = queued.len(),
            by_window,
            "index batch submitted"
        );
        let now = Instant::now();
        let mut jobs = Vec::with_capacity(queued.len());
        let mut ops = Vec::with_capacity(queued.len());
        for key in queued {
            let Some(record) = self.jobs.get_mut(&key) else {
                // Failed and answered while queued.
                continue;
            };
            let mut steps = std::mem::take(&mut self.steps);
            record.job.on(JobInput::Batched, &mut steps);
            for step in steps.drain(..) {
                match step {
                    Step::Index { in_doubt } => {
                        let Some(record) = self.jobs.get_mut(&key) else {
                            panic!("job {key:?} gone while batched");
                        };
                        let Some(instance) = record.instance.clone() else {
                            panic!("job {key:?} indexed without an accepted head");
                        };
                        record.timing.submitted = Some(now);
                        let flagged = record.flagged();
                        let location = match record.place {
                            Some(place) => sluice_index::Location::Record(place),
                            None => sluice_index::Location::File,
                        };
                        ops.push(self.index.store_op(instance, in_doubt, flagged, location));
                        jobs.push(key);
                    }
                    // A job that failed while queued finishes.
                    other => self.execute(core, key, other),
                }
            }
            self.steps = steps;
            self.remove_if_done(core, key);
        }
        if !jobs.is_empty() {
            // A batch the writer does not take answers its jobs through the
            // mailbox (the writer unavailable), counted there, once.
            self.index.submit_stores(core, jobs, ops);
        }
    }

    // ----- answers -----

    /// A job answered success: the in-doubt mark goes, the index's decision
    /// is carried out on disk (the replaced file to orphans/, the rare area
    /// correction), the events are published, the answer queued.
    fn settle(&mut self, core: &mut Core, key: JobKey, outcome: StoreOutcome) {
        let Some(record) = self.jobs.get_mut(&key) else {
            panic!("settling job {key:?}, which is gone");
        };
        let file_id = record.file_id;
        if record.place.is_some() {
            // Its sender is expected back with its next instance.
            self.flush_window.answered(record.serial, Instant::now());
        }
        if record.in_doubt {
            // Durable now: commitment may count it, and the mark can go.
            self.shared.in_doubt.remove(file_id);
            record.in_doubt = false;
            self.index.clear_later(core, file_id);
        }
        let Some(instance) = record.instance.as_ref() else {
            panic!("job {key:?} stored without an accepted head");
        };
        let (status, counted, event) = match outcome.disposition() {
            None | Some(Disposition::Replaced { .. }) => {
                if let Some(Disposition::Replaced { previous }) = outcome.disposition() {
                    self.files
                        .keep_replaced(previous.file_id, self.segments.is_some());
                }
                // A record stays where it is (the index places it by file id).
                if record.area != Area::Objects && record.place.is_none() {
                    self.files
                        .move_between_areas(file_id, &record.final_path, Area::Objects);
                }
                (
                    Status::SUCCESS,
                    Counted::Stored,
                    Some(StoreEvent::Stored {
                        triplet: instance.triplet.clone(),
                        record: instance.record.clone(),
                    }),
                )
            }
            Some(Disposition::Quarantined { quarantine_id }) => {
                // A record held in quarantine by a race stays in its segment
                // (docs/design/segments.md, "Quarantine stays files").
                if record.area != Area::Quarantine && record.place.is_none() {
                    self.files
                        .move_between_areas(file_id, &record.final_path, Area::Quarantine);
                }
                (
                    Status::SUCCESS,
                    Counted::Quarantined,
                    Some(StoreEvent::Quarantined {
                        triplet: instance.triplet.clone(),
                        quarantine_id: *quarantine_id,
                        calling_ae_title: record.calling_ae_title.clone(),
                    }),
                )
            }
            // Its file was discarded (the job's last steps).
            Some(Disposition::Dropped) => (Status::SUCCESS, Counted::Dropped, None),
            Some(_) => (
                STATUS_DUPLICATE_REJECTED,
                Counted::Rejected,
                Some(StoreEvent::Rejected {
                    sop_instance_uid: record.rq.affected_sop_instance_uid.clone(),
                    calling_ae_title: record.calling_ae_title.clone(),
                    status: STATUS_DUPLICATE_REJECTED.0,
                    reason: "duplicate refused by the reject policy".into(),
                }),
            ),
        };
        if counted == Counted::Stored || counted == Counted::Quarantined {
            self.shared
                .audit
                .instance_stored((self.core_index, record.serial), instance);
        }
        if let Some(event) = event {
            if matches!(event, StoreEvent::Stored { .. }) {
                // Durably stored and indexed: what a commitment waits for.
                self.shared.tracker.instance_stored(
                    &instance.triplet.sop_instance_uid,
                    &instance.record.sop_class_uid,
                );
            }
            self.shared.store.shared.events.publish(event);
        }
        let quarantine_id = match outcome.disposition() {
            Some(Disposition::Quarantined { quarantine_id }) => Some(*quarantine_id),
            _ => None,
        };
        let warnings = std::mem::take(&mut record.warnings);
        self.answers.push(record.answer(Answered::Stored {
            status,
            counted,
            quarantine_id,
            timing: record.timing,
            warnings,
        }));
    }

    // ----- failures and directories -----

    /// Counts a failure towards the refusing state, if it is one of the
    /// disk or the index ([`Failure::is_durability_failure`]: not the lack
    /// of space).
    fn count_durability_failure(&mut self, failure: &Failure) {
        if !failure.is_durability_failure() {
            return;
        }
        self.durability_failures += 1;
        if self.durability_failures >= DURABILITY_FAILURES_BEFORE_REFUSING
            && !self
                .shared
                .store
                .shared
                .refusing
                .swap(true, Ordering::SeqCst)
        {
            tracing::error!(
                failures = self.durability_failures,
                "repeated durability failures: the store now refuses every C-STORE until restart"
            );
        }
    }
}

/// The open file of a job that the job says is open.
fn open_file(record: &Instance, key: JobKey) -> sluice_io::FileHandle {
    match record.file {
        Some(file) => file,
        None => panic!("job {key:?} asked for its file, which is not open"),
    }
}
