//! Storage Commitment Push Model data sets (PS3.4 Annex J).
//!
//! Owns the typed form of the N-ACTION-RQ action information (Transaction UID
//! and Referenced SOP Sequence, action type 1) and of the N-EVENT-REPORT-RQ
//! event information (event type 1: all committed; event type 2: some failed,
//! with the Failed SOP Sequence and a Failure Reason per item), their encoding
//! and their validation. A request that lacks something is a specific
//! [`CommitmentError`]; the service layer maps it to an N-ACTION-RSP status
//! (requirements §3): a `Missing*` variant to 0120 (missing attribute), an
//! `Empty*` variant to 0121 (Type 1 attribute without value), a malformed data
//! set to 0110 (processing failure).

use super::dataset::{DatasetError, DatasetLimits, SmallDataset, SmallDatasetEncoding};
use super::{Status, Tag};

/// Attribute tags of the commitment data sets.
pub mod tags {
    use super::Tag;

    /// Transaction UID (0008,1195), UI, Type 1.
    pub const TRANSACTION_UID: Tag = Tag(0x0008, 0x1195);
    /// Referenced SOP Sequence (0008,1199), SQ, Type 1 in N-ACTION.
    pub const REFERENCED_SOP_SEQUENCE: Tag = Tag(0x0008, 0x1199);
    /// Failed SOP Sequence (0008,1198), SQ, Type 1 in event type 2.
    pub const FAILED_SOP_SEQUENCE: Tag = Tag(0x0008, 0x1198);
    /// Referenced SOP Class UID (0008,1150), UI, Type 1.
    pub const REFERENCED_SOP_CLASS_UID: Tag = Tag(0x0008, 0x1150);
    /// Referenced SOP Instance UID (0008,1155), UI, Type 1.
    pub const REFERENCED_SOP_INSTANCE_UID: Tag = Tag(0x0008, 0x1155);
    /// Failure Reason (0008,1197), US, Type 1 in Failed SOP Sequence items.
    pub const FAILURE_REASON: Tag = Tag(0x0008, 0x1197);
    /// Retrieve AE Title (0008,0054), AE, optional.
    pub const RETRIEVE_AE_TITLE: Tag = Tag(0x0008, 0x0054);
}

/// N-ACTION action type of "Request Storage Commitment".
pub const ACTION_TYPE_REQUEST_STORAGE_COMMITMENT: u16 = 1;
/// N-EVENT-REPORT event type "Storage Commitment Request Successful".
pub const EVENT_TYPE_SUCCESSFUL: u16 = 1;
/// N-EVENT-REPORT event type "Storage Commitment Request Complete - Failures Exist".
pub const EVENT_TYPE_FAILURES_EXIST: u16 = 2;

/// One referenced SOP instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SopReference {
    /// Referenced SOP Class UID.
    pub sop_class_uid: String,
    /// Referenced SOP Instance UID.
    pub sop_instance_uid: String,
}

/// One instance that could not be committed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FailedSopReference {
    /// The instance.
    pub reference: SopReference,
    /// Failure Reason: 0110 processing failure, 0112 no such object instance,
    /// 0119 class/instance conflict, 0122 SOP class not supported, 0213
    /// resource limitation, 0131 duplicate transaction UID.
    pub failure_reason: Status,
}

/// The action information of a commitment N-ACTION-RQ (action type 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitmentRequest {
    /// Transaction UID.
    pub transaction_uid: String,
    /// The instances to commit (at least one).
    pub references: Vec<SopReference>,
}

/// The event information of a commitment N-EVENT-REPORT-RQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitmentResult {
    /// Transaction UID of the request answered.
    pub transaction_uid: String,
    /// Retrieve AE Title where the committed instances can be fetched.
    pub retrieve_ae_title: Option<String>,
    /// Committed instances (Referenced SOP Sequence; may be empty when all failed).
    pub committed: Vec<SopReference>,
    /// Failed instances (Failed SOP Sequence); empty for event type 1.
    pub failed: Vec<FailedSopReference>,
}

/// Why a commitment data set is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitmentError {
    /// The data set cannot be decoded (maps to 0110).
    #[error("commitment data set is malformed: {0}")]
    Dataset(#[from] DatasetError),
    /// A Type 1 attribute is absent (maps to 0120).
    #[error("missing required attribute {tag}")]
    MissingAttribute {
        /// The absent attribute.
        tag: Tag,
    },
    /// A Type 1 attribute is present without a value (maps to 0121).
    #[error("attribute {tag} has no value")]
    EmptyValue {
        /// The empty attribute.
        tag: Tag,
    },
    /// A Type 1 sequence has no items (maps to 0121).
    #[error("sequence {tag} has no items")]
    EmptySequence {
        /// The sequence.
        tag: Tag,
    },
    /// An item lacks a Type 1 attribute (maps to 0120).
    #[error("item {item} of {sequence} lacks {tag}")]
    ItemMissingAttribute {
        /// The sequence.
        sequence: Tag,
        /// Zero-based item index.
        item: usize,
        /// The absent attribute.
        tag: Tag,
    },
    /// An item has a Type 1 attribute without value (maps to 0121).
    #[error("item {item} of {sequence} has no value in {tag}")]
    ItemEmptyValue {
        /// The sequence.
        sequence: Tag,
        /// Zero-based item index.
        item: usize,
        /// The empty attribute.
        tag: Tag,
    },
    /// An attribute has the wrong form (a sequence where a value belongs,
    /// Failure Reason not 2 bytes, a UID that is not one); maps to 0106.
    #[error("attribute {tag} has an invalid value")]
    InvalidValue {
        /// The attribute.
        tag: Tag,
    },
}

/// A Type 1 text value of `dataset`, trimmed; errors name the item when in one.
fn required_text(
    dataset: &SmallDataset,
    tag: Tag,
    item: Option<(Tag, usize)>,
) -> Result<String, CommitmentError> {
    let Some(bytes) = dataset.get(tag).map(|element| match &element.value {
        super::dataset::Value::Bytes(bytes) => Ok(bytes),
        super::dataset::Value::Sequence(_) => Err(CommitmentError::InvalidValue { tag }),
    }) else {
        return Err(match item {
            Some((sequence, item)) => CommitmentError::ItemMissingAttribute {
                sequence,
                item,
                tag,
            },
            None => CommitmentError::MissingAttribute { tag },
        });
    };
    let bytes = bytes?;
    let text = std::str::from_utf8(bytes).map_err(|_| CommitmentError::InvalidValue { tag })?;
    let text = text.trim_matches(['\0', ' ']);
    if text.is_empty() {
        return Err(match item {
            Some((sequence, item)) => CommitmentError::ItemEmptyValue {
                sequence,
                item,
                tag,
            },
            None => CommitmentError::EmptyValue { tag },
        });
    }
    // UIDs here are looked up, not trusted: only reject what cannot be one.
    if text.len() > crate::uid::UID_LENGTH_MAX
        || !text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || byte == b'.')
    {
        return Err(CommitmentError::InvalidValue { tag });
    }
    Ok(text.to_owned())
}

fn references(
    dataset: &SmallDataset,
    sequence: Tag,
    required: bool,
) -> Result<Vec<SopReference>, CommitmentError> {
    let Some(element) = dataset.get(sequence) else {
        return if required {
            Err(CommitmentError::MissingAttribute { tag: sequence })
        } else {
            Ok(Vec::new())
        };
    };
    let items = match &element.value {
        super::dataset::Value::Sequence(items) => items,
        // An empty non-sequence value (Implicit VR without dictionary knowledge
        // of the tag would not get here: the VR table knows these tags).
        super::dataset::Value::Bytes(bytes) if bytes.is_empty() => {
            return Err(CommitmentError::EmptySequence { tag: sequence })
        }
        super::dataset::Value::Bytes(_) => {
            return Err(CommitmentError::InvalidValue { tag: sequence })
        }
    };
    if items.is_empty() && required {
        return Err(CommitmentError::EmptySequence { tag: sequence });
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            Ok(SopReference {
                sop_class_uid: required_text(
                    item,
                    tags::REFERENCED_SOP_CLASS_UID,
                    Some((sequence, index)),
                )?,
                sop_instance_uid: required_text(
                    item,
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    Some((sequence, index)),
                )?,
            })
        })
        .collect()
}

fn reference_item(reference: &SopReference) -> SmallDataset {
    let mut item = SmallDataset::new();
    item.put_str(
        tags::REFERENCED_SOP_CLASS_UID,
        None,
        &reference.sop_class_uid,
    );
    item.put_str(
        tags::REFERENCED_SOP_INSTANCE_UID,
        None,
        &reference.sop_instance_uid,
    );
    item
}

impl CommitmentRequest {
    /// Validates the action information of an N-ACTION-RQ.
    pub fn from_dataset(dataset: &SmallDataset) -> Result<Self, CommitmentError> {
        Ok(Self {
            transaction_uid: required_text(dataset, tags::TRANSACTION_UID, None)?,
            references: references(dataset, tags::REFERENCED_SOP_SEQUENCE, true)?,
        })
    }

    /// Decodes and validates the action information.
    pub fn decode(
        bytes: &[u8],
        encoding: SmallDatasetEncoding,
        limits: DatasetLimits,
    ) -> Result<Self, CommitmentError> {
        Self::from_dataset(&SmallDataset::decode(bytes, encoding, limits)?)
    }

    /// The action information as a data set.
    pub fn to_dataset(&self) -> SmallDataset {
        let mut dataset = SmallDataset::new();
        dataset.put_str(tags::TRANSACTION_UID, None, &self.transaction_uid);
        dataset.put_sequence(
            tags::REFERENCED_SOP_SEQUENCE,
            self.references.iter().map(reference_item).collect(),
        );
        dataset
    }

    /// Encodes the action information.
    pub fn encode(&self, encoding: SmallDatasetEncoding) -> Result<Vec<u8>, CommitmentError> {
        Ok(self.to_dataset().encode(encoding)?)
    }
}

impl CommitmentResult {
    /// The N-EVENT-REPORT Event Type ID: 1 when nothing failed, else 2.
    pub fn event_type_id(&self) -> u16 {
        if self.failed.is_empty() {
            EVENT_TYPE_SUCCESSFUL
        } else {
            EVENT_TYPE_FAILURES_EXIST
        }
    }

    /// Validates the event information of an N-EVENT-REPORT-RQ of
    /// `event_type_id` (1 requires a non-empty Referenced SOP Sequence, 2 a
    /// non-empty Failed SOP Sequence).
    pub fn from_dataset(
        dataset: &SmallDataset,
        event_type_id: u16,
    ) -> Result<Self, CommitmentError> {
        let transaction_uid = required_text(dataset, tags::TRANSACTION_UID, None)?;
        let failures_exist = event_type_id == EVENT_TYPE_FAILURES_EXIST;
        let committed = references(dataset, tags::REFERENCED_SOP_SEQUENCE, !failures_exist)?;
        let failed_references = references(dataset, tags::FAILED_SOP_SEQUENCE, failures_exist)?;
        let failed_items = dataset
            .sequence(tags::FAILED_SOP_SEQUENCE)
            .unwrap_or_default();
        let failed = failed_references
            .into_iter()
            .zip(failed_items)
            .enumerate()
            .map(|(index, (reference, item))| {
                let reason = match item.get(tags::FAILURE_REASON) {
                    None => {
                        return Err(CommitmentError::ItemMissingAttribute {
                            sequence: tags::FAILED_SOP_SEQUENCE,
                            item: index,
                            tag: tags::FAILURE_REASON,
                        })
                    }
                    Some(_) => match item.bytes(tags::FAILURE_REASON) {
                        Some([]) => {
                            return Err(CommitmentError::ItemEmptyValue {
                                sequence: tags::FAILED_SOP_SEQUENCE,
                                item: index,
                                tag: tags::FAILURE_REASON,
                            })
                        }
                        _ => {
                            item.u16(tags::FAILURE_REASON)
                                .ok_or(CommitmentError::InvalidValue {
                                    tag: tags::FAILURE_REASON,
                                })?
                        }
                    },
                };
                Ok(FailedSopReference {
                    reference,
                    failure_reason: Status(reason),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let retrieve_ae_title = dataset
            .str(tags::RETRIEVE_AE_TITLE)
            .filter(|title| !title.is_empty())
            .map(str::to_owned);
        Ok(Self {
            transaction_uid,
            retrieve_ae_title,
            committed,
            failed,
        })
    }

    /// Decodes and validates the event information.
    pub fn decode(
        bytes: &[u8],
        encoding: SmallDatasetEncoding,
        limits: DatasetLimits,
        event_type_id: u16,
    ) -> Result<Self, CommitmentError> {
        Self::from_dataset(
            &SmallDataset::decode(bytes, encoding, limits)?,
            event_type_id,
        )
    }

    /// The event information as a data set (sequences that would be empty are
    /// left out, as PS3.4 J.3.3 has them).
    pub fn to_dataset(&self) -> SmallDataset {
        let mut dataset = SmallDataset::new();
        dataset.put_str(tags::TRANSACTION_UID, None, &self.transaction_uid);
        if let Some(title) = &self.retrieve_ae_title {
            dataset.put_str(tags::RETRIEVE_AE_TITLE, None, title);
        }
        if !self.committed.is_empty() {
            dataset.put_sequence(
                tags::REFERENCED_SOP_SEQUENCE,
                self.committed.iter().map(reference_item).collect(),
            );
        }
        if !self.failed.is_empty() {
            let items = self
                .failed
                .iter()
                .map(|failed| {
                    let mut item = reference_item(&failed.reference);
                    item.put_u16(tags::FAILURE_REASON, failed.failure_reason.0);
                    item
                })
                .collect();
            dataset.put_sequence(tags::FAILED_SOP_SEQUENCE, items);
        }
        dataset
    }

    /// Encodes the event information.
    pub fn encode(&self, encoding: SmallDatasetEncoding) -> Result<Vec<u8>, CommitmentError> {
        Ok(self.to_dataset().encode(encoding)?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::dataset::{Element, Value, Vr};
    use super::*;

    const ENCODINGS: [SmallDatasetEncoding; 2] = [
        SmallDatasetEncoding::ImplicitVrLittleEndian,
        SmallDatasetEncoding::ExplicitVrLittleEndian,
    ];

    fn reference(instance: &str) -> SopReference {
        SopReference {
            sop_class_uid: crate::uid::CT_IMAGE_STORAGE.to_owned(),
            sop_instance_uid: instance.to_owned(),
        }
    }

    #[test]
    fn request_round_trip() {
        let request = CommitmentRequest {
            transaction_uid: "1.2.826.0.1.3680043.2.1125.1".to_owned(),
            references: vec![reference("1.2.3.1"), reference("1.2.3.22")],
        };
        for encoding in ENCODINGS {
            let bytes = request.encode(encoding).unwrap();
            assert_eq!(
                CommitmentRequest::decode(&bytes, encoding, DatasetLimits::default()).unwrap(),
                request
            );
        }
    }

    #[test]
    fn result_round_trip_both_event_types() {
        let success = CommitmentResult {
            transaction_uid: "1.2.3.9".to_owned(),
            retrieve_ae_title: Some("SLUICE".to_owned()),
            committed: vec![reference("1.2.3.1")],
            failed: Vec::new(),
        };
        let partial = CommitmentResult {
            transaction_uid: "1.2.3.9".to_owned(),
            retrieve_ae_title: None,
            committed: vec![reference("1.2.3.1")],
            failed: vec![
                FailedSopReference {
                    reference: reference("1.2.3.2"),
                    failure_reason: Status::NO_SUCH_OBJECT_INSTANCE,
                },
                FailedSopReference {
                    reference: reference("1.2.3.3"),
                    failure_reason: Status::CLASS_INSTANCE_CONFLICT,
                },
            ],
        };
        let all_failed = CommitmentResult {
            committed: Vec::new(),
            ..partial.clone()
        };
        assert_eq!(success.event_type_id(), 1);
        assert_eq!(partial.event_type_id(), 2);
        for encoding in ENCODINGS {
            for result in [&success, &partial, &all_failed] {
                let bytes = result.encode(encoding).unwrap();
                let decoded = CommitmentResult::decode(
                    &bytes,
                    encoding,
                    DatasetLimits::default(),
                    result.event_type_id(),
                )
                .unwrap();
                assert_eq!(&decoded, result);
            }
        }
    }

    #[test]
    fn request_errors_name_the_attribute() {
        let valid = CommitmentRequest {
            transaction_uid: "1.2".to_owned(),
            references: vec![reference("1.2.3")],
        };
        let check = |mutate: &dyn Fn(&mut SmallDataset), expected: CommitmentError| {
            let mut dataset = valid.to_dataset();
            mutate(&mut dataset);
            assert_eq!(CommitmentRequest::from_dataset(&dataset), Err(expected));
        };
        check(
            &|dataset| {
                dataset.remove(tags::TRANSACTION_UID);
            },
            CommitmentError::MissingAttribute {
                tag: tags::TRANSACTION_UID,
            },
        );
        check(
            &|dataset| dataset.put_str(tags::TRANSACTION_UID, None, ""),
            CommitmentError::EmptyValue {
                tag: tags::TRANSACTION_UID,
            },
        );
        check(
            &|dataset| {
                dataset.remove(tags::REFERENCED_SOP_SEQUENCE);
            },
            CommitmentError::MissingAttribute {
                tag: tags::REFERENCED_SOP_SEQUENCE,
            },
        );
        check(
            &|dataset| dataset.put_sequence(tags::REFERENCED_SOP_SEQUENCE, Vec::new()),
            CommitmentError::EmptySequence {
                tag: tags::REFERENCED_SOP_SEQUENCE,
            },
        );
        check(
            &|dataset| {
                let mut item = SmallDataset::new();
                item.put_str(tags::REFERENCED_SOP_CLASS_UID, None, "1.2");
                dataset.put_sequence(
                    tags::REFERENCED_SOP_SEQUENCE,
                    vec![reference_item(&reference("1.5")), item],
                );
            },
            CommitmentError::ItemMissingAttribute {
                sequence: tags::REFERENCED_SOP_SEQUENCE,
                item: 1,
                tag: tags::REFERENCED_SOP_INSTANCE_UID,
            },
        );
        check(
            &|dataset| {
                let mut item = reference_item(&reference("1.5"));
                item.put_str(tags::REFERENCED_SOP_CLASS_UID, None, "\0");
                dataset.put_sequence(tags::REFERENCED_SOP_SEQUENCE, vec![item]);
            },
            CommitmentError::ItemEmptyValue {
                sequence: tags::REFERENCED_SOP_SEQUENCE,
                item: 0,
                tag: tags::REFERENCED_SOP_CLASS_UID,
            },
        );
        check(
            &|dataset| {
                dataset.put(Element {
                    tag: tags::TRANSACTION_UID,
                    vr: Vr::SQ,
                    value: Value::Sequence(Vec::new()),
                })
            },
            CommitmentError::InvalidValue {
                tag: tags::TRANSACTION_UID,
            },
        );
        // Malformed bytes are a data-set error.
        assert!(matches!(
            CommitmentRequest::decode(
                &[1, 2, 3],
                SmallDatasetEncoding::ImplicitVrLittleEndian,
                DatasetLimits::default()
            ),
            Err(CommitmentError::Dataset(_))
        ));
    }

    #[test]
    fn failed_item_without_reason_is_an_error() {
        let mut item = reference_item(&reference("1.2.3"));
        let mut dataset = SmallDataset::new();
        dataset.put_str(tags::TRANSACTION_UID, None, "1.2");
        dataset.put_sequence(tags::FAILED_SOP_SEQUENCE, vec![item.clone()]);
        assert_eq!(
            CommitmentResult::from_dataset(&dataset, 2),
            Err(CommitmentError::ItemMissingAttribute {
                sequence: tags::FAILED_SOP_SEQUENCE,
                item: 0,
                tag: tags::FAILURE_REASON
            })
        );
        item.put_u16(tags::FAILURE_REASON, 0x0112);
        dataset.put_sequence(tags::FAILED_SOP_SEQUENCE, vec![item]);
        let result = CommitmentResult::from_dataset(&dataset, 2).unwrap();
        assert_eq!(
            result.failed[0].failure_reason,
            Status::NO_SUCH_OBJECT_INSTANCE
        );
        // Event type 2 without a Failed SOP Sequence is missing an attribute.
        dataset.remove(tags::FAILED_SOP_SEQUENCE);
        assert_eq!(
            CommitmentResult::from_dataset(&dataset, 2),
            Err(CommitmentError::MissingAttribute {
                tag: tags::FAILED_SOP_SEQUENCE
            })
        );
    }
}
