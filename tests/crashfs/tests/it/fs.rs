//! The crash file system against its model, through a real mount: the
//! system calls a program makes (std, rustix, a Python process for `mmap`),
//! then a power cut, then what a new mount of the surviving image shows.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;

use sluice_crashfs::model::PAGE_BYTES;
use sluice_crashfs::{Image, Mounted, PowerLoss};

const NO_TEAR: PowerLoss = PowerLoss {
    seed: 7,
    tear: false,
};

fn mount(dir: &Path) -> Mounted {
    Mounted::mount_empty(dir).unwrap_or_else(|error| panic!("{error}"))
}

/// Cuts the power, unmounts, and mounts what survived at the same place.
fn cut_and_remount(mounted: Mounted, loss: PowerLoss) -> (Mounted, Image) {
    let path = mounted.path().to_owned();
    mounted.cut_now(loss);
    let (image, _) = mounted
        .unmount()
        .unwrap_or_else(|error| panic!("{error}"))
        .expect("the power was cut");
    let again = Mounted::mount(
        image.clone(),
        &path,
        sluice_crashfs::mount::CAPACITY_BYTES_DEFAULT,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    (again, image)
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

fn write_file(path: &Path, bytes: &[u8]) -> File {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap();
    file.write_all(bytes).unwrap();
    file
}

#[test]
fn a_file_synced_in_a_directory_never_synced_is_gone_after_a_cut() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mount(dir.path());
    let file = write_file(&fs.path().join("a.dcm"), b"acknowledged?");
    file.sync_data().unwrap();
    drop(file);
    assert!(fs.path().join("a.dcm").exists(), "visible before the cut");
    let (fs, _) = cut_and_remount(fs, NO_TEAR);
    assert!(
        !fs.path().join("a.dcm").exists(),
        "its entry was never durable"
    );
}

#[test]
fn a_file_synced_with_its_directory_survives_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mount(dir.path());
    let bytes: Vec<u8> = (0..3 * PAGE_BYTES + 17).map(|i| (i % 251) as u8).collect();
    let file = write_file(&fs.path().join("kept.dcm"), &bytes);
    file.sync_data().unwrap();
    sync_dir(fs.path());
    // Written after the sync: not durable.
    file.write_all_at(b"late", 0).unwrap();
    drop(file);
    let (fs, _) = cut_and_remount(fs, NO_TEAR);
    assert_eq!(std::fs::read(fs.path().join("kept.dcm")).unwrap(), bytes);
}

#[test]
fn a_directory_entry_synced_before_the_data_leaves_an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mount(dir.path());
    let file = write_file(&fs.path().join("empty.dcm"), b"never synced");
    sync_dir(fs.path());
    drop(file);
    let (fs, _) = cut_and_remount(fs, NO_TEAR);
    assert_eq!(std::fs::read(fs.path().join("empty.dcm")).unwrap(), b"");
}

#[test]
fn a_rename_survives_under_the_new_name_once_the_target_directory_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mount(dir.path());
    let tmp = fs.path().join("tmp");
    let objects = fs.path().join("objects/ab/cd");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::create_dir_all(&objects).unwrap();
    for synced in [
        fs.path().to_owned(),
        fs.path().join("objects"),
        fs.path().join("objects/ab"),
        objects.clone(),
    ] {
        sync_dir(&synced);
    }
    let file = write_file(&tmp.join("x.dcm"), b"moved");
    std::fs::rename(tmp.join("x.dcm"), objects.join("x.dcm")).unwrap();
    file.sync_data().unwrap();
    sync_dir(&objects);
    // A second rename whose directory is never synced stays undone.
    let other = write_file(&tmp.join("y.dcm"), b"not moved");
    other.sync_data().unwrap();
    sync_dir(&tmp);
    std::fs::rename(tmp.join("y.dcm"), objects.join("y.dcm")).unwrap();
    drop((file, other));
    let (fs, _) = cut_and_remount(fs, NO_TEAR);
    let objects = fs.path().join("objects/ab/cd");
    assert_eq!(std::fs::read(objects.join("x.dcm")).unwrap(), b"moved");
    assert!(!fs.path().join("tmp/x.dcm").exists());
    assert!(!objects.join("y.dcm").exists());
    assert_eq!(
        std::fs::read(fs.path().join("tmp/y.dcm")).unwrap(),
        b"not moved"
    );
}

#[test]
fn an_unlink_is_undone_unless_its_directory_was_synced() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mount(dir.path());
    for name in ["gone.dcm", "back.dcm"] {
        write_file(&fs.path().join(name), name.as_bytes())
            .sync_data()
            .unwrap();
    }
    sync_dir(fs.path());
    std::fs::remove_file(fs.path().join("gone.dcm")).unwrap();
    sync_dir(fs.path());
    std::fs::remove_file(fs.path().join("back.dcm")).unwrap();
    let (fs, _) = cut_and_remount(fs, NO_TEAR);
    assert!(!fs.path().join("gone.dcm").exists());
    assert_eq!(
        std::fs::read(fs.path().join("back.dcm")).unwrap(),
        b"back.dcm"
    );
}

#[test]
fn o_dsync_writes_are_durable_when_they_return() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mount(dir.path());
    write_file(&fs.path().join("data.mdb"), &[])
        .sync_data()
        .unwrap();
    sync_dir(fs.path());
    let plain = OpenOptions::new()
        .write(true)
        .open(fs.path().join("data.mdb"))
        .unwrap();
    plain.write_all_at(&[1u8; PAGE_BYTES], 0).unwrap();
    let dsync = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(fs.path().join("data.mdb"))
        .unwrap();
    dsync.write_all_at(&[2u8; 100], PAGE_BYTES as u64).unwrap();
    drop((plain, dsync));
    let (fs, _) = cut_and_remount(fs, NO_TEAR);
    let bytes = std::fs::read(fs.path().join("data.mdb")).unwrap();
    assert_eq!(bytes.len(), PAGE_BYTES + 100);
    assert!(
        bytes[..PAGE_BYTES].iter().all(|&b| b == 0),
        "the plain write was not synced"
    );
    assert!(
        bytes[PAGE_BYTES..].iter().all(|&b| b == 2),
        "the O_DSYNC write was"
    );
}

#[test]
fn torn_cuts_keep_whole_pages_old_or_new_and_replay_from_the_seed() {
    let pages = 32;
    let mut outcomes = Vec::new();
    for round in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let fs = mount(dir.path());
        let file = write_file(&fs.path().join("f"), &vec![b'o'; pages * PAGE_BYTES]);
        file.sync_data().unwrap();
        sync_dir(fs.path());
        file.write_all_at(&vec![b'n'; pages * PAGE_BYTES], 0)
            .unwrap();
        // One more page past the synced size: the size may be either.
        file.write_all_at(&[b'n'; 10], (pages * PAGE_BYTES) as u64)
            .unwrap();
        drop(file);
        let (fs, _) = cut_and_remount(
            fs,
            PowerLoss {
                seed: 99,
                tear: true,
            },
        );
        let bytes = std::fs::read(fs.path().join("f")).unwrap();
        assert!(bytes.len() == pages * PAGE_BYTES || bytes.len() == pages * PAGE_BYTES + 10);
        for page in bytes.chunks(PAGE_BYTES).take(pages) {
            assert!(
                page.iter().all(|&b| b == page[0]),
                "round {round}: a page torn inside"
            );
        }
        outcomes.push(bytes);
    }
    assert_eq!(
        outcomes[0], outcomes[1],
        "the same seed tears the same pages"
    );
    let new_pages = outcomes[0]
        .chunks(PAGE_BYTES)
        .filter(|page| page[0] == b'n')
        .count();
    assert!(
        new_pages > 0 && new_pages < pages,
        "a torn cut keeps some unsynced pages, not all: {new_pages} of {pages}"
    );
}

#[test]
fn mmap_reads_see_every_write_and_truncate_and_fallocate_change_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mount(dir.path());
    let path = fs.path().join("map");
    let file = write_file(&path, &vec![b'a'; 2 * PAGE_BYTES]);
    // A separate process maps the file read-only, as LMDB does, and reads
    // a page written through a file descriptor after the mapping was made.
    let script = format!(
        "import mmap, os, sys\n\
         fd = os.open({path:?}, os.O_RDWR)\n\
         m = mmap.mmap(fd, {size}, mmap.MAP_SHARED, mmap.PROT_READ)\n\
         assert m[0:1] == b'a', m[0:1]\n\
         os.pwrite(fd, b'b' * 4096, 4096)\n\
         assert m[4096:4097] == b'b', m[4096:4097]\n\
         print('mapped ok')\n",
        path = path.display().to_string(),
        size = 2 * PAGE_BYTES
    );
    let output = Command::new(sluice_tests::python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("mapped ok"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    file.set_len(100).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 100);
    rustix::fs::fallocate(
        &file,
        rustix::fs::FallocateFlags::empty(),
        0,
        3 * PAGE_BYTES as u64,
    )
    .unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        3 * PAGE_BYTES as u64
    );
    rustix::fs::fallocate(
        &file,
        rustix::fs::FallocateFlags::KEEP_SIZE,
        0,
        8 * PAGE_BYTES as u64,
    )
    .unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        3 * PAGE_BYTES as u64
    );
    let mut head = [0u8; 101];
    File::open(&path).unwrap().read_exact(&mut head).unwrap();
    assert_eq!(&head[..100], &[b'a'; 100][..]);
    assert_eq!(head[100], 0, "bytes past a truncation read back as zeros");
}

#[test]
fn o_direct_writes_exclusive_creates_locks_and_statvfs_behave() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mount(dir.path());
    let path = fs.path().join("direct");
    let file = write_file(&path, &[]);
    assert_eq!(
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap_err()
            .kind(),
        ErrorKind::AlreadyExists
    );
    // O_DIRECT needs a buffer aligned to the logical block: find one
    // inside a larger allocation.
    let mut buffer = vec![b'd'; 3 * PAGE_BYTES];
    let misalignment = buffer.as_ptr() as usize % PAGE_BYTES;
    let start = (PAGE_BYTES - misalignment) % PAGE_BYTES;
    let aligned = &mut buffer[start..start + PAGE_BYTES];
    let direct = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    direct.write_all_at(aligned, 0).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), vec![b'd'; PAGE_BYTES]);
    // Locks are the kernel's own (local): a second exclusive flock on
    // another open file description is refused.
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    let other = File::open(&path).unwrap();
    assert!(
        rustix::fs::flock(&other, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
    );
    let space = rustix::fs::statvfs(fs.path()).unwrap();
    assert_eq!(
        space.f_blocks * space.f_frsize,
        sluice_crashfs::mount::CAPACITY_BYTES_DEFAULT
    );
    assert!(
        space.f_bavail < space.f_blocks,
        "the written page is counted as used"
    );
}

#[test]
fn after_the_cut_every_operation_fails_with_eio() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mount(dir.path());
    let file = write_file(&fs.path().join("f"), b"x");
    fs.cut_now(NO_TEAR);
    let error = file.write_all_at(b"y", 0).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO));
    assert_eq!(
        file.sync_data().unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    assert_eq!(
        std::fs::create_dir(fs.path().join("d"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EIO)
    );
    drop(file);
}

#[test]
fn an_armed_cut_stops_at_its_mutation() {
    let dir = tempfile::tempdir().unwrap();
    let fs = mount(dir.path());
    let before = fs.stats().mutations;
    fs.arm_cut(before + 3, NO_TEAR);
    let file = write_file(&fs.path().join("f"), b"one"); // create + write
    assert!(!fs.is_cut());
    let error = file.sync_data().unwrap_err(); // the third: cut before it
    assert_eq!(error.raw_os_error(), Some(libc::EIO));
    assert!(fs.wait_for_cut(std::time::Duration::from_secs(1)));
    drop(file);
    let (image, summary) = fs.unmount().unwrap().expect("cut");
    assert_eq!(summary.at_mutation, before + 3);
    assert_eq!(image.file("f"), None);
}
