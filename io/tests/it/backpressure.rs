//! Limits: an exhausted buffer pool stops receiving (and resumes when
//! buffers come back) without allocating; pause/resume keeps order.

use std::io::Write;
use std::time::Duration;

use sluice_io::{BackendChoice, ConnId, Event, RecvBuf, RuntimeConfig};

use crate::both_backends;
use crate::support::{
    config, shared_lock, start_script, start_script_with, Step, JOIN_WAIT, OUTCOME_WAIT,
};

fn payload() -> Vec<u8> {
    (0..2_000_000_u32)
        .map(|i| (i % 239) as u8 ^ (i >> 11) as u8)
        .collect()
}

/// The handler hoards every buffer until the pool runs dry: the core must
/// stop receiving (starved, zero free) rather than allocate; when the
/// hoard is dropped, receiving resumes and every byte arrives in order.
fn exhausted_pool_stops_receiving(backend: BackendChoice) {
    let _lock = shared_lock();
    let config = RuntimeConfig {
        listen_addrs: vec!["127.0.0.1:0".parse().unwrap()],
        recv_buffer_count: 8,
        recv_buffer_size_bytes: 4096,
        ..config(backend, 1)
    };
    let (runtime, outcome) = start_script_with(config, || {
        let mut hoard: Vec<RecvBuf> = Vec::new();
        let mut received: Vec<u8> = Vec::new();
        let mut starved_seen = None;
        move |core: &mut sluice_io::Core, event: Option<Event>| {
            match event {
                Some(Event::Received { data, .. }) => {
                    received.extend_from_slice(&data);
                    if starved_seen.is_none() {
                        hoard.push(data);
                        if hoard.len() == 8 {
                            // All buffers lent out: check after the loop noticed.
                            core.timer(Duration::from_millis(100), 1).unwrap();
                        }
                    }
                }
                Some(Event::TimerFired { tag: 1 }) => {
                    starved_seen = Some(core.stats());
                    hoard.clear();
                }
                Some(Event::RecvEnded { conn, .. }) => {
                    core.close_connection(conn);
                    return Step::Done((
                        std::mem::take(&mut received),
                        starved_seen.take(),
                        core.stats(),
                    ));
                }
                _ => {}
            }
            Step::Continue
        }
    });
    let mut stream = std::net::TcpStream::connect(runtime.listen_addrs()[0]).unwrap();
    let data = payload();
    stream.write_all(&data).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let (received, starved, end) = outcome.recv_timeout(OUTCOME_WAIT).unwrap();
    runtime.shutdown_and_join(JOIN_WAIT).unwrap();
    let starved = starved.expect("pool ran dry");
    assert_eq!(starved.recv_buffers_free, 0);
    assert_eq!(
        starved.connections_starved, 1,
        "receiving stopped: {starved:?}"
    );
    assert_eq!(end.recv_buffers_free, 8);
    assert!(
        received == data,
        "received {} of {} bytes, in order",
        received.len(),
        data.len()
    );
}
both_backends!(exhausted_pool_stops_receiving);

/// Paused connections deliver nothing until resumed, then everything in
/// order, end of stream last.
fn pause_and_resume_keep_order(backend: BackendChoice) {
    let _lock = shared_lock();
    let config = RuntimeConfig {
        listen_addrs: vec!["127.0.0.1:0".parse().unwrap()],
        ..config(backend, 1)
    };
    let mut received: Vec<u8> = Vec::new();
    let mut paused = false;
    let mut delivered_while_paused = 0;
    let mut pauses = 0;
    let mut paused_conn: Option<ConnId> = None;
    let (runtime, outcome) = start_script(config, move |core, event| {
        match event {
            Some(Event::Received { conn, data }) => {
                if paused {
                    delivered_while_paused += 1;
                }
                received.extend_from_slice(&data);
                if pauses < 5 && !paused {
                    pauses += 1;
                    paused = true;
                    core.pause_recv(conn).unwrap();
                    paused_conn = Some(conn);
                    core.timer(Duration::from_millis(30), 1).unwrap();
                }
            }
            Some(Event::TimerFired { tag: 1 }) => {
                paused = false;
                if let Some(conn) = paused_conn.take() {
                    core.resume_recv(conn).unwrap();
                }
            }
            Some(Event::RecvEnded { conn, .. }) => {
                core.close_connection(conn);
                return Step::Done((
                    std::mem::take(&mut received),
                    delivered_while_paused,
                    pauses,
                ));
            }
            _ => {}
        }
        Step::Continue
    });
    let mut stream = std::net::TcpStream::connect(runtime.listen_addrs()[0]).unwrap();
    let data = payload();
    stream.write_all(&data).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let (received, delivered_while_paused, pauses) = outcome.recv_timeout(OUTCOME_WAIT).unwrap();
    runtime.shutdown_and_join(JOIN_WAIT).unwrap();
    assert_eq!(pauses, 5);
    assert_eq!(delivered_while_paused, 0);
    assert!(
        received == data,
        "received {} of {} bytes, in order",
        received.len(),
        data.len()
    );
}
both_backends!(pause_and_resume_keep_order);

/// The in-flight maximum is enforced at submission; a cancelled timer never
/// fires; a fired one does.
fn op_limit_and_timer_cancel(backend: BackendChoice) {
    let _lock = shared_lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("limit");
    let config = RuntimeConfig {
        ops_in_flight_max: 3,
        ..config(backend, 1)
    };
    let mut fired = Vec::new();
    let outcome = crate::support::run_script(config, move |core, event| {
        match event {
            None => {
                let cancelled = core.timer(Duration::from_millis(20), 1).unwrap();
                core.timer(Duration::from_millis(60), 2).unwrap();
                core.open(
                    sluice_io::At::Cwd,
                    &path,
                    sluice_io::OpenOptions::new().write(true).create(true),
                    3,
                )
                .unwrap();
                // Three in flight: the fourth is refused, not queued.
                let refused = core.timer(Duration::from_millis(1), 4);
                assert!(
                    matches!(
                        refused,
                        Err(sluice_io::SubmitError::TooManyOps { maximum: 3 })
                    ),
                    "{refused:?}"
                );
                core.cancel_timer(cancelled);
            }
            Some(Event::Opened { result: Ok(_), .. }) => {}
            Some(Event::TimerFired { tag }) => {
                fired.push(tag);
                if tag == 2 {
                    return Step::Done((std::mem::take(&mut fired), core.stats()));
                }
            }
            Some(other) => panic!("unexpected {other:?}"),
        }
        Step::Continue
    });
    let (fired, stats) = outcome;
    assert_eq!(fired, vec![2], "the cancelled timer stayed silent");
    assert_eq!(stats.ops_in_flight, 0);
}
both_backends!(op_limit_and_timer_cancel);
