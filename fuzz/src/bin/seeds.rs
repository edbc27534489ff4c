//! `sluice-fuzz-seeds RAW_DIR OUT_DIR`: turns the material `seeds/record.py`
//! recorded (byte streams of real associations, data sets of real files)
//! into seed inputs for every target, adds inputs made by net's own
//! encoders, and writes them to `OUT_DIR/<target>/`. `fuzz/run --seed`
//! minimises them into `fuzz/corpus/` (docs/design/fuzzing.md, "Seeds").

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use sluice_net::dimse::commitment::{
    CommitmentRequest, CommitmentResult, FailedSopReference, SopReference,
};
use sluice_net::dimse::dataset::{SmallDataset, SmallDatasetEncoding};
use sluice_net::dimse::{
    CCancelRq, CFindRq, CMoveRq, CMoveRsp, Command, NEventReportRq, Priority, Status, StatusDetail,
    SubOperationCounts, Tag,
};
use sluice_net::pdata::{frame_pdu, StreamDecoder, StreamEvent};
use sluice_net::pdu::{DecodeLimits, Pdu, PresentationContextResultReason};
use sluice_net::uid;

/// Largest seed kept: AFL++ slows down on big inputs, and a head is small.
const SEED_LENGTH_MAX: usize = 16 * 1024;
/// P-DATA PDUs kept per stream for the `pdu` target.
const PDATA_PDUS_PER_STREAM: usize = 3;

#[derive(Default)]
struct Seeds {
    by_target: BTreeMap<&'static str, BTreeSet<Vec<u8>>>,
}

impl Seeds {
    fn add(&mut self, target: &'static str, bytes: Vec<u8>) {
        let mut bytes = bytes;
        bytes.truncate(SEED_LENGTH_MAX);
        self.by_target.entry(target).or_default().insert(bytes);
    }

    fn prefixed(&mut self, target: &'static str, first: u8, body: &[u8]) {
        let mut bytes = vec![first];
        bytes.extend_from_slice(body);
        self.add(target, bytes);
    }

    fn write(&self, out: &Path) -> std::io::Result<()> {
        for (target, inputs) in &self.by_target {
            let dir = out.join(target);
            fs::create_dir_all(&dir)?;
            for (index, input) in inputs.iter().enumerate() {
                fs::write(dir.join(format!("seed-{index:04}")), input)?;
            }
            println!("{target}: {} seeds", inputs.len());
        }
        Ok(())
    }
}

/// The index of a transfer syntax in net's catalogue: `head_scan`'s first byte.
fn syntax_selector(transfer_syntax: &str) -> Option<u8> {
    uid::transfer_syntaxes()
        .iter()
        .position(|syntax| syntax.uid == transfer_syntax)
        .and_then(|index| u8::try_from(index).ok())
}

/// The accepted contexts' transfer syntaxes, from the A-ASSOCIATE-AC that
/// starts an acceptor's stream.
fn accepted_syntaxes(answer: &[u8]) -> BTreeMap<u8, String> {
    let limits = DecodeLimits {
        pdata_length_max: 0,
        ..DecodeLimits::default()
    };
    let mut syntaxes = BTreeMap::new();
    if let Ok(Some((sluice_net::pdata::Frame::Control(Pdu::AssociateAc(ac)), _))) =
        frame_pdu(answer, &limits)
    {
        for context in ac.presentation_contexts {
            if context.result == PresentationContextResultReason::Acceptance {
                syntaxes.insert(context.id, context.transfer_syntax);
            }
        }
    }
    syntaxes
}

/// Seeds from one recorded association: the streams whole, each PDU, each
/// command set, each data set.
fn from_session(seeds: &mut Seeds, sent: &[u8], answered: &[u8]) {
    let syntaxes = accepted_syntaxes(answered);
    for stream in [sent, answered] {
        seeds.add("pdata_stream", stream.to_vec());
    }
    for bits in [0x00, 0x01, 0x0E, 0x10, 0x60] {
        seeds.prefixed("association", bits, sent);
    }
    let limits = DecodeLimits {
        pdata_length_max: 0,
        ..DecodeLimits::default()
    };
    for stream in [sent, answered] {
        let mut offset = 0;
        let mut pdata_pdus = 0;
        while let Ok(Some((frame, used))) =
            frame_pdu(stream.get(offset..).unwrap_or_default(), &limits)
        {
            let pdu = stream
                .get(offset..offset + used)
                .unwrap_or_default()
                .to_vec();
            offset += used;
            if matches!(frame, sluice_net::pdata::Frame::PData(_)) {
                pdata_pdus += 1;
                if pdata_pdus > PDATA_PDUS_PER_STREAM {
                    continue;
                }
            }
            seeds.add("pdu", pdu);
        }
        messages(seeds, stream, &syntaxes);
    }
}

/// Reassembles the messages of a stream into command and data-set seeds.
fn messages(seeds: &mut Seeds, stream: &[u8], syntaxes: &BTreeMap<u8, String>) {
    let mut decoder = StreamDecoder::new(DecodeLimits {
        pdata_length_max: 0,
        ..DecodeLimits::default()
    });
    let (mut command, mut dataset) = (Vec::new(), Vec::new());
    let mut last_command = None;
    for event in decoder.feed(stream) {
        let Ok(StreamEvent::PdvFragment(fragment)) = event else {
            continue;
        };
        let buffer = if fragment.is_command {
            &mut command
        } else {
            &mut dataset
        };
        buffer.extend_from_slice(fragment.bytes);
        if !(fragment.is_last && fragment.pdv_complete) {
            continue;
        }
        if fragment.is_command {
            seeds.add("dimse_command", command.clone());
            last_command = Command::decode(&command).ok();
            command.clear();
            continue;
        }
        let syntax = syntaxes
            .get(&fragment.presentation_context_id)
            .map(String::as_str);
        match (&last_command, syntax) {
            (Some(Command::CStoreRq(_)), Some(syntax)) => {
                if let Some(selector) = syntax_selector(syntax) {
                    seeds.prefixed("head_scan", selector, &dataset);
                }
            }
            (Some(Command::NActionRq(_) | Command::NEventReportRq(_)), Some(syntax)) => {
                let explicit = u8::from(syntax == uid::ts::EXPLICIT_VR_LITTLE_ENDIAN);
                seeds.prefixed("small_dataset", explicit | 0x0E, &dataset);
                seeds.prefixed("commitment", explicit | 0x0E, &dataset);
            }
            _ => {}
        }
        dataset.clear();
    }
}

/// Data sets of real files, named `NAME.TRANSFER_SYNTAX_UID`.
fn from_datasets(seeds: &mut Seeds, dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let Some(syntax) = name.split_once('.').map(|(_, syntax)| syntax) else {
            continue;
        };
        if let Some(selector) = syntax_selector(syntax) {
            seeds.prefixed("head_scan", selector, &fs::read(&path)?);
        }
    }
    Ok(())
}

/// Inputs made by net's own encoders, for what the recordings lack.
fn from_encoders(seeds: &mut Seeds) {
    let detail = StatusDetail {
        error_comment: Some("no such study".into()),
        offending_elements: vec![Tag(0x0020, 0x000D)],
        error_id: Some(3),
    };
    let commands = [
        Command::CFindRq(CFindRq {
            message_id: 3,
            priority: Priority::Medium,
            affected_sop_class_uid: uid::STUDY_ROOT_QR_FIND.into(),
        }),
        Command::CMoveRq(CMoveRq {
            message_id: 4,
            priority: Priority::High,
            affected_sop_class_uid: uid::STUDY_ROOT_QR_MOVE.into(),
            move_destination: "ARCHIVE".into(),
        }),
        Command::CMoveRsp(CMoveRsp {
            message_id_being_responded_to: 4,
            affected_sop_class_uid: Some(uid::STUDY_ROOT_QR_MOVE.into()),
            status: Status(0xA702),
            sub_operations: SubOperationCounts {
                remaining: Some(1),
                completed: Some(2),
                failed: Some(3),
                warning: Some(0),
            },
            data_set: false,
            detail,
        }),
        Command::CCancelRq(CCancelRq {
            message_id_being_responded_to: 3,
        }),
        Command::NEventReportRq(NEventReportRq {
            message_id: 9,
            affected_sop_class_uid: uid::STORAGE_COMMITMENT_PUSH_MODEL.into(),
            affected_sop_instance_uid: uid::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE.into(),
            event_type_id: 2,
            data_set: true,
        }),
    ];
    for command in commands {
        if let Ok(bytes) = command.encode() {
            seeds.add("dimse_command", bytes);
        }
    }

    let reference = |index: u32| SopReference {
        sop_class_uid: uid::CT_IMAGE_STORAGE.into(),
        sop_instance_uid: format!("1.2.826.0.1.3680043.10.1.{index}"),
    };
    let request = CommitmentRequest {
        transaction_uid: "1.2.826.0.1.3680043.10.1.99".into(),
        references: (0..3).map(reference).collect(),
    };
    let result = CommitmentResult {
        transaction_uid: request.transaction_uid.clone(),
        retrieve_ae_title: Some("SLUICE".into()),
        committed: vec![reference(0)],
        failed: vec![FailedSopReference {
            reference: reference(1),
            failure_reason: Status(0x0112),
        }],
    };
    let mut query = SmallDataset::new();
    query.put_str(Tag(0x0008, 0x0052), None, "STUDY");
    query.put_str(Tag(0x0010, 0x0010), None, "Doe^J*");
    query.put_str(Tag(0x0020, 0x000D), None, "");
    query.put_sequence(Tag(0x0008, 0x1110), vec![SmallDataset::new()]);
    for (bit, encoding) in [
        (0, SmallDatasetEncoding::ImplicitVrLittleEndian),
        (1, SmallDatasetEncoding::ExplicitVrLittleEndian),
    ] {
        if let Ok(bytes) = request.encode(encoding) {
            seeds.prefixed("commitment", bit | 0x0E, &bytes);
            seeds.prefixed("small_dataset", bit | 0x0E, &bytes);
        }
        if let Ok(bytes) = result.encode(encoding) {
            seeds.prefixed("commitment", bit | 0x0E | 0x30, &bytes);
            seeds.prefixed("small_dataset", bit | 0x0E, &bytes);
        }
        if let Ok(bytes) = query.encode(encoding) {
            seeds.prefixed("small_dataset", bit | 0x0E, &bytes);
        }
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [raw, out] = args.as_slice() else {
        eprintln!(
            "usage: sluice-fuzz-seeds RAW_DIR OUT_DIR (RAW_DIR as seeds/record.py writes it)"
        );
        std::process::exit(2);
    };
    let mut seeds = Seeds::default();
    let streams = raw.join("streams");
    let mut names: Vec<PathBuf> = fs::read_dir(&streams)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for sent in names
        .iter()
        .filter(|path| path.extension().is_some_and(|e| e == "c2s"))
    {
        let answered = fs::read(sent.with_extension("s2c")).unwrap_or_default();
        from_session(&mut seeds, &fs::read(sent)?, &answered);
    }
    from_datasets(&mut seeds, &raw.join("datasets"))?;
    from_encoders(&mut seeds);
    seeds.write(out)
}
