//! [`Store`]: an opened data directory (layout, index, events) — the
//! embedding API's entry point, shared by the SCP's cores and by readers.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sluice_index::{Index, IndexError, IndexOptions, InstanceEntry, InstanceRecord, Triplet};
use thiserror::Error;

use crate::config::Config;
use crate::store::layout::{Area, Layout};

/// The zeros the index writer keeps ahead of `data.mdb`'s last page, a
/// chunk at a time (`IndexOptions::zero_ahead_bytes`): 2 MiB, a few
/// milliseconds of the writer's time into the page cache, about a second
/// of index growth under 40 KB instances at a few thousand a second.
const INDEX_ZERO_AHEAD_BYTES: usize = 2 << 20;

/// Most subscribers at once (each costs a bounded channel).
pub const SUBSCRIBERS_MAX: usize = 64;
/// Most events one subscriber's channel holds before newer ones are lost.
pub const SUBSCRIPTION_CAPACITY_MAX: usize = 1 << 20;

/// Errors of the store handle.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory could not be created or read.
    #[error("data directory {path}: {source}")]
    DataDirectory {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The index failed.
    #[error("index: {0}")]
    Index(#[from] IndexError),
    /// An instance's file could not be read.
    #[error("reading {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The index places an instance in a record too short for the Part 10
    /// bytes its entry records (the index disagrees with itself).
    #[error("the record at offset {offset} of segment {segment:016x}: {detail}")]
    BadRecordPlace {
        /// The segment's id.
        segment: u64,
        /// Where the record starts in it.
        offset: u64,
        /// What does not fit.
        detail: String,
    },
    /// Too many subscribers.
    #[error("too many event subscribers (at most {SUBSCRIBERS_MAX})")]
    TooManySubscribers,
    /// The object store (`[objects]`) could not be set up, or a record of
    /// an evicted segment could not be fetched from it.
    #[error("{0}")]
    Objects(#[from] crate::objects::ObjectsError),
    /// A record of an evicted segment is read without an object store
    /// configured.
    #[error(
        "segment {segment:016x} is evicted to the object store (object {key}), \
         and no [objects] endpoint is configured to read it from"
    )]
    Evicted {
        /// The segment.
        segment: u64,
        /// Its object.
        key: String,
    },
}

/// Something that happened to an instance sent to the Storage SCP.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreEvent {
    /// Stored durably and indexed (also a replacement under the `replace`
    /// duplicate policy); the sender was told success.
    Stored {
        /// The instance.
        triplet: Triplet,
        /// What the index records for it.
        record: InstanceRecord,
    },
    /// Held in quarantine (a duplicate or a SOP Instance UID conflict).
    Quarantined {
        /// The instance.
        triplet: Triplet,
        /// The quarantine entry.
        quarantine_id: u64,
        /// The sender's AE title.
        calling_ae_title: String,
    },
    /// Refused: the sender was told this failure status and nothing was kept.
    Rejected {
        /// Affected SOP Instance UID of the command.
        sop_instance_uid: String,
        /// The sender's AE title.
        calling_ae_title: String,
        /// The C-STORE-RSP status.
        status: u16,
        /// Why, for people.
        reason: String,
    },
    /// A storage commitment request is decided with every referenced
    /// instance committed (its N-EVENT-REPORT, event type 1, goes out next).
    Committed {
        /// The request's Transaction UID.
        transaction_uid: String,
        /// The AE that asked.
        requester_ae_title: String,
        /// How many instances it referenced (all committed).
        instance_count: usize,
    },
    /// A storage commitment request is decided with failures (its wait
    /// ended; event type 2 goes out next).
    CommitmentFailed {
        /// The request's Transaction UID.
        transaction_uid: String,
        /// The AE that asked.
        requester_ae_title: String,
        /// How many referenced instances are committed.
        committed_count: usize,
        /// The others: SOP Instance UID and Failure Reason (0x0112 no such
        /// object instance, 0x0119 class/instance conflict, 0x0110
        /// processing failure).
        failed: Vec<(String, u16)>,
    },
    /// A commitment report could not be delivered (retries exhausted, or the
    /// peer refused it): the requester was never told.
    CommitmentReportUndelivered {
        /// The request's Transaction UID.
        transaction_uid: String,
        /// The AE that asked.
        requester_ae_title: String,
        /// The last failure.
        reason: String,
    },
}

#[derive(Debug)]
struct Subscriber {
    sender: crossbeam_channel::Sender<StoreEvent>,
    lost: Arc<AtomicU64>,
}

/// A stream of [`StoreEvent`]s. Bounded: when the subscriber falls behind,
/// newer events are lost and counted ([`Subscription::lost_count`]); ingest
/// never waits for a subscriber. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    receiver: crossbeam_channel::Receiver<StoreEvent>,
    lost: Arc<AtomicU64>,
}

impl Subscription {
    /// The channel of events (use `recv`, `recv_timeout`, `try_recv`, `select!`).
    pub fn receiver(&self) -> &crossbeam_channel::Receiver<StoreEvent> {
        &self.receiver
    }

    /// How many events were lost because the channel was full.
    pub fn lost_count(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub(crate) struct EventHub {
    subscriber_count: AtomicUsize,
    subscribers: Mutex<Vec<Subscriber>>,
}

impl EventHub {
    /// Publishes to every live subscriber without blocking. The fast path
    /// (nobody subscribed) takes no lock.
    pub(crate) fn publish(&self, event: StoreEvent) {
        if self.subscriber_count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Ok(mut subscribers) = self.subscribers.lock() else {
            return;
        };
        subscribers.retain(
            |subscriber| match subscriber.sender.try_send(event.clone()) {
                Ok(()) => true,
                Err(crossbeam_channel::TrySendError::Full(_)) => {
                    subscriber.lost.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => false,
            },
        );
        self.subscriber_count
            .store(subscribers.len(), Ordering::Relaxed);
    }
}

/// What the Storage SCP answered since the store was opened, by outcome
/// ([`Store::counts`]). A quarantined instance is answered 0000 but is not
/// stored where `ls` and `show` look: it is counted apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IngestCounts {
    /// Stored and indexed (0000), replacements included.
    pub stored: u64,
    /// Held in quarantine (0000): duplicates and SOP Instance UID conflicts.
    pub quarantined: u64,
    /// Byte-identical duplicates dropped under `drop-if-identical` (0000).
    pub dropped: u64,
    /// Duplicates refused under `reject` (0111).
    pub rejected: u64,
    /// Refused or failed (any other status).
    pub failed: u64,
}

/// The counters behind [`IngestCounts`].
#[derive(Debug, Default)]
pub(crate) struct IngestCounters {
    stored: AtomicU64,
    quarantined: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
}

/// Which counter an answer goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    Stored,
    Quarantined,
    Dropped,
    Rejected,
    Failed,
}

impl IngestCounters {
    pub(crate) fn count(&self, what: Counted) {
        let counter = match what {
            Counted::Stored => &self.stored,
            Counted::Quarantined => &self.quarantined,
            Counted::Dropped => &self.dropped,
            Counted::Rejected => &self.rejected,
            Counted::Failed => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> IngestCounts {
        IngestCounts {
            stored: self.stored.load(Ordering::Relaxed),
            quarantined: self.quarantined.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
pub(crate) struct StoreShared {
    pub(crate) config: Config,
    pub(crate) layout: Layout,
    pub(crate) index: Index,
    pub(crate) events: EventHub,
    /// Set after repeated durability failures: every C-STORE is refused
    /// until restart (see docs/design/ingest.md).
    pub(crate) refusing: AtomicBool,
    /// What the Storage SCP answered.
    pub(crate) counters: IngestCounters,
    /// The object store (`[objects]`): reads of evicted segments, the
    /// uploader.
    pub(crate) objects: Option<Arc<crate::objects::Objects>>,
}

/// An opened data directory: its layout, its index and its event hub. Cheap
/// to clone (shared); `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) shared: Arc<StoreShared>,
}

impl Store {
    /// Opens (creating if missing) the data directory of `config` and its index.
    pub fn open(config: Config) -> Result<Store, StoreError> {
        let layout = Layout::new(config.server.data_directory.clone());
        layout
            .create_dirs()
            .map_err(|source| StoreError::DataDirectory {
                path: layout.root().to_owned(),
                source,
            })?;
        let options = IndexOptions {
            map_size_bytes: usize::try_from(config.storage.index_map_size).unwrap_or(usize::MAX),
            // Written zeros ahead of the index file's end, as segments get
            // theirs (`storage.segment_zero_fill`).
            zero_ahead_bytes: match config.storage.segment_zero_fill {
                crate::config::ZeroFill::On | crate::config::ZeroFill::Auto => {
                    INDEX_ZERO_AHEAD_BYTES
                }
                crate::config::ZeroFill::Off => 0,
            },
            ..IndexOptions::default()
        };
        let index = Index::open(layout.index_dir(), options)?;
        let objects = crate::objects::Objects::open(&config)?.map(Arc::new);
        Ok(Store {
            shared: Arc::new(StoreShared {
                config,
                layout,
                index,
                events: EventHub::default(),
                refusing: AtomicBool::new(false),
                counters: IngestCounters::default(),
                objects,
            }),
        })
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The data directory's layout.
    pub fn layout(&self) -> &Layout {
        &self.shared.layout
    }

    /// The object store (`[objects]`), when configured.
    pub(crate) fn objects(&self) -> Option<&Arc<crate::objects::Objects>> {
        self.shared.objects.as_ref()
    }

    /// The index (readers, stats; writes go through its single writer).
    pub fn index(&self) -> &Index {
        &self.shared.index
    }

    /// Whether repeated durability failures have put the store into its
    /// refusing state (every C-STORE fails with A700 until restart).
    pub fn is_refusing(&self) -> bool {
        self.shared.refusing.load(Ordering::Relaxed)
    }

    /// What the Storage SCP answered since the store was opened.
    pub fn counts(&self) -> IngestCounts {
        self.shared.counters.snapshot()
    }

    /// Subscribes to events with a channel of `capacity` events (at least 1,
    /// at most [`SUBSCRIPTION_CAPACITY_MAX`]).
    pub fn subscribe(&self, capacity: usize) -> Result<Subscription, StoreError> {
        let (sender, receiver) =
            crossbeam_channel::bounded(capacity.clamp(1, SUBSCRIPTION_CAPACITY_MAX));
        let lost = Arc::new(AtomicU64::new(0));
        let hub = &self.shared.events;
        let mut subscribers = hub
            .subscribers
            .lock()
            .map_err(|_| StoreError::TooManySubscribers)?;
        if subscribers.len() >= SUBSCRIBERS_MAX {
            return Err(StoreError::TooManySubscribers);
        }
        subscribers.push(Subscriber {
            sender,
            lost: lost.clone(),
        });
        hub.subscriber_count
            .store(subscribers.len(), Ordering::Relaxed);
        Ok(Subscription { receiver, lost })
    }

    /// The stored instance with this SOP Instance UID.
    pub fn instance_by_sop(
        &self,
        sop_instance_uid: &str,
    ) -> Result<Option<InstanceEntry>, StoreError> {
        Ok(self
            .shared
            .index
            .read()?
            .instance_by_sop(sop_instance_uid)?)
    }

    /// The stored instance with this triplet.
    pub fn instance(&self, triplet: &Triplet) -> Result<Option<InstanceRecord>, StoreError> {
        Ok(self.shared.index.read()?.instance(
            &triplet.study_instance_uid,
            &triplet.series_instance_uid,
            &triplet.sop_instance_uid,
        )?)
    }

    /// The path of a stored instance's Part 10 file in the files layout (an
    /// instance stored as a segment record has none: see
    /// [`Store::dataset_of`], whose [`DatasetLocation::part10_range`] names
    /// the file and range for either).
    ///
    /// [`DatasetLocation::part10_range`]: crate::store::source::DatasetLocation::part10_range
    pub fn instance_path(&self, record: &InstanceRecord) -> PathBuf {
        self.shared.layout.area_path(Area::Objects, record.file_id)
    }

    /// The bytes of the Part 10 file of the instance with this SOP Instance
    /// UID (preamble, file meta group, the data set as received), or `None`
    /// when no such instance is stored; from its file or its segment record
    /// alike. Reads the whole file: for very large instances read ranges of
    /// [`Store::dataset_of`]'s location instead.
    pub fn read_instance(&self, sop_instance_uid: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(entry) = self.instance_by_sop(sop_instance_uid)? else {
            return Ok(None);
        };
        let dataset = self.dataset_of(&entry)?;
        let (dataset, mut file) = crate::store::open_relocating(dataset, |old| {
            self.relocated(old, crate::store::source::Fetch::Now)
        })?;
        let (path, offset, length) = dataset.location.part10_range();
        crate::store::source::read_range_of(&mut file, path, offset, length).map(Some)
    }
}
