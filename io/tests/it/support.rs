//! Test plumbing: running a test on both backends, a scripted one-core
//! handler, descriptor counting, and the lock that keeps descriptor-counting
//! tests alone in the process.

use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use crossbeam_channel::Sender;
use sluice_io::{BackendChoice, BackendKind, Core, Event, Handler, Runtime, RuntimeConfig};

/// How long any test waits for an outcome before failing.
pub const OUTCOME_WAIT: Duration = Duration::from_secs(30);
/// How long joining a runtime may take.
pub const JOIN_WAIT: Duration = Duration::from_secs(10);

/// Generates a module `<name>` with tests `uring` and `portable`, each
/// calling `<name>(BackendChoice)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[test]
            fn uring() {
                super::$name(sluice_io::BackendChoice::Uring);
            }
            #[test]
            fn portable() {
                super::$name(sluice_io::BackendChoice::Portable);
            }
        }
    };
}

static PROCESS_LOCK: RwLock<()> = RwLock::new(());

/// Held by ordinary tests (shared).
pub fn shared_lock() -> RwLockReadGuard<'static, ()> {
    PROCESS_LOCK
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Held by tests that count the process's descriptors (exclusive).
pub fn exclusive_lock() -> RwLockWriteGuard<'static, ()> {
    PROCESS_LOCK
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Open descriptors of this process.
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// Raises the soft descriptor limit to the hard one (1,000 connections on
/// both ends need ~2,100 descriptors).
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0
        && limit.rlim_cur < limit.rlim_max
    {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads one `rlimit` from the live local.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
}

pub fn expected_kind(backend: BackendChoice) -> BackendKind {
    match backend {
        BackendChoice::Portable => BackendKind::Portable,
        _ => BackendKind::Uring,
    }
}

/// A small configuration for tests: `cores` cores, modest pools.
pub fn config(backend: BackendChoice, cores: usize) -> RuntimeConfig {
    RuntimeConfig {
        core_count: cores,
        backend,
        pin_threads: false,
        connections_max_per_core: 4096,
        ops_in_flight_max: 1024,
        recv_buffer_size_bytes: 16 * 1024,
        recv_buffer_count: 1024,
        ring_entries: 256,
        portable_file_threads: 2,
        shutdown_drain_max: Duration::from_secs(5),
        ..RuntimeConfig::default()
    }
}

/// What a script decides after each step.
pub enum Step<R> {
    /// Keep going.
    Continue,
    /// Done, with this outcome.
    Done(R),
}

type Script<R> = Box<dyn FnMut(&mut Core, Option<Event>) -> Step<R>>;
type ScriptMaker<R> = Box<dyn FnOnce() -> Script<R> + Send>;

/// A one-core handler running a script: called with `None` at start, then
/// with every event, until it returns `Done`.
pub struct Scripted<R> {
    script: Script<R>,
    outcome: Sender<R>,
    finished: bool,
}

impl<R: Send + 'static> Handler for Scripted<R> {
    type Message = ();

    fn on_start(&mut self, core: &mut Core) {
        self.step(core, None);
    }

    fn on_event(&mut self, core: &mut Core, event: Event) {
        self.step(core, Some(event));
    }
}

impl<R: Send + 'static> Scripted<R> {
    fn step(&mut self, core: &mut Core, event: Option<Event>) {
        if self.finished {
            return;
        }
        if let Step::Done(outcome) = (self.script)(core, event) {
            self.finished = true;
            let _ = self.outcome.send(outcome);
        }
    }
}

/// Starts a one-core runtime running `script`; the outcome arrives on the
/// returned channel.
pub fn start_script<R: Send + 'static>(
    config: RuntimeConfig,
    script: impl FnMut(&mut Core, Option<Event>) -> Step<R> + Send + 'static,
) -> (Runtime<()>, crossbeam_channel::Receiver<R>) {
    start_script_with(config, move || script)
}

/// Like [`start_script`], with the script made on the core thread (so it
/// may hold what is not `Send`, such as receive buffers).
pub fn start_script_with<R: Send + 'static, S>(
    config: RuntimeConfig,
    make_script: impl FnOnce() -> S + Send + 'static,
) -> (Runtime<()>, crossbeam_channel::Receiver<R>)
where
    S: FnMut(&mut Core, Option<Event>) -> Step<R> + 'static,
{
    let expected = expected_kind(config.backend);
    let (outcome_sender, outcome_receiver) = crossbeam_channel::bounded(1);
    let maker: ScriptMaker<R> = Box::new(move || Box::new(make_script()) as Script<R>);
    let maker = Mutex::new(Some(maker));
    let runtime = Runtime::start(
        RuntimeConfig {
            core_count: 1,
            ..config
        },
        move |_| Scripted {
            script: (maker.lock().unwrap().take().expect("one core, one script"))(),
            outcome: outcome_sender.clone(),
            finished: false,
        },
    )
    .expect("runtime starts");
    assert_eq!(runtime.backend(), expected);
    (runtime, outcome_receiver)
}

/// Runs `script` on a one-core runtime and returns its outcome.
pub fn run_script<R: Send + 'static>(
    config: RuntimeConfig,
    script: impl FnMut(&mut Core, Option<Event>) -> Step<R> + Send + 'static,
) -> R {
    let (runtime, outcome) = start_script(config, script);
    let outcome = outcome
        .recv_timeout(OUTCOME_WAIT)
        .expect("script finishes in time");
    runtime.shutdown_and_join(JOIN_WAIT).expect("runtime joins");
    outcome
}
