//! One instance's way from its C-STORE-RQ to its answer, as a sans-I/O state
//! machine: [`Job::on`] takes what happened ([`JobInput`]: data arrived, an
//! open, write, rename or sync completed, the index committed...) and appends
//! the [`Step`]s to take (io requests, index submissions, the answer). It
//! touches no socket, file, clock or thread: the ingest service (`super`)
//! turns steps into `sluice-io` operations and index batches, and their
//! completions back into inputs.
//!
//! **This module and its tests are the specification of the durability
//! order**, the product's most important invariant; docs/ARCHITECTURE.md
//! and docs/design/ingest.md point here instead of restating it.
//!
//! # The durability order
//!
//! 1. *Receiving.* The Part 10 header, then every data-set fragment (a slice
//!    of a receive buffer, never copied), is written at its offset in the
//!    instance's temporary file once the file's open has completed.
//! 2. *Whole.* The last fragment brings the head scanner's verdict. A
//!    refused data set is discarded and its refusal answered. An accepted
//!    one has its seal (the data set's length and checksum) written over the
//!    header's last bytes, once every earlier write of the file completed
//!    (writes in flight are not ordered: the header's zeroed seal bytes
//!    must not land after the seal), and, under [`CommitOrder::BesideSyncs`] (every
//!    duplicate policy but `replace`), its index entry is queued at once,
//!    to be committed *in doubt* beside the steps below.
//! 3. *Placing.* Every write (the seal's included) completed: the file is
//!    renamed into its area ([`Step::Place`]).
//! 4. *Syncing.* Placed: the file's `fdatasync` ([`Step::SyncData`]) and its
//!    directory's shared fsync round ([`Step::SyncName`]) run together.
//!    Under [`CommitOrder::AfterSyncs`] (`replace`) the entry is queued only
//!    when both succeeded: removing a replacing entry could not give the
//!    replaced one back, so that entry must never need an undo.
//! 5. *Answered.* [`Answer::Stored`] (0000, or the duplicate policy's own
//!    answer) is given only when the data sync, the name sync **and** the
//!    index commit have all succeeded, whatever order they completed in.
//!    The ingest service then clears the file's in-doubt mark.
//!
//! # Failures
//!
//! - A failure is final: nothing is retried, and after any failure the
//!   answer is [`Answer::Failed`], never a success.
//! - The failure is answered only when the data set has arrived whole (the
//!   rest of it is read and dropped, as PS3.7 requires), and once the
//!   writes, the data sync and any index batch of the job in flight have
//!   completed.
//! - A failure after the entry committed undoes it ([`Step::Undo`]: the
//!   stored instance's entry removed, or its quarantine entry purged) and is
//!   answered only when the undo answered, so a sender that retries is not
//!   held as a duplicate of itself. From the undo's step on, the service
//!   holds the removal *owed* (`crate::store::in_doubt::InDoubtSet::owe`):
//!   the file stays in the in-doubt set and every index batch of every core
//!   removes the entry first (`WriteOp::RemoveInDoubt`, keyed by the file,
//!   harmless to repeat) until one commits. So when the undo itself fails
//!   (a full disk), its failure is answered and no later duplicate decision
//!   can see the entry.
//! - Which failure is answered: the latest, except that a write's failure
//!   or the head's verdict never replaces an earlier one (a failed undo's
//!   index error replaces the sync failure that caused the undo).
//! - A failed job's file is closed and discarded (unlinked wherever it is)
//!   once no operation on it is in flight: its open, its writes, its rename
//!   (a job that fails while its rename runs, say from the index, waits for
//!   it, so a renamed, sealed file is never left for recovery to index
//!   again), its data sync.
//! - The association ending while the data set arrives abandons the job: it
//!   fails without an answer (its file discarded as above). A job whose
//!   data set arrived whole goes on; its answer is dropped if the
//!   association is gone.
//! - Exactly one [`Step::Answer`] per job whose data set arrived whole, none
//!   for an abandoned one; [`Step`]s end there ([`Job::is_done`]). A
//!   finished job has no operation on its file or its entry in flight: the
//!   service feeds it nothing more, and only a directory round it joined or
//!   an entry the batcher holds (its key, nothing of its file) outlives it.
//!
//! What a crash in the middle leaves, and what start-up recovery makes of it
//! (an unindexed sealed file, an entry still in doubt), is in
//! docs/design/ingest.md and `crate::recovery`.
//!
//! # Few, named, layout-specific steps
//!
//! The job knows three durability facts: the data, the name (the directory
//! entry) and the index entry. Only [`Step::Place`], [`Step::SyncData`],
//! [`Step::SyncName`], [`Step::Close`] and [`Step::Discard`] depend on how
//! instances are laid out on disk; writes at an offset, the seal, the index
//! entry, the undo and the answer do not. For the files layout they are a
//! rename, an `fdatasync`, a directory fsync round, a close and an unlink.
//! The segments layout (per-core append-only segment files, group-committed)
//! keeps the same job: a record is written at its offset in the open
//! segment, so nothing is placed or named (a job created already placed,
//! its name durable), [`Step::SyncData`] joins the segment's group flush,
//! and [`Step::Discard`] marks the record dead. Naming the steps after
//! their purpose rather than after the file operations ("make the data
//! durable", not "fdatasync") is what lets both layouts share the order and
//! its tests; a single "make durable" step was rejected because the files
//! layout's two syncs complete and fail independently, and the spec must
//! say what happens for each order.
//!
//! # Record mode (the segments layout)
//!
//! A job made by [`Job::new_record`] stores its instance as a record in the
//! core's open segment (docs/design/segments.md). It differs in three
//! places and keeps the rest of the order:
//!
//! - *Receiving*: the service copies each data fragment into the instance's
//!   aligned buffer; the job takes no [`JobInput::Data`], issues no write
//!   and holds no receive buffer. When the buffer would pass
//!   `storage.segment_record_max`, or grow past the core's
//!   `storage.record_memory_per_core`, or when the instance is bound for
//!   quarantine (which stays files), the service writes what the buffer
//!   holds to a temporary file ([`JobInput::Spill`], the buffer itself
//!   lent to the write) and the job goes on as a files-layout job from
//!   there.
//! - *Whole and accepted*: one [`Step::WriteRecord`] (the seal applied in
//!   the buffer, the record encoded and written with one `O_DIRECT` write
//!   at the place the service reserved), and the entry queued beside it as
//!   for a file. There is no [`Step::Place`] and no [`Step::SyncName`]: a
//!   record is placed from the start and its name is the segment's, made
//!   durable when the segment was created. Once the write completed,
//!   [`Step::SyncData`] joins the segment's flush round.
//! - *Failure*: a record has nothing to close and nothing to discard (its
//!   place is dead bytes; an entry that committed is undone as for a file).
//!
//! The job does not count durability failures, log, or touch the in-doubt
//! set: those are the service's, at the io completion that reports them.

use std::fmt;

use sluice_index::{Disposition, StoreOutcome};
use sluice_io::{IoBuf, IOVECS_PER_WRITE_MAX};

use crate::scp::failure::Failure;
use crate::store::part10::SEAL_BYTES;

/// A job of one core: its tags' value, unique for the core's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct JobKey(pub(crate) u64);

/// When the index entry is committed, relative to the two syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitOrder {
    /// Queued as soon as the data set is whole and accepted, marked in
    /// doubt; the answer waits for the syncs too.
    BesideSyncs,
    /// Queued once both syncs succeeded (the `replace` duplicate policy).
    AfterSyncs,
}

/// The head scanner's verdict on a whole data set.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Acceptable: the seal to write over the header's last bytes.
    Accepted {
        /// The data set's length and checksum.
        seal: [u8; SEAL_BYTES],
    },
    /// Refused with this failure.
    Refused(Failure),
    /// Not checked: the job had already failed while receiving.
    Unchecked,
}

/// What happened to a job.
#[derive(Debug)]
pub(crate) enum JobInput {
    /// A data-set fragment arrived: bytes to write next (files only: a
    /// record's bytes are copied by the service).
    Data(IoBuf),
    /// Record mode, receiving: the bytes so far (the Part 10 header and the
    /// data set's start) go to a temporary file whose open was just
    /// submitted; the job goes on as a files-layout job, these bytes its
    /// first write.
    Spill(IoBuf),
    /// The receive buffer is consumed: write what is pending.
    Flush,
    /// The last fragment arrived.
    Complete(Verdict),
    /// The temporary file's open completed.
    Opened(Result<(), Failure>),
    /// A [`Step::Write`], [`Step::WriteSeal`] or [`Step::WriteRecord`]
    /// completed (or could not be submitted).
    Written(Result<(), Failure>),
    /// [`Step::Place`] completed.
    Placed(Result<(), Failure>),
    /// [`Step::SyncData`] completed.
    DataSynced(Result<(), Failure>),
    /// The name sync round [`Step::SyncName`] joined ended.
    NameSynced(Result<(), Failure>),
    /// The batcher builds a batch with the entry [`Step::QueueForIndex`]
    /// queued.
    Batched,
    /// The index answered the entry's store ([`Step::Index`]).
    Committed(Result<StoreOutcome, Failure>),
    /// The index answered the [`Step::Undo`].
    Undone(Result<(), Failure>),
    /// A failure outside the job's own steps.
    Failed(Failure),
    /// The association ended while the data set was arriving.
    AssociationEnded,
}

/// The C-STORE's answer.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Durable and indexed: what the index decided.
    Stored(StoreOutcome),
    /// Failed: nothing of the instance is kept.
    Failed(Failure),
}

/// What to do next for a job, in order.
#[derive(Debug)]
pub(crate) enum Step {
    /// Write these bytes at this offset of the instance's file.
    Write {
        /// Where.
        offset: u64,
        /// What (at most `IOVECS_PER_WRITE_MAX` buffers).
        bufs: Vec<IoBuf>,
    },
    /// Write the seal at this offset (completes as [`JobInput::Written`]).
    WriteSeal {
        /// Where.
        offset: u64,
        /// The data set's length and checksum.
        seal: [u8; SEAL_BYTES],
    },
    /// Record mode: apply the seal to the header in the instance's buffer,
    /// encode the record and write it, in one write, at its reserved place
    /// (completes as [`JobInput::Written`]).
    WriteRecord {
        /// The data set's length and checksum.
        seal: [u8; SEAL_BYTES],
    },
    /// Layout: move the written file into its area (files: the rename).
    Place,
    /// Layout: make the data durable (files: `fdatasync`; records: join
    /// the segment's flush round).
    SyncData,
    /// Layout: make the name durable (files: join the directory's fsync
    /// round).
    SyncName,
    /// Hand the entry to the batcher.
    QueueForIndex,
    /// The entry goes into the batch being built.
    Index {
        /// Committed in doubt (its file not yet durable).
        in_doubt: bool,
    },
    /// Undo the committed entry (the stored instance's or the quarantine
    /// entry: the one that names this file).
    Undo,
    /// Layout: close the file (files: the open handle).
    Close,
    /// Layout: remove what was written (files: unlink it where it is).
    Discard {
        /// Where: placed in its area, or still temporary.
        placed: bool,
    },
    /// Answer the C-STORE.
    Answer(Answer),
}

/// The steps of one input.
pub(crate) type Steps = Vec<Step>;

/// Where the job is.
#[derive(Debug, Clone)]
enum Phase {
    /// Fragments arriving.
    Receiving,
    /// Whole and accepted: the last writes and the seal (and maybe the open)
    /// in flight.
    Writing,
    /// The rename into the area in flight.
    Placing,
    /// Placed: the data and name syncs.
    Syncing { data: Progress, name: Progress },
    /// Data and name durable: waiting for the index entry.
    Indexing,
    /// Failed: draining the data set or waiting for what is in flight
    /// before the answer.
    Failed(Failing),
    /// Answered (or abandoned): nothing more.
    Done,
}

#[derive(Debug, Clone)]
struct Failing {
    /// What is answered; `None` when the association ended while the data
    /// set arrived (nothing is answered).
    failure: Option<Failure>,
    /// The data set arrived whole (else it is still being drained).
    whole: bool,
    /// The data sync, if it was started.
    data: Progress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    NotStarted,
    InFlight,
    Done,
}

/// The instance's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum File {
    /// The open is in flight.
    Opening,
    /// Open, in its temporary place.
    Open,
    /// Open, its rename into the area in flight (at either name until it
    /// completes).
    Placing,
    /// Open, renamed into its area.
    Placed,
    /// Closed after the data sync; it stays where it is.
    Closed,
    /// The open failed: there is no file.
    NotOpened,
    /// Closed and discarded after a failure.
    Discarded,
    /// A record in the core's open segment: placed from the start, its
    /// name durable with the segment's; nothing to close, and discarding it
    /// is nothing on disk (its place is dead bytes).
    Record,
}

/// The seal's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seal {
    /// Not known yet (the data set is not whole).
    Unknown,
    /// Known, to write once the file is open.
    Due([u8; SEAL_BYTES]),
    /// Submitted.
    Submitted,
}

/// The index entry.
// Held inside a `Job`, which is larger still; boxing the outcome would cost
// an allocation per instance for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Entry {
    /// Not submitted (or gone again: failed, undone).
    Absent,
    /// With the batcher.
    Queued,
    /// In a submitted batch.
    InFlight,
    /// Committed; the answer waits for the syncs.
    Committed(StoreOutcome),
    /// The undo is in flight.
    Undoing,
}

/// Data-set bytes on their way to the file.
#[derive(Debug, Clone)]
struct Writes {
    /// Waiting for the open, or for the end of the receive buffer.
    pending: Vec<IoBuf>,
    /// Where the next write goes (bytes handed to writes so far).
    offset: u64,
    /// Submitted and not completed (the seal's included).
    in_flight: u32,
}

/// Whether a new failure replaces the one recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Supersede {
    /// The latest failure is answered.
    Yes,
    /// Recorded only if none is.
    No,
}

/// One instance's ingest job (see the module documentation).
#[derive(Clone)]
pub(crate) struct Job {
    phase: Phase,
    file: File,
    writes: Writes,
    seal: Seal,
    entry: Entry,
    commit: CommitOrder,
    header_bytes: u64,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("phase", &self.phase)
            .field("file", &self.file)
            .field("writes_pending", &self.writes.pending.len())
            .field("writes_in_flight", &self.writes.in_flight)
            .field("seal", &matches!(self.seal, Seal::Submitted))
            .field("entry", &self.entry)
            .finish()
    }
}

impl Job {
    /// A job whose temporary file's open was just submitted, with the Part
    /// 10 header (ending with the seal's placeholder) as its first write.
    pub(crate) fn new(header: Vec<u8>, commit: CommitOrder) -> Job {
        let header_bytes = header.len() as u64;
        assert!(
            header_bytes >= SEAL_BYTES as u64,
            "the header holds the seal"
        );
        Job {
            phase: Phase::Receiving,
            file: File::Opening,
            writes: Writes {
                pending: vec![IoBuf::from(header)],
                offset: 0,
                in_flight: 0,
            },
            seal: Seal::Unknown,
            entry: Entry::Absent,
            commit,
            header_bytes,
        }
    }

    /// A record-mode job (the segments layout): its Part 10 header, of
    /// `header_bytes` ending with the seal's placeholder, is the start of
    /// the instance's buffer, which the service fills while receiving.
    pub(crate) fn new_record(header_bytes: u64, commit: CommitOrder) -> Job {
        assert!(
            header_bytes >= SEAL_BYTES as u64,
            "the header holds the seal"
        );
        Job {
            phase: Phase::Receiving,
            file: File::Record,
            writes: Writes {
                pending: Vec::new(),
                offset: 0,
                in_flight: 0,
            },
            seal: Seal::Unknown,
            entry: Entry::Absent,
            commit,
            header_bytes,
        }
    }

    /// Takes one input; appends the steps to take, in order, to `steps`
    /// (the caller's buffer, reused between inputs so that taking an input
    /// allocates nothing).
    pub(crate) fn on(&mut self, input: JobInput, steps: &mut Steps) {
        assert!(!self.is_done(), "input {input:?} for a finished job");
        match input {
            JobInput::Data(buf) => self.data(buf, steps),
            JobInput::Spill(buf) => self.spill(buf),
            JobInput::Flush => self.flush(steps),
            JobInput::Complete(verdict) => self.complete(verdict, steps),
            JobInput::Opened(result) => self.opened(result, steps),
            JobInput::Written(result) => self.written(result, steps),
            JobInput::Placed(result) => self.placed(result, steps),
            JobInput::DataSynced(result) => self.data_synced(result, steps),
            JobInput::NameSynced(result) => self.name_synced(result, steps),
            JobInput::Batched => self.batched(steps),
            JobInput::Committed(result) => self.committed(result, steps),
            JobInput::Undone(result) => self.undone(result, steps),
            JobInput::Failed(failure) => {
                self.fail(failure, Supersede::No);
                self.try_finish(steps);
            }
            JobInput::AssociationEnded => self.abandon(steps),
        }
    }

    /// Answered or abandoned: the service drops the job.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Failed (and not finished): the rest of the data set is dropped
    /// unread by the scanner and the hasher.
    pub(crate) fn has_failed(&self) -> bool {
        matches!(self.phase, Phase::Failed(_))
    }

    /// Whole, accepted, and its entry not yet queued: another instance's
    /// entry is worth a group-commit window's wait for it.
    pub(crate) fn will_queue_for_index(&self) -> bool {
        matches!(
            self.phase,
            Phase::Writing | Phase::Placing | Phase::Syncing { .. }
        ) && matches!(self.entry, Entry::Absent)
    }

    /// Record mode: the instance's bytes are the service's buffer, to be
    /// written as one record.
    pub(crate) fn is_record(&self) -> bool {
        self.file == File::Record
    }

    /// Whether the entry is committed in doubt, beside the syncs.
    pub(crate) fn commit_order(&self) -> CommitOrder {
        self.commit
    }

    // ----- receiving -----

    fn data(&mut self, buf: IoBuf, steps: &mut Steps) {
        assert_ne!(
            self.file,
            File::Record,
            "a record's bytes are copied by the service, never lent"
        );
        match &self.phase {
            // A fragment of no bytes (an empty data set's last PDV) adds
            // nothing to write: the io layer refuses a write of no bytes.
            Phase::Receiving if buf.is_empty() => {}
            Phase::Receiving => {
                self.writes.pending.push(buf);
                if self.writes.pending.len() >= IOVECS_PER_WRITE_MAX {
                    self.issue_writes(steps);
                }
            }
            // Failed while receiving: the rest of the data set is dropped.
            Phase::Failed(Failing { whole: false, .. }) => {}
            other => panic!("data-set bytes in phase {other:?}"),
        }
    }

    /// Record mode, receiving: the buffer went to a temporary file (its
    /// open submitted); from here on a files-layout job.
    fn spill(&mut self, buf: IoBuf) {
        assert!(
            matches!(self.phase, Phase::Receiving) && self.file == File::Record,
            "a spill of a job not receiving a record: {self:?}"
        );
        self.file = File::Opening;
        if !buf.is_empty() {
            self.writes.pending.push(buf);
        }
    }

    fn flush(&mut self, steps: &mut Steps) {
        match &self.phase {
            Phase::Receiving => self.issue_writes(steps),
            Phase::Failed(Failing { whole: false, .. }) => {}
            other => panic!("a flush in phase {other:?}"),
        }
    }

    /// Submits the pending bytes, at most `IOVECS_PER_WRITE_MAX` buffers per
    /// write, once the file is open.
    fn issue_writes(&mut self, steps: &mut Steps) {
        if self.file != File::Open {
            // The bytes wait for the open (or are dropped with the file).
            return;
        }
        while !self.writes.pending.is_empty() {
            let take = self.writes.pending.len().min(IOVECS_PER_WRITE_MAX);
            let bufs: Vec<IoBuf> = self.writes.pending.drain(..take).collect();
            let length: u64 = bufs.iter().map(|buf| buf.len() as u64).sum();
            debug_assert!(
                bufs.iter().all(|buf| !buf.is_empty()),
                "an empty buffer to write"
            );
            steps.push(Step::Write {
                offset: self.writes.offset,
                bufs,
            });
            self.writes.offset += length;
            self.writes.in_flight += 1;
        }
    }

    /// Writes the seal once every earlier write of the file completed:
    /// two writes in flight are not ordered (the portable backend's helper
    /// threads, io_uring's workers), and the header's write, whose seal
    /// bytes are zeros, must not land after it.
    fn write_seal(&mut self, steps: &mut Steps) {
        if self.writes.in_flight > 0 || !self.writes.pending.is_empty() {
            return;
        }
        if let (File::Open, Seal::Due(seal)) = (self.file, self.seal) {
            steps.push(Step::WriteSeal {
                offset: self.header_bytes - SEAL_BYTES as u64,
                seal,
            });
            self.seal = Seal::Submitted;
            self.writes.in_flight += 1;
        }
    }

    fn complete(&mut self, verdict: Verdict, steps: &mut Steps) {
        match &mut self.phase {
            Phase::Receiving => {
                self.issue_writes(steps);
                match verdict {
                    Verdict::Accepted { seal } if self.file == File::Record => {
                        // The record's one write, then the entry beside it
                        // (after: the write's step is where the service
                        // knows the record's place, which the entry names).
                        self.phase = Phase::Writing;
                        self.seal = Seal::Submitted;
                        self.writes.in_flight += 1;
                        steps.push(Step::WriteRecord { seal });
                        if self.commit == CommitOrder::BesideSyncs {
                            self.entry = Entry::Queued;
                            steps.push(Step::QueueForIndex);
                        }
                    }
                    Verdict::Accepted { seal } => {
                        self.phase = Phase::Writing;
                        self.seal = Seal::Due(seal);
                        self.write_seal(steps);
                        if self.commit == CommitOrder::BesideSyncs {
                            self.entry = Entry::Queued;
                            steps.push(Step::QueueForIndex);
                        }
                        self.maybe_place(steps);
                    }
                    Verdict::Refused(failure) => {
                        self.writes.pending.clear();
                        self.phase = Phase::Failed(Failing {
                            failure: Some(failure),
                            whole: true,
                            data: Progress::NotStarted,
                        });
                        self.try_finish(steps);
                    }
                    Verdict::Unchecked => {
                        panic!("a data set of a job that had not failed unchecked")
                    }
                }
            }
            Phase::Failed(failing) if !failing.whole => {
                // The head was not checked: the job's own failure stands.
                failing.whole = true;
                self.try_finish(steps);
            }
            other => panic!("a data set completed in phase {other:?}"),
        }
    }

    fn opened(&mut self, result: Result<(), Failure>, steps: &mut Steps) {
        assert_eq!(self.file, File::Opening, "an open completed twice");
        match result {
            Ok(()) => {
                self.file = File::Open;
                match &self.phase {
                    Phase::Receiving => self.issue_writes(steps),
                    Phase::Writing => {
                        self.issue_writes(steps);
                        self.write_seal(steps);
                        self.maybe_place(steps);
                    }
                    // Failed (or abandoned) while the open was in flight:
                    // nothing of the instance stays.
                    Phase::Failed(_) => self.try_finish(steps),
                    other => panic!("an open completed in phase {other:?}"),
                }
            }
            Err(failure) => {
                self.file = File::NotOpened;
                self.writes.pending.clear();
                self.fail(failure, Supersede::Yes);
                self.try_finish(steps);
            }
        }
    }

    fn written(&mut self, result: Result<(), Failure>, steps: &mut Steps) {
        assert!(
            self.writes.in_flight > 0,
            "a write completed that was not in flight"
        );
        self.writes.in_flight -= 1;
        if let Err(failure) = result {
            self.fail(failure, Supersede::No);
        }
        match &self.phase {
            Phase::Receiving => {}
            // The record's one write: written, it joins the segment's flush;
            // its name is the segment's, durable already.
            Phase::Writing if self.file == File::Record => {
                debug_assert_eq!(self.writes.in_flight, 0, "a record is one write");
                self.phase = Phase::Syncing {
                    data: Progress::InFlight,
                    name: Progress::Done,
                };
                steps.push(Step::SyncData);
            }
            Phase::Writing => {
                self.write_seal(steps);
                self.maybe_place(steps);
            }
            Phase::Failed(_) => self.try_finish(steps),
            other => panic!("a write completed in phase {other:?}"),
        }
    }

    /// Every byte and the seal written to an open file: place it (step 3).
    fn maybe_place(&mut self, steps: &mut Steps) {
        debug_assert!(matches!(self.phase, Phase::Writing));
        if self.file == File::Open
            && self.seal == Seal::Submitted
            && self.writes.in_flight == 0
            && self.writes.pending.is_empty()
        {
            self.phase = Phase::Placing;
            self.file = File::Placing;
            steps.push(Step::Place);
        }
    }

    // ----- durable -----

    fn placed(&mut self, result: Result<(), Failure>, steps: &mut Steps) {
        assert_eq!(self.file, File::Placing, "a placement completed twice");
        match (&self.phase, result) {
            (Phase::Placing, Ok(())) => {
                self.file = File::Placed;
                self.phase = Phase::Syncing {
                    data: Progress::InFlight,
                    name: Progress::InFlight,
                };
                steps.push(Step::SyncData);
                steps.push(Step::SyncName);
            }
            // Failed while the rename was in flight (the index answered):
            // the file is discarded where the rename left it, so a renamed,
            // sealed file is never left for recovery to index again.
            (Phase::Failed(_), Ok(())) => {
                self.file = File::Placed;
                self.try_finish(steps);
            }
            (Phase::Placing | Phase::Failed(_), Err(failure)) => {
                // Still at its temporary name.
                self.file = File::Open;
                self.fail(failure, Supersede::Yes);
                self.try_finish(steps);
            }
            (other, _) => panic!("a placement completed in phase {other:?}"),
        }
    }

    fn data_synced(&mut self, result: Result<(), Failure>, steps: &mut Steps) {
        // The file is closed whatever the sync's outcome: it stays where it
        // is until the answer (and is unlinked if the instance fails). A
        // record has nothing to close.
        match self.file {
            File::Placed => {
                steps.push(Step::Close);
                self.file = File::Closed;
            }
            File::Record => {}
            other => panic!("a data sync of a file {other:?}"),
        }
        let data = match &mut self.phase {
            Phase::Syncing { data, .. } => data,
            Phase::Failed(failing) => &mut failing.data,
            other => panic!("a data sync completed in phase {other:?}"),
        };
        assert_eq!(*data, Progress::InFlight, "a data sync completed twice");
        *data = Progress::Done;
        match result {
            Ok(()) => {
                self.maybe_durable(steps);
                self.try_finish(steps);
            }
            Err(failure) => {
                // Final: an fsync error is never retried into a success.
                self.fail(failure, Supersede::Yes);
                self.try_finish(steps);
            }
        }
    }

    fn name_synced(&mut self, result: Result<(), Failure>, steps: &mut Steps) {
        match (&mut self.phase, result) {
            (Phase::Syncing { name, .. }, Ok(())) => {
                assert_eq!(*name, Progress::InFlight);
                *name = Progress::Done;
                self.maybe_durable(steps);
            }
            (Phase::Syncing { .. }, Err(failure)) => {
                self.fail(failure, Supersede::Yes);
                self.try_finish(steps);
            }
            // Nothing waits for the round of a failed job; a failed round
            // still names the failure it answers.
            (Phase::Failed(_), Ok(())) => {}
            (Phase::Failed(_), Err(failure)) => {
                self.fail(failure, Supersede::Yes);
                self.try_finish(steps);
            }
            (other, _) => panic!("a name sync ended in phase {other:?}"),
        }
    }

    /// Data and name durable: answer if the entry committed, else wait for
    /// it (queueing it now under [`CommitOrder::AfterSyncs`]).
    fn maybe_durable(&mut self, steps: &mut Steps) {
        let Phase::Syncing {
            data: Progress::Done,
            name: Progress::Done,
        } = self.phase
        else {
            // The other sync is still in flight.
            return;
        };
        self.phase = Phase::Indexing;
        match (self.commit, &self.entry) {
            (CommitOrder::AfterSyncs, Entry::Absent) => {
                self.entry = Entry::Queued;
                steps.push(Step::QueueForIndex);
            }
            (CommitOrder::BesideSyncs, Entry::Committed(_)) => {
                let Entry::Committed(outcome) = std::mem::replace(&mut self.entry, Entry::Absent)
                else {
                    unreachable!()
                };
                self.succeed(outcome, steps);
            }
            (CommitOrder::BesideSyncs, Entry::Queued | Entry::InFlight) => {}
            (commit, entry) => panic!("durable with entry {entry:?} under {commit:?}"),
        }
    }

    fn succeed(&mut self, outcome: StoreOutcome, steps: &mut Steps) {
        debug_assert!(matches!(self.phase, Phase::Indexing));
        debug_assert!(matches!(self.file, File::Closed | File::Record));
        if self.file == File::Closed
            && matches!(
                outcome.disposition(),
                Some(Disposition::Dropped | Disposition::Rejected)
            )
        {
            // The index wrote nothing: the file is referenced by nothing.
            steps.push(Step::Discard { placed: true });
        }
        steps.push(Step::Answer(Answer::Stored(outcome)));
        self.phase = Phase::Done;
    }

    // ----- the index entry -----

    fn batched(&mut self, steps: &mut Steps) {
        assert!(
            matches!(self.entry, Entry::Queued),
            "batched with entry {:?}",
            self.entry
        );
        if self.has_failed() {
            // Failed while queued: nothing to index.
            self.entry = Entry::Absent;
            self.try_finish(steps);
            return;
        }
        self.entry = Entry::InFlight;
        steps.push(Step::Index {
            in_doubt: self.commit == CommitOrder::BesideSyncs,
        });
    }

    fn committed(&mut self, result: Result<StoreOutcome, Failure>, steps: &mut Steps) {
        assert!(
            matches!(self.entry, Entry::InFlight),
            "a commit answered with entry {:?}",
            self.entry
        );
        match result {
            Ok(outcome) => match self.phase {
                Phase::Indexing => {
                    self.entry = Entry::Absent;
                    self.succeed(outcome, steps);
                }
                Phase::Writing | Phase::Placing | Phase::Syncing { .. } => {
                    debug_assert_eq!(self.commit, CommitOrder::BesideSyncs);
                    self.entry = Entry::Committed(outcome);
                }
                Phase::Failed(_) => {
                    self.entry = Entry::Committed(outcome);
                    self.try_finish(steps);
                }
                ref other => panic!("a commit answered in phase {other:?}"),
            },
            // Nothing of the batch was committed.
            Err(failure) => {
                self.entry = Entry::Absent;
                self.fail(failure, Supersede::Yes);
                self.try_finish(steps);
            }
        }
    }

    fn undone(&mut self, result: Result<(), Failure>, steps: &mut Steps) {
        assert!(
            matches!(self.entry, Entry::Undoing),
            "an undo answered with entry {:?}",
            self.entry
        );
        assert!(self.has_failed(), "an undo of a job that has not failed");
        self.entry = Entry::Absent;
        if let Err(failure) = result {
            // The service keeps the removal owed (every later index
            // transaction carries it until one commits), so a retry is
            // never matched against the entry; the index's failure is
            // answered.
            self.fail(failure, Supersede::Yes);
        }
        self.try_finish(steps);
    }

    // ----- failure -----

    /// Records a failure (the rest of the data set is then drained if it
    /// is still arriving). Every caller then calls [`Job::try_finish`],
    /// which discards the file and answers once nothing is in flight.
    fn fail(&mut self, failure: Failure, supersede: Supersede) {
        let (whole, data) = match &mut self.phase {
            Phase::Receiving => (false, Progress::NotStarted),
            Phase::Writing | Phase::Placing => (true, Progress::NotStarted),
            Phase::Indexing => (true, Progress::Done),
            Phase::Syncing { data, .. } => (true, *data),
            Phase::Failed(failing) => {
                // An abandoned job stays unanswered.
                if supersede == Supersede::Yes && failing.failure.is_some() {
                    failing.failure = Some(failure);
                }
                return;
            }
            Phase::Done => panic!("a failure of a finished job"),
        };
        self.writes.pending.clear();
        self.phase = Phase::Failed(Failing {
            failure: Some(failure),
            whole,
            data,
        });
    }

    /// Closes and discards the file of a failed job, wherever it is; only
    /// once no operation on it is in flight.
    fn discard(&mut self, steps: &mut Steps) {
        match self.file {
            File::Open | File::Placed => {
                steps.push(Step::Close);
                steps.push(Step::Discard {
                    placed: self.file == File::Placed,
                });
            }
            File::Closed => steps.push(Step::Discard { placed: true }),
            File::NotOpened | File::Discarded => return,
            // Nothing on disk to remove: its place (if it was written) is
            // dead bytes in the segment.
            File::Record => return,
            File::Opening | File::Placing => {
                panic!("discarding a file whose {:?} is in flight", self.file)
            }
        }
        self.file = File::Discarded;
    }

    /// A failed job: undo a committed entry; once nothing is in flight on
    /// the file, discard it; once the data set is whole and the entry
    /// settled too, answer the failure (or nothing, if abandoned).
    fn try_finish(&mut self, steps: &mut Steps) {
        let Phase::Failed(failing) = &self.phase else {
            return;
        };
        let file_busy = matches!(self.file, File::Opening | File::Placing)
            || self.writes.in_flight > 0
            || failing.data == Progress::InFlight;
        let whole = failing.whole;
        if !file_busy {
            self.discard(steps);
        }
        if !whole || file_busy {
            return;
        }
        if let Entry::Committed(outcome) = &self.entry {
            let wrote_an_entry = match outcome.disposition() {
                None | Some(Disposition::Quarantined { .. }) => true,
                // Nothing was written.
                Some(Disposition::Dropped | Disposition::Rejected) => false,
                // Only `replace` replaces, and it commits after the syncs,
                // when nothing can fail any more.
                Some(other) => panic!("an undo of disposition {other:?}"),
            };
            if wrote_an_entry {
                self.entry = Entry::Undoing;
                steps.push(Step::Undo);
            } else {
                self.entry = Entry::Absent;
            }
        }
        if matches!(self.entry, Entry::InFlight | Entry::Undoing) {
            return;
        }
        // A queued entry is left to the batcher, which skips a finished
        // job, and a directory round to its directory: neither touches the
        // file.
        let Phase::Failed(failing) = std::mem::replace(&mut self.phase, Phase::Done) else {
            unreachable!()
        };
        if let Some(failure) = failing.failure {
            steps.push(Step::Answer(Answer::Failed(failure)));
        }
    }

    /// The association ended while the data set arrived: nothing of the
    /// instance stays, nothing is answered; the job ends once its open and
    /// writes in flight completed and its file is discarded.
    fn abandon(&mut self, steps: &mut Steps) {
        match &mut self.phase {
            Phase::Receiving => {
                self.writes.pending.clear();
                self.phase = Phase::Failed(Failing {
                    failure: None,
                    whole: true,
                    data: Progress::NotStarted,
                });
            }
            Phase::Failed(failing) if !failing.whole => {
                failing.failure = None;
                failing.whole = true;
            }
            other => panic!("abandoned in phase {other:?}"),
        }
        debug_assert!(matches!(self.entry, Entry::Absent));
        self.try_finish(steps);
    }
}

#[cfg(test)]
mod tests;
