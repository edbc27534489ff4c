//! `sluice flagged`: the instances stored although a lenient check found
//! something (`[validation]`), with what it found: the operator's list to
//! review, as `sluice quarantine list` is for duplicates.

use std::io::Write;
use std::process::ExitCode;

use sluice_index::FileRole;

use super::format::{rfc3339_utc, Table};
use super::{CliError, OpenStore};
use crate::flags::FlaggedInstance;

/// `sluice flagged [--limit N]`.
pub(crate) fn list(
    store: &OpenStore,
    limit: usize,
    output: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let txn = store.index.read().map_err(store.index_error())?;
    let listing = txn.flagged(None, limit).map_err(store.index_error())?;
    if listing.items.is_empty() {
        writeln!(
            output,
            "no flagged instances in {}",
            store.data_dir().display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "SOP INSTANCE UID",
        "STUDY INSTANCE UID",
        "AREA",
        "CALLING AE",
        "RECEIVED",
        "FINDINGS",
    ]);
    for item in &listing.items {
        let flagged = match FlaggedInstance::decode(&item.payload) {
            Ok(flagged) => flagged,
            Err(error) => {
                table.push(vec![
                    format!("file {:032x}", item.file_id.0),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    error.to_string(),
                ]);
                continue;
            }
        };
        let (area, received) = match item.role {
            FileRole::Instance => {
                let entry = txn
                    .instance_by_sop(&flagged.sop_instance_uid)
                    .map_err(store.index_error())?;
                let received = entry
                    .filter(|entry| entry.record.file_id == item.file_id)
                    .map_or_else(
                        || "-".to_owned(),
                        |entry| rfc3339_utc(entry.record.received_at_unix_ns),
                    );
                ("objects", received)
            }
            _ => ("quarantine", "-".to_owned()),
        };
        table.push(vec![
            flagged.sop_instance_uid,
            flagged.study_instance_uid,
            area.to_owned(),
            flagged.calling_ae_title,
            received,
            flagged.findings.join("; "),
        ]);
    }
    table.write(output)?;
    if listing.truncated {
        writeln!(
            output,
            "(first {} flagged instances shown; pass --limit to see more)",
            table.len()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
