//! The index writer's answers on their way back to one core.
//!
//! The writer thread answers every batch through a callback; the answer
//! must reach the core that submitted it without the writer ever waiting
//! for that core. It used to be sent into the core's bounded mailbox,
//! waiting up to 600 s for room: a core whose mailbox was full (a flood of
//! commitment messages, or its own answers while it was blocked submitting
//! to the writer's full queue) stopped the writer, so every core, for up
//! to ten minutes.
//!
//! Now the callback pushes the answer onto this core's own queue, which
//! never refuses, and wakes the core with one message in its mailbox (at
//! most one outstanding; if the mailbox is full, the core has messages to
//! take anyway, and it drains this queue before each). The queue cannot
//! grow without bound: every answer corresponds to a batch the core
//! submitted and has not had answered, and the core submits a store or undo
//! batch only for jobs it admitted (`storage.instances_in_flight_max_per_core`)
//! and at most one maintenance batch per round of its clear timer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use super::batcher::IndexAnswer;

/// One core's queue of index answers (see the module documentation).
pub(crate) struct ReplyQueue {
    answers: Mutex<VecDeque<IndexAnswer>>,
    /// A wake-up is in the mailbox (or could not be queued because it is
    /// full): no other is sent until the core drains the queue.
    wake_pending: AtomicBool,
    /// Puts one wake-up message into the core's mailbox without waiting.
    wake: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for ReplyQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyQueue")
            .field("wake_pending", &self.wake_pending.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ReplyQueue {
    /// A queue whose core is woken by `wake` (which must not wait: a full
    /// mailbox is fine, the core drains this queue before every message).
    pub(crate) fn new(wake: impl Fn() + Send + Sync + 'static) -> ReplyQueue {
        ReplyQueue {
            answers: Mutex::new(VecDeque::new()),
            wake_pending: AtomicBool::new(false),
            wake: Box::new(wake),
        }
    }

    /// From the writer thread: queues `answer` and wakes the core, never
    /// waiting for it.
    pub(crate) fn post(&self, answer: IndexAnswer) {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(answer);
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            (self.wake)();
        }
    }

    /// On the core: every answer queued so far, in order. The wake-up flag
    /// is cleared first, so an answer posted meanwhile wakes the core again.
    pub(crate) fn take(&self) -> VecDeque<IndexAnswer> {
        self.wake_pending.store(false, Ordering::Release);
        std::mem::take(&mut *self.answers.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    use super::*;
    use crate::scp::ingest::batcher::BatchKind;
    use crate::scp::ingest::job::JobKey;

    fn answer(job: u64) -> IndexAnswer {
        IndexAnswer {
            jobs: vec![JobKey(job)],
            kind: BatchKind::Store,
            owed: Vec::new(),
            clears: false,
            result: Ok(Vec::new()),
            answered_at: std::time::Instant::now(),
        }
    }

    /// The writer never waits, however many answers the core has not
    /// taken; one wake-up per drain; nothing lost, nothing reordered.
    #[test]
    fn posting_never_waits_and_wakes_once_per_drain() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&wakes);
        let queue = ReplyQueue::new(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        for job in 0..10_000 {
            queue.post(answer(job));
        }
        assert_eq!(wakes.load(Ordering::Relaxed), 1, "one wake-up outstanding");
        let taken: Vec<u64> = queue.take().into_iter().map(|a| a.jobs[0].0).collect();
        assert_eq!(taken, (0..10_000).collect::<Vec<_>>());
        assert!(queue.take().is_empty());
        queue.post(answer(1));
        assert_eq!(
            wakes.load(Ordering::Relaxed),
            2,
            "woken again after a drain"
        );
    }

    /// Posted from another thread while the core drains: every answer is
    /// taken by a drain that follows its wake-up.
    #[test]
    fn answers_posted_while_draining_wake_the_core_again() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&wakes);
        let queue = Arc::new(ReplyQueue::new(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        }));
        let writer = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || {
                for job in 0..20_000 {
                    queue.post(answer(job));
                }
            })
        };
        let mut taken = 0;
        let mut drains = 0;
        while taken < 20_000 {
            // A core drains when woken: never more drains than wake-ups.
            if drains < wakes.load(Ordering::Acquire) {
                drains += 1;
                taken += queue.take().len();
            }
            std::hint::spin_loop();
        }
        writer.join().unwrap();
        assert_eq!(taken, 20_000);
        assert!(queue.take().is_empty());
    }
}
