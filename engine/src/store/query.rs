//! Query/Retrieve over a store, for every caller: the C-FIND SCP's answers
//! and a retrieve's instances come from here, and the embedding API gets
//! the same two functions ([`Store::find`], [`Store::datasets_matching`]).
//!
//! A query is net's decoded identifier (`sluice_net::query::Query`: build
//! one with `IdentifierBuilder` and `Query::read`, or decode a received
//! identifier); matching is net's, the candidates the index's
//! (`sluice_index::ReadTxn::find`), the answers net's `build_response`.

use sluice_index::{FindBudget, FindResume, IndexError};
use sluice_net::query::{build_response, Level, Query, Response, ResponseContext};
use thiserror::Error;

use super::handle::Store;
use super::source::{Fetch, StoredDataset};

/// Entities looked at per index page.
const PAGE_SCANNED: usize = 65_536;

/// Why a query or retrieve cannot be answered.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The index failed.
    #[error("index: {0}")]
    Index(#[from] IndexError),
    /// An instance's place could not be resolved (its location in the
    /// index does not fit its entry).
    #[error("{0}")]
    Location(#[from] super::handle::StoreError),
    /// More instances than the caller's limit.
    #[error("more than {limit} instances")]
    TooManyInstances {
        /// The limit.
        limit: usize,
    },
}

/// The answers of [`Store::find`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindAnswers {
    /// One response identifier per matching entity, in the index's order
    /// (what a C-FIND SCP sends with FF00, or FF01 when
    /// [`Response::unsupported`] is not empty).
    pub answers: Vec<Response>,
    /// More entities matched than the limit.
    pub truncated: bool,
}

impl Store {
    /// The entities matching `query` at its level, as the C-FIND SCP
    /// answers them (keys from the index, Retrieve AE Title this store's
    /// AE, availability ONLINE), at most `limit` of them.
    pub fn find(&self, query: &Query, limit: usize) -> Result<FindAnswers, QueryError> {
        let read = self.index().read()?;
        let context = ResponseContext {
            retrieve_ae_title: Some(self.config().network.ae_title.as_str()),
            instance_availability: Some("ONLINE"),
        };
        let mut answers = Vec::new();
        let mut resume: Option<FindResume> = None;
        loop {
            let budget = FindBudget {
                matches_max: (limit + 1 - answers.len()).max(1),
                scanned_max: PAGE_SCANNED,
            };
            let page = read.find(query, resume.as_ref(), budget)?;
            for found in &page.matches {
                if answers.len() == limit {
                    return Ok(FindAnswers {
                        answers,
                        truncated: true,
                    });
                }
                answers.push(build_response(query, found, &context));
            }
            match page.resume {
                Some(next) => resume = Some(next),
                None => {
                    return Ok(FindAnswers {
                        answers,
                        truncated: false,
                    })
                }
            }
        }
    }

    /// Every instance under the entities `query` matches at its level (what
    /// a C-MOVE or C-GET of that identifier sends), with where its data set
    /// is; fails past `limit` instances.
    pub fn datasets_matching(
        &self,
        query: &Query,
        limit: usize,
    ) -> Result<Vec<StoredDataset>, QueryError> {
        self.datasets_fetched(query, limit, Fetch::Now)
    }

    /// [`Store::datasets_matching`] for an io core: records of evicted
    /// segments are not fetched, their locations name the record to fetch
    /// (the C-MOVE and C-GET sender has the fetcher threads do it).
    pub(crate) fn datasets_to_send(
        &self,
        query: &Query,
        limit: usize,
    ) -> Result<Vec<StoredDataset>, QueryError> {
        self.datasets_fetched(query, limit, Fetch::Later)
    }

    fn datasets_fetched(
        &self,
        query: &Query,
        limit: usize,
        fetch: Fetch,
    ) -> Result<Vec<StoredDataset>, QueryError> {
        let read = self.index().read()?;
        let mut datasets = Vec::new();
        let mut push = |entry: &sluice_index::InstanceEntry| -> Result<(), QueryError> {
            if datasets.len() >= limit {
                return Err(QueryError::TooManyInstances { limit });
            }
            datasets.push(self.dataset_fetched(&read, entry, fetch)?);
            Ok(())
        };
        let mut resume: Option<FindResume> = None;
        loop {
            let page = read.find(
                query,
                resume.as_ref(),
                FindBudget {
                    matches_max: 4096,
                    scanned_max: PAGE_SCANNED,
                },
            )?;
            for found in &page.matches {
                let studies = match found.level {
                    Level::Image => {
                        if let Some(entry) = &found.instance {
                            push(entry)?;
                        }
                        continue;
                    }
                    Level::Series | Level::Study => found
                        .study_instance_uid()
                        .map(|study| vec![(study.to_owned(), found.series_instance_uid())])
                        .unwrap_or_default(),
                    Level::Patient => {
                        let Some(patient) = &found.patient else {
                            continue;
                        };
                        read.query_studies(
                            &sluice_index::StudyQuery {
                                patient_id: Some(patient.patient_id.clone()),
                                ..Default::default()
                            },
                            limit.saturating_add(1),
                        )
                        .map_err(QueryError::Index)?
                        .items
                        .into_iter()
                        .map(|study| (study.study_instance_uid, None))
                        .collect()
                    }
                };
                for (study, series) in studies {
                    let listing =
                        read.instances_of_study(&study, series, limit.saturating_add(1))?;
                    for entry in &listing.items {
                        push(entry)?;
                    }
                }
            }
            match page.resume {
                Some(next) => resume = Some(next),
                None => return Ok(datasets),
            }
        }
    }
}
