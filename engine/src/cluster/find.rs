//! Cluster-wide C-FIND: the entities of one level, over every node's
//! instances, from the catalogue (docs/design/scale-out.md, "Cluster-wide
//! C-FIND").
//!
//! A C-FIND in cluster mode starts one thread ([`Cluster::find`]) that
//! takes one of at most `cluster.find_connections` PostgreSQL connections
//! (an idle one of the [`Pool`], else a new one; beyond the cap it waits up
//! to `cluster.publish_timeout_ms`, then fails, and the C-FIND answers from
//! the local index as in an outage), runs one statement for the query's level and
//! reads its rows through a portal (256 at a time, so a large answer is
//! never held whole), builds each entity as the index does (a
//! [`FindMatch`]: the same records, so the same `Candidate` answers), checks
//! it with net's matcher level by level exactly as the index's find does,
//! and hands the matches to the core in pages over a small bounded channel.
//! The core polls it between its other events ([`FindStream::poll`]); a
//! C-CANCEL or a closed association drops the stream, and the thread stops
//! at its next page.
//!
//! What the catalogue computes: each study's (and series') attributes are
//! those of its first instance received, empty ones filled from later
//! instances (as the index keeps them); Number of Study/Series Related
//! Series/Instances and Modalities in Study are counted over every row of
//! the study or series, whatever the query's keys; a patient is every
//! study under one Patient ID, its attributes those of its first study in
//! UID order.
//!
//! What is pushed into SQL (never more than a superset of the matches:
//! everything is matched again in Rust): UID lists and single UIDs, exact
//! values and literal wildcard heads of Patient ID, Accession Number, Study
//! ID and Modality, and Study Date ranges (values not in `YYYYMMDD` form
//! pass to the matcher). A study is a candidate when one of its rows
//! satisfies them; at PATIENT level only Patient ID narrows (a patient's
//! counts need every study of it).

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use postgres::types::ToSql;
use postgres::{Client, Row};
use sluice_index::{
    Checksum, FileId, FindMatch, InstanceEntry, InstanceRecord, PatientSummary, SeriesAttributes,
    SeriesRecord, StudyAttributes, StudyRecord, Triplet,
};
use sluice_net::dimse::Tag;
use sluice_net::query::model::tags;
use sluice_net::query::{Constraint, Level, Query};

use super::catalogue::CatalogueError;
use super::Cluster;

/// Matches handed to the core at once.
const PAGE_MATCHES: usize = 64;
/// Pages waiting for the core (the thread waits beyond).
const PAGES_QUEUED: usize = 4;
/// Rows read from the portal at once.
const ROWS_PER_FETCH: i32 = 256;

/// What the core gets from a cluster C-FIND.
#[derive(Debug)]
pub(crate) enum Polled {
    /// Nothing yet: poll again shortly.
    Pending,
    /// Matches, in the statement's order.
    Matches(Vec<FindMatch>),
    /// Every match was handed over.
    Done,
    /// The catalogue failed (after `matches_sent` matches were handed over).
    Failed {
        /// Why.
        error: String,
        /// Whether any match was handed over before it.
        after_matches: bool,
    },
}

/// A message of the thread.
pub(super) enum Message {
    Matches(Vec<FindMatch>),
    Done,
    Failed(String),
}

/// The core's end of a cluster C-FIND (see the module documentation).
#[derive(Debug)]
pub(crate) struct FindStream {
    receiver: Receiver<Message>,
    handed: bool,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Matches(matches) => write!(formatter, "Matches({})", matches.len()),
            Message::Done => formatter.write_str("Done"),
            Message::Failed(error) => write!(formatter, "Failed({error})"),
        }
    }
}

impl FindStream {
    /// The next page, if one is there.
    pub(crate) fn poll(&mut self) -> Polled {
        match self.receiver.try_recv() {
            Ok(Message::Matches(matches)) => {
                self.handed = true;
                Polled::Matches(matches)
            }
            Ok(Message::Done) => Polled::Done,
            Ok(Message::Failed(error)) => Polled::Failed {
                error,
                after_matches: self.handed,
            },
            Err(TryRecvError::Empty) => Polled::Pending,
            Err(TryRecvError::Disconnected) => Polled::Failed {
                error: "the catalogue query ended without an answer".into(),
                after_matches: self.handed,
            },
        }
    }
}

/// C-FIND's catalogue connections: at most `cap` in use, the idle ones
/// kept for the next C-FIND.
#[derive(Default)]
pub(super) struct Pool {
    /// Connections in use, and the idle ones.
    state: std::sync::Mutex<(usize, Vec<Client>)>,
    freed: std::sync::Condvar,
}

/// A connection taken from the [`Pool`]; given back by [`Pool::give_back`]
/// (healthy) or dropped (after an error).
struct Lease<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut state = self
            .pool
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        assert!(state.0 > 0, "a lease given back twice");
        state.0 -= 1;
        if let Some(client) = self.client.take() {
            state.1.push(client);
        }
        drop(state);
        self.pool.freed.notify_one();
    }
}

impl Pool {
    /// A connection, waiting up to `wait` while `cap` are in use; `None`
    /// when none freed in time. The client is `None` when none is idle
    /// (the caller connects).
    fn take(&self, cap: usize, wait: Duration) -> Option<(Lease<'_>, Option<Client>)> {
        let deadline = std::time::Instant::now() + wait;
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        while state.0 >= cap {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(|poison| poison.into_inner())
                .0;
        }
        state.0 += 1;
        let idle = state.1.pop();
        Some((
            Lease {
                pool: self,
                client: None,
            },
            idle,
        ))
    }
}

impl Cluster {
    /// Whether C-FIND answers for the whole cluster (`cluster.find`).
    pub(crate) fn finds_cluster_wide(&self) -> bool {
        self.inner.settings.find == crate::config::FindScope::Cluster
    }

    /// Starts a cluster-wide C-FIND of `query` (see the module documentation).
    pub(crate) fn find(&self, query: Query) -> FindStream {
        let (sender, receiver) = crossbeam_channel::bounded(PAGES_QUEUED);
        let cluster = self.clone();
        let failed = sender.clone();
        let spawned = std::thread::Builder::new()
            .name("cluster-find".to_owned())
            .spawn(move || {
                let settings = &cluster.inner.settings;
                let Some((mut lease, idle)) = cluster
                    .inner
                    .finds
                    .take(settings.find_connections, settings.timeout)
                else {
                    let _ = sender.send(Message::Failed(format!(
                        "all {} catalogue connections of C-FIND stayed busy for {} ms",
                        settings.find_connections,
                        settings.timeout.as_millis()
                    )));
                    return;
                };
                let client = match idle {
                    Some(client) if !client.is_closed() => Ok(client),
                    _ => connect(&settings.address, settings.timeout),
                };
                let ran = client.and_then(|mut client| {
                    run(&mut client, &query, &sender)?;
                    Ok(client)
                });
                match ran {
                    Ok(client) => lease.client = Some(client),
                    Err(error) => {
                        // The connection is dropped, not reused. The core
                        // may have gone (cancelled): nobody to tell.
                        let _ = sender.send(Message::Failed(error.to_string()));
                    }
                }
            });
        if let Err(error) = spawned {
            let _ = failed.try_send(Message::Failed(format!(
                "cannot start the catalogue query: {error}"
            )));
        }
        FindStream {
            receiver,
            handed: false,
        }
    }
}

/// Why the thread stopped.
#[derive(Debug, thiserror::Error)]
pub(super) enum FindError {
    #[error("{0}")]
    Catalogue(#[from] CatalogueError),
    #[error("the catalogue holds a bad value in {0}")]
    BadValue(&'static str),
}

impl From<postgres::Error> for FindError {
    fn from(error: postgres::Error) -> FindError {
        FindError::Catalogue(CatalogueError::Postgres(error))
    }
}

/// A new connection for C-FIND.
pub(super) fn connect(address: &str, timeout: Duration) -> Result<Client, FindError> {
    Ok(super::tls::connect(address, |config| {
        config
            .connect_timeout(timeout)
            .tcp_user_timeout(timeout)
            .application_name("sluice find");
    })?)
}

/// The thread's work: `Ok` also when the core stopped listening.
pub(super) fn run(
    client: &mut Client,
    query: &Query,
    sender: &Sender<Message>,
) -> Result<(), FindError> {
    let statement = statement(query);
    let params: Vec<&(dyn ToSql + Sync)> = statement
        .params
        .iter()
        .map(|param| param.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let mut transaction = client.transaction()?;
    let portal = transaction.bind(statement.text.as_str(), &params)?;
    let mut page = Vec::new();
    let mut patient: Option<PatientSummary> = None;
    loop {
        let rows = transaction.query_portal(&portal, ROWS_PER_FETCH)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let found = match query.level() {
                Level::Patient => {
                    let (_, record) = study_of(row)?;
                    match patient.as_mut() {
                        Some(current) if current.patient_id == record.attributes.patient_id => {
                            current.studies += 1;
                            current.series += u64::from(record.number_of_series);
                            current.instances += u64::from(record.number_of_instances);
                            continue;
                        }
                        _ => {
                            let next = PatientSummary {
                                patient_id: record.attributes.patient_id.clone(),
                                studies: 1,
                                series: u64::from(record.number_of_series),
                                instances: u64::from(record.number_of_instances),
                                first_study: record,
                            };
                            match patient.replace(next) {
                                Some(done) => patient_match(done),
                                None => continue,
                            }
                        }
                    }
                }
                level => entity_of(level, row)?,
            };
            if matches(query, &found) {
                page.push(found);
                if page.len() >= PAGE_MATCHES
                    && sender
                        .send(Message::Matches(std::mem::take(&mut page)))
                        .is_err()
                {
                    return Ok(());
                }
            }
        }
    }
    if let Some(done) = patient.take() {
        let found = patient_match(done);
        if matches(query, &found) {
            page.push(found);
        }
    }
    if !page.is_empty() && sender.send(Message::Matches(page)).is_err() {
        return Ok(());
    }
    let _ = sender.send(Message::Done);
    Ok(())
}

fn patient_match(patient: PatientSummary) -> FindMatch {
    FindMatch {
        level: Level::Patient,
        patient: Some(patient),
        study: None,
        series: None,
        instance: None,
    }
}

/// Whether `found` matches the keys of its level and of every level above,
/// as the index checks its candidates.
fn matches(query: &Query, found: &FindMatch) -> bool {
    let levels: &[Level] = match found.level {
        Level::Patient => &[Level::Patient],
        Level::Study => &[Level::Patient, Level::Study],
        Level::Series => &[Level::Patient, Level::Study, Level::Series],
        Level::Image => &[Level::Patient, Level::Study, Level::Series, Level::Image],
    };
    levels
        .iter()
        .all(|level| query.matches_level(*level, found))
}

// ----- the statement -----

/// One statement and its parameters.
struct Statement {
    text: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Statement {
    fn param(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }
}

/// Where a pushed-down condition applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// A study's attribute (its rows hold it).
    Study,
    /// A series' identity: exact on every row of the series.
    Series,
    /// An instance's own attribute.
    Instance,
}

/// How a catalogue column compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Uid,
    Text,
    Date,
}

fn column(tag: Tag) -> Option<(&'static str, Kind, Scope)> {
    Some(match tag {
        tags::STUDY_INSTANCE_UID => ("study_instance_uid", Kind::Uid, Scope::Study),
        tags::SERIES_INSTANCE_UID => ("series_instance_uid", Kind::Uid, Scope::Series),
        tags::SOP_INSTANCE_UID => ("sop_instance_uid", Kind::Uid, Scope::Instance),
        tags::SOP_CLASS_UID => ("sop_class_uid", Kind::Uid, Scope::Instance),
        tags::PATIENT_ID => ("patient_id", Kind::Text, Scope::Study),
        tags::ACCESSION_NUMBER => ("accession_number", Kind::Text, Scope::Study),
        tags::STUDY_ID => ("study_id", Kind::Text, Scope::Study),
        tags::MODALITY => ("modality", Kind::Text, Scope::Study),
        tags::STUDY_DATE => ("study_date", Kind::Date, Scope::Study),
        _ => return None,
    })
}

/// The SQL condition of one constraint on column `name` of rows `alias`.
fn condition(
    statement: &mut Statement,
    alias: &str,
    (name, kind): (&str, Kind),
    constraint: &Constraint<'_>,
) -> Option<String> {
    let column = format!("{alias}.{name}");
    Some(match (kind, constraint) {
        (
            Kind::Uid | Kind::Text,
            Constraint::Equals {
                value,
                case_insensitive: false,
            },
        ) => format!("{column} = {}", statement.param((*value).to_owned())),
        (Kind::Uid, Constraint::OneOf(values)) => {
            let values: Vec<String> = values.iter().map(|value| (*value).to_owned()).collect();
            format!("{column} = ANY({})", statement.param(values))
        }
        (
            Kind::Text,
            Constraint::Prefix {
                literal,
                case_insensitive: false,
            },
        ) if !literal.is_empty() => {
            let literal = statement.param(literal.clone());
            format!("left({column}, char_length({literal})) = {literal}")
        }
        (Kind::Date, Constraint::Range { low, high }) => {
            let mut bounds = Vec::new();
            if let Some(low) = low {
                bounds.push(format!("{column} >= {}", statement.param(low.clone())));
            }
            if let Some(high) = high {
                bounds.push(format!("{column} <= {}", statement.param(high.clone())));
            }
            if bounds.is_empty() {
                return None;
            }
            format!("({column} !~ '^[0-9]{{8}}$' OR ({}))", bounds.join(" AND "))
        }
        _ => return None,
    })
}

/// The conditions of `query` on rows `alias` whose scope is in `scopes`
/// (`AND`ed; `TRUE` when none).
fn conditions(
    statement: &mut Statement,
    query: &Query,
    alias: &str,
    accept: impl Fn(Tag, Scope) -> bool,
) -> String {
    let mut all = Vec::new();
    for (key, constraint) in query.constraints() {
        let Some((name, kind, scope)) = column(key.tag) else {
            continue;
        };
        if !accept(key.tag, scope) {
            continue;
        }
        if let Some(sql) = condition(statement, alias, (name, kind), &constraint) {
            all.push(sql);
        }
    }
    if all.is_empty() {
        "TRUE".to_owned()
    } else {
        all.join(" AND ")
    }
}

/// The first non-empty value of a text column in receive order.
fn first(column: &str) -> String {
    format!(
        "coalesce((array_agg(i.{column} ORDER BY i.received_at_unix_ns, i.sop_instance_uid) \
         FILTER (WHERE i.{column} <> ''))[1], '') AS {column}"
    )
}

const STUDY_TEXT_COLUMNS: [&str; 10] = [
    "patient_name",
    "patient_id",
    "patient_birth_date",
    "patient_sex",
    "study_date",
    "study_time",
    "accession_number",
    "study_id",
    "study_description",
    "referring_physician_name",
];

/// The statement of `query`'s level (see the module documentation).
fn statement(query: &Query) -> Statement {
    let mut statement = Statement {
        text: String::new(),
        params: Vec::new(),
    };
    let level = query.level();
    let chosen = conditions(&mut statement, query, "i", |tag, _| {
        level != Level::Patient || tag == tags::PATIENT_ID
    });
    let study_columns: Vec<String> = STUDY_TEXT_COLUMNS.iter().map(|c| first(c)).collect();
    let mut text = format!(
        "WITH chosen AS (SELECT DISTINCT i.study_instance_uid FROM sluice_instances i WHERE {chosen}),
         studies AS (
            SELECT i.study_instance_uid AS study, {},
                count(DISTINCT i.series_instance_uid) AS study_series,
                count(*) AS study_instances,
                array_remove(array_agg(DISTINCT i.modality), '') AS modalities
            FROM sluice_instances i JOIN chosen c ON c.study_instance_uid = i.study_instance_uid
            GROUP BY i.study_instance_uid)",
        study_columns.join(", ")
    );
    let study_select = format!(
        "s.study, {}, s.study_series, s.study_instances, s.modalities",
        STUDY_TEXT_COLUMNS
            .iter()
            .map(|c| format!("s.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    match level {
        Level::Patient => {
            text.push_str(&format!(
                " SELECT {study_select} FROM studies s ORDER BY s.patient_id COLLATE \"C\", s.study COLLATE \"C\""
            ));
        }
        Level::Study => {
            text.push_str(&format!(
                " SELECT {study_select} FROM studies s ORDER BY s.study COLLATE \"C\""
            ));
        }
        Level::Series | Level::Image => {
            let in_series = conditions(&mut statement, query, "i", |_, scope| {
                scope == Scope::Series
            });
            text.push_str(&format!(
                ", series AS (
                    SELECT i.study_instance_uid AS study, i.series_instance_uid AS series,
                        {}, (array_agg(i.series_number ORDER BY i.received_at_unix_ns, i.sop_instance_uid)
                             FILTER (WHERE i.series_number IS NOT NULL))[1] AS series_number,
                        {}, count(*) AS series_instances
                    FROM sluice_instances i JOIN chosen c ON c.study_instance_uid = i.study_instance_uid
                    WHERE {in_series}
                    GROUP BY i.study_instance_uid, i.series_instance_uid)",
                first("modality"),
                first("series_description"),
            ));
            let series_select =
                "r.series, r.modality, r.series_number, r.series_description, r.series_instances";
            if level == Level::Series {
                text.push_str(&format!(
                    " SELECT {study_select}, {series_select}
                      FROM series r JOIN studies s ON s.study = r.study
                      ORDER BY r.study COLLATE \"C\", r.series COLLATE \"C\""
                ));
            } else {
                let own = conditions(&mut statement, query, "i", |_, scope| scope != Scope::Study);
                text.push_str(&format!(
                    " SELECT {study_select}, {series_select},
                        i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid,
                        i.instance_number, i.checksum, i.file_size_bytes, i.dataset_offset_bytes,
                        i.received_at_unix_ns, i.calling_ae_title, i.location
                      FROM sluice_instances i
                      JOIN series r ON r.study = i.study_instance_uid AND r.series = i.series_instance_uid
                      JOIN studies s ON s.study = i.study_instance_uid
                      WHERE {own}
                      ORDER BY i.study_instance_uid COLLATE \"C\", i.series_instance_uid COLLATE \"C\", i.sop_instance_uid COLLATE \"C\""
                ));
            }
        }
    }
    statement.text = text;
    statement
}

// ----- rows to entities -----

/// Columns of the study part of a row.
const STUDY_COLUMNS: usize = 14;
/// Columns of the series part.
const SERIES_COLUMNS: usize = 5;

fn count(row: &Row, index: usize, what: &'static str) -> Result<u32, FindError> {
    let value: i64 = row.try_get(index)?;
    u32::try_from(value).map_err(|_| FindError::BadValue(what))
}

fn study_of(row: &Row) -> Result<(String, StudyRecord), FindError> {
    let text = |index: usize| -> Result<String, FindError> { Ok(row.try_get(index)?) };
    let uid = text(0)?;
    let attributes = StudyAttributes {
        patient_name: text(1)?,
        patient_id: text(2)?,
        patient_birth_date: text(3)?,
        patient_sex: text(4)?,
        study_date: text(5)?,
        study_time: text(6)?,
        accession_number: text(7)?,
        study_id: text(8)?,
        study_description: text(9)?,
        referring_physician_name: text(10)?,
    };
    let mut modalities_in_study: Vec<String> = row.try_get(13)?;
    modalities_in_study.sort();
    Ok((
        uid,
        StudyRecord {
            attributes,
            modalities_in_study,
            number_of_series: count(row, 11, "study_series")?,
            number_of_instances: count(row, 12, "study_instances")?,
        },
    ))
}

fn series_of(row: &Row) -> Result<(String, SeriesRecord), FindError> {
    let at = STUDY_COLUMNS;
    Ok((
        row.try_get(at)?,
        SeriesRecord {
            attributes: SeriesAttributes {
                modality: row.try_get(at + 1)?,
                series_number: row.try_get(at + 2)?,
                series_description: row.try_get(at + 3)?,
            },
            number_of_instances: count(row, at + 4, "series_instances")?,
        },
    ))
}

fn instance_of(row: &Row, study: &str, series: &str) -> Result<InstanceEntry, FindError> {
    let at = STUDY_COLUMNS + SERIES_COLUMNS;
    let sop: String = row.try_get(at)?;
    let checksum: String = row.try_get(at + 4)?;
    let checksum =
        u128::from_str_radix(&checksum, 16).map_err(|_| FindError::BadValue("checksum"))?;
    let location: String = row.try_get(at + 9)?;
    let file_id =
        u128::from_str_radix(&location, 16).map_err(|_| FindError::BadValue("location"))?;
    let unsigned = |index: usize, what: &'static str| -> Result<u64, FindError> {
        let value: i64 = row.try_get(index)?;
        u64::try_from(value).map_err(|_| FindError::BadValue(what))
    };
    Ok(InstanceEntry {
        triplet: Triplet::new(study, series, &sop),
        record: InstanceRecord {
            file_id: FileId(file_id),
            file_size_bytes: unsigned(at + 5, "file_size_bytes")?,
            dataset_offset_bytes: unsigned(at + 6, "dataset_offset_bytes")?,
            transfer_syntax_uid: row.try_get(at + 2)?,
            sop_class_uid: row.try_get(at + 1)?,
            checksum: Checksum(checksum.to_be_bytes()),
            received_at_unix_ns: unsigned(at + 7, "received_at_unix_ns")?,
            calling_ae_title: row.try_get(at + 8)?,
            instance_number: row.try_get(at + 3)?,
        },
    })
}

/// The entity of a STUDY, SERIES or IMAGE row.
fn entity_of(level: Level, row: &Row) -> Result<FindMatch, FindError> {
    let study = study_of(row)?;
    let series = match level {
        Level::Series | Level::Image => Some(series_of(row)?),
        _ => None,
    };
    let instance = match (&series, level) {
        (Some((series_uid, _)), Level::Image) => Some(instance_of(row, &study.0, series_uid)?),
        _ => None,
    };
    Ok(FindMatch {
        level,
        patient: None,
        study: Some(study),
        series,
        instance,
    })
}
