//! End-to-end tests against real peers on loopback. One binary for all of
//! them (`autotests = false`) so the suite links once.

mod protocol;
