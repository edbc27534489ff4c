//! A 1 GiB instance through `sluice serve`: sent by DCMTK `storescu`, stored
//! byte-identical, with the server's peak resident memory under 256 MiB
//! (requirements §2: multi-GB instances stream, never held whole in memory).
//!
//! The instance is written by streaming (header, pixel data element header,
//! then 1 GiB of patterned bytes in 1 MiB chunks), and both sides are
//! compared by a streaming XXH3-128 hash (the index's checksum, computed here
//! independently of the engine): the test never holds it either.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_engine::config::Config;
use sluice_engine::store::Store;
use sluice_tests::{dcmtk, free_port, run, ChildGuard};
use xxhash_rust::xxh3::Xxh3Default;

const AE: &str = "SLUICE";
const ROWS: u16 = 512;
const COLUMNS: u16 = 512;
const FRAMES: u32 = 2048;
const BYTES_PER_PIXEL: u64 = 2;
const PIXEL_DATA_BYTES: u64 = ROWS as u64 * COLUMNS as u64 * BYTES_PER_PIXEL * FRAMES as u64;
const CHUNK_BYTES: usize = 1 << 20;
const RESIDENT_PEAK_BYTES_MAX: u64 = 256 << 20;
const SOP_INSTANCE_UID: &str = "1.2.826.0.1.3680043.10.1234.80.1";
const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

const _: () = assert!(PIXEL_DATA_BYTES == 1 << 30);
const _: () = assert!(PIXEL_DATA_BYTES % CHUNK_BYTES as u64 == 0);

/// One element in Explicit VR Little Endian, its value padded to even length
/// (UIDs with NUL, text with a space).
fn element(out: &mut Vec<u8>, group: u16, element: u16, vr: &[u8; 2], value: &[u8]) {
    let mut value = value.to_vec();
    if value.len() % 2 == 1 {
        value.push(if vr == b"UI" || vr == b"OB" { 0 } else { b' ' });
    }
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    if matches!(vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT") {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(&value);
}

/// Writes the Part 10 file and returns the XXH3-128 hash and length of its
/// data set.
fn write_large_instance(path: &Path) -> (u128, u64) {
    let mut meta = Vec::new();
    element(&mut meta, 0x0002, 0x0001, b"OB", &[0, 1]);
    element(
        &mut meta,
        0x0002,
        0x0002,
        b"UI",
        CT_IMAGE_STORAGE.as_bytes(),
    );
    element(
        &mut meta,
        0x0002,
        0x0003,
        b"UI",
        SOP_INSTANCE_UID.as_bytes(),
    );
    element(
        &mut meta,
        0x0002,
        0x0010,
        b"UI",
        EXPLICIT_VR_LITTLE_ENDIAN.as_bytes(),
    );
    element(
        &mut meta,
        0x0002,
        0x0012,
        b"UI",
        b"1.2.826.0.1.3680043.10.1234.80.9",
    );
    let mut head = vec![0u8; 128];
    head.extend_from_slice(b"DICM");
    element(
        &mut head,
        0x0002,
        0x0000,
        b"UL",
        &(meta.len() as u32).to_le_bytes(),
    );
    head.extend_from_slice(&meta);

    let mut dataset = Vec::new();
    element(
        &mut dataset,
        0x0008,
        0x0016,
        b"UI",
        CT_IMAGE_STORAGE.as_bytes(),
    );
    element(
        &mut dataset,
        0x0008,
        0x0018,
        b"UI",
        SOP_INSTANCE_UID.as_bytes(),
    );
    element(&mut dataset, 0x0008, 0x0060, b"CS", b"CT");
    element(&mut dataset, 0x0010, 0x0010, b"PN", b"Large^Instance");
    element(&mut dataset, 0x0010, 0x0020, b"LO", b"LARGE1");
    element(
        &mut dataset,
        0x0020,
        0x000D,
        b"UI",
        b"1.2.826.0.1.3680043.10.1234.80.2",
    );
    element(
        &mut dataset,
        0x0020,
        0x000E,
        b"UI",
        b"1.2.826.0.1.3680043.10.1234.80.3",
    );
    element(&mut dataset, 0x0020, 0x0013, b"IS", b"1");
    element(&mut dataset, 0x0028, 0x0002, b"US", &1u16.to_le_bytes());
    element(&mut dataset, 0x0028, 0x0004, b"CS", b"MONOCHROME2");
    element(
        &mut dataset,
        0x0028,
        0x0008,
        b"IS",
        FRAMES.to_string().as_bytes(),
    );
    element(&mut dataset, 0x0028, 0x0010, b"US", &ROWS.to_le_bytes());
    element(&mut dataset, 0x0028, 0x0011, b"US", &COLUMNS.to_le_bytes());
    element(&mut dataset, 0x0028, 0x0100, b"US", &16u16.to_le_bytes());
    element(&mut dataset, 0x0028, 0x0101, b"US", &12u16.to_le_bytes());
    element(&mut dataset, 0x0028, 0x0102, b"US", &11u16.to_le_bytes());
    element(&mut dataset, 0x0028, 0x0103, b"US", &0u16.to_le_bytes());
    // (7FE0,0010) OW, 32-bit length, value follows in chunks.
    dataset.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
    dataset.extend_from_slice(&(PIXEL_DATA_BYTES as u32).to_le_bytes());

    let mut file = File::create(path).unwrap();
    let mut hasher = Xxh3Default::new();
    file.write_all(&head).unwrap();
    file.write_all(&dataset).unwrap();
    hasher.update(&dataset);
    // A pattern that differs from chunk to chunk (its index in the first 8
    // bytes), so a chunk stored twice or out of place changes the hash.
    let mut chunk: Vec<u8> = (0..CHUNK_BYTES)
        .map(|offset| (offset.wrapping_mul(31) ^ (offset >> 9)) as u8)
        .collect();
    for index in 0..PIXEL_DATA_BYTES / CHUNK_BYTES as u64 {
        chunk[..8].copy_from_slice(&index.to_le_bytes());
        file.write_all(&chunk).unwrap();
        hasher.update(&chunk);
    }
    file.sync_all().unwrap();
    (hasher.digest128(), dataset.len() as u64 + PIXEL_DATA_BYTES)
}

/// XXH3-128 and length of a file's bytes from `offset` to its end, streamed.
fn hash_from(path: &Path, offset: u64) -> (u128, u64) {
    let mut file = File::open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    let mut reader = BufReader::with_capacity(CHUNK_BYTES, file);
    let mut hasher = Xxh3Default::new();
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut length = 0u64;
    loop {
        let read = reader.read(&mut buffer).unwrap();
        if read == 0 {
            return (hasher.digest128(), length);
        }
        hasher.update(&buffer[..read]);
        length += read as u64;
    }
}

/// The data set offset of a Part 10 file, from its (0002,0000) group length.
fn part10_dataset_offset(path: &Path) -> u64 {
    let mut head = [0u8; 144];
    File::open(path).unwrap().read_exact(&mut head).unwrap();
    assert_eq!(&head[128..132], b"DICM", "{}: not Part 10", path.display());
    144 + u64::from(u32::from_le_bytes(head[140..144].try_into().unwrap()))
}

/// A process's peak resident memory (`VmHWM`), in bytes.
pub(crate) fn resident_peak_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

#[test]
fn one_gib_instance_streams_byte_identical_under_256_mib_resident() {
    let work = tempfile::tempdir().unwrap();
    let sent_path = work.path().join("large.dcm");
    let generated = Instant::now();
    let (sent_hash, sent_length) = write_large_instance(&sent_path);
    let generate_seconds = generated.elapsed().as_secs_f64();

    let data = work.path().join("data");
    let port = free_port();
    let log_path = work.path().join("serve.log");
    let mut server = ChildGuard::new(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--io-backend", "uring", "--cores", "2"])
            .args(["--free-space-floor", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log_path).unwrap())
            .spawn()
            .expect("start sluice serve"),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "sluice serve did not listen:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let sent = Instant::now();
    let output = run(
        Command::new(dcmtk("storescu"))
            .args(["-aec", AE, "-aet", "LARGE", "127.0.0.1", &port.to_string()])
            .arg(&sent_path)
            .env("TCP_NODELAY", "1"),
        Duration::from_secs(300),
    );
    let send_seconds = sent.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "storescu: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        log()
    );
    // The peak over the server's whole life, read just before it is stopped.
    let resident_peak = resident_peak_bytes(server.id());
    server.child_mut().kill().unwrap();
    server.child_mut().wait().unwrap();
    assert!(
        log().contains("instances_stored=1"),
        "no association line with the instance:\n{}",
        log()
    );

    let config = Config::from_args(["sluice".as_ref(), "--data-dir".as_ref(), data.as_os_str()])
        .expect("config");
    let store = Store::open(config).expect("open the store");
    let entry = store
        .instance_by_sop(SOP_INSTANCE_UID)
        .unwrap()
        .expect("the large instance is indexed");
    let stored_path = store.instance_path(&entry.record);
    drop(store);
    let offset = part10_dataset_offset(&stored_path);
    assert_eq!(offset, entry.record.dataset_offset_bytes);
    let (stored_hash, stored_length) = hash_from(&stored_path, offset);
    assert_eq!(stored_length, sent_length, "stored data set length");
    assert_eq!(
        stored_hash, sent_hash,
        "stored data set differs from the sent one"
    );
    assert_eq!(
        stored_hash.to_be_bytes(),
        entry.record.checksum.0,
        "indexed checksum"
    );

    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!(
        "large instance: {:.0} MiB data set written in {generate_seconds:.1} s, stored by \
         storescu in {send_seconds:.1} s ({:.0} MiB/s); server peak resident {:.1} MiB \
         (limit {:.0} MiB)",
        mib(sent_length),
        mib(sent_length) / send_seconds,
        mib(resident_peak),
        mib(RESIDENT_PEAK_BYTES_MAX)
    );
    assert!(
        resident_peak < RESIDENT_PEAK_BYTES_MAX,
        "server peak resident memory {:.1} MiB for a 1 GiB instance",
        mib(resident_peak)
    );
}
