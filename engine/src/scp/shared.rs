//! What every core of a running Storage SCP shares: the store, the acceptor
//! policies, the commitment tracker's inbox, the association counters, the
//! in-doubt set and the free space claimed by instances in flight. Read-mostly: the counters are atomics or a short mutex
//! held only at association start and end.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::Mutex;

use sluice_net::assoc::AcceptorPolicy;
use sluice_net::scan::Leniency;

use super::ingest::space::SpaceAccount;
use crate::commit::tracker::TrackerHandle;
use crate::store::in_doubt::InDoubtSet;
use crate::store::Store;

/// What every core shares.
#[derive(Debug)]
pub(crate) struct ServerShared {
    pub(crate) store: Store,
    /// The policy of the main AE (storage, and commitment unless split).
    pub(crate) policy: AcceptorPolicy,
    /// The policy of a separate commitment AE (`network.commitment_ae_title`
    /// or `network.commitment_port`), when configured.
    pub(crate) commitment_policy: Option<AcceptorPolicy>,
    /// The listener index of the separate commitment port, if any.
    pub(crate) commitment_listener: Option<usize>,
    /// The TLS listener's index and its configuration (`network.tls_port`).
    pub(crate) tls: Option<(usize, std::sync::Arc<rustls::ServerConfig>)>,
    /// The TLS configuration of associations to remote AEs written
    /// `tls://` in `network.remote_aes` (built when one is).
    pub(crate) tls_client: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The checks of received instances that only warn (`[validation]`).
    pub(crate) leniency: Leniency,
    /// The commitment tracker's inbox.
    pub(crate) tracker: TrackerHandle,
    /// Established associations, across cores.
    pub(crate) established: AtomicU32,
    /// Established associations per calling AE title.
    pub(crate) per_calling_ae: Mutex<HashMap<String, u32>>,
    /// Files committed in doubt and not yet durable (shared with the
    /// commitment tracker).
    pub(crate) in_doubt: InDoubtSet,
    /// The C-MOVE destinations: each AE of `network.remote_aes` with its
    /// address, resolved once at start (`None` when it did not resolve), so
    /// a core never waits for a name lookup.
    pub(crate) move_destinations: HashMap<String, Option<SocketAddr>>,
    /// The free space the instances in flight still claim, for the floor.
    pub(crate) space: SpaceAccount,
    /// The metrics the cores count (`[metrics]`; counted whether or not
    /// the endpoint is open: a few relaxed stores per C-STORE).
    pub(crate) metrics: crate::metrics::Metrics,
    /// Cluster mode (`[cluster]`): the catalogue's publisher.
    pub(crate) cluster: Option<crate::cluster::Cluster>,
    /// The audit trail's queue (`[audit]`; a no-op when off).
    pub(crate) audit: crate::audit::Audit,
    /// The segments layout's segment ids and epoch, shared by the cores
    /// (`None` on the files layout).
    pub(crate) segment_ids: Option<std::sync::Arc<super::ingest::segments::SegmentIds>>,
    /// The segments layout's preparer of written segments
    /// (`storage.segment_zero_fill`), started after start-up recovery and
    /// before the cores: unset on the files layout and when off.
    pub(crate) segment_preparer:
        std::sync::OnceLock<std::sync::Arc<super::ingest::prepare::SegmentPreparer>>,
    /// What online compaction did (`crate::compactor`; zero when off).
    pub(crate) compaction: std::sync::Arc<crate::compactor::Counters>,
    /// Where each core says it has drained, at shutdown (`Server::drain`).
    pub(crate) drained: crossbeam_channel::Sender<DrainReport>,
}

/// A core's word that it has drained: no association left, no instance in
/// progress.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DrainReport {
    /// Associations it aborted at the drain's deadline with requests still
    /// unanswered.
    pub(crate) aborted_busy: usize,
}
