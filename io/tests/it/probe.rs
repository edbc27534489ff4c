//! Backend selection: forced portable, forced io_uring, and a simulated
//! probe failure (as seccomp's EPERM would cause) that falls back cleanly.

use sluice_io::{BackendChoice, BackendKind, FaultPlan, Runtime, RuntimeConfig, StartError};

use crate::both_backends;
use crate::support::{config, run_script, shared_lock, Step, JOIN_WAIT};

/// The chosen backend runs and says so (portable when forced; io_uring on
/// this kernel otherwise).
fn forced_backend_runs(backend: BackendChoice) {
    let _lock = shared_lock();
    let runtime = Runtime::start(config(backend, 1), |_| NoOp).unwrap();
    let expected = if backend == BackendChoice::Portable {
        BackendKind::Portable
    } else {
        BackendKind::Uring
    };
    assert_eq!(runtime.backend(), expected);
    assert!(
        runtime.backend_reason().contains("forced by configuration"),
        "{}",
        runtime.backend_reason()
    );
    runtime.shutdown_and_join(JOIN_WAIT).unwrap();
    // The core reports the same backend to its handler.
    let seen = run_script(config(backend, 1), |core, _| Step::Done(core.backend()));
    assert_eq!(seen, expected);
}
both_backends!(forced_backend_runs);

/// A probe failure under `auto` falls back to the portable backend; under
/// a forced `uring` it is a clear start error. (`backend` only varies what
/// was asked for; the fallback itself is the portable backend.)
fn simulated_probe_failure(backend: BackendChoice) {
    let _lock = shared_lock();
    let plan = FaultPlan::new().simulate_probe_failure(libc::EPERM);
    let asked = if backend == BackendChoice::Uring {
        BackendChoice::Uring
    } else {
        BackendChoice::Auto
    };
    let config = RuntimeConfig {
        backend: asked,
        fault_plan: Some(plan),
        ..config(backend, 1)
    };
    match Runtime::start(config, |_| NoOp) {
        Ok(runtime) => {
            assert_eq!(asked, BackendChoice::Auto);
            assert_eq!(runtime.backend(), BackendKind::Portable);
            assert!(
                runtime.backend_reason().contains("simulated"),
                "{}",
                runtime.backend_reason()
            );
            assert!(
                runtime.backend_reason().contains("seccomp"),
                "{}",
                runtime.backend_reason()
            );
            runtime.shutdown_and_join(JOIN_WAIT).unwrap();
        }
        Err(error) => {
            assert_eq!(asked, BackendChoice::Uring);
            assert!(
                matches!(error, StartError::UringUnavailable { .. }),
                "{error}"
            );
            assert!(
                error.to_string().contains("Operation not permitted"),
                "{error}"
            );
        }
    }
}
both_backends!(simulated_probe_failure);

#[test]
fn auto_picks_io_uring_on_this_kernel() {
    let _lock = shared_lock();
    let runtime = Runtime::start(config(BackendChoice::Auto, 1), |_| NoOp).unwrap();
    assert_eq!(
        runtime.backend(),
        BackendKind::Uring,
        "{}",
        runtime.backend_reason()
    );
    runtime.shutdown_and_join(JOIN_WAIT).unwrap();
}

struct NoOp;

impl sluice_io::Handler for NoOp {
    type Message = ();
    fn on_event(&mut self, _core: &mut sluice_io::Core, _event: sluice_io::Event) {}
}
