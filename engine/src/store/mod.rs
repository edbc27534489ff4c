//! The store: the on-disk layout of a data directory ([`layout`]), the Part 10
//! file header ([`part10`]), and the embedding handle ([`Store`]) that opens a
//! data directory with its index and answers lookups. Below every service:
//! walking what the index references and what a directory holds (`walk`),
//! and checking a file against its index record (`check`).

pub(crate) mod check;
mod handle;
mod instance;
pub mod layout;
pub mod part10;
pub(crate) mod walk;

pub(crate) use instance::instance_from_head;

pub use handle::{
    Store, StoreError, StoreEvent, Subscription, SUBSCRIBERS_MAX, SUBSCRIPTION_CAPACITY_MAX,
};
