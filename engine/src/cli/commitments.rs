//! `sluice commitments list|show`: the Storage Commitment transactions the
//! tracker keeps in the index (pending, report ready, delivered, failed),
//! with their times, counts and delivery attempts. Read-only: the tracker of
//! a running server owns every write of these records.

use std::io::Write;
use std::process::ExitCode;

use sluice_index::{CommitmentRecord, CommitmentState};

use super::format::{rfc3339_utc, Table};
use super::{CliError, OpenStore, StoreArgs, LISTING_LIMIT_DEFAULT};
use crate::commit::payload::{Payload, NO_STATUS};
use crate::escape::Escaped;

/// The `commitments` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
#[non_exhaustive]
pub enum CommitmentsCommand {
    /// List commitment transactions in Transaction UID order.
    ///
    /// State (pending: waiting for instances; report-ready: decided, being
    /// delivered; delivered; failed: never delivered), requester, received
    /// time, references, failed references and delivery attempts. Delivered
    /// and failed transactions are kept 7 days.
    List {
        /// Most rows to print (at least 1).
        #[arg(long, default_value_t = LISTING_LIMIT_DEFAULT,
              value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show one commitment transaction, with its failed references.
    Show {
        /// The Transaction UID.
        transaction_uid: String,
        /// Where the store is.
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub(crate) fn run(
    command: CommitmentsCommand,
    output: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    match command {
        CommitmentsCommand::List { limit, store } => {
            list(&store.open()?, super::listing_limit(limit), output)
        }
        CommitmentsCommand::Show {
            transaction_uid,
            store,
        } => show(&store.open()?, &transaction_uid, output),
    }
}

/// The state as the operator reads it.
pub(crate) fn state_name(state: CommitmentState) -> &'static str {
    match state {
        CommitmentState::Pending => "pending",
        CommitmentState::ReportReady => "report-ready",
        CommitmentState::Delivered => "delivered",
        CommitmentState::Failed => "failed",
    }
}

fn time_or_dash(unix_ns: u64) -> String {
    if unix_ns == 0 {
        "-".to_owned()
    } else {
        rfc3339_utc(unix_ns)
    }
}

fn list(store: &OpenStore, limit: usize, output: &mut dyn Write) -> Result<ExitCode, CliError> {
    let listing = {
        let txn = store.index.read().map_err(store.index_error())?;
        txn.commitments(None, limit).map_err(store.index_error())?
    };
    if listing.items.is_empty() {
        writeln!(
            output,
            "no commitment transactions in {}",
            store.data_dir().display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "TRANSACTION UID",
        "STATE",
        "REQUESTER",
        "RECEIVED",
        "REFERENCES",
        "FAILED",
        "ATTEMPTS",
    ]);
    for entry in &listing.items {
        let (references, failed) = match Payload::decode(&entry.record.payload) {
            Ok(payload) => (
                payload.reference_count.to_string(),
                payload.failed.len().to_string(),
            ),
            Err(_) => ("damaged".to_owned(), "-".to_owned()),
        };
        table.push(vec![
            entry.transaction_uid.clone(),
            state_name(entry.record.state).to_owned(),
            entry.record.requester_ae_title.clone(),
            rfc3339_utc(entry.record.created_at_unix_ns),
            references,
            failed,
            entry.record.delivery_attempts.to_string(),
        ]);
    }
    table.write(output)?;
    if listing.truncated {
        writeln!(
            output,
            "(first {} transactions shown; pass --limit to see more)",
            table.len()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn show(
    store: &OpenStore,
    transaction_uid: &str,
    output: &mut dyn Write,
) -> Result<ExitCode, CliError> {
    let record: CommitmentRecord = {
        let txn = store.index.read().map_err(store.index_error())?;
        txn.commitment(transaction_uid)
            .map_err(store.index_error())?
            .ok_or_else(|| {
                store.not_found(format!(
                    "no commitment transaction with Transaction UID {transaction_uid}"
                ))
            })?
    };
    let payload = Payload::decode(&record.payload).map_err(|error| CliError::IndexRefused {
        operation: "reading the commitment record",
        reason: error.to_string(),
    })?;
    let line = |output: &mut dyn Write, label: &str, value: String| {
        writeln!(output, "{label:<20} {}", Escaped(value))
    };
    line(output, "Transaction UID:", transaction_uid.to_owned())?;
    line(output, "State:", state_name(record.state).to_owned())?;
    line(output, "Requester:", record.requester_ae_title.clone())?;
    line(output, "Received:", rfc3339_utc(record.created_at_unix_ns))?;
    if record.state == CommitmentState::Pending {
        line(output, "Wait ends:", time_or_dash(record.deadline_unix_ns))?;
    }
    line(output, "Decided:", time_or_dash(payload.decided_at_unix_ns))?;
    line(
        output,
        "Finished:",
        time_or_dash(payload.finished_at_unix_ns),
    )?;
    line(output, "References:", payload.reference_count.to_string())?;
    line(
        output,
        "Committed:",
        if payload.decided_at_unix_ns == 0 {
            "-".to_owned()
        } else {
            payload.committed_count().to_string()
        },
    )?;
    line(output, "Failed:", payload.failed.len().to_string())?;
    line(
        output,
        "Delivery attempts:",
        record.delivery_attempts.to_string(),
    )?;
    if record.state == CommitmentState::ReportReady && record.next_attempt_at_unix_ns != 0 {
        line(
            output,
            "Next attempt:",
            rfc3339_utc(record.next_attempt_at_unix_ns),
        )?;
    }
    if payload.last_status != NO_STATUS {
        line(
            output,
            "Last RSP status:",
            format!("{:04X}", payload.last_status),
        )?;
    }
    if !payload.last_error.is_empty() {
        line(output, "Last error:", payload.last_error.clone())?;
    }
    if !payload.failed.is_empty() {
        let mut table = Table::new(&["FAILED SOP INSTANCE UID", "SOP CLASS UID", "REASON"]);
        for &(index, reason) in &payload.failed {
            if let Some(reference) = payload.references.get(index as usize) {
                table.push(vec![
                    reference.sop_instance_uid,
                    reference.sop_class_uid,
                    format!("{reason:04X}"),
                ]);
            }
        }
        writeln!(output)?;
        table.write(output)?;
    }
    Ok(ExitCode::SUCCESS)
}
