//! Shutdown with connections and operations in flight: every core exits
//! within a bounded wait and no descriptor is left open.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_io::{
    At, BackendChoice, Core, Event, FileHandle, Handler, OpenOptions, Runtime, RuntimeConfig,
    SyncKind,
};

use crate::both_backends;
use crate::support::{config, exclusive_lock, open_fd_count, raise_fd_limit, JOIN_WAIT};

/// Keeps as much as it can in flight: file writes and syncs, a long timer,
/// outbound connections to its own listener, and echoes.
struct Busy {
    core: usize,
    dir: PathBuf,
    listen: Option<SocketAddr>,
    file: Option<FileHandle>,
    accepted: Arc<AtomicUsize>,
    busy_ops: Arc<AtomicUsize>,
}

impl Busy {
    fn write_more(&mut self, core: &mut Core) {
        let Some(file) = self.file else { return };
        for index in 0..8_u64 {
            let offset = (index + 8 * self.busy_ops.load(Ordering::Relaxed) as u64 % 64) * 65536;
            if core
                .write_at_and_sync(
                    file,
                    offset,
                    vec![vec![0x11; 65536].into()],
                    SyncKind::Data,
                    1,
                )
                .is_ok()
            {
                self.busy_ops.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Handler for Busy {
    type Message = ();

    fn on_start(&mut self, core: &mut Core) {
        let path = self.dir.join(format!("busy-{}", self.core));
        core.open(
            At::Cwd,
            &path,
            OpenOptions::new().write(true).create(true),
            0,
        )
        .unwrap();
        core.timer(Duration::from_secs(3600), 2).unwrap();
        if let Some(address) = self.listen {
            for tag in 0..20 {
                let _ = core.connect(address, tag);
            }
        }
    }

    fn on_event(&mut self, core: &mut Core, event: Event) {
        match event {
            Event::Opened {
                result: Ok(file), ..
            } => {
                self.file = Some(file);
                self.write_more(core);
            }
            Event::Written { .. } => self.write_more(core),
            Event::Accepted { .. } => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Event::Received { conn, data } => {
                let _ = core.send(conn, data, 0);
            }
            Event::Connected {
                conn,
                result: Ok(()),
                ..
            } => {
                let _ = core.send(conn, vec![0x22; 100_000], 0);
            }
            _ => {}
        }
    }
}

fn shutdown_leaves_nothing_behind(backend: BackendChoice) {
    let _lock = exclusive_lock();
    raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let fds_before = open_fd_count();

    let accepted = Arc::new(AtomicUsize::new(0));
    let busy_ops = Arc::new(AtomicUsize::new(0));
    // First a runtime to accept; it learns its own address for the
    // outbound connections of a second one.
    let server_config = RuntimeConfig {
        listen_addrs: vec!["127.0.0.1:0".parse().unwrap()],
        ..config(backend, 2)
    };
    let (dir_path, server_accepted, server_busy) = (
        dir.path().to_path_buf(),
        Arc::clone(&accepted),
        Arc::clone(&busy_ops),
    );
    let server = Runtime::start(server_config, move |core| Busy {
        core,
        dir: dir_path.clone(),
        listen: None,
        file: None,
        accepted: Arc::clone(&server_accepted),
        busy_ops: Arc::clone(&server_busy),
    })
    .unwrap();
    let address = server.listen_addrs()[0];
    let (dir_path, client_accepted, client_busy) = (
        dir.path().to_path_buf(),
        Arc::clone(&accepted),
        Arc::clone(&busy_ops),
    );
    let client = Runtime::start(config(backend, 1), move |core| Busy {
        core: core + 10,
        dir: dir_path.clone(),
        listen: Some(address),
        file: None,
        accepted: Arc::clone(&client_accepted),
        busy_ops: Arc::clone(&client_busy),
    })
    .unwrap();

    // Plain sockets too, one of them streaming until the server goes away.
    let mut streams: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    for stream in &mut streams {
        stream.write_all(b"hello").unwrap();
    }
    let mut streaming = TcpStream::connect(address).unwrap();
    let streamer = std::thread::spawn(move || {
        let chunk = vec![0x33_u8; 64 * 1024];
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if streaming.write_all(&chunk).is_err() {
                return true;
            }
        }
        false
    });

    let deadline = Instant::now() + Duration::from_secs(20);
    while (accepted.load(Ordering::Relaxed) < 121 || busy_ops.load(Ordering::Relaxed) < 64)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        accepted.load(Ordering::Relaxed) >= 121,
        "accepted {}",
        accepted.load(Ordering::Relaxed)
    );
    assert!(busy_ops.load(Ordering::Relaxed) >= 64);

    // Stop both with everything in flight; bounded waits.
    client
        .shutdown_and_join(JOIN_WAIT)
        .expect("client threads exit in time");
    server
        .shutdown_and_join(JOIN_WAIT)
        .expect("server threads exit in time");
    assert!(
        streamer.join().unwrap(),
        "the streaming peer saw the server close"
    );
    drop(streams);
    // Closed sockets release their descriptors at once; give the kernel no
    // excuse (the count is of this process's descriptor table).
    let fds_after = open_fd_count();
    assert_eq!(fds_after, fds_before, "descriptors leaked");
}
both_backends!(shutdown_leaves_nothing_behind);
