//! The store: the on-disk layout of a data directory ([`layout`]), the Part 10
//! file header ([`part10`]), and the embedding handle ([`Store`]) that opens a
//! data directory with its index and answers lookups. Below every service:
//! walking what the index references and what a directory holds (`walk`),
//! checking a file against its index record (`check`), and the set of files
//! committed in doubt that are not yet durable (`in_doubt`), shared by the
//! ingest path and the commitment tracker; and the read API by instance
//! (`source`: where a data set's bytes are, for every reader) and the
//! query functions the Q/R SCP and embedders share (`query`). The hash of
//! the stored bytes, XXH3, is `xxh3`'s.

pub(crate) mod check;
mod handle;
pub(crate) mod in_doubt;
mod instance;
pub mod layout;
pub mod part10;
mod query;
pub mod segment;
mod source;
pub(crate) mod walk;
pub(crate) mod xxh3;

pub(crate) use instance::instance_from_head;

pub(crate) use handle::Counted;
pub use handle::{
    IngestCounts, Store, StoreError, StoreEvent, Subscription, SUBSCRIBERS_MAX,
    SUBSCRIPTION_CAPACITY_MAX,
};
pub use query::{FindAnswers, QueryError};
pub(crate) use source::{is_gone, open_relocating, readable, record_file, Fetch, RELOCATIONS_MAX};
pub use source::{DatasetLocation, StoredDataset};
