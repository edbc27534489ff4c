//! Loopback receive throughput into `sluice-io`'s pooled buffers.
//!
//! One runtime core receives (buffers dropped at once, as the engine does
//! after writing them out) from 1 or 16 connections fed by sender threads
//! using blocking std sockets, on io_uring and on the portable backend.
//! In a full run (`cargo bench -p sluice-bench --bench io_recv`) it first
//! measures the machine's own loopback ceiling with `iperf3` (1 and 16
//! streams) when `iperf3` is installed (`apt-get install -y iperf3`), and
//! prints it beside criterion's figures; `bench/iperf3-loopback.sh` does the
//! same alone. Under `cargo test` (no `--bench`) it moves 1 MiB per case
//! once, as a smoke test.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use sluice_io::{BackendChoice, Core, Event, Handler, Runtime, RuntimeConfig};

fn full_run() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// Counts received bytes; drops every buffer at once (back to the pool).
struct Sink {
    received: Arc<AtomicU64>,
}

impl Handler for Sink {
    type Message = ();

    fn on_event(&mut self, core: &mut Core, event: Event) {
        match event {
            Event::Received { data, .. } => {
                self.received
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            Event::RecvEnded { conn, .. } => core.close_connection(conn),
            _ => {}
        }
    }
}

/// One sender thread per connection, told how many bytes to send.
struct Senders {
    commands: Vec<mpsc::Sender<u64>>,
    done: mpsc::Receiver<()>,
    threads: Vec<JoinHandle<()>>,
}

impl Senders {
    fn start(address: SocketAddr, connections: usize) -> Senders {
        let (done_sender, done) = mpsc::channel();
        let mut commands = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..connections {
            let (command, receive_command) = mpsc::channel::<u64>();
            let done = done_sender.clone();
            let mut stream = TcpStream::connect(address).unwrap();
            threads.push(std::thread::spawn(move || {
                let chunk = vec![0x5a_u8; 256 * 1024];
                for mut bytes in receive_command.iter() {
                    while bytes > 0 {
                        let length = bytes.min(chunk.len() as u64) as usize;
                        stream.write_all(&chunk[..length]).unwrap();
                        bytes -= length as u64;
                    }
                    let _ = done.send(());
                }
            }));
            commands.push(command);
        }
        Senders {
            commands,
            done,
            threads,
        }
    }

    fn stop(self) {
        drop(self.commands);
        for thread in self.threads {
            thread.join().unwrap();
        }
    }
}

fn receive_case(
    criterion: &mut Criterion,
    backend: BackendChoice,
    connections: usize,
    bytes_per_iteration: u64,
) {
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let config = RuntimeConfig {
        core_count: 1,
        backend,
        pin_threads: false,
        listen_addrs: vec!["127.0.0.1:0".parse().unwrap()],
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::start(config, move |_| Sink {
        received: Arc::clone(&counter),
    })
    .unwrap();
    let senders = Senders::start(runtime.listen_addrs()[0], connections);
    let per_connection = bytes_per_iteration / connections as u64;
    let mut group = criterion.benchmark_group("recv_loopback");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Bytes(per_connection * connections as u64));
    let name = match backend {
        BackendChoice::Portable => "portable",
        _ => "uring",
    };
    group.bench_with_input(
        BenchmarkId::new(name, connections),
        &connections,
        |bencher, _| {
            bencher.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let target =
                        received.load(Ordering::Relaxed) + per_connection * connections as u64;
                    let started = Instant::now();
                    for command in &senders.commands {
                        command.send(per_connection).unwrap();
                    }
                    for _ in 0..connections {
                        senders.done.recv().unwrap();
                    }
                    while received.load(Ordering::Relaxed) < target {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    total += started.elapsed();
                }
                total
            })
        },
    );
    group.finish();
    senders.stop();
    runtime.shutdown_and_join(Duration::from_secs(30)).unwrap();
}

/// `bits_per_second` of `sum_received` in iperf3's JSON report.
fn received_bits_per_second(json: &str) -> Option<f64> {
    let section = json.get(json.rfind("\"sum_received\"")?..)?;
    let field =
        section.get(section.find("\"bits_per_second\"")? + "\"bits_per_second\"".len()..)?;
    let number: String = field
        .trim_start_matches([':', ' ', '\t'])
        .chars()
        .take_while(|c| {
            c.is_ascii_digit() || *c == '.' || *c == 'e' || *c == 'E' || *c == '+' || *c == '-'
        })
        .collect();
    number.parse().ok()
}

/// The machine's loopback ceiling from iperf3, if installed.
fn iperf3_ceiling() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|a| a.port());
    let Ok(port) = port else { return };
    for streams in [1, 16] {
        let server = Command::new("iperf3")
            .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut server) = server else {
            eprintln!(
                "iperf3 not found: install it (apt-get install -y iperf3) for the loopback ceiling"
            );
            return;
        };
        std::thread::sleep(Duration::from_millis(300));
        let output = Command::new("iperf3")
            .args([
                "-c",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "4",
                "-P",
                &streams.to_string(),
                "-J",
            ])
            .output();
        match output
            .ok()
            .and_then(|output| received_bits_per_second(&String::from_utf8_lossy(&output.stdout)))
        {
            Some(bits) => println!(
                "iperf3 loopback ceiling, {streams} stream(s): {:.2} GiB/s ({:.1} Gbit/s)",
                bits / 8.0 / (1u64 << 30) as f64,
                bits / 1e9
            ),
            None => eprintln!("iperf3 with {streams} stream(s) gave no result"),
        }
        // End the server we started (by its PID), whatever happened.
        let _ = server.kill();
        let _ = server.wait();
    }
}

fn receive_throughput(criterion: &mut Criterion) {
    let full = full_run();
    if full {
        iperf3_ceiling();
    }
    let bytes_per_iteration = if full { 256 << 20 } else { 1 << 20 };
    for connections in [1, 16] {
        for backend in [BackendChoice::Uring, BackendChoice::Portable] {
            receive_case(criterion, backend, connections, bytes_per_iteration);
        }
    }
}

criterion_group!(benches, receive_throughput);
criterion_main!(benches);
