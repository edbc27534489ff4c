//! Storage Commitment memory (issue #19, item 7): what a pending request
//! costs the server in memory is bounded by bytes, not only by the number
//! of requests, and its references are kept compactly. Requests of 50,000
//! references are sent by a requestor written on `sluice-net`'s endpoint
//! over a plain TCP stream (building them in Python takes seconds each).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sluice_net::assoc::{AssociationProposal, Indication, ProposedPresentationContext, Role};
use sluice_net::dimse::commitment::{
    CommitmentRequest, SopReference, ACTION_TYPE_REQUEST_STORAGE_COMMITMENT,
};
use sluice_net::dimse::dataset::SmallDatasetEncoding;
use sluice_net::dimse::{Command, NActionRq};
use sluice_net::endpoint::{Endpoint, EndpointConfig, Incoming};
use sluice_net::uid;

use crate::serve::Served;

const REFERENCES: usize = 50_000;

/// One association to the server, driven by hand.
struct Requestor {
    stream: TcpStream,
    endpoint: Endpoint,
    context_id: u8,
}

impl Requestor {
    fn connect(port: u16) -> Requestor {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let proposal = AssociationProposal {
            calling_ae_title: "MEMTEST".into(),
            called_ae_title: "SLUICE".into(),
            presentation_contexts: vec![ProposedPresentationContext {
                abstract_syntax: uid::STORAGE_COMMITMENT_PUSH_MODEL.into(),
                transfer_syntaxes: vec![uid::ts::EXPLICIT_VR_LITTLE_ENDIAN.into()],
                roles: None,
            }],
            pdu_length_max_receive: 16_384,
            implementation_class_uid: "1.2.826.0.1.3680043.10.1234.81".into(),
            implementation_version_name: None,
            asynchronous_operations_window: None,
            user_identity: None,
        };
        let mut endpoint = Endpoint::new(Role::Requestor, EndpointConfig::default());
        let now = Instant::now();
        endpoint
            .request_association(Box::new(proposal.to_associate_rq().unwrap()), now)
            .unwrap();
        endpoint.transport_connected(now).unwrap();
        let mut requestor = Requestor {
            stream,
            endpoint,
            context_id: 0,
        };
        requestor.flush();
        match requestor.next() {
            Incoming::Indication(Indication::AssociateAccepted(negotiated)) => {
                requestor.context_id = negotiated.presentation_contexts[0].id;
            }
            other => panic!("not accepted: {other:?}"),
        }
        requestor
    }

    fn flush(&mut self) {
        while let Some(bytes) = self.endpoint.poll_transmit() {
            self.stream.write_all(&bytes).unwrap();
        }
    }

    /// The next thing the server sent.
    fn next(&mut self) -> Incoming {
        if let Some(event) = self.endpoint.poll_event() {
            return event;
        }
        let mut buffer = vec![0u8; 65_536];
        loop {
            let read = self.stream.read(&mut buffer).unwrap();
            assert!(read > 0, "the server closed the connection");
            let mut cursor = 0;
            let incoming = self
                .endpoint
                .receive(&buffer[..read], &mut cursor, Instant::now());
            assert_eq!(cursor, read, "more than one event in one read");
            self.flush();
            if let Some(incoming) = incoming {
                return incoming;
            }
        }
    }

    /// Sends an N-ACTION (request storage commitment) for `references`
    /// under `transaction_uid`; the N-ACTION-RSP status.
    fn commit(&mut self, transaction_uid: &str, references: &[SopReference]) -> u16 {
        let request = CommitmentRequest {
            transaction_uid: transaction_uid.to_owned(),
            references: references.to_vec(),
        };
        let data_set = request
            .encode(SmallDatasetEncoding::ExplicitVrLittleEndian)
            .unwrap();
        let message_id = self.endpoint.next_message_id();
        let rq = Command::NActionRq(NActionRq {
            message_id,
            requested_sop_class_uid: uid::STORAGE_COMMITMENT_PUSH_MODEL.into(),
            requested_sop_instance_uid: uid::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE.into(),
            action_type_id: ACTION_TYPE_REQUEST_STORAGE_COMMITMENT,
            data_set: true,
        });
        self.endpoint
            .send_message(self.context_id, &rq, Some(&data_set))
            .unwrap();
        self.flush();
        match self.next() {
            Incoming::Command {
                command: Command::NActionRsp(rsp),
                ..
            } => rsp.status.0,
            other => panic!("no N-ACTION-RSP: {other:?}"),
        }
    }
}

/// 50,000 references to CT instances never stored (they wait), with
/// realistic 56-character SOP Instance UIDs.
fn references(request: usize) -> Vec<SopReference> {
    (0..REFERENCES)
        .map(|index| SopReference {
            sop_class_uid: uid::CT_IMAGE_STORAGE.into(),
            sop_instance_uid: format!(
                "1.2.826.0.1.3680043.10.1234.81.{request}.{:020}",
                index * 7919
            ),
        })
        .collect()
}

/// The resident set of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[test]
fn pending_requests_of_fifty_thousand_references_cost_a_few_mib_each() {
    let served = Served::start("auto", &[]);
    let mut requestor = Requestor::connect(served.port);
    // Two first requests bring the transient buffers of a request (its
    // data set, the decoded references) to their steady state.
    for request in 0..2 {
        let status = requestor.commit(
            &format!("1.2.826.0.1.3680043.10.1234.82.{request}"),
            &references(request),
        );
        assert_eq!(status, 0x0000, "{}", served.log());
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(served.pid());
    let count = 10;
    for request in 2..2 + count {
        let status = requestor.commit(
            &format!("1.2.826.0.1.3680043.10.1234.82.{request}"),
            &references(request),
        );
        assert_eq!(status, 0x0000, "{}", served.log());
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(served.pid());
    let per_request_kib = after.saturating_sub(before) / count as u64;
    eprintln!(
        "server RSS {before} KiB -> {after} KiB for {count} pending requests of {REFERENCES} references: {per_request_kib} KiB each"
    );
    // 50,000 references of 56-character UIDs are 2.9 MB as UID text alone;
    // a pending request held about 20 MiB before (issue #19).
    assert!(
        per_request_kib < 6 * 1024,
        "{per_request_kib} KiB per pending request of {REFERENCES} references"
    );
}

#[test]
fn requests_beyond_the_memory_budget_are_refused_0213() {
    let served = Served::start("auto", &["--commitment-memory-budget", "16MiB"]);
    let mut requestor = Requestor::connect(served.port);
    let mut statuses = Vec::new();
    for request in 0..12 {
        statuses.push(requestor.commit(
            &format!("1.2.826.0.1.3680043.10.1234.83.{request}"),
            &references(request),
        ));
    }
    let accepted = statuses.iter().filter(|status| **status == 0x0000).count();
    assert!(accepted >= 1, "{statuses:04X?}");
    assert!(
        statuses[accepted..].iter().all(|status| *status == 0x0213),
        "accepted first, then refused for resources: {statuses:04X?}"
    );
    assert!(accepted < statuses.len(), "{statuses:04X?}");
    let log = served.stop();
    assert!(
        log.contains("memory budget") && log.contains("status=0213"),
        "{log}"
    );
}
