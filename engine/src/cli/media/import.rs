//! `sluice media import`: a File-set (or a plain directory of Part 10
//! files) into the store, through the durable ingest path.
//!
//! Two phases, so that a bad File-set imports nothing ("nothing half-way",
//! docs/design/media.md): **validate** reads the DICOMDIR (offsets,
//! records, File IDs), chooses the records, and opens every chosen file to
//! check its Part 10 header against its record; any problem is listed with
//! where it is (record offset, field, file) and the import stops before a
//! byte is stored. **Import** then starts the engine embedded (`Store::open`
//! and `Server::start_with`, listening on a loopback port of its own) and
//! sends each file over one association with C-STORE, so each instance
//! takes the Storage SCP's own path: written and synced before it is
//! indexed, duplicates decided by `storage.duplicate_policy` as for any
//! network store. Each answer is classified by the store's counters
//! (stored, quarantined, dropped, rejected, failed) and summarised.
//!
//! While `sluice serve` runs on the data directory the import is refused
//! (it holds the directory's lock): see docs/design/media.md for why the
//! import embeds rather than sending to a running server.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sluice_media::part10::{read_file_meta, ReadMeta};
use sluice_media::{read_dicomdir, Directory, IssueKind};
use sluice_net::dimse::Tag;
use sluice_net::scan::DatasetEncoding;

use super::super::{CliError, StoreArgs};
use super::send::{Association, CONTEXTS_PER_ASSOCIATION_MAX};
use crate::config::Config;
use crate::escape::Escaped;
use crate::lock::LockError;
use crate::scp::{ServeError, ServeOptions, Server};
use crate::store::{IngestCounts, Store};

/// Largest DICOMDIR read (about 2 million instance records).
const DICOMDIR_LENGTH_MAX: u64 = 512 * 1024 * 1024;
/// Bytes of a file read to find its file meta group; a file whose group
/// does not end within the larger is refused.
const HEAD_FIRST: u64 = 16 * 1024;
const HEAD_MAX: u64 = 1024 * 1024;
/// Directory levels walked in a directory without a DICOMDIR.
const WALK_DEPTH_MAX: usize = 32;
/// Files listed as problems or skips before the rest are only counted.
const LISTED_MAX: usize = 1000;
/// How long the embedded SCP may take to answer one instance.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);
/// The AE titles of the import's association with its embedded SCP.
const CALLING_AE_TITLE: &str = "SLUICE_IMPORT";

/// What to import.
#[derive(Debug, Clone)]
pub(crate) struct ImportRequest {
    pub(crate) dir: PathBuf,
    pub(crate) patients: Vec<String>,
    pub(crate) studies: Vec<String>,
}

/// One file to send, checked.
#[derive(Debug, Clone)]
struct Item {
    path: PathBuf,
    sop_class_uid: String,
    sop_instance_uid: String,
    transfer_syntax_uid: String,
    dataset_offset: u64,
    dataset_length: u64,
}

/// The validation's result.
#[derive(Debug, Default)]
struct Plan {
    items: Vec<Item>,
    /// Problems that stop the import (each names where).
    problems: Vec<String>,
    /// Notes that do not (lowercase File IDs, inactive records, skipped
    /// non-DICOM files).
    notes: Vec<String>,
    /// Records or files not chosen by --patient/--study.
    not_chosen: u64,
    /// Files skipped in a plain directory (not Part 10).
    skipped_files: u64,
}

impl Plan {
    fn problem(&mut self, text: String) {
        self.problems.push(text);
    }
}

/// `sluice media import`.
pub(crate) fn import(
    store_args: &StoreArgs,
    request: &ImportRequest,
    output: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let (data_dir, _) = store_args.resolve()?;
    if !data_dir.is_dir() {
        return Err(CliError::NoDataDirectory { data_dir });
    }
    if !data_dir.join("index").join("data.mdb").is_file() {
        return Err(CliError::NoIndex { data_dir });
    }
    if !request.dir.is_dir() {
        return Err(CliError::BadArgument(format!(
            "{} is not a directory",
            request.dir.display()
        )));
    }
    let started = Instant::now();
    let plan = match find_dicomdir(&request.dir)? {
        Some(dicomdir) => plan_file_set(&request.dir, &dicomdir, request)?,
        None => plan_plain_directory(&request.dir, request)?,
    };
    for note in plan.notes.iter().take(LISTED_MAX) {
        writeln!(output, "note: {note}")?;
    }
    if !plan.problems.is_empty() {
        for problem in plan.problems.iter().take(LISTED_MAX) {
            writeln!(output, "error: {problem}")?;
        }
        return Err(CliError::MediaInvalid {
            dir: request.dir.clone(),
            problems: plan.problems.len(),
        });
    }
    if plan.items.is_empty() {
        writeln!(
            output,
            "nothing to import: no instance chosen ({} not chosen by --patient/--study, {} files skipped)",
            plan.not_chosen, plan.skipped_files
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let validated_in = started.elapsed();

    // The engine, embedded: refused while a server holds the directory.
    let mut config = store_args.config()?;
    config.server.data_directory = data_dir.clone();
    // The embedded SCP serves the import's own association and nothing
    // else: one loopback listener on a port of its own (set below), none of
    // the served configuration's TLS, commitment or metrics listeners, and
    // only the import's Calling AE Title admitted (the site's allow list
    // and access rules name its remotes, which have no business here).
    let import_ae = CALLING_AE_TITLE
        .parse()
        .map_err(|error| CliError::BadArgument(format!("{CALLING_AE_TITLE}: {error}")))?;
    config.network.calling_ae_allow_list = vec![import_ae];
    config.access.rule = Vec::new();
    config.network.commitment_port = None;
    config.network.tls_port = None;
    config.network.plain_listener = crate::config::PlainListener::On;
    config.metrics.metrics_port = None;
    let called_ae_title = config.network.ae_title.as_str().to_owned();
    let store = Store::open(config).map_err(|error| CliError::Io {
        operation: "open the store",
        path: data_dir.clone(),
        source: std::io::Error::other(error.to_string()),
    })?;
    let server = Server::start_with(
        &store,
        ServeOptions {
            adjust_runtime: Some(Box::new(|runtime| {
                runtime.listen_addrs = vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)];
            })),
            ..ServeOptions::default()
        },
    )
    .map_err(|error| match error {
        ServeError::Locked(LockError::DataDirectoryInUse { path, holder }) => {
            CliError::ServerRunning {
                path,
                holder: holder.to_string(),
            }
        }
        other => CliError::Io {
            operation: "start the embedded Storage SCP on",
            path: data_dir.clone(),
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    let address = server.local_addr().ok_or_else(|| CliError::Io {
        operation: "start the embedded Storage SCP on",
        path: data_dir.clone(),
        source: std::io::Error::other("no listening address"),
    })?;
    let sent_at = Instant::now();
    let result = send_all(&store, address, &called_ae_title, &plan.items, output);
    let sent_in = sent_at.elapsed();
    let stopped = server.shutdown(Duration::from_secs(30));
    let summary = result?;
    if let Err(error) = stopped {
        writeln!(
            output,
            "warning: the embedded Storage SCP did not stop cleanly: {error}"
        )?;
    }
    let bytes: u64 = plan.items.iter().map(|item| item.dataset_length).sum();
    let seconds = sent_in.as_secs_f64().max(1e-9);
    writeln!(
        output,
        "imported {} of {} instances; {} duplicates ({} quarantined, {} dropped as identical, {} rejected); \
         {} refused; {} not chosen; {} files skipped; validated in {:.1} s, stored {:.0} instances/s, {:.1} MB/s",
        summary.stored,
        plan.items.len(),
        summary.quarantined + summary.dropped + summary.rejected,
        summary.quarantined,
        summary.dropped,
        summary.rejected,
        summary.refused,
        plan.not_chosen,
        plan.skipped_files,
        validated_in.as_secs_f64(),
        plan.items.len() as f64 / seconds,
        bytes as f64 / 1e6 / seconds,
    )?;
    Ok(if summary.refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `DIR/DICOMDIR`, in any case (some writers use `dicomdir`).
fn find_dicomdir(dir: &Path) -> Result<Option<PathBuf>, CliError> {
    let exact = dir.join("DICOMDIR");
    if exact.is_file() {
        return Ok(Some(exact));
    }
    for entry in std::fs::read_dir(dir).map_err(CliError::io("read", dir))? {
        let entry = entry.map_err(CliError::io("read", dir))?;
        if entry.file_name().eq_ignore_ascii_case("DICOMDIR") && entry.path().is_file() {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// Validates a File-set and chooses its records.
fn plan_file_set(
    root: &Path,
    dicomdir_path: &Path,
    request: &ImportRequest,
) -> Result<Plan, CliError> {
    let mut plan = Plan::default();
    let file = File::open(dicomdir_path).map_err(CliError::io("open", dicomdir_path))?;
    let length = file
        .metadata()
        .map_err(CliError::io("read", dicomdir_path))?
        .len();
    if length > DICOMDIR_LENGTH_MAX {
        plan.problem(format!(
            "{}: {length} bytes, more than the {DICOMDIR_LENGTH_MAX} a DICOMDIR may have here",
            dicomdir_path.display()
        ));
        return Ok(plan);
    }
    let mut bytes = Vec::new();
    file.take(DICOMDIR_LENGTH_MAX)
        .read_to_end(&mut bytes)
        .map_err(CliError::io("read", dicomdir_path))?;
    let directory = match read_dicomdir(&bytes) {
        Ok(directory) => directory,
        Err(error) => {
            plan.problem(format!("{}: {error}", dicomdir_path.display()));
            return Ok(plan);
        }
    };
    drop(bytes);
    for issue in &directory.issues {
        let text = format!("{}: {issue}", dicomdir_path.display());
        if is_fatal(&issue.kind) {
            plan.problem(text);
        } else {
            plan.notes.push(text);
        }
    }
    for instance in &directory.instances {
        if !chosen_record(&directory, instance, request) {
            plan.not_chosen += 1;
            continue;
        }
        let at = format!(
            "{}: {} record at offset {}",
            dicomdir_path.display(),
            instance.record_type,
            instance.record_offset
        );
        let Some(path) = resolve_file_id(root, instance.file_id.components()) else {
            plan.problem(format!(
                "{at}: Referenced File ID (0004,1500) {} names no file",
                instance.file_id.to_value()
            ));
            continue;
        };
        match check_file(&path) {
            Ok((meta, file_length)) => {
                let field_problem =
                    |field: &str, tag: &str, recorded: &str, found: Option<&str>| {
                        let found = found.unwrap_or("");
                        (!recorded.is_empty() && recorded != found).then(|| {
                            format!(
                                "{at}: {field} {tag} is {}, the file {} says {}",
                                Escaped(recorded),
                                path.display(),
                                Escaped(found)
                            )
                        })
                    };
                let problems = [
                    field_problem(
                        "Referenced SOP Instance UID in File",
                        "(0004,1511)",
                        &instance.sop_instance_uid,
                        meta.group.str(Tag(0x0002, 0x0003)),
                    ),
                    field_problem(
                        "Referenced SOP Class UID in File",
                        "(0004,1510)",
                        &instance.sop_class_uid,
                        meta.sop_class_uid(),
                    ),
                    field_problem(
                        "Referenced Transfer Syntax UID in File",
                        "(0004,1512)",
                        &instance.transfer_syntax_uid,
                        meta.transfer_syntax_uid(),
                    ),
                ];
                let mut clean = true;
                for problem in problems.into_iter().flatten() {
                    plan.problem(problem);
                    clean = false;
                }
                if clean {
                    match item_of(&path, &meta, file_length) {
                        Ok(item) => plan.items.push(item),
                        Err(reason) => plan.problem(format!("{at}: {}: {reason}", path.display())),
                    }
                }
            }
            Err(reason) => plan.problem(format!("{at}: {}: {reason}", path.display())),
        }
    }
    Ok(plan)
}

/// Which issues stop an import. Lowercase File IDs, inactive records,
/// missing keys and record types Sluice does not import are noted; a broken
/// structure, a bad offset, an unknown record type or an unusable File ID
/// means the directory cannot be trusted to say what the File-set holds.
fn is_fatal(kind: &IssueKind) -> bool {
    !matches!(
        kind,
        IssueKind::LowercaseFileId(_)
            | IssueKind::Inactive
            | IssueKind::MissingKey { .. }
            | IssueKind::Misplaced { .. }
    )
}

fn chosen_record(
    directory: &Directory,
    instance: &sluice_media::dicomdir::reader::InstanceEntry,
    request: &ImportRequest,
) -> bool {
    let patient_ok = request.patients.is_empty()
        || directory
            .patient_of(instance)
            .is_some_and(|patient| request.patients.contains(&patient.patient_id));
    let study_ok = request.studies.is_empty()
        || directory
            .study_of(instance)
            .is_some_and(|study| request.studies.contains(&study.study_instance_uid));
    patient_ok && study_ok
}

/// The file a File ID names: each component as written, else the one entry
/// of the directory that matches it case-insensitively (File IDs are
/// uppercase, file systems and writers not always). Components were
/// checked by `FileId::parse` (letters, digits, `_`: no `..`, no `/`).
fn resolve_file_id(root: &Path, components: &[String]) -> Option<PathBuf> {
    let mut path = root.to_path_buf();
    for component in components {
        let exact = path.join(component);
        if exact.exists() {
            path = exact;
            continue;
        }
        let found = std::fs::read_dir(&path).ok()?.find_map(|entry| {
            let entry = entry.ok()?;
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.eq_ignore_ascii_case(component))
                .then(|| entry.path())
        })?;
        path = found;
    }
    path.is_file().then_some(path)
}

/// A file's Part 10 header, read from its first bytes; `Err` says why the
/// file is not a Part 10 file Sluice can send.
fn check_file(path: &Path) -> Result<(ReadMeta, u64), String> {
    let mut file = File::open(path).map_err(|error| format!("cannot open: {error}"))?;
    let length = file
        .metadata()
        .map_err(|error| format!("cannot read: {error}"))?
        .len();
    let mut head = Vec::new();
    (&mut file)
        .take(HEAD_FIRST)
        .read_to_end(&mut head)
        .map_err(|error| format!("cannot read: {error}"))?;
    match read_file_meta(&head) {
        Ok(meta) => Ok((meta, length)),
        Err(_) if length > HEAD_FIRST => {
            file.take(HEAD_MAX - HEAD_FIRST)
                .read_to_end(&mut head)
                .map_err(|error| format!("cannot read: {error}"))?;
            read_file_meta(&head)
                .map(|meta| (meta, length))
                .map_err(|error| format!("not a Part 10 file: {error}"))
        }
        Err(error) => Err(format!("not a Part 10 file: {error}")),
    }
}

fn item_of(path: &Path, meta: &ReadMeta, file_length: u64) -> Result<Item, String> {
    let field = |tag: Tag, name: &str| {
        meta.group
            .str(tag)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("its file meta has no {name} {tag}"))
    };
    let dataset_offset = meta.dataset_offset as u64;
    Ok(Item {
        path: path.to_owned(),
        sop_class_uid: field(Tag(0x0002, 0x0002), "Media Storage SOP Class UID")?,
        sop_instance_uid: field(Tag(0x0002, 0x0003), "Media Storage SOP Instance UID")?,
        transfer_syntax_uid: field(Tag(0x0002, 0x0010), "Transfer Syntax UID")?,
        dataset_offset,
        dataset_length: file_length.saturating_sub(dataset_offset),
    })
}

/// Walks a directory without a DICOMDIR: every regular file that is a
/// Part 10 file is chosen (filtered by its data set's Patient ID and Study
/// Instance UID when asked); others are skipped and noted. Symbolic links
/// are not followed.
fn plan_plain_directory(root: &Path, request: &ImportRequest) -> Result<Plan, CliError> {
    let mut plan = Plan::default();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    let mut files = Vec::new();
    while let Some((dir, depth)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(CliError::io("read", &dir))?
            .collect::<Result<_, _>>()
            .map_err(CliError::io("read", &dir))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let kind = entry.file_type().map_err(CliError::io("read", &dir))?;
            if kind.is_dir() {
                if depth + 1 > WALK_DEPTH_MAX {
                    plan.notes.push(format!(
                        "{}: deeper than {WALK_DEPTH_MAX} levels, not walked",
                        entry.path().display()
                    ));
                } else {
                    stack.push((entry.path(), depth + 1));
                }
            } else if kind.is_file() {
                files.push(entry.path());
            } else {
                plan.notes.push(format!(
                    "{}: not a regular file, skipped",
                    entry.path().display()
                ));
            }
        }
    }
    files.sort();
    for path in files {
        let (meta, length) = match check_file(&path) {
            Ok(found) => found,
            Err(reason) => {
                plan.skipped_files += 1;
                plan.notes
                    .push(format!("{}: {reason}, skipped", path.display()));
                continue;
            }
        };
        let item = match item_of(&path, &meta, length) {
            Ok(item) => item,
            Err(reason) => {
                plan.problem(format!("{}: {reason}", path.display()));
                continue;
            }
        };
        if !request.patients.is_empty() || !request.studies.is_empty() {
            match keys_of(&item) {
                Ok((patient, study)) => {
                    let chosen = (request.patients.is_empty()
                        || request.patients.contains(&patient))
                        && (request.studies.is_empty() || request.studies.contains(&study));
                    if !chosen {
                        plan.not_chosen += 1;
                        continue;
                    }
                }
                Err(reason) => {
                    plan.problem(format!("{}: {reason}", path.display()));
                    continue;
                }
            }
        }
        plan.items.push(item);
    }
    Ok(plan)
}

/// Patient ID and Study Instance UID from a file's data set head.
fn keys_of(item: &Item) -> Result<(String, String), String> {
    let encoding = DatasetEncoding::from_transfer_syntax(&item.transfer_syntax_uid)
        .map_err(|error| format!("its keys cannot be read ({error})"))?;
    let mut file = File::open(&item.path).map_err(|error| format!("cannot open: {error}"))?;
    let keys = super::read_keys_at(
        &mut file,
        item.dataset_offset,
        item.dataset_length,
        encoding,
    )
    .map_err(|error| format!("cannot read: {error}"))??;
    let patient = keys
        .dataset()
        .str(Tag(0x0010, 0x0020))
        .unwrap_or("")
        .trim_end()
        .to_owned();
    Ok((patient, keys.study_instance_uid().to_owned()))
}

/// What the store did with the files sent.
#[derive(Debug, Default)]
struct Summary {
    stored: u64,
    quarantined: u64,
    dropped: u64,
    rejected: u64,
    refused: u64,
}

/// Sends every item, one association per group of at most 127 (SOP class,
/// transfer syntax) pairs, and classifies each answer by the store's
/// counters (one C-STORE in flight, so each answer moves exactly one).
fn send_all(
    store: &Store,
    address: SocketAddr,
    called_ae_title: &str,
    items: &[Item],
    output: &mut dyn Write,
) -> Result<Summary, CliError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut seen = BTreeSet::new();
    for item in items {
        let pair = (item.sop_class_uid.clone(), item.transfer_syntax_uid.clone());
        if seen.insert(pair.clone()) {
            pairs.push(pair);
        }
    }
    let association_failed = |error: super::send::SendError| CliError::Io {
        operation: "import into",
        path: store.layout().root().to_owned(),
        source: std::io::Error::other(error.to_string()),
    };
    let mut summary = Summary::default();
    for group in pairs.chunks(CONTEXTS_PER_ASSOCIATION_MAX) {
        let group_set: BTreeSet<&(String, String)> = group.iter().collect();
        let mut association = Association::open(
            address,
            called_ae_title,
            CALLING_AE_TITLE,
            group,
            ANSWER_TIMEOUT,
        )
        .map_err(association_failed)?;
        for item in items {
            let pair = (item.sop_class_uid.clone(), item.transfer_syntax_uid.clone());
            if !group_set.contains(&pair) {
                continue;
            }
            let Some(context) =
                association.context_for(&item.sop_class_uid, &item.transfer_syntax_uid)
            else {
                summary.refused += 1;
                writeln!(
                    output,
                    "refused: {}: the store does not accept SOP class {} in transfer syntax {} \
                     (network.sop_classes / network.transfer_syntaxes)",
                    item.path.display(),
                    Escaped(&item.sop_class_uid),
                    Escaped(&item.transfer_syntax_uid)
                )?;
                continue;
            };
            let before = store.counts();
            let response = association
                .store(
                    context,
                    &item.sop_class_uid,
                    &item.sop_instance_uid,
                    &item.path,
                    item.dataset_offset,
                    item.dataset_length,
                )
                .map_err(association_failed)?;
            let after = store.counts();
            // Anything but stored, quarantined, dropped or rejected is a
            // refusal (or a failure) of this instance, with its status.
            if !classify(&before, &after, &mut summary) {
                summary.refused += 1;
                let comment = response
                    .detail
                    .error_comment
                    .as_deref()
                    .unwrap_or("no comment");
                writeln!(
                    output,
                    "refused: {}: status {} ({})",
                    item.path.display(),
                    response.status,
                    Escaped(comment)
                )?;
            }
        }
        association.release().map_err(association_failed)?;
    }
    Ok(summary)
}

fn delta(before: &IngestCounts, after: &IngestCounts) -> IngestCounts {
    let mut delta = *after;
    delta.stored = after.stored.saturating_sub(before.stored);
    delta.quarantined = after.quarantined.saturating_sub(before.quarantined);
    delta.dropped = after.dropped.saturating_sub(before.dropped);
    delta.rejected = after.rejected.saturating_sub(before.rejected);
    delta.failed = after.failed.saturating_sub(before.failed);
    delta
}

/// Adds one answer's counts; false when the instance was neither stored
/// nor decided a duplicate.
fn classify(before: &IngestCounts, after: &IngestCounts, summary: &mut Summary) -> bool {
    let delta = delta(before, after);
    summary.stored += delta.stored;
    summary.quarantined += delta.quarantined;
    summary.dropped += delta.dropped;
    summary.rejected += delta.rejected;
    let decided = delta.stored + delta.quarantined + delta.dropped + delta.rejected;
    debug_assert!(
        decided <= 1,
        "one C-STORE in flight moved {decided} counters"
    );
    decided == 1
}

impl StoreArgs {
    /// The configuration `sluice serve` would run with (`--config`, else
    /// the defaults), the data directory left to the caller.
    pub(crate) fn config(&self) -> Result<Config, CliError> {
        Ok(match &self.config_file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        })
    }
}
