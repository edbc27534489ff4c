//! Integration tests of sluice-index (one binary: see Cargo.toml).

mod basic;
mod capacity;
mod common;
mod crash;
mod disk_full;
mod find;
mod locations;
mod model;
mod race;
mod split_stores;
mod two_processes;
mod upgrade;
mod zero_ahead;
