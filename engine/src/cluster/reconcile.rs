//! Reconciliation after an unclean stop: the local index compared with the
//! catalogue, and every entry the catalogue does not hold at this node and
//! this location appended to the outbox again.
//!
//! Why: the outbox append is a `write` into the page cache, not flushed
//! (docs/design/scale-out.md, "Failure"). A power loss can take its last
//! entries while LMDB, flushed before the answer, keeps them: the instances
//! were acknowledged, and without this pass the catalogue would never learn
//! of them. A clean stop flushes the outbox and leaves a marker; a start
//! without the marker (a power loss, a kill, a crash) runs this pass once,
//! in the publisher thread, before its first round.
//!
//! A row of this node naming the same file but another record place than
//! the index (a relocation whose outbox line was lost: a crash between the
//! `Relocate` commit and the append, or a power loss after it) gets a place
//! change entry.
//!
//! The other way round, this node's catalogue rows that the local index no
//! longer holds under their file get a removal entry (a change the outbox
//! lost: a replacement or removal as well as an entry).
//!
//! Cost: one walk of the local index (pages of [`PAGE`] instances, one read
//! transaction each, with a location lookup per instance) and one
//! primary-key lookup per page in the catalogue;
//! then one walk of this node's catalogue rows (a primary-key range per
//! page, filtered by node) with one local lookup per row.
//! Entries appended again are published as usual (the publisher's checks
//! and the catalogue's decision apply; a republish is harmless).

use std::collections::HashMap;

use sluice_index::{FindBudget, FindMatch, IndexError, Location, NewInstance};
use sluice_net::dimse::dataset::SmallDatasetEncoding;
use sluice_net::query::model::tags;
use sluice_net::query::{
    FindNegotiation, IdentifierBuilder, InformationModel, Level, Operation, Query, QueryContext,
};

use super::catalogue::{Catalogue, CatalogueError, Row};
use super::outbox::{Entry, Outbox};
use crate::store::Store;

/// Instances looked at (and looked up in the catalogue) per page.
const PAGE: usize = 2048;

/// Why a reconciliation stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReconcileError {
    /// The catalogue failed: the pass runs again after the next connect.
    #[error("{0}")]
    Catalogue(#[from] CatalogueError),
    /// The index could not be read.
    #[error("index: {0}")]
    Index(#[from] IndexError),
    /// The outbox could not be appended to.
    #[error("outbox: {0}")]
    Outbox(#[from] std::io::Error),
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reconciled {
    /// Local instances looked at.
    pub(super) scanned: u64,
    /// Of them, appended to the outbox again (the catalogue lacked them).
    pub(super) appended: u64,
    /// Of them, a place change appended (the catalogue names another
    /// record place for the same file).
    pub(super) relocated: u64,
    /// This node's catalogue rows looked at.
    pub(super) catalogued: u64,
    /// Of them, removals appended (the local index does not hold them).
    pub(super) removed: u64,
}

/// Every stored instance, as a relational IMAGE-level query without keys.
fn every_instance() -> Query {
    let encoding = SmallDatasetEncoding::ExplicitVrLittleEndian;
    let bytes = IdentifierBuilder::new(Level::Image)
        .key(tags::SOP_INSTANCE_UID, "")
        .encode(encoding)
        .unwrap_or_else(|error| panic!("a constant identifier encodes: {error}"));
    let context = QueryContext::new(InformationModel::StudyRoot, Operation::Find)
        .with_find_negotiation(&FindNegotiation {
            relational_queries: true,
            ..FindNegotiation::default()
        });
    Query::decode(&bytes, encoding, &context)
        .unwrap_or_else(|error| panic!("a constant identifier decodes: {error}"))
}

/// The outbox entry of an IMAGE-level match (`None` at other levels).
fn entry_of(found: &FindMatch) -> Option<Entry> {
    let instance = found.instance.as_ref()?;
    let (_, study) = found.study.as_ref()?;
    let (_, series) = found.series.as_ref()?;
    Some(Entry::of(&NewInstance {
        triplet: instance.triplet.clone(),
        record: instance.record.clone(),
        study: study.attributes.clone(),
        series: series.attributes.clone(),
    }))
}

/// One pass (see the module documentation).
pub(super) fn run(
    store: &Store,
    catalogue: &mut Catalogue,
    outbox: &Outbox,
) -> Result<Reconciled, ReconcileError> {
    let query = every_instance();
    let budget = FindBudget {
        matches_max: PAGE,
        scanned_max: PAGE,
    };
    let mut resume = None;
    let mut done = Reconciled::default();
    loop {
        let page = store
            .index()
            .read()
            .and_then(|read| read.find(&query, resume.as_ref(), budget))?;
        let local: Vec<Entry> = page.matches.iter().filter_map(entry_of).collect();
        done.scanned += local.len() as u64;
        let sops: Vec<String> = local
            .iter()
            .map(|entry| entry.sop_instance_uid.clone())
            .collect();
        let known: HashMap<String, Row> = catalogue.locations(&sops)?;
        let read = store.index().read()?;
        let mut missing = Vec::new();
        let mut moved = Vec::new();
        for entry in local {
            let Some(file_id) = entry.file_id() else {
                continue;
            };
            match known.get(&entry.sop_instance_uid) {
                Some(row) if row.node == catalogue.node() && row.location == entry.file_id => {
                    let place = match read.location(file_id)? {
                        Location::Record(place) => Some(place),
                        Location::File => None,
                    };
                    if row.record != place {
                        moved.push(Entry::relocation(&entry.sop_instance_uid, file_id));
                    }
                }
                _ => missing.push(entry),
            }
        }
        drop(read);
        if !missing.is_empty() {
            outbox.append(&missing)?;
            done.appended += missing.len() as u64;
        }
        if !moved.is_empty() {
            outbox.append(&moved)?;
            done.relocated += moved.len() as u64;
        }
        match page.resume {
            Some(next) => resume = Some(next),
            None => break,
        }
    }
    // The other way: rows naming this node that the local index does not
    // hold under their file (removed, replaced or demoted while the outbox
    // lost the change, or never published because of it) are removed.
    let mut after = String::new();
    loop {
        let rows = catalogue.own_rows_after(&after, PAGE)?;
        let Some((last, _)) = rows.last() else {
            return Ok(done);
        };
        after = last.clone();
        done.catalogued += rows.len() as u64;
        let read = store.index().read()?;
        let mut stale = Vec::new();
        for (sop, location) in &rows {
            let held = read
                .instance_by_sop(sop)?
                .is_some_and(|found| format!("{:032x}", found.record.file_id.0) == *location);
            if !held {
                stale.push(Entry::removal(sop, location));
            }
        }
        drop(read);
        if !stale.is_empty() {
            outbox.append(&stale)?;
            done.removed += stale.len() as u64;
        }
    }
}
