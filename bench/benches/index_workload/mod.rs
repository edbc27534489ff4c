//! The synthetic catalogue both index benches grow: instance `n` of a
//! reproducible stream of studies, with modality-style or random UIDs.
//!
//! Studies cycle through five sizes (a two-view CR to a 500-image CT),
//! series of up to 100 instances; the instances of a study arrive together,
//! as a modality or a forwarding archive sends them. UIDs:
//! - modality style: a root, a kind, an acquisition timestamp, counters
//!   (~55-60 characters); consecutive instances share long prefixes and sort
//!   in arrival order;
//! - random: `2.25.` and a 128-bit number in decimal (~44 characters), what
//!   `2.25.<uuid>` generators and many current systems make (pydicom's
//!   `generate_uid` is the same idea under its own root). Study, series and
//!   SOP Instance UIDs are all random, so consecutive instances land at
//!   unrelated places of any table keyed by one of them.

use std::collections::VecDeque;
use std::sync::mpsc::Receiver;

use sluice_index::{
    Batch, BatchResult, Checksum, FileId, Index, IndexWriter, InstanceRecord, NewInstance,
    SeriesAttributes, StoreRequest, StudyAttributes, Triplet, WriteOp,
};

const ROOT: &str = "1.2.826.0.1.3680043.10.1137";
/// Instances per study, cycling: from a two-view CR to a large CT.
const STUDY_SIZES: [u64; 5] = [2, 4, 50, 200, 500];
const CYCLE: u64 = 2 + 4 + 50 + 200 + 500;

/// The SOP Class UID every generated instance has (CT Image Storage).
pub const SOP_CLASS_UID: &str = "1.2.840.10008.5.1.4.1.1.2";

/// splitmix64: a stable hash for reproducible "random" UIDs and samples.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Reads a number from the environment (`_` separators allowed).
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.replace('_', "").parse().ok()
}

/// Which UIDs the stream has.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Random (`2.25.<128-bit decimal>`) instead of modality-style UIDs.
    pub random_uids: bool,
}

/// Instance number `n` -> (study number, series number, number in series).
fn position(n: u64) -> (u64, u64, u64) {
    let cycle = n / CYCLE;
    let mut offset = n % CYCLE;
    let mut study = cycle * STUDY_SIZES.len() as u64;
    for size in STUDY_SIZES {
        if offset < size {
            break;
        }
        offset -= size;
        study += 1;
    }
    (study, offset / 100, offset)
}

impl Shape {
    /// From `SLUICE_BENCH_INDEX_UIDS` (`random`, otherwise modality style).
    pub fn from_env() -> Shape {
        Shape {
            random_uids: std::env::var("SLUICE_BENCH_INDEX_UIDS").is_ok_and(|v| v == "random"),
        }
    }

    /// How the UIDs look, for reports.
    pub fn name(&self) -> &'static str {
        if self.random_uids {
            "random"
        } else {
            "modality-style"
        }
    }

    /// A UID of `kind` (1 study, 2 series, 3 SOP instance; others for
    /// UIDs that are never stored) for the numbers in `parts`.
    pub fn uid(&self, kind: u64, parts: &[u64]) -> String {
        if self.random_uids {
            let mut hash = kind;
            for part in parts {
                hash = mix(hash ^ mix(*part));
            }
            let value = (u128::from(mix(hash)) << 64) | u128::from(mix(hash ^ 1));
            format!("2.25.{value}")
        } else {
            let mut uid = format!("{ROOT}.{kind}.{}", 20_240_101_000_000u64 + parts[0] * 7);
            for part in parts {
                uid.push('.');
                uid.push_str(&part.to_string());
            }
            uid
        }
    }

    /// The triplet of instance `n`.
    pub fn triplet(&self, n: u64) -> Triplet {
        let (study, series, instance) = position(n);
        Triplet::new(
            self.uid(1, &[study]),
            self.uid(2, &[study, series]),
            self.uid(3, &[study, series, instance]),
        )
    }

    /// A triplet that is never stored: instance `n`'s study and series with
    /// a SOP Instance UID of the same shape that no instance has (what a
    /// new instance of that series looks like to a duplicate check).
    pub fn absent_triplet(&self, n: u64) -> Triplet {
        let (study, series, instance) = position(n);
        let mut triplet = self.triplet(n);
        triplet.sop_instance_uid = self.uid(4, &[study, series, instance]);
        triplet
    }

    /// Instance `n`, as the engine hands it to the index.
    pub fn instance(&self, n: u64) -> NewInstance {
        let (study, series, instance_number) = position(n);
        let patient = study / 3;
        NewInstance {
            triplet: self.triplet(n),
            record: InstanceRecord {
                file_id: FileId(u128::from(n) + 1),
                file_size_bytes: 520_000,
                dataset_offset_bytes: 348,
                transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
                sop_class_uid: SOP_CLASS_UID.into(),
                checksum: Checksum([(n % 251) as u8; 16]),
                received_at_unix_ns: 1_700_000_000_000_000_000 + n * 1_000,
                calling_ae_title: "CT_SCANNER_01".into(),
                instance_number: Some(instance_number as i32 + 1),
            },
            study: StudyAttributes {
                patient_name: format!("PATIENT{patient}^GIVEN"),
                patient_id: format!("PID{patient:08}"),
                patient_birth_date: format!(
                    "19{:02}0{}1{}",
                    patient % 100,
                    patient % 9 + 1,
                    patient % 10
                ),
                patient_sex: if patient % 2 == 0 {
                    "F".into()
                } else {
                    "M".into()
                },
                study_date: format!("202{}{:02}{:02}", study % 5, study % 12 + 1, study % 28 + 1),
                study_time: format!("{:02}{:02}00", study % 24, study % 60),
                accession_number: format!("ACC{study:010}"),
                study_id: format!("{}", study % 10_000),
                study_description: "CT CHEST WITH CONTRAST".into(),
                referring_physician_name: "REFERRER^DOCTOR".into(),
            },
            series: SeriesAttributes {
                modality: ["CT", "CT", "SR", "PR"][(series % 4) as usize].into(),
                series_number: Some(series as i32 + 1),
                series_description: "AXIAL 2.5MM".into(),
            },
        }
    }

    /// Stores of instances `start..start + count`.
    pub fn batch(&self, start: u64, count: u64) -> Vec<WriteOp> {
        (start..start + count)
            .map(|n| WriteOp::Store(StoreRequest::new(self.instance(n))))
            .collect()
    }

    /// Stores of instances `start..end`, in batches of `batch_size`.
    pub fn batches(&self, start: u64, end: u64, batch_size: u64) -> Vec<Vec<WriteOp>> {
        let mut batches = Vec::new();
        let mut next = start;
        while next < end {
            let count = batch_size.min(end - next);
            batches.push(self.batch(next, count));
            next += count;
        }
        batches
    }
}

/// The engine's duplicate check: a fresh read transaction and a lookup by
/// triplet.
pub fn duplicate_check(index: &Index, triplet: &Triplet) -> bool {
    let read = index.read().expect("read");
    read.contains(
        &triplet.study_instance_uid,
        &triplet.series_instance_uid,
        &triplet.sop_instance_uid,
    )
    .expect("contains")
}

fn wait(receiver: Receiver<BatchResult>) {
    let results = receiver
        .recv()
        .expect("writer answers")
        .expect("batch committed");
    assert!(results.iter().all(Result::is_ok), "every store succeeds");
}

/// Submits `batches` as the engine's cores would, with at most `in_flight`
/// unanswered (answered at commit if `answered_at_commit`, as C-STORE
/// batches are, else after the flush), and returns when all are answered.
pub fn submit_all(
    writer: &IndexWriter,
    batches: Vec<Vec<WriteOp>>,
    in_flight: usize,
    answered_at_commit: bool,
) {
    let mut waiting: VecDeque<Receiver<BatchResult>> = VecDeque::new();
    for ops in batches {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let mut batch = Batch::with_callback(ops, move |result| {
            let _ = sender.send(result);
        });
        if answered_at_commit {
            batch = batch.answered_at_commit();
        }
        writer.submit(batch).expect("submit");
        waiting.push_back(receiver);
        if waiting.len() >= in_flight {
            if let Some(oldest) = waiting.pop_front() {
                wait(oldest);
            }
        }
    }
    while let Some(receiver) = waiting.pop_front() {
        wait(receiver);
    }
}
