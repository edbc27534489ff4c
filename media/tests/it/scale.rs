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

/// Kilobytes of a `/proc/self/status` field (VmHWM, VmRSS).
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const CHILD: &str = "SLUICE_MEDIA_SCALE_CHILD";
const RESIDENT_GROWTH_MAX_KB: u64 = 24 * 1024;

/// The same 100,000 instances in a process of their own, the DICOMDIR
/// streamed to a sink as it comes: the peak resident memory grows by less
/// than [`RESIDENT_GROWTH_MAX_KB`] over the process's start.
#[test]
fn a_hundred_thousand_instances_in_bounded_resident_memory() {
    if std::env::var_os(CHILD).is_some() {
        let baseline = status_kb("VmHWM:");
        let mut writer = FileSetWriter::new(&options(Profile::GeneralCd)).unwrap();
        let mut written = 0usize;
        for keys in synthetic_instances(50, 4, 5, 100) {
            writer.add(&keys, "1.2.840.10008.1.2").unwrap();
            if writer.pending_bytes() >= 64 * 1024 {
                written += std::hint::black_box(writer.take_bytes()).len();
            }
        }
        let end = writer.finish();
        written += end.tail.len();
        assert_eq!(written as u64, end.length);
        println!("RESIDENT {baseline} {}", status_kb("VmHWM:"));
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "scale::a_hundred_thousand_instances_in_bounded_resident_memory",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let at = stdout
        .find("RESIDENT ")
        .unwrap_or_else(|| panic!("{stdout}"));
    let line = stdout[at + 9..].lines().next().unwrap();
    let numbers: Vec<u64> = line
        .split(' ')
        .map(|number| number.parse().unwrap())
        .collect();
    let growth = numbers[1].saturating_sub(numbers[0]);
    eprintln!(
        "100,000 instances: peak resident memory {} KiB, {growth} KiB over the start",
        numbers[1]
    );
    assert!(growth < RESIDENT_GROWTH_MAX_KB, "{growth} KiB");
}
