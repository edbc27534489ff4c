//! Receives into the handler's own buffer (`Core::recv_into`): a stream of
//! length-prefixed messages, each message's payload received in place once
//! its header is read, checked byte for byte against what a real socket
//! sent in odd cuts, with stalls, and cut off mid-payload; and with every
//! header received exactly too (`Core::recv_some_into`), so the pooled
//! receive never runs ahead and a sender that writes everything at once
//! has every payload land in place.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sluice_io::{AlignedBuf, BackendChoice, ConnId, Core, Event, SubmitError};

use crate::support::{config, shared_lock, start_script_with, Step, JOIN_WAIT, OUTCOME_WAIT};

/// Payloads whose rest is at least this long are received in place.
const IN_PLACE_MIN: usize = 4096;

/// The byte at `offset` of message `message`'s payload.
fn payload(message: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|offset| ((offset * 31 + message * 17 + offset / 253) % 251) as u8)
        .collect()
}

/// What the server saw.
#[derive(Default)]
struct Report {
    messages: Vec<Vec<u8>>,
    /// Receives into the buffer that took bytes, and their bytes.
    in_place: usize,
    in_place_bytes: usize,
    /// Receives into the buffer given back with nothing (preempted).
    preempted: usize,
    /// Exact receives of headers (`recv_some_into`): the bytes of each.
    exact: Vec<usize>,
    /// Bytes that came through the pool.
    pooled_bytes: usize,
    /// A partial payload when the stream ended.
    partial: Option<Vec<u8>>,
    refusals: Vec<String>,
    end: Option<Result<(), String>>,
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Report")
            .field("messages", &self.messages.len())
            .field("in_place", &self.in_place)
            .field("in_place_bytes", &self.in_place_bytes)
            .field("preempted", &self.preempted)
            .field("exact", &self.exact)
            .field("pooled_bytes", &self.pooled_bytes)
            .field("partial", &self.partial.as_ref().map(Vec::len))
            .field("refusals", &self.refusals)
            .field("end", &self.end)
            .finish()
    }
}

/// A payload being received: its buffer (out while lent), length, fill.
struct Payload {
    buf: Option<AlignedBuf>,
    len: usize,
    filled: usize,
}

/// The server: reads 4-byte big-endian lengths from the pooled receive and
/// takes each payload's rest in place when it is long enough. With a
/// header buffer, it receives every header exactly into it and every
/// payload in place, whatever its length, from the first bytes on.
struct Server {
    conn: Option<ConnId>,
    header: Vec<u8>,
    payload: Option<Payload>,
    /// The buffer headers are received into exactly (out while lent).
    header_buf: Option<AlignedBuf>,
    exact: bool,
    report: Report,
}

impl Server {
    fn new(exact: bool) -> Server {
        Server {
            conn: None,
            header: Vec::new(),
            payload: None,
            header_buf: exact.then(|| AlignedBuf::zeroed(64)),
            exact,
            report: Report::default(),
        }
    }

    fn bytes(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.payload.as_mut() {
                None => {
                    let take = (4 - self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.header.len() == 4 {
                        let len = u32::from_be_bytes(self.header[..].try_into().unwrap()) as usize;
                        self.header.clear();
                        self.payload = Some(Payload {
                            buf: Some(AlignedBuf::zeroed(len.max(1))),
                            len,
                            filled: 0,
                        });
                    }
                }
                Some(payload) => {
                    let take = (payload.len - payload.filled).min(data.len());
                    let buf = payload.buf.as_mut().expect("not lent while bytes arrive");
                    buf.as_mut_slice()[payload.filled..payload.filled + take]
                        .copy_from_slice(&data[..take]);
                    payload.filled += take;
                    data = &data[take..];
                }
            }
            self.complete_payload();
        }
        self.complete_payload();
    }

    fn complete_payload(&mut self) {
        if let Some(payload) = self.payload.as_ref() {
            if payload.filled == payload.len && payload.buf.is_some() {
                let payload = self.payload.take().unwrap();
                let buf = payload.buf.unwrap();
                self.report
                    .messages
                    .push(buf.as_slice()[..payload.len].to_vec());
            }
        }
    }

    fn maybe_lend(&mut self, core: &mut Core) {
        let Some(payload) = self.payload.as_mut() else {
            if let Some(buf) = self.header_buf.take() {
                let conn = self.conn.unwrap();
                let want = 4 - self.header.len();
                if let Err((error, buf)) = core.recv_some_into(conn, buf, 0..want, 8) {
                    self.report.refusals.push(error.to_string());
                    self.header_buf = Some(buf);
                }
            }
            return;
        };
        let min = if self.exact { 1 } else { IN_PLACE_MIN };
        if payload.len - payload.filled < min || payload.buf.is_none() {
            return;
        }
        let buf = payload.buf.take().unwrap();
        let conn = self.conn.unwrap();
        if let Err((error, buf)) = core.recv_into(conn, buf, payload.filled..payload.len, 7) {
            self.report.refusals.push(error.to_string());
            payload.buf = Some(buf);
        }
    }

    fn step(&mut self, core: &mut Core, event: Option<Event>) -> Step<Report> {
        match event {
            Some(Event::Accepted { conn, .. }) => {
                self.conn = Some(conn);
                if self.exact {
                    self.maybe_lend(core);
                }
            }
            Some(Event::Received { data, .. }) => {
                assert!(
                    self.payload
                        .as_ref()
                        .is_none_or(|payload| payload.buf.is_some())
                        && self.header_buf.is_some() == self.exact,
                    "bytes delivered while a receive into the buffer is pending"
                );
                self.report.pooled_bytes += data.len();
                self.bytes(&data);
                self.maybe_lend(core);
            }
            Some(Event::ReceivedInto {
                buf, bytes, tag: 8, ..
            }) => {
                assert!(self.header_buf.is_none() && self.payload.is_none());
                assert!(bytes <= 4 - self.header.len(), "past the header");
                let received = buf.as_slice()[..bytes].to_vec();
                self.header_buf = Some(buf);
                self.report.exact.push(bytes);
                if bytes > 0 {
                    self.bytes(&received);
                    self.maybe_lend(core);
                }
            }
            Some(Event::ReceivedInto {
                buf, bytes, tag, ..
            }) => {
                assert_eq!(tag, 7);
                let payload = self.payload.as_mut().expect("a payload was lent");
                assert!(payload.buf.is_none());
                payload.buf = Some(buf);
                payload.filled += bytes;
                if bytes == 0 {
                    self.report.preempted += 1;
                } else {
                    self.report.in_place += 1;
                    self.report.in_place_bytes += bytes;
                }
                // The next pooled receive lends it again if need be (the
                // next receive, when headers are received exactly).
                self.complete_payload();
                if self.exact && bytes > 0 {
                    self.maybe_lend(core);
                }
            }
            Some(Event::RecvEnded { conn, result }) => {
                if let Some(payload) = self.payload.take() {
                    let buf = payload.buf.expect("given back before the end");
                    self.report.partial = Some(buf.as_slice()[..payload.filled].to_vec());
                }
                self.report.end = Some(result.map_err(|error| error.to_string()));
                core.close_connection(conn);
                return Step::Done(std::mem::take(&mut self.report));
            }
            _ => {}
        }
        Step::Continue
    }
}

/// Writes `bytes` to `address` in cuts of the sizes cycled from `cuts`,
/// pausing `stall` after every fifth write, then closes.
fn send(address: SocketAddr, bytes: &[u8], cuts: &[usize], stall: Duration) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_nodelay(true).unwrap();
    let mut at = 0;
    for (n, cut) in cuts.iter().cycle().enumerate() {
        if at >= bytes.len() {
            break;
        }
        let end = (at + cut).min(bytes.len());
        stream.write_all(&bytes[at..end]).expect("write");
        at = end;
        if n % 5 == 4 {
            std::thread::sleep(stall);
        }
    }
}

fn framed(lengths: &[usize]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (message, &len) in lengths.iter().enumerate() {
        bytes.extend_from_slice(&(len as u32).to_be_bytes());
        bytes.extend_from_slice(&payload(message, len));
    }
    bytes
}

fn serve(backend: BackendChoice, bytes: Vec<u8>, cuts: &[usize], stall: Duration) -> Report {
    let cuts = cuts.to_vec();
    serve_with(backend, false, move |address| {
        send(address, &bytes, &cuts, stall)
    })
}

/// A server (`exact`: receiving headers exactly) and a client thread.
fn serve_with(
    backend: BackendChoice,
    exact: bool,
    client: impl FnOnce(SocketAddr) + Send + 'static,
) -> Report {
    let _lock = shared_lock();
    let mut config = config(backend, 1);
    config.listen_addrs = vec!["127.0.0.1:0".parse().unwrap()];
    let (runtime, outcome) = start_script_with(config, move || {
        let mut server = Server::new(exact);
        move |core: &mut Core, event: Option<Event>| server.step(core, event)
    });
    let address = runtime.listen_addrs()[0];
    let client = std::thread::spawn(move || client(address));
    let report = outcome.recv_timeout(OUTCOME_WAIT).expect("the server ends");
    client.join().expect("the client ends");
    runtime.shutdown_and_join(JOIN_WAIT).expect("runtime joins");
    report
}

const LENGTHS: [usize; 9] = [10, 100_000, 5, 300_000, 0, 70_000, 4095, 1, 1 << 20];

/// Every message byte-exact whatever the cuts: payloads' rests received
/// in place, bytes the pooled receive had taken first delivered before
/// them (a receive into the buffer they preempt comes back empty), and
/// nothing counted twice.
#[test]
fn payloads_received_in_place_are_byte_exact_in_odd_cuts_and_stalls() {
    for (cuts, stall) in [
        (
            &[1usize, 7, 1000, 65_536, 3, 20_000][..],
            Duration::from_millis(2),
        ),
        (
            &[9_000, 1, 30_000, 2, 50_000][..],
            Duration::from_millis(20),
        ),
        (&[16_384][..], Duration::ZERO),
    ] {
        let bytes = framed(&LENGTHS);
        let report = serve(BackendChoice::Uring, bytes.clone(), cuts, stall);
        assert_eq!(report.end, Some(Ok(())), "{cuts:?}");
        assert!(report.refusals.is_empty(), "{:?}", report.refusals);
        assert_eq!(report.messages.len(), LENGTHS.len(), "{cuts:?}");
        for (message, (got, &len)) in report.messages.iter().zip(&LENGTHS).enumerate() {
            assert!(
                *got == payload(message, len),
                "message {message} differs ({cuts:?})"
            );
        }
        assert_eq!(report.partial, None);
        assert_eq!(
            report.pooled_bytes + report.in_place_bytes,
            bytes.len(),
            "{cuts:?}"
        );
        if stall.is_zero() {
            // The pooled receive may have taken everything before any
            // receive into a buffer went out: some were tried.
            assert!(report.in_place + report.preempted >= 1, "{report:?}");
        } else {
            // Stalls leave payloads' rests still to come: received in place.
            assert!(report.in_place >= 2, "{cuts:?}: {report:?}");
            assert!(report.in_place_bytes >= 300_000, "{cuts:?}: {report:?}");
        }
    }
}

/// A peer that stops mid-payload and closes: the bytes it sent come back
/// in the buffer (a short receive), then the end of the stream.
#[test]
fn a_stream_ended_mid_payload_gives_back_what_arrived_then_ends() {
    let mut bytes = framed(&[200_000]);
    bytes.truncate(4 + 150_000);
    let report = serve(
        BackendChoice::Uring,
        bytes.clone(),
        &[20_000],
        Duration::from_millis(20),
    );
    assert_eq!(report.end, Some(Ok(())));
    assert!(report.messages.is_empty());
    let partial = report.partial.clone().expect("a partial payload");
    assert_eq!(partial.len(), 150_000);
    assert!(partial[..] == payload(0, 200_000)[..150_000]);
    assert!(report.in_place >= 1, "{report:?}");
}

/// The portable backend refuses, and the buffer comes back unused: the
/// bytes arrive through the pool as before.
#[test]
fn the_portable_backend_refuses_and_the_pool_carries_the_bytes() {
    let bytes = framed(&[100_000, 3]);
    let report = serve(
        BackendChoice::Portable,
        bytes.clone(),
        &[10_000],
        Duration::from_millis(1),
    );
    assert_eq!(report.end, Some(Ok(())));
    assert_eq!(report.messages.len(), 2);
    assert!(report.messages[0] == payload(0, 100_000));
    assert_eq!(report.in_place, 0);
    assert_eq!(report.pooled_bytes, bytes.len());
    assert!(!report.refusals.is_empty());
    assert!(report
        .refusals
        .iter()
        .all(|refusal| *refusal == SubmitError::Unsupported.to_string()));
}

/// Headers received exactly (`recv_some_into`, no `MSG_WAITALL`) and
/// payloads in place: a sender that writes the whole stream at once (as
/// a DICOM sender writes an instance) has every payload byte land in
/// place and nothing go through the pool; an exact receive ends with what
/// has arrived (one byte of a header, then a pause) rather than waiting
/// for all it may take; every message byte-exact; and the end of the
/// stream ends the header receive waiting for the next message.
#[test]
fn headers_received_exactly_keep_the_pool_from_running_ahead() {
    let bytes = framed(&LENGTHS);
    let sent = bytes.clone();
    let report = serve_with(BackendChoice::Uring, true, move |address| {
        let mut stream = TcpStream::connect(address).expect("connect");
        stream.set_nodelay(true).unwrap();
        // The server's first exact receive is out before any byte comes.
        std::thread::sleep(Duration::from_millis(300));
        stream.write_all(&sent[..1]).expect("write");
        std::thread::sleep(Duration::from_millis(200));
        stream.write_all(&sent[1..]).expect("write");
    });
    assert_eq!(report.end, Some(Ok(())), "{report:?}");
    assert!(report.refusals.is_empty(), "{:?}", report.refusals);
    assert_eq!(report.messages.len(), LENGTHS.len(), "{report:?}");
    for (message, (got, &len)) in report.messages.iter().zip(&LENGTHS).enumerate() {
        assert!(*got == payload(message, len), "message {message} differs");
    }
    assert_eq!(report.pooled_bytes, 0, "{report:?}");
    assert_eq!(report.preempted, 0, "{report:?}");
    assert_eq!(report.in_place_bytes, LENGTHS.iter().sum::<usize>());
    // The first header's first byte alone, then its other three.
    assert_eq!(report.exact[..2], [1, 3], "{report:?}");
    assert_eq!(report.exact.iter().sum::<usize>(), 4 * LENGTHS.len());
    // The last exact receive, waiting for a header, ended with the stream.
    assert_eq!(report.exact.last(), Some(&0), "{report:?}");
}
