//! A test-only DICOM acceptor: std `TcpListener`, one thread per connection,
//! driven by `sluice-net`'s association endpoint and negotiation policy.
//!
//! It exists to prove the protocol core against real peers (DCMTK,
//! pynetdicom) before the engine exists, and it keeps doing so afterwards: it
//! answers C-ECHO, and C-STORE by keeping the received data set bytes in
//! memory so a test can compare them with the file that was sent. It is not a
//! server: no durability, no limits beyond the policy's, data sets held whole.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_net::assoc::{
    negotiate, AbortCause, AcceptedAbstractSyntax, AcceptorPolicy, AeTitleFilter, AssociationLoad,
    Indication, NegotiatedAssociation, NegotiationOutcome, Role,
};
use sluice_net::dimse::{CEchoRsp, CStoreRq, CStoreRsp, Command, Status, StatusDetail};
use sluice_net::endpoint::{Endpoint, EndpointConfig, Incoming};
use sluice_net::uid;

/// Implementation Class UID the test acceptor announces.
pub const TEST_IMPLEMENTATION_CLASS_UID: &str = "1.2.826.0.1.3680043.10.1234.99";

/// A policy serving `ae_title` with Verification and every standard storage
/// SOP class, each with every transfer syntax of net's catalogue. Where a
/// sender proposes several, explicit VR LE is preferred, then implicit VR LE,
/// then the rest in catalogue order.
pub fn storage_policy(ae_title: &str) -> AcceptorPolicy {
    let mut policy = AcceptorPolicy::new(
        AeTitleFilter::Only(vec![ae_title.to_owned()]),
        TEST_IMPLEMENTATION_CLASS_UID,
    );
    let mut transfer_syntaxes: Vec<String> = vec![
        uid::ts::EXPLICIT_VR_LITTLE_ENDIAN.to_owned(),
        uid::ts::IMPLICIT_VR_LITTLE_ENDIAN.to_owned(),
    ];
    for ts in uid::transfer_syntaxes() {
        if !transfer_syntaxes.iter().any(|known| known == ts.uid) {
            transfer_syntaxes.push(ts.uid.to_owned());
        }
    }
    policy.abstract_syntaxes.push(AcceptedAbstractSyntax::new(
        uid::VERIFICATION,
        [
            uid::ts::IMPLICIT_VR_LITTLE_ENDIAN,
            uid::ts::EXPLICIT_VR_LITTLE_ENDIAN,
        ],
    ));
    for class in uid::standard_storage_sop_classes() {
        policy.abstract_syntaxes.push(AcceptedAbstractSyntax::new(
            class.uid,
            transfer_syntaxes.clone(),
        ));
    }
    policy
}

/// What happened to one association, as the acceptor saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssociationOutcome {
    /// Accepted; then released normally.
    Released { calling_ae_title: String },
    /// Rejected with these (result, source, reason) codes.
    Rejected { codes: (u8, u8, u8) },
    /// Aborted (by either side, or a timer) for this cause.
    Aborted { cause: String },
    /// The connection ended some other way (transport closed, I/O error).
    Ended { why: String },
}

/// One data set received by C-STORE.
#[derive(Debug, Clone)]
pub struct ReceivedInstance {
    pub calling_ae_title: String,
    pub affected_sop_class_uid: String,
    pub affected_sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub dataset: Vec<u8>,
}

/// Everything the acceptor observed, for assertions.
#[derive(Debug, Default)]
pub struct Observed {
    pub outcomes: Vec<AssociationOutcome>,
    pub accepted: Vec<NegotiatedAssociation>,
    pub echoes: usize,
    pub instances: Vec<ReceivedInstance>,
}

/// The acceptor's settings.
#[derive(Debug, Clone)]
pub struct AcceptorSettings {
    pub policy: AcceptorPolicy,
    pub association_limit: u32,
    pub artim: Duration,
    pub idle: Duration,
}

impl AcceptorSettings {
    pub fn new(policy: AcceptorPolicy) -> Self {
        Self {
            policy,
            association_limit: 64,
            artim: Duration::from_secs(10),
            idle: Duration::from_secs(30),
        }
    }
}

/// A running test acceptor; stopped and joined on drop.
#[derive(Debug)]
pub struct TestAcceptor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    observed: Arc<Mutex<Observed>>,
    listener_thread: Option<JoinHandle<()>>,
}

impl TestAcceptor {
    /// Binds 127.0.0.1 on an ephemeral port and starts accepting.
    pub fn start(settings: AcceptorSettings) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let observed = Arc::new(Mutex::new(Observed::default()));
        let settings = Arc::new(settings);
        let established = Arc::new(AtomicU32::new(0));
        let listener_thread = {
            let (stop, observed) = (stop.clone(), observed.clone());
            std::thread::spawn(move || {
                let mut connections = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (settings, observed, established, stop) = (
                                settings.clone(),
                                observed.clone(),
                                established.clone(),
                                stop.clone(),
                            );
                            connections.push(std::thread::spawn(move || {
                                let outcome = serve_connection(
                                    stream,
                                    &settings,
                                    &observed,
                                    &established,
                                    &stop,
                                );
                                observed.lock().unwrap().outcomes.push(outcome);
                            }));
                        }
                        Err(error) if error.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(error) => panic!("accept failed: {error}"),
                    }
                }
                for connection in connections {
                    connection.join().expect("connection thread panicked");
                }
            })
        };
        Self {
            addr,
            stop,
            observed,
            listener_thread: Some(listener_thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Waits until `count` associations have ended (any outcome), then
    /// returns a snapshot of what was observed.
    pub fn wait_for_outcomes(&self, count: usize, timeout: Duration) -> Observed {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let observed = self.observed.lock().unwrap();
                if observed.outcomes.len() >= count {
                    return Observed {
                        outcomes: observed.outcomes.clone(),
                        accepted: observed.accepted.clone(),
                        echoes: observed.echoes,
                        instances: observed.instances.clone(),
                    };
                }
                assert!(
                    Instant::now() < deadline,
                    "only {} of {count} associations ended within {timeout:?}: {:?}",
                    observed.outcomes.len(),
                    observed.outcomes
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestAcceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.listener_thread.take() {
            let result = thread.join();
            if !std::thread::panicking() {
                result.expect("acceptor thread panicked");
            }
        }
    }
}

struct Connection<'a> {
    stream: TcpStream,
    settings: &'a AcceptorSettings,
    observed: &'a Mutex<Observed>,
    established: &'a AtomicU32,
    endpoint: Endpoint,
    counted: bool,
    closed: bool,
    outcome: Option<AssociationOutcome>,
    pending_store: Option<(u8, CStoreRq)>,
    dataset: Vec<u8>,
    calling_ae_title: String,
}

fn serve_connection(
    stream: TcpStream,
    settings: &AcceptorSettings,
    observed: &Mutex<Observed>,
    established: &AtomicU32,
    stop: &AtomicBool,
) -> AssociationOutcome {
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let mut config = EndpointConfig::default();
    config.artim = settings.artim;
    config.idle = settings.idle;
    let mut connection = Connection {
        stream,
        settings,
        observed,
        established,
        endpoint: Endpoint::new(Role::Acceptor, config),
        counted: false,
        closed: false,
        outcome: None,
        pending_store: None,
        dataset: Vec::new(),
        calling_ae_title: String::new(),
    };
    let outcome = connection.run(stop);
    if connection.counted {
        established.fetch_sub(1, Ordering::SeqCst);
    }
    outcome
}

impl Connection<'_> {
    fn run(&mut self, stop: &AtomicBool) -> AssociationOutcome {
        self.endpoint
            .transport_connected(Instant::now())
            .expect("a fresh acceptor takes a connection");
        let mut buffer = vec![0u8; 64 * 1024];
        while !self.closed && !self.endpoint.close_requested() && !self.endpoint.is_closed() {
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) {
                self.endpoint.abort(now);
                self.flush();
                break;
            }
            let wait = match self.endpoint.next_deadline() {
                None => Duration::from_millis(200),
                Some(deadline) if deadline <= now => {
                    self.endpoint.handle_timeout(now);
                    self.events();
                    continue;
                }
                Some(deadline) => (deadline - now).min(Duration::from_millis(200)),
            };
            self.stream
                .set_read_timeout(Some(wait))
                .expect("read timeout");
            match self.stream.read(&mut buffer) {
                Ok(0) => {
                    self.endpoint.transport_closed(Instant::now());
                    self.events();
                }
                Ok(length) => self.received(&buffer[..length]),
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(error) => {
                    self.outcome.get_or_insert(AssociationOutcome::Ended {
                        why: error.to_string(),
                    });
                    break;
                }
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        self.outcome.take().unwrap_or(AssociationOutcome::Ended {
            why: "transport closed".into(),
        })
    }

    fn received(&mut self, bytes: &[u8]) {
        let mut cursor = 0;
        while let Some(incoming) = self.endpoint.receive(bytes, &mut cursor, Instant::now()) {
            self.incoming(bytes, incoming);
            self.flush();
        }
        self.flush();
    }

    /// Handles the events raised outside `receive` (timeouts, closes).
    fn events(&mut self) {
        while let Some(incoming) = self.endpoint.poll_event() {
            self.incoming(&[], incoming);
        }
        self.flush();
    }

    fn incoming(&mut self, input: &[u8], incoming: Incoming) {
        match incoming {
            Incoming::Indication(indication) => self.indication(indication),
            Incoming::Command {
                context_id,
                command,
                ..
            } => self.command(context_id, command),
            Incoming::Data {
                context_id,
                range,
                last,
            } => {
                self.dataset
                    .extend_from_slice(input.get(range).expect("a range of the input"));
                if last {
                    self.dataset_complete(context_id);
                }
            }
            Incoming::Violation(violation) => {
                // A malformed PDU is followed by the state machine's abort
                // indication; a DIMSE violation was aborted by the endpoint.
                self.outcome = Some(AssociationOutcome::Aborted {
                    cause: format!("violation: {violation}"),
                });
            }
            other => panic!("an event the test acceptor does not know: {other:?}"),
        }
    }

    fn command(&mut self, context_id: u8, command: Command) {
        match command {
            Command::CEchoRq(rq) => {
                self.observed.lock().unwrap().echoes += 1;
                let rsp = Command::CEchoRsp(CEchoRsp {
                    message_id_being_responded_to: rq.message_id,
                    affected_sop_class_uid: Some(rq.affected_sop_class_uid),
                    status: Status::SUCCESS,
                    detail: StatusDetail::default(),
                });
                self.send(context_id, &rsp);
            }
            Command::CStoreRq(rq) => {
                self.dataset.clear();
                self.pending_store = Some((context_id, rq));
            }
            other => panic!("test acceptor got an unexpected command {other:?}"),
        }
    }

    fn dataset_complete(&mut self, context_id: u8) {
        // The endpoint checked that the data set came on its command's context.
        let Some((_, rq)) = self.pending_store.take() else {
            panic!("data set without a C-STORE-RQ before it");
        };
        let context = self
            .endpoint
            .presentation_context(context_id)
            .expect("accepted context");
        let transfer_syntax_uid = context.transfer_syntax.clone();
        self.observed
            .lock()
            .unwrap()
            .instances
            .push(ReceivedInstance {
                calling_ae_title: self.calling_ae_title.clone(),
                affected_sop_class_uid: rq.affected_sop_class_uid.clone(),
                affected_sop_instance_uid: rq.affected_sop_instance_uid.clone(),
                transfer_syntax_uid,
                dataset: std::mem::take(&mut self.dataset),
            });
        let rsp = Command::CStoreRsp(CStoreRsp {
            message_id_being_responded_to: rq.message_id,
            affected_sop_class_uid: Some(rq.affected_sop_class_uid),
            affected_sop_instance_uid: Some(rq.affected_sop_instance_uid),
            status: Status::SUCCESS,
            detail: StatusDetail::default(),
        });
        self.send(context_id, &rsp);
    }

    fn send(&mut self, context_id: u8, command: &Command) {
        self.endpoint
            .send_message(context_id, command, None)
            .expect("a response the association allows");
    }

    /// Writes what the endpoint queued.
    fn flush(&mut self) {
        while let Some(bytes) = self.endpoint.poll_transmit() {
            if let Err(error) = self.stream.write_all(&bytes) {
                self.outcome.get_or_insert(AssociationOutcome::Ended {
                    why: format!("write: {error}"),
                });
                self.closed = true;
            }
        }
    }

    fn indication(&mut self, indication: Indication) {
        let now = Instant::now();
        match indication {
            Indication::AssociateRequest(rq) => {
                let load = AssociationLoad {
                    current: self.established.load(Ordering::SeqCst),
                    limit: self.settings.association_limit,
                };
                let outcome = negotiate(&self.settings.policy, &rq, load);
                match &outcome {
                    NegotiationOutcome::Accept { negotiated, .. } => {
                        self.established.fetch_add(1, Ordering::SeqCst);
                        self.counted = true;
                        self.calling_ae_title = negotiated.calling_ae_title.clone();
                        self.observed
                            .lock()
                            .unwrap()
                            .accepted
                            .push((**negotiated).clone());
                    }
                    NegotiationOutcome::Reject(rj) => {
                        self.outcome = Some(AssociationOutcome::Rejected { codes: rj.codes() });
                    }
                }
                self.endpoint
                    .answer_association(outcome.into(), now)
                    .expect("an A-ASSOCIATE-RQ is awaiting its answer");
            }
            Indication::ReleaseRequest | Indication::ReleaseCollision => {
                self.outcome = Some(AssociationOutcome::Released {
                    calling_ae_title: self.calling_ae_title.clone(),
                });
                self.endpoint
                    .answer_release(now)
                    .expect("a release is awaiting its answer");
            }
            Indication::Aborted(cause) => {
                let cause = match cause {
                    AbortCause::TransportClosed if self.outcome.is_some() => return,
                    other => format!("{other:?}"),
                };
                self.outcome = Some(AssociationOutcome::Aborted { cause });
            }
            other => panic!("unexpected indication for an acceptor: {other:?}"),
        }
    }
}
