//! A File-set of 100,000 instances: the writer's memory stays within its
//! bound while the DICOMDIR streams out, and the result reads back whole.

use sluice_media::{read_dicomdir, FileSetWriter, Profile};

use crate::support::{options, synthetic_instances};

/// The bound `docs/design/media.md` states: at most this many bytes of
/// writer state per instance, beyond the pending output.
const STATE_BYTES_PER_INSTANCE_MAX: usize = 160;

#[test]
fn a_hundred_thousand_instances_in_bounded_memory() {
    let (patients, studies, series, instances) = (50u32, 4u32, 5u32, 100u32);
    let total = (patients * studies * series * instances) as usize;
    assert_eq!(total, 100_000);
    let mut writer = FileSetWriter::new(&options(Profile::GeneralCd)).unwrap();
    let mut dicomdir = Vec::new();
    let mut state_max = 0;
    let mut added = 0usize;
    for keys in synthetic_instances(patients, studies, series, instances) {
        writer.add(&keys, "1.2.840.10008.1.2").unwrap();
        added += 1;
        if writer.pending_bytes() >= 64 * 1024 {
            state_max = state_max.max(writer.memory_bytes());
            dicomdir.extend_from_slice(&writer.take_bytes());
        }
        if added % 2000 == 0 {
            // Checked as it grows, not only at the end.
            let pending_cap = 64 * 1024 * 2 + 4096;
            assert!(
                writer.memory_bytes() <= added * STATE_BYTES_PER_INSTANCE_MAX + pending_cap,
                "{} bytes for {added} instances",
                writer.memory_bytes()
            );
        }
    }
    let state = writer.memory_bytes();
    let end = writer.finish();
    dicomdir.extend_from_slice(&end.tail);
    end.apply(&mut dicomdir);
    eprintln!(
        "100,000 instances: DICOMDIR {} bytes, writer state {} bytes at the end, {} at most \
         ({} bytes per instance), {} patches",
        dicomdir.len(),
        state,
        state_max,
        state_max / total,
        end.patches.len()
    );
    assert_eq!(end.records, [50, 200, 1000, 100_000]);
    // Instances arrive grouped: only links across chunk boundaries patch.
    assert!(end.patches.len() < 2 * 1250, "{}", end.patches.len());
    let directory = read_dicomdir(&dicomdir).unwrap();
    assert!(directory.issues.is_empty(), "{:?}", &directory.issues[..3]);
    assert_eq!(directory.instances.len(), total);
    assert_eq!(directory.series.len(), 1000);
    // Depth first, instances in the order they were added.
    assert_eq!(
        directory.instances[total - 1].file_id.to_value(),
        "DICOM\\PA000050\\ST000004\\SE000005\\IM000100"
    );
    assert_eq!(
        directory.instances[total - 1].transfer_syntax_uid,
        "1.2.840.10008.1.2.1"
    );
}
