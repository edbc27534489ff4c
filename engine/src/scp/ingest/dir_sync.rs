//! Sync rounds: one `fsync` of a fan-out directory makes durable the names
//! of every instance renamed into it before the fsync began; one
//! `fdatasync` of a segment makes durable every record whose write
//! completed before it began (docs/design/segments.md, "Group commit").
//! Both are the same structure over a different target: [`DirSyncRounds`]
//! keys it by the directory; the segments layout's flush rounds key it by
//! the segment id (`super::segments`).
//!
//! A target has at most one round in flight. A job that joins (renamed into
//! the directory, its record written to the segment) joins the round about
//! to start (none in flight: it starts now) or waits for the next one (a
//! round in flight may have begun before its rename or write). When a round
//! succeeds, its jobs' names or records are durable and the waiting jobs'
//! round starts; when it fails, its jobs and the waiting ones all fail,
//! since after a failed fsync a later success no longer proves that the
//! earlier renames or writes reached the disk (a segment whose flush failed
//! is also sealed by the service: nothing more is written to it).
//!
//! A round may be *held* before its sync is submitted ([`SyncRounds::hold`]:
//! the segments' flush window, docs/design/segments.md "Fewer flushes per
//! instance, session 11"): jobs that join meanwhile join it rather than
//! wait for the next one, until [`SyncRounds::release`]. A held round
//! covers only jobs that joined before its sync begins, as any round does.
//!
//! Sans-I/O: [`SyncRounds`] says which rounds to start and which jobs a
//! round covered; the ingest service opens and syncs the targets. It
//! knows no connection and no job's state.

use std::collections::HashMap;
use std::hash::Hash;
use std::path::PathBuf;

use super::job::JobKey;
use crate::scp::tag;

/// One sync round (its io tags' value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RoundId(pub(crate) u64);

/// A round to start: sync `target` (a directory: open it and fsync it).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RoundStart<K = PathBuf> {
    /// The round.
    pub(crate) round: RoundId,
    /// What to sync.
    pub(crate) target: K,
}

/// What a round that ended decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RoundEnd<K = PathBuf> {
    /// What was synced.
    pub(crate) target: K,
    /// On success, the jobs whose names or records are now durable; on
    /// failure, every job of the target (the round's and the next round's),
    /// all failed.
    pub(crate) jobs: Vec<JobKey>,
    /// The next round of the target, to start now.
    pub(crate) next: Option<RoundStart<K>>,
}

#[derive(Debug, Default)]
struct Group {
    round: Option<RoundId>,
    /// The round is held: its sync is not submitted yet, so a job that
    /// joins now is covered by it.
    held: bool,
    /// Covered by the round in flight.
    in_flight: Vec<JobKey>,
    /// Renamed while it runs: the next round's.
    waiting: Vec<JobKey>,
}

/// The sync rounds of one core over targets named by `K`.
#[derive(Debug)]
pub(crate) struct SyncRounds<K> {
    groups: HashMap<K, Group>,
    rounds: HashMap<RoundId, K>,
    next_round: u64,
}

/// The directory fsync rounds of one core.
pub(crate) type DirSyncRounds = SyncRounds<PathBuf>;

impl<K> Default for SyncRounds<K> {
    fn default() -> Self {
        SyncRounds {
            groups: HashMap::new(),
            rounds: HashMap::new(),
            next_round: 0,
        }
    }
}

impl<K: Clone + Eq + Hash + std::fmt::Debug> SyncRounds<K> {
    /// Job `job` joins `dir` (its file renamed into the directory, its
    /// record's write completed in the segment): the round to start, when
    /// `dir` has none in flight.
    pub(crate) fn join(&mut self, dir: K, job: JobKey) -> Option<RoundStart<K>> {
        let group = self.groups.entry(dir.clone()).or_default();
        if group.round.is_some() {
            if group.held {
                group.in_flight.push(job);
            } else {
                group.waiting.push(job);
            }
            return None;
        }
        debug_assert!(group.in_flight.is_empty() && group.waiting.is_empty());
        group.in_flight.push(job);
        Some(self.start(dir))
    }

    fn start(&mut self, dir: K) -> RoundStart<K> {
        let round = RoundId(self.next_round);
        self.next_round = self.next_round.wrapping_add(1) & tag::VALUE_MAX;
        let group = self.groups.get_mut(&dir);
        assert!(group.is_some(), "a round of a directory without jobs");
        if let Some(group) = group {
            group.round = Some(round);
        }
        let previous = self.rounds.insert(round, dir.clone());
        assert!(previous.is_none(), "round {round:?} started twice");
        RoundStart { round, target: dir }
    }

    /// Holds round `round`, just returned by [`SyncRounds::join`] or as a
    /// [`RoundEnd::next`]: its sync is not submitted until
    /// [`SyncRounds::release`], and the jobs joining meanwhile join it.
    pub(crate) fn hold(&mut self, round: RoundId) {
        let group = self.group_of(round);
        debug_assert!(!group.held, "round {round:?} held twice");
        group.held = true;
    }

    /// Releases held round `round`: its sync is submitted now, and jobs
    /// joining from here on wait for the next round. Returns how many jobs
    /// it covers.
    pub(crate) fn release(&mut self, round: RoundId) -> usize {
        let group = self.group_of(round);
        debug_assert!(group.held, "round {round:?} released but not held");
        group.held = false;
        group.in_flight.len()
    }

    /// How many jobs round `round` covers so far.
    #[cfg(test)]
    fn covered(&mut self, round: RoundId) -> usize {
        self.group_of(round).in_flight.len()
    }

    fn group_of(&mut self, round: RoundId) -> &mut Group {
        let Some(dir) = self.rounds.get(&round) else {
            panic!("round {round:?} ended or never started");
        };
        let Some(group) = self.groups.get_mut(dir) else {
            panic!("round {round:?} of a target without jobs");
        };
        assert_eq!(group.round, Some(round));
        group
    }

    /// Round `round` ended (its directory's open or its sync failed, or the
    /// sync succeeded).
    pub(crate) fn ended(&mut self, round: RoundId, succeeded: bool) -> RoundEnd<K> {
        // Every round ends exactly once: a failed open, a failed submission
        // of the sync, or the sync's completion.
        let dir = self.rounds.remove(&round);
        let Some(dir) = dir else {
            panic!("round {round:?} ended twice or never started");
        };
        let Some(group) = self.groups.get_mut(&dir) else {
            panic!("round {round:?} of a directory without jobs");
        };
        assert_eq!(group.round, Some(round));
        assert!(!group.held, "round {round:?} ended while held");
        group.round = None;
        let mut jobs = std::mem::take(&mut group.in_flight);
        if !succeeded {
            jobs.append(&mut group.waiting);
            self.groups.remove(&dir);
            return RoundEnd {
                target: dir,
                jobs,
                next: None,
            };
        }
        let next = std::mem::take(&mut group.waiting);
        let next = if next.is_empty() {
            self.groups.remove(&dir);
            None
        } else {
            group.in_flight = next;
            Some(self.start(dir.clone()))
        };
        RoundEnd {
            target: dir,
            jobs,
            next,
        }
    }

    /// Rounds in flight (one per directory at most).
    #[cfg(test)]
    fn rounds_in_flight(&self) -> usize {
        self.rounds.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        PathBuf::from(name)
    }

    #[test]
    fn one_round_per_directory_covers_the_jobs_renamed_before_it() {
        let mut rounds = DirSyncRounds::default();
        let first = rounds.join(dir("a"), JobKey(1)).expect("a round starts");
        // Renamed while the round runs: the next round's.
        assert_eq!(rounds.join(dir("a"), JobKey(2)), None);
        assert_eq!(rounds.join(dir("a"), JobKey(3)), None);
        // Another directory has its own round.
        let other = rounds.join(dir("b"), JobKey(4)).expect("b's round starts");
        assert_eq!(rounds.rounds_in_flight(), 2);

        let end = rounds.ended(first.round, true);
        assert_eq!(end.jobs, vec![JobKey(1)]);
        let next = end.next.expect("the waiting jobs' round starts");
        assert_eq!(next.target, dir("a"));
        assert_eq!(rounds.join(dir("a"), JobKey(5)), None);

        let end = rounds.ended(next.round, true);
        assert_eq!(end.jobs, vec![JobKey(2), JobKey(3)]);
        let last = end.next.expect("job 5's round");
        assert_eq!(rounds.ended(last.round, true).jobs, vec![JobKey(5)]);
        assert_eq!(rounds.ended(other.round, true).jobs, vec![JobKey(4)]);
        assert_eq!(rounds.rounds_in_flight(), 0);
        // A directory whose rounds all ended starts afresh.
        assert!(rounds.join(dir("a"), JobKey(6)).is_some());
    }

    #[test]
    fn a_failed_round_fails_its_jobs_and_the_waiting_ones() {
        let mut rounds = DirSyncRounds::default();
        let first = rounds.join(dir("a"), JobKey(1)).expect("a round starts");
        assert_eq!(rounds.join(dir("a"), JobKey(2)), None);
        let end = rounds.ended(first.round, false);
        assert_eq!(end.jobs, vec![JobKey(1), JobKey(2)]);
        assert_eq!(end.next, None);
        assert_eq!(rounds.rounds_in_flight(), 0);
        // The next rename into the directory starts a new round.
        let again = rounds.join(dir("a"), JobKey(3)).expect("a new round");
        assert_ne!(again.round, first.round);
    }

    /// Segment flush rounds: the same rounds keyed by segment id; a record
    /// written while its segment's flush runs waits for the next flush.
    #[test]
    fn segment_flush_rounds_cover_the_records_written_before_they_began() {
        let mut rounds = SyncRounds::<u64>::default();
        let first = rounds.join(7, JobKey(1)).expect("a flush starts");
        assert_eq!(rounds.join(7, JobKey(2)), None);
        let other = rounds.join(8, JobKey(3)).expect("segment 8's flush");
        let end = rounds.ended(first.round, true);
        assert_eq!((end.target, end.jobs), (7, vec![JobKey(1)]));
        let next = end.next.expect("job 2's flush");
        assert_eq!(next.target, 7);
        // A failed flush fails its records and those waiting for the next.
        assert_eq!(rounds.join(7, JobKey(4)), None);
        let failed = rounds.ended(next.round, false);
        assert_eq!(failed.jobs, vec![JobKey(2), JobKey(4)]);
        assert_eq!(failed.next, None);
        assert_eq!(rounds.ended(other.round, true).jobs, vec![JobKey(3)]);
        assert_eq!(rounds.rounds_in_flight(), 0);
    }

    /// A held round covers the jobs that join before it is released; after
    /// that they wait for the next round, as for a round in flight.
    #[test]
    fn a_held_round_covers_the_jobs_joining_until_released() {
        let mut rounds = SyncRounds::<u64>::default();
        let first = rounds.join(7, JobKey(1)).expect("a flush is due");
        rounds.hold(first.round);
        assert_eq!(rounds.join(7, JobKey(2)), None);
        assert_eq!(rounds.join(7, JobKey(3)), None);
        assert_eq!(rounds.covered(first.round), 3);
        assert_eq!(rounds.release(first.round), 3);
        assert_eq!(rounds.join(7, JobKey(4)), None);
        let end = rounds.ended(first.round, true);
        assert_eq!(end.jobs, vec![JobKey(1), JobKey(2), JobKey(3)]);
        // The next round, held in turn, takes job 5 beside job 4.
        let next = end.next.expect("job 4's flush");
        rounds.hold(next.round);
        assert_eq!(rounds.join(7, JobKey(5)), None);
        assert_eq!(rounds.release(next.round), 2);
        let end = rounds.ended(next.round, false);
        assert_eq!(end.jobs, vec![JobKey(4), JobKey(5)]);
        assert_eq!(rounds.rounds_in_flight(), 0);
    }

    #[test]
    #[should_panic(expected = "ended while held")]
    fn a_held_round_does_not_end() {
        let mut rounds = SyncRounds::<u64>::default();
        let first = rounds.join(7, JobKey(1)).expect("a flush is due");
        rounds.hold(first.round);
        rounds.ended(first.round, true);
    }

    #[test]
    #[should_panic(expected = "ended twice")]
    fn a_round_ends_once() {
        let mut rounds = DirSyncRounds::default();
        let first = rounds.join(dir("a"), JobKey(1)).expect("a round starts");
        rounds.ended(first.round, true);
        rounds.ended(first.round, true);
    }
}
