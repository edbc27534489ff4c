//! The durability order, checked by table: for each scenario (commit order,
//! what the index decides, what the sender does, how many failures may be
//! injected), every ordering of the completions the job waits for (the open,
//! each write and the seal, the placement, the data and name syncs, the
//! batch, the commit, the undo) and every failure point is walked, and each
//! walk is checked against the rules of the module documentation.

use std::collections::VecDeque;

use sluice_index::{IndexError, InstanceRecord};
use sluice_io::{IoError, OpKind};
use sluice_net::dimse::Status;
use sluice_net::scan::StoreRejection;

use super::*;

/// What the sender does, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// A receive buffer's fragment.
    Data,
    /// A fragment of no bytes (the last PDV of an empty data set).
    Empty,
    /// The end of that receive buffer.
    Flush,
    /// The last fragment; the head is acceptable.
    Complete,
    /// The last fragment; the head is refused.
    Refused,
    /// The association ends.
    End,
    /// Record mode: the buffer goes to a temporary file (past
    /// `segment_record_max`, or bound for quarantine); a files-layout job
    /// from here on.
    Spill,
}

/// An operation the job started and the world has not completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Open,
    Write,
    Seal,
    /// A record's one write.
    Record,
    Place,
    SyncData,
    SyncName,
    Batch,
    Commit,
    Undo,
}

impl Op {
    /// Whether the world can fail it (the batcher only builds a batch).
    fn can_fail(self) -> bool {
        self != Op::Batch
    }

    fn failure(self) -> Failure {
        let io = |op| IoError { op, errno: 5 };
        match self {
            Op::Open => Failure::Open(io(OpKind::Open)),
            Op::Write | Op::Seal | Op::Record => Failure::Write(io(OpKind::Write)),
            Op::Place => Failure::Rename(io(OpKind::Rename)),
            Op::SyncData | Op::SyncName => Failure::Fsync(io(OpKind::Sync)),
            Op::Batch | Op::Commit | Op::Undo => {
                Failure::IndexCommit(IndexError::MapFull { map_size_bytes: 1 })
            }
        }
    }
}

/// One walk's world: the job, what is outstanding, and what happened.
#[derive(Clone)]
struct World {
    job: Job,
    commit: CommitOrder,
    outcome: StoreOutcome,
    script: VecDeque<Sender>,
    outstanding: Vec<Op>,
    failures_left: u32,
    trace: Vec<String>,
    // What happened, for the checks.
    failed: bool,
    whole: bool,
    abandoned: bool,
    /// The open completed: a file exists, to be kept or discarded.
    opened: bool,
    handle_open: bool,
    placed: bool,
    seal_written: bool,
    data_durable: bool,
    name_durable: bool,
    committed: bool,
    undo_needed: bool,
    undone: bool,
    discarded: bool,
    answers: Vec<Status>,
    /// Record mode (until a spill).
    record: bool,
    record_written: bool,
}

impl World {
    fn new(commit: CommitOrder, outcome: StoreOutcome, script: &[Sender], failures: u32) -> World {
        World {
            job: Job::new(vec![0; 132 + SEAL_BYTES], commit),
            commit,
            outcome,
            script: script.iter().copied().collect(),
            outstanding: vec![Op::Open],
            failures_left: failures,
            trace: vec!["open submitted".into()],
            failed: false,
            whole: false,
            abandoned: false,
            opened: false,
            handle_open: false,
            placed: false,
            seal_written: false,
            data_durable: false,
            name_durable: false,
            committed: false,
            undo_needed: false,
            undone: false,
            discarded: false,
            answers: Vec::new(),
            record: false,
            record_written: false,
        }
    }

    /// A record-mode job: no open, placed from the start, its name the
    /// segment's (durable).
    fn new_record(
        commit: CommitOrder,
        outcome: StoreOutcome,
        script: &[Sender],
        failures: u32,
    ) -> World {
        let mut world = World::new(commit, outcome, script, failures);
        world.job = Job::new_record(132 + SEAL_BYTES as u64, commit);
        world.outstanding.clear();
        world.trace = vec!["record job".into()];
        world.record = true;
        world.placed = true;
        world.name_durable = true;
        world
    }

    fn fail_walk(&self, rule: &str) -> ! {
        panic!("{rule}\nwalk:\n  {}", self.trace.join("\n  "));
    }

    fn check(&self, holds: bool, rule: &str) {
        if !holds {
            self.fail_walk(rule);
        }
    }

    /// What the world may do next: the sender's next event, or complete an
    /// outstanding operation (with success, or with a failure while the
    /// budget lasts).
    fn choices(&self) -> Vec<Choice> {
        let mut choices = Vec::new();
        if self.job.is_done() {
            return choices;
        }
        if let Some(&next) = self.script.front() {
            choices.push(Choice::Sender(next));
        }
        for (position, op) in self.outstanding.iter().enumerate() {
            choices.push(Choice::Complete(position, true));
            if self.failures_left > 0 && op.can_fail() {
                choices.push(Choice::Complete(position, false));
            }
        }
        choices
    }

    fn take(&mut self, choice: Choice) {
        let input = match choice {
            Choice::Sender(event) => {
                self.script.pop_front();
                self.trace.push(format!("sender: {event:?}"));
                match event {
                    // The service copies a record's bytes into its buffer:
                    // the job sees nothing of them.
                    Sender::Data | Sender::Empty if self.record => return,
                    Sender::Data => JobInput::Data(IoBuf::from(vec![7u8; 64])),
                    Sender::Empty => JobInput::Data(IoBuf::from(Vec::new())),
                    // The service spills only a job that has not failed (a
                    // failed one drops the rest of its data set).
                    Sender::Spill if !self.record || self.job.has_failed() => return,
                    Sender::Spill => {
                        self.record = false;
                        self.placed = false;
                        self.name_durable = false;
                        self.outstanding.push(Op::Open);
                        JobInput::Spill(IoBuf::from(vec![7u8; 200]))
                    }
                    Sender::Flush => JobInput::Flush,
                    Sender::Complete | Sender::Refused => {
                        self.whole = true;
                        let verdict = if self.job.has_failed() {
                            Verdict::Unchecked
                        } else if event == Sender::Refused {
                            self.failed = true;
                            Verdict::Refused(Failure::Rejected(StoreRejection::NoPixelData))
                        } else {
                            Verdict::Accepted {
                                seal: [1; SEAL_BYTES],
                            }
                        };
                        JobInput::Complete(verdict)
                    }
                    Sender::End => {
                        self.abandoned = true;
                        JobInput::AssociationEnded
                    }
                }
            }
            Choice::Complete(position, ok) => {
                let op = self.outstanding.remove(position);
                if !ok {
                    self.failures_left -= 1;
                    self.failed = true;
                }
                self.trace.push(format!(
                    "{op:?} {}",
                    if ok { "completed" } else { "FAILED" }
                ));
                let result = if ok { Ok(()) } else { Err(op.failure()) };
                match op {
                    Op::Open => {
                        self.handle_open = ok;
                        self.opened = ok;
                        JobInput::Opened(result)
                    }
                    Op::Write => JobInput::Written(result),
                    Op::Record => {
                        self.record_written = ok;
                        JobInput::Written(result)
                    }
                    Op::Seal => {
                        self.seal_written = ok;
                        JobInput::Written(result)
                    }
                    Op::Place => {
                        self.placed = ok;
                        JobInput::Placed(result)
                    }
                    Op::SyncData => {
                        self.data_durable = ok;
                        JobInput::DataSynced(result)
                    }
                    Op::SyncName => {
                        self.name_durable = ok;
                        JobInput::NameSynced(result)
                    }
                    Op::Batch => JobInput::Batched,
                    Op::Commit => {
                        self.committed = ok;
                        self.undo_needed = ok
                            && !matches!(
                                self.outcome.disposition(),
                                Some(Disposition::Dropped | Disposition::Rejected)
                            );
                        JobInput::Committed(result.map(|()| self.outcome.clone()))
                    }
                    Op::Undo => {
                        self.undone = true;
                        JobInput::Undone(result)
                    }
                }
            }
        };
        let mut steps = Vec::new();
        self.job.on(input, &mut steps);
        for step in steps {
            self.apply(step);
        }
    }

    /// Checks one step against the rules and records what it starts.
    fn apply(&mut self, step: Step) {
        self.trace.push(format!("  step {}", describe(&step)));
        self.check(self.answers.is_empty(), "a step after the answer");
        match step {
            Step::Write { bufs, .. } => {
                self.check(self.handle_open, "a write to a file that is not open");
                self.check(bufs.len() <= IOVECS_PER_WRITE_MAX, "too many buffers");
                // The io layer refuses a write of no bytes (it was answered
                // A710 instead of the head checks' status).
                self.check(
                    bufs.iter().all(|buf| !buf.is_empty()),
                    "an empty buffer written",
                );
                self.outstanding.push(Op::Write);
            }
            Step::WriteSeal { offset, .. } => {
                self.check(
                    self.handle_open,
                    "the seal written to a file that is not open",
                );
                self.check(offset == 132, "the seal is the header's last bytes");
                // Two writes in flight are not ordered (the portable
                // backend's helper threads, io_uring's workers): the header,
                // whose seal bytes are zeros, could land after the seal.
                self.check(
                    !self.outstanding.contains(&Op::Write),
                    "the seal written while an earlier write is in flight",
                );
                self.check(
                    !self.outstanding.contains(&Op::Seal) && !self.seal_written,
                    "the seal written twice",
                );
                self.outstanding.push(Op::Seal);
            }
            Step::WriteRecord { .. } => {
                self.check(self.record, "a record written by a files-layout job");
                self.check(
                    self.whole && !self.failed,
                    "a record written before the data set was whole and accepted",
                );
                self.check(
                    !self.record_written && !self.outstanding.contains(&Op::Record),
                    "a record written twice",
                );
                self.outstanding.push(Op::Record);
            }
            Step::Place => {
                self.check(
                    self.seal_written
                        && !self
                            .outstanding
                            .iter()
                            .any(|op| matches!(op, Op::Write | Op::Seal)),
                    "placed before every write and the seal completed",
                );
                self.check(!self.failed, "placed after a failure");
                self.check(self.handle_open, "placed a file that is not open");
                self.outstanding.push(Op::Place);
            }
            Step::SyncData => {
                self.check(self.placed, "data synced before the placement");
                self.check(
                    !self.record || self.record_written,
                    "a record's flush joined before its write completed",
                );
                self.outstanding.push(Op::SyncData);
            }
            Step::SyncName => {
                self.check(self.placed, "name synced before the placement");
                self.check(!self.record, "a record's name synced (it is the segment's)");
                self.outstanding.push(Op::SyncName);
            }
            Step::QueueForIndex => {
                match self.commit {
                    CommitOrder::BesideSyncs => self.check(
                        self.whole && !self.failed,
                        "queued before the data set was whole and accepted",
                    ),
                    CommitOrder::AfterSyncs => self.check(
                        self.data_durable && self.name_durable,
                        "replace: queued before both syncs succeeded",
                    ),
                }
                self.outstanding.push(Op::Batch);
            }
            Step::Index { in_doubt } => {
                self.check(
                    in_doubt == (self.commit == CommitOrder::BesideSyncs),
                    "in doubt exactly when committed beside the syncs",
                );
                self.outstanding.push(Op::Commit);
            }
            Step::Undo => {
                self.check(self.committed && self.failed, "an undo without a reason");
                self.check(
                    self.undo_needed,
                    "an undo of a disposition that wrote no entry",
                );
                self.outstanding.push(Op::Undo);
            }
            Step::Close => {
                self.check(self.handle_open, "closed a file that is not open");
                self.handle_open = false;
            }
            Step::Discard { placed } => {
                self.check(!self.record, "a record discarded on disk");
                self.check(!self.handle_open, "discarded a file still open");
                self.check(placed == self.placed, "discarded where the file is not");
                self.check(!self.discarded, "discarded twice");
                self.discarded = true;
            }
            Step::Answer(answer) => {
                self.check(self.whole, "answered before the data set was whole");
                self.check(!self.abandoned, "answered an abandoned job");
                let status = match answer {
                    Answer::Stored(outcome) => {
                        self.check(!self.failed, "success answered after a failure");
                        self.check(
                            self.data_durable && self.name_durable && self.committed,
                            "success answered before data, name and entry were all durable",
                        );
                        self.check(
                            !self.discarded
                                || matches!(
                                    outcome.disposition(),
                                    Some(Disposition::Dropped | Disposition::Rejected)
                                ),
                            "a kept file discarded",
                        );
                        Status::SUCCESS
                    }
                    Answer::Failed(failure) => {
                        self.check(self.failed, "a failure answered without one");
                        self.check(
                            !self.undo_needed || self.undone,
                            "a failure answered before its committed entry was undone",
                        );
                        self.check(!self.handle_open, "answered with the file still open");
                        self.check(
                            !self.outstanding.iter().any(|op| {
                                matches!(
                                    op,
                                    Op::Open
                                        | Op::Write
                                        | Op::Seal
                                        | Op::Record
                                        | Op::Place
                                        | Op::SyncData
                                        | Op::Commit
                                        | Op::Undo
                                )
                            }),
                            "a failure answered while an open, a write, the rename, a data sync or a commit was in flight",
                        );
                        self.check(
                            !self.opened || self.discarded,
                            "a failure answered with its file kept",
                        );
                        failure.status()
                    }
                };
                self.check(self.job.is_done(), "answered but not done");
                self.answers.push(status);
            }
        }
    }

    /// The end of a walk: nothing more can happen.
    fn check_end(&self) {
        self.check(
            self.job.is_done(),
            "stuck: nothing outstanding, not finished",
        );
        if self.abandoned {
            self.check(self.answers.is_empty(), "an abandoned job answered");
        } else {
            self.check(self.answers.len() == 1, "not exactly one answer");
        }
        // What a finished job may leave to the service, which drops the
        // completions of a job it no longer has: only the schedulers'
        // bookkeeping (a directory round it joined, an entry the batcher
        // holds), never an operation on its file or its entry.
        for op in &self.outstanding {
            let allowed = match op {
                Op::SyncName | Op::Batch => self.failed || self.abandoned,
                Op::Open
                | Op::Write
                | Op::Seal
                | Op::Record
                | Op::Place
                | Op::SyncData
                | Op::Commit
                | Op::Undo => false,
            };
            self.check(allowed, &format!("finished with {op:?} outstanding"));
        }
        self.check(!self.handle_open, "finished with its file open");
        let kept = self.answers.first() == Some(&Status::SUCCESS) && !self.discarded;
        self.check(
            !self.opened || kept || self.discarded,
            "finished without keeping or discarding its file",
        );
        if self.answers.first() == Some(&Status::SUCCESS) {
            self.check(!self.handle_open, "answered with the file open");
        }
        if !self.failed && !self.abandoned {
            self.check(
                self.answers.first() == Some(&Status::SUCCESS),
                "no failure, yet no success",
            );
        }
        if self.failed && self.committed && self.undo_needed {
            self.check(
                self.undone,
                "a committed entry of a failed job was not undone",
            );
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Choice {
    Sender(Sender),
    /// Complete the outstanding operation at this position, with success
    /// (true) or a failure.
    Complete(usize, bool),
}

fn describe(step: &Step) -> String {
    match step {
        Step::Write { offset, bufs } => format!("Write at {offset} ({} buffers)", bufs.len()),
        other => format!("{other:?}"),
    }
}

/// Walks every path from `world`; returns how many were walked.
fn walk(world: World) -> u64 {
    let choices = world.choices();
    if choices.is_empty() {
        world.check_end();
        return 1;
    }
    let mut walked = 0;
    for choice in choices {
        let mut next = world.clone();
        next.take(choice);
        walked += walk(next);
    }
    walked
}

fn quarantined() -> StoreOutcome {
    StoreOutcome::Duplicate(Disposition::Quarantined { quarantine_id: 7 })
}

fn dropped() -> StoreOutcome {
    StoreOutcome::DuplicateIdentical(Disposition::Dropped)
}

fn replaced() -> StoreOutcome {
    StoreOutcome::Duplicate(Disposition::Replaced {
        previous: InstanceRecord {
            file_id: sluice_index::FileId(1),
            file_size_bytes: 1,
            dataset_offset_bytes: 0,
            transfer_syntax_uid: String::new(),
            sop_class_uid: String::new(),
            checksum: sluice_index::Checksum([0; 16]),
            received_at_unix_ns: 0,
            calling_ae_title: String::new(),
            instance_number: None,
        },
    })
}

use Sender::{Complete, Data, Empty, End, Flush, Refused, Spill};

/// Every scenario: commit order, the index's decision, the sender's script,
/// and how many failures a walk may inject.
#[test]
fn every_ordering_and_every_failure_point_keeps_the_durability_order() {
    #[rustfmt::skip]
    let table: Vec<(&str, CommitOrder, StoreOutcome, &[Sender], u32)> = vec![
        ("stored", CommitOrder::BesideSyncs, StoreOutcome::Stored, &[Data, Flush, Complete], 1),
        ("quarantined", CommitOrder::BesideSyncs, quarantined(), &[Data, Flush, Complete], 1),
        ("identical duplicate dropped", CommitOrder::BesideSyncs, dropped(), &[Data, Flush, Complete], 1),
        ("stored, whole in one receive", CommitOrder::BesideSyncs, StoreOutcome::Stored, &[Data, Complete], 1),
        ("stored, two receives", CommitOrder::BesideSyncs, StoreOutcome::Stored, &[Data, Flush, Data, Flush, Complete], 1),
        ("refused by the head scan", CommitOrder::BesideSyncs, StoreOutcome::Stored, &[Data, Flush, Refused], 1),
        ("empty fragments", CommitOrder::BesideSyncs, StoreOutcome::Stored, &[Empty, Flush, Data, Empty, Complete], 1),
        ("an empty data set, refused", CommitOrder::BesideSyncs, StoreOutcome::Stored, &[Empty, Refused], 1),
        ("association ended while receiving", CommitOrder::BesideSyncs, StoreOutcome::Stored, &[Data, Flush, End], 1),
        ("replace: stored", CommitOrder::AfterSyncs, StoreOutcome::Stored, &[Data, Flush, Complete], 1),
        ("replace: replaced", CommitOrder::AfterSyncs, replaced(), &[Data, Flush, Complete], 1),
        ("replace: refused", CommitOrder::AfterSyncs, StoreOutcome::Stored, &[Data, Flush, Refused], 1),
        ("two failures, stored", CommitOrder::BesideSyncs, StoreOutcome::Stored, &[Data, Complete], 2),
        ("two failures, quarantined", CommitOrder::BesideSyncs, quarantined(), &[Data, Complete], 2),
        ("two failures, replace", CommitOrder::AfterSyncs, StoreOutcome::Stored, &[Data, Complete], 2),
    ];
    for (name, commit, outcome, script, failures) in table {
        let walked = walk(World::new(commit, outcome, script, failures));
        // Each scenario has many orderings; a handful would mean the walk
        // stopped early.
        assert!(walked > 10, "{name}: only {walked} walks");
    }
}

/// The same walks for record-mode jobs (the segments layout): the record's
/// one write, its flush, the entry, every failure point (the write, the
/// flush, the commit, the undo), and the spill to a file mid-stream.
#[test]
fn record_jobs_keep_the_durability_order_at_every_ordering_and_failure_point() {
    #[rustfmt::skip]
    let table: Vec<(&str, CommitOrder, StoreOutcome, &[Sender], u32)> = vec![
        ("stored", CommitOrder::BesideSyncs, StoreOutcome::Stored, &[Data, Flush, Complete], 1),
        ("quarantined by the index (a race)", CommitOrder::BesideSyncs, quarantined(), &[Data, Flush, Complete], 1),
        ("identical duplicate dropped", CommitOrder::BesideSyncs, dropped(), &[Data, Flush, Complete], 1),
        ("refused by the head scan", CommitOrder::BesideSyncs, StoreOutcome::Stored, &[Data, Flush, Refused], 1),
        ("an empty data set, refused", CommitOrder::BesideSyncs, StoreOutcome::Stored, &[Empty, Refused], 1),
        ("association ended while receiving", CommitOrder::BesideSyncs, StoreOutcome::Stored, &[Data, Flush, End], 1),
        ("replace: stored", CommitOrder::AfterSyncs, StoreOutcome::Stored, &[Data, Flush, Complete], 1),
        ("replace: replaced", CommitOrder::AfterSyncs, replaced(), &[Data, Flush, Complete], 1),
        ("two failures, stored", CommitOrder::BesideSyncs, StoreOutcome::Stored, &[Data, Complete], 2),
        ("two failures, replace", CommitOrder::AfterSyncs, StoreOutcome::Stored, &[Data, Complete], 2),
        ("spilled mid-stream, stored", CommitOrder::BesideSyncs, StoreOutcome::Stored, &[Data, Spill, Data, Flush, Complete], 1),
        ("spilled at the end (quarantine)", CommitOrder::BesideSyncs, quarantined(), &[Data, Flush, Spill, Complete], 1),
        ("spilled, then ended", CommitOrder::BesideSyncs, StoreOutcome::Stored, &[Data, Spill, Data, End], 1),
        ("spilled, replace", CommitOrder::AfterSyncs, StoreOutcome::Stored, &[Data, Spill, Complete], 1),
    ];
    for (name, commit, outcome, script, failures) in table {
        let walked = walk(World::new_record(commit, outcome, script, failures));
        // A record refused or abandoned before any write has one walk;
        // the others, many.
        let minimum = if script.contains(&Refused) || script.contains(&End) {
            1
        } else {
            4
        };
        assert!(walked >= minimum, "{name}: only {walked} walks");
    }
}

/// A record job written out: one write, its flush, the entry; no open,
/// no rename, no name sync, no close; a failed flush after the early commit
/// is undone and leaves nothing to discard.
#[test]
fn a_record_is_one_write_then_the_segment_flush() {
    let mut world = World::new_record(
        CommitOrder::BesideSyncs,
        StoreOutcome::Stored,
        &[Data, Complete],
        1,
    );
    world.take(Choice::Sender(Data));
    world.check(world.outstanding.is_empty(), "a write while receiving");
    world.take(Choice::Sender(Complete));
    world.check(
        world.outstanding == vec![Op::Record, Op::Batch],
        "the record's write, then the entry",
    );
    world.take(Choice::Complete(1, true)); // batched -> [record, commit]
    world.take(Choice::Complete(1, true)); // committed
    world.take(Choice::Complete(0, true)); // written -> [flush]
    world.check(world.outstanding == vec![Op::SyncData], "the flush");
    world.take(Choice::Complete(0, false)); // the flush fails -> [undo]
    world.check(world.outstanding == vec![Op::Undo], "the undo");
    world.take(Choice::Complete(0, true));
    world.check(world.answers == vec![Status(0xA700)], "the flush's failure");
    world.check(!world.discarded && !world.handle_open, "nothing on disk");
    world.check_end();
}

/// One walk written out, and what it must end in.
type Spelled = (
    &'static str,
    CommitOrder,
    StoreOutcome,
    Vec<Choice>,
    /* the answer's status */ u16,
    /* undone */ bool,
);

/// A few walks written out: the spec's rules as examples.
#[test]
fn spelled_out_orderings() {
    use Choice::Complete as C;
    use Choice::Sender as S;
    let table: Vec<Spelled> = vec![
        (
            "index commits first, then the name, then the data: answered last",
            CommitOrder::BesideSyncs,
            StoreOutcome::Stored,
            // outstanding after each step in brackets
            vec![
                C(0, true),  // open [] -> write header
                S(Data),     //
                S(Complete), // [write, write, batch]: the seal waits for the writes
                C(2, true),  // batch -> [write, write, commit]
                C(2, true),  // commit
                C(0, true),  // write
                C(0, true),  // write -> [seal]
                C(0, true),  // seal -> [place]
                C(0, true),  // place -> [sync data, sync name]
                C(1, true),  // name
                C(0, true),  // data -> answer
            ],
            0x0000,
            false,
        ),
        (
            "the data sync fails after the early commit: undone, then answered",
            CommitOrder::BesideSyncs,
            StoreOutcome::Stored,
            vec![
                C(0, true),
                S(Data),
                S(Complete),
                C(2, true),
                C(2, true),
                C(0, true),
                C(0, true),
                C(0, true),
                C(0, true),
                C(0, false), // data sync fails -> [sync name, undo]
                C(1, true),  // undo -> answer
            ],
            0xA700,
            true,
        ),
        (
            "replace: the commit waits for both syncs",
            CommitOrder::AfterSyncs,
            StoreOutcome::Stored,
            vec![
                C(0, true),
                S(Data),
                S(Complete), // [write, write]
                C(0, true),
                C(0, true), // [seal]
                C(0, true), // [place]
                C(0, true), // [sync data, sync name]
                C(0, true),
                C(0, true), // [batch]
                C(0, true), // [commit]
                C(0, true), // answer
            ],
            0x0000,
            false,
        ),
        (
            "the index is full: the failure is answered, nothing to undo",
            CommitOrder::BesideSyncs,
            StoreOutcome::Stored,
            vec![
                C(0, true),
                S(Data),
                S(Complete),
                C(2, true),
                C(2, false), // the commit fails
                C(0, true),
                C(0, true), // the last write: answered (no seal after a failure)
            ],
            0xA711,
            false,
        ),
    ];
    for (name, commit, outcome, choices, status, undone) in table {
        let mut world = World::new(commit, outcome, &[Data, Complete], 1);
        world.script = VecDeque::new();
        for choice in choices {
            world.trace.push(format!("choice {choice:?}"));
            if let Choice::Complete(position, _) = choice {
                world.check(position < world.outstanding.len(), "no such operation");
            }
            world.take(choice);
        }
        world.check(world.answers == vec![Status(status)], name);
        world.check(world.undone == undone, name);
        world.check_end();
    }
}
