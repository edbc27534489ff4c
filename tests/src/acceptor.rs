//! A test-only DICOM acceptor: std `TcpListener`, one thread per connection,
//! driven by `sluice-net`'s association state machine and negotiation policy.
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
    negotiate, AbortCause, AcceptedAbstractSyntax, AcceptorPolicy, Action, AeTitleFilter,
    Association, AssociationLoad, Indication, Input, InvalidPdu, NegotiatedAssociation,
    NegotiationOutcome, Role,
};
use sluice_net::dimse::{CEchoRsp, CStoreRsp, Command, Status, StatusDetail};
use sluice_net::pdata::{encode_message, StreamDecoder, StreamEvent};
use sluice_net::pdu::DecodeLimits;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    None,
    Artim,
    Idle,
}

struct Connection<'a> {
    stream: TcpStream,
    settings: &'a AcceptorSettings,
    observed: &'a Mutex<Observed>,
    established: &'a AtomicU32,
    association: Association,
    decoder: StreamDecoder,
    timer: Timer,
    timer_deadline: Instant,
    counted: bool,
    closed: bool,
    outcome: Option<AssociationOutcome>,
    deliver_pdata: bool,
    command_bytes: Vec<u8>,
    pending_store: Option<(u8, Command)>,
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
    let mut connection = Connection {
        stream,
        settings,
        observed,
        established,
        association: Association::new(Role::Acceptor),
        decoder: StreamDecoder::new(DecodeLimits::default()),
        timer: Timer::None,
        timer_deadline: Instant::now(),
        counted: false,
        closed: false,
        outcome: None,
        deliver_pdata: false,
        command_bytes: Vec::new(),
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
        self.input(Input::TransportConnectIndication);
        let mut buffer = vec![0u8; 64 * 1024];
        while !self.closed && !self.association.is_closed() {
            if stop.load(Ordering::Relaxed) {
                self.input(Input::AbortRequest);
                break;
            }
            let now = Instant::now();
            let wait = match self.timer {
                Timer::None => Duration::from_millis(200),
                _ if self.timer_deadline <= now => {
                    let input = if self.timer == Timer::Artim {
                        Input::ArtimExpired
                    } else {
                        Input::IdleExpired
                    };
                    self.timer = Timer::None;
                    self.input(input);
                    continue;
                }
                _ => (self.timer_deadline - now).min(Duration::from_millis(200)),
            };
            self.stream
                .set_read_timeout(Some(wait))
                .expect("read timeout");
            match self.stream.read(&mut buffer) {
                Ok(0) => self.input(Input::TransportClosed),
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

    fn received(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.closed {
            let step = match self.decoder.next_event(bytes) {
                Ok(step) => step,
                Err(error) => {
                    let pdu_type = self.decoder.failed_pdu_type();
                    self.input(Input::InvalidPdu(InvalidPdu::new(pdu_type, &error)));
                    return;
                }
            };
            bytes = &bytes[step.consumed..];
            match step.event {
                None => return,
                Some(StreamEvent::Control(pdu)) => self.input(Input::PduReceived(pdu)),
                Some(StreamEvent::PDataStart { .. }) => {
                    let actions = self.handle(Input::PDataReceived);
                    self.deliver_pdata = actions.contains(&Action::Indication(Indication::PData));
                    self.perform(actions);
                }
                Some(StreamEvent::PdvFragment(fragment)) => {
                    if !self.deliver_pdata {
                        continue;
                    }
                    let message_complete = fragment.is_last && fragment.pdv_complete;
                    if fragment.is_command {
                        self.command_bytes.extend_from_slice(fragment.bytes);
                        if message_complete {
                            let command_bytes = std::mem::take(&mut self.command_bytes);
                            self.command(fragment.presentation_context_id, &command_bytes);
                        }
                    } else {
                        self.dataset.extend_from_slice(fragment.bytes);
                        if message_complete {
                            self.dataset_complete(fragment.presentation_context_id);
                        }
                    }
                }
            }
        }
    }

    fn command(&mut self, presentation_context_id: u8, bytes: &[u8]) {
        let command = match Command::decode(bytes) {
            Ok(command) => command,
            Err(error) => panic!("peer sent a command set we cannot decode: {error}"),
        };
        match command {
            Command::CEchoRq(rq) => {
                self.observed.lock().unwrap().echoes += 1;
                let rsp = Command::CEchoRsp(CEchoRsp {
                    message_id_being_responded_to: rq.message_id,
                    affected_sop_class_uid: Some(rq.affected_sop_class_uid),
                    status: Status::SUCCESS,
                    detail: StatusDetail::default(),
                });
                self.send_command(presentation_context_id, &rsp);
            }
            store @ Command::CStoreRq(_) => {
                self.dataset.clear();
                self.pending_store = Some((presentation_context_id, store));
            }
            other => panic!("test acceptor got an unexpected command {other:?}"),
        }
    }

    fn dataset_complete(&mut self, presentation_context_id: u8) {
        let Some((command_context_id, Command::CStoreRq(rq))) = self.pending_store.take() else {
            panic!("data set without a C-STORE-RQ before it");
        };
        assert_eq!(
            command_context_id, presentation_context_id,
            "data set on another context"
        );
        let negotiated = self.association.negotiated().expect("established");
        let context = negotiated
            .presentation_context(presentation_context_id)
            .expect("accepted context");
        self.observed
            .lock()
            .unwrap()
            .instances
            .push(ReceivedInstance {
                calling_ae_title: self.calling_ae_title.clone(),
                affected_sop_class_uid: rq.affected_sop_class_uid.clone(),
                affected_sop_instance_uid: rq.affected_sop_instance_uid.clone(),
                transfer_syntax_uid: context.transfer_syntax.clone(),
                dataset: std::mem::take(&mut self.dataset),
            });
        let rsp = Command::CStoreRsp(CStoreRsp {
            message_id_being_responded_to: rq.message_id,
            affected_sop_class_uid: Some(rq.affected_sop_class_uid),
            affected_sop_instance_uid: Some(rq.affected_sop_instance_uid),
            status: Status::SUCCESS,
            detail: StatusDetail::default(),
        });
        self.send_command(presentation_context_id, &rsp);
    }

    fn send_command(&mut self, presentation_context_id: u8, command: &Command) {
        let actions = self.handle(Input::PDataRequest);
        assert!(actions.is_empty(), "P-DATA not allowed now: {actions:?}");
        let bytes = command.encode().expect("encode response");
        let pdu_length_max_peer = self
            .association
            .negotiated()
            .expect("established")
            .pdu_length_max_peer;
        let mut out = Vec::new();
        encode_message(
            presentation_context_id,
            true,
            &bytes,
            pdu_length_max_peer,
            &mut out,
        )
        .expect("frame response");
        self.write(&out);
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Err(error) = self.stream.write_all(bytes) {
            self.outcome.get_or_insert(AssociationOutcome::Ended {
                why: format!("write: {error}"),
            });
            self.closed = true;
        }
    }

    fn handle(&mut self, input: Input) -> Vec<Action> {
        self.association
            .handle(input)
            .expect("state machine refused a local request")
    }

    fn input(&mut self, input: Input) {
        let actions = self.handle(input);
        self.perform(actions);
    }

    fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::SendPdu(bytes) => self.write(&bytes),
                Action::StartArtimTimer => self.arm(Timer::Artim, self.settings.artim),
                Action::StartIdleTimer => self.arm(Timer::Idle, self.settings.idle),
                Action::StopArtimTimer | Action::StopIdleTimer => self.timer = Timer::None,
                Action::CloseTransport => self.closed = true,
                Action::ConnectTransport => panic!("an acceptor never connects"),
                Action::Indication(indication) => self.indication(indication),
            }
        }
    }

    fn arm(&mut self, timer: Timer, after: Duration) {
        self.timer = timer;
        self.timer_deadline = Instant::now() + after;
    }

    fn indication(&mut self, indication: Indication) {
        match indication {
            Indication::AssociateRequest(rq) => {
                let load = AssociationLoad {
                    current: self.established.load(Ordering::SeqCst),
                    limit: self.settings.association_limit,
                };
                let outcome = negotiate(&self.settings.policy, &rq, load);
                match &outcome {
                    NegotiationOutcome::Accept { negotiated, .. } => {
                        self.decoder
                            .set_pdata_length_max(negotiated.pdu_length_max_local);
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
                self.input(Input::AssociateResponse(outcome.into()));
            }
            Indication::ReleaseRequest | Indication::ReleaseCollision => {
                self.outcome = Some(AssociationOutcome::Released {
                    calling_ae_title: self.calling_ae_title.clone(),
                });
                self.input(Input::ReleaseResponse);
            }
            Indication::Aborted(cause) => {
                let cause = match cause {
                    AbortCause::TransportClosed if self.outcome.is_some() => return,
                    other => format!("{other:?}"),
                };
                self.outcome = Some(AssociationOutcome::Aborted { cause });
            }
            Indication::PData => {}
            other => panic!("unexpected indication for an acceptor: {other:?}"),
        }
    }
}
