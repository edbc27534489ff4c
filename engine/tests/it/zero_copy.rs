//! Zero-copy receive on the segments layout (docs/design/segments.md,
//! "Zero-copy receive"): the rest of a large data PDV is received straight
//! into the instance's record buffer. A peer written here with the
//! endpoint of `sluice-net` puts exactly the PDUs and PDVs and the TCP
//! cuts each case needs on the wire (large PDVs, PDVs split over many
//! writes, stalls mid-PDV, small PDUs, a peer that goes away mid-PDV);
//! what `sluice serve` stored is exported and compared byte for byte, and
//! its metrics count the receives into record buffers. Since "Receiving
//! exactly" the same peer also writes whole instances at once (as
//! `sluice-loadgen` does), switches between large and small instances,
//! goes away or aborts while the server receives a header exactly, and
//! sends malformed PDUs there.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_net::assoc::{AssociationProposal, Indication, ProposedPresentationContext, Role};
use sluice_net::dimse::{CStoreRq, Command, Priority, Status};
use sluice_net::endpoint::{Endpoint, EndpointConfig, Incoming};
use sluice_net::pdata::{encode_pdata_tf, Pdv};
use sluice_tests::{free_port, part10_dataset, part10_meta_value, part10_transfer_syntax};

use crate::ingest::generated_files_of;
use crate::monitoring::{scrape, value};
use crate::segment_ingest::{data_dir, serve_on, terminate};
use crate::serve::{stored_instances, Served};

const TIMEOUT: Duration = Duration::from_secs(60);

/// One instance to send: its UIDs, transfer syntax and data set.
struct Instance {
    sop_class: String,
    sop_instance: String,
    transfer_syntax: String,
    data_set: Vec<u8>,
}

impl Instance {
    fn of(file: &Path) -> Instance {
        let bytes = std::fs::read(file).unwrap();
        Instance {
            sop_class: part10_meta_value(&bytes, 0x0002, 0x0002),
            sop_instance: part10_meta_value(&bytes, 0x0002, 0x0003),
            transfer_syntax: part10_transfer_syntax(&bytes),
            data_set: part10_dataset(&bytes).to_vec(),
        }
    }
}

/// How a data set goes on the wire.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Bytes of data set per PDV (one PDV per P-DATA-TF PDU).
    pdv: usize,
    /// The TCP writes: cut sizes, cycled.
    cuts: &'static [usize],
    /// A pause after each write of a PDV's header and first bytes (the
    /// server reads them and receives the rest into its buffer).
    stall: Duration,
}

/// An association of the peer.
struct Peer {
    stream: TcpStream,
    endpoint: Endpoint,
    context_id: u8,
    pdu_max: usize,
}

impl Peer {
    /// Associates with one presentation context for `instance`'s class
    /// and transfer syntax.
    fn associate(port: u16, instance: &Instance) -> Peer {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut peer = Peer {
            stream,
            endpoint: Endpoint::new(Role::Requestor, EndpointConfig::default()),
            context_id: 0,
            pdu_max: 0,
        };
        let proposal = AssociationProposal {
            calling_ae_title: "ZEROCOPY".into(),
            called_ae_title: "SLUICE".into(),
            presentation_contexts: vec![ProposedPresentationContext {
                abstract_syntax: instance.sop_class.clone(),
                transfer_syntaxes: vec![instance.transfer_syntax.clone()],
                roles: None,
            }],
            pdu_length_max_receive: 16384,
            implementation_class_uid: "1.2.826.0.1.3680043.10.1234.79.9".into(),
            implementation_version_name: None,
            asynchronous_operations_window: None,
            user_identity: None,
        };
        let now = Instant::now();
        peer.endpoint
            .request_association(Box::new(proposal.to_associate_rq().unwrap()), now)
            .unwrap();
        peer.endpoint.transport_connected(now).unwrap();
        peer.transmit();
        match peer.next() {
            Incoming::Indication(Indication::AssociateAccepted(negotiated)) => {
                peer.context_id = negotiated.presentation_contexts[0].id;
                peer.pdu_max = negotiated.pdu_length_max_peer as usize;
            }
            other => panic!("not accepted: {other:?}"),
        }
        peer
    }

    fn transmit(&mut self) {
        if let Some(bytes) = self.endpoint.poll_transmit() {
            self.stream.write_all(&bytes).unwrap();
        }
    }

    /// The next thing the server sent.
    fn next(&mut self) -> Incoming {
        let mut buffer = vec![0u8; 65536];
        loop {
            let read = self.stream.read(&mut buffer).unwrap();
            assert!(read > 0, "the server closed the association");
            let mut offset = 0;
            if let Some(incoming) =
                self.endpoint
                    .receive(&buffer[..read], &mut offset, Instant::now())
            {
                assert_eq!(offset, read, "one answer at a time");
                return incoming;
            }
        }
    }

    /// Sends the C-STORE's command, then its data set as `plan` frames and
    /// cuts it, stopping after `stop_after` bytes of the wire when given.
    /// Queues the C-STORE-RQ of `instance` in the endpoint; its data set
    /// is framed by the caller, not by the endpoint's fragmenter.
    fn queue_store_rq(&mut self, instance: &Instance) {
        let message_id = self.endpoint.next_message_id();
        let command = Command::CStoreRq(CStoreRq {
            message_id,
            priority: Priority::Medium,
            affected_sop_class_uid: instance.sop_class.clone(),
            affected_sop_instance_uid: instance.sop_instance.clone(),
            move_originator: None,
        });
        let _fragmenter = self
            .endpoint
            .send_command_for_data_set(self.context_id, &command, instance.data_set.len() as u64)
            .unwrap();
    }

    /// One P-DATA-TF PDU holding one PDV of `chunk`, the data set's last
    /// fragment when `last`.
    fn data_pdu(&self, chunk: &[u8], last: bool) -> Vec<u8> {
        let mut pdu = Vec::with_capacity(chunk.len() + 12);
        pdu.push(0x04);
        pdu.push(0);
        pdu.extend_from_slice(&(chunk.len() as u32 + 6).to_be_bytes());
        pdu.extend_from_slice(&(chunk.len() as u32 + 2).to_be_bytes());
        pdu.push(self.context_id);
        pdu.push(if last { 0x02 } else { 0x00 });
        pdu.extend_from_slice(chunk);
        pdu
    }

    fn send_store(&mut self, instance: &Instance, plan: Plan, stop_after: Option<usize>) {
        self.queue_store_rq(instance);
        self.transmit();
        assert!(
            plan.pdv + 6 <= self.pdu_max,
            "{plan:?} past {}",
            self.pdu_max
        );
        let chunks: Vec<&[u8]> = instance.data_set.chunks(plan.pdv).collect();
        let mut sent = 0usize;
        let mut cuts = plan.cuts.iter().cycle();
        for (n, chunk) in chunks.iter().enumerate() {
            let pdu = self.data_pdu(chunk, n + 1 == chunks.len());
            // The header and a little of the value, then a pause.
            let head = 12 + chunk.len().min(1000);
            self.stream.write_all(&pdu[..head]).unwrap();
            sent += head;
            std::thread::sleep(plan.stall);
            let mut at = head;
            while at < pdu.len() {
                let end = (at + cuts.next().unwrap()).min(pdu.len());
                if let Some(stop) = stop_after.filter(|&stop| sent + (end - at) >= stop) {
                    let end = at + stop.saturating_sub(sent);
                    self.stream.write_all(&pdu[at..end]).unwrap();
                    return;
                }
                self.stream.write_all(&pdu[at..end]).unwrap();
                sent += end - at;
                at = end;
            }
        }
    }

    /// The C-STORE-RSP's status.
    fn status(&mut self) -> Status {
        match self.next() {
            Incoming::Command {
                command: Command::CStoreRsp(rsp),
                ..
            } => rsp.status,
            other => panic!("not a C-STORE-RSP: {other:?}"),
        }
    }

    fn store(&mut self, instance: &Instance, plan: Plan) -> Status {
        self.send_store(instance, plan, None);
        self.status()
    }

    /// Sends the C-STORE's command and its data set in PDVs of `pdv`
    /// bytes (one a PDU) in one write, as a sender far ahead of the server
    /// does, and returns the answer's status.
    fn store_at_once(&mut self, instance: &Instance, pdv: usize) -> Status {
        self.queue_store_rq(instance);
        let mut wire = self.endpoint.poll_transmit().unwrap();
        let chunks: Vec<&[u8]> = instance.data_set.chunks(pdv).collect();
        for (n, chunk) in chunks.iter().enumerate() {
            wire.extend_from_slice(&self.data_pdu(chunk, n + 1 == chunks.len()));
        }
        self.stream.write_all(&wire).unwrap();
        self.status()
    }

    /// P-DATA-TF PDUs carrying `data_set` in PDVs of `sizes` bytes
    /// (cycled; the last PDV takes what is left, flagged last), `per_pdu`
    /// PDVs a PDU, each PDU within the server's Maximum Length.
    fn framed(&self, data_set: &[u8], sizes: &[usize], per_pdu: usize) -> Vec<u8> {
        let mut pdvs: Vec<&[u8]> = Vec::new();
        let mut at = 0;
        for size in sizes.iter().cycle() {
            let end = (at + size).min(data_set.len());
            pdvs.push(&data_set[at..end]);
            at = end;
            if at == data_set.len() {
                break;
            }
        }
        let count = pdvs.len();
        let mut wire = Vec::new();
        for (n, group) in pdvs.chunks(per_pdu).enumerate() {
            let items: Vec<Pdv<'_>> = group
                .iter()
                .enumerate()
                .map(|(i, bytes)| Pdv {
                    presentation_context_id: self.context_id,
                    is_command: false,
                    is_last: n * per_pdu + i + 1 == count,
                    bytes,
                })
                .collect();
            let start = wire.len();
            encode_pdata_tf(&items, &mut wire).unwrap();
            assert!(
                wire.len() - start - 6 <= self.pdu_max,
                "{sizes:?} x {per_pdu} past {}",
                self.pdu_max
            );
        }
        wire
    }

    /// Sends the C-STORE's command and then `wire` (its data set's PDUs)
    /// in writes of `cuts` bytes (cycled; one write when empty), pausing
    /// `stall` after each, and returns the answer's status.
    fn store_framed(
        &mut self,
        instance: &Instance,
        wire: &[u8],
        cuts: &[usize],
        stall: Duration,
    ) -> Status {
        self.queue_store_rq(instance);
        let mut all = self.endpoint.poll_transmit().unwrap();
        all.extend_from_slice(wire);
        if cuts.is_empty() {
            self.stream.write_all(&all).unwrap();
        } else {
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                let end = (at + cut).min(all.len());
                self.stream.write_all(&all[at..end]).unwrap();
                at = end;
                if at == all.len() {
                    break;
                }
                std::thread::sleep(stall);
            }
        }
        self.status()
    }

    /// Writes `bytes` as they are, then reads what the server sends until
    /// it closes.
    fn raw(mut self, bytes: &[u8]) -> Vec<u8> {
        self.stream.write_all(bytes).unwrap();
        let mut answer = Vec::new();
        self.stream.read_to_end(&mut answer).unwrap();
        answer
    }

    fn release(mut self) {
        self.endpoint.release(Instant::now()).unwrap();
        self.transmit();
        let _ = self.next();
    }
}

fn serve(data: &Path, metrics_port: u16) -> crate::serve::Served {
    let metrics_port = metrics_port.to_string();
    serve_on(
        data,
        &[
            "--storage-layout",
            "segments",
            "--cores",
            "1",
            "--metrics-port",
            metrics_port.as_str(),
        ],
    )
}

fn instances(dir: &Path, count: usize) -> Vec<Instance> {
    // 512 x 512 16-bit pixels: a 512 KiB CT.
    let files: Vec<PathBuf> = generated_files_of(dir, count, 512);
    files
        .iter()
        .map(|file| Instance::of(file.as_path()))
        .collect()
}

fn received_into_record(metrics_port: u16) -> (f64, f64) {
    two_counters(
        metrics_port,
        "sluice_receives_into_record_total",
        "sluice_bytes_received_into_record_total",
    )
}

/// Two counters of the server's metrics.
fn two_counters(metrics_port: u16, first: &str, second: &str) -> (f64, f64) {
    let samples = scrape(metrics_port);
    (value(&samples, first, &[]), value(&samples, second, &[]))
}

/// 512 KiB instances in 256 KiB PDVs (the default Maximum Length): each
/// PDV's rest after its first bytes is received straight into the record
/// buffer (counted), with PDVs cut into odd TCP writes and stalls, and
/// small PDVs (16 KiB, as DCMTK sends) take the copy as before; every
/// instance is stored byte-exact.
#[test]
fn large_pdvs_are_received_into_the_record_buffer_byte_exact() {
    let sent = tempfile::tempdir().unwrap();
    let instances = instances(sent.path(), 4);
    let (_shared, data) = data_dir();
    let metrics_port = free_port();
    let served = serve(&data, metrics_port);
    let mut peer = Peer::associate(served.port, &instances[0]);
    let max = peer.pdu_max - 6;
    assert!(
        max >= 256 * 1024 - 6,
        "the default Maximum Length is 256 KiB"
    );

    // One 512 KiB instance, in three PDVs of the largest size.
    let whole = Plan {
        pdv: max,
        cuts: &[1 << 20],
        stall: Duration::from_millis(100),
    };
    assert_eq!(peer.store(&instances[0], whole), Status::SUCCESS);
    let (receives, bytes) = received_into_record(metrics_port);
    assert!(
        receives >= 2.0,
        "{receives} receives into the record buffer"
    );
    assert!(
        bytes >= 400_000.0,
        "{bytes} bytes received into the record buffer"
    );

    // PDVs cut into odd writes, the server catching up between them.
    let odd = Plan {
        pdv: 100_003,
        cuts: &[1, 13, 4096, 70_001, 5, 9_999],
        stall: Duration::from_millis(30),
    };
    assert_eq!(peer.store(&instances[1], odd), Status::SUCCESS);

    // No pause: whatever the pooled receive took first is copied, the
    // rest lands in place.
    let fast = Plan {
        pdv: max,
        cuts: &[65_536],
        stall: Duration::ZERO,
    };
    assert_eq!(peer.store(&instances[2], fast), Status::SUCCESS);

    // Small PDVs: below the threshold, copied as before.
    let (before, _) = received_into_record(metrics_port);
    let small = Plan {
        pdv: 16_372,
        cuts: &[16_384],
        stall: Duration::from_millis(1),
    };
    assert_eq!(peer.store(&instances[3], small), Status::SUCCESS);
    let (after, _) = received_into_record(metrics_port);
    assert_eq!(before, after, "16 KiB PDVs received into the record buffer");
    peer.release();

    terminate(served);
    assert_stored_byte_exact(&data, &instances);
}

/// A peer that stops mid-PDV for longer than a receive takes and then goes
/// on is stored byte-exact; a peer that goes away mid-PDV (its receive
/// into the record buffer in flight) leaves nothing stored and the core
/// serving the next association.
#[test]
fn a_peer_stalled_or_gone_mid_pdv_is_stored_or_dropped_cleanly() {
    let sent = tempfile::tempdir().unwrap();
    let instances = instances(sent.path(), 3);
    let (_shared, data) = data_dir();
    let metrics_port = free_port();
    let served = serve(&data, metrics_port);

    let mut peer = Peer::associate(served.port, &instances[0]);
    let stalled = Plan {
        pdv: peer.pdu_max - 6,
        cuts: &[30_000],
        stall: Duration::from_millis(1500),
    };
    assert_eq!(peer.store(&instances[0], stalled), Status::SUCCESS);
    peer.release();

    // Gone after 300,000 bytes: inside the second PDV, whose rest the
    // server is receiving into the record buffer.
    let mut gone = Peer::associate(served.port, &instances[1]);
    let plan = Plan {
        pdv: gone.pdu_max - 6,
        cuts: &[20_000],
        stall: Duration::from_millis(100),
    };
    gone.send_store(&instances[1], plan, Some(300_000));
    std::thread::sleep(Duration::from_millis(200));
    drop(gone);

    let mut next = Peer::associate(served.port, &instances[2]);
    let plan = Plan {
        pdv: next.pdu_max - 6,
        cuts: &[1 << 20],
        stall: Duration::from_millis(50),
    };
    assert_eq!(next.store(&instances[2], plan), Status::SUCCESS);
    next.release();
    let (receives, _) = received_into_record(metrics_port);
    assert!(receives >= 3.0, "{receives} receives into record buffers");

    let log = terminate(served);
    assert!(log.contains("ZEROCOPY"), "{log}");
    let stored = stored_instances(&data);
    assert_eq!(stored.len(), 2, "{:?}", stored.keys());
    for instance in [&instances[0], &instances[2]] {
        assert!(part10_dataset(&stored[&instance.sop_instance]) == instance.data_set);
    }
    assert!(!stored.contains_key(&instances[1].sop_instance));
}

/// Directories `names` made in `dir`.
fn dirs_in<const N: usize>(dir: &Path, names: [&str; N]) -> [PathBuf; N] {
    names.map(|name| {
        let path = dir.join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    })
}

/// The data-set bytes of `instances`.
fn data_set_bytes(instances: &[Instance]) -> f64 {
    instances
        .iter()
        .map(|instance| instance.data_set.len() as f64)
        .sum()
}

fn assert_stored_byte_exact(data: &Path, instances: &[Instance]) {
    let stored = stored_instances(data);
    assert_eq!(stored.len(), instances.len(), "{:?}", stored.keys());
    for instance in instances {
        assert!(
            part10_dataset(&stored[&instance.sop_instance]) == instance.data_set,
            "{} not byte-exact",
            instance.sop_instance
        );
    }
}

/// A next association stores `instance` whole at once and releases;
/// then the server is stopped: its log, and its `association ended`
/// lines of this file's peer.
fn next_served_then_ended(served: Served, instance: &Instance) -> (String, Vec<String>) {
    let mut next = Peer::associate(served.port, instance);
    let pdv = next.pdu_max - 6;
    assert_eq!(next.store_at_once(instance, pdv), Status::SUCCESS);
    next.release();
    let log = terminate(served);
    let ended = log
        .lines()
        .filter(|line| line.contains("association ended") && line.contains("ZEROCOPY"))
        .map(str::to_owned)
        .collect();
    (log, ended)
}

/// What the server sent on the exact path is one A-ABORT, byte for byte
/// what it sent on the pooled path.
fn assert_one_same_abort(case: usize, exact: &[u8], pooled: &[u8]) {
    assert_eq!(exact.first(), Some(&0x07), "case {case}: {exact:?}");
    assert_eq!(exact.len(), 10, "case {case}: {exact:?}");
    assert_eq!(exact, pooled, "case {case}");
}

/// A peer that writes each 512 KiB instance whole at once, in 256 KiB
/// PDVs, as `sluice-loadgen` does: the first instance arrives through the
/// pooled receive (and shows the association sends large PDVs), and from
/// the second on the server receives the headers and the command exactly,
/// so nearly every data-set byte lands straight in the record buffer
/// (before "Receiving exactly" the pooled receive took whole instances
/// first and none did); every instance byte-exact.
#[test]
fn instances_written_whole_at_once_land_in_the_record_buffer() {
    let sent = tempfile::tempdir().unwrap();
    let instances = instances(sent.path(), 6);
    let (_shared, data) = data_dir();
    let metrics_port = free_port();
    let served = serve(&data, metrics_port);
    let mut peer = Peer::associate(served.port, &instances[0]);
    let pdv = peer.pdu_max - 6;
    assert_eq!(peer.store_at_once(&instances[0], pdv), Status::SUCCESS);
    let (receives_first, bytes_first) = received_into_record(metrics_port);
    for instance in &instances[1..] {
        assert_eq!(peer.store_at_once(instance, pdv), Status::SUCCESS);
    }
    let (receives, bytes) = received_into_record(metrics_port);
    peer.release();
    let later = data_set_bytes(&instances[1..]);
    assert!(
        bytes - bytes_first >= 0.95 * later,
        "{} of {later} data-set bytes received into the record buffer",
        bytes - bytes_first
    );
    // Two large PDVs an instance, each one receive.
    assert!(receives - receives_first >= 10.0, "{receives} receives");
    // Every record written from a buffer registered with the core's ring
    // (`IORING_OP_WRITE_FIXED`), the buffers reused.
    let (registered, plain) = record_writes(metrics_port);
    assert_eq!((registered, plain), (instances.len() as f64, 0.0));
    terminate(served);
    assert_stored_byte_exact(&data, &instances);
}

/// Record writes from registered buffers, and plain ones.
fn record_writes(metrics_port: u16) -> (f64, f64) {
    two_counters(
        metrics_port,
        "sluice_record_writes_registered_total",
        "sluice_record_writes_plain_total",
    )
}

/// Whether this process has `CAP_IPC_LOCK` (bit 14) in its effective set
/// (`CapEff` of /proc/self/status).
fn has_ipc_lock() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap();
    effective & (1 << 14) != 0
}

/// Under a locked-memory limit too small for a record buffer, and without
/// `CAP_IPC_LOCK` (which exempts root from it), the kernel refuses to
/// register the record buffers: the server says so once at info (the
/// limit and how to raise it), writes every record plain, and stores every
/// instance byte-exact, as before registered buffers.
#[test]
fn record_buffers_refused_by_the_memlock_limit_are_written_plain() {
    let sent = tempfile::tempdir().unwrap();
    let instances = instances(sent.path(), 4);
    let (_shared, data) = data_dir();
    let metrics_port = free_port();
    let metrics = metrics_port.to_string();
    // 512 KiB: the rings and the receive pool's buffer ring fit (the
    // backend stays io_uring), a 640 KiB record buffer does not.
    // Dropping the capability takes CAP_SETPCAP: only where the tests run
    // with CAP_IPC_LOCK (root) is there one to drop.
    let drop_ipc_lock: &[&str] = if has_ipc_lock() {
        &[
            "setpriv",
            "--bounding-set=-ipc_lock",
            "--inh-caps=-ipc_lock",
            "--",
        ]
    } else {
        &[]
    };
    let wrapper = [drop_ipc_lock, &["prlimit", "--memlock=524288:524288", "--"]].concat();
    let served = crate::serve::Served::start_under(
        &wrapper,
        tempfile::tempdir().unwrap(),
        data.clone(),
        "uring",
        &[
            "--storage-layout",
            "segments",
            "--cores",
            "1",
            "--metrics-port",
            metrics.as_str(),
        ],
    );
    let mut peer = Peer::associate(served.port, &instances[0]);
    let pdv = peer.pdu_max - 6;
    for instance in &instances {
        assert_eq!(peer.store_at_once(instance, pdv), Status::SUCCESS);
    }
    peer.release();
    let (registered, plain) = record_writes(metrics_port);
    assert_eq!((registered, plain), (0.0, instances.len() as f64));
    let log = terminate(served);
    assert!(log.contains("backend=io_uring"), "{log}");
    assert_eq!(
        log.matches("cannot register a record buffer").count(),
        1,
        "said once: {log}"
    );
    assert!(log.contains("memlock_soft_bytes=524288"), "{log}");
    assert_stored_byte_exact(&data, &instances);
}

/// One association switching between 512 KiB instances in 256 KiB PDVs
/// and 40 KB instances in one PDV (and 16 KiB PDVs): a small instance
/// right after a large one is received exactly (its one PDV, the data
/// set's last, into the record buffer but for its first bytes, which come
/// with the command), and then the association sends no
/// large PDV, so the next small one goes through the pooled receive with
/// nothing received into a record; the large ones land in place again
/// from the second after the switch; all byte-exact.
#[test]
fn an_association_switching_between_large_and_small_instances() {
    let sent = tempfile::tempdir().unwrap();
    let [large_dir, small_dir] = dirs_in(sent.path(), ["large", "small"]);
    let large = instances(&large_dir, 4);
    let small_files = generated_files_of(&small_dir, 3, 140);
    let small: Vec<Instance> = small_files
        .iter()
        .map(|file| Instance::of(file.as_path()))
        .collect();
    let (_shared, data) = data_dir();
    let metrics_port = free_port();
    let served = serve(&data, metrics_port);
    let mut peer = Peer::associate(served.port, &large[0]);
    let pdv = peer.pdu_max - 6;
    let counted = || received_into_record(metrics_port).1;

    assert_eq!(peer.store_at_once(&large[0], pdv), Status::SUCCESS);
    assert_eq!(peer.store_at_once(&large[1], pdv), Status::SUCCESS);
    let before = counted();
    assert_eq!(peer.store_at_once(&small[0], pdv), Status::SUCCESS);
    let after_first_small = counted();
    // Its command and first bytes arrive with it into the connection's
    // 8 KiB buffer (copied), the rest in place.
    let in_place = after_first_small - before;
    assert!(
        in_place >= small[0].data_set.len() as f64 - 8192.0 && in_place > 0.0,
        "the small instance after a large one, in place: {in_place} of {}",
        small[0].data_set.len()
    );
    assert_eq!(peer.store_at_once(&small[1], pdv), Status::SUCCESS);
    assert_eq!(
        counted(),
        after_first_small,
        "a small instance after a small one"
    );
    let small_pdvs = Plan {
        pdv: 16_372,
        cuts: &[16_384],
        stall: Duration::ZERO,
    };
    assert_eq!(peer.store(&small[2], small_pdvs), Status::SUCCESS);
    assert_eq!(counted(), after_first_small, "16 KiB PDVs");
    assert_eq!(peer.store_at_once(&large[2], pdv), Status::SUCCESS);
    let before = counted();
    assert_eq!(peer.store_at_once(&large[3], pdv), Status::SUCCESS);
    assert!(
        counted() - before >= 0.95 * large[3].data_set.len() as f64,
        "the large instance after the switch back"
    );
    peer.release();
    terminate(served);
    let mut all = large;
    all.extend(small);
    assert_stored_byte_exact(&data, &all);
}

/// While the server waits for the next PDU's header exactly (after a large
/// instance), a peer that sends an A-ABORT ends its association as an
/// abort, and one that sends three bytes of a header and goes away ends
/// its association with nothing stored for it; the core serves the next
/// association.
#[test]
fn a_peer_that_aborts_or_goes_away_during_an_exact_header_receive() {
    let sent = tempfile::tempdir().unwrap();
    let instances = instances(sent.path(), 3);
    let (_shared, data) = data_dir();
    let metrics_port = free_port();
    let served = serve(&data, metrics_port);
    let mut aborting = Peer::associate(served.port, &instances[0]);
    let pdv = aborting.pdu_max - 6;
    assert_eq!(aborting.store_at_once(&instances[0], pdv), Status::SUCCESS);
    std::thread::sleep(Duration::from_millis(100));
    // A-ABORT, service user, no reason: the server closes, sending nothing.
    let answer = aborting.raw(&[0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0]);
    assert!(answer.is_empty(), "{answer:?}");

    let mut gone = Peer::associate(served.port, &instances[1]);
    assert_eq!(gone.store_at_once(&instances[1], pdv), Status::SUCCESS);
    std::thread::sleep(Duration::from_millis(100));
    gone.stream.write_all(&[0x04, 0, 0]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(gone);

    let (log, ended) = next_served_then_ended(served, &instances[2]);
    assert_eq!(ended.len(), 3, "{log}");
    assert!(ended[0].contains("aborted: PeerServiceUser"), "{log}");
    assert!(ended[1].contains("aborted: TransportClosed"), "{log}");
    assert!(ended[2].contains("released"), "{log}");
    assert_stored_byte_exact(&data, &instances);
}

/// Malformed PDUs received exactly (after a large instance, the server
/// waiting for the next PDU's header and PDV item header) get the same
/// answer, byte for byte, as on an association that never left the
/// pooled receive: one A-ABORT, then the close.
#[test]
fn a_malformed_pdu_received_exactly_is_aborted_as_before() {
    let sent = tempfile::tempdir().unwrap();
    let instances = instances(sent.path(), 2);
    let (_shared, data) = data_dir();
    let metrics_port = free_port();
    let served = serve(&data, metrics_port);
    let malformed: [&[u8]; 3] = [
        // An unknown PDU type.
        &[0x55, 0, 0, 0, 0, 4, 1, 2, 3, 4],
        // A P-DATA-TF whose PDV item runs past the PDU.
        &[0x04, 0, 0, 0, 0, 10, 0, 0, 0, 50, 1, 0, 9, 9, 9, 9],
        // A P-DATA-TF longer than the Maximum Length.
        &[0x04, 0, 0x7f, 0, 0, 0, 0, 0, 0, 8, 1, 0],
    ];
    for (case, bytes) in malformed.iter().enumerate() {
        let mut exact = Peer::associate(served.port, &instances[0]);
        let pdv = exact.pdu_max - 6;
        assert_eq!(exact.store_at_once(&instances[0], pdv), Status::SUCCESS);
        std::thread::sleep(Duration::from_millis(100));
        let answer_exact = exact.raw(bytes);
        let pooled = Peer::associate(served.port, &instances[1]);
        assert_one_same_abort(case, &answer_exact, &pooled.raw(bytes));
    }
    terminate(served);
}

/// `sluice serve` on segments with `extra` flags on `backend`, its
/// metrics on `metrics_port`.
fn serve_with(data: &Path, backend: &str, metrics_port: u16, extra: &[&str]) -> Served {
    let metrics_port = metrics_port.to_string();
    let mut args = vec![
        "--storage-layout",
        "segments",
        "--cores",
        "1",
        "--metrics-port",
        metrics_port.as_str(),
    ];
    args.extend_from_slice(extra);
    Served::start_in(
        tempfile::tempdir().unwrap(),
        data.to_owned(),
        backend,
        &args,
    )
}

/// PDVs that share PDUs (so an item header, not a PDU header, follows a
/// value inside its PDU), PDVs around the 64 KiB threshold and the 8 KiB
/// connection buffer, a 1-byte PDV between two large ones, and TCP writes
/// cut through headers and values: the server receives each large value
/// with the headers after it when the PDV does not end its data set
/// (docs/design/ingest.md, "One receive a large PDV"), and every instance
/// is stored byte-exact, on io_uring (most bytes in place) and on the
/// portable backend (no receive into a buffer: copied).
#[test]
fn pdvs_sharing_pdus_and_cut_anywhere_are_stored_byte_exact() {
    // (PDV sizes, PDVs a PDU, TCP write sizes: empty for one write)
    let cases: [(&[usize], usize, &[usize]); 6] = [
        (&[100_000], 2, &[]),
        (&[120_000, 1, 120_000], 3, &[]),
        (&[65_536, 8_186, 65_535, 8_192, 70_000], 1, &[]),
        (&[262_138], 1, &[5, 1, 6, 70_001, 12, 11, 100_003, 2]),
        (&[100_000, 50_000], 2, &[13, 3, 65_536, 7, 100_000]),
        (&[90_000, 7, 90_000, 70_000], 2, &[]),
    ];
    for backend in ["uring", "portable"] {
        let sent = tempfile::tempdir().unwrap();
        let instances = instances(sent.path(), cases.len() + 1);
        let (_shared, data) = data_dir();
        let metrics_port = free_port();
        let served = serve_with(&data, backend, metrics_port, &[]);
        let mut peer = Peer::associate(served.port, &instances[0]);
        let pdv = peer.pdu_max - 6;
        // The first instance shows the server the association's large PDVs.
        assert_eq!(peer.store_at_once(&instances[0], pdv), Status::SUCCESS);
        let (_, before) = received_into_record(metrics_port);
        for (n, (sizes, per_pdu, cuts)) in cases.iter().enumerate() {
            let instance = &instances[n + 1];
            let wire = peer.framed(&instance.data_set, sizes, *per_pdu);
            let status = peer.store_framed(instance, &wire, cuts, Duration::from_millis(2));
            assert_eq!(status, Status::SUCCESS, "{backend} case {n}");
        }
        let (_, after) = received_into_record(metrics_port);
        let in_place = after - before;
        let later = data_set_bytes(&instances[1..]);
        if backend == "uring" {
            assert!(
                in_place >= 0.5 * later,
                "{in_place} of {later} data-set bytes in place"
            );
        } else {
            assert_eq!(
                in_place, 0.0,
                "the portable backend receives into no buffer"
            );
        }
        peer.release();
        terminate(served);
        assert_stored_byte_exact(&data, &instances);
    }
}

/// A peer that sends an A-ABORT right after a data PDV that does not end
/// its data set (received into the record buffer; a receive that also
/// asked for the 12 header bytes after it would wait for more than the
/// A-ABORT's 10: docs/design/ingest.md, "one receive a large PDV", not
/// kept) and closes: the association ends as the peer's abort, nothing is
/// stored for it, and
/// the next association is served. A PDV item running past its PDU, or
/// a PDU over the Maximum Length, in that place: the same A-ABORT as on
/// the pooled receive.
#[test]
fn a_peer_that_aborts_or_errs_after_a_large_pdv_is_answered_as_before() {
    let sent = tempfile::tempdir().unwrap();
    let [stored_dir, partial_dir] = dirs_in(sent.path(), ["stored", "partial"]);
    let stored = instances(&stored_dir, 4);
    let partial = &instances(&partial_dir, 1)[0];
    let (_shared, data) = data_dir();
    let metrics_port = free_port();
    let served = serve(&data, metrics_port);
    let abort = [0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0];

    // The command and the first PDV (not the last) of `partial`'s data
    // set, then `tail`, written after a pause (the server waiting for the
    // headers after the value).
    let first_pdv = |peer: &mut Peer| {
        let pdv = peer.pdu_max - 6;
        peer.queue_store_rq(partial);
        let mut wire = peer.endpoint.poll_transmit().unwrap();
        wire.extend_from_slice(&peer.data_pdu(&partial.data_set[..pdv], false));
        peer.stream.write_all(&wire).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    };

    let mut aborting = Peer::associate(served.port, &stored[0]);
    let pdv = aborting.pdu_max - 6;
    assert_eq!(aborting.store_at_once(&stored[0], pdv), Status::SUCCESS);
    first_pdv(&mut aborting);
    aborting.stream.write_all(&abort).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(aborting);

    let malformed: [&[u8]; 2] = [
        // A PDV item running past its PDU.
        &[0x04, 0, 0, 0, 0, 10, 0, 0, 0, 50, 1, 0, 9, 9, 9, 9],
        // A P-DATA-TF longer than the Maximum Length.
        &[0x04, 0, 0x7f, 0, 0, 0, 0, 0, 0, 8, 1, 0],
    ];
    for (case, bytes) in malformed.iter().enumerate() {
        let mut exact = Peer::associate(served.port, &stored[0]);
        assert_eq!(exact.store_at_once(&stored[case + 1], pdv), Status::SUCCESS);
        first_pdv(&mut exact);
        let answer_exact = exact.raw(bytes);
        let mut pooled = Peer::associate(served.port, &stored[0]);
        first_pdv(&mut pooled);
        assert_one_same_abort(case, &answer_exact, &pooled.raw(bytes));
    }

    let (log, ended) = next_served_then_ended(served, &stored[3]);
    assert_eq!(ended.len(), 6, "{log}");
    assert!(ended[0].contains("aborted: PeerServiceUser"), "{log}");
    assert!(ended[5].contains("released"), "{log}");
    assert_stored_byte_exact(&data, &stored);
}

/// DCMTK storescu at several send PDU sizes (`--max-send-pdu` 4096, 16384
/// and 131072, the largest it takes, and without: up to the server's 256
/// KiB) and pynetdicom under a server Maximum Length of 16384 and 1 MiB
/// (it sends PDVs of the receiver's maximum): every instance stored
/// byte-exact; PDVs of 16 KiB and less never go into the record buffer,
/// and from 128 KiB on most of the data set does.
#[test]
fn dcmtk_and_pynetdicom_at_several_pdu_sizes_are_stored_byte_exact() {
    let sent = tempfile::tempdir().unwrap();
    let (_shared, data) = data_dir();
    let metrics_port = free_port();
    let served = serve_with(&data, "uring", metrics_port, &[]);
    let mut all = Vec::new();
    for (n, max_send) in [Some("4096"), Some("16384"), Some("131072"), None]
        .into_iter()
        .enumerate()
    {
        let dir = sent.path().join(format!("dcmtk-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let files = generated_files_of(&dir, 3, 512);
        let (_, before) = received_into_record(metrics_port);
        let mut command = std::process::Command::new(sluice_tests::dcmtk("storescu"));
        command.args(["-aec", "SLUICE", "-aet", "ZEROCOPY"]);
        if let Some(max_send) = max_send {
            command.args(["--max-send-pdu", max_send]);
        }
        command.args(["127.0.0.1", &served.port.to_string()]);
        command.args(&files);
        let output = sluice_tests::run(&mut command, TIMEOUT);
        assert!(output.status.success(), "storescu {max_send:?}: {output:?}");
        let (_, after) = received_into_record(metrics_port);
        let instances: Vec<Instance> = files.iter().map(|file| Instance::of(file)).collect();
        let bytes = data_set_bytes(&instances);
        match max_send {
            Some("4096") | Some("16384") => {
                assert_eq!(after, before, "storescu {max_send:?}: in place")
            }
            _ => assert!(
                after - before >= 0.5 * bytes,
                "storescu {max_send:?}: {} of {bytes} in place",
                after - before
            ),
        }
        all.extend(instances);
    }
    terminate(served);
    assert_stored_byte_exact(&data, &all);

    for max_pdu in ["16384", "1048576"] {
        let (_shared, data) = data_dir();
        let metrics_port = free_port();
        let served = serve_with(&data, "uring", metrics_port, &["--max-pdu-length", max_pdu]);
        let dir = sent.path().join(format!("pynetdicom-{max_pdu}"));
        std::fs::create_dir_all(&dir).unwrap();
        let files = generated_files_of(&dir, 3, 512);
        let out = crate::segment_ingest::pynetdicom_store(served.port, &files);
        assert!(out.contains("\"statuses\": [0, 0, 0]"), "{max_pdu}: {out}");
        let (_, in_place) = received_into_record(metrics_port);
        let instances: Vec<Instance> = files.iter().map(|file| Instance::of(file)).collect();
        if max_pdu == "16384" {
            assert_eq!(in_place, 0.0, "pynetdicom, 16 KiB PDUs: in place");
        } else {
            assert!(
                in_place >= 0.5 * data_set_bytes(&instances),
                "pynetdicom, 1 MiB PDUs: {in_place} in place"
            );
        }
        terminate(served);
        assert_stored_byte_exact(&data, &instances);
    }
}
