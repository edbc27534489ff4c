//! One C-STORE on its way on a core: its sans-I/O [`Job`], the command it
//! answers, and what the files layout and the index need beside the job:
//! the file's handle and paths, the head scanner and the checksum fed from
//! the receive buffers, the index entry once the head is accepted, and
//! whether its file is in the shared in-doubt set.

use std::path::PathBuf;

use sluice_index::{FileId, InstanceRecord, NewInstance};
use sluice_net::dimse::{CStoreRq, Status};
use sluice_net::scan::{
    check_store, DatasetHead, DatasetScanner, Leniency, StoreCheck, StoreWarnings,
};
use sluice_net::uid::{self, TransferSyntaxFacts};

use super::job::{Job, Verdict};
use super::space::Reservation;
use super::timing::JobTiming;
use crate::clock::unix_now_ns;
use crate::flags::FlaggedInstance;
use crate::scp::failure::Failure;
use crate::store::instance_from_head;
use crate::store::layout::{Area, DatasetHasher};
use crate::store::part10::seal;
use crate::store::Counted;

/// A C-STORE answer for the handler to send.
#[derive(Debug)]
pub(crate) struct StoreAnswer {
    /// The association's serial.
    pub(crate) serial: u64,
    /// The presentation context of the command.
    pub(crate) context_id: u8,
    /// The command.
    pub(crate) rq: CStoreRq,
    /// The sender.
    pub(crate) calling_ae_title: String,
    /// What to answer.
    pub(crate) outcome: Answered,
}

/// What a C-STORE is answered.
#[derive(Debug)]
pub(crate) enum Answered {
    /// Stored (0000), or the duplicate policy's answer.
    Stored {
        /// The status.
        status: Status,
        /// What the index did with it (the counter it goes to).
        counted: Counted,
        /// Its quarantine entry, when held in quarantine.
        quarantine_id: Option<u64>,
        /// When the instance passed each step.
        timing: JobTiming,
        /// What lenient checks found (each the refusal it would have been
        /// under a strict setting): logged and flagged.
        warnings: StoreWarnings,
    },
    /// Failed: nothing is kept.
    Failed(Failure),
}

/// A job and what the files layout needs of it.
#[derive(Debug)]
pub(super) struct Instance {
    pub(super) job: Job,
    pub(super) serial: u64,
    pub(super) context_id: u8,
    pub(super) rq: CStoreRq,
    pub(super) calling_ae_title: String,
    pub(super) transfer_syntax_uid: String,
    pub(super) facts: TransferSyntaxFacts,
    pub(super) file_id: FileId,
    pub(super) header_bytes: u64,
    /// The open file (the io runtime's handle).
    pub(super) file: Option<sluice_io::FileHandle>,
    pub(super) tmp_path: PathBuf,
    pub(super) area: Area,
    /// Set when placed.
    pub(super) final_path: PathBuf,
    /// Until the data set is whole.
    pub(super) scanner: Option<DatasetScanner>,
    pub(super) hasher: DatasetHasher,
    pub(super) dataset_bytes: u64,
    /// What the index gets, once the head is accepted.
    pub(super) instance: Option<NewInstance>,
    /// What lenient checks found, of the command and then of the data set.
    pub(super) warnings: StoreWarnings,
    /// In the shared in-doubt set.
    pub(super) in_doubt: bool,
    /// Record mode: the Part 10 bytes so far (until the record is
    /// written, or spilled to a file).
    pub(super) record_buf: Option<super::segments::RecordBuf>,
    /// Record mode: the record as written (shared with its write), taken
    /// back for the next instance once the job is done.
    pub(super) written: Option<std::rc::Rc<sluice_io::AlignedBuf>>,
    /// Record mode: the bytes of its record buffer while it is lent to a
    /// receive (`record_buf` is empty then; the core's budget still
    /// counts them).
    pub(super) lent: usize,
    /// Record mode: the record's place, once reserved.
    pub(super) place: Option<sluice_index::RecordPlace>,
    /// Its claim on the free space (the floor's accounting).
    pub(super) reservation: Reservation,
    pub(super) timing: JobTiming,
}

impl Instance {
    /// Data-set bytes of a job that has not failed: the head scanner and the
    /// checksum read them where they are.
    pub(super) fn feed(&mut self, bytes: &[u8]) {
        self.dataset_bytes += bytes.len() as u64;
        if let Some(scanner) = self.scanner.as_mut() {
            // A structure error is kept by the scanner and reported by
            // `finish`; the bytes are still written (and discarded on
            // refusal).
            let _ = scanner.feed(bytes);
        }
        self.hasher.update(bytes);
    }

    /// The data set is whole: the head's verdict under `lenient` (the index
    /// entry and the warnings kept when it is acceptable).
    pub(super) fn check(&mut self, lenient: Leniency) -> Verdict {
        let Some(scanner) = self.scanner.take() else {
            panic!("a data set checked twice");
        };
        let head = scanner.finish();
        let checked = check_store(
            &head,
            &StoreCheck {
                affected_sop_class_uid: &self.rq.affected_sop_class_uid,
                affected_sop_instance_uid: &self.rq.affected_sop_instance_uid,
                transfer_syntax: self.facts,
                image_class: uid::is_image_sop_class(&self.rq.affected_sop_class_uid),
                lenient,
            },
        );
        match checked {
            Ok(warnings) => {
                self.warnings.extend(warnings);
                self.instance = Some(self.new_instance(&head));
                Verdict::Accepted {
                    seal: seal(self.dataset_bytes, self.hasher.finish()),
                }
            }
            Err(rejection) => Verdict::Refused(Failure::Rejected(rejection)),
        }
    }

    /// What the index gets for a checked data set.
    fn new_instance(&self, head: &DatasetHead) -> NewInstance {
        instance_from_head(
            head,
            &self.rq.affected_sop_instance_uid,
            InstanceRecord {
                file_id: self.file_id,
                file_size_bytes: self.header_bytes + self.dataset_bytes,
                dataset_offset_bytes: self.header_bytes,
                transfer_syntax_uid: self.transfer_syntax_uid.clone(),
                sop_class_uid: self.rq.affected_sop_class_uid.clone(),
                checksum: self.hasher.finish(),
                received_at_unix_ns: unix_now_ns(),
                calling_ae_title: self.calling_ae_title.clone(),
                instance_number: None,
            },
        )
    }

    /// What the index records of an instance lenient checks found something
    /// in (`sluice flagged`); `None` when they found nothing.
    pub(super) fn flagged(&self) -> Option<Vec<u8>> {
        if self.warnings.is_empty() {
            return None;
        }
        let triplet = &self.instance.as_ref()?.triplet;
        let flagged = FlaggedInstance {
            sop_instance_uid: triplet.sop_instance_uid.clone(),
            study_instance_uid: triplet.study_instance_uid.clone(),
            calling_ae_title: self.calling_ae_title.clone(),
            findings: self.warnings.iter().map(ToString::to_string).collect(),
        };
        Some(flagged.encode())
    }

    /// The C-STORE's answer.
    pub(super) fn answer(&self, outcome: Answered) -> StoreAnswer {
        StoreAnswer {
            serial: self.serial,
            context_id: self.context_id,
            rq: self.rq.clone(),
            calling_ae_title: self.calling_ae_title.clone(),
            outcome,
        }
    }
}
