//! The segments' flush window: a flush round that is due while other
//! records of the core are a moment behind is held for them, so that one
//! `fdatasync` covers them all (docs/design/segments.md, "Fewer flushes
//! per instance, session 11").
//!
//! Without it, with synchronous senders, half the rounds carried one
//! record: a round covers most of the core's records, one written just
//! after it began goes out alone in the next round, and the senders
//! answered by the big round send their next instance while that one runs,
//! so they wait for it, and so on. Waiting `t` for `k` records that would
//! otherwise wait for the round in flight to end and then for their own
//! costs the held records `t` and saves the `k` others a round, and the
//! device a flush: it pays while `t` is under about one round, so the
//! window is the recent flush round's time ([`FlushWindow::window`],
//! at most [`FLUSH_WINDOW_MAX`]).
//!
//! "A moment behind" is predicted from what the core measured, so the
//! window is armed only when a record is expected within it (a lone
//! association never waits; at 512 KB, where an instance takes longer to
//! arrive than a round takes, arriving ones are not waited for):
//!
//! - a record whose data set is whole and whose write is in flight;
//! - a record job still arriving, expected at its C-STORE-RQ's arrival
//!   plus the core's recent arrival-to-written time;
//! - an association whose last record was answered and that has not sent
//!   its next C-STORE-RQ yet, expected at its answer plus the recent
//!   answer-to-next-request time plus the arrival-to-written time.
//!
//! One that is overdue (late by more than its own expected time or the
//! window) is a sender that paused or left, and is not waited for. A held
//! round is released when no record is still expected before its
//! deadline (checked at each record written), or at the deadline (the
//! core's timer). The contract is unchanged: a held round covers only
//! records written before its `fdatasync` begins, and no instance is
//! answered before its round ended.
//!
//! Sans-I/O: [`FlushWindow`] measures and decides; the ingest service
//! holds and releases the rounds (`super::dir_sync::SyncRounds::hold`) and
//! arms the timer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::dir_sync::RoundStart;

/// The longest a due flush round is held (the window is the recent
/// round's time, which is longer only on a loaded or slow device, where
/// holding longer than this would cost more than it saves).
pub(crate) const FLUSH_WINDOW_MAX: Duration = Duration::from_millis(8);

/// A moving average (an eighth of each new sample).
#[derive(Debug, Clone, Copy, Default)]
struct Ewma(Option<Duration>);

impl Ewma {
    fn add(&mut self, sample: Duration) {
        self.0 = Some(match self.0 {
            None => sample,
            Some(mean) => (mean * 7 + sample) / 8,
        });
    }

    fn get(&self) -> Option<Duration> {
        self.0
    }
}

/// A record job of the core not yet written (so not in any flush round).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Behind {
    /// Its C-STORE-RQ's arrival.
    pub(crate) received: Instant,
    /// Whole, its record's write in flight (else still arriving).
    pub(crate) writing: bool,
    /// The segment its place is reserved in (`None`: not reserved yet).
    pub(crate) segment: Option<u64>,
}

/// A held flush round.
#[derive(Debug)]
pub(crate) struct Held {
    /// The round and its segment.
    pub(crate) start: RoundStart<u64>,
    /// When it was due (held from then).
    pub(crate) due: Instant,
    /// When it is released whatever is still expected.
    pub(crate) deadline: Instant,
}

/// One core's flush window (see the module documentation). `Timer` is the
/// handle of its armed timer.
#[derive(Debug)]
pub(crate) struct FlushWindow<Timer> {
    /// Submission to end of the core's flush rounds.
    flush: Ewma,
    /// A record job's C-STORE-RQ to its record written.
    arrival: Ewma,
    /// A record's answer to its association's next C-STORE-RQ.
    gap: Ewma,
    /// Associations whose last record was answered and that have not sent
    /// their next request: serial -> when answered.
    returning: HashMap<u64, Instant>,
    held: Vec<Held>,
    timer: Option<Timer>,
    max: Duration,
}

impl<Timer: Copy + std::fmt::Debug> FlushWindow<Timer> {
    /// A window of at most `max` (zero: rounds are never held).
    pub(crate) fn new(max: Duration) -> FlushWindow<Timer> {
        FlushWindow {
            flush: Ewma::default(),
            arrival: Ewma::default(),
            gap: Ewma::default(),
            returning: HashMap::new(),
            held: Vec::new(),
            timer: None,
            max,
        }
    }

    /// How long a due round may be held now: the recent flush round's
    /// time, at most the maximum (zero before the first round ended).
    pub(crate) fn window(&self) -> Duration {
        self.flush.get().unwrap_or_default().min(self.max)
    }

    /// A flush round took `took` from its submission to its end.
    pub(crate) fn flushed(&mut self, took: Duration) {
        self.flush.add(took);
    }

    /// A record job's record was written, `took` after its C-STORE-RQ.
    pub(crate) fn written(&mut self, took: Duration) {
        self.arrival.add(took);
    }

    /// Association `serial`'s record was answered at `at`.
    pub(crate) fn answered(&mut self, serial: u64, at: Instant) {
        self.returning.insert(serial, at);
    }

    /// Association `serial` sent its next C-STORE-RQ at `at`.
    pub(crate) fn request(&mut self, serial: u64, at: Instant) {
        if let Some(answered) = self.returning.remove(&serial) {
            self.gap.add(at.saturating_duration_since(answered));
        }
    }

    /// Whether a record is expected in segment `segment` before
    /// `deadline`, of `behind` (the core's record jobs not yet written)
    /// and the associations returning. Forgets the returning ones that are
    /// overdue.
    pub(crate) fn expects(
        &mut self,
        now: Instant,
        deadline: Instant,
        segment: u64,
        behind: impl IntoIterator<Item = Behind>,
    ) -> bool {
        let window = self.window();
        let arrival = self.arrival.get().unwrap_or_default();
        let back = self.gap.get().unwrap_or_default() + arrival;
        // Expected at `at`, late by more than `late` from then: not waited
        // for.
        let due = |at: Instant, late: Duration| at <= deadline && now <= at + late.max(window);
        self.returning
            .retain(|_, answered| now <= *answered + back + back.max(window));
        let behind = behind.into_iter().any(|job| {
            job.segment.is_none_or(|id| id == segment)
                && (job.writing || due(job.received + arrival, arrival))
        });
        behind
            || self
                .returning
                .values()
                .any(|answered| due(*answered + back, back))
    }

    /// Round `start` is due at `now` and records are expected: held until
    /// `now` + the window at the latest. Returns the window if the timer is
    /// to be armed for it.
    pub(crate) fn hold(&mut self, start: RoundStart<u64>, now: Instant) -> Option<Duration> {
        let window = self.window();
        self.held.push(Held {
            start,
            due: now,
            deadline: now + window,
        });
        self.timer.is_none().then_some(window)
    }

    /// The timer is armed.
    pub(crate) fn timer_armed(&mut self, timer: Timer) {
        debug_assert!(self.timer.is_none());
        self.timer = Some(timer);
    }

    /// The held round of segment `segment`, if any (its deadline).
    pub(crate) fn held_in(&self, segment: u64) -> Option<Instant> {
        self.held
            .iter()
            .find(|held| held.start.target == segment)
            .map(|held| held.deadline)
    }

    /// Segment `segment`'s held round is released; and the timer to
    /// cancel, when no round is held any more.
    pub(crate) fn release(&mut self, segment: u64) -> (Option<Held>, Option<Timer>) {
        let at = self
            .held
            .iter()
            .position(|held| held.start.target == segment);
        let held = at.map(|at| self.held.swap_remove(at));
        let timer = if self.held.is_empty() {
            self.timer.take()
        } else {
            None
        };
        (held, timer)
    }

    /// The timer fired: every held round is released (their deadlines are
    /// within one window of the first's).
    pub(crate) fn fired(&mut self) -> Vec<Held> {
        self.timer = None;
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scp::ingest::dir_sync::RoundId;

    const MS: Duration = Duration::from_millis(1);

    fn start(segment: u64) -> RoundStart<u64> {
        RoundStart {
            round: RoundId(segment),
            target: segment,
        }
    }

    fn writing(segment: u64, received: Instant) -> Behind {
        Behind {
            received,
            writing: true,
            segment: Some(segment),
        }
    }

    /// A window that measured a `flush` round and a `written` arrival.
    fn measured(flush: Duration, written: Duration) -> FlushWindow<u32> {
        let mut window = FlushWindow::<u32>::new(8 * MS);
        window.flushed(flush);
        window.written(written);
        window
    }

    fn arriving(received: Instant) -> Behind {
        Behind {
            received,
            writing: false,
            segment: None,
        }
    }

    /// Before a flush round was measured, and with a zero maximum, the
    /// window is zero: nothing is held.
    #[test]
    fn the_window_is_the_recent_round_at_most_the_maximum() {
        let mut window = FlushWindow::<u32>::new(4 * MS);
        assert_eq!(window.window(), Duration::ZERO);
        window.flushed(2 * MS);
        assert_eq!(window.window(), 2 * MS);
        for _ in 0..64 {
            window.flushed(20 * MS);
        }
        assert_eq!(window.window(), 4 * MS, "at most the maximum");
        let mut off = FlushWindow::<u32>::new(Duration::ZERO);
        off.flushed(2 * MS);
        assert_eq!(off.window(), Duration::ZERO);
    }

    /// A record being written in the round's segment is always expected;
    /// one in another segment is not (it joins that segment's round).
    #[test]
    fn a_record_being_written_is_waited_for_in_its_segment_only() {
        let now = Instant::now();
        let mut window = FlushWindow::<u32>::new(8 * MS);
        window.flushed(2 * MS);
        let deadline = now + window.window();
        assert!(window.expects(now, deadline, 7, [writing(7, now)]));
        assert!(!window.expects(now, deadline, 7, [writing(8, now)]));
        assert!(!window.expects(now, deadline, 7, []));
    }

    /// An arriving record is waited for only if it is expected within the
    /// window: at 40 KB (arrival under a round) yes, at 512 KB (arrival
    /// longer than a round) no, and a stalled one no more.
    #[test]
    fn an_arriving_record_is_waited_for_if_expected_within_the_window() {
        let now = Instant::now();
        let mut window = measured(2 * MS, MS);
        let deadline = now + window.window();
        assert!(window.expects(now, deadline, 7, [arriving(now)]));
        let mut slow = measured(2 * MS, 12 * MS);
        assert!(!slow.expects(now, now + slow.window(), 7, [arriving(now)]));
        // Arrived 20 ms ago, expected 1 ms after: overdue, a stalled sender.
        let later = now + 20 * MS;
        assert!(!window.expects(later, later + window.window(), 7, [arriving(now)]));
    }

    /// An association answered comes back after the measured gap and
    /// arrival; one that does not (it paused or ended) is forgotten.
    #[test]
    fn a_returning_association_is_expected_until_overdue() {
        let now = Instant::now();
        let mut window = measured(2 * MS, MS / 2);
        window.answered(1, now - 10 * MS);
        window.request(1, now - 10 * MS + MS / 4);
        // Expected 3/4 ms after its answer.
        window.answered(2, now);
        assert!(window.expects(now, now + window.window(), 7, []));
        // It came back: nothing more is expected.
        window.request(2, now + MS / 4);
        assert!(!window.expects(now, now + window.window(), 7, []));
        // One that never comes back is waited for no longer than its time
        // or the window, then forgotten.
        window.answered(3, now);
        let later = now + 10 * MS;
        assert!(!window.expects(later, later + window.window(), 7, []));
        assert!(window.returning.is_empty());
    }

    /// A lone association is never held: its own answer does not count once
    /// its next request came.
    #[test]
    fn a_lone_association_is_never_held() {
        let now = Instant::now();
        let mut window = measured(2 * MS, MS / 2);
        window.answered(1, now);
        window.request(1, now + MS / 10);
        let at = now + MS;
        assert!(!window.expects(at, at + window.window(), 7, []));
    }

    /// Held rounds: the timer is armed for the first, cancelled with the
    /// last released, and its firing releases them all.
    #[test]
    fn held_rounds_and_their_timer() {
        let now = Instant::now();
        let mut window = FlushWindow::<u32>::new(8 * MS);
        window.flushed(2 * MS);
        assert_eq!(window.hold(start(7), now), Some(2 * MS));
        window.timer_armed(5);
        assert_eq!(window.held_in(7), Some(now + 2 * MS));
        assert_eq!(window.hold(start(8), now), None, "armed already");
        let (held, timer) = window.release(7);
        assert_eq!(held.map(|held| held.start.target), Some(7));
        assert_eq!(timer, None, "segment 8's round is still held");
        assert_eq!(window.held_in(7), None);
        let fired = window.fired();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].start.target, 8);
        assert_eq!(window.hold(start(9), now), Some(2 * MS));
        window.timer_armed(6);
        assert_eq!(window.release(9).1, Some(6), "the last one cancels it");
    }
}
