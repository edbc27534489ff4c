//! `sluice-loadgen`: drives any DICOM Storage SCP and reports capacity.
//!
//! Depends on `sluice-net` (DICOM bytes, the association endpoint) and
//! `sluice-io` (the thread-per-core runtime) only, never on the engine or
//! the index, so it measures any PACS the same way it measures Sluice.
//!
//! Modules: [`workload`] prepares what is sent (synthetic profiles, real
//! files, UID slots, P-DATA framing); [`uid`] makes fixed-width unique UIDs;
//! [`driver`] runs thousands of associations per core; [`run`] executes
//! one measured run; [`stats`] holds measurements and the result file
//! schema; [`report`] renders result files as HTML (inline SVG) and
//! Markdown; [`check`] proves a receiver holds what was acknowledged.
//! `docs/design/loadgen.md` argues the design.

pub mod check;
pub mod driver;
pub mod history;
pub mod keys;
pub mod report;
pub mod retrieve;
pub mod run;
pub mod stats;
pub mod study;
pub mod uid;
pub mod workload;
