//! The event loop of a core thread: deliver events, take messages from
//! other threads, wait for completions and process them; at shutdown, cancel
//! everything and wait for every final completion before freeing anything.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::conns::ConnState;
use super::handler::Handler;
use super::shared::Internal;
use super::Core;
use crate::backend::op::{Prim, CANCEL_USER_DATA};
use crate::event::Event;

/// How often shutdown repeats its cancel-everything request while draining.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Runs a core until shutdown: the event loop.
pub(crate) fn run_core<H: Handler>(mut core: Core, mut handler: H, mailbox: &Receiver<H::Message>) {
    core.arm_listeners();
    handler.on_start(&mut core);
    loop {
        core.deliver(&mut handler);
        if core.shared.is_shutdown_requested() {
            break;
        }
        // Clear the wake flag before looking at the queues: a message sent
        // after this point signals the eventfd again (see `WakeSignal`).
        if let Some(shared) = core.own_shared() {
            shared.wake.clear();
        }
        core.drain_internal();
        let mut messages_left = core.limits.mailbox_batch_max;
        while messages_left > 0 {
            let Ok(message) = mailbox.try_recv() else {
                break;
            };
            messages_left -= 1;
            handler.on_message(&mut core, message);
            core.deliver(&mut handler);
        }
        core.rearm_starved();
        let block = core.events.is_empty() && mailbox.is_empty() && core.internal.is_empty();
        if let Err(error) = core.poll_and_process(block, None, Some(&mut handler)) {
            tracing::error!(core = core.index, %error, "core event loop failed; shutting the runtime down");
            core.shared.request_shutdown();
        }
    }
    handler.on_shutdown(&mut core);
    core.drain_for_shutdown();
    // The handler may hold receive buffers; drop it before the core.
    drop(handler);
    drop(core);
}

/// Stands in for "no handler" while draining at shutdown.
struct NoHandler;

impl Handler for NoHandler {
    type Message = ();
    fn on_event(&mut self, _core: &mut Core, _event: Event) {}
}

impl Core {
    /// Waits for completions (if `block`) and processes them. With a
    /// handler, each completion's events are delivered before the next
    /// completion is processed, so a received buffer goes back to the pool
    /// as soon as the handler drops it (a batch of thousands of completions
    /// must not hold thousands of buffers at once).
    fn poll_and_process<H: Handler>(
        &mut self,
        block: bool,
        timeout: Option<Duration>,
        mut handler: Option<&mut H>,
    ) -> std::io::Result<()> {
        let mut completions = std::mem::take(&mut self.completions);
        let block = block && self.local.is_empty();
        let result = self.backend.wait(&mut completions, block, timeout);
        completions.extend(self.local.drain(..));
        for completion in completions.drain(..) {
            self.complete(completion);
            if let Some(handler) = handler.as_deref_mut() {
                self.deliver(handler);
            }
        }
        self.completions = completions;
        result.map(drop)
    }

    fn deliver<H: Handler>(&mut self, handler: &mut H) {
        while let Some(event) = self.events.pop_front() {
            if let Some(event) = self.still_deliverable(event) {
                handler.on_event(self, event);
            }
        }
        self.rearm_after_delivery();
    }

    /// Events were queued in order, but the handler may have paused or
    /// closed a connection while earlier ones were being delivered: a
    /// paused connection's data goes back to its backlog (in order, ahead of
    /// anything newer) and a closing connection's events are dropped, so the
    /// guarantees of `pause_recv` and `close_connection` hold.
    fn still_deliverable(&mut self, event: Event) -> Option<Event> {
        let conn = match &event {
            Event::Received { conn, .. }
            | Event::ReceivedInto { conn, .. }
            | Event::RecvEnded { conn, .. }
            | Event::Sent { conn, .. }
            | Event::Accepted { conn, .. } => *conn,
            Event::Connected {
                conn,
                result: Ok(()),
                ..
            } => *conn,
            _ => return Some(event),
        };
        let slot = self.conns.get_mut(conn.0)?;
        if slot.state == ConnState::Closing {
            return None;
        }
        let held = slot.holds_events();
        match event {
            Event::Received { data, .. } if held => {
                slot.backlog.push_back(data);
                None
            }
            Event::RecvEnded { result, .. } if held => {
                slot.pending_end = Some(result);
                None
            }
            event => Some(event),
        }
    }

    /// Cancels everything and waits for every operation's final completion
    /// (at most `drain_max`), then closes every descriptor.
    fn drain_for_shutdown(&mut self) {
        self.shutting_down = true;
        self.events.clear();
        self.backend.set_draining();
        self.conns.close_all();
        let deadline = Instant::now() + self.limits.drain_max;
        let mut cancelled_at: Option<Instant> = None;
        while self.ops.len() > 0 || self.backend.wake_in_flight() || !self.local.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if cancelled_at.is_none_or(|at| now.duration_since(at) >= DRAIN_POLL_INTERVAL) {
                self.backend.issue(CANCEL_USER_DATA, Prim::CancelAll);
                cancelled_at = Some(now);
            }
            if let Err(error) =
                self.poll_and_process::<NoHandler>(true, Some(DRAIN_POLL_INTERVAL), None)
            {
                tracing::error!(core = self.index, %error, "waiting for completions failed during shutdown");
                break;
            }
        }
        let drained = self.ops.len() == 0;
        if !drained {
            tracing::error!(
                core = self.index,
                operations = self.ops.len(),
                waited = ?self.limits.drain_max,
                "operations did not drain at shutdown; leaking the memory they reference"
            );
            std::mem::forget(Rc::clone(&self.pool));
            self.ops.leak();
        }
        while let Ok(Internal::Adopt { .. }) = self.internal.try_recv() {}
        for slot in self.conns.take_all() {
            debug_assert!(
                !drained || slot.ops() == 0,
                "a connection kept operations after every operation drained"
            );
            self.backend
                .forget_socket(std::os::fd::AsRawFd::as_raw_fd(&slot.fd));
            drop(slot);
            if let Some(shared) = self.own_shared() {
                shared.uncount_connection();
            }
        }
        self.files.close_all();
        self.listeners.clear();
    }
}
