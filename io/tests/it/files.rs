//! File operations: the durable-write sequence (write, sync, rename,
//! directory sync) and the engine's ingest path (receive buffer slices
//! written straight into a file).

use std::io::Write;
use std::path::PathBuf;

use sluice_io::{
    AlignedBuf, At, BackendChoice, Event, FileHandle, IoBuf, OpKind, OpenOptions, SyncKind,
};

use crate::both_backends;
use crate::support::{
    config, run_script, shared_lock, start_script, Step, JOIN_WAIT, OUTCOME_WAIT,
};

/// Steps of the durable-write script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durable {
    OpenDir,
    OpenTemp,
    WriteFirst,
    WriteSecond,
    SyncFile,
    CloseFile,
    Rename,
    SyncDir,
    OpenAgain,
    CloseDir,
}

fn write_sync_rename_dir_sync(backend: BackendChoice) {
    let _lock = shared_lock();
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_path_buf();
    let first: Vec<Vec<u8>> = vec![b"preamble-".to_vec(), vec![0xab; 70_000], b"-meta".to_vec()];
    let second = vec![0x5a_u8; 200_000];
    let first_length: u64 = first.iter().map(|part| part.len() as u64).sum();
    let mut expected = first.concat();
    expected.extend_from_slice(&second);

    let mut step = Durable::OpenDir;
    let mut dir_file: Option<FileHandle> = None;
    let mut file: Option<FileHandle> = None;
    let first_parts = first.clone();
    let second_part = second.clone();
    let outcome = run_script(config(backend, 1), move |core, event| {
        let failed =
            |what: &str, event: &Option<Event>| Step::Done(Err(format!("{what}: {event:?}")));
        match (step, &event) {
            (Durable::OpenDir, None) => {
                core.open(At::Cwd, &dir_path, OpenOptions::directory(), 1)
                    .unwrap();
            }
            (Durable::OpenDir, Some(Event::Opened { result: Ok(id), .. })) => {
                dir_file = Some(*id);
                step = Durable::OpenTemp;
                core.open(
                    At::Dir(*id),
                    "object.tmp".as_ref(),
                    OpenOptions::create_new_write().mode(0o640),
                    2,
                )
                .unwrap();
            }
            (Durable::OpenTemp, Some(Event::Opened { result: Ok(id), .. })) => {
                file = Some(*id);
                step = Durable::WriteFirst;
                let bufs: Vec<IoBuf> = first_parts.iter().cloned().map(IoBuf::from).collect();
                core.write_at_and_sync(*id, 0, bufs, SyncKind::Data, 3)
                    .unwrap();
            }
            (
                Durable::WriteFirst,
                Some(Event::Written {
                    tag: 3,
                    result: Ok(bytes),
                    ..
                }),
            ) => {
                if *bytes != first_length {
                    return failed("first write length", &event);
                }
                step = Durable::WriteSecond;
                core.write_at(
                    file.unwrap(),
                    first_length,
                    vec![second_part.clone().into()],
                    4,
                )
                .unwrap();
            }
            (
                Durable::WriteSecond,
                Some(Event::Written {
                    tag: 4,
                    result: Ok(_),
                    ..
                }),
            ) => {
                step = Durable::SyncFile;
                core.sync(file.unwrap(), SyncKind::Data, 5).unwrap();
            }
            (Durable::SyncFile, Some(Event::Synced { result: Ok(()), .. })) => {
                step = Durable::CloseFile;
                core.close_file(file.unwrap(), 6).unwrap();
            }
            (Durable::CloseFile, Some(Event::FileClosed { result: Ok(()), .. })) => {
                step = Durable::Rename;
                let dir_at = At::Dir(dir_file.unwrap());
                core.rename(
                    dir_at,
                    "object.tmp".as_ref(),
                    dir_at,
                    "object.dcm".as_ref(),
                    7,
                )
                .unwrap();
            }
            (Durable::Rename, Some(Event::Renamed { result: Ok(()), .. })) => {
                step = Durable::SyncDir;
                core.sync(dir_file.unwrap(), SyncKind::All, 8).unwrap();
            }
            (Durable::SyncDir, Some(Event::Synced { result: Ok(()), .. })) => {
                step = Durable::OpenAgain;
                // The name is taken now: create_new must fail with EEXIST.
                core.open(
                    At::Dir(dir_file.unwrap()),
                    "object.dcm".as_ref(),
                    OpenOptions::create_new_write(),
                    9,
                )
                .unwrap();
            }
            (
                Durable::OpenAgain,
                Some(Event::Opened {
                    result: Err(error), ..
                }),
            ) => {
                if !error.is_already_exists() || error.op != OpKind::Open {
                    return failed("expected EEXIST", &event);
                }
                step = Durable::CloseDir;
                core.close_file(dir_file.unwrap(), 10).unwrap();
            }
            (Durable::CloseDir, Some(Event::FileClosed { result: Ok(()), .. })) => {
                return Step::Done(Ok(core.stats()));
            }
            _ => return failed(&format!("unexpected at {step:?}"), &event),
        }
        Step::Continue
    });
    let stats = outcome.unwrap();
    assert_eq!(stats.files, 0, "every file closed");
    assert_eq!(stats.ops_in_flight, 0);
    let written = std::fs::read(dir.path().join("object.dcm")).unwrap();
    assert_eq!(written.len(), expected.len());
    assert!(written == expected, "file contents differ");
    assert!(!dir.path().join("object.tmp").exists());
}
both_backends!(write_sync_rename_dir_sync);

fn mkdir_unlink_and_remove_dir(backend: BackendChoice) {
    let _lock = shared_lock();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("victim"), b"x").unwrap();
    let sub = dir.path().join("sub");
    let victim = dir.path().join("victim");
    let mut step = 0;
    let (sub_path, victim_path) = (sub.clone(), victim.clone());
    let outcome: Result<(), String> = run_script(config(backend, 1), move |core, event| {
        step += 1;
        match (step, event) {
            (1, None) => core.mkdir(At::Cwd, &sub_path, 0o750, 1).unwrap(),
            (
                2,
                Some(Event::DirCreated {
                    tag: 1,
                    result: Ok(()),
                }),
            ) => core.mkdir(At::Cwd, &sub_path, 0o750, 2).unwrap(),
            (
                3,
                Some(Event::DirCreated {
                    tag: 2,
                    result: Err(error),
                }),
            ) if error.is_already_exists() => core.unlink(At::Cwd, &victim_path, 3).unwrap(),
            (
                4,
                Some(Event::Unlinked {
                    tag: 3,
                    result: Ok(()),
                }),
            ) => core.remove_dir(At::Cwd, &sub_path, 4).unwrap(),
            (
                5,
                Some(Event::Unlinked {
                    tag: 4,
                    result: Ok(()),
                }),
            ) => return Step::Done(Ok(())),
            (step, event) => return Step::Done(Err(format!("step {step}: {event:?}"))),
        }
        Step::Continue
    });
    outcome.unwrap();
    assert!(!sub.exists());
    assert!(!victim.exists());
}
both_backends!(mkdir_unlink_and_remove_dir);

/// The engine's ingest path: receive into pooled buffers, write slices of
/// them straight into a file (no copy), sync, rename, sync the directory;
/// every buffer returns to the pool once its writes complete.
fn received_bytes_written_from_pool_buffers(backend: BackendChoice) {
    let _lock = shared_lock();
    let dir = tempfile::tempdir().unwrap();
    let dir_path: PathBuf = dir.path().to_path_buf();
    let payload: Vec<u8> = (0..3_000_000_u32)
        .map(|i| (i % 253) as u8 ^ (i >> 13) as u8)
        .collect();

    struct State {
        dir: Option<FileHandle>,
        file: Option<FileHandle>,
        offset: u64,
        writes_in_flight: usize,
        ended: bool,
        syncing: bool,
        max_writes_in_flight: usize,
        waiting: Option<sluice_io::ConnId>,
    }
    let mut state = State {
        dir: None,
        file: None,
        offset: 0,
        writes_in_flight: 0,
        ended: false,
        syncing: false,
        max_writes_in_flight: 0,
        waiting: None,
    };
    let config = sluice_io::RuntimeConfig {
        listen_addrs: vec!["127.0.0.1:0".parse().unwrap()],
        ..config(backend, 1)
    };
    let (runtime, outcome) = start_script(config, move |core, event| {
        match event {
            None => core
                .open(At::Cwd, &dir_path, OpenOptions::directory(), 0)
                .unwrap(),
            Some(Event::Opened {
                tag: 0,
                result: Ok(dir),
            }) => {
                state.dir = Some(dir);
                core.open(
                    At::Dir(dir),
                    "incoming.tmp".as_ref(),
                    OpenOptions::create_new_write(),
                    1,
                )
                .unwrap();
            }
            Some(Event::Opened {
                tag: 1,
                result: Ok(file),
            }) => {
                state.file = Some(file);
                if let Some(conn) = state.waiting.take() {
                    core.resume_recv(conn).unwrap();
                }
            }
            Some(Event::Accepted { conn, .. }) => {
                // Hold the data back until the file is open.
                if state.file.is_none() {
                    core.pause_recv(conn).unwrap();
                    state.waiting = Some(conn);
                }
            }
            Some(Event::Received { data, .. }) => {
                let Some(file) = state.file else {
                    return Step::Done(Err("data before the file was open".to_string()));
                };
                // Two slices of the receive buffer, as a decoder would lend
                // the data part of a PDV: both written without a copy.
                let middle = data.len() / 2;
                let bufs = vec![
                    IoBuf::from(data.slice(..middle).unwrap()),
                    IoBuf::from(data.slice(middle..).unwrap()),
                ];
                core.write_at(file, state.offset, bufs, 2).unwrap();
                state.offset += data.len() as u64;
                state.writes_in_flight += 1;
                state.max_writes_in_flight = state.max_writes_in_flight.max(state.writes_in_flight);
            }
            Some(Event::RecvEnded {
                conn,
                result: Ok(()),
            }) => {
                state.ended = true;
                core.close_connection(conn);
            }
            Some(Event::Written {
                result: Ok(_),
                tag: 2,
                ..
            }) => state.writes_in_flight -= 1,
            Some(Event::Synced {
                tag: 3,
                result: Ok(()),
                ..
            }) => {
                let dir = At::Dir(state.dir.unwrap());
                core.close_file(state.file.unwrap(), 4).unwrap();
                core.rename(
                    dir,
                    "incoming.tmp".as_ref(),
                    dir,
                    "incoming.dcm".as_ref(),
                    5,
                )
                .unwrap();
            }
            Some(Event::FileClosed {
                tag: 4,
                result: Ok(()),
            }) => {}
            Some(Event::Renamed {
                tag: 5,
                result: Ok(()),
            }) => core.sync(state.dir.unwrap(), SyncKind::All, 6).unwrap(),
            Some(Event::Synced {
                tag: 6,
                result: Ok(()),
                ..
            }) => {
                return Step::Done(Ok((state.offset, core.stats(), state.max_writes_in_flight)));
            }
            Some(Event::ConnClosed { .. }) => {}
            Some(other) => return Step::Done(Err(format!("unexpected {other:?}"))),
        }
        if state.ended && state.writes_in_flight == 0 && !state.syncing {
            // Every write has completed: the sync covers them all.
            state.syncing = true;
            core.sync(state.file.unwrap(), SyncKind::Data, 3).unwrap();
        }
        Step::Continue
    });
    let mut stream = std::net::TcpStream::connect(runtime.listen_addrs()[0]).unwrap();
    for chunk in payload.chunks(100_000) {
        stream.write_all(chunk).unwrap();
    }
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let (length, stats, _max_in_flight) = outcome
        .recv_timeout(OUTCOME_WAIT)
        .expect("ingest finishes")
        .unwrap();
    runtime.shutdown_and_join(JOIN_WAIT).unwrap();
    assert_eq!(length, payload.len() as u64);
    assert_eq!(
        stats.recv_buffers_free,
        u32::from(stats.recv_buffers_total),
        "every buffer back in the pool"
    );
    let written = std::fs::read(dir.path().join("incoming.dcm")).unwrap();
    assert!(written == payload, "file differs from what was sent");
}
both_backends!(received_bytes_written_from_pool_buffers);

/// Steps of the chunk-read script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkRead {
    Open,
    Scatter,
    PastTheEnd,
    Closed,
}

/// A stored file read into a send chunk: a scatter read leaves the gaps
/// between ranges (a sender's PDU headers) untouched, a read across the end
/// of the file stops there, and every chunk goes back to its pool.
fn chunks_read_from_a_file(backend: BackendChoice) {
    use sluice_io::ChunkPool;
    let _lock = shared_lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stored.dcm");
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    let ranges = vec![12..65_548, 65_560..131_096, 131_108..200_000];
    let expected_scatter: Vec<u8> = content[1_000..1_000 + 65_536 + 65_536 + 68_892].to_vec();
    let script_ranges = ranges.clone();
    let (runtime, outcome) = crate::support::start_script_with(config(backend, 1), move || {
        let pool = ChunkPool::new(200_000, 2);
        let mut step = ChunkRead::Open;
        let mut file: Option<FileHandle> = None;
        move |core: &mut sluice_io::Core, event: Option<Event>| -> Step<Result<(), String>> {
            match (step, event) {
                (ChunkRead::Open, None) => {
                    core.open(At::Cwd, &path, OpenOptions::new(), 1).unwrap();
                }
                (ChunkRead::Open, Some(Event::Opened { result: Ok(id), .. })) => {
                    file = Some(id);
                    let mut chunk = pool.take().unwrap();
                    chunk.storage_mut()[..12].copy_from_slice(b"HEADER-BYTES");
                    step = ChunkRead::Scatter;
                    core.read_at(id, 1_000, chunk, &script_ranges, 2).unwrap();
                }
                (
                    ChunkRead::Scatter,
                    Some(Event::Read {
                        tag: 2,
                        chunk,
                        result,
                        ..
                    }),
                ) => {
                    if result != Ok(200_000 - 36) {
                        return Step::Done(Err(format!("scatter read: {result:?}")));
                    }
                    let mut chunk = chunk;
                    let storage = chunk.storage_mut();
                    if &storage[..12] != b"HEADER-BYTES" {
                        return Step::Done(Err("the header gap was written".into()));
                    }
                    let read: Vec<u8> = script_ranges
                        .iter()
                        .flat_map(|range| storage[range.clone()].to_vec())
                        .collect();
                    if read != expected_scatter {
                        return Step::Done(Err("scatter read bytes differ".into()));
                    }
                    drop(chunk);
                    if pool.lent() != 0 {
                        return Step::Done(Err("the chunk did not go back".into()));
                    }
                    step = ChunkRead::PastTheEnd;
                    let chunk = pool.take().unwrap();
                    core.read_at(
                        file.unwrap(),
                        250_000,
                        chunk,
                        std::slice::from_ref(&(0..100_000)),
                        3,
                    )
                    .unwrap();
                }
                (
                    ChunkRead::PastTheEnd,
                    Some(Event::Read {
                        tag: 3,
                        chunk,
                        result,
                        ..
                    }),
                ) => {
                    if result != Ok(50_000) {
                        return Step::Done(Err(format!("read past the end: {result:?}")));
                    }
                    let mut chunk = chunk;
                    if chunk.storage_mut()[..50_000] != content[250_000..] {
                        return Step::Done(Err("tail bytes differ".into()));
                    }
                    let bad = pool.take().unwrap();
                    let reversed = std::ops::Range { start: 10, end: 5 };
                    if core
                        .read_at(file.unwrap(), 0, bad, &[reversed, 20..30], 4)
                        .is_ok()
                    {
                        return Step::Done(Err("reversed range accepted".into()));
                    }
                    step = ChunkRead::Closed;
                    core.close_file(file.unwrap(), 5).unwrap();
                }
                (ChunkRead::Closed, Some(Event::FileClosed { result: Ok(()), .. })) => {
                    return Step::Done(if pool.lent() == 0 {
                        Ok(())
                    } else {
                        Err(format!("{} chunks lent at the end", pool.lent()))
                    });
                }
                (_, other) => return Step::Done(Err(format!("unexpected {other:?}"))),
            }
            Step::Continue
        }
    });
    let result = outcome.recv_timeout(OUTCOME_WAIT).expect("script finishes");
    runtime.shutdown_and_join(JOIN_WAIT).unwrap();
    result.unwrap();
}
both_backends!(chunks_read_from_a_file);

/// `O_DIRECT` writes from aligned buffers (the segments layout's records):
/// two aligned buffers in one write and one more at the next aligned
/// offset land byte-exact, and a write of a length that is not aligned is
/// refused (`EINVAL`), which shows the flag took effect. In the checkout
/// (ext4 here, where a data directory would be), not a tmpfs temp dir.
fn direct_writes_from_aligned_buffers(backend: BackendChoice) {
    let _lock = shared_lock();
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let path = dir.path().join("segment");
    let fill = |len: usize, seed: u8| {
        let mut buf = AlignedBuf::zeroed(len);
        for (at, byte) in buf.as_mut_slice().iter_mut().enumerate() {
            *byte = (at as u8).wrapping_mul(31) ^ seed;
        }
        buf
    };
    let parts = [fill(8192, 1), fill(4096, 2), fill(12_288, 3)];
    let mut expected = Vec::new();
    for part in &parts {
        expected.extend_from_slice(part.as_slice());
    }
    let [first, second, third] = parts;
    let mut pending = Some((first, second, third));
    let mut file: Option<FileHandle> = None;
    let mut step = 0;
    let open_path = path.clone();
    let outcome: Result<(), String> = run_script(config(backend, 1), move |core, event| {
        step += 1;
        match (step, event) {
            (1, None) => core
                .open(
                    At::Cwd,
                    &open_path,
                    OpenOptions::create_new_write().direct(true),
                    1,
                )
                .unwrap(),
            (2, Some(Event::Opened { result: Ok(id), .. })) => {
                file = Some(id);
                let (first, second, third) = pending.take().unwrap();
                core.write_at(id, 0, vec![first.into(), second.into()], 2)
                    .unwrap();
                core.write_at(id, 12_288, vec![third.into()], 3).unwrap();
            }
            // Both writes are 12 KiB; they complete in either order.
            (
                3 | 4,
                Some(Event::Written {
                    result: Ok(bytes),
                    tag,
                    ..
                }),
            ) => {
                if bytes != 12_288 {
                    return Step::Done(Err(format!("write {tag}: {bytes} bytes")));
                }
                if step == 4 {
                    core.write_at(file.unwrap(), 24_576, vec![IoBuf::from(vec![9u8; 100])], 4)
                        .unwrap();
                }
            }
            (
                5,
                Some(Event::Written {
                    tag: 4,
                    result: Err(error),
                    ..
                }),
            ) if error.errno == libc::EINVAL => {
                core.sync(file.unwrap(), SyncKind::Data, 5).unwrap();
            }
            (6, Some(Event::Synced { result: Ok(()), .. })) => {
                core.close_file(file.unwrap(), 6).unwrap();
            }
            (7, Some(Event::FileClosed { result: Ok(()), .. })) => return Step::Done(Ok(())),
            (step, event) => return Step::Done(Err(format!("step {step}: {event:?}"))),
        }
        Step::Continue
    });
    outcome.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), expected);
}
both_backends!(direct_writes_from_aligned_buffers);
