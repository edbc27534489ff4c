//! The shared catalogue in PostgreSQL: its schema, and the group commit
//! of a batch of entries, in which the primary key on the SOP Instance UID
//! decides, race-free across nodes, which node holds each instance.

use std::time::Duration;

use postgres::Client;

use super::outbox::Entry;

/// The schema, created at connect if missing. Serialized by an advisory
/// lock: nodes starting together would otherwise race on
/// `CREATE TABLE IF NOT EXISTS` (a unique violation in `pg_type`).
const SCHEMA: &str = "
SELECT pg_advisory_xact_lock(7215361045);
CREATE TABLE IF NOT EXISTS sluice_nodes (
    node text PRIMARY KEY,
    published_entries bigint NOT NULL DEFAULT 0,
    backlog_bytes bigint NOT NULL DEFAULT 0,
    lag_seconds double precision NOT NULL DEFAULT 0,
    last_publish_at timestamptz,
    seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS sluice_instances (
    sop_instance_uid text PRIMARY KEY,
    study_instance_uid text NOT NULL,
    series_instance_uid text NOT NULL,
    sop_class_uid text NOT NULL,
    transfer_syntax_uid text NOT NULL,
    instance_number integer,
    checksum text NOT NULL,
    file_size_bytes bigint NOT NULL,
    dataset_offset_bytes bigint NOT NULL,
    received_at_unix_ns bigint NOT NULL,
    calling_ae_title text NOT NULL,
    patient_name text NOT NULL,
    patient_id text NOT NULL,
    patient_birth_date text NOT NULL,
    patient_sex text NOT NULL,
    study_date text NOT NULL,
    study_time text NOT NULL,
    accession_number text NOT NULL,
    study_id text NOT NULL,
    study_description text NOT NULL,
    referring_physician_name text NOT NULL,
    modality text NOT NULL,
    series_number integer,
    series_description text NOT NULL,
    node text NOT NULL,
    location text NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sluice_instances_study ON sluice_instances (study_instance_uid);
CREATE INDEX IF NOT EXISTS sluice_instances_patient ON sluice_instances (patient_id);
ALTER TABLE sluice_nodes ADD COLUMN IF NOT EXISTS dicom_address text;
ALTER TABLE sluice_nodes ADD COLUMN IF NOT EXISTS ae_title text;
CREATE INDEX IF NOT EXISTS sluice_instances_series ON sluice_instances (series_instance_uid);
CREATE INDEX IF NOT EXISTS sluice_instances_accession ON sluice_instances (accession_number);
ALTER TABLE sluice_instances ADD COLUMN IF NOT EXISTS segment bigint;
ALTER TABLE sluice_instances ADD COLUMN IF NOT EXISTS record_offset bigint;
ALTER TABLE sluice_instances ADD COLUMN IF NOT EXISTS record_length bigint;
ALTER TABLE sluice_instances ADD COLUMN IF NOT EXISTS object_key text;
CREATE INDEX IF NOT EXISTS sluice_instances_segment ON sluice_instances (node, segment)
    WHERE segment IS NOT NULL;
";

/// The insert of a batch: one statement, one array per column.
const INSERT: &str = "
INSERT INTO sluice_instances (
    sop_instance_uid, study_instance_uid, series_instance_uid, sop_class_uid,
    transfer_syntax_uid, instance_number, checksum, file_size_bytes, dataset_offset_bytes,
    received_at_unix_ns, calling_ae_title, patient_name, patient_id, patient_birth_date,
    patient_sex, study_date, study_time, accession_number, study_id, study_description,
    referring_physician_name, modality, series_number, series_description, node, location,
    segment, record_offset, record_length, object_key)
SELECT sop, study, series, class, syntax, number, checksum, size, offset_bytes, received,
    calling, patient_name, patient_id, birth, sex, study_date, study_time, accession, study_id,
    study_description, referring, modality, series_number, series_description, $25::text,
    location, segment, record_offset, record_length, object_key
FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::text[],
    $8::int8[], $9::int8[], $10::int8[], $11::text[], $12::text[], $13::text[], $14::text[],
    $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[], $21::text[],
    $22::text[], $23::int4[], $24::text[], $26::text[], $27::int8[], $28::int8[], $29::int8[],
    $30::text[]
) AS u(sop, study, series, class, syntax, number, checksum, size, offset_bytes, received,
       calling, patient_name, patient_id, birth, sex, study_date, study_time, accession,
       study_id, study_description, referring, modality, series_number, series_description,
       location, segment, record_offset, record_length, object_key)
ON CONFLICT (sop_instance_uid) DO UPDATE SET
    study_instance_uid = EXCLUDED.study_instance_uid,
    series_instance_uid = EXCLUDED.series_instance_uid,
    sop_class_uid = EXCLUDED.sop_class_uid,
    transfer_syntax_uid = EXCLUDED.transfer_syntax_uid,
    instance_number = EXCLUDED.instance_number,
    checksum = EXCLUDED.checksum,
    file_size_bytes = EXCLUDED.file_size_bytes,
    dataset_offset_bytes = EXCLUDED.dataset_offset_bytes,
    received_at_unix_ns = EXCLUDED.received_at_unix_ns,
    calling_ae_title = EXCLUDED.calling_ae_title,
    patient_name = EXCLUDED.patient_name,
    patient_id = EXCLUDED.patient_id,
    patient_birth_date = EXCLUDED.patient_birth_date,
    patient_sex = EXCLUDED.patient_sex,
    study_date = EXCLUDED.study_date,
    study_time = EXCLUDED.study_time,
    accession_number = EXCLUDED.accession_number,
    study_id = EXCLUDED.study_id,
    study_description = EXCLUDED.study_description,
    referring_physician_name = EXCLUDED.referring_physician_name,
    modality = EXCLUDED.modality,
    series_number = EXCLUDED.series_number,
    series_description = EXCLUDED.series_description,
    location = EXCLUDED.location,
    segment = EXCLUDED.segment,
    record_offset = EXCLUDED.record_offset,
    record_length = EXCLUDED.record_length,
    object_key = EXCLUDED.object_key,
    published_at = now()
  -- Only this node's own row takes the new version (a replacement here, or
  -- a new file of the same instance); another node's row is never touched.
  WHERE sluice_instances.node = EXCLUDED.node
    AND sluice_instances.location <> EXCLUDED.location
RETURNING sop_instance_uid";

/// The removal of a batch: this node's rows that still name the removed
/// files (a row since replaced by a newer file of this node, or held by
/// another node, stays).
const DELETE: &str = "
DELETE FROM sluice_instances AS i
USING unnest($1::text[], $2::text[]) AS u(sop, location)
WHERE i.sop_instance_uid = u.sop AND i.location = u.location AND i.node = $3";

/// The place changes of a batch: this node's rows that still name the
/// relocated files take the record place and object key read from the
/// index as the batch is published (NULL: a file now). Another node's row,
/// or one naming another file, stays.
const RELOCATE: &str = "
UPDATE sluice_instances AS i SET segment = u.segment, record_offset = u.record_offset,
    record_length = u.record_length, object_key = u.object_key
FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::text[])
    AS u(sop, location, segment, record_offset, record_length, object_key)
WHERE i.sop_instance_uid = u.sop AND i.location = u.location AND i.node = $7";

/// Errors talking to the catalogue (all of them mean: not published now).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogueError {
    /// PostgreSQL refused or dropped the connection, or a statement failed.
    #[error("PostgreSQL: {}", with_causes(.0))]
    Postgres(#[from] postgres::Error),
    /// The connection string's TLS settings cannot be used.
    #[error("PostgreSQL TLS: {0}")]
    Tls(#[from] super::tls::TlsError),
}

/// A client error with its causes ("error performing TLS handshake:
/// invalid peer certificate: UnknownIssuer"): the client's own text names
/// the step only.
fn with_causes(error: &postgres::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(error) = cause {
        text.push_str(&format!(": {error}"));
        cause = error.source();
    }
    text
}

/// Who already holds a SOP Instance UID this node tried to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) node: String,
    pub(crate) study_instance_uid: String,
    pub(crate) series_instance_uid: String,
    pub(crate) checksum: String,
    pub(crate) file_size_bytes: u64,
}

/// What became of a published batch: for each entry (in order) `None`
/// when it is this node's in the catalogue, or the other node holding it.
pub(crate) type Published = Vec<Option<Holder>>;

/// Where a catalogue row says an instance lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) node: String,
    /// The file id (32 hex digits).
    pub(crate) location: String,
    /// The record's place (NULL: a file, or not published with one).
    pub(crate) record: Option<sluice_index::RecordPlace>,
}

/// A connection to the catalogue.
pub(crate) struct Catalogue {
    client: Client,
    node: String,
}

impl std::fmt::Debug for Catalogue {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Catalogue")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Catalogue {
    /// Connects (bounded by `timeout`, also as the TCP user timeout, so a
    /// server that stops answering fails a statement instead of hanging
    /// the publisher), creates the schema if missing and registers the node.
    pub(crate) fn connect(
        address: &str,
        (node, dicom_address, ae_title): (&str, Option<&str>, &str),
        timeout: Duration,
    ) -> Result<Catalogue, CatalogueError> {
        let mut client = super::tls::connect(address, |config| {
            config
                .connect_timeout(timeout)
                .tcp_user_timeout(timeout)
                .keepalives(true)
                .keepalives_idle(Duration::from_secs(10))
                .application_name("sluice");
        })?;
        let mut transaction = client.transaction()?;
        transaction.batch_execute(SCHEMA)?;
        transaction.execute(
            "INSERT INTO sluice_nodes (node, dicom_address, ae_title) VALUES ($1, $2, $3)
             ON CONFLICT (node) DO UPDATE SET seen_at = now(),
                 dicom_address = EXCLUDED.dicom_address, ae_title = EXCLUDED.ae_title",
            &[&node, &dicom_address, &ae_title],
        )?;
        transaction.commit()?;
        Ok(Catalogue {
            client,
            node: node.to_owned(),
        })
    }

    /// Publishes `entries` in one transaction (group commit). An entry
    /// whose SOP Instance UID is this node's already (published before a
    /// restart, or stored again here) takes its new location; one held by
    /// another node is answered with that node.
    ///
    /// Removals (`Entry::removed`) delete this node's row if it still names
    /// the removed file; place changes (`Entry::relocated`) update its
    /// record place and object key (`Entry::record`) if it still names the
    /// file; the answer to both is `None`. Each SOP Instance UID is
    /// expected once among the stored entries (`ON CONFLICT DO UPDATE`
    /// refuses to touch a row twice in one statement): the caller keeps
    /// the last of each.
    pub(crate) fn publish(&mut self, all: &[Entry]) -> Result<Published, CatalogueError> {
        let entries: Vec<&Entry> = all
            .iter()
            .filter(|entry| !entry.removed && !entry.relocated)
            .collect();
        let removals: Vec<&Entry> = all.iter().filter(|entry| entry.removed).collect();
        let relocations: Vec<&Entry> = all.iter().filter(|entry| entry.relocated).collect();
        let column = |get: fn(&Entry) -> String| entries.iter().map(|e| get(e)).collect::<Vec<_>>();
        let sops = column(|e| e.sop_instance_uid.clone());
        let to_i64 = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        let place = |of: &[&Entry], get: fn(&sluice_index::RecordPlace) -> u64| {
            of.iter()
                .map(|e| e.record.as_ref().map(|(place, _)| to_i64(get(place))))
                .collect::<Vec<_>>()
        };
        let object_keys = |of: &[&Entry]| {
            of.iter()
                .map(|e| e.record.as_ref().and_then(|(_, key)| key.clone()))
                .collect::<Vec<_>>()
        };
        let mut transaction = self.client.transaction()?;
        // Removals first: a removal names the file it removes, so its order
        // against a store of the same instance (a new file) does not matter.
        if !removals.is_empty() {
            transaction.execute(
                DELETE,
                &[
                    &removals
                        .iter()
                        .map(|e| e.sop_instance_uid.clone())
                        .collect::<Vec<_>>(),
                    &removals
                        .iter()
                        .map(|e| e.file_id.clone())
                        .collect::<Vec<_>>(),
                    &self.node,
                ],
            )?;
        }
        let inserted: std::collections::HashSet<String> = transaction
            .query(
                INSERT,
                &[
                    &sops,
                    &column(|e| e.study_instance_uid.clone()),
                    &column(|e| e.series_instance_uid.clone()),
                    &column(|e| e.sop_class_uid.clone()),
                    &column(|e| e.transfer_syntax_uid.clone()),
                    &entries
                        .iter()
                        .map(|e| e.instance_number)
                        .collect::<Vec<_>>(),
                    &column(|e| e.checksum.clone()),
                    &entries
                        .iter()
                        .map(|e| to_i64(e.file_size_bytes))
                        .collect::<Vec<_>>(),
                    &entries
                        .iter()
                        .map(|e| to_i64(e.dataset_offset_bytes))
                        .collect::<Vec<_>>(),
                    &entries
                        .iter()
                        .map(|e| to_i64(e.received_at_unix_ns))
                        .collect::<Vec<_>>(),
                    &column(|e| e.calling_ae_title.clone()),
                    &column(|e| e.patient_name.clone()),
                    &column(|e| e.patient_id.clone()),
                    &column(|e| e.patient_birth_date.clone()),
                    &column(|e| e.patient_sex.clone()),
                    &column(|e| e.study_date.clone()),
                    &column(|e| e.study_time.clone()),
                    &column(|e| e.accession_number.clone()),
                    &column(|e| e.study_id.clone()),
                    &column(|e| e.study_description.clone()),
                    &column(|e| e.referring_physician_name.clone()),
                    &column(|e| e.modality.clone()),
                    &entries.iter().map(|e| e.series_number).collect::<Vec<_>>(),
                    &column(|e| e.series_description.clone()),
                    &self.node,
                    &column(|e| e.file_id.clone()),
                    &place(&entries, |p| p.segment),
                    &place(&entries, |p| p.offset),
                    &place(&entries, |p| p.length),
                    &object_keys(&entries),
                ],
            )?
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect();
        // Place changes after the stores: a row this batch inserts takes
        // the same place (read from the index once for the whole batch).
        if !relocations.is_empty() {
            transaction.execute(
                RELOCATE,
                &[
                    &relocations
                        .iter()
                        .map(|e| e.sop_instance_uid.clone())
                        .collect::<Vec<_>>(),
                    &relocations
                        .iter()
                        .map(|e| e.file_id.clone())
                        .collect::<Vec<_>>(),
                    &place(&relocations, |p| p.segment),
                    &place(&relocations, |p| p.offset),
                    &place(&relocations, |p| p.length),
                    &object_keys(&relocations),
                    &self.node,
                ],
            )?;
        }
        let mut published = Vec::with_capacity(all.len());
        for entry in all {
            if entry.removed || entry.relocated || inserted.contains(&entry.sop_instance_uid) {
                published.push(None);
                continue;
            }
            // Held already: by this node (a republish, or a new location)
            // or by another. The row is locked until commit, so the
            // decision stands.
            let row = transaction.query_one(
                "SELECT node, study_instance_uid, series_instance_uid, checksum, file_size_bytes
                 FROM sluice_instances WHERE sop_instance_uid = $1 FOR UPDATE",
                &[&entry.sop_instance_uid],
            )?;
            let node: String = row.get(0);
            if node == self.node {
                // This node's row naming this file already (a republish).
                published.push(None);
            } else {
                published.push(Some(Holder {
                    node,
                    study_instance_uid: row.get(1),
                    series_instance_uid: row.get(2),
                    checksum: row.get(3),
                    file_size_bytes: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
                }));
            }
        }
        let ours = entries.len() - published.iter().filter(|holder| holder.is_some()).count();
        transaction.execute(
            "UPDATE sluice_nodes SET published_entries = published_entries + $2,
                 last_publish_at = now(), seen_at = now()
             WHERE node = $1",
            &[&self.node, &to_i64(ours as u64)],
        )?;
        transaction.commit()?;
        Ok(published)
    }

    /// Records each segment of `uploaded` (id, object key) as uploaded:
    /// this node's rows of its records name the object key. One UPDATE per
    /// segment, in one transaction.
    pub(crate) fn segments_uploaded(
        &mut self,
        uploaded: &[(u64, String)],
    ) -> Result<(), CatalogueError> {
        let mut transaction = self.client.transaction()?;
        for (segment, key) in uploaded {
            transaction.execute(
                "UPDATE sluice_instances SET object_key = $3
                 WHERE node = $1 AND segment = $2 AND object_key IS DISTINCT FROM $3",
                &[
                    &self.node,
                    &i64::try_from(*segment).unwrap_or(i64::MAX),
                    key,
                ],
            )?;
        }
        transaction.commit()?;
        Ok(())
    }

    /// This node's name.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// Where the catalogue says each SOP Instance UID of `sops` it holds
    /// lives.
    pub(crate) fn locations(
        &mut self,
        sops: &[String],
    ) -> Result<std::collections::HashMap<String, Row>, CatalogueError> {
        if sops.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let place = |value: Option<i64>| value.and_then(|value| u64::try_from(value).ok());
        Ok(self
            .client
            .query(
                "SELECT sop_instance_uid, node, location, segment, record_offset, record_length
                 FROM sluice_instances WHERE sop_instance_uid = ANY($1)",
                &[&sops],
            )?
            .iter()
            .map(|row| {
                let record = match (place(row.get(3)), place(row.get(4)), place(row.get(5))) {
                    (Some(segment), Some(offset), Some(length)) => {
                        Some(sluice_index::RecordPlace {
                            segment,
                            offset,
                            length,
                        })
                    }
                    _ => None,
                };
                (
                    row.get(0),
                    Row {
                        node: row.get(1),
                        location: row.get(2),
                        record,
                    },
                )
            })
            .collect())
    }

    /// Up to `limit` of this node's rows (SOP Instance UID, location)
    /// after SOP Instance UID `after`, in its order: a walk of what the
    /// catalogue says this node holds, one primary-key range per page.
    pub(crate) fn own_rows_after(
        &mut self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, CatalogueError> {
        Ok(self
            .client
            .query(
                "SELECT sop_instance_uid, location FROM sluice_instances
                 WHERE node = $1 AND sop_instance_uid > $2
                 ORDER BY sop_instance_uid LIMIT $3",
                &[
                    &self.node,
                    &after,
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect())
    }

    /// Says the node is alive, how much it has still to publish and how
    /// old the oldest of it is.
    pub(crate) fn heartbeat(
        &mut self,
        backlog_bytes: u64,
        lag: Duration,
    ) -> Result<(), CatalogueError> {
        self.client.execute(
            "UPDATE sluice_nodes SET backlog_bytes = $2, lag_seconds = $3, seen_at = now()
             WHERE node = $1",
            &[
                &self.node,
                &i64::try_from(backlog_bytes).unwrap_or(i64::MAX),
                &lag.as_secs_f64(),
            ],
        )?;
        Ok(())
    }
}

/// One node as the catalogue knows it (`sluice cluster status`).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    /// `cluster.node_name`.
    pub node: String,
    /// Catalogue rows naming the node.
    pub instances: u64,
    /// Outbox bytes it had not published at its last word.
    pub backlog_bytes: u64,
    /// Age of its oldest unpublished entry at its last word.
    pub lag_seconds: f64,
    /// Seconds since its last word (its publisher reports each round).
    pub seen_seconds_ago: f64,
    /// Its rows whose record is not in the object store (a file, or a
    /// segment not uploaded yet): unavailable while the node is down.
    pub not_uploaded: u64,
    /// Its DICOM address as it published it (`host:port`).
    pub dicom_address: Option<String>,
}

/// A connection for `sluice cluster status`.
fn status_client(address: &str, timeout: Duration) -> Result<postgres::Client, CatalogueError> {
    super::tls::connect(address, |config| {
        config
            .connect_timeout(timeout)
            .tcp_user_timeout(timeout)
            .application_name("sluice cluster status");
    })
}

/// The catalogue's view of the cluster, for `sluice cluster status`.
pub fn status(address: &str, timeout: Duration) -> Result<Vec<NodeStatus>, CatalogueError> {
    let mut client = status_client(address, timeout)?;
    let exists: bool = client
        .query_one("SELECT to_regclass('sluice_nodes') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client.query(
        "SELECT n.node,
                (SELECT count(*) FROM sluice_instances i WHERE i.node = n.node),
                n.backlog_bytes, n.lag_seconds,
                extract(epoch FROM now() - n.seen_at)::float8,
                (SELECT count(*) FROM sluice_instances i
                 WHERE i.node = n.node AND i.object_key IS NULL),
                n.dicom_address
         FROM sluice_nodes n ORDER BY n.node",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|row| NodeStatus {
            node: row.get(0),
            instances: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
            backlog_bytes: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
            lag_seconds: row.get(3),
            seen_seconds_ago: row.get(4),
            not_uploaded: u64::try_from(row.get::<_, i64>(5)).unwrap_or(0),
            dicom_address: row.get(6),
        })
        .collect())
}

/// At most `limit` SOP Instance UIDs of `node`'s rows whose record is not
/// in the object store (in UID order): what cannot be retrieved while the
/// node is down.
pub fn not_uploaded(
    address: &str,
    timeout: Duration,
    node: &str,
    limit: u32,
) -> Result<Vec<String>, CatalogueError> {
    let mut client = status_client(address, timeout)?;
    let rows = client.query(
        "SELECT sop_instance_uid FROM sluice_instances
         WHERE node = $1 AND object_key IS NULL
         ORDER BY sop_instance_uid COLLATE \"C\" LIMIT $2",
        &[&node, &i64::from(limit)],
    )?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}
