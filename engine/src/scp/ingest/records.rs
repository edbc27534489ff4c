//! The segments layout's side of [`Ingest`] (docs/design/segments.md):
//! the record buffers its jobs hold while their data sets arrive, lent to
//! the core for the zero-copy receive and counted against the core's
//! record memory budget, the spill of a record job to a file, the record's
//! one write at its reserved place, and the segments' flush rounds (held
//! by the core's flush window, `super::flush_window`, while more records
//! are a moment behind). The
//! state is the jobs' `record_buf`/`written` and [`segments::Segments`]; the
//! files layout's steps and the job machine's pump stay in `mod.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use sluice_io::{At, Core, IoBuf, IoError, OpenOptions, SyncKind};

use super::dir_sync::{RoundId, RoundStart};
use super::files::Files;
use super::flush_window::Behind;
use super::instance::Instance;
use super::job::{CommitOrder, JobInput, JobKey};
use super::segments;
use super::Ingest;
use crate::escape::Escaped;
use crate::metrics::SpillReason;
use crate::scp::failure::Failure;
use crate::scp::tag::{tag, TagKind};
use crate::store::layout::Area;

impl Ingest {
    /// The layout is segments: instances arrive into record buffers that
    /// [`Ingest::lend_record`] may lend.
    pub(crate) fn is_segments(&self) -> bool {
        self.segments.is_some()
    }

    /// Lends job `key`'s record buffer for the next `len` bytes of its data
    /// set to be received straight into their place (the rest of a large
    /// data PDV: docs/design/segments.md, "Zero-copy receive"). `None`
    /// unless it is a record job that has not failed and the bytes keep it
    /// within `storage.segment_record_max` and, if the buffer must grow,
    /// the core's record memory budget (else they come as fragments,
    /// copied or spilled).
    pub(crate) fn lend_record(
        &mut self,
        key: JobKey,
        len: usize,
    ) -> Option<(sluice_io::AlignedBuf, segments::Landing)> {
        let record = self.jobs.get(&key)?;
        let buf = record.record_buf.as_ref()?;
        if record.job.has_failed() || (buf.len() + len) as u64 > self.record_max {
            return None;
        }
        // Growing to lend must fit the core's budget as a fragment's growth
        // must ([`Ingest::fragment`]); if not, the bytes come as fragments,
        // which spill.
        if let Some(grown) = buf.growth(len) {
            let jobs = jobs_buffers(&self.jobs);
            if !self
                .segments
                .as_mut()
                .is_none_or(|segments| segments.room_for(grown, jobs))
            {
                return None;
            }
        }
        let record = self.jobs.get_mut(&key)?;
        let (buf, landing) = record.record_buf.take()?.lend(len);
        record.lent = buf.len();
        Some((buf, landing))
    }

    /// A record buffer lent by [`Ingest::lend_record`] back, with `bytes`
    /// of the data set received into its landing: the data set's next
    /// bytes, taken as a fragment's are (the head scanner, the checksum,
    /// the space accounting) but never copied.
    pub(crate) fn landed(
        &mut self,
        key: JobKey,
        buf: sluice_io::AlignedBuf,
        landing: segments::Landing,
        bytes: usize,
    ) {
        let Some(record) = self.jobs.get_mut(&key) else {
            // A job goes only once its association ended, and a closed
            // connection's buffer never comes back.
            debug_assert!(false, "job {key:?} gone while its buffer was lent");
            return;
        };
        record.lent = 0;
        let received = buf
            .as_slice()
            .get(landing.range())
            .and_then(|range| range.get(..bytes))
            .filter(|received| !received.is_empty() && !record.job.has_failed());
        let Some(received) = received else {
            record.record_buf = Some(segments::RecordBuf::landed(buf, landing, 0));
            return;
        };
        record.feed(received);
        self.space
            .wrote(&self.shared.space, &mut record.reservation, bytes as u64);
        record.record_buf = Some(segments::RecordBuf::landed(buf, landing, bytes));
        if let Some(metrics) = self.shared.metrics.core(self.core_index) {
            metrics.received_into_record(bytes as u64);
        }
    }

    /// A record job's data set is whole and accepted: a duplicate bound for
    /// quarantine goes to a file (quarantine stays files,
    /// docs/design/segments.md); else its place is reserved in the core's
    /// segment.
    pub(super) fn reserve_record(&mut self, core: &mut Core, key: JobKey) -> Result<(), Failure> {
        let Some(record) = self.jobs.get_mut(&key) else {
            panic!("job {key:?} gone while completing");
        };
        let Some(instance) = record.instance.as_ref() else {
            panic!("job {key:?} accepted without an entry");
        };
        let replacing = record.job.commit_order() == CommitOrder::AfterSyncs;
        let area = Files::area_guess(
            self.shared.store.index(),
            &instance.triplet,
            record.file_id,
            replacing,
        );
        if area == Area::Quarantine {
            self.spill(core, key, SpillReason::Quarantine);
            return Ok(());
        }
        let triplet = &instance.triplet;
        let uids = crate::store::segment::RecordUids {
            study: triplet.study_instance_uid.clone(),
            series: triplet.series_instance_uid.clone(),
            sop: triplet.sop_instance_uid.clone(),
        };
        let Some(buf) = record.record_buf.as_ref() else {
            panic!("a record job without its buffer");
        };
        let record_bytes = buf.record_bytes(&uids);
        let Some(segments) = self.segments.as_mut() else {
            panic!("a record job on the files layout");
        };
        let (place, retired) = segments.reserve(core, record_bytes);
        for id in retired {
            self.index.submit_seal(id);
        }
        record.place = Some(place?);
        Ok(())
    }

    /// A record job goes on as a files-layout job: its temporary file is
    /// opened and what its buffer holds becomes the file's first write,
    /// from the buffer itself (not copied; freed once written, counted in
    /// the core's budget until then).
    pub(super) fn spill(&mut self, core: &mut Core, key: JobKey, reason: SpillReason) {
        let Some(record) = self.jobs.get_mut(&key) else {
            panic!("job {key:?} gone while spilling");
        };
        let Some(buf) = record.record_buf.take() else {
            panic!("a spill of job {key:?}, which holds no record");
        };
        let (held, capacity) = (buf.len(), buf.capacity());
        tracing::debug!(
            job = key.0,
            reason = reason.label(),
            held_bytes = held,
            "instance spilled from its record buffer to a file"
        );
        if let Some(metrics) = self.shared.metrics.core(self.core_index) {
            metrics.spilled(reason);
        }
        let input = match core.open(
            At::Cwd,
            &record.tmp_path,
            OpenOptions::create_new_write(),
            tag(TagKind::Open, key.0),
        ) {
            Ok(()) => {
                let (bytes, weak) = buf.into_part10();
                if let Some(segments) = self.segments.as_mut() {
                    segments.spilled(weak, capacity);
                }
                JobInput::Spill(bytes)
            }
            // Still a record job, failed: nothing was written.
            Err(error) => JobInput::Failed(Failure::OpenSubmit(error)),
        };
        self.feed(core, key, input);
    }

    /// A record job's one write: the seal applied in its buffer, the record
    /// encoded in place, written at its reserved place on the core's ring
    /// (`O_DIRECT` where the file system takes it).
    pub(super) fn write_record(
        &mut self,
        core: &mut Core,
        key: JobKey,
        seal: [u8; crate::store::part10::SEAL_BYTES],
    ) -> Result<(), Failure> {
        let Some(record) = self.jobs.get_mut(&key) else {
            panic!("a record write of job {key:?}, which is gone");
        };
        let (Some(mut buf), Some(place), Some(instance)) = (
            record.record_buf.take(),
            record.place,
            record.instance.as_ref(),
        ) else {
            panic!("a record write of job {key:?} without its buffer, place or entry");
        };
        let Some(segments) = self.segments.as_ref() else {
            panic!("a record job on the files layout");
        };
        let seal_at = record.header_bytes as usize - seal.len();
        buf.overwrite(seal_at, &seal);
        self.record_hint = buf.len();
        let triplet = &instance.triplet;
        let uids = crate::store::segment::RecordUids {
            study: triplet.study_instance_uid.clone(),
            series: triplet.series_instance_uid.clone(),
            sop: triplet.sop_instance_uid.clone(),
        };
        let mut encoded = buf
            .encode(
                segments.epoch(),
                &uids,
                record.header_bytes as usize,
                instance.record.checksum,
            )
            .map_err(|error| Failure::Segment(Arc::new(std::io::Error::other(error))))?;
        debug_assert_eq!(encoded.len() as u64, place.length, "the reserved length");
        // Registered with the core's ring at its first write (a reused
        // buffer stays registered): the write then takes its pages from the
        // registration instead of pinning them (docs/design/segments.md,
        // "Registered buffers, session 11"); refused, it is written plain.
        let registered = super::segments::worth_registering(encoded.capacity())
            && core.register_buffer(&mut encoded);
        if let Some(metrics) = self.shared.metrics.core(self.core_index) {
            metrics.record_written(registered);
        }
        let handle = segments.handle(place.segment);
        let encoded = std::rc::Rc::new(encoded);
        record.written = Some(std::rc::Rc::clone(&encoded));
        core.write_at(
            handle,
            place.offset,
            vec![IoBuf::from(encoded)],
            tag(TagKind::Write, key.0),
        )
        .map_err(Failure::WriteSubmit)
    }

    /// A segment's flush round is due (the first record written while
    /// none runs): held while the flush window expects more records of the
    /// core within it (`super::flush_window`), else submitted now.
    pub(super) fn flush_due(&mut self, core: &mut Core, start: RoundStart<u64>) {
        let Some(segments) = self.segments.as_mut() else {
            panic!("a flush round on the files layout");
        };
        segments.hold(start.round);
        self.held_or_started(core, start);
    }

    /// A held round (held by [`Ingest::flush_due`], or as the next round
    /// when one ended) stays held while the window expects more records
    /// (its timer armed), or is released and submitted now.
    fn held_or_started(&mut self, core: &mut Core, start: RoundStart<u64>) {
        let now = Instant::now();
        let window = self.flush_window.window();
        let expected = !window.is_zero()
            && self
                .flush_window
                .expects(now, now + window, start.target, behind(&self.jobs));
        if !expected {
            self.release_flush(core, start, None);
            return;
        }
        if let Some(window) = self.flush_window.hold(start, now) {
            match core.timer(window, tag(TagKind::FlushWindow, 0)) {
                Ok(timer) => self.flush_window.timer_armed(timer),
                // No timer: nothing is held.
                Err(_) => self.flush_window_fired(core),
            }
        }
    }

    /// A record was written into segment `segment` while a round of it is
    /// held or in flight: a held round is released once no other record is
    /// expected before its deadline.
    pub(super) fn joined_held(&mut self, core: &mut Core, segment: u64) {
        let Some(deadline) = self.flush_window.held_in(segment) else {
            return;
        };
        let now = Instant::now();
        if self
            .flush_window
            .expects(now, deadline, segment, behind(&self.jobs))
        {
            return;
        }
        let (held, timer) = self.flush_window.release(segment);
        if let Some(timer) = timer {
            core.cancel_timer(timer);
        }
        if let Some(held) = held {
            self.release_flush(core, held.start, Some(held.due));
        }
    }

    /// The flush window's timer fired: every held round is submitted.
    pub(crate) fn flush_window_fired(&mut self, core: &mut Core) {
        for held in self.flush_window.fired() {
            self.release_flush(core, held.start, Some(held.due));
        }
    }

    /// Submits a held round (held since `due`, if the window held it).
    fn release_flush(&mut self, core: &mut Core, start: RoundStart<u64>, due: Option<Instant>) {
        let Some(segments) = self.segments.as_mut() else {
            panic!("a flush round on the files layout");
        };
        segments.release(start.round);
        if let Some(due) = due {
            self.flushes_held.insert(start.round, due);
        }
        self.start_flush(core, start);
    }

    /// Starts a segment's flush round.
    fn start_flush(&mut self, core: &mut Core, start: RoundStart<u64>) {
        let Some(segments) = self.segments.as_ref() else {
            panic!("a flush round on the files layout");
        };
        let handle = segments.handle(start.target);
        self.flushes_started.insert(start.round, Instant::now());
        if let Err(error) = core.sync(
            handle,
            SyncKind::Data,
            tag(TagKind::SegmentSync, start.round.0),
        ) {
            self.flush_ended(core, start.round, Err(Failure::SyncSubmit(error)));
        }
    }

    /// A segment's flush completed.
    pub(crate) fn segment_synced(
        &mut self,
        core: &mut Core,
        round: RoundId,
        result: Result<(), IoError>,
    ) {
        self.flush_ended(core, round, result.map_err(Failure::Fsync));
    }

    /// A segment's flush round ended: its records are durable, or they and
    /// the next round's all fail and the segment is sealed.
    pub(super) fn flush_ended(
        &mut self,
        core: &mut Core,
        round: RoundId,
        result: Result<(), Failure>,
    ) {
        let Some(segments) = self.segments.as_mut() else {
            panic!("a flush round on the files layout");
        };
        let end = segments.round_ended(round, &result);
        // The next round is held until this one's instances were answered
        // (their senders are then expected back: `super::flush_window`);
        // records written meanwhile join it.
        if let Some(next) = &end.next {
            segments.hold(next.round);
        }
        let started = self.flushes_started.remove(&round);
        let held_since = self.flushes_held.remove(&round);
        let now = Instant::now();
        let took = started.map(|started| now.saturating_duration_since(started));
        tracing::debug!(
            target: "sluice::ingest::timing",
            segment = end.target,
            instances = end.jobs.len(),
            next_round = end.next.is_some(),
            started_at_us = super::timing::unix_micros(started),
            flush_us = took.unwrap_or_default().as_micros() as u64,
            held_us = held_since
                .zip(started)
                .map_or(0, |(due, started)| started.saturating_duration_since(due).as_micros() as u64),
            "segment flush round ended"
        );
        match result {
            Ok(()) => {
                if let Some(took) = took {
                    self.flush_window.flushed(took);
                }
                for key in end.jobs {
                    if let Some(record) = self.jobs.get_mut(&key) {
                        record.timing.flush_started = started;
                        record.timing.file_synced = Some(now);
                    }
                    self.inputs.push_back((key, JobInput::DataSynced(Ok(()))));
                }
            }
            Err(failure) => {
                tracing::error!(
                    segment = end.target,
                    instances = end.jobs.len(),
                    reason = %Escaped(&failure),
                    "segment flush failed; its instances fail and the segment is sealed"
                );
                self.count_durability_failure(&failure);
                for key in end.jobs {
                    self.inputs
                        .push_back((key, JobInput::DataSynced(Err(failure.clone()))));
                }
            }
        }
        self.pump(core);
        if let Some(next) = end.next {
            self.held_or_started(core, next);
        }
    }
}

/// The core's record jobs not yet written (in no flush round), for the
/// flush window.
fn behind(jobs: &HashMap<JobKey, Instance>) -> impl Iterator<Item = Behind> + '_ {
    jobs.values()
        .filter(|record| {
            record.job.is_record() && !record.job.has_failed() && record.timing.renamed.is_none()
        })
        .filter_map(|record| {
            Some(Behind {
                received: record.timing.received?,
                writing: record.timing.complete.is_some(),
                segment: record.place.map(|place| place.segment),
            })
        })
}

/// The bytes of record buffers the jobs hold: arriving (lent to a receive
/// or not), or written and not yet taken back (the core's budget counts them beside the spare ones and
/// the spills in flight: [`Segments::room_for`]).
pub(super) fn jobs_buffers(jobs: &HashMap<JobKey, Instance>) -> usize {
    jobs.values()
        .map(|record| {
            record.record_buf.as_ref().map_or(0, |buf| buf.capacity())
                + record.written.as_ref().map_or(0, |buf| buf.capacity())
                + record.lent
        })
        .sum()
}

/// The record place of a job, if it has one.
pub(super) fn record_place(
    jobs: &HashMap<JobKey, Instance>,
    key: JobKey,
) -> Option<sluice_index::RecordPlace> {
    jobs.get(&key).and_then(|record| record.place)
}
