//! The fault seam: in test builds (feature `fault-injection`) a plan makes
//! chosen operations fail with an `errno` or complete short, on either
//! backend. strace and LD_PRELOAD cannot reach io_uring operations, so the
//! seam sits where the runtime issues an operation.
//!
//! Operations are counted per core and per [`crate::OpKind`], from 1, in the order
//! the core issues them (a write resubmitted after a short completion counts
//! again). Decisions depend only on the plan, the core index, the kind and
//! the count, so a seed that made a test fail replays exactly as long as the
//! handler issues the same operations in the same order.
//!
//! - [`Fault::Errno`]: the operation does not reach the kernel; its
//!   completion carries the errno. For a write with a linked sync, the sync
//!   completes `ECANCELED`, as a broken io_uring chain does.
//! - [`Fault::Short`]: a write or send transfers about half its bytes (at
//!   least one); the runtime must then complete the rest. A write's linked
//!   sync is cancelled, as the kernel does after a short write. On other
//!   kinds `Short` does nothing.
//!
//! Without the feature the seam compiles to nothing.

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Fail with this (positive) errno, e.g. `libc::EIO`.
    Errno(i32),
    /// Complete a write or send short.
    Short,
}

#[cfg(feature = "fault-injection")]
pub use enabled::{FaultPlan, InjectedFault};

#[cfg(feature = "fault-injection")]
pub(crate) use enabled::FaultInjector;

#[cfg(not(feature = "fault-injection"))]
pub(crate) use disabled::FaultInjector;

#[cfg(feature = "fault-injection")]
mod enabled {
    use std::sync::{Arc, Mutex};

    use super::Fault;
    use crate::error::OpKind;

    /// One explicit rule: the `nth` operation of `kind` (on `core`, or on
    /// every core) gets `fault`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Rule {
        core: Option<usize>,
        kind: OpKind,
        nth: u64,
        fault: Fault,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Seeded {
        seed: u64,
        kinds: Vec<OpKind>,
        one_in: u64,
        faults: Vec<Fault>,
    }

    /// A fault that was injected: where, which operation, what.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct InjectedFault {
        /// Core index.
        pub core: usize,
        /// Operation kind.
        pub kind: OpKind,
        /// Its count on that core (from 1).
        pub nth: u64,
        /// The fault.
        pub fault: Fault,
    }

    /// A reproducible fault plan. Clones share the log of injected faults.
    #[derive(Debug, Clone, Default)]
    pub struct FaultPlan {
        rules: Vec<Rule>,
        seeded: Option<Seeded>,
        probe_failure_errno: Option<i32>,
        log: Arc<Mutex<Vec<InjectedFault>>>,
        /// Operations seen per kind, all cores together (tests read how
        /// many syncs or opens a workload cost).
        seen: Arc<[std::sync::atomic::AtomicU64; OpKind::ALL.len()]>,
    }

    /// The most faults the log keeps (a bound like everything else).
    const LOG_ENTRIES_MAX: usize = 100_000;

    impl FaultPlan {
        /// An empty plan: no faults.
        pub fn new() -> FaultPlan {
            FaultPlan::default()
        }

        /// The `nth` (from 1) operation of `kind` on every core gets `fault`.
        pub fn fail_nth(mut self, kind: OpKind, nth: u64, fault: Fault) -> FaultPlan {
            self.rules.push(Rule {
                core: None,
                kind,
                nth,
                fault,
            });
            self
        }

        /// The `nth` operation of `kind` on `core` gets `fault`.
        pub fn fail_nth_on_core(
            mut self,
            core: usize,
            kind: OpKind,
            nth: u64,
            fault: Fault,
        ) -> FaultPlan {
            self.rules.push(Rule {
                core: Some(core),
                kind,
                nth,
                fault,
            });
            self
        }

        /// From `seed`: each operation of one of `kinds` gets, with chance
        /// 1 in `one_in`, one of `faults` (chosen by the seed too).
        pub fn seeded(
            mut self,
            seed: u64,
            kinds: &[OpKind],
            one_in: u64,
            faults: &[Fault],
        ) -> FaultPlan {
            self.seeded = Some(Seeded {
                seed,
                kinds: kinds.to_vec(),
                one_in: one_in.max(1),
                faults: faults.to_vec(),
            });
            self
        }

        /// Makes the start-up io_uring probe fail with `errno` (as seccomp's
        /// EPERM or a kernel without io_uring's ENOSYS would).
        pub fn simulate_probe_failure(mut self, errno: i32) -> FaultPlan {
            self.probe_failure_errno = Some(errno);
            self
        }

        pub(crate) fn probe_failure_errno(&self) -> Option<i32> {
            self.probe_failure_errno
        }

        /// Operations of `kind` submitted so far on every core running this
        /// plan, faulted or not.
        pub fn operations_seen(&self, kind: OpKind) -> u64 {
            self.seen
                .get(kind.index())
                .map_or(0, |count| count.load(std::sync::atomic::Ordering::Relaxed))
        }

        /// Faults injected so far, in the order each core injected them.
        pub fn injected(&self) -> Vec<InjectedFault> {
            self.log.lock().map(|log| log.clone()).unwrap_or_default()
        }

        fn decide(&self, core: usize, kind: OpKind, nth: u64) -> Option<Fault> {
            let explicit = self
                .rules
                .iter()
                .find(|rule| {
                    rule.kind == kind && rule.nth == nth && rule.core.is_none_or(|c| c == core)
                })
                .map(|rule| rule.fault);
            explicit.or_else(|| {
                let seeded = self.seeded.as_ref()?;
                if !seeded.kinds.contains(&kind) || seeded.faults.is_empty() {
                    return None;
                }
                let draw = splitmix64(
                    seeded.seed
                        ^ (core as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        ^ (kind.index() as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9)
                        ^ nth.wrapping_mul(0x94d0_49bb_1331_11eb),
                );
                if draw % seeded.one_in != 0 {
                    return None;
                }
                let choice = usize::try_from((draw >> 32) % seeded.faults.len() as u64).ok()?;
                seeded.faults.get(choice).copied()
            })
        }

        fn record(&self, injected: InjectedFault) {
            if let Ok(mut log) = self.log.lock() {
                if log.len() < LOG_ENTRIES_MAX {
                    log.push(injected);
                }
            }
        }
    }

    fn splitmix64(mut state: u64) -> u64 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A core's view of the plan, with its own counters.
    #[derive(Debug)]
    pub(crate) struct FaultInjector {
        core: usize,
        plan: Option<FaultPlan>,
        counters: [u64; OpKind::ALL.len()],
    }

    impl FaultInjector {
        pub fn new(core: usize, plan: Option<FaultPlan>) -> FaultInjector {
            FaultInjector {
                core,
                plan,
                counters: [0; OpKind::ALL.len()],
            }
        }

        /// Counts one operation of `kind` and says whether it gets a fault.
        pub fn decide(&mut self, kind: OpKind) -> Option<Fault> {
            let plan = self.plan.as_ref()?;
            let counter = self.counters.get_mut(kind.index())?;
            *counter += 1;
            let nth = *counter;
            if let Some(seen) = plan.seen.get(kind.index()) {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let fault = plan.decide(self.core, kind, nth)?;
            let applies = match fault {
                Fault::Errno(_) => true,
                Fault::Short => matches!(kind, OpKind::Write | OpKind::Send),
            };
            if !applies {
                return None;
            }
            plan.record(InjectedFault {
                core: self.core,
                kind,
                nth,
                fault,
            });
            Some(fault)
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
mod disabled {
    use super::Fault;
    use crate::error::OpKind;

    /// Release builds: no plan, no counting.
    #[derive(Debug)]
    pub(crate) struct FaultInjector;

    impl FaultInjector {
        #[inline(always)]
        pub fn decide(&mut self, _kind: OpKind) -> Option<Fault> {
            None
        }
    }
}

/// Clamps a short transfer: about half of `total`, at least 1, less than
/// `total` (a one-byte operation cannot be short and is left whole).
pub(crate) fn short_length(total: usize) -> usize {
    if total <= 1 {
        total
    } else {
        (total / 2).max(1)
    }
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use super::*;
    use crate::error::OpKind;

    #[test]
    fn explicit_rule_hits_exactly_the_nth() {
        let plan = FaultPlan::new().fail_nth(OpKind::Sync, 3, Fault::Errno(libc::EIO));
        let mut injector = FaultInjector::new(0, Some(plan.clone()));
        let decisions: Vec<_> = (0..5).map(|_| injector.decide(OpKind::Sync)).collect();
        assert_eq!(
            decisions,
            vec![None, None, Some(Fault::Errno(libc::EIO)), None, None]
        );
        assert_eq!(injector.decide(OpKind::Write), None);
        assert_eq!(plan.injected().len(), 1);
    }

    #[test]
    fn seeded_plan_replays_exactly() {
        let run = |seed| {
            let plan = FaultPlan::new().seeded(
                seed,
                &[OpKind::Write, OpKind::Sync],
                4,
                &[Fault::Errno(libc::ENOSPC), Fault::Short],
            );
            let mut injector = FaultInjector::new(1, Some(plan));
            (0..200)
                .map(|i| {
                    injector.decide(if i % 3 == 0 {
                        OpKind::Sync
                    } else {
                        OpKind::Write
                    })
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        assert!(run(42).iter().any(Option::is_some));
    }

    #[test]
    fn short_is_ignored_where_it_means_nothing() {
        let plan = FaultPlan::new().fail_nth(OpKind::Sync, 1, Fault::Short);
        let mut injector = FaultInjector::new(0, Some(plan));
        assert_eq!(injector.decide(OpKind::Sync), None);
    }

    #[test]
    fn short_length_is_shorter_but_not_empty() {
        assert_eq!(short_length(1), 1);
        assert_eq!(short_length(2), 1);
        assert_eq!(short_length(100), 50);
    }
}
