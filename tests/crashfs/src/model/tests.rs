//! The model's rules, call by call (the same rules through a real mount:
//! `tests/it/fs.rs`).

use super::*;

fn name(text: &str) -> &OsStr {
    OsStr::new(text)
}

const NO_TEAR: PowerLoss = PowerLoss {
    seed: 1,
    tear: false,
};

fn model() -> Model {
    Model::new(Image::empty(), 1 << 30)
}

#[test]
fn data_reads_back_across_pages_and_truncates_to_zeros() {
    let mut data = Data::default();
    data.write(4090, &[7u8; 20]);
    assert_eq!(data.size(), 4110);
    assert_eq!(data.read(4088, 4), vec![0, 0, 7, 7]);
    data.set_size(4092);
    data.set_size(5000);
    assert_eq!(data.read(4090, 4), vec![7, 7, 0, 0]);
    assert_eq!(data.read(5000, 10), Vec::<u8>::new());
}

#[test]
fn a_synced_file_whose_directory_was_never_synced_is_gone() {
    let mut fs = model();
    let (attr, handle) = fs.create(ROOT_INO, name("a"), 0o644, 0, 0, 0).unwrap();
    fs.write(attr.ino, 0, b"hello", 0).unwrap();
    fs.sync_file(attr.ino).unwrap();
    fs.release(handle);
    let (image, _) = fs.power_cut(NO_TEAR).clone();
    assert_eq!(image.file("a"), None);
}

#[test]
fn an_entry_synced_before_its_data_is_an_empty_file() {
    let mut fs = model();
    let (attr, _) = fs.create(ROOT_INO, name("a"), 0o644, 0, 0, 0).unwrap();
    fs.sync_dir(ROOT_INO).unwrap();
    fs.write(attr.ino, 0, b"hello", 0).unwrap();
    let (image, summary) = fs.power_cut(NO_TEAR).clone();
    assert_eq!(image.file("a"), Some(Vec::new()));
    assert_eq!(summary.unsynced_pages, 1);
}

#[test]
fn a_rename_is_durable_whole_when_either_directory_is_synced() {
    for sync_target in [true, false] {
        let mut fs = model();
        let tmp = fs.mkdir(ROOT_INO, name("tmp"), 0o755, 0, 0).unwrap().ino;
        let objects = fs
            .mkdir(ROOT_INO, name("objects"), 0o755, 0, 0)
            .unwrap()
            .ino;
        fs.sync_dir(ROOT_INO).unwrap();
        let (attr, _) = fs.create(tmp, name("x"), 0o644, 0, 0, 0).unwrap();
        fs.write(attr.ino, 0, b"data", 0).unwrap();
        fs.sync_file(attr.ino).unwrap();
        fs.rename(tmp, name("x"), objects, name("y"), false)
            .unwrap();
        fs.sync_dir(if sync_target { objects } else { tmp })
            .unwrap();
        let (image, _) = fs.power_cut(NO_TEAR).clone();
        assert_eq!(image.file("objects/y"), Some(b"data".to_vec()));
        assert_eq!(image.names("tmp"), Some(vec![]));
    }
}

#[test]
fn an_older_change_never_replaces_a_newer_durable_entry() {
    let mut fs = model();
    let a = fs.mkdir(ROOT_INO, name("a"), 0o755, 0, 0).unwrap().ino;
    let b = fs.mkdir(ROOT_INO, name("b"), 0o755, 0, 0).unwrap().ino;
    fs.sync_dir(ROOT_INO).unwrap();
    // b/n first names file 1, then a rename puts file 2 there.
    let (one, _) = fs.create(b, name("n"), 0o644, 0, 0, 0).unwrap();
    fs.write(one.ino, 0, b"one", 0).unwrap();
    fs.sync_file(one.ino).unwrap();
    let (two, _) = fs.create(a, name("m"), 0o644, 0, 0, 0).unwrap();
    fs.write(two.ino, 0, b"two", 0).unwrap();
    fs.sync_file(two.ino).unwrap();
    fs.rename(a, name("m"), b, name("n"), false).unwrap();
    // Syncing a applies the rename (both halves); b's older create stays
    // pending and must not win when b is synced afterwards.
    fs.sync_dir(a).unwrap();
    fs.sync_dir(b).unwrap();
    let (image, _) = fs.power_cut(NO_TEAR).clone();
    assert_eq!(image.file("b/n"), Some(b"two".to_vec()));
    assert_eq!(image.names("a"), Some(vec![]));
}

#[test]
fn dsync_writes_are_durable_without_a_sync() {
    let mut fs = model();
    let (attr, _) = fs.create(ROOT_INO, name("f"), 0o644, 0, 0, 0).unwrap();
    fs.sync_dir(ROOT_INO).unwrap();
    fs.write(attr.ino, 0, b"plain", 0).unwrap();
    fs.write(attr.ino, 8192, b"dsync", libc::O_DSYNC).unwrap();
    let (image, _) = fs.power_cut(NO_TEAR).clone();
    let mut expected = vec![0u8; 8192];
    expected.extend_from_slice(b"dsync");
    assert_eq!(image.file("f"), Some(expected));
}

#[test]
fn torn_cuts_keep_whole_pages_and_replay_from_their_seed() {
    let build = || {
        let mut fs = model();
        let (attr, _) = fs.create(ROOT_INO, name("f"), 0o644, 0, 0, 0).unwrap();
        fs.write(attr.ino, 0, &[1u8; 16 * PAGE_BYTES], 0).unwrap();
        fs.sync_file(attr.ino).unwrap();
        fs.sync_dir(ROOT_INO).unwrap();
        fs.write(attr.ino, 0, &[2u8; 16 * PAGE_BYTES], 0).unwrap();
        fs
    };
    let mut kept_counts = BTreeSet::new();
    for seed in 0..8 {
        let loss = PowerLoss { seed, tear: true };
        let (image, summary) = build().surviving_image(loss);
        let (again, _) = build().surviving_image(loss);
        let contents = image.file("f").unwrap();
        assert_eq!(
            Some(contents.clone()),
            again.file("f"),
            "seed {seed} replays"
        );
        assert_eq!(contents.len(), 16 * PAGE_BYTES);
        for page in contents.chunks(PAGE_BYTES) {
            assert!(
                page.iter().all(|&b| b == page[0]),
                "a page is never torn inside"
            );
        }
        let new_pages = contents.chunks(PAGE_BYTES).filter(|p| p[0] == 2).count();
        assert_eq!(new_pages as u64, summary.unsynced_pages_kept);
        kept_counts.insert(new_pages);
    }
    assert!(
        kept_counts.len() > 1,
        "different seeds keep different pages"
    );
}

#[test]
fn an_armed_cut_fails_the_operation_it_names_and_everything_after() {
    let mut fs = model();
    fs.arm_cut(3, NO_TEAR);
    let (attr, _) = fs.create(ROOT_INO, name("f"), 0o644, 0, 0, 0).unwrap(); // 1
    fs.sync_dir(ROOT_INO).unwrap(); // 2
    assert_eq!(fs.write(attr.ino, 0, b"x", 0), Err(FsError::PowerOff)); // 3
    assert_eq!(fs.attr(attr.ino), Err(FsError::PowerOff));
    let (image, summary) = fs.cut_result().unwrap();
    assert_eq!(summary.at_mutation, 3);
    assert_eq!(image.file("f"), Some(Vec::new()));
}

#[test]
fn sync_all_makes_every_entry_and_every_file_durable() {
    let mut fs = model();
    let dir = fs.mkdir(ROOT_INO, name("d"), 0o755, 0, 0).unwrap().ino;
    let (attr, _) = fs.create(dir, name("f"), 0o644, 0, 0, 0).unwrap();
    fs.write(attr.ino, 0, b"abc", 0).unwrap();
    fs.sync_all().unwrap();
    fs.write(attr.ino, 0, b"x", 0).unwrap();
    let (image, summary) = fs.power_cut(NO_TEAR).clone();
    assert_eq!(image.file("d/f"), Some(b"abc".to_vec()));
    assert_eq!(summary.pending_changes, 0);
}

#[test]
fn an_image_mounts_again_with_its_links_and_sizes() {
    let mut fs = model();
    let dir = fs.mkdir(ROOT_INO, name("d"), 0o755, 0, 0).unwrap().ino;
    let (attr, _) = fs.create(dir, name("f"), 0o644, 0, 0, 0).unwrap();
    fs.write(attr.ino, 0, b"abc", 0).unwrap();
    fs.sync_file(attr.ino).unwrap();
    fs.sync_dir(dir).unwrap();
    fs.sync_dir(ROOT_INO).unwrap();
    let (image, _) = fs.power_cut(NO_TEAR).clone();
    let again = Model::new(image, 1 << 30);
    let d = again.lookup(ROOT_INO, name("d")).unwrap();
    assert_eq!((d.kind, d.nlink), (Kind::Dir, 2));
    assert_eq!(again.attr(ROOT_INO).unwrap().nlink, 3);
    let f = again.lookup(d.ino, name("f")).unwrap();
    assert_eq!((f.size, f.nlink), (3, 1));
    assert_eq!(again.read(f.ino, 0, 10).unwrap(), b"abc");
}
