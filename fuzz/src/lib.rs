//! `sluice-fuzz`: coverage-guided fuzzing of `sluice-net`'s decoders.
//!
//! Owns one harness function per fuzz target ([`TARGETS`]): each takes
//! arbitrary bytes, drives a decoder of net through its public API only, and
//! asserts what must hold for any peer input (no panic, round trips where an
//! encoder exists, the same result however the bytes are cut, allocation
//! within a budget proportional to the input). The harnesses are plain
//! functions, so the corpus replay test (`tests/replay.rs`, part of
//! `cargo test`) runs every stored input with no fuzzer installed; the AFL++
//! binary (`src/bin/afl.rs`, feature `afl`) is a thin wrapper around them.
//! See `docs/design/fuzzing.md`.
//!
//! Architecture invariant: a harness never touches a file, a socket or a
//! clock, and its only randomness is derived from its input ([`cuts`]), so
//! every finding replays exactly.

pub mod cuts;
pub mod memory;
mod targets;

/// One fuzz target: a name (also its corpus directory) and its harness.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Name, as given to `fuzz/run` and used for `fuzz/corpus/<name>/`.
    pub name: &'static str,
    /// What the target exercises.
    pub description: &'static str,
    /// The harness (unbounded: use [`Target::run`]).
    harness: fn(&[u8]),
}

impl Target {
    /// Runs the harness on `input` under the allocation budget of
    /// [`memory::bounded`]. Panics (the fuzzer's finding) when an invariant
    /// fails; aborts when the budget is exceeded.
    pub fn run(&self, input: &[u8]) {
        memory::bounded(input.len(), || (self.harness)(input));
    }
}

/// Every fuzz target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "pdata_stream",
        description: "pdata::StreamDecoder fed input-derived cuts, against frame_pdu on the whole buffer",
        harness: targets::pdata_stream::run,
    },
    Target {
        name: "pdu",
        description: "pdu::decode_pdu of one whole PDU, encode round trip, agreement with the stream decoder",
        harness: targets::pdu::run,
    },
    Target {
        name: "association",
        description: "acceptor state machine driven by decoded PDUs, with assoc::negotiate under a policy",
        harness: targets::association::run,
    },
    Target {
        name: "dimse_command",
        description: "dimse::Command::decode and its encode round trip",
        harness: targets::dimse_command::run,
    },
    Target {
        name: "head_scan",
        description: "scan::DatasetScanner per transfer syntax, cut anywhere and deflated, then scan::check_store",
        harness: targets::head_scan::run,
    },
    Target {
        name: "small_dataset",
        description: "dimse::dataset::SmallDataset decode and encode round trip",
        harness: targets::small_dataset::run,
    },
    Target {
        name: "commitment",
        description: "dimse::commitment request and result decode and encode round trips",
        harness: targets::commitment::run,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|target| target.name == name)
}
