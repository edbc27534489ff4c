//! `sluice-io`: the per-core runtime. See docs/ARCHITECTURE.md.
