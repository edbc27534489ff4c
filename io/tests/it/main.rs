//! Integration tests of `sluice-io`. Every test runs on both backends
//! (`both_backends!` makes a `_uring` and a `_portable` test of each).

mod support;

mod backpressure;
mod echo;
mod faults;
mod files;
mod probe;
mod shutdown;
