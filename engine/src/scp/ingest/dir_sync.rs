//! Directory fsync rounds: one `fsync` of a fan-out directory makes durable
//! the names of every instance renamed into it before the fsync began.
//!
//! A directory has at most one round in flight. A job renamed into a
//! directory joins the round about to start (none in flight: it starts now)
//! or waits for the next one (a round in flight may have begun before its
//! rename). When a round succeeds, its jobs' names are durable and the
//! waiting jobs' round starts; when it fails, its jobs and the waiting ones
//! all fail, since after a failed fsync a later success no longer proves
//! that the earlier renames reached the disk.
//!
//! Sans-I/O: [`DirSyncRounds`] says which rounds to start and which jobs a
//! round covered; the ingest service opens and syncs the directories. It
//! knows no connection and no job's state.

use std::collections::HashMap;
use std::path::PathBuf;

use super::job::JobKey;
use crate::scp::tag;

/// One directory fsync round (its io tags' value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RoundId(pub(crate) u64);

/// A round to start: open `dir` and fsync it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RoundStart {
    /// The round.
    pub(crate) round: RoundId,
    /// The directory to sync.
    pub(crate) dir: PathBuf,
}

/// What a round that ended decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RoundEnd {
    /// The directory.
    pub(crate) dir: PathBuf,
    /// On success, the jobs whose names are now durable; on failure, every
    /// job of the directory (the round's and the next round's), all failed.
    pub(crate) jobs: Vec<JobKey>,
    /// The next round of the directory, to start now.
    pub(crate) next: Option<RoundStart>,
}

#[derive(Debug, Default)]
struct Group {
    round: Option<RoundId>,
    /// Covered by the round in flight.
    in_flight: Vec<JobKey>,
    /// Renamed while it runs: the next round's.
    waiting: Vec<JobKey>,
}

/// The directory fsync rounds of one core.
#[derive(Debug, Default)]
pub(crate) struct DirSyncRounds {
    groups: HashMap<PathBuf, Group>,
    rounds: HashMap<RoundId, PathBuf>,
    next_round: u64,
}

impl DirSyncRounds {
    /// Job `job`'s file was renamed into `dir`: the round to start, when
    /// `dir` has none in flight.
    pub(crate) fn join(&mut self, dir: PathBuf, job: JobKey) -> Option<RoundStart> {
        let group = self.groups.entry(dir.clone()).or_default();
        if group.round.is_some() {
            group.waiting.push(job);
            return None;
        }
        debug_assert!(group.in_flight.is_empty() && group.waiting.is_empty());
        group.in_flight.push(job);
        Some(self.start(dir))
    }

    fn start(&mut self, dir: PathBuf) -> RoundStart {
        let round = RoundId(self.next_round);
        self.next_round = self.next_round.wrapping_add(1) & tag::VALUE_MAX;
        let group = self.groups.get_mut(&dir);
        assert!(group.is_some(), "a round of a directory without jobs");
        if let Some(group) = group {
            group.round = Some(round);
        }
        let previous = self.rounds.insert(round, dir.clone());
        assert!(previous.is_none(), "round {round:?} started twice");
        RoundStart { round, dir }
    }

    /// Round `round` ended (its directory's open or fsync failed, or the
    /// fsync succeeded).
    pub(crate) fn ended(&mut self, round: RoundId, succeeded: bool) -> RoundEnd {
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
        group.round = None;
        let mut jobs = std::mem::take(&mut group.in_flight);
        if !succeeded {
            jobs.append(&mut group.waiting);
            self.groups.remove(&dir);
            return RoundEnd {
                dir,
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
        RoundEnd { dir, jobs, next }
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
        assert_eq!(next.dir, dir("a"));
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

    #[test]
    #[should_panic(expected = "ended twice")]
    fn a_round_ends_once() {
        let mut rounds = DirSyncRounds::default();
        let first = rounds.join(dir("a"), JobKey(1)).expect("a round starts");
        rounds.ended(first.round, true);
        rounds.ended(first.round, true);
    }
}
