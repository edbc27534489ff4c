//! `sluice-engine`: the store, the DICOM services and the embedding API.
//!
//! Built so far: the server configuration ([`config`]: defaults, TOML file,
//! flags, the generated `docs/configuration.md`). Not built yet: the Storage
//! SCP and `sluice serve` itself (issue 5) and the commitment tracker
//! (issue 6), which land here on top of `sluice-net`, `sluice-io` and
//! `sluice-index`. Nothing else in this crate claims to work before then.

pub mod config;
