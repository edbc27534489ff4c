//! A private network for the cluster tests (issue 18: "on one machine with
//! network namespaces, no address outside the machine"): a Linux bridge in
//! the test's own namespace with 10.201.N.1/24, and one network namespace
//! per node joined to the bridge by a veth pair, 10.201.N.2 and up. The
//! nodes see nothing of each other's or the test's loopback: PostgreSQL
//! (listening on the bridge's address), HAProxy (its servers the nodes'
//! addresses) and the other nodes are reached through the bridge only, as
//! separate hosts on one LAN would. Everything is removed when the
//! [`Network`] is dropped. A step that fails (not root, no `ip`, no veth or
//! bridge support) fails the test: nothing skips.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Networks made by this process (names and subnets stay unique).
static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// Runs `ip` with `args`; the test fails if it does.
fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        output.status.success(),
        "ip {}: {} (the cluster tests make network namespaces: run them as root)",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// A bridge and the namespaces joined to it.
pub(super) struct Network {
    /// Short and unique: names of links and namespaces.
    id: String,
    /// N of 10.201.N.0/24.
    subnet: u8,
    bridge: String,
    namespaces: Vec<String>,
}

/// A namespace of a [`Network`] and its address there.
#[derive(Debug, Clone)]
pub(super) struct Host {
    pub(super) namespace: String,
    pub(super) address: String,
}

impl Network {
    pub(super) fn new() -> Network {
        let serial = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "{:x}",
            (std::process::id() & 0xf_ffff) * 16 + (serial & 0xf)
        );
        // A subnet no link of this machine has (other tests may run a
        // network at the same time).
        let used = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-4", "-o", "addr", "show"])
                .output()
                .expect("run ip (iproute2)")
                .stdout,
        )
        .into_owned();
        let start = (std::process::id() + serial * 7) % 200;
        let subnet = (0..200)
            .map(|step| ((start + step) % 200 + 20) as u8)
            .find(|n| !used.contains(&format!(" 10.201.{n}.")))
            .expect("a free 10.201.N.0/24");
        let bridge = format!("slb{id}");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let network = Network {
            id,
            subnet,
            bridge,
            namespaces: Vec::new(),
        };
        ip(&[
            "addr",
            "add",
            &format!("{}/24", network.gateway()),
            "dev",
            &network.bridge,
        ]);
        ip(&["link", "set", &network.bridge, "up"]);
        network
    }

    /// The bridge's address: the test's namespace (PostgreSQL) as the
    /// nodes reach it.
    pub(super) fn gateway(&self) -> String {
        format!("10.201.{}.1", self.subnet)
    }

    /// The network, for PostgreSQL's `pg_hba.conf`.
    pub(super) fn cidr(&self) -> String {
        format!("10.201.{}.0/24", self.subnet)
    }

    /// A new namespace joined to the bridge, with its address.
    pub(super) fn host(&mut self) -> Host {
        let number = self.namespaces.len() + 2;
        let namespace = format!("sluice-{}-{number}", self.id);
        ip(&["netns", "add", &namespace]);
        self.namespaces.push(namespace.clone());
        let outside = format!("slv{}{number}", self.id);
        let inside = format!("sli{}{number}", self.id);
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ]);
        ip(&["link", "set", &inside, "netns", &namespace]);
        ip(&["link", "set", &outside, "master", &self.bridge]);
        ip(&["link", "set", &outside, "up"]);
        let address = format!("10.201.{}.{number}", self.subnet);
        let cidr = format!("{address}/24");
        ip(&["-n", &namespace, "addr", "add", &cidr, "dev", &inside]);
        ip(&["-n", &namespace, "link", "set", &inside, "up"]);
        ip(&["-n", &namespace, "link", "set", "lo", "up"]);
        Host { namespace, address }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // A namespace's veth end goes with it; the bridge last.
        for namespace in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}
