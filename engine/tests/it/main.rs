//! The integration tests of `sluice-engine`, in one binary so the crate's
//! test build links once.

mod access;
mod answers;
mod audit;
mod cluster;
mod commitment;
mod commitment_memory;
mod compaction;
mod compaction_online;
mod config;
mod crash;
mod disk_full;
mod embed;
mod ingest;
mod injection;
mod large;
mod lock;
mod media;
mod migrate;
mod monitoring;
mod objects;
mod operator;
mod process;
mod protocol;
mod qr_corpus;
mod qrscu;
mod query;
mod query_names;
mod real_files;
mod recovery;
mod segment_ingest;
mod segment_operator;
mod segment_reads;
mod segment_recovery;
mod serve;
mod tls;
