//! Many concurrent loopback connections echoing data through the public
//! API, client and server both on the runtime; every byte verified.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use sluice_io::{AcceptMode, BackendChoice, ConnId, Core, Event, Handler, Runtime, RuntimeConfig};

use crate::both_backends;
use crate::support::{config, expected_kind, raise_fd_limit, shared_lock, JOIN_WAIT, OUTCOME_WAIT};

/// The server: echoes every received buffer back as is (no copy).
struct Echo {
    core: usize,
    accepted_per_core: Arc<Vec<AtomicUsize>>,
}

impl Handler for Echo {
    type Message = ();

    fn on_event(&mut self, core: &mut Core, event: Event) {
        match event {
            Event::Accepted { .. } => {
                self.accepted_per_core[self.core].fetch_add(1, Ordering::Relaxed);
            }
            Event::Received { conn, data } => {
                core.send(conn, data, 0)
                    .unwrap_or_else(|_| core.close_connection(conn));
            }
            Event::RecvEnded { conn, .. } => core.close_connection(conn),
            Event::Sent {
                conn,
                result: Err(_),
                ..
            } => core.close_connection(conn),
            _ => {}
        }
    }
}

/// The byte at `offset` of connection `connection`'s stream.
fn pattern_byte(connection: usize, offset: usize) -> u8 {
    ((offset.wrapping_mul(31) + connection.wrapping_mul(7) + offset / 251) % 251) as u8
}

fn pattern(connection: usize, range: std::ops::Range<usize>) -> Vec<u8> {
    range
        .map(|offset| pattern_byte(connection, offset))
        .collect()
}

#[derive(Debug, Default)]
struct ClientReport {
    connections_verified: usize,
    bytes_verified: usize,
    failures: Vec<String>,
}

struct ClientConn {
    connection: usize,
    received: usize,
}

/// The client: opens its share of connections, sends each a pattern in
/// chunks, checks every echoed byte, closes when all came back.
struct EchoClient {
    server: SocketAddr,
    connections: std::ops::Range<usize>,
    bytes_per_connection: usize,
    chunk_bytes: usize,
    conns: HashMap<ConnId, ClientConn>,
    closed: usize,
    report: ClientReport,
    outcome: Sender<ClientReport>,
}

impl EchoClient {
    fn fail(&mut self, text: String) {
        if self.report.failures.len() < 20 {
            self.report.failures.push(text);
        }
    }

    fn closed_one(&mut self) {
        self.closed += 1;
        if self.closed == self.connections.len() {
            let _ = self.outcome.send(std::mem::take(&mut self.report));
        }
    }
}

impl Handler for EchoClient {
    type Message = ();

    fn on_start(&mut self, core: &mut Core) {
        for connection in self.connections.clone() {
            match core.connect(self.server, connection as u64) {
                Ok(conn) => {
                    self.conns.insert(
                        conn,
                        ClientConn {
                            connection,
                            received: 0,
                        },
                    );
                }
                Err(error) => {
                    self.fail(format!("connect {connection}: {error}"));
                    self.closed_one();
                }
            }
        }
    }

    fn on_event(&mut self, core: &mut Core, event: Event) {
        match event {
            Event::Connected {
                conn,
                result: Ok(()),
                ..
            } => {
                let Some(state) = self.conns.get(&conn) else {
                    return;
                };
                let connection = state.connection;
                for start in (0..self.bytes_per_connection).step_by(self.chunk_bytes) {
                    let end = (start + self.chunk_bytes).min(self.bytes_per_connection);
                    if let Err(error) =
                        core.send(conn, pattern(connection, start..end), start as u64)
                    {
                        self.fail(format!("send on {connection}: {error}"));
                    }
                }
            }
            Event::Connected {
                conn,
                tag,
                result: Err(error),
            } => {
                self.conns.remove(&conn);
                self.fail(format!("connection {tag} failed: {error}"));
                self.closed_one();
            }
            Event::Received { conn, data } => {
                let Some(state) = self.conns.get_mut(&conn) else {
                    return;
                };
                let (connection, start) = (state.connection, state.received);
                state.received += data.len();
                let received = state.received;
                if data[..] != pattern(connection, start..start + data.len())[..] {
                    self.fail(format!("connection {connection}: wrong bytes at {start}"));
                } else {
                    self.report.bytes_verified += data.len();
                }
                if received >= self.bytes_per_connection {
                    if received == self.bytes_per_connection {
                        self.report.connections_verified += 1;
                    } else {
                        self.fail(format!(
                            "connection {connection}: {received} bytes, more than sent"
                        ));
                    }
                    core.close_connection(conn);
                }
            }
            Event::RecvEnded { conn, result } => {
                let Some(state) = self.conns.get(&conn) else {
                    return;
                };
                let text = format!(
                    "connection {} ended after {} bytes: {result:?}",
                    state.connection, state.received
                );
                self.fail(text);
                core.close_connection(conn);
            }
            Event::Sent {
                result: Err(error), ..
            } => self.fail(format!("send failed: {error}")),
            Event::ConnClosed { conn } => {
                self.conns.remove(&conn);
                self.closed_one();
            }
            _ => {}
        }
    }
}

fn run_echo(
    backend: BackendChoice,
    accept_mode: AcceptMode,
    connections: usize,
    bytes: usize,
) -> (ClientReport, Vec<usize>) {
    let _lock = shared_lock();
    raise_fd_limit();
    let accepted_per_core: Arc<Vec<AtomicUsize>> =
        Arc::new((0..2).map(|_| AtomicUsize::new(0)).collect());
    let server_config = RuntimeConfig {
        listen_addrs: vec!["127.0.0.1:0".parse().unwrap()],
        accept_mode,
        quickack_after_recv: accept_mode == AcceptMode::SingleAcceptor,
        ..config(backend, 2)
    };
    let counters = Arc::clone(&accepted_per_core);
    let server = Runtime::start(server_config, move |core| Echo {
        core,
        accepted_per_core: Arc::clone(&counters),
    })
    .expect("server starts");
    assert_eq!(server.backend(), expected_kind(backend));
    let address = server.listen_addrs()[0];

    let (outcome, outcomes) = crossbeam_channel::bounded(2);
    let per_core = connections / 2;
    let client = Runtime::start(config(backend, 2), move |core| EchoClient {
        server: address,
        connections: core * per_core..(core + 1) * per_core,
        bytes_per_connection: bytes,
        chunk_bytes: 8 * 1024,
        conns: HashMap::new(),
        closed: 0,
        report: ClientReport::default(),
        outcome: outcome.clone(),
    })
    .expect("client starts");

    let mut total = ClientReport::default();
    for _ in 0..2 {
        let report = outcomes
            .recv_timeout(OUTCOME_WAIT)
            .expect("client cores finish in time");
        total.connections_verified += report.connections_verified;
        total.bytes_verified += report.bytes_verified;
        total.failures.extend(report.failures);
    }
    client.shutdown_and_join(JOIN_WAIT).expect("client joins");
    server.shutdown_and_join(JOIN_WAIT).expect("server joins");
    let accepted = accepted_per_core
        .iter()
        .map(|count| count.load(Ordering::Relaxed))
        .collect();
    (total, accepted)
}

fn echo_thousand_connections(backend: BackendChoice) {
    let connections = 1000;
    let bytes = 32 * 1024;
    let (report, accepted) = run_echo(backend, AcceptMode::ReusePortPerCore, connections, bytes);
    assert_eq!(report.failures, Vec::<String>::new());
    assert_eq!(report.connections_verified, connections);
    assert_eq!(report.bytes_verified, connections * bytes);
    assert_eq!(accepted.iter().sum::<usize>(), connections);
}
both_backends!(echo_thousand_connections);

fn single_acceptor_spreads_connections(backend: BackendChoice) {
    let connections = 100;
    let (report, accepted) = run_echo(backend, AcceptMode::SingleAcceptor, connections, 4096);
    assert_eq!(report.failures, Vec::<String>::new());
    assert_eq!(report.connections_verified, connections);
    assert_eq!(accepted.iter().sum::<usize>(), connections);
    assert!(
        accepted.iter().all(|&count| count > 0),
        "both cores got connections: {accepted:?}"
    );
}
both_backends!(single_acceptor_spreads_connections);
