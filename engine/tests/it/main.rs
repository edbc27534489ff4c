//! The integration tests of `sluice-engine`, in one binary so the crate's
//! test build links once.

mod commitment;
mod config;
mod crash;
mod disk_full;
mod embed;
mod ingest;
mod large;
mod operator;
mod query;
mod recovery;
mod serve;
