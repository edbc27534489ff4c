//! The [`Handler`] trait: what a core calls with its events.

use super::Core;
use crate::event::Event;

/// A core's handler: an explicit state machine driven by completions.
///
/// One handler lives on each core thread (made there by the factory passed
/// to `Runtime::start`, so it need not be `Send`). The runtime calls it with
/// every event of its core; the handler reacts by submitting operations on
/// the `Core` it is given, which complete later as further events.
pub trait Handler: 'static {
    /// Messages other threads send this core through a `CoreSender`
    /// (e.g. the index writer handing back a committed batch).
    type Message: Send + 'static;

    /// The core is up (listeners armed): open directories, start connects.
    fn on_start(&mut self, core: &mut Core) {
        let _ = core;
    }

    /// An event of this core.
    fn on_event(&mut self, core: &mut Core, event: Event);

    /// A message from another thread.
    fn on_message(&mut self, core: &mut Core, message: Self::Message) {
        let _ = (core, message);
    }

    /// Shutdown began: the runtime will cancel and drain everything next and
    /// deliver no further events; submissions now fail with `ShuttingDown`.
    fn on_shutdown(&mut self, core: &mut Core) {
        let _ = core;
    }
}
