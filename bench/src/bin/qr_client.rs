//! The Query/Retrieve benchmark client: one association to any Q/R SCP
//! (Sluice, Orthanc, DCMTK dcmqrscp), driven by sluice-net's association
//! endpoint over a blocking socket, so what it measures is the SCP, not a
//! slow SCU.
//!
//! ```text
//! qr_client find  <port> <called AE> <study|patient> <queries file> <count> [--relational]
//! qr_client move  <port> <called AE> <study|patient> <keys> <destination AE>
//! qr_client get   <port> <called AE> <study|patient> <keys> [--window N]
//! qr_client sink  <port>
//! qr_client read-send <port> <files list> [--via serial|threads|sendfile|splice]
//! ```
//!
//! `find` sends `count` C-FIND requests one after the other, the identifiers
//! taken round-robin from the queries file (one per line: `KEY=VALUE;...`,
//! keywords of the standard dictionary, the level as QueryRetrieveLevel),
//! and prints the latency percentiles (request written to final response
//! read) and the matches per query as one JSON line. `move` and `get` time
//! one retrieve (request to final response) and print the counts, and for
//! `get` the bytes received. `get --window N` (N > 1) proposes an
//! Asynchronous Operations Window (PS3.7 D.3.3.3) in which it performs up to
//! N C-STORE sub-operations outstanding (it answers each as its data set
//! ends, whatever came after it), and prints the window the SCP answered
//! (`window`: the sub-operations the SCP may have outstanding, 1 when it
//! answered none, i.e. one at a time). `sink` and `read-send` are the sender's speed
//! of light: `read-send` reads each listed file (a line `path`: the whole
//! file; `path<TAB>offset<TAB>length`: that range of it, as a segment's
//! records are read) and writes it to a loopback socket that `sink` drains,
//! printing MB/s: the file read + socket write ceiling of this machine. It
//! moves the bytes `--via` one of four ways: `serial` (blocking reads and
//! writes one after the other on one thread: not a ceiling, since it never
//! overlaps a read with a write; the default, as before), `threads` (two
//! reader threads keep reads of 1 MiB blocks in flight ahead of the
//! writer), `sendfile` and `splice` (file -> pipe -> socket), the last two
//! without a user-space copy. The ceiling is the best of them.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sluice_net::assoc::{AssociationProposal, Indication, ProposedPresentationContext};
use sluice_net::dimse::dataset::{Element, SmallDataset, SmallDatasetEncoding, Value};
use sluice_net::dimse::{
    CFindRq, CGetRq, CMoveRq, CStoreRsp, Command, Priority, Status, StatusDetail,
};
use sluice_net::endpoint::{DataSet, Endpoint, EndpointConfig, Incoming};
use sluice_net::pdu::{AsynchronousOperationsWindow, SopClassExtendedNegotiation};
use sluice_net::query::{model, InformationModel, Operation};
use sluice_net::uid;

const READ_BUFFER_BYTES: usize = 1 << 20;
const PDU_LENGTH_MAX: u32 = 1 << 20;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut window = 1u16;
    if let Some(at) = args.iter().position(|arg| arg == "--window") {
        match args.get(at + 1).and_then(|value| value.parse::<u16>().ok()) {
            Some(value) if value >= 1 => window = value,
            _ => {
                eprintln!("qr_client: --window takes a count of 1 or more");
                return ExitCode::FAILURE;
            }
        }
        args.drain(at..at + 2);
    }
    let result = match args.first().map(String::as_str) {
        Some("find") if args.len() >= 6 => find(&args[1..]),
        Some("move") if args.len() == 6 => retrieve(&args[1..], Operation::Move, 1),
        Some("get") if args.len() == 5 => retrieve(&args[1..], Operation::Get, window),
        Some("sink") if args.len() == 2 => sink(&args[1]),
        Some("read-send") if args.len() == 3 => read_send(&args[1], &args[2], Via::Serial),
        Some("read-send") if args.len() == 5 && args[3] == "--via" => {
            Via::parse(&args[4]).and_then(|via| read_send(&args[1], &args[2], via))
        }
        _ => Err("usage: see the module documentation of bench/src/bin/qr_client.rs".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("qr_client: {message}");
            ExitCode::FAILURE
        }
    }
}

fn model_of(name: &str) -> Result<InformationModel, String> {
    match name {
        "study" => Ok(InformationModel::StudyRoot),
        "patient" => Ok(InformationModel::PatientRoot),
        other => Err(format!("model {other:?} is not study or patient")),
    }
}

/// An identifier from `KEY=VALUE;KEY=VALUE` (values may be empty).
fn identifier(spec: &str) -> Result<Vec<u8>, String> {
    let mut dataset = SmallDataset::new();
    for pair in spec.split(';').filter(|pair| !pair.is_empty()) {
        let (keyword, value) = pair.split_once('=').unwrap_or((pair, ""));
        let tag = keyword_tag(keyword).ok_or_else(|| format!("unknown keyword {keyword:?}"))?;
        dataset.put(Element {
            tag,
            vr: model::vr_of(tag).unwrap_or(sluice_net::dimse::dataset::Vr::UN),
            value: Value::Bytes(value.as_bytes().to_vec()),
        });
    }
    dataset
        .encode(SmallDatasetEncoding::ExplicitVrLittleEndian)
        .map_err(|error| error.to_string())
}

fn keyword_tag(keyword: &str) -> Option<sluice_net::dimse::Tag> {
    model::key_definitions()
        .iter()
        .find(|key| key.keyword == keyword)
        .map(|key| key.tag)
        .or(match keyword {
            "QueryRetrieveLevel" => Some(model::tags::QUERY_RETRIEVE_LEVEL),
            _ => None,
        })
}

/// One association as requestor over a blocking socket.
struct Association {
    stream: TcpStream,
    endpoint: Endpoint,
    buffer: Vec<u8>,
    filled: usize,
    cursor: usize,
}

impl Association {
    /// An association proposing `contexts`, `extended`, and (`window` > 1)
    /// an Asynchronous Operations Window: one operation invoked, `window`
    /// performed.
    fn open(
        port: u16,
        called: &str,
        contexts: Vec<ProposedPresentationContext>,
        (extended, window): (Vec<SopClassExtendedNegotiation>, u16),
    ) -> Result<Association, String> {
        let proposal = AssociationProposal {
            calling_ae_title: "QRBENCH".into(),
            called_ae_title: called.into(),
            presentation_contexts: contexts,
            pdu_length_max_receive: PDU_LENGTH_MAX,
            implementation_class_uid: "1.2.826.0.1.3680043.10.1234.99".into(),
            implementation_version_name: Some("QRBENCH".into()),
            asynchronous_operations_window: (window > 1).then_some(AsynchronousOperationsWindow {
                operations_invoked_max: 1,
                operations_performed_max: window,
            }),
            user_identity: None,
        };
        let mut rq = proposal.to_associate_rq().map_err(|e| e.to_string())?;
        rq.user_information.sop_class_extended_negotiations = extended;
        let stream =
            TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut config = EndpointConfig::default();
        config.idle = Duration::from_secs(3600);
        let mut endpoint = Endpoint::new(sluice_net::assoc::Role::Requestor, config);
        let now = Instant::now();
        endpoint
            .request_association(Box::new(rq), now)
            .map_err(|e| e.to_string())?;
        endpoint
            .transport_connected(now)
            .map_err(|e| e.to_string())?;
        let mut association = Association {
            stream,
            endpoint,
            buffer: vec![0; READ_BUFFER_BYTES],
            filled: 0,
            cursor: 0,
        };
        association.flush()?;
        match association.next()? {
            Incoming::Indication(Indication::AssociateAccepted(_)) => Ok(association),
            Incoming::Indication(other) => Err(format!("not accepted: {other:?}")),
            other => Err(format!("unexpected before the AC: {other:?}")),
        }
    }

    fn flush(&mut self) -> Result<(), String> {
        while let Some(bytes) = self.endpoint.poll_transmit() {
            self.stream
                .write_all(&bytes)
                .map_err(|e| format!("write: {e}"))?;
        }
        Ok(())
    }

    /// The next event; data-set ranges index `self.buffer`.
    fn next(&mut self) -> Result<Incoming, String> {
        loop {
            if self.cursor < self.filled {
                let filled = self.filled;
                if let Some(incoming) =
                    self.endpoint
                        .receive(&self.buffer[..filled], &mut self.cursor, Instant::now())
                {
                    self.flush()?;
                    return Ok(incoming);
                }
                self.flush()?;
            }
            if self.endpoint.is_closed() {
                return Err("the association closed".into());
            }
            self.cursor = 0;
            self.filled = self
                .stream
                .read(&mut self.buffer)
                .map_err(|e| format!("read: {e}"))?;
            if self.filled == 0 {
                self.endpoint.transport_closed(Instant::now());
                return Err("the peer closed the connection".into());
            }
        }
    }

    fn context_id(&self, abstract_syntax: &str) -> Result<u8, String> {
        self.endpoint
            .negotiated()
            .and_then(|negotiated| negotiated.presentation_context_for(abstract_syntax))
            .map(|context| context.id)
            .ok_or_else(|| format!("{abstract_syntax} was not accepted"))
    }

    fn release(mut self) {
        let _ = self.endpoint.release(Instant::now());
        let _ = self.flush();
        let _ = self.next();
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn find(args: &[String]) -> Result<(), String> {
    let port: u16 = args[0].parse().map_err(|_| "bad port")?;
    let called = &args[1];
    let model = model_of(&args[2])?;
    let queries: Vec<String> = std::fs::read_to_string(&args[3])
        .map_err(|e| format!("{}: {e}", args[3]))?
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let count: usize = args[4].parse().map_err(|_| "bad count")?;
    let relational = args.iter().any(|arg| arg == "--relational");
    if queries.is_empty() {
        return Err("no queries".into());
    }
    let sop_class = model.sop_class(Operation::Find);
    let extended = if relational {
        vec![SopClassExtendedNegotiation {
            sop_class_uid: sop_class.into(),
            service_class_application_information: vec![1],
        }]
    } else {
        Vec::new()
    };
    let mut association = Association::open(
        port,
        called,
        vec![ProposedPresentationContext {
            abstract_syntax: sop_class.into(),
            transfer_syntaxes: vec![uid::ts::EXPLICIT_VR_LITTLE_ENDIAN.into()],
            roles: None,
        }],
        (extended, 1),
    )?;
    let context_id = association.context_id(sop_class)?;
    let identifiers: Vec<Vec<u8>> = queries
        .iter()
        .map(|query| identifier(query))
        .collect::<Result<_, _>>()?;
    let mut latencies = Vec::with_capacity(count);
    let mut matches_total = 0u64;
    let mut failures = 0u64;
    let mut last_failure = String::new();
    for round in 0..count {
        let identifier = &identifiers[round % identifiers.len()];
        let message_id = association.endpoint.next_message_id();
        let started = Instant::now();
        let rq = Command::CFindRq(CFindRq {
            message_id,
            priority: Priority::Medium,
            affected_sop_class_uid: sop_class.into(),
        });
        association
            .endpoint
            .send_message(context_id, &rq, Some(identifier))
            .map_err(|e| e.to_string())?;
        association.flush()?;
        loop {
            match association.next()? {
                Incoming::Command {
                    command: Command::CFindRsp(rsp),
                    ..
                } => {
                    if rsp.status.is_pending() {
                        matches_total += 1;
                        continue;
                    }
                    if rsp.status != Status::SUCCESS {
                        failures += 1;
                        last_failure = format!("{:04X}", rsp.status.0);
                    }
                    break;
                }
                other => return Err(format!("unexpected during C-FIND: {other:?}")),
            }
        }
        latencies.push(started.elapsed());
    }
    association.release();
    latencies.sort();
    println!(
        "{{\"queries\": {count}, \"p50_ms\": {:.3}, \"p90_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}, \"matches_per_query\": {:.1}, \"failures\": {failures}, \"last_failure\": \"{last_failure}\"}}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        matches_total as f64 / count.max(1) as f64,
    );
    Ok(())
}

fn retrieve(args: &[String], operation: Operation, window: u16) -> Result<(), String> {
    let port: u16 = args[0].parse().map_err(|_| "bad port")?;
    let called = &args[1];
    let model = model_of(&args[2])?;
    let identifier = identifier(&args[3])?;
    let sop_class = model.sop_class(operation);
    let mut contexts = vec![ProposedPresentationContext {
        abstract_syntax: sop_class.into(),
        transfer_syntaxes: vec![uid::ts::EXPLICIT_VR_LITTLE_ENDIAN.into()],
        roles: None,
    }];
    if operation == Operation::Get {
        for class in [uid::CT_IMAGE_STORAGE, uid::MR_IMAGE_STORAGE] {
            contexts.push(ProposedPresentationContext {
                abstract_syntax: class.into(),
                transfer_syntaxes: vec![
                    uid::ts::EXPLICIT_VR_LITTLE_ENDIAN.into(),
                    uid::ts::IMPLICIT_VR_LITTLE_ENDIAN.into(),
                ],
                roles: Some((false, true)),
            });
        }
    }
    let mut association = Association::open(port, called, contexts, (Vec::new(), window))?;
    let context_id = association.context_id(sop_class)?;
    // The sub-operations the SCP may invoke outstanding (the AC's
    // operations performed by us; 0 is unlimited).
    let window_answered = association.endpoint.negotiated().map_or(1, |negotiated| {
        negotiated
            .asynchronous_operations_window
            .operations_performed_max
    });
    let message_id = association.endpoint.next_message_id();
    let rq = match operation {
        Operation::Move => Command::CMoveRq(CMoveRq {
            message_id,
            priority: Priority::Medium,
            affected_sop_class_uid: sop_class.into(),
            move_destination: args[4].clone(),
        }),
        _ => Command::CGetRq(CGetRq {
            message_id,
            priority: Priority::Medium,
            affected_sop_class_uid: sop_class.into(),
        }),
    };
    let started = Instant::now();
    association
        .endpoint
        .send_message(context_id, &rq, Some(&identifier))
        .map_err(|e| e.to_string())?;
    association.flush()?;
    let mut bytes = 0u64;
    let mut stored = 0u64;
    let mut store: Option<(u8, u16, String, String)> = None;
    let (final_status, counts) = loop {
        match association.next()? {
            Incoming::Command {
                command: Command::CMoveRsp(rsp) | Command::CGetRsp(rsp),
                ..
            } => {
                if rsp.status.is_pending() {
                    continue;
                }
                break (
                    rsp.status,
                    (
                        rsp.sub_operations.completed.unwrap_or(0),
                        rsp.sub_operations.failed.unwrap_or(0),
                        rsp.sub_operations.warning.unwrap_or(0),
                    ),
                );
            }
            Incoming::Command {
                context_id,
                command: Command::CStoreRq(rq),
                data_set: DataSet::Streamed,
            } => {
                store = Some((
                    context_id,
                    rq.message_id,
                    rq.affected_sop_class_uid,
                    rq.affected_sop_instance_uid,
                ));
            }
            Incoming::Data { range, last, .. } => {
                bytes += range.len() as u64;
                if last {
                    let (context_id, message_id, class, instance) =
                        store.take().ok_or("data without a C-STORE-RQ")?;
                    stored += 1;
                    let rsp = Command::CStoreRsp(CStoreRsp {
                        message_id_being_responded_to: message_id,
                        affected_sop_class_uid: Some(class),
                        affected_sop_instance_uid: Some(instance),
                        status: Status::SUCCESS,
                        detail: StatusDetail::default(),
                    });
                    association
                        .endpoint
                        .send_message(context_id, &rsp, None)
                        .map_err(|e| e.to_string())?;
                    association.flush()?;
                }
            }
            other => return Err(format!("unexpected during the retrieve: {other:?}")),
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    association.release();
    println!(
        "{{\"status\": \"{:04X}\", \"completed\": {}, \"failed\": {}, \"warning\": {}, \"seconds\": {seconds:.4}, \"received_instances\": {stored}, \"received_bytes\": {bytes}, \"window\": {window_answered}}}",
        final_status.0, counts.0, counts.1, counts.2
    );
    Ok(())
}

fn sink(port: &str) -> Result<(), String> {
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>().map_err(|_| "bad port")?))
        .map_err(|e| e.to_string())?;
    println!("listening {port}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; READ_BUFFER_BYTES];
            while matches!(stream.read(&mut buffer), Ok(n) if n > 0) {}
        });
    }
    Ok(())
}

/// One stored range to send: a whole file (`length` `None`) or part of one.
type Entry = (String, u64, Option<u64>);

/// How `read-send` moves the bytes (each a candidate for the ceiling; the
/// best of them is the ceiling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// One thread: a blocking read into a buffer, then its write, one after
    /// the other (two copies, no overlap).
    Serial,
    /// Reader threads keep reads in flight ahead of the writer (two copies,
    /// reads overlapping writes: what Sluice's sender does on its ring).
    Threads,
    /// `sendfile(2)`: the page cache into the socket, no user-space copy.
    Sendfile,
    /// `splice(2)` file -> pipe -> socket, no user-space copy.
    Splice,
}

impl Via {
    fn parse(name: &str) -> Result<Via, String> {
        match name {
            "serial" => Ok(Via::Serial),
            "threads" => Ok(Via::Threads),
            "sendfile" => Ok(Via::Sendfile),
            "splice" => Ok(Via::Splice),
            other => Err(format!(
                "--via {other:?} is not serial, threads, sendfile or splice"
            )),
        }
    }
}

/// The bytes one read or write moves at a time.
const READ_SEND_BLOCK: usize = 1 << 20;
/// Reader threads of `--via threads`, and the blocks each keeps ahead.
const READ_SEND_READERS: usize = 2;
const READ_SEND_AHEAD: usize = 4;

fn read_list(list: &str) -> Result<Vec<Entry>, String> {
    std::fs::read_to_string(list)
        .map_err(|e| format!("{list}: {e}"))?
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| -> Result<Entry, String> {
            let mut fields = line.split('\t');
            let path = fields.next().unwrap_or_default().to_owned();
            let mut number = |name: &str| {
                fields
                    .next()
                    .map(|field| {
                        field
                            .parse::<u64>()
                            .map_err(|_| format!("{list}: bad {name} in {line:?}"))
                    })
                    .transpose()
            };
            Ok((path, number("offset")?.unwrap_or(0), number("length")?))
        })
        .collect()
}

/// The entries cut into blocks of at most [`READ_SEND_BLOCK`] bytes, in
/// order (`--via threads` hands them to its readers round-robin).
fn blocks(entries: &[Entry]) -> Result<Vec<(usize, u64, usize)>, String> {
    let mut blocks = Vec::new();
    for (index, (path, offset, length)) in entries.iter().enumerate() {
        let length = match length {
            Some(length) => *length,
            None => std::fs::metadata(path)
                .map_err(|e| format!("{path}: {e}"))?
                .len(),
        };
        let mut at = 0;
        while at < length {
            let size = (length - at).min(READ_SEND_BLOCK as u64);
            blocks.push((index, offset + at, size as usize));
            at += size;
        }
    }
    Ok(blocks)
}

/// Reads every listed file (or range of one) and writes it to the sink, on
/// one connection, `via` one of the ways above: the sender's ceiling (no
/// framing, no index, no per-instance round trip).
fn read_send(port: &str, list: &str, via: Via) -> Result<(), String> {
    let entries = read_list(list)?;
    let mut stream =
        TcpStream::connect(("127.0.0.1", port.parse::<u16>().map_err(|_| "bad port")?))
            .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let bytes = match via {
        Via::Serial => send_serial(&entries, &mut stream)?,
        Via::Threads => send_threads(&entries, &mut stream)?,
        Via::Sendfile | Via::Splice => send_in_kernel(&entries, &stream, via)?,
    };
    let files = entries.len();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"via\": \"{via:?}\", \"files\": {}, \"bytes\": {bytes}, \"seconds\": {seconds:.4}, \"mb_s\": {:.1}, \"instances_s\": {:.1}}}",
        files,
        bytes as f64 / seconds / 1e6,
        files as f64 / seconds
    );
    Ok(())
}

fn send_serial(entries: &[Entry], stream: &mut TcpStream) -> Result<u64, String> {
    let mut buffer = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    for (path, offset, length) in entries {
        let mut file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
        file.seek(SeekFrom::Start(*offset))
            .map_err(|e| format!("{path}: {e}"))?;
        let mut left = length.unwrap_or(u64::MAX);
        while left > 0 {
            let want = buffer
                .len()
                .min(usize::try_from(left).unwrap_or(usize::MAX));
            let read = file.read(&mut buffer[..want]).map_err(|e| e.to_string())?;
            if read == 0 {
                break;
            }
            stream
                .write_all(&buffer[..read])
                .map_err(|e| e.to_string())?;
            bytes += read as u64;
            left -= read as u64;
        }
    }
    Ok(bytes)
}

/// Reader threads read the blocks round-robin (block `i` by reader `i %
/// READ_SEND_READERS`), each up to `READ_SEND_AHEAD` blocks ahead; this
/// thread writes them in order.
fn send_threads(entries: &[Entry], stream: &mut TcpStream) -> Result<u64, String> {
    let blocks = blocks(entries)?;
    let mut bytes = 0u64;
    // Buffers the writer is done with, for the readers to fill again.
    let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let free_rx = std::sync::Mutex::new(free_rx);
    std::thread::scope(|scope| -> Result<(), String> {
        let mut queues = Vec::new();
        for reader in 0..READ_SEND_READERS {
            let (tx, rx) =
                std::sync::mpsc::sync_channel::<Result<Vec<u8>, String>>(READ_SEND_AHEAD);
            queues.push(rx);
            let blocks = &blocks;
            let free_rx = &free_rx;
            scope.spawn(move || {
                let mut open: Option<(usize, std::fs::File)> = None;
                for (index, offset, size) in blocks.iter().skip(reader).step_by(READ_SEND_READERS) {
                    let recycled = free_rx.lock().ok().and_then(|rx| rx.try_recv().ok());
                    let mut buffer = recycled.unwrap_or_else(|| vec![0u8; READ_SEND_BLOCK]);
                    buffer.resize(*size, 0);
                    let result = (|| {
                        if open.as_ref().is_none_or(|(at, _)| at != index) {
                            let path = &entries[*index].0;
                            let file =
                                std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
                            open = Some((*index, file));
                        }
                        let Some((_, file)) = open.as_ref() else {
                            return Err("no file".to_owned());
                        };
                        std::os::unix::fs::FileExt::read_exact_at(file, &mut buffer, *offset)
                            .map_err(|e| e.to_string())?;
                        Ok(buffer)
                    })();
                    let failed = result.is_err();
                    if tx.send(result).is_err() || failed {
                        return;
                    }
                }
            });
        }
        for block in 0..blocks.len() {
            let buffer = queues[block % READ_SEND_READERS]
                .recv()
                .map_err(|_| "a reader stopped".to_owned())??;
            stream.write_all(&buffer).map_err(|e| e.to_string())?;
            bytes += buffer.len() as u64;
            let _ = free_tx.send(buffer);
        }
        Ok(())
    })?;
    Ok(bytes)
}

/// `sendfile` or `splice` (through a pipe of [`READ_SEND_BLOCK`] bytes)
/// from each file into the socket: no user-space copy.
fn send_in_kernel(entries: &[Entry], stream: &TcpStream, via: Via) -> Result<u64, String> {
    use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};
    let pipe = match via {
        Via::Splice => {
            let (read_end, write_end) =
                pipe_with(PipeFlags::CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
            // Up to /proc/sys/fs/pipe-max-size (1 MiB by default); less is
            // slower, not wrong.
            let _ = fcntl_setpipe_size(&write_end, READ_SEND_BLOCK);
            Some((read_end, write_end))
        }
        _ => None,
    };
    let mut bytes = 0u64;
    for (path, offset, length) in entries {
        let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
        let length = match length {
            Some(length) => *length,
            None => file.metadata().map_err(|e| format!("{path}: {e}"))?.len(),
        };
        let mut at = *offset;
        let end = offset + length;
        while at < end {
            let want = usize::try_from(end - at)
                .unwrap_or(usize::MAX)
                .min(READ_SEND_BLOCK);
            let moved = match &pipe {
                None => rustix::fs::sendfile(stream, &file, Some(&mut at), want)
                    .map_err(|e| format!("sendfile {path}: {e}"))?,
                Some((read_end, write_end)) => {
                    let into_pipe = splice(
                        &file,
                        Some(&mut at),
                        write_end,
                        None,
                        want,
                        SpliceFlags::MORE,
                    )
                    .map_err(|e| format!("splice {path}: {e}"))?;
                    let mut left = into_pipe;
                    while left > 0 {
                        let out = splice(read_end, None, stream, None, left, SpliceFlags::MORE)
                            .map_err(|e| format!("splice to the socket: {e}"))?;
                        if out == 0 {
                            return Err("the sink closed".into());
                        }
                        left -= out;
                    }
                    into_pipe
                }
            };
            if moved == 0 {
                break;
            }
            bytes += moved as u64;
        }
    }
    Ok(bytes)
}
