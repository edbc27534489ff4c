//! The declaration of every configuration option, once: TOML key (section
//! and name), flag, Rust type, default, kind (how it is read and checked)
//! and documentation. Everything else (the `Config` structs, the flags, the
//! checks, `docs/configuration.md`, `docs/sluice.example.toml`) is derived
//! from this table by `config_options!`.
//!
//! Adding an option: add one entry here, then regenerate the docs with
//! `SLUICE_REGENERATE_DOCS=1 cargo test -p sluice-engine --test it config`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use super::error::{ConfigError, Origin};
use super::kinds::{
    AccessRuleKind, AeSelectionKind, ByteSizeKind, CoresKind, DurationKind, EnumKind, IntKind,
    Kind, ListKind, MapKind, OptionalKind, PathKind, SpannedError, TextKind, TimeUnit, TomlValue,
    TransferSyntaxKind,
};
use super::values::ZeroFill;
use super::values::{
    AccessRule, AeSelection, AeTitle, CatalogueAddress, CheckMode, Cores, DuplicatePolicy,
    EvictPolicy, FileKeysOnFind, FindScope, IoBackend, LogFormat, LogLevel, NodeName,
    ObjectEndpoint, ObjectName, PersonNameMatching, PlainListener, PublishMode, RemoteAddress,
    ReportDelivery, RetrieveSend, SopClassSelection, StorageLayout, SyslogAddress,
    TransferSyntaxSelection, Uid, UidConflictPolicy,
};
use super::{OptionInfo, SectionInfo};

/// Bytes in a KiB, MiB, GiB, TiB.
const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Picked by benchmark (docs/design/segments.md, "A larger PDU"): 256 KiB
/// PDUs cost the server about a tenth less CPU per GB at 512 KB than the
/// seed's fixed 16384, which peers may still use (they send at most this).
const PDU_LENGTH_DEFAULT: u32 = 262_144;
const PDU_LENGTH_MIN: u64 = 4 * KIB;
const PDU_LENGTH_MAX: u64 = 16 * MIB;
const _: () = assert!(PDU_LENGTH_MIN <= PDU_LENGTH_DEFAULT as u64);
const _: () = assert!(PDU_LENGTH_DEFAULT as u64 <= PDU_LENGTH_MAX);
const _: () = assert!(PDU_LENGTH_MAX <= u32::MAX as u64);

/// Association limits: the per-AE default must fit under the global one
/// (the same relation `check_relations` enforces on configured values).
const ASSOCIATIONS_DEFAULT: u32 = 4096;
const ASSOCIATIONS_PER_CALLING_AE_DEFAULT: u32 = 1024;
const ASSOCIATIONS_MAX: u32 = 65_536;
const _: () = assert!(ASSOCIATIONS_PER_CALLING_AE_DEFAULT <= ASSOCIATIONS_DEFAULT);
const _: () = assert!(ASSOCIATIONS_DEFAULT <= ASSOCIATIONS_MAX);

/// Commitment retry: the cap on the back-off must not be below the first
/// delay.
const REPORT_RETRY_DELAY_DEFAULT_S: u64 = 60;
const REPORT_RETRY_BACKOFF_CAP_DEFAULT_S: u64 = 3600;
const _: () = assert!(REPORT_RETRY_DELAY_DEFAULT_S <= REPORT_RETRY_BACKOFF_CAP_DEFAULT_S);

/// Limits on list and table options, so a runaway file cannot make Sluice
/// allocate without bound.
const AE_LIST_LENGTH_MAX: usize = 4096;
const UID_LIST_LENGTH_MAX: usize = 1024;
const ACCESS_RULES_MAX: usize = 4096;

fn object_name(text: &str) -> ObjectName {
    text.parse()
        .expect("built-in object store name default is valid (checked by a unit test)")
}

fn ae_title(text: &str) -> AeTitle {
    text.parse()
        .expect("built-in AE title default is valid (checked by a unit test)")
}

config_options! {
    /// Where Sluice keeps its data, how many cores it uses, and its logs.
    [server] ServerConfig "Server" {
        /// The directory where Sluice keeps everything it stores: received
        /// instances (`objects/`), the quarantine, the index, and files
        /// still being received (`tmp/`). It is created at start if missing.
        /// Put it on the disk meant to hold the archive, on one file system:
        /// files are moved into place by rename.
        data_directory: PathBuf = PathBuf::from("./sluice-data"),
            kind PathKind, flag "data-dir";

        /// How many engine threads to run, each on its own CPU core with its
        /// own associations and I/O. `"auto"` uses every core the process may
        /// run on, honouring CPU affinity and container CPU limits.
        cores: Cores = Cores::Auto,
            kind CoresKind, flag "cores";

        /// The I/O backend of the engine threads: io_uring is the fast path,
        /// the portable backend the fallback.
        io_backend: IoBackend = IoBackend::Auto,
            kind EnumKind::<IoBackend>::new(), flag "io-backend";

        /// How log lines are written to standard error.
        log_format: LogFormat = LogFormat::Text,
            kind EnumKind::<LogFormat>::new(), flag "log-format";

        /// The least severe events that are logged.
        log_level: LogLevel = LogLevel::Info,
            kind EnumKind::<LogLevel>::new(), flag "log-level";

        /// How long a stopping server (SIGTERM, SIGINT) lets the instances
        /// in flight finish and be answered. It stops taking new
        /// associations at once (A-ASSOCIATE-RJ, transient, so senders
        /// retry), refuses new C-STOREs with A700, and ends each
        /// association with an A-ABORT as soon as everything it sent is
        /// answered; what is still in flight when this time is up is
        /// aborted (never answered success, never lost). 0 aborts at once.
        shutdown_drain_ms: Duration = Duration::from_secs(5),
            kind DurationKind::new(TimeUnit::Milliseconds, 0, 600_000),
            flag "shutdown-drain-ms";
    }

    /// Listeners, AE titles, association limits, timeouts and the remote AE
    /// table.
    [network] NetworkConfig "Network" {
        /// The AE title Sluice answers to. Senders must use it as the Called
        /// AE Title; a request for any other title is rejected (A-ASSOCIATE-RJ
        /// result 1, source 1, reason 7: called AE title not recognized). This
        /// AE serves Verification and Storage, and Storage Commitment too
        /// unless `commitment_ae_title` or `commitment_port` give that its own
        /// AE.
        ae_title: AeTitle = ae_title("SLUICE"),
            kind TextKind::<AeTitle>::new(
                "AE title (string): 1 to 16 characters of printable ASCII, no backslash",
                "AE_TITLE",
            ),
            flag "ae-title";

        /// The TCP port of the main listener. 11112 is the registered DICOM
        /// port and needs no privileges; the reference PACS used 104, which on
        /// Linux needs root or the CAP_NET_BIND_SERVICE capability.
        port: u16 = 11112,
            kind IntKind::<u16>::new(1, u16::MAX), flag "port";

        /// The local address the listeners bind to. `"0.0.0.0"` (the default,
        /// as DCMTK's storescp and Orthanc do) accepts connections on every
        /// IPv4 interface; `"::"` on every IPv6 interface (and, on most Linux
        /// systems, IPv4 too); `"127.0.0.1"` only from this machine. Restrict
        /// who may connect with a firewall and `calling_ae_allow_list`.
        bind_address: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            kind TextKind::<IpAddr>::new("IP address (string), IPv4 or IPv6", "ADDRESS"),
            flag "bind";

        /// The AE title of a separate Storage Commitment AE, like the reference
        /// PACS's SCServer. Unset: Storage Commitment is served by `ae_title`.
        /// It is also the Calling AE Title of the associations Sluice opens to
        /// deliver commitment reports.
        commitment_ae_title: Option<AeTitle> = None,
            kind OptionalKind(TextKind::<AeTitle>::new(
                "AE title (string): 1 to 16 characters of printable ASCII, no backslash",
                "AE_TITLE",
            )),
            flag "commitment-ae-title", example "\"SCServer\"";

        /// The TCP port of a separate listener for the Storage Commitment AE
        /// (the reference PACS used 1104). Unset: the commitment AE is served
        /// on `port` (one listener serves several AE titles).
        commitment_port: Option<u16> = None,
            kind OptionalKind(IntKind::<u16>::new(1, u16::MAX)),
            flag "commitment-port", example "1104";

        /// The most inbound associations open at once. Past it, a new
        /// association is rejected as transient (A-ASSOCIATE-RJ result 2,
        /// source 3, reason 2: local limit exceeded) and the sender retries
        /// later.
        max_associations: u32 = ASSOCIATIONS_DEFAULT,
            kind IntKind::<u32>::new(1, ASSOCIATIONS_MAX), flag "max-associations";

        /// The most associations open at once from one Calling AE Title, so
        /// one misbehaving sender cannot take all of `max_associations`.
        /// Rejected the same way. Must not exceed `max_associations`.
        max_associations_per_calling_ae: u32 = ASSOCIATIONS_PER_CALLING_AE_DEFAULT,
            kind IntKind::<u32>::new(1, ASSOCIATIONS_MAX),
            flag "max-associations-per-calling-ae";

        /// The TCP port of a DICOM TLS listener (PS3.15 BCP 195
        /// non-downgrading profile: TLS 1.2 or 1.3) beside the plain one on
        /// `port`, for the same AEs; 2762 is the registered DICOM TLS port.
        /// Unset: no TLS. Needs `tls_certificate` and `tls_private_key`.
        tls_port: Option<u16> = None,
            kind OptionalKind(IntKind::<u16>::new(1, u16::MAX)),
            flag "tls-port", example "2762";

        /// Whether the plain DICOM listener on `port` runs. `"off"`: only
        /// the TLS listener on `tls_port` serves (TLS-only mode, for
        /// networks where nothing may travel unencrypted); it needs
        /// `tls_port`, and `commitment_port` (a plain listener) must be
        /// unset. `port` is then not bound.
        plain_listener: PlainListener = PlainListener::On,
            kind EnumKind::<PlainListener>::new(), flag "plain-listener";

        /// The server's certificate chain for TLS: a PEM file, the server's
        /// certificate first, then any intermediates.
        tls_certificate: Option<PathBuf> = None,
            kind OptionalKind(PathKind),
            flag "tls-certificate", example "\"/etc/sluice/tls/server.pem\"";

        /// The private key of `tls_certificate`: a PEM file (PKCS #8, PKCS #1
        /// RSA or SEC1 EC), readable by the server only.
        tls_private_key: Option<PathBuf> = None,
            kind OptionalKind(PathKind),
            flag "tls-private-key", example "\"/etc/sluice/tls/server.key\"";

        /// The CA certificates (a PEM file) that TLS clients' certificates
        /// must chain to. Set: every TLS client must present a valid, unexpired
        /// certificate issued under one of them (mutual TLS, as the DICOM
        /// secure transport profiles expect); one that does not is refused in
        /// the handshake and logged. Unset: clients are not asked for one.
        tls_client_ca: Option<PathBuf> = None,
            kind OptionalKind(PathKind),
            flag "tls-client-ca", example "\"/etc/sluice/tls/clients-ca.pem\"";

        /// The CA certificates (a PEM file) that the certificates of remote
        /// AEs reached over TLS (`tls://` in `remote_aes`) must chain to;
        /// their host name (or IP address) must be in the certificate.
        /// Sluice presents `tls_certificate` to them when set. Needed when a
        /// remote AE uses TLS.
        tls_remote_ca: Option<PathBuf> = None,
            kind OptionalKind(PathKind),
            flag "tls-remote-ca", example "\"/etc/sluice/tls/remotes-ca.pem\"";

        /// The maximum PDU length Sluice offers to receive (the Maximum
        /// Length sub-item of A-ASSOCIATE); peers send PDUs up to it. Larger
        /// PDUs cost less per byte for big images: the default, set by
        /// benchmark, took about a tenth less server CPU per GB at 512 KB
        /// than 16384, the length the reference PACS fixes (which every
        /// DICOM implementation handles, and Sluice accepts).
        max_pdu_length: u32 = PDU_LENGTH_DEFAULT,
            kind ByteSizeKind::<u32>::new(PDU_LENGTH_MIN, PDU_LENGTH_MAX),
            flag "max-pdu-length";

        /// The ARTIM timer (PS3.8 9.1.5): how long a new connection may take
        /// to send its A-ASSOCIATE-RQ, and how long a peer may take to close
        /// the connection after a release or an abort. On expiry the
        /// connection is closed.
        artim_timeout_ms: Duration = Duration::from_secs(30),
            kind DurationKind::new(TimeUnit::Milliseconds, 100, 600_000),
            flag "artim-timeout-ms";

        /// How long an open association may stay silent (no PDU arriving)
        /// before Sluice aborts it (A-ABORT). A data set that was being
        /// received is discarded; instances already stored on the association
        /// stay stored.
        idle_timeout_ms: Duration = Duration::from_secs(60),
            kind DurationKind::new(TimeUnit::Milliseconds, 1_000, 86_400_000),
            flag "idle-timeout-ms";

        /// The Calling AE Titles allowed to open associations. Empty (the
        /// default) allows any, as the reference PACS does. Otherwise any
        /// other Calling AE Title is rejected (A-ASSOCIATE-RJ result 1,
        /// source 1, reason 3: calling AE title not recognized). On the
        /// command line, give the flag once per title.
        calling_ae_allow_list: Vec<AeTitle> = Vec::new(),
            kind ListKind::new(
                TextKind::<AeTitle>::new("AE title (string)", "AE_TITLE"),
                AE_LIST_LENGTH_MAX,
            ),
            flag "allow-calling-ae", example "[\"CT_ROOM_1\", \"MR_ROOM_2\"]";

        /// The remote AE table: where each known remote AE listens, as
        /// `"host:port"` (host a name or an IP address, IPv6 in brackets).
        /// Sluice uses it to open associations: to deliver Storage
        /// Commitment reports once the requester's association has closed,
        /// and for query/retrieve. `"tls://host:port"` reaches it over DICOM
        /// TLS (verified against `tls_remote_ca`). In the file, write a
        /// `[network.remote_aes]` table with one `AE_TITLE = "host:port"`
        /// line per AE (quote a title that has spaces); on the command line,
        /// `--remote-ae AE_TITLE=host:port` once per AE.
        remote_aes: BTreeMap<AeTitle, RemoteAddress> = BTreeMap::new(),
            kind MapKind::<AeTitle, _>::new(
                "AE title",
                TextKind::<RemoteAddress>::new("\"host:port\" (string)", "HOST:PORT"),
                AE_LIST_LENGTH_MAX,
                "AE_TITLE=HOST:PORT",
            ),
            flag "remote-ae",
            example "{ CT_ROOM_1 = \"10.1.2.3:104\", CT_ROOM_1_SC = \"10.1.2.3:1104\" }";
    }

    /// Which SOP classes and transfer syntaxes the Storage SCP accepts.
    /// Verification and Storage Commitment Push Model are always accepted.
    [accept] AcceptConfig "Accepted SOP classes and transfer syntaxes" {
        /// The storage SOP classes senders may store. A presentation context
        /// for any other SOP class is refused (abstract syntax not
        /// supported); the association goes on with the others.
        sop_classes: SopClassSelection = SopClassSelection::Seed,
            kind EnumKind::<SopClassSelection>::new(), flag "sop-classes";

        /// More SOP classes to accept as storage classes on top of
        /// `sop_classes`, for example a vendor's private class. UIDs are
        /// written as the standard writes them (digits and dots). On the
        /// command line, give the flag once per UID.
        extra_sop_classes: Vec<Uid> = Vec::new(),
            kind ListKind::new(TextKind::<Uid>::new("UID (string)", "UID"), UID_LIST_LENGTH_MAX),
            flag "extra-sop-class", example "[\"1.2.840.113619.4.27\"]";

        /// The transfer syntaxes accepted for storage. Data sets are stored
        /// exactly as received, never transcoded. With an explicit list, keep
        /// Implicit VR Little Endian (1.2.840.10008.1.2) in it: it is the
        /// DICOM default every sender can fall back to. On the command line an
        /// explicit list is comma-separated.
        transfer_syntaxes: TransferSyntaxSelection = TransferSyntaxSelection::Seed,
            kind TransferSyntaxKind, flag "transfer-syntaxes",
            example "[\"1.2.840.10008.1.2\", \"1.2.840.10008.1.2.1\"]";
    }

    /// Disk-space protection, duplicates, and how stored instances are made
    /// durable and indexed.
    [storage] StorageConfig "Storage" {
        /// The free space the data directory's file system must keep. An
        /// instance that would leave less is refused with status A711-A717
        /// (out of resources) and nothing of it is saved, so the disk never
        /// fills up under the index. 0 turns the check off.
        free_space_floor: u64 = GIB,
            kind ByteSizeKind::<u64>::new(0, 1024 * TIB), flag "free-space-floor";

        /// How instances are laid out on disk: `"segments"`, records
        /// appended to per-core preallocated segment files (fewer files, one
        /// flush per batch; each core allocates `segment_size_mib` on disk
        /// when its first instance arrives), or `"files"`, one Part 10 file
        /// per instance. The layout is what is written from now on: a store
        /// written as files (the default before segments) that is served on
        /// `"segments"` keeps its files and gets new instances as records
        /// (both read through the index; `sluice migrate` converts it). On
        /// `"segments"`, duplicates held in quarantine and instances above
        /// `segment_record_max` are still stored as files
        /// (docs/design/segments.md).
        layout: StorageLayout = StorageLayout::Segments,
            kind EnumKind::<StorageLayout>::new(), flag "storage-layout";

        /// The size of each segment file (layout `"segments"`), in MiB,
        /// allocated when the segment is created; an instance larger than a
        /// segment is refused (A711). A full segment is sealed: flushed and
        /// never written again.
        segment_size_mib: u32 = 1024,
            kind IntKind::<u32>::new(1, 1 << 20), flag "segment-size-mib";

        /// Whether segments get their blocks written before records go in
        /// (layout `"segments"`): a background thread allocates each core's
        /// next segment and writes zeros over it while the core fills its
        /// current one, so a flush of records there has no extent to
        /// convert and commits no file-system journal, only the device's
        /// cache (on ext4 and XFS, whose `fallocate` leaves unwritten
        /// extents). `"on"`: always, paced to the core's fill rate (at
        /// full speed while the core is idle); `"auto"`: the same while the
        /// core's flush rounds are small, none while they carry 1 MiB or
        /// more (large instances: there the zeros cost the device more
        /// bandwidth than the journal commits they save); `"off"`:
        /// segments are allocated only, by the cores. The server waits up
        /// to 2 s at start for the first segments' zeros. Each core holds
        /// up to two segments' space. Copy-on-write file systems (btrfs,
        /// ZFS) gain nothing from it (every write allocates anew): set
        /// `"off"` there.
        segment_zero_fill: ZeroFill = ZeroFill::Auto,
            kind EnumKind::<ZeroFill>::new(), flag "segment-zero-fill";

        /// The largest instance stored as a record (layout `"segments"`):
        /// an instance is held in memory until it is whole, then written
        /// in one write; one whose Part 10 bytes pass this bound while
        /// arriving is written to a file instead (what it held so far
        /// first); `record_memory_per_core` bounds what the instances in
        /// flight hold together. Never more than a segment holds.
        segment_record_max: u64 = 64 * MIB,
            kind ByteSizeKind::<u64>::new(0, TIB), flag "segment-record-max";

        /// The most memory one core's record buffers take (layout
        /// `"segments"`): the instances arriving there, those written and
        /// not yet durable, and the buffers kept for the next ones. An
        /// instance whose buffer would grow past it is written to a file
        /// from then on (what it held first), as one past
        /// `segment_record_max` is, so a burst of large instances on many
        /// associations cannot take more than this per core; small
        /// instances keep the record path. The default holds four records
        /// of the default `segment_record_max`.
        record_memory_per_core: u64 = 256 * MIB,
            kind ByteSizeKind::<u64>::new(0, TIB), flag "record-memory-per-core";

        /// Compaction (layout `"segments"`, `sluice compact`): a sealed
        /// segment is compacted (its live records copied into new
        /// segments, its file then deleted) when at least this percentage
        /// of its bytes is dead (records replaced, purged or moved out) and
        /// at least `compaction_dead_min` bytes are.
        compaction_dead_percent: u32 = 50,
            kind IntKind::<u32>::new(1, 100), flag "compaction-dead-percent";

        /// The fewest dead bytes that make a sealed segment worth
        /// compacting (see `compaction_dead_percent`); a segment with no
        /// live record at all is deleted whatever its size.
        compaction_dead_min: u64 = 16 * MIB,
            kind ByteSizeKind::<u64>::new(0, TIB), flag "compaction-dead-min";

        /// Online compaction (layout `"segments"`): `sluice serve` surveys
        /// its sealed segments every two seconds and compacts the
        /// candidates (see `compaction_dead_percent`) in the background,
        /// copying at most this many MiB of live records per second (the
        /// copy reads and writes that much; the index switches go through
        /// ingest's writer, one short batch per commit). 0: off (`sluice
        /// compact` offline only). Off too with `[objects]` configured.
        compaction_rate_mib_s: u32 = 16,
            kind IntKind::<u32>::new(0, 1 << 20), flag "compaction-rate-mib-s";

        /// What to do with an instance whose Study, Series and SOP Instance
        /// UIDs are all already stored.
        duplicate_policy: DuplicatePolicy = DuplicatePolicy::Quarantine,
            kind EnumKind::<DuplicatePolicy>::new(), flag "duplicate-policy";

        /// What to do with an instance whose SOP Instance UID is already
        /// stored under another Study or Series Instance UID (a UID
        /// collision, usually a sender's bug).
        uid_conflict_policy: UidConflictPolicy = UidConflictPolicy::Quarantine,
            kind EnumKind::<UidConflictPolicy>::new(), flag "uid-conflict-policy";

        /// How long a core waits to gather more received instances into one
        /// durability batch (one round of fsyncs, one index transaction)
        /// before making it durable. Longer windows make bigger, cheaper
        /// batches under load and add at most this much to each C-STORE
        /// response time. 0 makes whatever is ready durable at once.
        group_commit_window_us: Duration = Duration::from_micros(500),
            kind DurationKind::new(TimeUnit::Microseconds, 0, 100_000),
            flag "group-commit-window-us";

        /// The most instances in one index transaction; a full batch is
        /// committed without waiting for the window to end.
        group_commit_max_instances: u32 = 256,
            kind IntKind::<u32>::new(1, 65_536), flag "group-commit-max-instances";

        /// The most instances one core receives and makes durable at once
        /// (each holds an open temporary file and its fsync in flight). A
        /// C-STORE beyond it is refused with A710 (out of resources) rather
        /// than queued without bound. The default lets every association of
        /// a 2-core server at its default association limit have one
        /// instance in flight; memory is bounded by the receive buffers
        /// anyway (an exhausted pool stops reading), so this bounds open
        /// files, not bytes.
        instances_in_flight_max_per_core: u32 = 4096,
            kind IntKind::<u32>::new(1, 65_536), flag "instances-in-flight-max-per-core";

        /// The largest size the index (an LMDB database) may grow to. This is
        /// reserved address space, not disk: the file grows only as entries
        /// are added. When the index is full, storing fails until this is
        /// raised and Sluice restarted, so size it generously.
        index_map_size: u64 = 64 * GIB,
            kind ByteSizeKind::<u64>::new(16 * MIB, 64 * TIB), flag "index-map-size";
    }

    /// What Sluice does when a received instance departs from the standard
    /// in a way some senders' data does: refuse it (`"strict"`: the
    /// sender is told the failure status and why, nothing is kept) or keep
    /// it (`"lenient"`: stored as received, a warning logged, the instance
    /// flagged for `sluice flagged`). What can never be stored
    /// (a data set that does not parse, no Study or Series Instance UID, a
    /// malformed UID, UIDs that contradict the command) is always refused.
    /// The defaults, and why: docs/design/ingest.md, "Validation".
    [validation] ValidationConfig "Validation of received instances" {
        /// A UID with a component that starts with a zero
        /// (`1.2.840.113619.2.55.3.0123`), in the command or the data set:
        /// not valid DICOM (PS3.5 9.1), but sent by real modalities and read
        /// by every toolkit. Strict refuses with A900.
        uid_leading_zero: CheckMode = CheckMode::Lenient,
            kind EnumKind::<CheckMode>::new(), flag "validation-uid-leading-zero";

        /// The data set has no SOP Class UID or SOP Instance UID (or an
        /// empty one); the C-STORE command carries both, and the file and
        /// the index take them from it. Strict refuses with A900.
        sop_uids_missing: CheckMode = CheckMode::Lenient,
            kind EnumKind::<CheckMode>::new(), flag "validation-sop-uids-missing";

        /// An image SOP class lacks what display needs: Rows, Columns, Bits
        /// Allocated, Samples per Pixel, Photometric Interpretation, a
        /// positive Number of Frames (A900 when strict), or Pixel Data
        /// (C010).
        image_pixel_module: CheckMode = CheckMode::Strict,
            kind EnumKind::<CheckMode>::new(), flag "validation-image-pixel-module";

        /// Pixel Data encapsulated (fragments) under a native transfer
        /// syntax, native under a compressed one, or encapsulated without a
        /// fragment: the pixels cannot be decoded as labelled. Strict
        /// refuses with C012.
        pixel_data_encapsulation: CheckMode = CheckMode::Strict,
            kind EnumKind::<CheckMode>::new(), flag "validation-pixel-data-encapsulation";

        /// Native Pixel Data longer than Rows, Columns, Samples per Pixel,
        /// Bits Allocated and Number of Frames imply: the image is all
        /// there, followed by extra bytes that viewers ignore. Strict
        /// refuses with C011.
        pixel_data_trailing_bytes: CheckMode = CheckMode::Lenient,
            kind EnumKind::<CheckMode>::new(), flag "validation-pixel-data-trailing-bytes";

        /// Native Pixel Data shorter than the image attributes imply: part
        /// of the image is missing. Strict refuses with C011.
        pixel_data_short: CheckMode = CheckMode::Strict,
            kind EnumKind::<CheckMode>::new(), flag "validation-pixel-data-short";

        /// Bytes after the end of a deflated data set's compressed stream
        /// (Deflated Explicit VR Little Endian), other than the one pad byte
        /// PS3.5 allows or a gzip trailer, which are always accepted. They
        /// are not part of the data set; DCMTK and pydicom ignore them.
        /// Strict refuses with C010.
        deflate_trailing_bytes: CheckMode = CheckMode::Lenient,
            kind EnumKind::<CheckMode>::new(), flag "validation-deflate-trailing-bytes";
    }

    /// Storage Commitment Push Model: waiting for late instances and
    /// delivering the reports (N-EVENT-REPORT).
    [commitment] CommitmentConfig "Storage Commitment" {
        /// How long a commitment request whose instances have not all
        /// arrived waits for them. Each arriving instance is checked against
        /// the waiting requests; once all are there, success is reported.
        /// When the wait ends, the report lists the missing ones as failed
        /// (reason 0112: no such object instance). 0 reports at once.
        instance_wait_s: Duration = Duration::from_secs(3600),
            kind DurationKind::new(TimeUnit::Seconds, 0, 604_800),
            flag "commitment-instance-wait-s";

        /// The most commitment requests waiting for instances at once; a
        /// request beyond it is refused with a failure status.
        max_pending_requests: u32 = 10_000,
            kind IntKind::<u32>::new(1, 1_000_000), flag "commitment-max-pending-requests";

        /// The most memory the commitment requests held (waiting for their
        /// instances, or for their report to be delivered) may take, their
        /// references packed (about 65 bytes per referenced instance while
        /// it is waited for: 50,000 references take about 3 MiB). A request
        /// that would go past it is refused with 0213 (resource
        /// limitation) and logged; the requester may send it again later.
        memory_budget: u64 = 256 * MIB,
            kind ByteSizeKind::<u64>::new(MIB, TIB), flag "commitment-memory-budget";

        /// How a report reaches the requester.
        report_delivery: ReportDelivery = ReportDelivery::SameAssociationOrNew,
            kind EnumKind::<ReportDelivery>::new(), flag "commitment-report-delivery";

        /// How long to wait before retrying a report whose delivery failed
        /// for a communication reason (peer unreachable, association
        /// rejected or aborted). Each further retry waits twice as long as
        /// the one before, up to `report_retry_backoff_cap_s`.
        report_retry_delay_s: Duration = Duration::from_secs(REPORT_RETRY_DELAY_DEFAULT_S),
            kind DurationKind::new(TimeUnit::Seconds, 1, 86_400),
            flag "commitment-retry-delay-s";

        /// How many times a failed delivery is retried before the report is
        /// given up (and logged). A report the peer answers with a status
        /// other than 0000 or 0107 is not retried: that is a permanent
        /// failure.
        report_retry_count: u32 = 10,
            kind IntKind::<u32>::new(0, 1000), flag "commitment-retry-count";

        /// The longest wait between two retries, however many came before.
        /// Must not be below `report_retry_delay_s`.
        report_retry_backoff_cap_s: Duration = Duration::from_secs(REPORT_RETRY_BACKOFF_CAP_DEFAULT_S),
            kind DurationKind::new(TimeUnit::Seconds, 1, 604_800),
            flag "commitment-retry-backoff-cap-s";

        /// Where reports go when they are delivered on a new association:
        /// requester AE title -> the AE title to send them to instead (the
        /// reference PACS can send to "a different AE associated with the one
        /// that made the original request"). Requesters not listed get their
        /// own reports. Every target needs an address in
        /// `network.remote_aes`. In the file, a `[commitment.report_ae_map]`
        /// table; on the command line, `--commitment-report-ae FROM=TO` once
        /// per entry.
        report_ae_map: BTreeMap<AeTitle, AeTitle> = BTreeMap::new(),
            kind MapKind::<AeTitle, _>::new(
                "requester AE title",
                TextKind::<AeTitle>::new("AE title (string)", "AE_TITLE"),
                AE_LIST_LENGTH_MAX,
                "FROM=TO",
            ),
            flag "commitment-report-ae", example "{ CT_ROOM_1 = \"CT_ROOM_1_SC\" }";
    }

    /// Query/Retrieve SCP (Patient Root and Study Root C-FIND, C-MOVE and
    /// C-GET on the main AE): who may use it, how it matches, and the
    /// limits that keep retrieval from starving ingest.
    [query] QueryConfig "Query/Retrieve" {
        /// The Calling AE Titles that may query (C-FIND). For any other, the
        /// C-FIND presentation contexts are refused at association
        /// (user rejection) and the refusal is logged. `"known"`: the AEs of
        /// `network.remote_aes`.
        find_allowed_from: AeSelection = AeSelection::Any,
            kind AeSelectionKind, flag "query-find-from", example "[\"VIEWER_1\", \"PACS_2\"]";

        /// The Calling AE Titles that may retrieve with C-MOVE; refused like
        /// `find_allowed_from`.
        move_allowed_from: AeSelection = AeSelection::Any,
            kind AeSelectionKind, flag "query-move-from", example "\"known\"";

        /// The Calling AE Titles that may retrieve with C-GET; refused like
        /// `find_allowed_from`.
        get_allowed_from: AeSelection = AeSelection::Any,
            kind AeSelectionKind, flag "query-get-from", example "\"known\"";

        /// The Move Destinations a C-MOVE may name. A destination must in
        /// any case be in `network.remote_aes` (Sluice needs its address;
        /// another is answered A801, move destination unknown); this narrows
        /// it further (a listed AE that is not allowed is answered A801
        /// too, and logged). `"any"` and `"known"` both mean every AE of
        /// `network.remote_aes`.
        move_destinations: AeSelection = AeSelection::Known,
            kind AeSelectionKind, flag "query-move-destinations", example "[\"WORKSTATION_1\"]";

        /// How person names match.
        person_name_matching: PersonNameMatching = PersonNameMatching::Exact,
            kind EnumKind::<PersonNameMatching>::new(), flag "query-person-name-matching";

        /// Where C-FIND takes requested keys the index does not hold.
        file_keys_on_find: FileKeysOnFind = FileKeysOnFind::Never,
            kind EnumKind::<FileKeysOnFind>::new(), flag "query-file-keys";

        /// How much of a stored file's data set is read to answer keys from
        /// it (`file_keys_on_find`); attributes beyond it are answered empty.
        file_head_bytes_max: u32 = 64 * KIB as u32,
            kind ByteSizeKind::<u32>::new(4 * KIB, 16 * MIB), flag "query-file-head-bytes-max";

        /// The most matches one C-FIND returns. A query matching more is
        /// answered with a failure (A700, out of resources, with an Error
        /// Comment saying the limit) after the first this many, and logged,
        /// instead of streaming without end: narrow the query.
        find_results_max: u32 = 100_000,
            kind IntKind::<u32>::new(1, 100_000_000), flag "query-find-results-max";

        /// The most associations one C-MOVE opens to its destination at once
        /// to send its instances (sub-operations in parallel, like
        /// dcm4chee's store associations per move).
        move_associations_max: u32 = 4,
            kind IntKind::<u32>::new(1, 64), flag "query-move-associations";

        /// The most C-STORE sub-operations of one C-GET that Sluice keeps
        /// outstanding on the requester's association (sent, their answer
        /// not yet come), when the requester proposes an Asynchronous
        /// Operations Window (PS3.7 D.3.3.3): Sluice answers the window
        /// with this many operations it may invoke (at most what the
        /// requester said it performs) and one it performs (a second
        /// request before the answer to the first is not allowed). A
        /// requester that proposes no window (DCMTK getscu, Orthanc) gets
        /// one at a time, as does every requester when this is 1 (no
        /// window item is answered).
        get_operations_outstanding_max: u32 = 16,
            kind IntKind::<u32>::new(1, 1024), flag "query-get-outstanding-max";

        /// The memory one core lends to retrieval's file reads and sends at
        /// once (C-MOVE and C-GET sub-operations). Senders wait for a send
        /// to complete when it is in use, so retrieval never takes memory
        /// (or the core's time) without bound from ingest.
        retrieve_buffer_per_core: u64 = 32 * MIB,
            kind ByteSizeKind::<u64>::new(MIB, 4 * GIB), flag "query-retrieve-buffer-per-core";

        /// Retrieval's share, in percent, of the bytes a core moves while
        /// ingest is waiting on it (C-STORE data sets arrived in the last
        /// 10 to 20 ms): a retrieve's file reads and sends (256 KiB chunks)
        /// beyond it wait for the next 10 ms epoch, retrieval keeping a
        /// floor of 3.2 MB/s per core. With no ingest, retrieval is not
        /// limited. 100 turns the limit off. The argument and the
        /// measurement: docs/design/query-retrieve.md, "Retrieval beside
        /// ingest".
        retrieve_share_under_ingest: u32 = 25,
            kind IntKind::<u32>::new(1, 100), flag "query-retrieve-share-under-ingest";

        /// How retrieval sends stored data sets: `copy` (the default) reads
        /// them into send buffers and sends those; `splice` moves them from
        /// the file to the socket without a copy in user space (io_uring
        /// splice through a pipe per association), falling back to `copy`
        /// where it cannot (TLS, the portable backend, a kernel without it,
        /// transcoded data sets; logged once at info). On the 2-vCPU
        /// benchmark machine `splice` gained no steady rate, saved no CPU
        /// on the sender and cost the receiver more (the kernel runs each
        /// splice in an io_uring worker thread: a hand-over and back per
        /// data set): docs/benchmarks.md, "Retrieval by splice".
        retrieve_send: RetrieveSend = RetrieveSend::Copy,
            kind EnumKind::<RetrieveSend>::new(), flag "query-retrieve-send";
    }

    /// The monitoring endpoint: Prometheus metrics (`/metrics`) and health
    /// probes (`/healthz`, `/readyz`) over plain HTTP. What it serves and
    /// how to scrape it: docs/operations.md, "Metrics and health".
    [metrics] MetricsConfig "Metrics and health" {
        /// The TCP port of the metrics and health endpoint. Unset (the
        /// default): no endpoint is opened. 9104 is free of the common
        /// exporters' ports.
        metrics_port: Option<u16> = None,
            kind OptionalKind(IntKind::<u16>::new(1, u16::MAX)),
            flag "metrics-port", example "9104";

        /// The local address the metrics endpoint binds to. The default
        /// serves only this machine (a Prometheus agent or a load balancer
        /// probe beside it): the endpoint has no authentication, and the
        /// metrics name the calling AE titles. Widen it (`"0.0.0.0"`) only
        /// behind a firewall.
        metrics_bind_address: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST),
            kind TextKind::<IpAddr>::new("IP address (string), IPv4 or IPv6", "ADDRESS"),
            flag "metrics-bind";
    }

    /// Access control per remote AE: which Calling AE Titles, from which
    /// addresses, may use which services. With no rule (the default) every
    /// AE that passes `network.calling_ae_allow_list` may use every
    /// service. With rules, an association is admitted by the first rule
    /// that names its Calling AE Title (or `*`) and lists the address it
    /// comes from (or lists none); when none does it is rejected
    /// (A-ASSOCIATE-RJ result 1, source 1, reason 3: calling AE title not
    /// recognized). An admitted AE may always use Verification; a C-STORE,
    /// Storage Commitment request, C-FIND, C-MOVE or C-GET of a service its
    /// rule does not grant is refused with status 0124 (refused: not
    /// authorized). Every refusal is logged with the peer and the rule.
    /// `query.*_allowed_from` and `network.calling_ae_allow_list` still
    /// apply on top. docs/operations.md, "Access control", has examples.
    [access] AccessConfig "Access control" {
        /// The rules, in order (the first that names the Calling AE Title
        /// and the peer's address decides). In the file, one
        /// `[[access.rule]]` table per rule with `calling_ae` (an AE title,
        /// or `"*"` for any), `addresses` (optional: IP addresses or CIDR
        /// networks, IPv4 peers on an IPv6 listener matched as IPv4) and
        /// `services` (any of `"store"`, `"commitment"`, `"query"`,
        /// `"retrieve"`; empty: Verification only). On the command line,
        /// `--access-rule AE_TITLE[@ADDRESS,...]=SERVICE,...` once per rule.
        rule: Vec<AccessRule> = Vec::new(),
            kind ListKind::new(AccessRuleKind, ACCESS_RULES_MAX),
            flag "access-rule",
            example "[{ calling_ae = \"CT_ROOM_1\", addresses = [\"10.1.2.0/24\"], services = [\"store\", \"commitment\"] }, { calling_ae = \"VIEWER_1\", services = [\"query\", \"retrieve\"] }]";
    }

    /// The audit trail: DICOM audit messages (PS3.15 A.5, the XML of its
    /// audit message schema) for application start and stop, associations
    /// (logins, logouts, refusals), instances stored and sent, queries and
    /// security alerts (a refused TLS certificate, an AE refused by the
    /// access rules), to a JSON-lines file, a syslog collector, or both.
    /// Off unless one is set. They are written by a thread of their own
    /// from a bounded queue: a slow or unreachable collector never slows
    /// ingest; what does not fit in the queue is dropped and counted
    /// (`sluice_audit_messages_dropped_total`, and a `warn` line at most
    /// every 10 s). docs/operations.md, "Audit trail", lists the messages.
    [audit] AuditConfig "Audit trail" {
        /// A file the audit messages are appended to, one JSON object per
        /// line (`time`, `event`, `outcome`, and `message`: the
        /// `<AuditMessage>` XML). Created if missing; unset: no file.
        audit_file: Option<PathBuf> = None,
            kind OptionalKind(PathKind),
            flag "audit-file", example "\"/var/log/sluice/audit.jsonl\"";

        /// A syslog collector (an audit record repository) the audit
        /// messages are sent to as RFC 5424 messages (facility authpriv,
        /// MSGID `IHE+RFC-3881`, the XML as the message):
        /// `"udp://host:port"` (one datagram each), `"tcp://host:port"`
        /// (RFC 6587 octet counting; reconnected after a failure) or
        /// `"tls://host:port"` (RFC 5425: the same over TLS 1.2 or 1.3, the
        /// collector verified against `audit_syslog_ca` and its host name,
        /// `network.tls_certificate` presented when set). Unset: no syslog.
        audit_syslog: Option<SyslogAddress> = None,
            kind OptionalKind(TextKind::<SyslogAddress>::new(
                "\"udp://host:port\", \"tcp://host:port\" or \"tls://host:port\" (string)",
                "ADDRESS",
            )),
            flag "audit-syslog", example "\"tls://audit.example.org:6514\"";

        /// The CA certificates (a PEM file) a syslog collector reached over
        /// TLS (`audit_syslog = "tls://..."`) must chain to. Needed then.
        audit_syslog_ca: Option<PathBuf> = None,
            kind OptionalKind(PathKind),
            flag "audit-syslog-ca", example "\"/etc/sluice/tls/audit-ca.pem\"";

        /// How many events may wait for the audit thread; beyond it they
        /// are dropped and counted.
        audit_queue_length: u32 = 16_384,
            kind IntKind::<u32>::new(16, 1_048_576), flag "audit-queue-length";
    }

    /// Cluster mode (partial: docs/design/scale-out.md says what is built):
    /// several nodes behind a TCP load balancer, each ingesting into its own
    /// data directory as on one box, and publishing what it committed to a
    /// shared PostgreSQL catalogue, where the SOP Instance UID is unique
    /// cluster-wide. Off unless `catalogue` is set.
    [cluster] ClusterConfig "Cluster" {
        /// The shared catalogue: a PostgreSQL connection string (URL or
        /// `key=value` pairs). Unset (the default): cluster mode is off.
        /// The tables are created at start if missing. TLS as libpq's
        /// `sslmode` (`disable`, `prefer`, `require`, `verify-full`) and
        /// `sslrootcert` (the CA file) in it say (docs/design/scale-out.md,
        /// "TLS to PostgreSQL").
        catalogue: Option<CatalogueAddress> = None,
            kind OptionalKind(TextKind::<CatalogueAddress>::new(
                "PostgreSQL connection string (string)",
                "CONNINFO",
            )),
            flag "cluster-catalogue", example "\"postgresql://sluice@db.example:5432/sluice\"";

        /// This node's name in the catalogue: where each instance it
        /// published lives. Required with `catalogue`; unique in the
        /// cluster, and kept across restarts (the catalogue's rows name it).
        node_name: Option<NodeName> = None,
            kind OptionalKind(TextKind::<NodeName>::new("node name (string)", "NAME")),
            flag "cluster-node", example "\"sluice-1\"";

        /// When entries are published: after the C-STORE response (the
        /// default: the answer never waits for the network) or before it.
        publish: PublishMode = PublishMode::AfterAnswer,
            kind EnumKind::<PublishMode>::new(), flag "cluster-publish";

        /// After the answer: the longest an entry waits to be published
        /// with others (the catalogue's lag while PostgreSQL is reachable).
        publish_interval_ms: Duration = Duration::from_millis(100),
            kind DurationKind::new(TimeUnit::Milliseconds, 1, 60_000),
            flag "cluster-publish-interval";

        /// Before the answer: the longest a batch's answer waits for the
        /// catalogue. Past it the batch is answered as stored locally and
        /// published later (as after the answer), and the node reports the
        /// catalogue unreachable.
        publish_timeout_ms: Duration = Duration::from_secs(2),
            kind DurationKind::new(TimeUnit::Milliseconds, 10, 60_000),
            flag "cluster-publish-timeout";

        /// The most entries published in one catalogue transaction.
        publish_batch_max: u32 = 1_000,
            kind IntKind::<u32>::new(1, 100_000), flag "cluster-publish-batch-max";

        /// How long to wait before trying PostgreSQL again after it failed.
        /// Meanwhile ingest goes on locally and `/readyz` says so.
        retry_interval_ms: Duration = Duration::from_secs(1),
            kind DurationKind::new(TimeUnit::Milliseconds, 10, 600_000),
            flag "cluster-retry-interval";

        /// What a C-FIND on this node answers for: the whole cluster, from
        /// the catalogue (the default; the local index when the catalogue
        /// cannot be reached), or this node's local index only.
        find: FindScope = FindScope::Cluster,
            kind EnumKind::<FindScope>::new(), flag "cluster-find";

        /// The most catalogue connections this node's cluster-wide C-FINDs
        /// use at once (kept open and reused). A C-FIND beyond them waits
        /// for one up to `publish_timeout_ms`, then answers from the local
        /// index, as when the catalogue is unreachable.
        find_connections: u32 = 4,
            kind IntKind::<u32>::new(1, 1_000), flag "cluster-find-connections";

        /// How many holders a C-MOVE or C-GET of instances held by other
        /// nodes asks at once (each holder's series one after another; 1
        /// asks them one after another). A retrieve spanning several nodes
        /// then takes about as long as its largest holder's part.
        retrieve_holders_parallel: u32 = 4,
            kind IntKind::<u32>::new(1, 64), flag "cluster-retrieve-holders-parallel";

        /// Where the other nodes reach this node's DICOM port, published in
        /// the catalogue: a C-MOVE on another node asks this node to move
        /// the instances it holds. Unset: `network.bind_address` and
        /// `network.port` when the bind address is a specific one; with
        /// `0.0.0.0` or `::` nothing is published and the other nodes
        /// cannot move this node's instances.
        dicom_address: Option<RemoteAddress> = None,
            kind OptionalKind(TextKind::<RemoteAddress>::new("\"host:port\" (string)", "HOST:PORT")),
            flag "cluster-dicom-address", example "\"sluice-1.example:11112\"";
    }

    /// The object store (docs/design/scale-out.md, "Object store"): sealed
    /// segments uploaded to an S3-compatible store (Garage in the tests),
    /// verified there, then the local file evicted under `evict`; records
    /// of an evicted segment are read back with one ranged GET each into a
    /// read-through cache (`<data>/cache/`). Off unless `endpoint` is set.
    /// Only segments are uploaded: the files layout has none.
    [objects] ObjectsConfig "Object store" {
        /// The store's S3 endpoint (`http://` or `https://`, path-style
        /// requests). Unset (the default): nothing is uploaded.
        endpoint: Option<ObjectEndpoint> = None,
            kind OptionalKind(TextKind::<ObjectEndpoint>::new("http or https URL (string)", "URL")),
            flag "objects-endpoint", example "\"https://s3.example.org\"";

        /// The region requests are signed for (Garage's `s3_region`).
        region: ObjectName = object_name("garage"),
            kind TextKind::<ObjectName>::new("region (string)", "REGION"), flag "objects-region";

        /// The bucket segments are uploaded to. Required with `endpoint`.
        bucket: Option<ObjectName> = None,
            kind OptionalKind(TextKind::<ObjectName>::new("bucket name (string)", "BUCKET")),
            flag "objects-bucket", example "\"sluice-segments\"";

        /// The access key id. Required with `endpoint`.
        key_id: Option<ObjectName> = None,
            kind OptionalKind(TextKind::<ObjectName>::new("access key id (string)", "KEY_ID")),
            flag "objects-key-id", example "\"GK31c2f218a2e44f485b94239e\"";

        /// A file holding the secret access key (its first line), read at
        /// start, so the secret is in no configuration file or command line.
        /// Required with `endpoint`.
        secret_file: Option<PathBuf> = None,
            kind OptionalKind(PathKind),
            flag "objects-secret-file", example "\"/etc/sluice/s3-secret\"";

        /// The start of every object key: a segment is uploaded as
        /// `<key_prefix>/<node>/<segment id, 16 hex digits>.seg`, where
        /// `<node>` is `cluster.node_name` (or `local` without one), so
        /// nodes sharing a bucket never collide.
        key_prefix: ObjectName = object_name("sluice"),
            kind TextKind::<ObjectName>::new("key prefix (string)", "PREFIX"),
            flag "objects-key-prefix";

        /// When an uploaded and verified segment's local file is deleted:
        /// `never`, `after-upload`, or `when-disk-above` (while the data
        /// directory's file system is fuller than `evict_disk_above_percent`,
        /// oldest segment first). A segment not sealed, or not verified in
        /// the store, is never evicted.
        evict: EvictPolicy = EvictPolicy::WhenDiskAbove,
            kind EnumKind::<EvictPolicy>::new(), flag "objects-evict";

        /// With `evict = "when-disk-above"`: the fill (percent of the file
        /// system's blocks in use) above which segments are evicted.
        evict_disk_above_percent: u32 = 80,
            kind IntKind::<u32>::new(1, 99), flag "objects-evict-disk-above-percent";

        /// How long an evicted segment's local file stays after the index
        /// records the eviction: a retrieve that located its records before
        /// (C-MOVE and C-GET list their instances at the start) still finds
        /// the file.
        evict_grace_ms: Duration = Duration::from_secs(600),
            kind DurationKind::new(TimeUnit::Milliseconds, 0, 86_400_000),
            flag "objects-evict-grace";

        /// The size of each part of a segment's multipart upload (the
        /// uploader holds one part in memory); S3 takes parts of 5 MiB and
        /// more (the last one may be smaller).
        part_size_mib: u32 = 16,
            kind IntKind::<u32>::new(5, 5120), flag "objects-part-size-mib";

        /// The most bytes per second the uploader sends, in MiB (0: no
        /// limit), so uploads leave the disk and the network to ingest.
        upload_rate_mib: u32 = 0,
            kind IntKind::<u32>::new(0, 1 << 20), flag "objects-upload-rate-mib";

        /// How often the uploader looks for sealed segments not uploaded.
        upload_interval_ms: Duration = Duration::from_secs(5),
            kind DurationKind::new(TimeUnit::Milliseconds, 10, 3_600_000),
            flag "objects-upload-interval";

        /// How long to wait before trying the store again after a failure
        /// (logged once per outage; ingest never waits for the store).
        upload_retry_interval_ms: Duration = Duration::from_secs(10),
            kind DurationKind::new(TimeUnit::Milliseconds, 10, 3_600_000),
            flag "objects-retry-interval";

        /// The longest one request to the store may take (a part, a ranged
        /// GET) before it fails.
        request_timeout_ms: Duration = Duration::from_secs(120),
            kind DurationKind::new(TimeUnit::Milliseconds, 100, 3_600_000),
            flag "objects-request-timeout";

        /// The read-through cache of records fetched from evicted segments
        /// (`<data>/cache/`): past this size its oldest files are deleted.
        cache_size_mib: u32 = 1024,
            kind IntKind::<u32>::new(1, 1 << 24), flag "objects-cache-size-mib";

        /// The threads that fetch records of evicted segments for C-MOVE
        /// and C-GET (the io cores never wait for the store): the most
        /// ranged GETs under way at once for them.
        fetch_threads: u32 = 2,
            kind IntKind::<u32>::new(1, 64), flag "objects-fetch-threads";
    }
}
