//! sluice-net integration tests: one binary (see `autotests = false` in Cargo.toml).
//!
//! Each module tests one area through the public API only.

mod endpoint;
mod query;
mod upper_layer;
mod wire_split;
