//! One C-FIND: the index read in pages (`sluice_index::ReadTxn::find`),
//! each match answered with a pending C-FIND-RSP (FF00, or FF01 when a
//! requested key is not supported) as it is found, and the final status.
//!
//! A step answers one page and returns; the service runs the next step
//! after the core has handled other events (a zero timer), or once the
//! association's sends drained when the peer reads slower than Sluice
//! answers. So a query over millions of entities neither blocks the core
//! nor queues its answers without bound, and a C-CANCEL (handled between
//! steps) stops it within one page: FE00.
//!
//! `query.find_results_max` bounds the answers: the match past it is not
//! sent; the final answer is A700 (out of resources) with an Error Comment
//! naming the limit, and a log line, instead of an endless stream.

use std::time::{Duration, Instant};

use sluice_index::{AnsweredMark, FindBudget, FindMatch, FindResume};
use sluice_net::dimse::dataset::SmallDatasetEncoding;
use sluice_net::dimse::{CFindRsp, Command, Status, StatusDetail};
use sluice_net::query::{
    build_response, Attribute, Candidate, CharacterSet, DatasetCandidate, Level, Query,
    ResponseContext,
};

use super::super::conn::Connection;
use super::super::shared::ServerShared;
use super::head;
use super::{error_comment, STATUS_UNABLE_TO_PROCESS};
use crate::cluster::{Cluster, FindStream, Polled};
use crate::config::FileKeysOnFind;

/// Matches answered per step.
const PAGE_MATCHES: usize = 64;
/// Matches answered per step when each reads its file's head.
const PAGE_MATCHES_WITH_FILES: usize = 8;
/// Candidates looked at per step (matching or not).
const PAGE_SCANNED: usize = 2048;

/// How long a C-FIND waits for index commits answered before it came
/// (`sluice_index::Index::answered_mark`) before it answers without them:
/// as long as `Index::read` would block a thread.
const ANSWERED_WAIT_MAX: Duration = Duration::from_secs(5);

/// Whether the C-FIND goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Another step is due.
    More,
    /// The cluster catalogue has no page ready yet: step again shortly.
    Wait,
    /// The final response was sent (or cannot be: the association closed).
    Done,
}

/// Index attributes first, then the file head's for what the index does
/// not hold.
struct Layered<'a> {
    first: &'a dyn Candidate,
    then: &'a dyn Candidate,
}

impl Candidate for Layered<'_> {
    fn attribute(&self, tag: sluice_net::dimse::Tag) -> Attribute<'_> {
        match self.first.attribute(tag) {
            Attribute::Unavailable => self.then.attribute(tag),
            other => other,
        }
    }
}

/// Where the matches come from.
#[derive(Debug)]
enum Source {
    /// This node's index, page by page from `resume`.
    Local { resume: Option<FindResume> },
    /// The whole cluster, from the catalogue (`crate::cluster`'s find,
    /// docs/design/scale-out.md): pages polled as they come.
    Cluster(FindStream),
}

/// One C-FIND in progress (see the module documentation).
#[derive(Debug)]
pub(crate) struct FindOp {
    pub(crate) context_id: u8,
    pub(crate) message_id: u16,
    sop_class_uid: String,
    query: Query,
    encoding: SmallDatasetEncoding,
    source: Source,
    /// Cluster mode answered from the local index (catalogue unreachable).
    local_only: bool,
    pub(crate) answered: u64,
    /// What the index writer had answered when this C-FIND first read it,
    /// and since when it waits for that to be committed.
    answered_mark: Option<(AnsweredMark, Instant)>,
    /// Everything answered before this C-FIND is visible to
    /// `Index::read_committed`.
    answers_visible: bool,
    pub(crate) cancelled: bool,
    /// Waiting for the association's sends to drain (not for a timer).
    pub(crate) waiting_for_sends: bool,
    started: Instant,
}

impl FindOp {
    /// A C-FIND over the local index, or over the cluster's catalogue when
    /// `cluster` is given and configured to answer cluster-wide.
    pub(crate) fn new(
        (context_id, message_id): (u8, u16),
        sop_class_uid: String,
        query: Query,
        encoding: SmallDatasetEncoding,
        cluster: Option<&Cluster>,
    ) -> FindOp {
        let cluster = cluster.filter(|cluster| cluster.finds_cluster_wide());
        let (source, local_only) = match cluster {
            Some(cluster) if cluster.catalogue_reachable() => {
                (Source::Cluster(cluster.find(query.clone())), false)
            }
            Some(_) => {
                tracing::warn!(level = %query.level(), "the cluster catalogue is unreachable: this C-FIND answers from the local index only");
                (Source::Local { resume: None }, true)
            }
            None => (Source::Local { resume: None }, false),
        };
        FindOp {
            context_id,
            message_id,
            sop_class_uid,
            query,
            encoding,
            source,
            local_only,
            answered: 0,
            answered_mark: None,
            answers_visible: false,
            cancelled: false,
            waiting_for_sends: false,
            started: Instant::now(),
        }
    }

    /// Answers one page (queued on `conn`; the caller flushes).
    pub(crate) fn step(&mut self, shared: &ServerShared, conn: &mut Connection) -> Progress {
        if self.cancelled {
            self.finish(conn, Status::CANCEL, None);
            return Progress::Done;
        }
        let config = shared.store.config();
        // Files are read on this node only: cluster answers are the
        // catalogue's keys.
        let file_keys = config.query.file_keys_on_find == FileKeysOnFind::Image
            && self.query.level() == Level::Image
            && matches!(self.source, Source::Local { .. });
        let limit = u64::from(config.query.find_results_max);
        let matches_max = if file_keys {
            PAGE_MATCHES_WITH_FILES
        } else {
            PAGE_MATCHES
        };
        // One more than the limit allows, to know that it was passed.
        let left = usize::try_from(limit + 1 - self.answered.min(limit)).unwrap_or(usize::MAX);
        let budget = FindBudget {
            matches_max: matches_max.min(left),
            scanned_max: PAGE_SCANNED,
        };
        if matches!(self.source, Source::Local { .. }) && !self.answers_visible {
            // Read what was answered before this C-FIND came (a C-STORE
            // answered when applied, its commit still running) without
            // blocking the core: step again shortly until it is committed.
            let index = shared.store.index();
            let (mark, since) = *self
                .answered_mark
                .get_or_insert_with(|| (index.answered_mark(), Instant::now()));
            if !index.answered_visible(mark) {
                if since.elapsed() < ANSWERED_WAIT_MAX {
                    return Progress::Wait;
                }
                tracing::warn!(peer = ?conn.peer, waited_ms = since.elapsed().as_millis() as u64, "C-FIND waited for an answered index commit that has not settled; it answers from what is committed");
            }
            self.answers_visible = true;
        }
        let (matches, resume) = match &mut self.source {
            Source::Local { resume } => {
                match shared
                    .store
                    .index()
                    .read_committed()
                    .and_then(|read| read.find(&self.query, resume.as_ref(), budget))
                {
                    Ok(page) => (page.matches, page.resume.map(Some)),
                    Err(error) => {
                        tracing::error!(peer = ?conn.peer, calling_ae = %conn.calling_ae_title, %error, "C-FIND failed reading the index");
                        self.finish(
                            conn,
                            STATUS_UNABLE_TO_PROCESS,
                            Some(format!("index: {error}")),
                        );
                        return Progress::Done;
                    }
                }
            }
            Source::Cluster(stream) => match stream.poll() {
                Polled::Pending => return Progress::Wait,
                // More may follow: `Some(None)` asks for another step.
                Polled::Matches(matches) => (matches, Some(None)),
                Polled::Done => (Vec::new(), None),
                Polled::Failed {
                    error,
                    after_matches: false,
                } => {
                    tracing::warn!(peer = ?conn.peer, calling_ae = %conn.calling_ae_title, %error, "the cluster catalogue cannot answer this C-FIND: it answers from the local index only");
                    self.source = Source::Local { resume: None };
                    self.local_only = true;
                    return Progress::More;
                }
                Polled::Failed {
                    error,
                    after_matches: true,
                } => {
                    tracing::error!(peer = ?conn.peer, calling_ae = %conn.calling_ae_title, %error, "the cluster catalogue failed in the middle of a C-FIND");
                    self.finish(
                        conn,
                        STATUS_UNABLE_TO_PROCESS,
                        Some(format!("cluster catalogue: {error}")),
                    );
                    return Progress::Done;
                }
            },
        };
        let retrieve_ae_title = config.network.ae_title.as_str();
        let context = ResponseContext {
            retrieve_ae_title: Some(retrieve_ae_title),
            instance_availability: Some("ONLINE"),
        };
        for found in &matches {
            let head = if file_keys {
                file_head(shared, found)
            } else {
                None
            };
            let charset = head
                .as_ref()
                .map_or_else(CharacterSet::default, CharacterSet::of_dataset);
            let response = match &head {
                Some(head) => {
                    let from_file = DatasetCandidate::new(head, &charset);
                    let layered = Layered {
                        first: found,
                        then: &from_file,
                    };
                    // Keys the index could not narrow are matched here.
                    if !self.query.matches(&layered) {
                        continue;
                    }
                    build_response(&self.query, &layered, &context)
                }
                None => build_response(&self.query, found, &context),
            };
            if self.answered >= limit {
                tracing::warn!(
                    peer = ?conn.peer,
                    calling_ae = %conn.calling_ae_title,
                    level = %self.query.level(),
                    limit,
                    "C-FIND stopped: more matches than query.find_results_max"
                );
                self.finish(
                    conn,
                    sluice_net::dimse::Status::OUT_OF_RESOURCES,
                    Some(format!(
                        "more than {limit} matches (query.find_results_max); narrow the query"
                    )),
                );
                return Progress::Done;
            }
            let mut response = response;
            if head.is_some() {
                // The file head answers every attribute it holds (an absent
                // one is empty); only the keys Sluice ignores stay FF01.
                let query = &self.query;
                response
                    .unsupported
                    .retain(|tag| query.key(*tag).is_some_and(|key| key.ignored.is_some()));
            }
            let status = response.status();
            let identifier = match response.encode(self.encoding) {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::warn!(%error, "a C-FIND answer cannot be encoded; skipped");
                    continue;
                }
            };
            let rsp = Command::CFindRsp(CFindRsp {
                message_id_being_responded_to: self.message_id,
                affected_sop_class_uid: Some(self.sop_class_uid.clone()),
                status,
                data_set: true,
                detail: StatusDetail::default(),
            });
            if conn
                .queue_message(self.context_id, &rsp, Some(&identifier))
                .is_err()
            {
                // Released or aborted meanwhile: nobody to answer.
                return Progress::Done;
            }
            self.answered += 1;
        }
        match resume {
            Some(next) => {
                if let (Source::Local { resume }, Some(next)) = (&mut self.source, next) {
                    *resume = Some(next);
                }
                Progress::More
            }
            None => {
                self.finish(conn, Status::SUCCESS, None);
                Progress::Done
            }
        }
    }

    /// The final C-FIND-RSP, and the operation's log line.
    pub(crate) fn finish(&self, conn: &mut Connection, status: Status, comment: Option<String>) {
        let rsp = Command::CFindRsp(CFindRsp {
            message_id_being_responded_to: self.message_id,
            affected_sop_class_uid: Some(self.sop_class_uid.clone()),
            status,
            data_set: false,
            detail: StatusDetail {
                error_comment: comment.map(|text| error_comment(&text)),
                ..StatusDetail::default()
            },
        });
        // A closed association takes no answer.
        let _ = conn.queue_message(self.context_id, &rsp, None);
        tracing::info!(
            peer = %conn.peer.map(|peer| peer.to_string()).unwrap_or_default(),
            calling_ae = %conn.calling_ae_title,
            level = %self.query.level(),
            matches = self.answered,
            scope = match (&self.source, self.local_only) {
                (Source::Cluster(_), _) => "cluster",
                (Source::Local { .. }, true) => "local (cluster catalogue unreachable)",
                (Source::Local { .. }, false) => "local",
            },
            status = %format!("{:04X}", status.0),
            duration_ms = self.started.elapsed().as_millis() as u64,
            "C-FIND answered"
        );
    }
}

/// The head of a matching instance's file (IMAGE level), decoded; `None`
/// when it cannot be read (logged) or decoded.
fn file_head(
    shared: &ServerShared,
    found: &FindMatch,
) -> Option<sluice_net::dimse::dataset::SmallDataset> {
    let entry = found.instance.as_ref()?;
    let length_max = u64::from(shared.store.config().query.file_head_bytes_max);
    let dataset = shared.store.dataset_of(entry);
    match dataset.and_then(|dataset| {
        let head = shared.store.read_dataset_head(&dataset, length_max)?;
        Ok((dataset, head))
    }) {
        Ok((dataset, bytes)) => head::decode_head(&bytes, &dataset.transfer_syntax_uid),
        Err(error) => {
            tracing::warn!(%error, sop_instance_uid = %entry.triplet.sop_instance_uid, "C-FIND cannot read a file head");
            None
        }
    }
}
