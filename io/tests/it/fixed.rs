//! Registered buffers (`Core::register_buffer`): an `O_DIRECT` write of a
//! registered buffer (`IORING_OP_WRITE_FIXED` on io_uring) lands the
//! buffer's bytes, also when it completes short and the rest is written
//! again; a buffer written, refilled and written again lands its new bytes
//! (the registration is of its pages, not a copy); and a buffer dropped,
//! with a new one registered in its slot, writes the new buffer's bytes,
//! never the dropped one's. The portable backend registers nothing and
//! writes the same bytes.

use std::rc::Rc;

use sluice_io::{
    AlignedBuf, At, BackendChoice, BackendKind, Event, Fault, FaultPlan, FileHandle, IoBuf, OpKind,
    OpenOptions, RuntimeConfig, SyncKind,
};

use crate::both_backends;
use crate::support::{
    config, expected_kind, shared_lock, start_script_with, Step, JOIN_WAIT, OUTCOME_WAIT,
};

const LEN: usize = 256 * 1024;

fn filled(seed: u8) -> Vec<u8> {
    (0..LEN)
        .map(|at| (at as u8).wrapping_mul(31) ^ seed ^ (at / 4096) as u8)
        .collect()
}

fn aligned(bytes: &[u8]) -> AlignedBuf {
    let mut buf = AlignedBuf::zeroed(bytes.len());
    buf.as_mut_slice().copy_from_slice(bytes);
    buf
}

/// What the script saw of the registrations.
#[derive(Debug, Default)]
struct Seen {
    /// (registered, slot, the core's registered count) after each
    /// `register_buffer`.
    registrations: Vec<(bool, Option<u16>, usize)>,
    /// The core's registered count once the first buffer was dropped.
    after_drop: Option<usize>,
}

fn registered_buffers_write_their_own_bytes(backend: BackendChoice) {
    let _lock = shared_lock();
    let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
    let path = dir.path().join("segment");
    // The first write completes short: its rest is written again from the
    // same registered buffer.
    let plan = FaultPlan::new().fail_nth(OpKind::Write, 1, Fault::Short);
    let runtime_config = RuntimeConfig {
        fault_plan: Some(plan.clone()),
        ..config(backend, 1)
    };
    let open_path = path.clone();
    let (runtime, outcome) = start_script_with(runtime_config, move || {
        let mut step = 0;
        let mut file: Option<FileHandle> = None;
        let mut second: Option<Rc<AlignedBuf>> = None;
        let mut seen = Seen::default();
        move |core: &mut sluice_io::Core, event: Option<Event>| {
            step += 1;
            let register = |core: &mut sluice_io::Core, buf: &mut AlignedBuf, seen: &mut Seen| {
                let registered = core.register_buffer(buf);
                seen.registrations.push((
                    registered,
                    buf.registered_slot(),
                    core.stats().registered_buffers,
                ));
            };
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
                    let mut first = aligned(&filled(1));
                    register(core, &mut first, &mut seen);
                    // Registering again changes nothing.
                    register(core, &mut first, &mut seen);
                    core.write_at(id, 0, vec![IoBuf::from(first)], 2).unwrap();
                }
                (
                    3,
                    Some(Event::Written {
                        tag: 2,
                        result: Ok(bytes),
                        ..
                    }),
                ) if bytes == LEN as u64 => {
                    // The first buffer went with its write: its slot is
                    // cleared at the core's next turn, before it is reused.
                    seen.after_drop = Some(core.stats().registered_buffers);
                    let mut buf = aligned(&filled(2));
                    register(core, &mut buf, &mut seen);
                    let buf = Rc::new(buf);
                    second = Some(Rc::clone(&buf));
                    core.write_at(file.unwrap(), LEN as u64, vec![IoBuf::from(buf)], 3)
                        .unwrap();
                }
                (
                    4,
                    Some(Event::Written {
                        tag: 3,
                        result: Ok(bytes),
                        ..
                    }),
                ) if bytes == LEN as u64 => {
                    // The same registered buffer, refilled, written again.
                    let mut buf = Rc::try_unwrap(second.take().unwrap()).expect("the write let go");
                    buf.as_mut_slice().copy_from_slice(&filled(3));
                    core.write_at_and_sync(
                        file.unwrap(),
                        2 * LEN as u64,
                        vec![IoBuf::from(buf)],
                        SyncKind::Data,
                        4,
                    )
                    .unwrap();
                }
                (
                    5,
                    Some(Event::Written {
                        tag: 4,
                        result: Ok(bytes),
                        ..
                    }),
                ) if bytes == LEN as u64 => {
                    core.close_file(file.unwrap(), 5).unwrap();
                }
                (6, Some(Event::FileClosed { result: Ok(()), .. })) => {
                    return Step::Done(Ok(std::mem::take(&mut seen)));
                }
                (step, event) => return Step::Done(Err(format!("step {step}: {event:?}"))),
            }
            Step::Continue
        }
    });
    let seen = outcome
        .recv_timeout(OUTCOME_WAIT)
        .expect("script finishes in time")
        .unwrap();
    runtime.shutdown_and_join(JOIN_WAIT).unwrap();
    assert_eq!(plan.injected().len(), 1, "the short write happened");
    match expected_kind(backend) {
        BackendKind::Uring => {
            assert_eq!(
                seen.registrations,
                vec![(true, Some(0), 1), (true, Some(0), 1), (true, Some(0), 1)],
                "the second buffer takes the first one's slot once it is cleared"
            );
            assert_eq!(seen.after_drop, Some(0));
        }
        BackendKind::Portable => {
            assert_eq!(seen.registrations, vec![(false, None, 0); 3]);
        }
    }
    let mut expected = filled(1);
    expected.extend(filled(2));
    expected.extend(filled(3));
    let written = std::fs::read(&path).unwrap();
    assert_eq!(written.len(), expected.len());
    assert!(written == expected, "file contents differ");
}
both_backends!(registered_buffers_write_their_own_bytes);
