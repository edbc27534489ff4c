//! Integration tests of `sluice-io`. Every runtime test runs on both
//! backends (`both_backends!` makes a `_uring` and a `_portable` test of
//! each); `safety_doc` keeps docs/safety.md in step with the code.

mod support;

mod backpressure;
mod echo;
mod faults;
mod files;
mod fixed;
mod probe;
mod recv_into;
mod safety_doc;
mod shutdown;
mod splice;
