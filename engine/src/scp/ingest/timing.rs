//! When an instance passed each step of the durability order: logged at
//! debug level with its answer (target `sluice::ingest::timing`), so a slow
//! tail can be traced to the step that caused it.

use crate::escape::Escaped;
use std::time::Instant;

use sluice_net::dimse::Status;

use crate::metrics::StoreLatency;

/// When an instance passed each step (set by the ingest service at the
/// completions).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct JobTiming {
    /// The C-STORE-RQ's arrival.
    pub(super) received: Option<Instant>,
    pub(super) complete: Option<Instant>,
    /// The file renamed into its area, or the record written at its place
    /// in its segment.
    pub(super) renamed: Option<Instant>,
    pub(super) file_synced: Option<Instant>,
    pub(super) dir_synced: Option<Instant>,
    /// Records: the segment flush round that made it durable began.
    pub(super) flush_started: Option<Instant>,
    pub(super) submitted: Option<Instant>,
    /// The index writer committed the batch (its answer's callback, on the
    /// writer thread).
    pub(super) indexed: Option<Instant>,
    /// The core took the index's answer.
    pub(super) committed: Option<Instant>,
}

/// `at` in microseconds since the Unix epoch (0 for `None`), to line the
/// steps up with the index writer's transactions and the kernel's trace.
pub(crate) fn unix_micros(at: Option<Instant>) -> u64 {
    let Some(at) = at else {
        return 0;
    };
    let (now, unix) = (Instant::now(), std::time::SystemTime::now());
    let since = now.saturating_duration_since(at);
    unix.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(since)
        .as_micros() as u64
}

impl JobTiming {
    fn micros(from: Option<Instant>, to: Option<Instant>) -> u64 {
        match (from, to) {
            (Some(from), Some(to)) => to.saturating_duration_since(from).as_micros() as u64,
            _ => 0,
        }
    }

    /// Records the steps' durations of an instance answered now in the
    /// latency histograms.
    pub(crate) fn observe(&self, latency: &StoreLatency) {
        let answered = Instant::now();
        let between = |from: Option<Instant>, to: Option<Instant>| match (from, to) {
            (Some(from), Some(to)) => Some(to.saturating_duration_since(from)),
            _ => None,
        };
        if let Some(elapsed) = between(self.received, Some(answered)) {
            latency.answered.observe(elapsed);
        }
        if let Some(elapsed) = between(self.renamed, self.file_synced) {
            latency.file_sync.observe(elapsed);
        }
        if let Some(elapsed) = between(self.renamed, self.dir_synced) {
            latency.dir_sync.observe(elapsed);
        }
        if let Some(elapsed) = between(self.submitted, self.committed) {
            latency.index_commit.observe(elapsed);
        }
    }

    /// Logs the steps' durations of an instance answered now.
    pub(crate) fn log(&self, sop_instance_uid: &str, status: Status) {
        let answered = Some(Instant::now());
        tracing::debug!(
            target: "sluice::ingest::timing",
            sop_instance_uid = %Escaped(sop_instance_uid),
            status = %status,
            rename_us = Self::micros(self.complete, self.renamed),
            file_sync_us = Self::micros(self.renamed, self.file_synced),
            dir_sync_us = Self::micros(self.renamed, self.dir_synced),
            // Zero when the entry was submitted before the syncs ended.
            wait_batch_us = Self::micros(
                self.file_synced.max(self.dir_synced),
                self.submitted
            ),
            index_us = Self::micros(self.submitted, self.committed.or(answered)),
            total_us = Self::micros(self.complete, answered),
            // The way from the last byte to the answer (docs/design/segments.md,
            // "The 40 KB path, session 10"), each from the step before:
            // submitted from the last byte; the writer's commit from the
            // submission, the core taking it from the commit (a thread
            // hop); a record's flush round starting from its write's
            // completion, ending from its start; the answer from the later
            // of the flush and the index answer.
            submit_us = Self::micros(self.complete, self.submitted),
            commit_us = Self::micros(self.submitted, self.indexed),
            hop_us = Self::micros(self.indexed, self.committed),
            flush_wait_us = Self::micros(self.renamed, self.flush_started),
            flush_us = Self::micros(self.flush_started, self.file_synced),
            last_us = Self::micros(self.file_synced.max(self.committed), answered),
            index_last = self.committed > self.file_synced,
            complete_at_us = unix_micros(self.complete),
            "instance answered"
        );
    }
}
