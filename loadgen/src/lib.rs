//! `sluice-loadgen`: drives any DICOM Storage SCP and reports capacity.
//!
//! Not built yet (issue 7). It will depend on `sluice-net` and `sluice-io`
//! only, never on the engine or the index, so it can measure any PACS.
