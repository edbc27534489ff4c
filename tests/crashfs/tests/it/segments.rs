//! The segment store's writer and recovery scan under power loss
//! (docs/design/segments.md): records appended to a preallocated segment
//! and flushed now and then, the power cut at a seeded point, torn (a
//! seeded part of the unsynced pages kept); the scan of what survived finds
//! every flushed record, byte-exact and in order, takes nothing that is not
//! a record as written, and stops at a record boundary. The writer and the
//! scan only: the ingest path does not write segments yet (the layout is
//! refused by `sluice serve`), so Sluice's own power-loss test
//! (`power_loss.rs`) still runs on the files layout.

use std::fs::File;

use sluice_crashfs::{Mounted, PowerLoss};
use sluice_engine::store::segment::{
    encode_record, read_record, scan, RecordUids, SegmentWriter, SEGMENT_BYTES_MIN,
};

const SEGMENT_BYTES: u64 = SEGMENT_BYTES_MIN;
const ROUNDS: u64 = 40;

/// xorshift64*: seeded choices, the same on any build.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

fn payload(n: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|at| (at as u64 ^ n.wrapping_mul(131)) as u8)
        .collect()
}

fn uids(n: u64) -> RecordUids {
    RecordUids {
        study: "1.2.3".into(),
        series: "1.2.3.4".into(),
        sop: format!("1.2.3.4.{n}"),
    }
}

/// One round: the records written, flushed, and found by the scan.
fn round(seed: u64) -> (usize, usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Mounted::mount_empty(dir.path()).unwrap_or_else(|error| panic!("{error}"));
    let path = dir.path().join("0.seg");
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut written: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut flushed = 0;
    {
        let mut segment = SegmentWriter::create(&path, SEGMENT_BYTES).unwrap();
        File::open(dir.path()).unwrap().sync_all().unwrap();
        let records = 1 + rng.below(24);
        for n in 0..records {
            let bytes = payload(n, rng.below(60_000) as usize);
            let record = encode_record(1, &uids(n), &bytes).unwrap();
            let Ok(offset) = segment.append(&record) else {
                break;
            };
            written.push((offset, bytes));
            if rng.below(3) == 0 {
                segment.sync().unwrap();
                flushed = written.len();
            }
        }
    }
    mounted.cut_now(PowerLoss {
        seed,
        tear: rng.below(4) != 0,
    });
    let (image, _) = mounted
        .unmount()
        .unwrap_or_else(|error| panic!("{error}"))
        .expect("the power was cut");
    let again = Mounted::mount(
        image,
        dir.path(),
        sluice_crashfs::mount::CAPACITY_BYTES_DEFAULT,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let found = {
        let file = File::open(&path).unwrap();
        let size = file.metadata().unwrap().len();
        assert_eq!(
            size, SEGMENT_BYTES,
            "seed {seed}: the preallocation was synced"
        );
        let scan = scan(&file, 0, size, 0).unwrap();
        assert!(
            scan.records.len() >= flushed,
            "seed {seed}: {} of {flushed} flushed records found",
            scan.records.len()
        );
        for (record, (offset, bytes)) in scan.records.iter().zip(&written) {
            assert_eq!(record.offset, *offset, "seed {seed}");
            let (head, read) = read_record(&file, record.offset, size).unwrap();
            assert_eq!(&read, bytes, "seed {seed}: record at {offset}");
            assert_eq!(head.uids, uids(head.uids.sop[8..].parse().unwrap()));
        }
        assert!(
            scan.records.len() <= written.len(),
            "seed {seed}: a record never written"
        );
        let boundary = written
            .get(scan.records.len())
            .map_or(scan.end, |(offset, _)| *offset);
        assert_eq!(
            scan.end, boundary,
            "seed {seed}: the scan ends at a record boundary"
        );
        scan.records.len()
    };
    again.unmount().unwrap_or_else(|error| panic!("{error}"));
    (written.len(), flushed, found)
}

#[test]
fn every_flushed_record_survives_a_power_cut_and_the_scan_takes_nothing_else() {
    let (mut written_total, mut flushed_total, mut found_total) = (0, 0, 0);
    for seed in 1..=ROUNDS {
        let (written, flushed, found) = round(seed);
        written_total += written;
        flushed_total += flushed;
        found_total += found;
    }
    eprintln!(
        "{ROUNDS} rounds: {written_total} records written, {flushed_total} flushed, {found_total} found"
    );
    // The cuts did lose unflushed records: what survives is decided by the
    // flushes, not kept whatever happens.
    assert!(found_total < written_total);
}
