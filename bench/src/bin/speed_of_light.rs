//! The speed-of-light receiver: what any DICOM receiver on this machine
//! could at best do with Sluice's durability, and nothing else.
//!
//! `serve`: accepts TCP connections on loopback; each connection sends
//! frames of `[u64 little-endian length][bytes]`. Every frame becomes a file
//! written into a temporary name, `fdatasync`ed, renamed into the
//! connection's directory, and that directory `fsync`ed; only then is one
//! acknowledgement byte sent back. That is Sluice's durability contract
//! without DICOM: no PDU framing, no head scan, no checksum, no index.
//! One thread per connection, std I/O: the simplest code that lets the
//! kernel overlap everything it can.
//!
//! `serve-segments`: the same frames and acknowledgement, with the segment
//! store's durability instead (docs/design/segments.md): each frame is
//! received straight into its place in the connection's aligned record
//! buffer (reused frame after frame: no user-space copy, the receive
//! Sluice's ingest would have with zero-copy receive), hashed once and
//! encoded as a segment record (Sluice's own record format and writer,
//! `sluice_engine::store::segment`), written with
//! `O_DIRECT` at its reserved place in a preallocated segment, and
//! acknowledged after the next `fdatasync` of the segment that began after
//! its write completed: one flush shared by every frame written meanwhile,
//! across all connections (group commit). No file creation, rename or
//! directory fsync per frame. Segments are prepared by `sluice serve`'s own
//! preparer (`storage.segment_zero_fill`, docs/design/segments.md,
//! "Written blocks" and "Paced and adaptive zero fill"; this receiver is
//! its one core): the first one written with zeros and flushed before the
//! listener opens (up to 2 s), each next one allocated and zeroed in the
//! background while the current one fills, paced to its fill rate, and
//! with `auto` (the default) not zeroed while the flush rounds carry 1 MiB
//! or more; `on` always zeroes, `off` (or `fallocate`) allocates them only.
//! Segments are `<dir>/segments/<id>.seg`.
//!
//! `send`: `connections` threads, each on its own connection, sending
//! frames of `size` bytes one after the other until `count` frames are
//! sent in all; prints one JSON line with instances/s, MB/s and the
//! per-frame latency percentiles (last byte written to acknowledgement).
//!
//! ```text
//! speed_of_light serve <dir> <port>
//! speed_of_light serve-segments <dir> <port> <segment MiB> [auto|on|off]
//! speed_of_light send <port> <connections> <size bytes> <count>
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use sluice_engine::config::ZeroFill;
use sluice_engine::scp::{CoreLoad, SegmentIds, SegmentPreparer, START_WAIT_MAX};
use sluice_engine::store::layout::{dataset_checksum, Layout};
use sluice_engine::store::segment::{
    encode_in_place, AlignedBuf, RecordUids, SegmentWriter, PAYLOAD_ROOM,
};
use std::time::{Duration, Instant};

/// Largest frame accepted (a CR/MG-sized instance is tens of MB).
const FRAME_BYTES_MAX: u64 = 1 << 30;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("serve") if args.len() == 4 => match args[3].parse() {
            Ok(port) => serve(Path::new(&args[2]), port),
            Err(_) => Err(format!("bad port {:?}", args[3])),
        },
        Some("serve-segments") if args.len() == 5 || args.len() == 6 => {
            let zero_fill = match args.get(5).map(String::as_str) {
                None | Some("auto") => Ok(ZeroFill::Auto),
                Some("on" | "zero-fill") => Ok(ZeroFill::On),
                Some("off" | "fallocate") => Ok(ZeroFill::Off),
                Some(other) => Err(format!("bad segment preparation {other:?}")),
            };
            match (args[3].parse(), args[4].parse::<u64>(), zero_fill) {
                (Ok(port), Ok(mib), Ok(zero_fill)) if mib > 0 => {
                    serve_segments(Path::new(&args[2]), port, mib << 20, zero_fill)
                }
                (_, _, Err(error)) => Err(error),
                _ => Err(format!("bad port {:?} or segment MiB {:?}", args[3], args[4])),
            }
        }
        Some("send") if args.len() == 6 => parse_send(&args[2..])
            .and_then(|(port, connections, size, count)| send(port, connections, size, count)),
        _ => Err(
            "usage: speed_of_light serve <dir> <port> | serve-segments <dir> <port> <segment MiB> [auto|on|off] | send <port> <connections> <size> <count>"
                .to_owned(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("speed_of_light: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse_send(args: &[String]) -> Result<(u16, usize, usize, u64), String> {
    let number = |index: usize| -> Result<u64, String> {
        args[index]
            .parse()
            .map_err(|_| format!("not a number: {:?}", args[index]))
    };
    Ok((
        u16::try_from(number(0)?).map_err(|_| "port out of range".to_owned())?,
        usize::try_from(number(1)?.max(1)).map_err(|_| "too many connections".to_owned())?,
        usize::try_from(number(2)?).map_err(|_| "size too large".to_owned())?,
        number(3)?,
    ))
}

fn serve(dir: &Path, port: u16) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|error| format!("bind 127.0.0.1:{port}: {error}"))?;
    let next_connection = AtomicU64::new(0);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let connection = next_connection.fetch_add(1, Ordering::Relaxed);
        let connection_dir = dir.join(format!("c{connection}"));
        std::thread::spawn(move || {
            if let Err(error) = receive(stream, &connection_dir) {
                eprintln!("speed_of_light: connection {connection}: {error}");
            }
        });
    }
    Ok(())
}

/// The next frame's length; `None` when the sender closed the connection
/// between frames.
fn read_frame_length(stream: &mut TcpStream) -> std::io::Result<Option<u64>> {
    let mut length = [0u8; 8];
    match stream.read_exact(&mut length) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u64::from_le_bytes(length);
    if length > FRAME_BYTES_MAX {
        return Err(std::io::Error::other(format!("frame of {length} bytes")));
    }
    Ok(Some(length))
}

fn receive(mut stream: TcpStream, dir: &Path) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    std::fs::create_dir_all(dir)?;
    std::fs::File::open(dir.parent().unwrap_or(dir))?.sync_all()?;
    let directory = std::fs::File::open(dir)?;
    let mut buffer = vec![0u8; 256 * 1024];
    for frame in 0u64.. {
        let Some(mut remaining) = read_frame_length(&mut stream)? else {
            return Ok(());
        };
        let temporary = dir.join(format!("{frame}.tmp"));
        let final_path: PathBuf = dir.join(format!("{frame}.bin"));
        let mut file = std::fs::File::create(&temporary)?;
        while remaining > 0 {
            let want = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(buffer.len());
            let got = stream.read(&mut buffer[..want])?;
            if got == 0 {
                std::fs::remove_file(&temporary)?;
                return Ok(());
            }
            file.write_all(&buffer[..got])?;
            remaining -= got as u64;
        }
        file.sync_data()?;
        drop(file);
        std::fs::rename(&temporary, &final_path)?;
        directory.sync_all()?;
        stream.write_all(&[1])?;
    }
    Ok(())
}

/// The segments shared by every connection, and their group commit.
struct Segments {
    layout: Layout,
    segment_bytes: u64,
    ids: Arc<SegmentIds>,
    state: Mutex<SegmentState>,
    changed: Condvar,
    /// The next segments, prepared as `sluice serve` prepares them (one
    /// "core": this receiver's single open segment); `None` for
    /// `fallocate`.
    preparer: Option<(SegmentPreparer, Arc<CoreLoad>)>,
    fallocated: AtomicU64,
}

struct SegmentState {
    writer: SegmentWriter,
    /// The open segment's file, for writes outside the lock.
    file: Arc<std::fs::File>,
    /// Segments with writes since the last flush began (an old one too,
    /// when a write to it completes after the switch).
    dirty: Vec<Arc<std::fs::File>>,
    /// Flushes begun and ended: a write completed before flush `n` began
    /// is durable once `flushed >= n`.
    flushes_begun: u64,
    flushed: u64,
    failed: bool,
}

impl Segments {
    fn create(dir: &Path, segment_bytes: u64, zero_fill: ZeroFill) -> std::io::Result<Segments> {
        let layout = Layout::new(dir);
        std::fs::create_dir_all(layout.segments_dir())?;
        let ids = Arc::new(SegmentIds::starting_at(1, 1));
        let started = Instant::now();
        let preparer = match zero_fill {
            ZeroFill::Off => None,
            mode => {
                let preparer = SegmentPreparer::start(
                    layout.clone(),
                    Arc::clone(&ids),
                    mode,
                    segment_bytes,
                    0,
                    1,
                )?;
                let load = preparer
                    .load(0)
                    .ok_or_else(|| std::io::Error::other("no core 0"))?;
                Some((preparer, load))
            }
        };
        let (zeroed, first) = match &preparer {
            Some((preparer, _)) => {
                let (_, zeroed) = preparer.wait_first(START_WAIT_MAX);
                (zeroed, preparer.take(0).map(|prepared| prepared.writer))
            }
            None => (0, None),
        };
        let writer = match first {
            Some(writer) => writer,
            None => fallocate(&layout, &ids, segment_bytes)?,
        };
        eprintln!(
            "speed_of_light: segments O_DIRECT: {}, zero fill: {}, first one in {} ms ({} MiB zeroed)",
            writer.is_direct(),
            zero_fill,
            started.elapsed().as_millis(),
            zeroed >> 20
        );
        Ok(Segments {
            state: Mutex::new(SegmentState {
                file: Arc::new(writer.try_clone_file()?),
                writer,
                dirty: Vec::new(),
                flushes_begun: 0,
                flushed: 0,
                failed: false,
            }),
            layout,
            segment_bytes,
            ids,
            changed: Condvar::new(),
            preparer,
            fallocated: AtomicU64::new(0),
        })
    }

    /// The next segment: the prepared one if ready, else one allocated now.
    fn next_writer(&self) -> std::io::Result<SegmentWriter> {
        if let Some((preparer, _)) = &self.preparer {
            if let Some(prepared) = preparer.take(0) {
                return Ok(prepared.writer);
            }
            let fallocated = self.fallocated.fetch_add(1, Ordering::Relaxed) + 1;
            eprintln!(
                "speed_of_light: no prepared segment ready ({fallocated} so far): fallocated"
            );
        }
        fallocate(&self.layout, &self.ids, self.segment_bytes)
    }

    /// A place for `bytes` and the file to write it in; a full segment is
    /// replaced by a new one (the old one is flushed by the flusher as long
    /// as writes to it are pending; it is never written again).
    fn reserve(&self, bytes: u64) -> std::io::Result<(Arc<std::fs::File>, u64)> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        let offset = match state.writer.reserve(bytes) {
            Some(offset) => offset,
            None => {
                let writer = self.next_writer()?;
                state.file = Arc::new(writer.try_clone_file()?);
                state.writer = writer;
                state
                    .writer
                    .reserve(bytes)
                    .ok_or_else(|| std::io::Error::other("frame larger than a segment"))?
            }
        };
        if let Some((_, load)) = &self.preparer {
            load.reserved(bytes, state.writer.size() - state.writer.append_position());
        }
        Ok((Arc::clone(&state.file), offset))
    }

    /// After a write to `file` completed: waits for a flush that began
    /// after it.
    fn wait_durable(&self, file: &Arc<std::fs::File>) -> std::io::Result<()> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        if !state.dirty.iter().any(|dirty| Arc::ptr_eq(dirty, file)) {
            state.dirty.push(Arc::clone(file));
        }
        let target = state.flushes_begun + 1;
        self.changed.notify_all();
        while state.flushed < target && !state.failed {
            state = self
                .changed
                .wait(state)
                .map_err(|_| std::io::Error::other("poisoned"))?;
        }
        if state.failed {
            return Err(std::io::Error::other("a segment flush failed"));
        }
        Ok(())
    }

    /// The flusher: one `fdatasync` per dirty segment per round, as soon
    /// as a write waits for one.
    fn flush_forever(&self) {
        loop {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            while state.dirty.is_empty() {
                let Ok(waited) = self.changed.wait(state) else {
                    return;
                };
                state = waited;
            }
            let dirty = std::mem::take(&mut state.dirty);
            state.flushes_begun += 1;
            let round = state.flushes_begun;
            drop(state);
            if let Some((_, load)) = &self.preparer {
                load.round_started();
            }
            let result = dirty.iter().try_for_each(|file| file.sync_data());
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            if let Err(error) = result {
                eprintln!("speed_of_light: segment flush: {error}");
                state.failed = true;
            }
            state.flushed = round;
            self.changed.notify_all();
        }
    }
}

/// A segment allocated (no zeros), its name durable.
fn fallocate(
    layout: &Layout,
    ids: &SegmentIds,
    segment_bytes: u64,
) -> std::io::Result<SegmentWriter> {
    let writer = SegmentWriter::create(&layout.segment_path(ids.take()), segment_bytes)?;
    std::fs::File::open(layout.segments_dir())?.sync_all()?;
    Ok(writer)
}

fn serve_segments(
    dir: &Path,
    port: u16,
    segment_bytes: u64,
    zero_fill: ZeroFill,
) -> Result<(), String> {
    let segments = Arc::new(
        Segments::create(dir, segment_bytes, zero_fill)
            .map_err(|error| format!("{}: {error}", dir.display()))?,
    );
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|error| format!("bind 127.0.0.1:{port}: {error}"))?;
    let flusher = Arc::clone(&segments);
    std::thread::spawn(move || flusher.flush_forever());
    for (connection, stream) in listener.incoming().enumerate() {
        let Ok(stream) = stream else { continue };
        let segments = Arc::clone(&segments);
        std::thread::spawn(move || {
            if let Err(error) = receive_segments(stream, &segments, connection) {
                eprintln!("speed_of_light: connection {connection}: {error}");
            }
        });
    }
    Ok(())
}

fn receive_segments(
    mut stream: TcpStream,
    segments: &Segments,
    connection: usize,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    // One aligned buffer per connection, reused: each frame is received
    // straight into its place in the record (no user-space copy: what
    // zero-copy receive would give Sluice), hashed once (the XXH3-128 of
    // the payload, split at 0), and written from there.
    let mut record = AlignedBuf::zeroed(PAYLOAD_ROOM);
    for frame in 0u64.. {
        let Some(length) = read_frame_length(&mut stream)? else {
            return Ok(());
        };
        // At most FRAME_BYTES_MAX.
        let length = length as usize;
        if record.capacity() < PAYLOAD_ROOM + length {
            record = AlignedBuf::zeroed(PAYLOAD_ROOM + length);
        }
        record.restore_length();
        let payload = &mut record.as_mut_slice()[PAYLOAD_ROOM..PAYLOAD_ROOM + length];
        stream.read_exact(payload)?;
        let body = dataset_checksum(payload);
        let uids = RecordUids {
            study: "1.2.3".into(),
            series: format!("1.2.3.{connection}"),
            sop: format!("1.2.3.{connection}.{frame}"),
        };
        encode_in_place(&mut record, length, 1, &uids, 0, body).map_err(std::io::Error::other)?;
        let (file, offset) = segments.reserve(record.as_slice().len() as u64)?;
        file.write_all_at(record.as_slice(), offset)?;
        segments.wait_durable(&file)?;
        stream.write_all(&[1])?;
    }
    Ok(())
}

fn send(port: u16, connections: usize, size: usize, count: u64) -> Result<(), String> {
    let payload: Arc<Vec<u8>> = Arc::new((0..size).map(|index| (index % 251) as u8).collect());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let payload = Arc::clone(&payload);
            let next = Arc::clone(&next);
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                let mut stream = TcpStream::connect(("127.0.0.1", port))
                    .map_err(|error| format!("connect 127.0.0.1:{port}: {error}"))?;
                stream
                    .set_nodelay(true)
                    .map_err(|error| error.to_string())?;
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let length = (payload.len() as u64).to_le_bytes();
                    stream
                        .write_all(&length)
                        .and_then(|()| stream.write_all(&payload))
                        .map_err(|error| format!("send: {error}"))?;
                    let sent = Instant::now();
                    let mut ack = [0u8; 1];
                    stream
                        .read_exact(&mut ack)
                        .map_err(|error| format!("acknowledgement: {error}"))?;
                    latencies.push(sent.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        let done = worker
            .join()
            .map_err(|_| "a sender thread panicked".to_owned())??;
        latencies.extend(done);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    let percentile = |fraction: f64| -> f64 {
        let index = ((latencies.len() as f64 * fraction).ceil() as usize)
            .saturating_sub(1)
            .min(latencies.len().saturating_sub(1));
        latencies
            .get(index)
            .map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
    };
    let instances = latencies.len() as f64;
    println!(
        "{{\"connections\": {connections}, \"size_bytes\": {size}, \"instances\": {}, \
         \"seconds\": {seconds:.3}, \"instances_per_s\": {:.1}, \"mb_per_s\": {:.1}, \
         \"latency_ms_p50\": {:.2}, \"latency_ms_p99\": {:.2}, \"latency_ms_p999\": {:.2}}}",
        latencies.len(),
        instances / seconds,
        instances * size as f64 / seconds / 1e6,
        percentile(0.5),
        percentile(0.99),
        percentile(0.999),
    );
    Ok(())
}
