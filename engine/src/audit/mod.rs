//! The audit trail (`[audit]`): DICOM audit messages (PS3.15 A.5) of what
//! the server does, written by a thread of its own.
//!
//! The cores call one method of [`Audit`] per event site; it copies what
//! the message needs into an [`Event`] and offers it to a bounded queue
//! (`try_send`: a full queue drops the event and counts it, it never
//! waits). The audit thread turns events into messages (`message`),
//! looks up what the event site did not have at hand (a study's patient,
//! from the index), sums instances per association and study into one
//! DICOM Instances Transferred message each (sent when the association
//! ends), and writes them out (`sink`). Which event becomes which message:
//! docs/operations.md, "Audit trail".

mod message;
mod sink;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::config::Config;
use crate::escape::Escaped;
use crate::store::Store;
use message::{
    codes, AccessPoint, AuditMessage, NameOrQuery, Object, Outcome, Participant, StudyContents,
};

/// At most one "audit events dropped" line per this many seconds.
const DROP_LOG_INTERVAL_S: u64 = 10;
/// The most (association, study) groups of transferred instances the
/// audit thread sums at once; past it, every group is written out early.
const TRANSFER_GROUPS_MAX: usize = 4096;
/// The most associations whose peers the audit thread remembers.
const ASSOCIATIONS_MAX: usize = 65_536;
/// How long a stopping server waits for the audit thread to write what is
/// queued.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// An association, as the cores name it: (core, serial).
pub(crate) type AssociationKey = (usize, u64);

/// Why a security alert was raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alert {
    /// The TLS handshake refused the peer (its certificate, or no TLS).
    TlsRefused,
    /// The TLS handshake of an association Sluice opened refused the
    /// remote's certificate.
    TlsRefusedOutbound,
    /// No access rule admits the Calling AE Title from this address.
    AccessTableRefused,
    /// The association's access rule does not grant the service (0124).
    ServiceNotGranted,
}

/// What the cores tell the audit thread.
#[derive(Debug)]
pub(crate) enum Event {
    Application {
        time: SystemTime,
        started: bool,
    },
    AssociationAccepted {
        time: SystemTime,
        key: AssociationKey,
        peer: Option<SocketAddr>,
        calling_ae: String,
    },
    AssociationRejected {
        time: SystemTime,
        peer: Option<SocketAddr>,
        calling_ae: String,
        reason: String,
    },
    AssociationEnded {
        time: SystemTime,
        key: AssociationKey,
    },
    InstanceStored {
        key: AssociationKey,
        study_instance_uid: String,
        sop_class_uid: String,
        patient_id: String,
        patient_name: String,
        accession_number: String,
        study_description: String,
    },
    InstanceSent {
        /// The C-MOVE or C-GET's association.
        origin: AssociationKey,
        destination_ae: String,
        destination: Option<SocketAddr>,
        study_instance_uid: String,
        sop_class_uid: String,
    },
    Query {
        time: SystemTime,
        key: AssociationKey,
        sop_class_uid: String,
        transfer_syntax_uid: String,
        identifier: Vec<u8>,
    },
    SecurityAlert {
        time: SystemTime,
        alert: Alert,
        peer: Option<SocketAddr>,
        calling_ae: String,
        description: String,
    },
    /// Write out what is summed and stop.
    Stop,
}

/// The cores' side of the audit trail: cheap to call when it is off.
#[derive(Debug, Default)]
pub(crate) struct Audit {
    sender: Option<Sender<Event>>,
    dropped: Arc<AtomicU64>,
    /// When the last "dropped" line was logged (seconds since the epoch).
    dropped_logged_at: AtomicU64,
}

impl Audit {
    /// Starts the audit thread when `[audit]` names a file or a collector:
    /// the file is opened and the collector resolved now, so a mistake
    /// stops the start.
    pub(crate) fn start(
        config: &Config,
        store: &Store,
    ) -> Result<(Audit, Option<AuditThread>), String> {
        let audit = &config.audit;
        if audit.audit_file.is_none() && audit.audit_syslog.is_none() {
            return Ok((Audit::default(), None));
        }
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_default();
        let file = match &audit.audit_file {
            Some(path) => Some(
                sink::JsonLines::open(path)
                    .map_err(|error| format!("audit.audit_file {}: {error}", path.display()))?,
            ),
            None => None,
        };
        let syslog = match &audit.audit_syslog {
            Some(address) => {
                // RFC 5425: the collector verified against its CA, Sluice's
                // certificate presented when it has one.
                let tls = match &audit.audit_syslog_ca {
                    Some(ca) => Some(
                        crate::tls::client_config(
                            ca,
                            config
                                .network
                                .tls_certificate
                                .as_deref()
                                .zip(config.network.tls_private_key.as_deref()),
                        )
                        .map_err(|error| format!("audit.audit_syslog_ca: {error}"))?,
                    ),
                    None => None,
                };
                Some(
                    sink::Syslog::open(address, &hostname, tls)
                        .map_err(|error| format!("audit.audit_syslog {address}: {error}"))?,
                )
            }
            None => None,
        };
        let (sender, receiver) = crossbeam_channel::bounded(audit.audit_queue_length as usize);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            store: store.clone(),
            ae_title: config.network.ae_title.as_str().to_owned(),
            hostname,
            file,
            syslog,
            dropped: dropped.clone(),
            associations: HashMap::new(),
            transfers: BTreeMap::new(),
            write_failures_logged: false,
        };
        let thread = std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || writer.run(&receiver))
            .map_err(|error| format!("cannot start the audit thread: {error}"))?;
        Ok((
            Audit {
                sender: Some(sender.clone()),
                dropped,
                dropped_logged_at: AtomicU64::new(0),
            },
            Some(AuditThread { sender, thread }),
        ))
    }

    /// Events dropped (queue full, or a message not written).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn offer(&self, event: impl FnOnce() -> Event) {
        let Some(sender) = &self.sender else {
            return;
        };
        match sender.try_send(event()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |since| since.as_secs());
                let last = self.dropped_logged_at.load(Ordering::Relaxed);
                if now >= last + DROP_LOG_INTERVAL_S
                    && self
                        .dropped_logged_at
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(
                        dropped_total = total,
                        "audit events dropped: the audit queue is full (audit.audit_queue_length); the collector or the file is too slow"
                    );
                }
            }
        }
    }

    pub(crate) fn application(&self, started: bool) {
        self.offer(|| Event::Application {
            time: SystemTime::now(),
            started,
        });
    }

    pub(crate) fn association_accepted(
        &self,
        key: AssociationKey,
        peer: Option<SocketAddr>,
        calling_ae: &str,
    ) {
        self.offer(|| Event::AssociationAccepted {
            time: SystemTime::now(),
            key,
            peer,
            calling_ae: calling_ae.to_owned(),
        });
    }

    /// An association rejected (refused by the access rules: also
    /// [`Audit::security_alert`]).
    pub(crate) fn association_rejected(
        &self,
        peer: Option<SocketAddr>,
        calling_ae: &str,
        reason: &str,
    ) {
        self.offer(|| Event::AssociationRejected {
            time: SystemTime::now(),
            peer,
            calling_ae: calling_ae.to_owned(),
            reason: reason.to_owned(),
        });
    }

    pub(crate) fn association_ended(&self, key: AssociationKey) {
        self.offer(|| Event::AssociationEnded {
            time: SystemTime::now(),
            key,
        });
    }

    /// An instance stored (or held in quarantine) and answered success.
    pub(crate) fn instance_stored(
        &self,
        key: AssociationKey,
        instance: &sluice_index::NewInstance,
    ) {
        self.offer(|| Event::InstanceStored {
            key,
            study_instance_uid: instance.triplet.study_instance_uid.clone(),
            sop_class_uid: instance.record.sop_class_uid.clone(),
            patient_id: instance.study.patient_id.clone(),
            patient_name: instance.study.patient_name.clone(),
            accession_number: instance.study.accession_number.clone(),
            study_description: instance.study.study_description.clone(),
        });
    }

    /// A C-MOVE or C-GET sub-operation answered success by its
    /// destination.
    pub(crate) fn instance_sent(
        &self,
        origin: AssociationKey,
        destination: (&str, Option<SocketAddr>),
        dataset: &crate::store::StoredDataset,
    ) {
        self.offer(|| Event::InstanceSent {
            origin,
            destination_ae: destination.0.to_owned(),
            destination: destination.1,
            study_instance_uid: dataset.triplet.study_instance_uid.clone(),
            sop_class_uid: dataset.sop_class_uid.clone(),
        });
    }

    /// A C-FIND taken: its identifier as received.
    pub(crate) fn query(
        &self,
        key: AssociationKey,
        sop_class_uid: &str,
        transfer_syntax_uid: &str,
        identifier: &[u8],
    ) {
        self.offer(|| Event::Query {
            time: SystemTime::now(),
            key,
            sop_class_uid: sop_class_uid.to_owned(),
            transfer_syntax_uid: transfer_syntax_uid.to_owned(),
            identifier: identifier.to_vec(),
        });
    }

    /// A security alert about `peer`, whose AE title is `calling_ae` (the
    /// Called AE Title when Sluice opened the association; empty when not
    /// known yet, as in a TLS handshake).
    pub(crate) fn security_alert(
        &self,
        alert: Alert,
        peer: Option<SocketAddr>,
        calling_ae: &str,
        description: &str,
    ) {
        self.offer(|| Event::SecurityAlert {
            time: SystemTime::now(),
            alert,
            peer,
            calling_ae: calling_ae.to_owned(),
            description: description.to_owned(),
        });
    }
}

/// The audit thread, stopped by [`AuditThread::stop`] (after the
/// Application Stop event).
#[derive(Debug)]
pub(crate) struct AuditThread {
    sender: Sender<Event>,
    thread: JoinHandle<()>,
}

impl AuditThread {
    /// Writes out what is queued and summed, then stops (waiting at most a
    /// few seconds for a slow collector).
    pub(crate) fn stop(self) {
        if self.sender.send_timeout(Event::Stop, STOP_WAIT).is_err() {
            tracing::warn!(
                "the audit thread did not take the stop in time; audit events queued may be lost"
            );
            return;
        }
        let deadline = std::time::Instant::now() + STOP_WAIT;
        while !self.thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.thread.is_finished() {
            let _ = self.thread.join();
        } else {
            tracing::warn!("the audit thread did not finish writing in time");
        }
    }
}

/// An association the audit thread knows: who is at the other end.
#[derive(Debug, Clone)]
struct Peer {
    calling_ae: String,
    address: Option<SocketAddr>,
}

/// Instances of one study moved on one association, summed.
#[derive(Debug, Default)]
struct Transfer {
    first_at: Option<SystemTime>,
    /// Stored here (the remote sent), or sent by Sluice.
    stored: bool,
    remote_ae: String,
    remote: Option<SocketAddr>,
    patient_id: String,
    patient_name: String,
    study_description: String,
    contents: StudyContents,
}

/// The audit thread's state.
struct Writer {
    store: Store,
    ae_title: String,
    hostname: String,
    file: Option<sink::JsonLines>,
    syslog: Option<sink::Syslog>,
    dropped: Arc<AtomicU64>,
    associations: HashMap<AssociationKey, Peer>,
    /// (association, study, stored) -> what was moved.
    transfers: BTreeMap<(AssociationKey, String, bool), Transfer>,
    write_failures_logged: bool,
}

impl Writer {
    fn run(mut self, receiver: &Receiver<Event>) {
        while let Ok(event) = receiver.recv() {
            let stop = matches!(event, Event::Stop);
            self.handle(event);
            // Write out in batches: flush once the queue is empty.
            if stop || receiver.is_empty() {
                self.flush();
            }
            if stop {
                break;
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Application { time, started } => {
                let message = self.application(time, started);
                self.write(&message);
            }
            Event::AssociationAccepted {
                time,
                key,
                peer,
                calling_ae,
            } => {
                if self.associations.len() >= ASSOCIATIONS_MAX {
                    // Ends lost to a full queue leave entries behind: forget
                    // them rather than grow.
                    self.associations.clear();
                }
                let peer = Peer {
                    calling_ae,
                    address: peer,
                };
                let message = self.authentication(time, &peer, true, Outcome::Success, None);
                self.write(&message);
                self.associations.insert(key, peer);
            }
            Event::AssociationRejected {
                time,
                peer,
                calling_ae,
                reason,
            } => {
                let peer = Peer {
                    calling_ae,
                    address: peer,
                };
                let message =
                    self.authentication(time, &peer, true, Outcome::MinorFailure, Some(reason));
                self.write(&message);
            }
            Event::AssociationEnded { time, key } => {
                self.write_transfers(Some(key));
                if let Some(peer) = self.associations.remove(&key) {
                    let message = self.authentication(time, &peer, false, Outcome::Success, None);
                    self.write(&message);
                }
            }
            Event::InstanceStored {
                key,
                study_instance_uid,
                sop_class_uid,
                patient_id,
                patient_name,
                accession_number,
                study_description,
            } => {
                let peer = self.associations.get(&key).cloned();
                let transfer = self.transfer(key, study_instance_uid, true);
                if transfer.first_at.is_none() {
                    transfer.first_at = Some(SystemTime::now());
                    if let Some(peer) = peer {
                        transfer.remote_ae = peer.calling_ae;
                        transfer.remote = peer.address;
                    }
                    transfer.patient_id = patient_id;
                    transfer.patient_name = patient_name;
                    transfer.study_description = study_description;
                    transfer.contents.accession_number = accession_number;
                }
                *transfer
                    .contents
                    .sop_classes
                    .entry(sop_class_uid)
                    .or_insert(0) += 1;
            }
            Event::InstanceSent {
                origin,
                destination_ae,
                destination,
                study_instance_uid,
                sop_class_uid,
            } => {
                let fresh =
                    !self
                        .transfers
                        .contains_key(&(origin, study_instance_uid.clone(), false));
                let study = if fresh {
                    self.study(&study_instance_uid)
                } else {
                    None
                };
                let transfer = self.transfer(origin, study_instance_uid, false);
                if transfer.first_at.is_none() {
                    transfer.first_at = Some(SystemTime::now());
                    transfer.remote_ae = destination_ae;
                    transfer.remote = destination;
                    if let Some(study) = study {
                        transfer.patient_id = study.patient_id;
                        transfer.patient_name = study.patient_name;
                        transfer.study_description = study.study_description;
                        transfer.contents.accession_number = study.accession_number;
                    }
                }
                *transfer
                    .contents
                    .sop_classes
                    .entry(sop_class_uid)
                    .or_insert(0) += 1;
            }
            Event::Query {
                time,
                key,
                sop_class_uid,
                transfer_syntax_uid,
                identifier,
            } => {
                let peer = self.associations.get(&key).cloned().unwrap_or(Peer {
                    calling_ae: String::new(),
                    address: None,
                });
                let message =
                    self.query(time, &peer, sop_class_uid, transfer_syntax_uid, identifier);
                self.write(&message);
            }
            Event::SecurityAlert {
                time,
                alert,
                peer,
                calling_ae,
                description,
            } => {
                let message = self.security_alert(time, alert, peer, calling_ae, description);
                self.write(&message);
            }
            Event::Stop => self.write_transfers(None),
        }
    }

    fn transfer(&mut self, key: AssociationKey, study: String, stored: bool) -> &mut Transfer {
        if self.transfers.len() >= TRANSFER_GROUPS_MAX
            && !self.transfers.contains_key(&(key, study.clone(), stored))
        {
            self.write_transfers(None);
        }
        let transfer = self.transfers.entry((key, study, stored)).or_default();
        transfer.stored = stored;
        transfer
    }

    /// The study attributes the index holds (for instances sent, whose
    /// event site has only UIDs).
    fn study(&self, study_instance_uid: &str) -> Option<sluice_index::StudyAttributes> {
        let read = self.store.index().read().ok()?;
        read.study(study_instance_uid)
            .ok()
            .flatten()
            .map(|record| record.attributes)
    }

    /// Writes the summed transfers of `key` (all of them: `None`).
    fn write_transfers(&mut self, key: Option<AssociationKey>) {
        let keys: Vec<_> = self
            .transfers
            .keys()
            .filter(|(association, _, _)| key.is_none_or(|key| *association == key))
            .cloned()
            .collect();
        for group in keys {
            if let Some(transfer) = self.transfers.remove(&group) {
                let message = self.transferred(&group.1, transfer);
                self.write(&message);
            }
        }
    }

    // ----- messages -----

    /// Sluice itself as an active participant.
    fn sluice(&self, requestor: bool, role: Option<message::Code>) -> Participant {
        Participant {
            user_id: self.ae_title.clone(),
            alternative_user_id: Some(std::process::id().to_string()),
            requestor,
            access_point: (!self.hostname.is_empty())
                .then(|| AccessPoint::HostName(self.hostname.clone())),
            role,
        }
    }

    fn remote(
        calling_ae: &str,
        address: Option<SocketAddr>,
        requestor: bool,
        role: Option<message::Code>,
    ) -> Participant {
        Participant {
            // UserID is mandatory: an AE unknown (a TLS refusal comes before
            // the A-ASSOCIATE-RQ) is named by its address.
            user_id: if calling_ae.is_empty() {
                address
                    .map(|address| address.to_string())
                    .unwrap_or_default()
            } else {
                calling_ae.to_owned()
            },
            alternative_user_id: None,
            requestor,
            access_point: AccessPoint::of(address),
            role,
        }
    }

    fn message(
        &self,
        event_id: message::Code,
        action: &'static str,
        time: SystemTime,
        outcome: Outcome,
    ) -> AuditMessage {
        AuditMessage {
            event_id,
            action,
            time,
            outcome,
            event_types: Vec::new(),
            description: None,
            participants: Vec::new(),
            source_id: self.ae_title.clone(),
            objects: Vec::new(),
        }
    }

    /// A.5.3.1 Application Activity.
    fn application(&self, time: SystemTime, started: bool) -> AuditMessage {
        let mut message = self.message(codes::APPLICATION_ACTIVITY, "E", time, Outcome::Success);
        message.event_types = vec![if started {
            codes::APPLICATION_START
        } else {
            codes::APPLICATION_STOP
        }];
        message.participants = vec![self.sluice(false, Some(codes::APPLICATION))];
        message
    }

    /// A.5.3 User Authentication: an association's A-ASSOCIATE (Login,
    /// its outcome the acceptance) and its end (Logout); the remote AE is
    /// the process authenticated, Sluice the authenticating node.
    fn authentication(
        &self,
        time: SystemTime,
        peer: &Peer,
        login: bool,
        outcome: Outcome,
        description: Option<String>,
    ) -> AuditMessage {
        let mut message = self.message(codes::USER_AUTHENTICATION, "E", time, outcome);
        message.event_types = vec![if login { codes::LOGIN } else { codes::LOGOUT }];
        message.description = description;
        message.participants = vec![
            Self::remote(&peer.calling_ae, peer.address, true, None),
            self.sluice(false, None),
        ];
        message
    }

    /// A.5.3 DICOM Instances Transferred: one study of one association.
    fn transferred(&self, study_instance_uid: &str, transfer: Transfer) -> AuditMessage {
        let time = transfer.first_at.unwrap_or_else(SystemTime::now);
        // Create when Sluice received them, Read when it sent them.
        let action = if transfer.stored { "C" } else { "R" };
        let mut message =
            self.message(codes::INSTANCES_TRANSFERRED, action, time, Outcome::Success);
        let remote_role = if transfer.stored {
            codes::SOURCE
        } else {
            codes::DESTINATION
        };
        let own_role = if transfer.stored {
            codes::DESTINATION
        } else {
            codes::SOURCE
        };
        message.participants = vec![
            Self::remote(
                &transfer.remote_ae,
                transfer.remote,
                transfer.stored,
                Some(remote_role),
            ),
            self.sluice(!transfer.stored, Some(own_role)),
        ];
        message.objects = vec![
            Object {
                type_code: "2",
                type_code_role: "3",
                id_type: codes::STUDY_INSTANCE_UID,
                id: study_instance_uid.to_owned(),
                name_or_query: NameOrQuery::Name(transfer.study_description),
                details: Vec::new(),
                study_description: Some(transfer.contents),
            },
            patient(transfer.patient_id, transfer.patient_name),
        ];
        message
    }

    /// A.5.3 Query: a C-FIND, its identifier base64 in
    /// ParticipantObjectQuery, its transfer syntax as a detail.
    fn query(
        &self,
        time: SystemTime,
        peer: &Peer,
        sop_class_uid: String,
        transfer_syntax_uid: String,
        identifier: Vec<u8>,
    ) -> AuditMessage {
        let mut message = self.message(codes::QUERY, "E", time, Outcome::Success);
        message.participants = vec![
            Self::remote(&peer.calling_ae, peer.address, true, Some(codes::SOURCE)),
            self.sluice(false, Some(codes::DESTINATION)),
        ];
        message.objects = vec![Object {
            type_code: "2",
            type_code_role: "24",
            id_type: codes::SOP_CLASS_UID,
            id: sop_class_uid,
            name_or_query: NameOrQuery::Query(identifier),
            details: vec![("TransferSyntax", transfer_syntax_uid.into_bytes())],
            study_description: None,
        }];
        message
    }

    /// A.5.3 Security Alert: the peer refused, Sluice reporting it; the
    /// alert subject is the peer's node.
    fn security_alert(
        &self,
        time: SystemTime,
        alert: Alert,
        peer: Option<SocketAddr>,
        calling_ae: String,
        description: String,
    ) -> AuditMessage {
        let mut message = self.message(codes::SECURITY_ALERT, "E", time, Outcome::MinorFailure);
        message.event_types = vec![match alert {
            Alert::TlsRefused | Alert::TlsRefusedOutbound | Alert::AccessTableRefused => {
                codes::NODE_AUTHENTICATION
            }
            Alert::ServiceNotGranted => codes::USE_OF_RESTRICTED_FUNCTION,
        }];
        message.description = Some(description.clone());
        // Who asked: the remote, unless Sluice opened the association.
        let sluice_asked = alert == Alert::TlsRefusedOutbound;
        message.participants = vec![
            self.sluice(sluice_asked, Some(codes::APPLICATION)),
            Self::remote(&calling_ae, peer, !sluice_asked, None),
        ];
        let node = peer.map(|peer| peer.to_string()).unwrap_or_default();
        message.objects = vec![Object {
            type_code: "2",
            type_code_role: "13",
            id_type: codes::NODE_ID,
            id: node.clone(),
            name_or_query: NameOrQuery::Name(if calling_ae.is_empty() {
                node
            } else {
                calling_ae
            }),
            details: vec![("Alert Description", description.into_bytes())],
            study_description: None,
        }];
        message
    }

    // ----- output -----

    fn write(&mut self, message: &AuditMessage) {
        let xml = match message.to_xml() {
            Ok(xml) => xml,
            Err(error) => {
                // Writing into memory cannot fail; a bug if it did.
                debug_assert!(false, "audit message not written: {error}");
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let failure = message.outcome != Outcome::Success;
        let mut failed: Option<String> = None;
        if let Some(file) = &mut self.file {
            if let Err(error) = file.write(
                message.time,
                message.event_name(),
                message.outcome.indicator(),
                &xml,
            ) {
                failed = Some(format!("{}: {error}", file.path().display()));
            }
        }
        if let Some(syslog) = &mut self.syslog {
            if let Err(error) = syslog.send(message.time, failure, &xml) {
                failed = Some(format!("{}: {error}", syslog.address()));
            }
        }
        match failed {
            Some(why) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.write_failures_logged {
                    tracing::warn!(
                        error = %Escaped(&why),
                        "an audit message was not written (counted in sluice_audit_messages_dropped_total; logged once until one is written again)"
                    );
                    self.write_failures_logged = true;
                }
            }
            None => self.write_failures_logged = false,
        }
    }

    fn flush(&mut self) {
        if let Some(file) = &mut self.file {
            if let Err(error) = file.flush() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %file.path().display(), %error, "the audit file cannot be written");
            }
        }
    }
}

/// The patient participant object (A.5.3: ID type Patient Number, the
/// name as ParticipantObjectName).
fn patient(patient_id: String, patient_name: String) -> Object {
    Object {
        type_code: "1",
        type_code_role: "1",
        id_type: codes::PATIENT_NUMBER,
        id: patient_id,
        name_or_query: NameOrQuery::Name(patient_name),
        details: Vec::new(),
        study_description: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full queue drops and counts, and never waits: the cores' side
    /// against a real bounded channel nobody reads.
    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let (sender, receiver) = crossbeam_channel::bounded(2);
        let audit = Audit {
            sender: Some(sender),
            dropped: Arc::new(AtomicU64::new(0)),
            dropped_logged_at: AtomicU64::new(0),
        };
        for _ in 0..5 {
            audit.association_ended((0, 1));
        }
        assert_eq!(receiver.len(), 2);
        assert_eq!(audit.dropped(), 3);
        // The first drop logged and noted when; the next ones within the
        // interval did not move it.
        assert_ne!(audit.dropped_logged_at.load(Ordering::Relaxed), 0);
    }

    /// Off: nothing is made, nothing counted.
    #[test]
    fn off_is_a_no_op() {
        let audit = Audit::default();
        audit.application(true);
        audit.security_alert(Alert::TlsRefused, None, "", "x");
        assert_eq!(audit.dropped(), 0);
    }
}
