//! One C-STORE sub-operation on a lane (an association carrying a C-MOVE's
//! or C-GET's C-STOREs): the stored data set read from its file and sent
//! as P-DATA-TF PDUs, then the wait for the C-STORE-RSP.
//!
//! **As stored, by copy** (the destination took the stored transfer
//! syntax; the default, `query.retrieve_send = "copy"`): the C-STORE-RQ
//! goes out as soon as the file is open (the index knows the
//! data set's length), then the data set in chunks of the core's
//! [`ChunkPool`]. For each chunk, [`ChunkLayout`] places as many whole PDUs
//! as fit: the 12 header bytes of each (from net's `PDataFragmenter`) are
//! written into the chunk, and one scatter read (`Core::read_at`) fills the
//! gaps between them with the file's bytes, so the data set goes from the
//! page cache into the send buffer in one copy (the kernel's) and out of it
//! in one send; the Part 10 header is never read (reads start at the data
//! set's offset). The next read overlaps the previous chunk's send.
//!
//! **The first chunk read ahead** (by copy; a transfer by splice only
//! opens ahead): a lane opens its next instances while
//! the current one is sent and the answers are awaited
//! (`QueryRetrieve::read_ahead`: one without a window, several with one),
//! and once a file is open [`Transfer::prime`] reads its first chunk too,
//! with its PDUs placed after [`PRIME_RESERVE`] bytes of room. When its
//! turn comes, the C-STORE-RQ (and the pending C-GET-RSP queued before
//! it) is copied into the end of that room and the chunk goes out from
//! there: the gap between a response and the next data set is no longer an
//! open and a file read but only the send (for 40 KiB instances the whole
//! instance is in that chunk). Nothing goes out before its turn (PS3.7: one
//! sub-operation outstanding without an Asynchronous Operations Window;
//! with one, a C-GET's next sub-operation starts as soon as the previous
//! data set is sent, until its window is full: `QueryRetrieve::lane_sent`).
//! Every open and read carries the transfer's io tag value ([`Transfer::io`]:
//! its lane and its identity on the lane), so several transfers of a lane
//! can have theirs in flight at once.
//!
//! **Segments held open**: a record's segment, once opened, stays open on
//! its lane (`state::Lane::segments`) and the lane's next records of that
//! segment borrow the handle ([`Transfer::opened`] with `borrowed`): no open
//! and no close per instance. A segment that compaction empties and deletes
//! while a lane holds it is still read through the held descriptor: the
//! record's bytes there are the ones the retrieve's list named (records are
//! never rewritten in place; the file's space returns when the lane closes
//! it, at the end of its retrieve).
//!
//! **By splice** (`query.retrieve_send = "splice"`; not the default: on
//! the 2-vCPU benchmark machine it gained no steady rate over the copy,
//! saved the sender no CPU and cost the receiver more, docs/benchmarks.md
//! "Retrieval by splice"), on an
//! association without TLS and a core whose ring has `IORING_OP_SPLICE`:
//! no chunk and no read. When the lane is free, the C-STORE-RQ (and what
//! the association queued before it) and every PDU of the data set go to
//! the core as one `Core::send_file`: the command's bytes and each PDU's 12
//! header bytes as the send's own bytes, each PDU's value as the next run
//! of the file from the data set's offset. The io crate (`io/src/splice.rs`)
//! writes the header bytes into the association's pipe and splices the
//! file's runs into it between them, then splices the pipe into the
//! socket, in linked chains of at most a pipe-full (1 MiB): the data set
//! goes from the page cache to the socket without passing through user
//! space. The send is one of the association's sends, in order with the
//! others; the file stays open until it ends (the io crate holds it), so
//! the transfer closes its file at once as before. The share under ingest
//! (`share.rs`) is asked for the whole data set at once. Where the core
//! refuses (the portable backend, a kernel without the opcode, a pipe it
//! cannot make), the transfer goes on by copy and says so once at info;
//! TLS associations and transcoded data sets always go by copy.
//! `sluice_retrieve_data_sets_spliced_total` and `_copied_total` count both
//! ways. Why it did not win here: the kernel runs every io_uring splice in
//! an io-wq worker thread, so each data set costs a hand-over from the
//! core's thread to a worker and back (context switches dominated the
//! profile), which costs about what the two copies it saves do; and the
//! spliced pages reach the socket as many small fragments, which the
//! receiver pays for.
//!
//! **Transcoded** (a native data set the destination takes only in the
//! other Little Endian syntax): PS3.8 wants the length of each PDU before
//! its bytes but not the message's, while net's fragmenter numbers PDUs
//! from the message's length, and a transcoded length is known only after
//! transcoding. Two passes: the first reads and transcodes the file only to
//! count the output; the second reads it again and frames the output as it
//! comes. Both passes read through the page cache in chunks, so memory
//! stays bounded by a chunk and one PDU; the fallback costs a second read,
//! not a copy of the instance in memory.
//!
//! Flow control: a transfer reads only while its association has fewer
//! than [`LANE_SENDS_MAX`] sends in flight and a chunk is free; otherwise
//! it waits (the service wakes it when a send completes).

use std::ops::Range;
use std::sync::Arc;

use std::sync::atomic::{AtomicBool, Ordering};

use sluice_io::{At, Chunk, Core, FileHandle, FileSend, IoError, OpenOptions};
use sluice_media::transcode::Transcoder;
use sluice_net::dimse::Command;
use sluice_net::pdata::{
    PDataFragment, PDataFragmenter, PDATA_HEADERS_LENGTH, PDATA_LENGTH_WHEN_PEER_UNLIMITED,
};
use sluice_net::scan::DatasetEncoding;

use super::super::conn::Connection;
use super::super::tag::{tag, TagKind};
use super::fetched::FetchedQueue;
use super::share::{NoChunk, Sending};
use crate::store::{is_gone, DatasetLocation, Fetch, Store, StoredDataset, RELOCATIONS_MAX};

/// Sends in flight on one lane before its transfer waits (a chunk each,
/// so at most this many chunks per lane are on their way to the kernel).
pub(crate) const LANE_SENDS_MAX: u32 = 4;

/// The most bytes queued on the association (the C-STORE-RQ, a pending
/// C-GET-RSP) copied in front of a transfer's first chunk; more are sent
/// on their own.
const CHUNK_PREFIX_BYTES_MAX: usize = 16 * 1024;

/// Room left at the start of a first chunk read ahead ([`Transfer::prime`])
/// for what goes in front of its PDUs once the lane is free: the C-STORE-RQ
/// and a pending C-GET-RSP (a few hundred bytes; more go on their own).
const PRIME_RESERVE: usize = 2048;

/// Transcoded output sent at a time (the second pass's send size).
const TRANSCODED_SEND_BYTES: usize = 256 * 1024;

/// A splice refused at its start has been logged (once per process).
static SPLICE_REFUSAL_LOGGED: AtomicBool = AtomicBool::new(false);

/// How a data set was handed to the socket (for the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SentBy {
    /// From the file through a pipe (`Core::send_file`).
    Splice,
    /// Read into send buffers and sent from them.
    Copy,
}

/// How the data set goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Byte for byte as stored.
    AsStored,
    /// Transcoded from the stored native encoding into `to`.
    Transcode {
        /// The stored encoding.
        from: DatasetEncoding,
        /// The encoding the destination takes.
        to: DatasetEncoding,
    },
}

/// Why a transfer's file could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The open completed with an error.
    Io(IoError),
    /// A record of an evicted segment could not be fetched, or its open
    /// submitted: the reason.
    Other(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Io(error) => write!(f, "cannot open the stored file: {error}"),
            OpenError::Other(reason) => f.write_str(reason),
        }
    }
}

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The file is being opened.
    Opening,
    /// The file is open; the command waits for the lane to be free (the
    /// next sub-operation, opened while the previous one's response is
    /// awaited).
    Ready,
    /// Transcoding's first pass: reading to count the output.
    Counting,
    /// The command is sent; the data set is going out.
    Sending,
    /// Every byte is queued; the C-STORE-RSP is awaited.
    AwaitingResponse,
}

/// What a transfer needs before it can go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pump {
    /// A read is in flight (its completion moves it on).
    Reading,
    /// Its association has too many sends in flight.
    WaitSends,
    /// No chunk is free.
    WaitChunk,
    /// Ingest is waiting and retrieval used its share of this epoch
    /// (`share`).
    WaitShare,
    /// Every byte is queued.
    Sent,
    /// It cannot go on (the reason).
    Failed(String),
}

impl Pump {
    /// What a transfer waits for when no chunk was given.
    fn waiting_for(none: NoChunk) -> Pump {
        match none {
            NoChunk::Share => Pump::WaitShare,
            NoChunk::Pool => Pump::WaitChunk,
        }
    }
}

/// The PDUs placed in one chunk: where the file's bytes go, and how much
/// of the chunk is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkLayout {
    /// Ranges of the chunk the file's bytes fill, in order.
    pub(crate) ranges: Vec<Range<usize>>,
    /// Offset within the data set of the first byte read.
    pub(crate) first_value_offset: u64,
    /// Bytes of the chunk used (headers and values).
    pub(crate) fill: usize,
    /// Value bytes to read.
    pub(crate) value_bytes: u64,
}

impl ChunkLayout {
    /// Places whole PDUs from `fragments` (starting with `carried`, a
    /// fragment that did not fit the previous chunk) into `storage`,
    /// writing their headers; the first that does not fit is returned to be
    /// carried to the next chunk. `None` when no fragment is left.
    pub(crate) fn place(
        storage: &mut [u8],
        start: usize,
        carried: &mut Option<PDataFragment>,
        fragments: &mut PDataFragmenter,
    ) -> Option<ChunkLayout> {
        let mut layout = ChunkLayout {
            ranges: Vec::new(),
            first_value_offset: 0,
            fill: start,
            value_bytes: 0,
        };
        let mut placed_any = false;
        while let Some(fragment) = carried.take().or_else(|| fragments.next()) {
            let value_length = fragment.value_length as usize;
            let end = layout.fill + PDATA_HEADERS_LENGTH + value_length;
            if end > storage.len() {
                // Fragments are sized to fit an empty chunk.
                assert!(layout.fill > 0, "a PDU larger than a chunk");
                *carried = Some(fragment);
                break;
            }
            if !placed_any {
                layout.first_value_offset = fragment.value_offset;
                placed_any = true;
            }
            if let Some(header) = storage.get_mut(layout.fill..layout.fill + PDATA_HEADERS_LENGTH) {
                header.copy_from_slice(&fragment.headers);
            }
            if value_length > 0 {
                layout.ranges.push(layout.fill + PDATA_HEADERS_LENGTH..end);
            }
            layout.value_bytes += u64::from(fragment.value_length);
            layout.fill = end;
        }
        (layout.fill > 0).then_some(layout)
    }
}

/// The PDU length used towards a peer: its maximum (or, unlimited, net's
/// default), capped so one PDU and its headers fit a chunk after the room
/// a first chunk read ahead keeps for the command ([`PRIME_RESERVE`]).
pub(crate) fn pdu_length_for(pdu_length_max_peer: u32, chunk_size: usize) -> u32 {
    let peer = if pdu_length_max_peer == 0 {
        PDATA_LENGTH_WHEN_PEER_UNLIMITED
    } else {
        pdu_length_max_peer
    };
    let cap = u32::try_from(chunk_size.saturating_sub(PDATA_HEADERS_LENGTH - 6 + PRIME_RESERVE))
        .unwrap_or(u32::MAX);
    peer.min(cap)
}

/// A read in flight: what its completion must bring.
#[derive(Debug)]
struct InFlightRead {
    fill: usize,
    expected: u64,
    /// The first chunk, read ahead before the command went out
    /// ([`Transfer::prime`]): its PDUs start at [`PRIME_RESERVE`].
    primes: bool,
}

/// The transcoder's state across both passes.
struct Transcoding {
    transcoder: Transcoder,
    /// Input bytes read so far (this pass).
    input_done: u64,
    /// Pass 1: output bytes counted. Pass 2: the length the fragmenter uses.
    output_length: u64,
    /// Pass 2: transcoded bytes not yet framed, from `pending_start`.
    pending: Vec<u8>,
    pending_start: usize,
    /// Pass 2: framed PDUs not yet sent.
    out: Vec<u8>,
    /// Pass 2: every input byte was fed and `finish` called.
    finished: bool,
}

impl std::fmt::Debug for Transcoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcoding")
            .field("input_done", &self.input_done)
            .field("output_length", &self.output_length)
            .finish_non_exhaustive()
    }
}

/// One sub-operation's transfer (see the module documentation).
#[derive(Debug)]
pub(crate) struct Transfer {
    pub(crate) dataset: StoredDataset,
    pub(crate) context_id: u8,
    pub(crate) mode: Mode,
    /// The C-STORE-RQ (its Message ID is what the response answers).
    command: Command,
    pub(crate) message_id: u16,
    pub(crate) phase: Phase,
    file: Option<FileHandle>,
    fragmenter: Option<PDataFragmenter>,
    carried: Option<PDataFragment>,
    read: Option<InFlightRead>,
    /// The first chunk read ahead ([`Transfer::prime`]) and its value
    /// bytes, waiting for the command to go out in front of it.
    primed: Option<(Chunk, u64)>,
    transcoding: Option<Box<Transcoding>>,
    pdu_length: u32,
    /// Data set bytes queued for sending.
    pub(crate) bytes_sent: u64,
    /// The command is queued on the connection, to go out with the first
    /// chunk.
    prefix_pending: bool,
    /// Times the open found the record's segment gone and the record was
    /// looked up again ([`Transfer::reopen`]).
    relocations: u32,
    /// The value of its io tags: its lane and its identity on the lane
    /// (`state::Lane::io_value`).
    pub(crate) io: u64,
    /// `file` is a segment its lane holds open (`state::Lane::segments`):
    /// not closed with the transfer.
    borrowed: bool,
    /// As stored, its data set goes from the file to the socket by splice
    /// ([`Transfer::send_by_splice`]); cleared when the core refuses.
    splice: bool,
    /// How its data set was handed over, once it was (taken by the lane
    /// for the metrics).
    pub(crate) sent_by: Option<SentBy>,
}

impl Transfer {
    /// A transfer of `dataset` on `context_id` with `command` (a C-STORE-RQ
    /// whose Message ID is `message_id`), in PDUs of at most `pdu_length`;
    /// its io tags carry `io`.
    pub(crate) fn new(
        dataset: StoredDataset,
        (context_id, mode): (u8, Mode),
        (command, message_id): (Command, u16),
        (pdu_length, io): (u32, u64),
    ) -> Transfer {
        Transfer {
            dataset,
            context_id,
            mode,
            command,
            message_id,
            phase: Phase::Opening,
            file: None,
            fragmenter: None,
            carried: None,
            read: None,
            primed: None,
            transcoding: None,
            pdu_length,
            bytes_sent: 0,
            prefix_pending: false,
            relocations: 0,
            io,
            borrowed: false,
            splice: false,
            sent_by: None,
        }
    }

    /// Sends its data set by splice when it goes out as stored (the
    /// association is not TLS, the core's ring splices, and
    /// `query.retrieve_send` says so): no first chunk read ahead then,
    /// and the command and every PDU go in one `Core::send_file`.
    pub(crate) fn send_by_splice(&mut self, on: bool) {
        self.splice = on && self.mode == Mode::AsStored;
    }

    /// Opens the file (ends in the io's `Opened` with the transfer's tag).
    /// A record of an evicted segment not in the read-through cache is
    /// fetched first, off the core (`fetched`): the open follows when the
    /// fetch ends.
    pub(crate) fn start(
        &mut self,
        core: &mut Core,
        fetched: &Arc<FetchedQueue>,
    ) -> Result<(), String> {
        if let DatasetLocation::Record {
            path,
            evicted: Some(record),
            ..
        } = &self.dataset.location
        {
            // A cached record is whole (renamed into place once checked).
            let cached =
                std::fs::metadata(path).is_ok_and(|meta| meta.len() == record.place.length);
            if !cached {
                return fetched.fetch(self.io, (path, record, &self.dataset.triplet));
            }
        }
        let (path, _, _) = self.dataset.location.file_range();
        core.open(
            At::Cwd,
            path,
            OpenOptions::new(),
            tag(TagKind::RetrieveOpen, self.io),
        )
        .map_err(|error| format!("cannot open the stored file: {error}"))
    }

    /// The open failed with `error`: when the record's segment is gone
    /// (compaction moved the record after the list was made and deleted
    /// the segment: the switch commits first, docs/design/segments.md
    /// "Compaction"), the record is looked up again in a fresh read
    /// transaction and opened at its new place, at most
    /// [`RELOCATIONS_MAX`] times. True when a new open (or fetch) is in
    /// flight; false when the caller reports `error` (a file, an entry gone
    /// or changed, a place unchanged).
    pub(crate) fn reopen(
        &mut self,
        core: &mut Core,
        error: &OpenError,
        (store, fetched): (&Store, &Arc<FetchedQueue>),
    ) -> bool {
        debug_assert_eq!(self.phase, Phase::Opening);
        let gone = matches!(error, OpenError::Io(error) if is_gone(&error.to_io_error()));
        if self.relocations >= RELOCATIONS_MAX || !gone {
            return false;
        }
        self.relocations += 1;
        // Never fetched here: the core does not block on the object store.
        match store.relocated(&self.dataset, Fetch::Later) {
            Ok(Some(now)) => {
                tracing::info!(sop_instance_uid = %self.dataset.triplet.sop_instance_uid,
                    from = ?self.dataset.location, to = ?now.location,
                    "a record compaction moved is sent from its new place");
                self.dataset = now;
                self.start(core, fetched).is_ok()
            }
            Ok(None) => false,
            Err(relocating) => {
                tracing::warn!(error = %relocating, sop_instance_uid = %self.dataset.triplet.sop_instance_uid,
                    "cannot look up again a record whose segment is gone");
                false
            }
        }
    }

    /// The file is open (`borrowed`: a segment its lane holds open, not
    /// closed with the transfer); [`Transfer::begin`] starts sending.
    pub(crate) fn opened(&mut self, file: FileHandle, borrowed: bool) {
        debug_assert_eq!(self.phase, Phase::Opening);
        self.file = Some(file);
        self.borrowed = borrowed;
        self.phase = Phase::Ready;
    }

    /// The segment file its record lies in, when its lane may hold that
    /// file open for other records (a record of a local segment; not a
    /// Part 10 file, nor a record fetched into the read-through cache).
    pub(crate) fn segment_path(&self) -> Option<&std::path::Path> {
        match &self.dataset.location {
            DatasetLocation::Record {
                path,
                evicted: None,
                ..
            } => Some(path),
            _ => None,
        }
    }

    /// Whether it reads (or will read) from `file`.
    pub(crate) fn reads_from(&self, file: FileHandle) -> bool {
        self.file == Some(file)
    }

    /// Its identity on its lane (in its io tags).
    pub(crate) fn id(&self) -> u32 {
        super::state::split_io(self.io).1
    }

    /// The lane is free: as stored, the command goes out now; transcoded,
    /// the first pass starts.
    pub(crate) fn begin(&mut self, core: &mut Core, conn: &mut Connection) -> Result<(), String> {
        assert_eq!(
            self.phase,
            Phase::Ready,
            "a transfer began before its file opened"
        );
        match self.mode {
            Mode::AsStored => {
                let length = self.dataset.length();
                self.send_command(core, conn, length, true)?;
                // Its first chunk read ahead goes now, the command in front;
                // one still being read goes when the read completes.
                if let Some((chunk, value_bytes)) = self.primed.take() {
                    self.send_primed(core, conn, chunk, value_bytes);
                }
            }
            Mode::Transcode { from, to } => {
                let transcoder = Transcoder::new(from, to)
                    .map_err(|error| format!("cannot transcode: {error}"))?;
                self.transcoding = Some(Box::new(Transcoding {
                    transcoder,
                    input_done: 0,
                    output_length: 0,
                    pending: Vec::new(),
                    pending_start: 0,
                    out: Vec::new(),
                    finished: false,
                }));
                self.phase = Phase::Counting;
            }
        }
        Ok(())
    }

    /// Sends the command, or (`coalesce`) queues it to go out at the start
    /// of the first chunk, in the same send.
    fn send_command(
        &mut self,
        core: &mut Core,
        conn: &mut Connection,
        length: u64,
        coalesce: bool,
    ) -> Result<(), String> {
        let sent = if coalesce {
            self.prefix_pending = true;
            conn.queue_command_for_data_set(self.context_id, &self.command, length)
        } else {
            conn.send_command_for_data_set(core, self.context_id, &self.command, length)
        };
        sent.map_err(|error| format!("cannot send the C-STORE-RQ: {error}"))?;
        if self.fragmenter.is_none() {
            // (A transfer primed made its own, for the same length.)
            self.fragmenter = Some(
                PDataFragmenter::new(self.context_id, false, length, self.pdu_length)
                    .map_err(|error| format!("cannot frame the data set: {error}"))?,
            );
        }
        self.phase = Phase::Sending;
        conn.counters.instances_sent += 1;
        Ok(())
    }

    /// Reads the first chunk of an as-stored data set ahead, while the lane
    /// still waits for the previous sub-operation's C-STORE-RSP (the file
    /// is open, the command not sent): its PDUs are placed from
    /// [`PRIME_RESERVE`] on, so that when the lane is free
    /// ([`Transfer::begin`]) the command goes into the room before them and
    /// both leave in one send, with no file read between the response and
    /// the next data set (PS3.7 allows one sub-operation outstanding
    /// without an Asynchronous Operations Window: nothing is sent early,
    /// it is only ready). Nothing happens when no chunk is free, the data
    /// set is empty or transcoded, or its first PDU does not fit after the
    /// room; the transfer then reads at `begin` as before.
    pub(crate) fn prime(&mut self, core: &mut Core, chunks: &mut Sending<'_>) {
        let length = self.dataset.length();
        if self.phase != Phase::Ready
            || self.splice
            || self.mode != Mode::AsStored
            || length == 0
            || self.read.is_some()
            || self.fragmenter.is_some()
        {
            return;
        }
        let (Some(file), Ok(mut fragmenter)) = (
            self.file,
            PDataFragmenter::new(self.context_id, false, length, self.pdu_length),
        ) else {
            return;
        };
        let Ok(mut chunk) = chunks.take() else {
            return;
        };
        let mut carried = None;
        let layout = ChunkLayout::place(
            chunk.storage_mut(),
            PRIME_RESERVE,
            &mut carried,
            &mut fragmenter,
        );
        let Some(layout) = layout.filter(|layout| !layout.ranges.is_empty()) else {
            return;
        };
        let (_, offset, _) = self.dataset.location.file_range();
        if core
            .read_at(
                file,
                offset + layout.first_value_offset,
                chunk,
                &layout.ranges,
                tag(TagKind::RetrieveRead, self.io),
            )
            .is_err()
        {
            return;
        }
        self.fragmenter = Some(fragmenter);
        self.carried = carried;
        self.read = Some(InFlightRead {
            fill: layout.fill,
            expected: layout.value_bytes,
            primes: true,
        });
    }

    /// Sends the first chunk read ahead, with the queued command (and what
    /// the association queued before it) in the room before its PDUs.
    fn send_primed(
        &mut self,
        core: &mut Core,
        conn: &mut Connection,
        mut chunk: Chunk,
        value_bytes: u64,
    ) {
        let mut start = PRIME_RESERVE;
        if std::mem::take(&mut self.prefix_pending) {
            if let Some(prefix) = conn.take_transmit() {
                let room = PRIME_RESERVE
                    .checked_sub(prefix.len())
                    .and_then(|at| Some((at, chunk.storage_mut().get_mut(at..PRIME_RESERVE)?)));
                match room {
                    Some((at, room)) => {
                        room.copy_from_slice(&prefix);
                        start = at;
                    }
                    None => conn.send_bytes(core, prefix.into()),
                }
            }
        }
        chunk.set_start(start);
        self.bytes_sent += value_bytes;
        conn.send_bytes(core, chunk.into());
    }

    /// A read completed: as stored, the chunk goes out (a first chunk read
    /// ahead waits for the command if it has not gone out yet);
    /// transcoded, its bytes are fed to the transcoder.
    pub(crate) fn read_done(
        &mut self,
        core: &mut Core,
        conn: &mut Connection,
        mut chunk: Chunk,
        result: Result<u64, IoError>,
    ) -> Result<(), String> {
        let read = self
            .read
            .take()
            .ok_or_else(|| "a read completed that was not in flight".to_owned())?;
        let bytes = result.map_err(|error| format!("cannot read the stored file: {error}"))?;
        if bytes != read.expected {
            return Err(format!(
                "the stored file ended early ({bytes} of {} bytes read)",
                read.expected
            ));
        }
        match self.transcoding.as_deref_mut() {
            None if read.primes => {
                chunk.set_len(read.fill);
                if self.phase == Phase::Sending {
                    self.send_primed(core, conn, chunk, bytes);
                } else {
                    self.primed = Some((chunk, bytes));
                }
            }
            None => {
                chunk.set_len(read.fill);
                self.bytes_sent += bytes;
                conn.send_bytes(core, chunk.into());
            }
            Some(transcoding) => {
                let input = chunk.storage_mut().get(..read.fill).unwrap_or_default();
                transcoding.input_done += bytes;
                if self.phase == Phase::Counting {
                    let mut scratch = Vec::new();
                    transcoding
                        .transcoder
                        .feed(input, &mut scratch)
                        .map_err(|error| format!("cannot transcode: {error}"))?;
                    transcoding.output_length += scratch.len() as u64;
                } else {
                    transcoding
                        .transcoder
                        .feed(input, &mut transcoding.pending)
                        .map_err(|error| format!("cannot transcode: {error}"))?;
                }
            }
        }
        Ok(())
    }

    /// Moves the transfer as far as it can go now.
    pub(crate) fn pump(
        &mut self,
        core: &mut Core,
        conn: &mut Connection,
        chunks: &mut Sending<'_>,
    ) -> Pump {
        match self.pump_inner(core, conn, chunks) {
            Ok(pump) => pump,
            Err(reason) => Pump::Failed(reason),
        }
    }

    fn pump_inner(
        &mut self,
        core: &mut Core,
        conn: &mut Connection,
        chunks: &mut Sending<'_>,
    ) -> Result<Pump, String> {
        loop {
            if self.read.is_some() || matches!(self.phase, Phase::Opening | Phase::Ready) {
                return Ok(Pump::Reading);
            }
            if self.phase == Phase::AwaitingResponse {
                return Ok(Pump::Sent);
            }
            if self.transcoding.is_some() {
                return self.pump_transcoding(core, conn, chunks);
            }
            if self.fragments_done() {
                // An empty data set: its command, queued to ride with the
                // first chunk, goes alone.
                if std::mem::take(&mut self.prefix_pending) {
                    conn.flush_sends(core);
                }
                self.sent_all(core);
                continue;
            }
            if conn.sends_in_flight() >= LANE_SENDS_MAX {
                return Ok(Pump::WaitSends);
            }
            if self.splice {
                let length = self.dataset.length();
                if let Err(none) = chunks.admit(length) {
                    return Ok(Pump::waiting_for(none));
                }
                if self.send_spliced(core, conn)? {
                    self.sent_by = Some(SentBy::Splice);
                    self.sent_all(core);
                    continue;
                }
                chunks.refund(length);
            }
            let mut chunk = match chunks.take() {
                Ok(chunk) => chunk,
                Err(none) => return Ok(Pump::waiting_for(none)),
            };
            // The command (and whatever the association queued before it, a
            // pending C-GET-RSP) goes out in front of the first PDUs.
            let mut start = 0;
            if std::mem::take(&mut self.prefix_pending) {
                if let Some(prefix) = conn.take_transmit() {
                    match chunk.storage_mut().get_mut(..prefix.len()) {
                        Some(head) if prefix.len() <= CHUNK_PREFIX_BYTES_MAX => {
                            head.copy_from_slice(&prefix);
                            start = prefix.len();
                        }
                        _ => conn.send_bytes(core, prefix.into()),
                    }
                }
            }
            let Some(fragmenter) = self.fragmenter.as_mut() else {
                return Err("no fragmenter while sending".into());
            };
            let Some(layout) =
                ChunkLayout::place(chunk.storage_mut(), start, &mut self.carried, fragmenter)
            else {
                self.sent_all(core);
                continue;
            };
            if layout.ranges.is_empty() {
                // Headers only (a zero-length value): nothing to read.
                chunk.set_len(layout.fill);
                conn.send_bytes(core, chunk.into());
                continue;
            }
            let (_, offset, _) = self.dataset.location.file_range();
            let file = self
                .file
                .ok_or_else(|| "no file while sending".to_owned())?;
            core.read_at(
                file,
                offset + layout.first_value_offset,
                chunk,
                &layout.ranges,
                tag(TagKind::RetrieveRead, self.io),
            )
            .map_err(|error| format!("cannot read the stored file: {error}"))?;
            self.read = Some(InFlightRead {
                fill: layout.fill,
                expected: layout.value_bytes,
                primes: false,
            });
            return Ok(Pump::Reading);
        }
    }

    /// Hands the whole data set (the queued command in front) to the core
    /// as one send from the file ([`Connection::send_file`]). False when
    /// the core refuses (logged once, at info): the transfer then goes on
    /// by copy, the command already sent on its own if it was taken.
    fn send_spliced(&mut self, core: &mut Core, conn: &mut Connection) -> Result<bool, String> {
        let file = self
            .file
            .ok_or_else(|| "no file while sending".to_owned())?;
        // A copy: a refusal leaves the copy path its fragments.
        let fragments = self
            .carried
            .into_iter()
            .chain(self.fragmenter.clone().into_iter().flatten());
        let mut send = FileSend::new();
        let prefix = if std::mem::take(&mut self.prefix_pending) {
            conn.take_transmit()
        } else {
            None
        };
        if let Some(prefix) = &prefix {
            send.push_bytes(prefix);
        }
        let mut first_value_offset = None;
        for fragment in fragments {
            first_value_offset.get_or_insert(fragment.value_offset);
            send.push_bytes(&fragment.headers);
            send.push_file(fragment.value_length);
        }
        let value_bytes = send.file_bytes();
        let (_, offset, _) = self.dataset.location.file_range();
        let offset = offset + first_value_offset.unwrap_or(0);
        match conn.send_file(core, file, offset, send) {
            Ok(()) => {
                self.carried = None;
                self.fragmenter = None;
                self.bytes_sent += value_bytes;
                Ok(true)
            }
            Err(error) => {
                if !SPLICE_REFUSAL_LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::info!(%error, "retrieval sends by copy: the core refused a splice from the file to the socket (logged once)");
                }
                self.splice = false;
                if let Some(prefix) = prefix {
                    conn.send_bytes(core, prefix.into());
                }
                Ok(false)
            }
        }
    }

    fn fragments_done(&self) -> bool {
        self.carried.is_none()
            && self
                .fragmenter
                .as_ref()
                .is_none_or(|fragmenter| fragmenter.clone().next().is_none())
    }

    /// Every byte is queued: the file closes (once a send from it is done:
    /// the core holds it until then), the response is awaited.
    fn sent_all(&mut self, core: &mut Core) {
        self.sent_by.get_or_insert(SentBy::Copy);
        self.close(core);
        self.phase = Phase::AwaitingResponse;
    }

    /// Closes the file if open (the close waits for a read in flight); a
    /// segment its lane holds open stays open.
    pub(crate) fn close(&mut self, core: &mut Core) {
        if std::mem::take(&mut self.borrowed) {
            self.file = None;
        }
        if let Some(file) = self.file.take() {
            // Nobody waits for a close of a file only read.
            let _ = core.close_file(file, tag(TagKind::Ignored, 0));
        }
    }

    /// Whether a read is in flight (its completion will still arrive).
    pub(crate) fn reading(&self) -> bool {
        self.read.is_some()
    }

    /// Whether its command went out (after that the association cannot
    /// carry another message until its data set ends).
    pub(crate) fn command_sent(&self) -> bool {
        matches!(self.phase, Phase::Sending | Phase::AwaitingResponse)
    }

    fn pump_transcoding(
        &mut self,
        core: &mut Core,
        conn: &mut Connection,
        chunks: &mut Sending<'_>,
    ) -> Result<Pump, String> {
        let length = self.dataset.length();
        loop {
            let Some(transcoding) = self.transcoding.as_deref_mut() else {
                return Err("no transcoder".into());
            };
            if self.phase == Phase::Counting && transcoding.input_done >= length {
                let mut scratch = Vec::new();
                transcoding
                    .transcoder
                    .finish(&mut scratch)
                    .map_err(|error| format!("cannot transcode: {error}"))?;
                transcoding.output_length += scratch.len() as u64;
                let Mode::Transcode { from, to } = self.mode else {
                    return Err("transcoding without a transcode mode".into());
                };
                transcoding.transcoder = Transcoder::new(from, to)
                    .map_err(|error| format!("cannot transcode: {error}"))?;
                transcoding.input_done = 0;
                let output_length = transcoding.output_length;
                self.send_command(core, conn, output_length, false)?;
                continue;
            }
            if self.phase == Phase::Sending {
                self.frame_transcoded(core, conn)?;
                if self.phase == Phase::AwaitingResponse {
                    return Ok(Pump::Sent);
                }
                if conn.sends_in_flight() >= LANE_SENDS_MAX {
                    return Ok(Pump::WaitSends);
                }
            }
            let Some(transcoding) = self.transcoding.as_deref_mut() else {
                return Err("no transcoder".into());
            };
            if transcoding.input_done >= length {
                if transcoding.finished {
                    return Err("the transcoded data set came out shorter than counted".into());
                }
                transcoding.finished = true;
                transcoding
                    .transcoder
                    .finish(&mut transcoding.pending)
                    .map_err(|error| format!("cannot transcode: {error}"))?;
                continue;
            }
            let chunk = match chunks.take() {
                Ok(chunk) => chunk,
                Err(none) => return Ok(Pump::waiting_for(none)),
            };
            let wanted = (length - transcoding.input_done).min(chunk.capacity() as u64);
            let (_, offset, _) = self.dataset.location.file_range();
            let file = self
                .file
                .ok_or_else(|| "no file while transcoding".to_owned())?;
            let fill = usize::try_from(wanted).unwrap_or(usize::MAX);
            core.read_at(
                file,
                offset + transcoding.input_done,
                chunk,
                std::slice::from_ref(&(0..fill)),
                tag(TagKind::RetrieveRead, self.io),
            )
            .map_err(|error| format!("cannot read the stored file: {error}"))?;
            self.read = Some(InFlightRead {
                fill,
                expected: wanted,
                primes: false,
            });
            return Ok(Pump::Reading);
        }
    }

    /// Pass 2: frames every whole PDU the transcoded bytes allow and sends
    /// what is framed once it is large enough (or the message ends).
    fn frame_transcoded(&mut self, core: &mut Core, conn: &mut Connection) -> Result<(), String> {
        let (Some(transcoding), Some(fragmenter)) =
            (self.transcoding.as_deref_mut(), self.fragmenter.as_mut())
        else {
            return Err("nothing to frame".into());
        };
        let mut ended = false;
        loop {
            let Some(fragment) = self.carried.take().or_else(|| fragmenter.next()) else {
                ended = true;
                break;
            };
            let value_length = fragment.value_length as usize;
            let available = transcoding.pending.len() - transcoding.pending_start;
            if available < value_length {
                self.carried = Some(fragment);
                break;
            }
            let start = transcoding.pending_start;
            transcoding.out.extend_from_slice(&fragment.headers);
            transcoding.out.extend_from_slice(
                transcoding
                    .pending
                    .get(start..start + value_length)
                    .unwrap_or_default(),
            );
            transcoding.pending_start += value_length;
            self.bytes_sent += value_length as u64;
            if transcoding.out.len() >= TRANSCODED_SEND_BYTES {
                let out = std::mem::take(&mut transcoding.out);
                conn.send_bytes(core, out.into());
            }
        }
        transcoding.pending.drain(..transcoding.pending_start);
        transcoding.pending_start = 0;
        if ended {
            if !transcoding.pending.is_empty() {
                return Err("the transcoded data set came out longer than counted".into());
            }
            if !transcoding.out.is_empty() {
                let out = std::mem::take(&mut transcoding.out);
                conn.send_bytes(core, out.into());
            }
            self.sent_all(core);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks laid out one after the other hold every PDU of the message
    /// once, in order, each whole, and their ranges cover the data set
    /// exactly.
    #[test]
    fn layouts_cover_the_data_set_in_order() {
        for (length, pdu, chunk) in [
            (1_000_000u64, 16_384u32, 65_536usize),
            (10, 16_384, 4096),
            (65_536, 16_384, 16_396),
            (300_000, 4_096, 262_144),
        ] {
            let mut fragments = PDataFragmenter::new(3, false, length, pdu).unwrap();
            let mut carried = None;
            let mut storage = vec![0u8; chunk];
            let mut next_value = 0u64;
            let mut chunks = 0;
            while let Some(layout) =
                ChunkLayout::place(&mut storage, 0, &mut carried, &mut fragments)
            {
                chunks += 1;
                assert!(layout.fill <= chunk);
                assert_eq!(layout.first_value_offset, next_value);
                let mut position = 0;
                for range in &layout.ranges {
                    // Each value follows its 12 header bytes.
                    assert_eq!(range.start, position + PDATA_HEADERS_LENGTH);
                    assert_eq!(storage[position], 0x04, "a P-DATA-TF header");
                    position = range.end;
                }
                assert_eq!(position, layout.fill);
                next_value += layout.value_bytes;
            }
            assert_eq!(next_value, length);
            assert!(chunks >= (length as usize).div_ceil(chunk));
        }
    }

    /// A prefix (the queued command) in front of the first chunk is kept;
    /// PDUs follow it, and a PDU that no longer fits goes to the next
    /// chunk whole.
    #[test]
    fn a_prefix_is_kept_in_front_of_the_first_pdus() {
        for (length, pdu, chunk, start) in [
            (100_000u64, 16_384u32, 65_536usize, 200usize),
            (10, 16_384, 4096, 4000),
            (65_536, 16_384, 16_396, 100),
        ] {
            let mut fragments = PDataFragmenter::new(3, false, length, pdu).unwrap();
            let mut carried = None;
            let mut storage = vec![0xAAu8; chunk];
            let first = ChunkLayout::place(&mut storage, start, &mut carried, &mut fragments)
                .expect("the prefix alone is a layout");
            assert!(storage[..start].iter().all(|byte| *byte == 0xAA));
            assert!(first.fill >= start && first.fill <= chunk);
            let mut position = start;
            for range in &first.ranges {
                assert_eq!(range.start, position + PDATA_HEADERS_LENGTH);
                assert_eq!(storage[position], 0x04, "a P-DATA-TF header");
                position = range.end;
            }
            assert_eq!(position, first.fill);
            let mut next_value = first.first_value_offset + first.value_bytes;
            assert_eq!(first.first_value_offset, 0);
            while let Some(layout) =
                ChunkLayout::place(&mut storage, 0, &mut carried, &mut fragments)
            {
                assert_eq!(layout.first_value_offset, next_value);
                next_value += layout.value_bytes;
            }
            assert_eq!(next_value, length);
        }
    }

    /// A first chunk read ahead: whatever PDU length a peer asks, its
    /// first PDU fits after the room kept for the command, and with the
    /// command copied into the end of that room the chunk's bytes from the
    /// command on are the command then whole PDUs.
    #[test]
    fn a_first_chunk_read_ahead_keeps_room_for_the_command() {
        let chunk = 256 * 1024;
        for peer in [0u32, 4_096, 16_384, 65_536, 1 << 20, u32::MAX] {
            let pdu = pdu_length_for(peer, chunk);
            for length in [1u64, 40_960, 524_288] {
                let mut fragments = PDataFragmenter::new(1, false, length, pdu).unwrap();
                let mut carried = None;
                let mut storage = vec![0u8; chunk];
                let layout =
                    ChunkLayout::place(&mut storage, PRIME_RESERVE, &mut carried, &mut fragments)
                        .unwrap();
                assert!(!layout.ranges.is_empty(), "peer {peer}: no PDU fits");
                assert_eq!(layout.first_value_offset, 0);
                let command = [0xC0u8; 300];
                let at = PRIME_RESERVE - command.len();
                storage[at..PRIME_RESERVE].copy_from_slice(&command);
                let mut position = PRIME_RESERVE;
                for range in &layout.ranges {
                    assert_eq!(storage[position], 0x04, "a P-DATA-TF header");
                    assert_eq!(range.start, position + PDATA_HEADERS_LENGTH);
                    position = range.end;
                }
                assert_eq!(position, layout.fill);
                assert!(storage[at..PRIME_RESERVE].iter().all(|byte| *byte == 0xC0));
            }
        }
    }

    #[test]
    fn pdu_length_fits_a_chunk() {
        assert_eq!(pdu_length_for(16_384, 262_144), 16_384);
        assert_eq!(pdu_length_for(0, 262_144), 262_138 - PRIME_RESERVE as u32);
        let pdu = pdu_length_for(0, 65_536);
        // PDU-length counts the PDV header (6), the PDU header (6) is outside
        // it; a first chunk read ahead keeps PRIME_RESERVE in front.
        assert_eq!(pdu as usize + 6 + PRIME_RESERVE, 65_536);
    }
}
