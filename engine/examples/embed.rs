//! Embedding Sluice: open a store, run the Storage SCP in-process, print
//! what arrives, look an instance up and read its bytes back.
//!
//! ```text
//! cargo run -p sluice-engine --example embed -- --data-dir /tmp/embedded --port 11113
//! storescu -aec SLUICE 127.0.0.1 11113 some.dcm
//! ```
//!
//! Takes the same flags as `sluice serve`; stops after `--events N` (an
//! example-only first argument pair) events, or on Ctrl-C.

use std::time::Duration;

use sluice_engine::config::Config;
use sluice_engine::scp::Server;
use sluice_engine::store::{Store, StoreEvent};

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().collect();
    let mut events_max = u64::MAX;
    if args.get(1).map(String::as_str) == Some("--events") {
        events_max = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(u64::MAX);
        args.drain(1..3);
    }
    let config = Config::from_args(args)?;
    let store = Store::open(config)?;
    let events = store.subscribe(1024)?;
    let server = Server::start(&store)?;
    println!("listening on {:?}", server.local_addr());

    let mut seen = 0;
    while seen < events_max {
        let Ok(event) = events.receiver().recv_timeout(Duration::from_secs(3600)) else {
            break;
        };
        seen += 1;
        match event {
            StoreEvent::Stored { triplet, record } => {
                let bytes = store
                    .read_instance(&triplet.sop_instance_uid)?
                    .unwrap_or_default();
                println!(
                    "stored {} ({} bytes, data set at {}) from {}: read back {} bytes",
                    triplet.sop_instance_uid,
                    record.file_size_bytes,
                    record.dataset_offset_bytes,
                    record.calling_ae_title,
                    bytes.len()
                );
            }
            other => println!("{other:?}"),
        }
    }
    server.shutdown(Duration::from_secs(10))?;
    Ok(())
}
