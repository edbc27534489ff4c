//! `sluice-index`: the LMDB catalogue. See docs/ARCHITECTURE.md.
