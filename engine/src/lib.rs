//! `sluice-engine`: the store, the DICOM services and the embedding API.
//!
//! Not built yet: the Storage SCP (issue 5) and the commitment tracker
//! (issue 6) land here on top of `sluice-net`, `sluice-io` and
//! `sluice-index`. Nothing in this crate claims to work before then.
