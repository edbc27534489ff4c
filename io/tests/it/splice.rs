//! Sends from files (`Core::send_file`): a send of framed pieces (the
//! caller's bytes, then runs of a file) arrives byte for byte between the
//! connection's other sends, whatever the pipe's chains look like; the
//! file closed while the send is queued stays open until it ends; a peer
//! that stops reading and goes away ends the send with an error, not a
//! hang; and the portable backend refuses it (the caller then copies).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;

use sluice_io::{At, BackendChoice, ConnId, Event, FileHandle, FileSend, OpenOptions, SubmitError};

use crate::support::{config, run_script, shared_lock, Step};

/// The file's byte at `offset`.
fn byte_at(offset: usize) -> u8 {
    ((offset * 7 + offset / 4093) % 253) as u8
}

/// A file of `length` bytes in `dir`.
fn file_of(dir: &std::path::Path, length: usize) -> PathBuf {
    let path = dir.join("data");
    let bytes: Vec<u8> = (0..length).map(byte_at).collect();
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    path
}

/// A send of `pdus` PDUs: a prefix, then per PDU a 12-byte header and a
/// run of the file; and the bytes it must put on the wire, from `offset`.
fn framed(prefix: &[u8], pdus: &[u32], offset: usize) -> (FileSend, Vec<u8>) {
    let mut send = FileSend::new();
    let mut wire = prefix.to_vec();
    send.push_bytes(prefix);
    let mut at = offset;
    for (index, &length) in pdus.iter().enumerate() {
        let header = [0x04, index as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xEE];
        send.push_bytes(&header);
        wire.extend_from_slice(&header);
        send.push_file(length);
        wire.extend((at..at + length as usize).map(byte_at));
        at += length as usize;
    }
    (send, wire)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connecting,
    Opening,
    Sending,
    Closing,
}

/// Connects to `port`, opens `path`, sends `before`, `send` from `offset`
/// and `after`, closes the file at once and the connection once the three
/// sends ended. The outcome: each send's result, and whether the file's
/// close came only after the send from it.
fn send_between(
    backend: BackendChoice,
    port: u16,
    path: PathBuf,
    (before, send, after): (Vec<u8>, FileSend, Vec<u8>),
    offset: u64,
) -> Result<(Vec<Result<(), String>>, bool), String> {
    let mut stage = Stage::Connecting;
    let mut conn: Option<ConnId> = None;
    let mut results: Vec<Result<(), String>> = Vec::new();
    let mut file_closed_after_send = None;
    let mut send = Some(send);
    run_script(config(backend, 1), move |core, event| {
        match (stage, event) {
            (Stage::Connecting, None) => {
                conn = Some(core.connect(([127, 0, 0, 1], port).into(), 1).unwrap());
            }
            (Stage::Connecting, Some(Event::Connected { result, .. })) => {
                if let Err(error) = result {
                    return Step::Done(Err(format!("connect: {error}")));
                }
                stage = Stage::Opening;
                core.open(At::Cwd, &path, OpenOptions::new(), 2).unwrap();
            }
            (Stage::Opening, Some(Event::Opened { result, .. })) => {
                let file: FileHandle = match result {
                    Ok(file) => file,
                    Err(error) => return Step::Done(Err(format!("open: {error}"))),
                };
                let conn = conn.unwrap();
                core.send(conn, before.clone(), 10).unwrap();
                match core.send_file(conn, file, offset, send.take().unwrap(), 11) {
                    Ok(()) => {}
                    Err(SubmitError::Unsupported) => {
                        core.close_file(file, 20).unwrap();
                        core.close_connection(conn);
                        return Step::Done(Err("unsupported".into()));
                    }
                    Err(error) => return Step::Done(Err(format!("send_file: {error}"))),
                }
                core.send(conn, after.clone(), 12).unwrap();
                // Closed at once: the send from it keeps it open.
                core.close_file(file, 20).unwrap();
                stage = Stage::Sending;
            }
            (Stage::Sending, Some(Event::Sent { tag, result, .. })) => {
                if tag == 11 && file_closed_after_send.is_none() {
                    file_closed_after_send = Some(true);
                }
                results.push(result.map_err(|error| error.to_string()));
                if results.len() == 3 {
                    stage = Stage::Closing;
                    core.close_connection(conn.unwrap());
                }
            }
            (_, Some(Event::FileClosed { .. })) => {
                file_closed_after_send.get_or_insert(false);
                if stage == Stage::Closing {
                    // Handled below with ConnClosed.
                }
            }
            (Stage::Closing, Some(Event::ConnClosed { .. })) => {
                return Step::Done(Ok((
                    results.clone(),
                    file_closed_after_send.unwrap_or(false),
                )));
            }
            _ => {}
        }
        Step::Continue
    })
}

#[test]
fn a_send_from_a_file_arrives_in_order_between_other_sends() {
    let _lock = shared_lock();
    let dir = tempfile::tempdir().unwrap();
    let path = file_of(dir.path(), 3 << 20);
    for (prefix, pdus, offset) in [
        (vec![0xC0u8; 300], vec![16_372u32, 16_372, 7_000], 132usize),
        (vec![], vec![1], 0),
        (vec![0xC1; 2_000], vec![262_138; 6], 4_095),
        (vec![0xC2; 12], vec![4_084; 300], 77),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let reader = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut bytes = Vec::new();
            socket.read_to_end(&mut bytes).unwrap();
            bytes
        });
        let (send, wire) = framed(&prefix, &pdus, offset);
        let before = b"BEFORE".to_vec();
        let after = b"AFTER".to_vec();
        let outcome = send_between(
            BackendChoice::Uring,
            port,
            path.clone(),
            (before.clone(), send, after.clone()),
            offset as u64,
        )
        .unwrap();
        assert_eq!(outcome.0, vec![Ok(()), Ok(()), Ok(())]);
        assert!(outcome.1, "the file closed before the send from it ended");
        let mut expected = before;
        expected.extend_from_slice(&wire);
        expected.extend_from_slice(&after);
        let arrived = reader.join().unwrap();
        assert_eq!(arrived.len(), expected.len(), "pdus {}", pdus.len());
        assert!(
            arrived == expected,
            "the bytes differ ({} PDUs)",
            pdus.len()
        );
    }
}

#[test]
fn a_peer_that_goes_away_mid_send_fails_it() {
    let _lock = shared_lock();
    let dir = tempfile::tempdir().unwrap();
    let path = file_of(dir.path(), 64 << 20);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reader = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut some = vec![0u8; 100_000];
        socket.read_exact(&mut some).unwrap();
        // Gone with 60 MiB unread: the kernel resets the connection.
        drop(socket);
    });
    let (send, _) = framed(b"HEAD", &[1 << 20; 60], 0);
    let outcome = send_between(
        BackendChoice::Uring,
        port,
        path,
        (b"x".to_vec(), send, b"y".to_vec()),
        0,
    )
    .unwrap();
    reader.join().unwrap();
    assert_eq!(outcome.0.len(), 3);
    assert!(outcome.0[1].is_err(), "{:?}", outcome.0);
    assert!(outcome.0[2].is_err(), "{:?}", outcome.0);
}

#[test]
fn the_portable_backend_refuses_a_send_from_a_file() {
    let _lock = shared_lock();
    let dir = tempfile::tempdir().unwrap();
    let path = file_of(dir.path(), 4096);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reader = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut bytes = Vec::new();
        let _ = socket.read_to_end(&mut bytes);
    });
    let (send, _) = framed(b"HEAD", &[100], 0);
    let outcome = send_between(
        BackendChoice::Portable,
        port,
        path,
        (b"x".to_vec(), send, b"y".to_vec()),
        0,
    );
    assert_eq!(outcome, Err("unsupported".to_owned()));
    reader.join().unwrap();
}
