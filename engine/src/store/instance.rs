//! What the index records for a checked data set: its identity, the
//! attributes of its study and series, and its file's record. Used by the
//! ingest path and by start-up recovery when it indexes a sealed file whose
//! entry a crash took, so both record exactly the same thing.

use sluice_index::{InstanceRecord, NewInstance, SeriesAttributes, StudyAttributes, Triplet};
use sluice_net::scan::{DatasetHead, Field};
use sluice_net::uid;

fn text(head: &DatasetHead, field: Field) -> String {
    head.decoded(field)
        .map(|value| value.trim().to_owned())
        .unwrap_or_default()
}

fn integer(head: &DatasetHead, field: Field) -> Option<i32> {
    head.integer_string(field)
        .flatten()
        .and_then(|value| i32::try_from(value).ok())
}

/// The index's view of a data set whose head is `head`, stored as `record`
/// (whose `instance_number` is taken from the head) under the command's
/// `sop_instance_uid` (equal to the data set's when it has one; the data
/// set may lack it under a lenient `validation.sop_uids_missing`).
pub(crate) fn instance_from_head(
    head: &DatasetHead,
    sop_instance_uid: &str,
    record: InstanceRecord,
) -> NewInstance {
    let uid = |value: Option<&str>| {
        value
            .map(uid::trim_uid_padding)
            .unwrap_or_default()
            .to_owned()
    };
    NewInstance {
        triplet: Triplet::new(
            uid(head.study_instance_uid()),
            uid(head.series_instance_uid()),
            uid(Some(sop_instance_uid)),
        ),
        record: InstanceRecord {
            instance_number: integer(head, Field::InstanceNumber),
            ..record
        },
        study: StudyAttributes {
            patient_name: text(head, Field::PatientName),
            patient_id: text(head, Field::PatientId),
            patient_birth_date: text(head, Field::PatientBirthDate),
            patient_sex: text(head, Field::PatientSex),
            study_date: text(head, Field::StudyDate),
            study_time: text(head, Field::StudyTime),
            accession_number: text(head, Field::AccessionNumber),
            study_id: text(head, Field::StudyId),
            study_description: text(head, Field::StudyDescription),
            referring_physician_name: text(head, Field::ReferringPhysicianName),
        },
        series: SeriesAttributes {
            modality: text(head, Field::Modality),
            series_number: integer(head, Field::SeriesNumber),
            series_description: text(head, Field::SeriesDescription),
        },
    }
}
