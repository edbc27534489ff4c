//! The fault seam: short writes are completed (never reported as success
//! with fewer bytes), injected EIO and ENOSPC reach the caller, short sends
//! are completed, and a seeded plan replays exactly.

use std::io::Read;

use sluice_io::{
    At, BackendChoice, Event, Fault, FaultPlan, FileHandle, IoBuf, IoError, OpKind, OpenOptions,
    RuntimeConfig, SyncKind,
};

use crate::both_backends;
use crate::support::{
    config, run_script, shared_lock, start_script, Step, JOIN_WAIT, OUTCOME_WAIT,
};

fn with_plan(backend: BackendChoice, plan: &FaultPlan) -> RuntimeConfig {
    RuntimeConfig {
        fault_plan: Some(plan.clone()),
        ..config(backend, 1)
    }
}

/// Opens `path` for writing, then runs `writes` one after the other, each
/// a (sync?, buffers) pair written at the running offset; returns each
/// write's result.
fn run_writes(
    config: RuntimeConfig,
    path: std::path::PathBuf,
    writes: Vec<(Option<SyncKind>, Vec<Vec<u8>>)>,
) -> Vec<Result<u64, IoError>> {
    let mut file: Option<FileHandle> = None;
    let mut results = Vec::new();
    let mut offset = 0_u64;
    let mut next = 0_usize;
    let mut issue = move |core: &mut sluice_io::Core, file: FileHandle, offset: &mut u64| -> bool {
        let Some((sync, parts)) = writes.get(next).cloned() else {
            return false;
        };
        next += 1;
        let length: u64 = parts.iter().map(|part| part.len() as u64).sum();
        let bufs: Vec<IoBuf> = parts.into_iter().map(IoBuf::from).collect();
        match sync {
            Some(kind) => core
                .write_at_and_sync(file, *offset, bufs, kind, 0)
                .unwrap(),
            None => core.write_at(file, *offset, bufs, 0).unwrap(),
        }
        *offset += length;
        true
    };
    run_script(config, move |core, event| {
        match event {
            None => core
                .open(
                    At::Cwd,
                    &path,
                    OpenOptions::new().write(true).create(true),
                    0,
                )
                .unwrap(),
            Some(Event::Opened { result: Ok(id), .. }) => {
                file = Some(id);
                if !issue(core, id, &mut offset) {
                    return Step::Done(std::mem::take(&mut results));
                }
            }
            Some(Event::Written { result, .. }) => {
                results.push(result);
                if !issue(core, file.unwrap(), &mut offset) {
                    return Step::Done(std::mem::take(&mut results));
                }
            }
            Some(other) => panic!("unexpected {other:?}"),
        }
        Step::Continue
    })
}

fn short_write_is_completed(backend: BackendChoice) {
    let _lock = shared_lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short");
    let plan = FaultPlan::new()
        .fail_nth(OpKind::Write, 1, Fault::Short)
        .fail_nth(OpKind::Write, 2, Fault::Short)
        .fail_nth(OpKind::Write, 4, Fault::Short);
    let parts = vec![vec![1_u8; 30_000], vec![2_u8; 50_000], vec![3_u8; 20_000]];
    let linked = vec![vec![4_u8; 64 * 1024]];
    let results = run_writes(
        with_plan(backend, &plan),
        path.clone(),
        vec![
            (None, parts.clone()),
            (Some(SyncKind::Data), linked.clone()),
        ],
    );
    // Both writes report their full length, never a truncated success.
    assert_eq!(results, vec![Ok(100_000), Ok(64 * 1024)]);
    let injected = plan.injected();
    assert_eq!(injected.len(), 3, "{injected:?}");
    assert!(injected.iter().all(|fault| fault.fault == Fault::Short));
    let mut expected = parts.concat();
    expected.extend(linked.concat());
    assert!(
        std::fs::read(&path).unwrap() == expected,
        "file contents differ"
    );
}
both_backends!(short_write_is_completed);

fn injected_eio_on_fsync_reaches_caller(backend: BackendChoice) {
    let _lock = shared_lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eio");
    let plan = FaultPlan::new().fail_nth(OpKind::Sync, 1, Fault::Errno(libc::EIO));
    // The first sync (linked to the write) fails; the second succeeds.
    let results = run_writes(
        with_plan(backend, &plan),
        path,
        vec![
            (Some(SyncKind::Data), vec![vec![7; 4096]]),
            (Some(SyncKind::All), vec![vec![8; 4096]]),
        ],
    );
    assert_eq!(
        results,
        vec![
            Err(IoError {
                op: OpKind::Sync,
                errno: libc::EIO
            }),
            Ok(4096)
        ]
    );

    // A plain sync gets it too.
    let plan = FaultPlan::new().fail_nth(OpKind::Sync, 1, Fault::Errno(libc::EIO));
    let file_path = dir.path().join("plain");
    let outcome = run_script(with_plan(backend, &plan), move |core, event| {
        match event {
            None => core
                .open(
                    At::Cwd,
                    &file_path,
                    OpenOptions::new().write(true).create(true),
                    0,
                )
                .unwrap(),
            Some(Event::Opened {
                result: Ok(file), ..
            }) => core.sync(file, SyncKind::Data, 1).unwrap(),
            Some(Event::Synced { result, .. }) => return Step::Done(result),
            Some(other) => panic!("unexpected {other:?}"),
        }
        Step::Continue
    });
    let error = outcome.unwrap_err();
    assert_eq!((error.op, error.errno), (OpKind::Sync, libc::EIO));
}
both_backends!(injected_eio_on_fsync_reaches_caller);

fn injected_enospc_on_write_reaches_caller(backend: BackendChoice) {
    let _lock = shared_lock();
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan::new().fail_nth(OpKind::Write, 2, Fault::Errno(libc::ENOSPC));
    let results = run_writes(
        with_plan(backend, &plan),
        dir.path().join("enospc"),
        vec![
            (None, vec![vec![1; 1000]]),
            (Some(SyncKind::Data), vec![vec![2; 1000]]),
            (None, vec![vec![3; 1000]]),
        ],
    );
    assert_eq!(results[0], Ok(1000));
    let error = results[1].unwrap_err();
    assert_eq!(error.op, OpKind::Write);
    assert!(error.is_no_space());
    assert_eq!(results[2], Ok(1000));
}
both_backends!(injected_enospc_on_write_reaches_caller);

fn short_send_is_completed(backend: BackendChoice) {
    let _lock = shared_lock();
    let plan = FaultPlan::new()
        .fail_nth(OpKind::Send, 1, Fault::Short)
        .fail_nth(OpKind::Send, 2, Fault::Short);
    let payload: Vec<u8> = (0..200_000_u32).map(|i| (i % 241) as u8).collect();
    let to_send = payload.clone();
    let config = RuntimeConfig {
        listen_addrs: vec!["127.0.0.1:0".parse().unwrap()],
        ..with_plan(backend, &plan)
    };
    let (runtime, outcome) = start_script(config, move |core, event| {
        match event {
            None => {}
            Some(Event::Accepted { conn, .. }) => core.send(conn, to_send.clone(), 9).unwrap(),
            Some(Event::Sent { conn, result, .. }) => {
                core.close_connection(conn);
                return Step::Done(result);
            }
            Some(other) => panic!("unexpected {other:?}"),
        }
        Step::Continue
    });
    let mut stream = std::net::TcpStream::connect(runtime.listen_addrs()[0]).unwrap();
    let mut received = Vec::new();
    stream.read_to_end(&mut received).unwrap();
    outcome.recv_timeout(OUTCOME_WAIT).unwrap().unwrap();
    runtime.shutdown_and_join(JOIN_WAIT).unwrap();
    assert_eq!(plan.injected().len(), 2);
    assert!(
        received == payload,
        "received {} bytes, expected {}",
        received.len(),
        payload.len()
    );
}
both_backends!(short_send_is_completed);

fn seeded_plan_replays_exactly(backend: BackendChoice) {
    let _lock = shared_lock();
    let dir = tempfile::tempdir().unwrap();
    let writes: Vec<(Option<SyncKind>, Vec<Vec<u8>>)> = (0..40_u8)
        .map(|i| {
            (
                if i % 2 == 0 {
                    Some(SyncKind::Data)
                } else {
                    None
                },
                vec![vec![i; 1000 + usize::from(i) * 37]],
            )
        })
        .collect();
    let run = |seed: u64, name: &str| {
        let plan = FaultPlan::new().seeded(
            seed,
            &[OpKind::Write, OpKind::Sync],
            4,
            &[
                Fault::Errno(libc::EIO),
                Fault::Errno(libc::ENOSPC),
                Fault::Short,
            ],
        );
        let results = run_writes(
            with_plan(backend, &plan),
            dir.path().join(name),
            writes.clone(),
        );
        (results, plan.injected())
    };
    let (first_results, first_faults) = run(7, "a");
    let (again_results, again_faults) = run(7, "b");
    let (other_results, other_faults) = run(8, "c");
    assert!(!first_faults.is_empty());
    assert!(first_faults.iter().any(|fault| fault.fault == Fault::Short));
    assert_eq!(first_results, again_results, "same seed, same outcomes");
    assert_eq!(first_faults, again_faults, "same seed, same faults");
    assert_ne!(first_faults, other_faults, "another seed, other faults");
    assert_eq!(first_results.len(), 40);
    assert_eq!(other_results.len(), 40);
    // Every success is a complete write, and every failure names the
    // injected errno.
    for (result, (_, parts)) in first_results.iter().zip(&writes) {
        match result {
            Ok(bytes) => assert_eq!(*bytes, parts[0].len() as u64),
            Err(error) => assert!([libc::EIO, libc::ENOSPC].contains(&error.errno), "{error}"),
        }
    }
}
both_backends!(seeded_plan_replays_exactly);
